"""A store with N labeled customer-service documents, built once and cached under benchmarks/.cache/.

Shaped like real data where it matters to an export: skewed intents, customers with several tickets (a few with
hundreds), 5% near-duplicates of earlier tickets (same cluster), 5% extra rows that repeat an earlier text under
another customer (exact duplicates, sometimes with a conflicting label), and 2% of documents also labeled in
Label Studio. Written through the store's own bulk-write functions.

    .venv/bin/python -m benchmarks.export.make_store --docs 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE

__all__ = ["INTENTS", "build_store", "store_path"]

INTENTS = ("card_arrival", "lost_or_stolen_card", "refund_request", "flight_delay", "baggage_issue", "change_pin",
           "transfer_failed", "account_locked", "fee_dispute", "cancel_booking", "exchange_rate", "complaint_other")
_WEIGHTS = np.array([20, 14, 12, 10, 9, 8, 7, 6, 5, 4, 3, 2], dtype=np.float64)
_OPENERS = {
    "card_arrival": "my new card has still not arrived",
    "lost_or_stolen_card": "i lost my card yesterday",
    "refund_request": "i would like a refund for my order",
    "flight_delay": "my flight was delayed again",
    "baggage_issue": "my bag did not arrive at the airport",
    "change_pin": "how do i change the pin on my card",
    "transfer_failed": "my transfer failed this morning",
    "account_locked": "my account is locked and i cannot log in",
    "fee_dispute": "you charged me a fee i did not expect",
    "cancel_booking": "please cancel my booking",
    "exchange_rate": "what exchange rate did you use",
    "complaint_other": "this is the worst service i have had",
}
_WORDS = np.array(("please help me today urgent again still waiting order number account card flight bag refund "
                   "transfer since monday week support team email phone reply soon thanks hello hi regards issue "
                   "problem update status fix broken wrong charged twice missing late").split())
_CHUNK = 50_000


def store_path(n_docs: int, seed: int = 0) -> Path:
    return CACHE / f"export_{n_docs}_s{seed}.db"


def build_store(n_docs: int, *, seed: int = 0, path: Path | None = None) -> str:
    """The SQLite URL of the cached store with `n_docs` documents (built if missing)."""
    from store import documents as ds
    from store.engine import open_store

    path = path or store_path(n_docs, seed)
    done = path.with_suffix(".done")
    url = f"sqlite:///{path}"
    if done.exists() and path.exists():
        return url
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_suffix(".db-wal"), path.with_suffix(".db-shm")):
        p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(INTENTS), size=n_docs, p=_WEIGHTS / _WEIGHTS.sum())
    heavy = rng.random(n_docs) < 0.01
    customers = np.where(heavy, rng.integers(0, 100, n_docs), rng.integers(100, max(n_docs // 3, 200), n_docs))
    words = rng.choice(_WORDS, size=(n_docs, 8))
    base = np.arange(n_docs)
    near = (rng.random(n_docs) < 0.05) & (base > 0)
    base[near] = (rng.random(int(near.sum())) * base[near]).astype(np.int64)
    texts: list[str] = []
    for i in range(n_docs):
        b = int(base[i])
        if b != i:
            texts.append(f"{texts[b]} thanks ({i})")
        else:
            texts.append(f"{_OPENERS[INTENTS[labels[i]]]} {' '.join(words[i])} ref {i}")
    labels[near] = labels[base[near]]

    store = open_store(url)
    source_id = ds.ensure_source(store, name="bench_tickets.csv", domain="customer_service", path=None)
    ids = np.zeros(n_docs, dtype=np.int64)
    for lo in range(0, n_docs, _CHUNK):
        hi = min(lo + _CHUNK, n_docs)
        rows = [{
            "domain": "customer_service", "source_id": source_id, "row_number": i, "external_id": f"T{i:08d}",
            "group_key": f"cust-{customers[i]:07d}", "raw_text": texts[i], "text": texts[i],
            "content_hash": hashlib.sha1(texts[i].encode()).hexdigest(), "n_tokens": 0, "n_sentences": 1,
        } for i in range(lo, hi)]
        with store.connect() as conn:
            got, _ = ds.insert_documents(conn, rows)
            ids[lo:hi] = [got[str(r["content_hash"])] for r in rows]
            ds.set_clusters(conn, ids[lo:hi].tolist(), ids[base[lo:hi]].tolist())
    # Every document's own row, then 5% extra rows repeating an earlier text under another customer.
    n_dup = n_docs // 20
    dup_of = rng.integers(0, n_docs, n_dup)
    dup_label = np.where(rng.random(n_dup) < 0.9, labels[dup_of], rng.integers(0, len(INTENTS), n_dup))
    occ_doc = np.concatenate([np.arange(n_docs), dup_of])
    occ_label = np.concatenate([labels, dup_label])
    occ_customer = np.concatenate([customers, rng.integers(100, max(n_docs // 3, 200), n_dup)])
    total = len(occ_doc)
    for lo in range(0, total, _CHUNK):
        hi = min(lo + _CHUNK, total)
        occ = [{"source_id": source_id, "row_number": i, "document_id": int(ids[occ_doc[i]]),
                "external_id": f"T{i:08d}", "group_key": f"cust-{occ_customer[i]:07d}",
                "is_duplicate": i >= n_docs} for i in range(lo, hi)]
        with store.connect() as conn:
            occ_ids = ds.insert_occurrences(conn, occ)
            ds.insert_import_annotations(conn, [{
                "document_id": int(ids[occ_doc[i]]), "annotator": "import:bench_tickets.csv",
                "label": INTENTS[occ_label[i]], "labels": [INTENTS[occ_label[i]]], "origin": "import",
                "occurrence_id": occ_ids[i]} for i in range(lo, hi)])
    ls_docs = rng.choice(n_docs, size=n_docs // 50, replace=False)
    ls_label = np.where(rng.random(len(ls_docs)) < 0.85, labels[ls_docs], rng.integers(0, len(INTENTS), len(ls_docs)))
    from store.engine import insert_ignore
    from store.models import Annotation

    with store.connect() as conn:
        insert_ignore(conn, Annotation.__table__, [{  # type: ignore[arg-type]
            "document_id": int(ids[d]), "annotator": "agent1", "label": INTENTS[lab], "labels": [INTENTS[lab]],
            "origin": "labelstudio", "ls_annotation_id": k + 1, "ls_task_id": k + 1, "project_id": 1,
        } for k, (d, lab) in enumerate(zip(ls_docs, ls_label, strict=True))], conflict=["ls_annotation_id"])
    store.close()
    done.write_text(f"{n_docs} documents, built in {time.perf_counter() - t0:.0f} s\n")
    return url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(build_store(args.docs, seed=args.seed), f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
