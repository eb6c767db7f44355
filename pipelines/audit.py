"""`curate audit`: find label errors in the store with cleanlab, record them, and optionally send them for review.

Flow: pulled review decisions are applied first (so earlier audits' statuses are current) -> training labels
(`curation.consensus`: a review wins, else the majority) -> embeddings from the cache (the active-learning encoder;
only texts not cached yet are encoded) -> `curation.label_quality.audit_labels` (K-fold probabilities, CROWDLAB
consensus for documents with several annotators, cleanlab issues, near-duplicate conflicts by the ingest's MinHash
clusters, outliers) -> one `label_issues` row per audited document -> CSV (`--out`) -> review push (`--push-review`).

Reviewed documents are audited (their labels still train the model) but never flagged: a person already decided.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.errors import InputError

__all__ = ["audit", "audit_status", "annotator_quality", "CSV_COLUMNS"]

CSV_COLUMNS = ("external_id", "id", "text", "given_label", "suggested_label", "label_quality", "is_label_issue",
               "kind", "suggested_probability", "label_source", "near_duplicate_conflict", "group_label",
               "is_outlier", "outlier_score", "cluster_id")
_TOP = 20


def _embeddings(store: Any, config: Any, texts: list[str], *, model: str | None, device: str | None,
                cache_dir: str | None, on_encoded: Callable[[int], None] | None) -> tuple[np.ndarray, dict[str, Any]]:
    from curation.embeddings import EmbeddingCache, default_cache_dir, embed_texts
    from curation.encoder import Encoder

    al = config.active_learning
    encoder = Encoder(model or al.model, device=device or al.device)
    cache = EmbeddingCache(default_cache_dir(store.url, cache_dir or al.embeddings_dir), encoder.key)
    emb, stats = embed_texts(texts, encoder=encoder, cache=cache, on_progress=on_encoded)
    return emb, {**stats, "encoder": encoder.ref.model_id, "device": str(encoder.device)}


def _details(res: Any, i: int, *, trusted: bool, crowd: dict[str, Any] | None) -> dict[str, Any] | None:
    """Why a row is of interest; None for the ordinary rows (most of them)."""
    interesting = (res.is_label_issue[i] or res.is_outlier[i] or res.near_duplicate_conflict[i] or crowd is not None
                   or (trusted and res.suggested[i] != res.given[i]))
    if not interesting:
        return None
    p = res.pred_probs[i]
    top = np.argsort(-p)[:3]
    out: dict[str, Any] = {"top": [[res.classes[int(k)], round(float(p[k]), 4)] for k in top]}
    if res.near_duplicate_conflict[i]:
        out["near_duplicate_conflict"] = True
        out["group_label"] = res.classes[int(res.group_label[i])]
    if res.is_outlier[i]:
        out["outlier"] = True
    out["outlier_score"] = round(float(res.outlier_score[i]), 5)
    if trusted:
        out["reviewed"] = True
    if crowd is not None:
        out["crowdlab"] = crowd
    return out


def audit(
    store: Any,
    *,
    config: Any,
    domain: str | None = None,
    out: Path | str | None = None,
    push_review: bool = False,
    project: str | None = None,
    review_limit: int = 100,
    folds: int = 5,
    seed: int | None = None,
    mode: str = "fast",
    classifier: str = "lda",
    model: str | None = None,
    device: str | None = None,
    cache_dir: str | None = None,
    client: Any = None,
    on_status: Callable[[str], None] | None = None,
    on_encoded: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Audit the training labels of one domain; returns the summary `curate audit --json` prints."""
    from pipelines.review import apply_review_decisions
    from pipelines.sample import pick_domain
    from store.runs import finish_run, start_run

    t0 = time.perf_counter()
    domain = pick_domain(store, domain)
    seed = int(config.active_learning.seed if seed is None else seed)
    decisions = apply_review_decisions(store, domain=domain)
    params = {"domain": domain, "folds": folds, "seed": seed, "mode": mode, "classifier": classifier,
              "model": model or config.active_learning.model, "out": str(out) if out else None,
              "push_review": push_review, "project": project, "review_limit": review_limit}
    run_id = start_run(store, kind="audit", params=params)
    try:
        result = _audit(store, config=config, run_id=run_id, domain=domain, folds=folds, seed=seed, mode=mode,
                        classifier=classifier, model=model, device=device, cache_dir=cache_dir, out=out,
                        on_status=on_status or (lambda _m: None), on_encoded=on_encoded)
        result["seconds"] = round(time.perf_counter() - t0, 3)
        stats = {k: v for k, v in result.items() if k not in ("top",)}
        finish_run(store, run_id, status="ok", stats=stats)
    except BaseException as exc:
        finish_run(store, run_id, status="error", error=str(exc)[:2000])
        raise
    result["run_id"] = run_id
    result["decisions_applied"] = decisions["applied"]
    if push_review:
        from pipelines.review import push_review as send

        own = client is None
        if own:
            from pipelines.ls_client import connect

            client = connect(config)
        try:
            result["review_push"] = send(store, client, config=config, run_id=run_id, domain=domain,
                                         project=project, limit=review_limit)
        finally:
            if own and hasattr(client, "close"):
                client.close()
    from pipelines.review import review_summary

    history = review_summary(store, domain=domain)
    result["review"] = next((h for h in history if h["run_id"] == run_id), None)
    result["review_history"] = [h for h in history if h["run_id"] != run_id][:10]
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _audit(
    store: Any,
    *,
    config: Any,
    run_id: int,
    domain: str,
    folds: int,
    seed: int,
    mode: str,
    classifier: str,
    model: str | None,
    device: str | None,
    cache_dir: str | None,
    out: Path | str | None,
    on_status: Callable[[str], None],
    on_encoded: Callable[[int], None] | None,
) -> dict[str, Any]:
    from curation.consensus import consensus_labels
    from curation.encoder import resolve_device
    from curation.label_quality import audit_labels
    from store.audit import record_issues, votes_frame
    from store.documents import documents_frame

    timings: dict[str, float] = {}
    t = time.perf_counter()
    annotations = votes_frame(store, domain=domain)
    labels = consensus_labels(annotations)
    if labels.empty:
        raise InputError(f"No labeled documents in {domain} to audit.",
                         hint="ingest labeled data (--label-column) or pull annotations first")
    docs = documents_frame(store, domain=domain, columns=("id", "external_id", "text", "cluster_id"))
    docs = docs.merge(labels, left_on="id", right_on="document_id", how="inner").reset_index(drop=True)
    timings["read"] = time.perf_counter() - t
    texts = docs["text"].astype(str).tolist()
    t = time.perf_counter()
    dev = str(resolve_device(device or config.active_learning.device))
    if mode == "fast":
        on_status(f"embedding {len(docs)} labeled documents")
        inputs, enc = _embeddings(store, config, texts, model=model, device=dev, cache_dir=cache_dir,
                                  on_encoded=on_encoded)
    else:
        inputs, enc = texts, {"encoder": model or config.active_learning.model, "device": dev}
    timings["embeddings"] = time.perf_counter() - t
    on_status(f"auditing {len(docs)} labels ({mode} mode, {folds} folds)")
    trusted = (docs["label_source"] == "reviewed").to_numpy()
    sizes = docs["cluster_id"].map(docs["cluster_id"].value_counts()).fillna(0).to_numpy()
    groups = [c if s > 1 else None for c, s in zip(docs["cluster_id"].tolist(), sizes, strict=True)]
    res = audit_labels(inputs, docs["label"].astype(str).tolist(), groups=groups, trusted=trusted,
                       annotations=annotations, document_ids=docs["id"].to_numpy(dtype=np.int64), folds=folds,
                       seed=seed, mode=mode, classifier=classifier, device=dev, model=model,
                       classifier_options={"epochs": config.active_learning.finetune_epochs}
                       if mode == "finetune" else None)
    timings["audit"] = res.info.get("seconds", 0.0)
    t = time.perf_counter()
    crowd_of: dict[int, dict[str, Any]] = {}
    for r in res.consensus.itertuples(index=False):
        crowd_of[int(r.document_id)] = {"label": r.label, "quality": round(float(r.consensus_quality), 4),
                                        "majority": r.majority_label,
                                        "annotator_agreement": round(float(r.annotator_agreement), 4),
                                        "n_annotators": int(r.n_annotators), "fingerprint": r.fingerprint}
    kinds = res.kind
    ids = docs["id"].to_numpy(dtype=np.int64)
    given = [res.classes[int(k)] for k in res.given]
    suggested = [res.classes[int(k)] for k in res.suggested]
    rows = [{"run_id": run_id, "document_id": int(ids[i]), "given_label": given[i], "suggested_label": suggested[i],
             "label_quality": float(res.label_quality[i]), "is_label_issue": bool(res.is_label_issue[i]),
             "kind": str(kinds[i]),
             "details": _details(res, i, trusted=bool(trusted[i]), crowd=crowd_of.get(int(ids[i])))}
            for i in range(len(ids))]
    record_issues(store, rows)
    timings["write"] = time.perf_counter() - t
    frame = pd.DataFrame({
        "external_id": docs["external_id"], "id": ids, "text": docs["text"], "given_label": given,
        "suggested_label": suggested, "label_quality": np.round(res.label_quality, 6),
        "is_label_issue": res.is_label_issue, "kind": kinds,
        "suggested_probability": np.round(res.pred_probs[np.arange(len(ids)), res.suggested], 6),
        "label_source": docs["label_source"], "near_duplicate_conflict": res.near_duplicate_conflict,
        "group_label": [res.classes[int(g)] if g >= 0 else None for g in res.group_label],
        "is_outlier": res.is_outlier, "outlier_score": np.round(res.outlier_score, 6),
        "cluster_id": docs["cluster_id"],
    }).sort_values(["label_quality", "id"], kind="stable")
    if out:
        t = time.perf_counter()
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False, columns=list(CSV_COLUMNS), quoting=csv.QUOTE_MINIMAL)
        timings["csv"] = time.perf_counter() - t
    changed = sum(1 for d in crowd_of.values() if d["label"] != d["majority"])
    flagged = frame[frame["is_label_issue"]]
    return {
        "domain": domain,
        "audited": len(ids),
        "issues": int(res.is_label_issue.sum()),
        "near_duplicate_conflicts": int(res.near_duplicate_flag.sum()),
        "near_duplicate_groups_in_conflict": int(docs.loc[res.near_duplicate_conflict, "cluster_id"].nunique()),
        "outliers": int(res.is_outlier.sum()),
        "reviewed_not_flagged": int(trusted.sum()),
        "estimated_noise_rate": round(res.estimated_noise_rate, 4),
        "classes": len(res.classes),
        "multi_annotated": len(crowd_of),
        "crowdlab_changed": changed,
        "annotators": res.annotators.to_dict("records"),
        "model": {k: v for k, v in res.info.items() if k not in ("seconds",)},
        "embeddings": enc,
        "out": str(out) if out else None,
        "stage_seconds": {k: round(v, 3) for k, v in timings.items()},
        "top": flagged.head(_TOP)[["id", "external_id", "given_label", "suggested_label", "label_quality", "kind",
                                   "text"]].to_dict("records"),
    }


def audit_status(store: Any, *, domain: str | None = None) -> dict[str, Any]:
    """Apply pulled review decisions and report every audit run's review outcome (no new audit)."""
    from pipelines.review import apply_review_decisions, review_summary

    applied = apply_review_decisions(store, domain=domain)
    runs = review_summary(store, domain=domain)
    confirmed = sum(r["confirmed"] for r in runs)
    rejected = sum(r["rejected"] for r in runs)
    return {"domain": domain, "decisions_applied": applied["applied"], "runs": runs,
            "confirmed": confirmed, "rejected": rejected,
            "confirmed_rate": round(confirmed / (confirmed + rejected), 4) if confirmed + rejected else None}


def annotator_quality(store: Any, *, domain: str | None = None) -> list[dict[str, Any]]:
    """Per-annotator quality (CROWDLAB) of the newest audit of `domain` that had multi-annotated documents.

    For `curate agreement`: annotator, quality (0-1), agreement_with_consensus, worst_class, n_labeled, run_id.
    Empty when no audit has seen two annotators on one document.
    """
    from store.audit import audit_runs

    for run in audit_runs(store, limit=50):
        if domain is not None and run["params"].get("domain") != domain:
            continue
        people = run["stats"].get("annotators") or []
        if people:
            return [{**p, "run_id": run["run_id"]} for p in people]
    return []
