"""Label-noise benchmark (issue 5): inject 10% class-conditional label flips into real labeled data, run the audit
exactly as `curate audit` does (ingest into a fresh store, cached embeddings, cleanlab), and score the flagged set
against the flips, beside the simplest baseline (flag where the model's argmax differs from the given label) from
the same run's out-of-fold probabilities.

Goal: F1 >= 0.80 on BANKING77 with the default encoder. Also reported: how many of BANKING77's original training
labels the audit flags (Ying & Thomas 2022 estimate about 14% are wrong), and the audit's speed on a store of
100k labeled documents with cached embeddings (goal < 20 s on 2 cores; 1M < 60 s on an H100).

Noise: per class, a noise matrix from cleanlab's `generate_noise_matrix_from_trace` (trace = K x 0.9, half of the
off-diagonal rates zero, seeded) gives that class's flip rate and where its flips go; exactly round(rate x n_k)
documents of the class, chosen at random, get a label drawn from that column. Settings (classifier, filter, grid
of regularisation) were chosen on development seeds 100 and 101, never on the reported seeds (0, 1, 2).

    .venv/bin/python -m benchmarks.label_noise.bench                       # all, on this machine
    .venv/bin/python -m benchmarks.label_noise.bench --only speed --speed-docs 1000000 --device cuda
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import CACHE, RESULTS, SHARED_DATA, environment, peak_rss_mb, write_result  # noqa: E402

__all__ = ["DATASETS", "inject_noise", "prf", "run_dataset", "speed", "main"]

EMBEDDINGS = CACHE / "embeddings"
DATASETS: dict[str, dict[str, Any]] = {
    "banking77": {"path": ("banking77", "train.csv"), "text": "text", "label": "category",
                  "domain": "customer_service", "names": None},
    "twitter_financial_news": {"path": ("twitter_financial_news_sentiment", "sent_train.csv"), "text": "text",
                               "label": "label", "domain": "financial",
                               "names": {0: "bearish", 1: "bullish", 2: "neutral"}},
}


def inject_noise(y: np.ndarray, n_classes: int, *, rate: float = 0.10, seed: int = 0,
                 sparsity: float = 0.5) -> np.ndarray:
    """Class-conditional flips: class k loses round((1 - P[k, k]) n_k) labels to classes drawn from column k."""
    from cleanlab.benchmarking.noise_generation import generate_noise_matrix_from_trace

    rng = np.random.default_rng(seed)
    py = np.bincount(y, minlength=n_classes) / len(y)
    nm = generate_noise_matrix_from_trace(n_classes, n_classes * (1 - rate), py=py, frac_zero_noise_rates=sparsity,
                                          valid_noise_matrix=True, seed=seed)
    noisy = y.copy()
    for k in range(n_classes):
        idx = np.flatnonzero(y == k)
        m = int(round((1 - nm[k, k]) * len(idx)))
        if m == 0:
            continue
        w = nm[:, k].copy()
        w[k] = 0
        pick = rng.choice(idx, m, replace=False)
        noisy[pick] = rng.choice(n_classes, m, p=w / w.sum())
    return noisy


def prf(flagged: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    tp = int((flagged & truth).sum())
    p = tp / max(int(flagged.sum()), 1)
    r = tp / max(int(truth.sum()), 1)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
            "flagged": int(flagged.sum()), "true_errors": int(truth.sum())}


def _load(name: str) -> pd.DataFrame:
    spec = DATASETS[name]
    df = pd.read_csv(SHARED_DATA.joinpath(*spec["path"]))
    df = df.rename(columns={spec["text"]: "text", spec["label"]: "label"})[["text", "label"]]
    if spec["names"]:
        df["label"] = df["label"].map(spec["names"])
    df["label"] = df["label"].astype(str)
    df.insert(0, "row_id", np.arange(len(df)))
    return df


def _config(device: str) -> Any:
    from curation.config import Config

    return Config.model_validate({"active_learning": {"device": device, "embeddings_dir": str(EMBEDDINGS)}})


def _audit_store(df: pd.DataFrame, labels: list[str], *, domain: str, device: str, classifier: str,
                 work: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Ingest (text, labels) into a fresh store and audit it; the audit rows with each row's original label."""
    from pipelines.audit import audit
    from pipelines.ingest import ingest_files
    from store.audit import issues_frame
    from store.engine import open_store

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    csv = work / "data.csv"
    df.assign(label=labels)[["row_id", "text", "label"]].to_csv(csv, index=False)
    store = open_store(f"sqlite:///{work / 'curate.db'}")
    cfg = _config(device)
    ingest_files(store, [csv], domain=domain, config=cfg, text_column="text", label_column="label",
                 id_column="row_id")
    result = audit(store, config=cfg, domain=domain, classifier=classifier, seed=0)
    rows = issues_frame(store, run_id=result["run_id"])
    store.close()
    original = df.set_index(df["row_id"].astype(str))["label"]
    rows["original_label"] = rows["external_id"].map(original)
    return rows, result


def run_dataset(name: str, *, seeds: list[int], device: str, classifiers: list[str], work: Path,
                rate: float = 0.10) -> dict[str, Any]:
    """Per seed and classifier: precision, recall, F1 of the audit's flags and of the argmax baseline."""
    df = _load(name)
    classes = sorted(df["label"].unique())
    code = {c: i for i, c in enumerate(classes)}
    y = df["label"].map(code).to_numpy()
    out: dict[str, Any] = {"documents": len(df), "classes": len(classes), "noise_rate": rate, "runs": []}
    for seed in seeds:
        noisy = inject_noise(y, len(classes), rate=rate, seed=seed)
        for clf in classifiers:
            t0 = time.perf_counter()
            rows, res = _audit_store(df, [classes[k] for k in noisy], domain=DATASETS[name]["domain"],
                                     device=device, classifier=clf, work=work / f"{name}_{seed}_{clf}")
            truth = (rows["given_label"] != rows["original_label"]).to_numpy()
            flagged = rows["is_label_issue"].astype(bool).to_numpy()
            baseline = (rows["suggested_label"] != rows["given_label"]).to_numpy()
            run = {"seed": seed, "classifier": clf, "injected_flips": int((noisy != y).sum()),
                   "audited": len(rows), "audit": prf(flagged, truth),
                   "baseline_argmax": prf(baseline, truth),
                   "estimated_noise_rate": res["estimated_noise_rate"],
                   "near_duplicate_conflicts": res["near_duplicate_conflicts"], "outliers": res["outliers"],
                   "model": res["model"], "audit_seconds": res["seconds"],
                   "wall_seconds": round(time.perf_counter() - t0, 1)}
            print(f"{name} seed {seed} {clf}: audit F1 {run['audit']['f1']} (P {run['audit']['precision']}, "
                  f"R {run['audit']['recall']}); baseline F1 {run['baseline_argmax']['f1']}", flush=True)
            out["runs"].append(run)
    for clf in classifiers:
        mine = [r for r in out["runs"] if r["classifier"] == clf]
        out[f"mean_f1_{clf}"] = round(float(np.mean([r["audit"]["f1"] for r in mine])), 4)
        out[f"mean_baseline_f1_{clf}"] = round(float(np.mean([r["baseline_argmax"]["f1"] for r in mine])), 4)
    return out


def original_labels(name: str, *, device: str, work: Path) -> dict[str, Any]:
    """The audit of the unmodified labels: how many it flags, and the worst few."""
    df = _load(name)
    rows, res = _audit_store(df, df["label"].tolist(), domain=DATASETS[name]["domain"], device=device,
                             classifier="lda", work=work / f"{name}_original")
    flagged = rows[rows["is_label_issue"].astype(bool)]
    text = df.set_index(df["row_id"].astype(str))["text"]
    worst = flagged.head(15).assign(text=lambda f: f["external_id"].map(text))
    return {"audited": len(rows), "flagged": len(flagged), "flagged_fraction": round(len(flagged) / len(rows), 4),
            "by_kind": flagged["kind"].value_counts().to_dict(), "estimated_noise_rate": res["estimated_noise_rate"],
            "examples": worst[["external_id", "given_label", "suggested_label", "label_quality", "kind",
                               "text"]].to_dict("records")}


# ---------------------------------------------------------------------------------------------------- speed


def _speed_store(n_docs: int, *, device: str, work: Path, seed: int = 0) -> str:
    """A store of `n_docs` labeled documents shaped like BANKING77 (its texts and embeddings, jittered), with 5%
    near-duplicates (same base text, same cluster), 10% flipped labels and 2% of documents labeled by three
    annotators, and every document's embedding in a cache of its own under `work`."""
    from curation.embeddings import EmbeddingCache, text_hashes
    from curation.encoder import Encoder
    from store import documents as ds
    from store.engine import insert_ignore, open_store
    from store.models import Annotation

    df = _load("banking77")
    encoder = Encoder(None, device="cpu")
    base_emb = _embed(df["text"].tolist(), encoder)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, len(df), n_docs)
    near = rng.random(n_docs) < 0.05
    near[0] = False
    root = np.where(near, -1, np.arange(n_docs))
    root = np.maximum.accumulate(root)  # a near-duplicate joins the cluster of the last document before it
    base = base[root]
    texts = [f"{df['text'].iat[b]} (ref {i})" for i, b in enumerate(base)]
    classes = sorted(df["label"].unique())
    y = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()[base]
    noisy = np.where(rng.random(n_docs) < 0.10, rng.integers(0, len(classes), n_docs), y)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cache = EmbeddingCache(work / "embeddings", encoder.key)
    for lo in range(0, n_docs, 100_000):
        hi = min(lo + 100_000, n_docs)
        emb = base_emb[base[lo:hi]] + rng.normal(scale=0.03, size=(hi - lo, base_emb.shape[1])).astype(np.float32)
        cache.put(text_hashes(texts[lo:hi]), emb / np.linalg.norm(emb, axis=1, keepdims=True))
    url = f"sqlite:///{work / 'speed.db'}"
    store = open_store(url)
    source_id = ds.ensure_source(store, name="speed.csv", domain="customer_service", path=None)
    ids = np.zeros(n_docs, dtype=np.int64)
    chunk = 50_000
    for lo in range(0, n_docs, chunk):
        hi = min(lo + chunk, n_docs)
        rows = [{"domain": "customer_service", "source_id": source_id, "row_number": i, "external_id": f"S{i}",
                 "raw_text": texts[i], "text": texts[i], "content_hash": hashlib.sha1(texts[i].encode()).hexdigest(),
                 "n_tokens": 0, "n_sentences": 1} for i in range(lo, hi)]
        with store.connect() as conn:
            got, _ = ds.insert_documents(conn, rows)
            ids[lo:hi] = [got[str(r["content_hash"])] for r in rows]
            ds.set_clusters(conn, ids[lo:hi].tolist(), ids[root[lo:hi]].tolist())
            occ = ds.insert_occurrences(conn, [{"source_id": source_id, "row_number": i, "document_id": int(ids[i]),
                                                "external_id": f"S{i}", "is_duplicate": False}
                                               for i in range(lo, hi)])
            ds.insert_import_annotations(conn, [{"document_id": int(ids[i]), "annotator": "import:speed.csv",
                                                 "label": classes[noisy[i]], "labels": [classes[noisy[i]]],
                                                 "origin": "import", "occurrence_id": occ[i]}
                                                for i in range(lo, hi)])
    multi = rng.choice(n_docs, n_docs // 50, replace=False)
    anns = []
    for k, d in enumerate(multi):
        for a in range(3):
            lab = y[d] if rng.random() < 0.8 - 0.2 * a else rng.integers(0, len(classes))
            anns.append({"document_id": int(ids[d]), "annotator": f"annotator{a}", "label": classes[lab],
                         "labels": [classes[lab]], "origin": "labelstudio", "ls_annotation_id": 3 * k + a + 1,
                         "ls_task_id": k + 1, "project_id": 1})
    with store.connect() as conn:
        insert_ignore(conn, Annotation.__table__, anns, conflict=["ls_annotation_id"])  # type: ignore[arg-type]
    store.close()
    return url


def _embed(texts: list[str], encoder: Any) -> np.ndarray:
    from curation.embeddings import EmbeddingCache, embed_texts

    emb, _ = embed_texts(texts, encoder=encoder, cache=EmbeddingCache(EMBEDDINGS, encoder.key))
    return emb


def speed(n_docs: int, *, device: str, work: Path) -> dict[str, Any]:
    """Wall time of `audit()` on a store of `n_docs` labeled documents whose embeddings are cached."""
    from pipelines.audit import audit
    from store.engine import open_store

    t0 = time.perf_counter()
    url = _speed_store(n_docs, device=device, work=work / f"speed_{n_docs}")
    built = time.perf_counter() - t0
    store = open_store(url)
    t1 = time.perf_counter()
    res = audit(store, config=_config(device), domain="customer_service", out=work / "speed.csv",
                cache_dir=str(work / f"speed_{n_docs}" / "embeddings"))
    wall = time.perf_counter() - t1
    store.close()
    return {"documents": n_docs, "audit_wall_seconds": round(wall, 2), "audit_seconds": res["seconds"],
            "stage_seconds": res["stage_seconds"], "model": res["model"], "issues": res["issues"],
            "multi_annotated": res["multi_annotated"], "embeddings": res["embeddings"],
            "store_build_seconds": round(built, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["noise", "original", "speed"], action="append")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--classifiers", default="lda,logreg", help="lda (default of curate audit) and/or logreg")
    ap.add_argument("--speed-docs", type=int, default=100_000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--name", default="label_noise")
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    from curation.encoder import resolve_device

    device = str(resolve_device(args.device))
    parts = args.only or ["noise", "original", "speed"]
    work = args.work or Path(tempfile.mkdtemp(prefix="label_noise_"))
    result: dict[str, Any] = {"device": device, "settings": {
        "noise": "class-conditional, 10%, cleanlab noise matrix (trace K*0.9, sparsity 0.5)",
        "filter_by": "low_self_confidence", "folds": 5, "classifiers": args.classifiers,
        "development_seeds": [100, 101], "reported_seeds": args.seeds}}
    try:
        if "noise" in parts:
            result["noise"] = {}
            for name in args.datasets.split(","):
                classifiers = args.classifiers.split(",")
                result["noise"][name] = run_dataset(name, seeds=[int(s) for s in args.seeds.split(",")],
                                                    device=device, classifiers=classifiers, work=work)
            b = result["noise"].get("banking77")
            if b:
                result["goal"] = {"banking77_mean_f1": b["mean_f1_lda"], "target": 0.80,
                                  "met": b["mean_f1_lda"] >= 0.80}
        if "original" in parts:
            result["original_labels"] = {"banking77": original_labels("banking77", device=device, work=work)}
            print(f"banking77 original labels flagged: {result['original_labels']['banking77']['flagged']}",
                  flush=True)
        if "speed" in parts:
            result["speed"] = speed(args.speed_docs, device=device, work=work)
            limit = 20 if device == "cpu" else 60
            result["speed"]["goal_seconds"] = limit
            result["speed"]["met"] = result["speed"]["audit_wall_seconds"] < limit
            print(f"speed: {args.speed_docs} documents audited in {result['speed']['audit_wall_seconds']} s",
                  flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.only:  # a partial run keeps the other parts of the last full result
        env = environment()
        previous = RESULTS / f"{args.name}_{'gpu' if env['gpu'] else 'cpu' + str(env['cores'])}.json"
        if previous.exists():
            old = json.loads(previous.read_text())
            result = {**{k: v for k, v in old.items() if k not in ("benchmark", "environment")}, **result}
    write_result(args.name, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
