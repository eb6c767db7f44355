"""`curate ingest`: raw files to documents, streamed chunk by chunk.

Per chunk: read -> repair bytes -> clean (per domain) -> mask PII -> normalize -> exact dedup (content hash, in the
chunk and against the store) -> tokenize and count sentences (new documents only) -> MinHash near-duplicate
clustering -> write, in a database transaction that takes `commit_rows` input rows. Every input row ends as a
stored document, a duplicate occurrence of one, or a quarantine row with its raw payload, so
`rows_read == stored + duplicates + quarantined` always holds.

Why whole transactions keyed by (source, row number): a killed ingest leaves whole transactions only, and a re-run
skips the rows already recorded (a chunk recorded entirely is not even prepared), so nothing is lost and nothing is
stored twice. The CPU-heavy part runs in `pipelines/prepare.py`, in a worker process for large inputs.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.config import Config, check_domain
from curation.errors import CurationError, InputError
from pipelines.dedup import ClusterPlan, MinHashParams, NearDupIndex, add_sorted_run
from pipelines.prepare import (
    GC_GEN0,
    Prepared,
    forget_runs,
    hash_prefixes,
    prepare,
    prepare_file,
    read_result,
    worker_init,
    write_job,
)
from pipelines.readers import ReaderOptions, read_batches, sniff_format
from pipelines.tokenize import SentenceSplitter, default_splitter, train_sentence_splitter
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
    chunks_prepared_here: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    pii_masked: Counter[str] = field(default_factory=Counter)
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
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
            "chunks_prepared_here": self.chunks_prepared_here,
            "seconds": round(seconds, 3),
            "docs_per_s": round(self.rows_read / seconds, 1) if seconds > 0 else None,
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "files": self.files,
        }


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


_AUTO_WORKER_BYTES = 16 * 2**20


def _workers(setting: int | None, files: Sequence[Path], *, auto: bool) -> int:
    """Worker processes for the CPU stages (cleaning to MinHash); 0 runs them in this process.

    `[ingest] workers` unset: with `auto` (the `curate ingest` command), one worker when the machine has two or
    more cores and the input is large (>= 16 MB), so cleaning the next chunk overlaps with writing this one; small
    inputs stay in-process (a worker's start-up, spaCy's import, costs about a second). Without `auto` (a library
    call), in-process: worker processes start by importing the caller's main module, which a script without an
    `if __name__ == "__main__":` guard cannot survive. More than one worker only pays with more cores than two:
    this process (reading, near-duplicates, database writes) needs one of its own.
    """
    if setting is not None:
        return setting
    if not auto:
        return 0
    size = sum(f.stat().st_size for f in files)
    return 1 if (os.cpu_count() or 1) >= 2 and size >= _AUTO_WORKER_BYTES else 0


_AHEAD = 3


class _Transactions:
    """One database transaction for several chunks: committed once `commit_rows` input rows are in it.

    Why: every commit writes each page the transaction changed to SQLite's WAL; the content-hash index takes its
    inserts in random order, so each commit rewrites most of its pages however few rows went in. Fewer, larger
    transactions write those pages fewer times. A crash still leaves whole transactions only (a re-run skips the rows
    they recorded); the near-duplicate index is in memory and dies with a failed run.
    """

    def __init__(self, store: Store, *, commit_rows: int) -> None:
        self.store = store
        self.commit_rows = commit_rows
        self._stack: ExitStack | None = None
        self._conn: Any = None
        self._rows = 0

    def connection(self) -> Any:
        if self._stack is None:
            stack = ExitStack()
            self._conn = stack.enter_context(self.store.connect(bulk=True))
            self._stack = stack
        return self._conn

    def wrote(self, rows: int) -> None:
        self._rows += rows
        if self._rows >= self.commit_rows:
            self.commit()

    def commit(self) -> None:
        stack, self._stack, self._conn, self._rows = self._stack, None, None, 0
        if stack is not None:
            stack.close()

    def rollback(self, exc: BaseException) -> None:
        stack, self._stack, self._conn, self._rows = self._stack, None, None, 0
        if stack is not None:
            stack.__exit__(type(exc), exc, exc.__traceback__)


@contextmanager
def _bulk_gc() -> Iterator[None]:
    """Fewer garbage-collector passes while ingesting; the previous settings come back afterwards.

    Why: an ingest allocates millions of short-lived containers (rows, tuples, lists of pieces), and CPython's
    default young-generation threshold (700 allocations) runs a collection every few hundred rows, each also
    counting towards full collections that walk every object the process holds (spaCy's vocabulary, NLTK, pandas).
    Freezing what exists at the start takes those out of every walk, and a threshold of 100,000 leaves cycles to
    be collected every 100,000 allocations instead: a few percent less time (3-5% measured), the same memory.
    """
    old = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0  # a caller that froze objects itself keeps them frozen: leave it alone
    if freeze:
        gc.freeze()
    gc.set_threshold(GC_GEN0, old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        if freeze:
            gc.unfreeze()


@_bulk_gc()
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
    auto_workers: bool = False,
) -> dict[str, Any]:
    """Ingest files into the store; returns the summary (see `IngestStats.as_dict`).

    `auto_workers`: choose worker processes by input size and cores when `[ingest] workers` is unset (see
    `_workers`); the CLI sets it.

    All files and columns are checked before anything is written: a missing file or unknown column is an
    `InputError` and the store is untouched. Large inputs run the CPU stages (cleaning to MinHash) in worker
    processes while this process reads the next chunk and writes the previous one.
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
    t0 = time.perf_counter()
    # read_batches checks the file and its columns on the call, before anything is written.
    readers = [(f, read_batches(f, options)) for f in files]
    stats = IngestStats()
    run_id = start_run(store, kind="ingest", params={
        "paths": [str(f.resolve()) for f in files], "domain": domain, "text_column": text_column,
        "label_column": label_column, "id_column": id_column, "group_column": group_column, "source": source,
    })
    workers = _workers(config.ingest.workers, files, auto=auto_workers)
    pool = (ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=worker_init)
            if workers else None)
    spool: Path | None = None  # where chunks and their results wait for a worker or for this process
    if pool is not None:
        pool.submit(int)  # starts the workers now (importing spaCy takes them a second or two), not at the first chunk
        spool = Path(tempfile.mkdtemp(prefix="curate-ingest-"))
    tx = _Transactions(store, commit_rows=config.ingest.commit_rows)
    scope = uuid.uuid4().hex  # this run, for the workers' memory of texts they prepared (see pipelines/prepare.py)
    try:
        params = MinHashParams(
            num_perm=config.ingest.num_perm, bands=config.ingest.bands, shingle_size=config.ingest.shingle_size,
            threshold=config.ingest.near_duplicate_threshold,
        )
        index = NearDupIndex(params=params, min_bands=config.ingest.near_duplicate_min_bands)
        timer = _Timer(stats)
        with timer("load_index"):
            known = _HashFilter()
            for part in docs_store.iter_index_rows(store, domain=domain, num_perm=params.num_perm):
                index.add_existing(part.ids, part.sigs, part.clusters)
                known.add(part.content_hashes)
        for path, it in readers:
            name = source or path.name
            source_id = docs_store.ensure_source(store, name=name, domain=domain, path=str(path.resolve()))
            before = stats.rows_read, stats.stored, stats.duplicates, stats.quarantined
            splitter: SentenceSplitter | None = None
            # [batch, job, state], in file order; state: None (read, not handed to a worker yet), a Future (with a
            # worker), Prepared, or _Recorded (a re-run's chunk that needs nothing).
            pending: deque[list[Any]] = deque()
            exhausted = False
            while pending or not exhausted:
                # Keep the workers busy: up to workers+3 chunks read ahead of the one being written, so that a slow
                # step here (a commit that checkpoints the WAL takes a second or two) does not leave them idle.
                while not exhausted and len(pending) <= (workers + _AHEAD if workers else 0):
                    with timer("read"):
                        batch = next(it, None)
                    if batch is None:
                        exhausted = True
                        break
                    stats.rows_read += len(batch)
                    if splitter is None:
                        sample = batch.loc[batch["error"].isna(), "text"].head(_PUNKT_SAMPLE).tolist()
                        with timer("train_punkt"):
                            splitter = train_sentence_splitter(sample) if len(sample) >= 200 else default_splitter()
                    done = _recorded_before(tx, source_id, batch)
                    if done is not None:  # a re-run: nothing to prepare, nothing to write
                        pending.append([batch, None, done])
                        continue
                    texts = batch.loc[batch["error"].isna(), "text"].astype(str).tolist()
                    job = dict(texts=texts, domain=domain, pii_types=list(config.pii.types), params=params,
                               splitter=splitter, scope=scope)
                    if pool is not None:
                        pending.append([batch, job, None])
                    else:
                        with timer("prepare"):
                            pending.append([batch, job, prepare(**job)])
                if not pending:
                    break
                if pool is not None and spool is not None:
                    _hand_to_workers(pending, pool, spool, capacity=2 * workers + 1)
                if isinstance(pending[0][2], Future) and not pending[0][2].done():
                    stats.chunks_prepared_here += _prepare_instead_of_waiting(pending)
                batch, job, fut = pending.popleft()
                if isinstance(fut, _Recorded):
                    fut.count(stats, len(batch))
                    if on_progress:
                        on_progress(len(batch))
                    continue
                with timer("wait_workers"):
                    # The head is never still unsent here: _hand_to_workers sends the oldest chunks first.
                    prepared = read_result(fut.result()) if isinstance(fut, Future) else fut
                for k, v in prepared.seconds.items():
                    stats.stage_seconds[k] += v
                _store_batch(
                    batch, prepared, job, domain=domain, source_id=source_id, source_name=name, run_id=run_id,
                    index=index, stats=stats, timer=timer, tx=tx, known=known,
                )
                with timer("db_commit"):
                    tx.wrote(len(batch))
                if on_progress:
                    on_progress(len(batch))
            with timer("db_commit"):
                tx.commit()
            stats.files.append({
                "path": str(path), "source": name, "format": sniff_format(path),
                "rows_read": stats.rows_read - before[0], "stored": stats.stored - before[1],
                "duplicates": stats.duplicates - before[2], "quarantined": stats.quarantined - before[3],
            })
    except BaseException as exc:
        tx.rollback(exc)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        finish_run(store, run_id, status="failed", stats=stats.as_dict(time.perf_counter() - t0),
                   error=f"{type(exc).__name__}: {exc}")
        if isinstance(exc, BrokenExecutor):
            raise CurationError(
                f"An ingest worker process stopped unexpectedly (killed, or out of memory?) after {stats.rows_read} "
                "rows were read; the transactions committed before it are kept.",
                hint="run the same command again: it skips the rows already recorded and stores the rest "
                "([ingest] workers = 0 prepares in this process, with less memory in all)",
            ) from exc
        raise
    finally:
        forget_runs()  # what this process remembered of the run's texts (it prepared some, or all without workers)
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)
    if pool is not None:
        pool.shutdown()
    seconds = time.perf_counter() - t0
    summary = stats.as_dict(seconds)
    summary["run_id"] = run_id
    summary["domain"] = domain
    summary["workers"] = workers
    finish_run(store, run_id, status="ok", stats=summary)
    return summary


def ingest_file(store: Store, path: Path | str, **kwargs: Any) -> dict[str, Any]:
    return ingest_files(store, [path], **kwargs)


def _store_batch(
    batch: pd.DataFrame,
    prep: Prepared,
    job: dict[str, Any],
    *,
    domain: str,
    source_id: int,
    source_name: str,
    run_id: int,
    index: NearDupIndex,
    stats: IngestStats,
    timer: _Timer,
    tx: _Transactions,
    known: _HashFilter,
) -> None:
    """Dedup against the store, write documents, occurrences, labels and quarantine in `tx`'s transaction.

    Under the domain's write lock, ids are reserved first and near-duplicate clusters computed with them, so each
    document row is written once, cluster id included, and nothing is read back. The near-duplicate index learns
    the batch after its rows are written (with the ids they really got); a transaction that fails fails the run,
    and its index with it.
    """
    good_mask = batch["error"].isna().to_numpy()
    good = batch.loc[good_mask]
    bad = batch.loc[~good_mask]
    row_nums = [int(x) for x in good["row_number"].tolist()]
    all_rows = [int(x) for x in batch["row_number"].tolist()]
    raws = good["raw"].tolist()
    raw_texts = good["text"].astype(str).tolist()
    # The readers give these columns as stripped strings or None, never blank (see readers._frame).
    ext = good["external_id"].tolist()
    grp = good["group"].tolist()
    meta = good["meta"].tolist()
    labels = good["label"].tolist()
    hashes, empty = prep.hashes, prep.empty
    plan: ClusterPlan | None = None
    # Every foreign key written below points at the source and run (committed before) or at a document or occurrence
    # written or read in this transaction, under the domain's write lock: SQLite need not check them row by row.
    conn = tx.connection()
    docs_store.lock_domain_writes(conn, domain)
    with timer("db_read"):
        seen = docs_store.recorded_rows(conn, source_id, min(all_rows), max(all_rows)) if all_rows else set()
    quarantine: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    for rn, raw, reason in zip(bad["row_number"].tolist(), bad["raw"].tolist(), bad["error"].tolist(),
                               strict=True):
        reasons[str(reason)] += 1
        if int(rn) not in seen:
            quarantine.append({"source_id": source_id, "row_number": int(rn), "reason": str(reason),
                               "raw_payload": raw, "run_id": run_id})
    empty_set = set(empty)
    for i in empty:
        reasons["empty_after_cleaning"] += 1
        if row_nums[i] not in seen:
            quarantine.append({"source_id": source_id, "row_number": row_nums[i],
                               "reason": "empty_after_cleaning", "raw_payload": raws[i], "run_id": run_id})
    n_quarantined = len(bad) + len(empty)
    live = [i for i in range(len(row_nums)) if i not in empty_set and row_nums[i] not in seen]
    already = sum(1 for i in range(len(row_nums)) if i not in empty_set and row_nums[i] in seen)
    with timer("db_read"):
        # Only texts the store may hold are looked up: a hash prefix that it had at the start or that this run
        # stored. One left out wrongly (another writer stored it meanwhile) collides on insert and is read back
        # there (`insert_documents`): the filter saves look-ups, it never decides.
        ask = [i for i, hit in zip(live, known.contains([hashes[i] for i in live]), strict=True) if hit]
        existing = docs_store.lookup_hashes(conn, domain, (hashes[i] for i in ask))
    prep = _prepare_missing(prep, live, existing, raw_texts, job)
    live_set = set(live)
    # New documents: the chunk's first row of each text, unless the store has it or the row was recorded.
    pos_in_first = {i: j for j, i in enumerate(prep.first)}
    new_pos = [i for i in prep.first if i in live_set and hashes[i] not in existing]
    with timer("db_write"):
        new_ids = docs_store.reserve_ids(conn, "documents", len(new_pos))
    clusters: list[int] = []
    first_rows = [pos_in_first[i] for i in new_pos]
    new_sigs = prep.sigs[first_rows]
    if new_pos:
        with timer("near_dup"):
            plan = index.plan(np.asarray(new_ids, dtype=np.int64), new_sigs)
        clusters = plan.clusters.tolist()
    with timer("db_write"):
        width = new_sigs.shape[1] * new_sigs.itemsize if new_sigs.ndim == 2 else 0
        blob = new_sigs.tobytes()
        # Column by column: SQLite binds them without a dict per row.
        m = len(new_pos)
        cols_doc: dict[str, list[Any]] = {
            "id": new_ids, "domain": [domain] * m, "source_id": [source_id] * m, "run_id": [run_id] * m,
            "row_number": [row_nums[i] for i in new_pos], "external_id": [ext[i] for i in new_pos],
            "group_key": [grp[i] for i in new_pos], "raw_text": [raw_texts[i] for i in new_pos],
            "text": [prep.masked[j] for j in first_rows], "content_hash": [hashes[i] for i in new_pos],
            "cluster_id": clusters, "n_tokens": [prep.n_tokens[j] for j in first_rows],
            "n_sentences": [prep.n_sentences[j] for j in first_rows], "meta": [meta[i] or None for i in new_pos],
            "minhash": [blob[k * width : (k + 1) * width] for k in range(m)],
        }
        ids_by_hash, inserted = docs_store.insert_documents(conn, cols_doc)
        if plan is not None and inserted < m:
            _adopt_concurrent(conn, plan, new_ids, [hashes[i] for i in new_pos], ids_by_hash)
        existing.update(ids_by_hash)
        known.add(cols_doc["content_hash"])
        new_set = set(new_pos)
        occ_ids = docs_store.reserve_ids(conn, "occurrences", len(live))
        n_live = len(live)
        live_docs = [existing[hashes[i]] for i in live]
        live_rows = [row_nums[i] for i in live]
        occ_by_row = docs_store.insert_occurrences(conn, {
            "id": occ_ids, "source_id": [source_id] * n_live, "row_number": live_rows, "document_id": live_docs,
            "external_id": [ext[i] for i in live], "group_key": [grp[i] for i in live],
            "is_duplicate": [i not in new_set for i in live], "run_id": [run_id] * n_live,
        })
        labeled = [k for k, i in enumerate(live) if labels[i] is not None and live_rows[k] in occ_by_row]
        stats.labels_imported += docs_store.insert_import_annotations(conn, {
            "document_id": [live_docs[k] for k in labeled], "annotator": [f"import:{source_name}"] * len(labeled),
            "label": [labels[live[k]] for k in labeled], "origin": ["import"] * len(labeled),
            "occurrence_id": [occ_by_row[live_rows[k]] for k in labeled], "run_id": [run_id] * len(labeled),
        })
        docs_store.insert_quarantine(conn, quarantine)
    if plan is not None:
        with timer("near_dup"):
            index.commit(plan)
        joined = plan.clusters != plan.doc_ids
        stats.near_duplicates += int(joined.sum())
        stats.joined_clusters.update(int(c) for c in plan.clusters[joined])
        stats.near_duplicate_clusters = len(stats.joined_clusters)
    # A concurrent run may have stored some of these texts first: for this run they are duplicates.
    stats.stored += inserted
    stats.duplicates += len(live) - inserted + already
    stats.already_ingested += already + (n_quarantined - len(quarantine))
    stats.quarantined += n_quarantined
    stats.quarantine_reasons.update(reasons)
    if not already:
        stats.pii_masked.update(prep.pii)


@dataclass
class _Recorded:
    """A chunk whose every row an earlier run recorded: `occurrences` as documents or duplicates, the others in
    quarantine (`reasons`)."""

    occurrences: int
    reasons: dict[str, int]

    def count(self, stats: IngestStats, rows: int) -> None:
        """The same counts as writing the chunk would give: every row is already ingested."""
        stats.duplicates += self.occurrences
        stats.already_ingested += rows
        stats.quarantined += sum(self.reasons.values())
        stats.quarantine_reasons.update(self.reasons)


def _recorded_before(tx: _Transactions, source_id: int, batch: pd.DataFrame) -> _Recorded | None:
    """`_Recorded` when an earlier run recorded every row of `batch` (a re-run, or the part a killed run finished),
    else None. Why: such a chunk would be cleaned, masked and tokenized only to be skipped row by row."""
    if batch.empty:
        return None
    rows = batch["row_number"].to_numpy()
    lo, hi = int(rows.min()), int(rows.max())
    if hi - lo + 1 != len(batch):
        return None
    occurrences, reasons = docs_store.recorded_counts(tx.connection(), source_id, lo, hi)
    if occurrences + sum(reasons.values()) != len(batch):
        return None
    return _Recorded(occurrences, reasons)


class _HashFilter:
    """64-bit prefixes of the content hashes the store holds (at the start, plus what this run stored): "might this
    text be stored?" in 8 bytes a document, as sorted runs merged like an LSM tree (a few binary searches a chunk).
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def add(self, hashes: list[str]) -> None:
        if hashes:
            add_sorted_run(self._runs, np.sort(hash_prefixes(hashes)))

    def contains(self, hashes: list[str]) -> list[bool]:
        if not self._runs or not hashes:
            return [False] * len(hashes)
        pre = hash_prefixes(hashes)
        hit = np.zeros(pre.size, dtype=bool)
        for run in self._runs:
            pos = np.minimum(np.searchsorted(run, pre), run.size - 1)
            hit |= run[pos] == pre
        out: list[bool] = hit.tolist()
        return out


def _hand_to_workers(pending: deque[list[Any]], pool: ProcessPoolExecutor, spool: Path, *, capacity: int) -> None:
    """Give read chunks to the workers, oldest first, while fewer than `capacity` of theirs are unfinished (the
    ingest allows 2 * workers + 1: one running per worker and more waiting, since it tops them up only between
    chunks and a commit here can take a second); the others wait here, where this process may take one.

    Why not submit every chunk at once and cancel a submitted one to prepare it here: a future cancelled before a
    worker dies stops the pool's manager thread (CPython gh-107219, still in 3.11) and the futures after it never
    finish, so the run would hang instead of failing. A chunk travels as a file in `spool` (see
    `pipelines.prepare.prepare_file`).
    """
    busy = sum(1 for item in pending if isinstance(item[2], Future) and not item[2].done())
    for item in pending:
        if busy >= capacity:
            return
        if item[2] is None:
            item[2] = pool.submit(prepare_file, write_job(spool, item[1]))
            busy += 1


def _prepare_instead_of_waiting(pending: deque[list[Any]]) -> int:
    """About to wait for the workers: prepare here a chunk not handed to them (the latest one read). Returns 1 if it
    did, else 0.

    Why: on many inputs this process's own work (reading, near-duplicates, writing) is lighter than a worker's;
    instead of sitting idle it takes a share of the preparing, and both sides finish at about the same time.
    """
    for item in reversed(pending):
        if item[2] is None:
            item[2] = prepare(**item[1])
            return 1
    return 0


def _prepare_missing(
    prep: Prepared, live: list[int], existing: dict[str, int], texts: list[str], job: dict[str, Any]
) -> Prepared:
    """`prep` with the texts it skipped as prepared before (see pipelines/prepare.py) that the store does not have
    after all, prepared here; usually there are none and `prep` comes back as it is."""
    hashes = prep.hashes
    given = {hashes[i] for i in prep.first}
    missing: list[int] = []
    for i in live:
        h = hashes[i]
        if h not in existing and h not in given:
            given.add(h)
            missing.append(i)
    if not missing:
        return prep
    extra = prepare(**{**job, "texts": [texts[i] for i in missing], "scope": None})
    rows = prep.first + [missing[j] for j in extra.first]
    masked = prep.masked + extra.masked
    n_tokens = prep.n_tokens + extra.n_tokens
    n_sentences = prep.n_sentences + extra.n_sentences
    sigs = np.concatenate([prep.sigs, extra.sigs])
    order = sorted(range(len(rows)), key=rows.__getitem__)
    return Prepared(
        masked=[masked[k] for k in order], empty=prep.empty, hashes=hashes, pii=prep.pii,
        first=[rows[k] for k in order], n_tokens=[n_tokens[k] for k in order],
        n_sentences=[n_sentences[k] for k in order], sigs=sigs[order], seconds=prep.seconds,
    )


def _adopt_concurrent(
    conn: Any, plan: ClusterPlan, new_ids: list[int], new_hashes: list[str], ids_by_hash: dict[str, int]
) -> None:
    """Some reserved rows were not inserted: the store had those texts after all (another writer that does not take
    `lock_domain_writes` stored them meanwhile, so `_HashFilter` could not know). Their reserved ids
    never existed, so the batch's cluster ids that point at them are moved to the real documents, in the plan and
    in the rows this run did write."""
    mapping = {pid: ids_by_hash[h] for pid, h in zip(new_ids, new_hashes, strict=True) if ids_by_hash[h] != pid}
    written = plan.clusters.copy()
    plan.relabel(mapping)
    ours = [k for k, pid in enumerate(new_ids) if pid not in mapping and plan.clusters[k] != written[k]]
    docs_store.update_clusters(conn, [new_ids[k] for k in ours], [int(plan.clusters[k]) for k in ours])
