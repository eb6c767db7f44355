"""`curate sample` and `curate encode`: one active-learning round on the store, and pool encoding ahead of time.

A round: train on the current training labels (`curation.consensus.training_labels`: reviewed, consensus and
imported labels alike), score the unlabeled pool, select N, and record everything needed to explain the pick later
(a `sample` run; a selections row per document with strategy, score, rank, model version, seed and round; the model
version; and the model's prediction for each selected document, which `curate push` sends as a pre-annotation).

The pool is the domain's documents without a training label, minus those already waiting for annotators: selected
by an earlier sample run, or sent to Label Studio as a task, and still without a label. Selecting them again would
spend annotator time twice; `include_pending=True` puts them back (e.g. after deleting a Label Studio project).
Predictions are stored for the selected documents only (what pre-annotation needs; a million-row pool would add
a million rows per round).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from curation.config import DOMAINS, check_domain
from curation.errors import ConfigError, InputError

__all__ = ["sample", "encode_documents", "pick_domain"]


def pick_domain(store: Any, domain: str | None) -> str:
    """`domain`, else the only domain that has documents."""
    from store.active import document_domains

    if domain:
        return check_domain(domain)
    present = document_domains(store)
    if len(present) == 1:
        return present[0]
    if not present:
        raise InputError("The store has no documents.", hint="ingest some first (`curate ingest`)")
    raise ConfigError(f"The store has documents in several domains ({', '.join(present)}).",
                      hint=f"pass --domain ({' or '.join(DOMAINS)})")


def _cache(store: Any, config: Any, encoder: Any, cache_dir: str | None) -> Any:
    from curation.embeddings import EmbeddingCache, default_cache_dir

    root = default_cache_dir(store.url, cache_dir or config.active_learning.embeddings_dir)
    return EmbeddingCache(root, encoder.key)


def encode_documents(
    store: Any,
    *,
    config: Any,
    domain: str | None = None,
    model: str | None = None,
    device: str | None = None,
    cache_dir: str | None = None,
    on_encoded: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Embed every document (of `domain`) not yet in the cache; a nightly run encodes only new text."""
    from curation.embeddings import embed_texts
    from curation.encoder import Encoder
    from store.documents import documents_frame

    t0 = time.perf_counter()
    al = config.active_learning
    if domain:
        check_domain(domain)
    docs = documents_frame(store, domain=domain, columns=("id", "text"))
    encoder = Encoder(model or al.model, device=device or al.device)
    cache = _cache(store, config, encoder, cache_dir)
    _, stats = embed_texts(docs["text"].tolist(), encoder=encoder, cache=cache, on_progress=on_encoded)
    seconds = time.perf_counter() - t0
    return {"documents": len(docs), **stats, "encoder": encoder.ref.model_id, "device": str(encoder.device),
            "cache": str(cache.folder), "seconds": round(seconds, 3),
            "texts_per_s": round(stats["encoded"] / seconds, 1) if stats["encoded"] and seconds > 0 else None}


def sample(
    store: Any,
    *,
    config: Any,
    strategy: str | None = None,
    n: int | None = None,
    domain: str | None = None,
    seed: int | None = None,
    mode: str | None = None,
    model: str | None = None,
    device: str | None = None,
    include_pending: bool = False,
    push_project: str | None = None,
    push: bool = False,
    cache_dir: str | None = None,
    on_status: Callable[[str], None] | None = None,
    on_encoded: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run one selection round and record it; returns the summary `curate sample --json` prints."""
    from curation.strategies import get_strategy
    from store.runs import finish_run, start_run

    t0 = time.perf_counter()
    al = config.active_learning
    strategy = strategy or al.strategy
    spec = get_strategy(strategy)
    n = int(n if n is not None else al.batch)
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}.")
    seed = int(al.seed if seed is None else seed)
    mode = mode or al.mode
    if mode not in ("fast", "finetune"):
        raise ConfigError(f"--mode must be fast or finetune, not {mode!r}.")
    domain = pick_domain(store, domain)
    params = {"strategy": spec.name, "n": n, "domain": domain, "seed": seed, "mode": mode,
              "model": model or al.model, "device": device or al.device, "include_pending": include_pending,
              "push": bool(push or push_project), "project": push_project}
    run_id = start_run(store, kind="sample", params=params)
    try:
        result = _sample(store, config=config, run_id=run_id, spec_name=spec.name, n=n, domain=domain, seed=seed,
                         mode=mode, model=model or al.model, device=device or al.device,
                         include_pending=include_pending, cache_dir=cache_dir, on_status=on_status,
                         on_encoded=on_encoded)
        if push or push_project:
            result["push"] = _push(store, config=config, project=push_project, domain=domain,
                                   document_ids=[s["document_id"] for s in result["selections"]], run_id=run_id)
        result["seconds"] = round(time.perf_counter() - t0, 3)
    except BaseException as exc:
        finish_run(store, run_id, status="error", error=str(exc)[:2000])
        raise
    finish_run(store, run_id, status="ok", stats={k: v for k, v in result.items() if k != "selections"})
    result["run_id"] = run_id
    return result


def _push(store: Any, *, config: Any, project: str | None, domain: str, document_ids: list[int],
          run_id: int) -> dict[str, Any]:
    """Send the selection to Label Studio in priority order (newest selection run first, then rank)."""
    from pipelines.ls_client import connect
    from pipelines.push import push

    client = connect(config)
    try:
        return push(store, client, config=config, project=project, domain=domain, document_ids=document_ids,
                    order="priority", run_id=run_id)
    finally:
        close = getattr(client, "close", None)
        if close:
            close()


def _sample(
    store: Any,
    *,
    config: Any,
    run_id: int,
    spec_name: str,
    n: int,
    domain: str,
    seed: int,
    mode: str,
    model: str | None,
    device: str,
    include_pending: bool,
    cache_dir: str | None,
    on_status: Callable[[str], None] | None,
    on_encoded: Callable[[int], None] | None,
) -> dict[str, Any]:
    from curation.classifier import model_version
    from curation.consensus import training_labels
    from curation.embeddings import embed_texts
    from curation.encoder import Encoder
    from curation.strategies import build_context, select
    from store.active import (
        pending_document_ids,
        record_model_version,
        record_predictions,
        record_selections,
        sample_round,
    )
    from store.documents import documents_frame

    al = config.active_learning
    say = on_status or (lambda _m: None)
    docs = documents_frame(store, domain=domain, columns=("id", "text"))
    labels = training_labels(store, domain=domain)
    label_of = dict(zip(labels["document_id"].astype(int), labels["label"].astype(str), strict=True))
    ids = docs["id"].to_numpy(dtype=np.int64)
    is_labeled = np.fromiter((int(i) in label_of for i in ids), dtype=bool, count=len(ids))
    pending = set() if include_pending else pending_document_ids(store, domain=domain)
    is_pending = np.fromiter((int(i) in pending for i in ids), dtype=bool, count=len(ids)) & ~is_labeled
    in_pool = ~is_labeled & ~is_pending
    if not in_pool.any():
        raise InputError(
            f"The unlabeled pool of {domain} is empty: {int(is_labeled.sum())} documents are labeled and "
            f"{int(is_pending.sum())} are waiting for annotators.",
            hint="ingest more documents, pull annotations (`curate pull`), or pass --include-pending",
        )
    texts = docs["text"].astype(str).tolist()
    lab_rows, pool_rows = np.flatnonzero(is_labeled), np.flatnonzero(in_pool)

    encoder = Encoder(model, device=device)
    cache = _cache(store, config, encoder, cache_dir)
    need = np.concatenate([lab_rows, pool_rows])
    say(f"embedding {len(need)} documents with {encoder.ref.name} on {encoder.device}")
    emb, enc_stats = embed_texts([texts[i] for i in need], encoder=encoder, cache=cache, on_progress=on_encoded)
    x_lab, x_pool = emb[: len(lab_rows)], emb[len(lab_rows) :]
    y_lab = [label_of[int(ids[i])] for i in lab_rows]
    finetune = mode == "finetune"
    options = {"epochs": al.finetune_epochs} if finetune else None
    say(f"training on {len(lab_rows)} labels ({mode} mode)")
    ctx, clf, codes = build_context(
        pool_ids=ids[pool_rows], pool_embeddings=x_pool, labeled_embeddings=x_lab, labeled_labels=y_lab,
        strategy=spec_name, min_labels=al.min_labels, mode=mode, head=al.head, device=str(encoder.device),
        seed=seed, mc_samples=al.mc_samples, model=model, classifier_options=options,
        pool_texts=[texts[i] for i in pool_rows] if finetune else None,
        labeled_texts=[texts[i] for i in lab_rows] if finetune else None,
    )
    say(f"selecting {n} of {len(pool_rows)} with {spec_name}")
    res = select(spec_name, ctx, n, seed=seed)
    round_no = sample_round(store, domain=domain)

    version: str | None = None
    probs: np.ndarray | None = None
    if clf is not None and ctx.model is not None:
        encoder_id = getattr(clf, "model_id", None) or encoder.key
        mparams = {"seed": seed, **clf.describe()}
        version = model_version(mode=mode, encoder_id=encoder_id, params=mparams,
                                train_keys=[str(int(ids[i])) for i in lab_rows], train_labels=y_lab)
        metrics: dict[str, Any] = {"n_train": len(lab_rows), "n_classes": len(codes.classes)}
        if not finetune:
            metrics["train_accuracy"] = float((clf.predict_proba(x_lab).argmax(axis=1) == codes.y).mean())
        record_model_version(store, version=version, domain=domain, encoder=encoder_id, mode=mode,
                             labels=codes.classes, params=mparams, metrics=metrics, run_id=run_id)
        probs = ctx.model.proba()[res.positions]

    selections: list[dict[str, Any]] = []
    sel_rows: list[dict[str, Any]] = []
    pred_rows: list[dict[str, Any]] = []
    for rank, (pos, doc_id, score) in enumerate(zip(res.positions, res.ids, res.scores, strict=True)):
        doc_id = int(doc_id)
        entry: dict[str, Any] = {"document_id": doc_id, "rank": rank, "score": float(score),
                                 "text": texts[int(pool_rows[pos])]}
        sel_rows.append({"run_id": run_id, "document_id": doc_id, "domain": domain, "strategy": res.strategy,
                         "score": float(score), "rank": rank, "model_version": version, "seed": seed,
                         "round": round_no})
        if probs is not None and version is not None:
            p = probs[rank]
            top = int(p.argmax())
            entry.update(predicted_label=codes.classes[top], confidence=float(p[top]))
            pred_rows.append({"document_id": doc_id, "model_version": version, "label": codes.classes[top],
                              "score": float(p[top]),
                              "probs": {c: round(float(v), 5) for c, v in zip(codes.classes, p, strict=True)}})
        selections.append(entry)
    record_selections(store, sel_rows)
    record_predictions(store, pred_rows)
    if clf is not None:
        clf.release()
    return {
        "domain": domain,
        "strategy": spec_name,
        "strategy_used": res.strategy,
        "cold_start": res.cold_start,
        "note": res.note,
        "selected": len(selections),
        "pool": int(in_pool.sum()),
        "labeled": int(is_labeled.sum()),
        "pending_excluded": int(is_pending.sum()),
        "classes": len(codes.classes),
        "model_version": version,
        "mode": mode,
        "round": round_no,
        "seed": seed,
        "encoder": encoder.ref.model_id,
        "device": str(encoder.device),
        "embeddings": enc_stats,
        "predictions": len(pred_rows),
        "selections": selections,
    }
