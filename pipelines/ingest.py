"""`curate ingest`: raw files to documents, streamed chunk by chunk.

Per chunk: read -> repair bytes -> clean (per domain) -> mask PII -> normalize -> exact dedup (content hash, in the
chunk and against the store) -> tokenize and count sentences (new documents only) -> MinHash near-duplicate
clustering -> one database transaction. Every input row ends as a stored document, a duplicate occurrence of one,
or a quarantine row with its raw payload, so `rows_read == stored + duplicates + quarantined` always holds.

Why per-chunk transactions keyed by (source, row number): a killed ingest leaves whole chunks only, and a re-run
skips the rows already recorded, so nothing is lost and nothing is stored twice.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.config import Config, check_domain
from curation.errors import InputError
from pipelines.clean import clean_batch, normalize_batch
from pipelines.dedup import MinHashParams, NearDupIndex, signatures
from pipelines.pii import mask_batch
from pipelines.readers import ReaderOptions, read_batches, sniff_format
from pipelines.tokenize import SentenceSplitter, count_tokens, default_splitter, train_sentence_splitter
from store import documents as docs_store
from store.engine import Store
from store.runs import finish_run, start_run

__all__ = ["IngestStats", "ingest_files", "ingest_file"]

_PUNKT_SAMPLE = 4_000


@dataclass
class IngestStats:
    """Counts for one ingest (one or several files)."""

    rows_read: int = 0
    stored: int = 0
    duplicates: int = 0
    already_ingested: int = 0
    quarantined: int = 0
    labels_imported: int = 0
    near_duplicate_clusters: int = 0
    near_duplicates: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    pii_masked: Counter[str] = field(default_factory=Counter)
    stage_seconds: Counter[str] = field(default_factory=Counter)
    files: list[dict[str, Any]] = field(default_factory=list)
    joined_clusters: set[int] = field(default_factory=set)

    def as_dict(self, seconds: float) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "already_ingested": self.already_ingested,
            "near_duplicate_clusters": self.near_duplicate_clusters,
            "near_duplicates": self.near_duplicates,
            "quarantined": self.quarantined,
            "quarantine_reasons": dict(self.quarantine_reasons),
            "pii_masked": dict(self.pii_masked),
            "labels_imported": self.labels_imported,
            "seconds": round(seconds, 3),
            "docs_per_s": round(self.rows_read / seconds, 1) if seconds > 0 else None,
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "files": self.files,
        }


def _sha1(texts: Sequence[str]) -> list[str]:
    return [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]


def _none_if_blank(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


class _Timer:
    def __init__(self, stats: IngestStats) -> None:
        self.stats = stats

    def __call__(self, name: str) -> _Timer:
        self.name = name
        return self

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.stats.stage_seconds[self.name] += time.perf_counter() - self.t0


def ingest_files(
    store: Store,
    paths: Sequence[Path | str],
    *,
    domain: str,
    config: Config | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    group_column: str | None = None,
    source: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Ingest files into the store; returns the summary (see `IngestStats.as_dict`).

    All files and columns are checked before anything is written: a missing file or unknown column is an
    `InputError` and the store is untouched.
    """
    config = config or Config()
    check_domain(domain)
    files = [Path(p) for p in paths]
    if not files:
        raise InputError("No input files given.", hint="pass one or more PATHs to ingest")
    if source and len(files) > 1:
        raise InputError("--source names one source, but several files were given.",
                         hint="ingest the files one by one with --source, or leave --source out")
    options = ReaderOptions(
        text_column=text_column, label_column=label_column, id_column=id_column, group_column=group_column,
        chunk_rows=config.ingest.chunk_rows, max_chars=config.ingest.max_chars,
    )
    for f in files:
        if not f.is_file():
            raise InputError(f"Input file {f} does not exist.", hint="check the path (relative to the working dir)")
    # Open each reader once up front: column checks happen before any batch is yielded.
    readers = [(f, read_batches(f, options)) for f in files]
    firsts: list[pd.DataFrame | None] = []
    for _, it in readers:
        firsts.append(next(it, None))

    stats = IngestStats()
    run_id = start_run(store, kind="ingest", params={
        "paths": [str(f.resolve()) for f in files], "domain": domain, "text_column": text_column,
        "label_column": label_column, "id_column": id_column, "group_column": group_column, "source": source,
    })
    t0 = time.perf_counter()
    try:
        params = MinHashParams(
            num_perm=config.ingest.num_perm, bands=config.ingest.bands, shingle_size=config.ingest.shingle_size,
            threshold=config.ingest.near_duplicate_threshold,
        )
        index = NearDupIndex(params=params)
        timer = _Timer(stats)
        with timer("load_index"):
            for ids, sigs, clusters in docs_store.iter_signatures(store, domain=domain):
                index.add_existing(ids, sigs, clusters)
        pii_types = config.pii.types
        for (path, it), first in zip(readers, firsts, strict=True):
            name = source or path.name
            source_id = docs_store.ensure_source(store, name=name, domain=domain, path=str(path.resolve()))
            before = stats.rows_read, stats.stored, stats.duplicates, stats.quarantined
            splitter: SentenceSplitter | None = None
            batch = first
            while batch is not None:
                if splitter is None:
                    good = batch.loc[batch["error"].isna(), "text"].head(_PUNKT_SAMPLE).tolist()
                    with timer("train_punkt"):
                        splitter = train_sentence_splitter(good) if len(good) >= 200 else default_splitter()
                _ingest_batch(
                    store, batch, domain=domain, source_id=source_id, source_name=name, run_id=run_id,
                    index=index, params=params, splitter=splitter, pii_types=pii_types, stats=stats, timer=timer,
                )
                if on_progress:
                    on_progress(len(batch))
                with timer("read"):
                    batch = next(it, None)
            stats.files.append({
                "path": str(path), "source": name, "format": sniff_format(path),
                "rows_read": stats.rows_read - before[0], "stored": stats.stored - before[1],
                "duplicates": stats.duplicates - before[2], "quarantined": stats.quarantined - before[3],
            })
    except BaseException as exc:
        finish_run(store, run_id, status="failed", stats=stats.as_dict(time.perf_counter() - t0),
                   error=f"{type(exc).__name__}: {exc}")
        raise
    seconds = time.perf_counter() - t0
    summary = stats.as_dict(seconds)
    summary["run_id"] = run_id
    summary["domain"] = domain
    finish_run(store, run_id, status="ok", stats=summary)
    return summary


def ingest_file(store: Store, path: Path | str, **kwargs: Any) -> dict[str, Any]:
    return ingest_files(store, [path], **kwargs)


def _ingest_batch(
    store: Store,
    batch: pd.DataFrame,
    *,
    domain: str,
    source_id: int,
    source_name: str,
    run_id: int,
    index: NearDupIndex,
    params: MinHashParams,
    splitter: SentenceSplitter,
    pii_types: Sequence[str],
    stats: IngestStats,
    timer: _Timer,
) -> None:
    stats.rows_read += len(batch)
    row_numbers = batch["row_number"].astype(int).to_numpy()
    with store.connect() as conn:
        with timer("db_read"):
            seen = docs_store.recorded_rows(conn, source_id, int(row_numbers.min()), int(row_numbers.max()))
        if seen:
            already = batch["row_number"].isin(seen)
            n_seen = int(already.sum())
            # Re-reading recorded rows: count them as they were counted the first time.
            bad_seen = int((already & batch["error"].notna()).sum())
            stats.quarantined += bad_seen
            stats.duplicates += n_seen - bad_seen
            stats.already_ingested += n_seen
            for reason, n in batch.loc[already & batch["error"].notna(), "error"].value_counts().items():
                stats.quarantine_reasons[str(reason)] += int(n)
            batch = batch.loc[~already]
            if batch.empty:
                return

        quarantine: list[dict[str, Any]] = []

        def to_quarantine(frame: pd.DataFrame, reasons: Sequence[str]) -> None:
            for rn, raw, reason in zip(frame["row_number"], frame["raw"], reasons, strict=True):
                quarantine.append({"source_id": source_id, "row_number": int(rn), "reason": str(reason),
                                   "raw_payload": raw, "run_id": run_id})
                stats.quarantine_reasons[str(reason)] += 1

        bad = batch["error"].notna()
        if bad.any():
            to_quarantine(batch.loc[bad], batch.loc[bad, "error"].tolist())
        good = batch.loc[~bad]
        raw_texts = good["text"].astype(str).tolist()
        with timer("clean"):
            cleaned = clean_batch(raw_texts, domain=domain)
        with timer("mask_pii"):
            masked, pii_counts = mask_batch(cleaned, types=pii_types)
        with timer("normalize"):
            keys = normalize_batch(masked)
        empty = np.fromiter((not k for k in keys), dtype=bool, count=len(keys))
        if empty.any():
            to_quarantine(good.loc[empty], ["empty_after_cleaning"] * int(empty.sum()))
            keep = ~empty
            good = good.loc[keep]
            raw_texts = [t for t, k in zip(raw_texts, keep, strict=True) if k]
            masked = [t for t, k in zip(masked, keep, strict=True) if k]
            keys = [t for t, k in zip(keys, keep, strict=True) if k]
        with timer("hash"):
            hashes = _sha1(keys)
        with timer("db_read"):
            existing = docs_store.lookup_hashes(conn, domain, hashes)

        # New documents: first row of each hash not already stored.
        new_pos: list[int] = []
        first_of: dict[str, int] = {}
        for i, h in enumerate(hashes):
            if h not in existing and h not in first_of:
                first_of[h] = i
                new_pos.append(i)
        new_texts = [masked[i] for i in new_pos]
        with timer("tokenize"):
            n_tokens = count_tokens(new_texts)
        with timer("sentences"):
            n_sents = splitter.count(new_texts)
        with timer("minhash"):
            sigs = signatures([keys[i] for i in new_pos], params=params)
        ext = good["external_id"].tolist()
        grp = good["group"].tolist()
        meta = good["meta"].tolist()
        row_nums = [int(x) for x in good["row_number"].tolist()]
        rows_doc = []
        for j, i in enumerate(new_pos):
            rows_doc.append({
                "domain": domain, "source_id": source_id, "run_id": run_id,
                "row_number": row_nums[i], "external_id": _none_if_blank(ext[i]),
                "group_key": _none_if_blank(grp[i]), "raw_text": raw_texts[i], "text": masked[i],
                "content_hash": hashes[i], "n_tokens": int(n_tokens[j]), "n_sentences": int(n_sents[j]),
                "meta": meta[i] or None, "minhash": sigs[j].tobytes(),
            })
        with timer("db_write"):
            ids = docs_store.insert_documents(conn, rows_doc)
            existing.update(ids)
        # Near-duplicate clusters for the documents this run actually inserted.
        new_ids = np.array([existing[hashes[i]] for i in new_pos], dtype=np.int64)
        with timer("near_dup"):
            clusters = index.assign(new_ids, sigs) if len(new_ids) else np.empty(0, dtype=np.int64)
        joined = clusters != new_ids
        stats.near_duplicates += int(joined.sum())
        with timer("db_write"):
            docs_store.set_clusters(conn, new_ids.tolist(), clusters.tolist())
            new_set = set(new_pos)
            occ_rows = [{
                "source_id": source_id, "row_number": int(rn), "document_id": existing[h],
                "external_id": _none_if_blank(e), "group_key": _none_if_blank(g),
                "is_duplicate": i not in new_set, "run_id": run_id,
            } for i, (rn, h, e, g) in enumerate(zip(row_nums, hashes, ext, grp, strict=True))]
            occ_ids = docs_store.insert_occurrences(conn, occ_rows)
            labels = good["label"].tolist()
            annotator = f"import:{source_name}"
            ann_rows = [{
                "document_id": existing[h], "annotator": annotator, "label": lab, "origin": "import",
                "occurrence_id": occ_ids[rn], "run_id": run_id,
            } for rn, h, lab in zip(row_nums, hashes, (_none_if_blank(x) for x in labels), strict=True)
                if lab is not None and rn in occ_ids]
            stats.labels_imported += docs_store.insert_import_annotations(conn, ann_rows)
            docs_store.insert_quarantine(conn, quarantine)
    stats.stored += len(new_pos)
    stats.duplicates += len(good) - len(new_pos)
    stats.quarantined += len(quarantine)
    stats.joined_clusters.update(int(c) for c in clusters[joined])
    stats.near_duplicate_clusters = len(stats.joined_clusters)
    stats.pii_masked.update(pii_counts)
