"""The CPU-heavy part of an ingest chunk: clean, mask, normalize, hash, and for new texts tokens, sentences and
MinHash signatures. Runs in worker processes for large inputs.

Why a module of its own: a worker process imports only this (and the stages it calls), not the store, SQLAlchemy
and Alembic that the writing side needs, so it starts sooner.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.clean import clean_batch, normalize_batch
from pipelines.dedup import MinHashParams, compact_signatures, signatures
from pipelines.pii import mask_each
from pipelines.tokenize import SentenceSplitter, count_tokens

__all__ = ["GC_GEN0", "Prepared", "forget_runs", "hash_prefixes", "prepare", "prepare_file", "read_result",
           "worker_init", "write_job"]

GC_GEN0 = 100_000


def _sha1(texts: Sequence[str]) -> list[str]:
    return [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]


def hash_prefixes(hashes: Sequence[str]) -> np.ndarray:
    """The first 64 bits of hex content hashes as uint64 (one that is not hex gives 0: no hex hash has its value,
    so a filter with it only says "maybe" a little more often)."""
    try:
        return np.frombuffer(bytes.fromhex("".join(h[:16].ljust(16, "0") for h in hashes)), dtype=">u8").astype(
            np.uint64
        )
    except ValueError:
        out = np.zeros(len(hashes), dtype=np.uint64)
        for k, h in enumerate(hashes):
            try:
                out[k] = int(h[:16], 16)
            except ValueError:
                pass
        return out


def worker_init() -> None:
    """Ingest worker processes keep the bulk settings for their whole life (they do nothing else); spaCy is loaded
    first so that its objects are among the frozen ones."""
    count_tokens(["warm up"])
    gc.freeze()
    gc.set_threshold(GC_GEN0, *gc.get_threshold()[1:])


@dataclass
class Prepared:
    """The CPU-heavy part of a chunk, computed for its readable rows (in a worker process when there are many).

    Masked texts, token and sentence counts and MinHash signatures are given only for the first row of each
    distinct text in the chunk that this process did not prepare for an earlier chunk of the run (`first`, in that
    order); other rows of those texts are duplicates whatever the store holds. `empty`: rows whose text is empty
    once cleaned and normalized.
    """

    masked: list[str]
    empty: list[int]
    hashes: list[str]
    pii: Counter[str]
    first: list[int]
    n_tokens: list[int]
    n_sentences: list[int]
    sigs: np.ndarray
    seconds: dict[str, float]


_PREPARED_LIMIT = 1_000_000


class _PreparedBefore:
    """Texts (64-bit prefixes of their content hashes) this process prepared earlier in the same run.

    Why: a text seen in an earlier chunk is a duplicate by the time its chunk is written (the earlier chunk stored
    it, or the store had it), so its tokens, sentences and signature would be thrown away; on the benchmark's
    1M rows that is one text in eight. Scoped to one run (a later run, another store or a library caller's next
    call starts afresh) and bounded (cleared past a million texts, it is only a shortcut). A prefix that collides,
    or a text first seen at a row an earlier run recorded under another hash, is found missing by the writer,
    which prepares it itself (`_prepare_missing`).
    """

    scope: str | None = None
    hashes: set[int] = set()

    @classmethod
    def split(cls, scope: str | None, hashes: list[str], first: list[int]) -> list[int]:
        """The positions of `first` not prepared before in `scope`; all of them are remembered."""
        if scope is None:
            return first
        if scope != cls.scope or len(cls.hashes) > _PREPARED_LIMIT:
            cls.scope, cls.hashes = scope, set()
        known = cls.hashes
        fresh = []
        for i, key in zip(first, hash_prefixes([hashes[i] for i in first]).tolist(), strict=True):
            if key not in known:
                known.add(key)
                fresh.append(i)
        return fresh


_RAW_MEMO_TEXTS = 25_000
_EMPTY_HASH = hashlib.sha1(b"").hexdigest()  # the content hash of a text that is empty once normalized


class _RawMemo:
    """The content hashes of raw texts this process prepared recently in the same run, and what PII they held.

    Why: exported data repeats rows verbatim (retweets, templated messages, re-exports; one row in seven on the
    benchmark's 1M rows), and cleaning, masking and normalizing a text again gives what it gave before (the run
    fixes domain and PII types). A repeat needs only its hash (which also says whether its normalized text is
    empty) and its PII counts (its rows still count), not its masked text: `_PreparedBefore` already holds its
    hash, so it is never new to this process. Two generations of `_RAW_MEMO_TEXTS` texts bound the memory (the
    raw strings it keeps: about 15 MB at most).
    """

    scope: tuple[Any, ...] | None = None
    young: dict[str, str] = {}
    old: dict[str, str] = {}
    pii: dict[str, dict[str, int]] = {}  # only texts with PII, of either generation

    @classmethod
    def start(cls, scope: tuple[Any, ...]) -> None:
        if scope != cls.scope:
            cls.scope, cls.young, cls.old, cls.pii = scope, {}, {}, {}

    @classmethod
    def remember(cls, texts: list[str], hashes: list[str], found: dict[str, dict[str, int]]) -> None:
        cls.young.update(zip(texts, hashes, strict=True))
        cls.pii.update(found)
        if len(cls.young) >= _RAW_MEMO_TEXTS:
            cls.old, cls.young = cls.young, {}
            cls.pii = {t: c for t, c in cls.pii.items() if t in cls.old}


def forget_runs() -> None:
    """Drop what this process remembers of the runs it prepared for (`_PreparedBefore`, `_RawMemo`).

    Why: a long-lived process (a library caller, a nightly job) would otherwise keep up to a million hash prefixes
    and 50k raw texts after its ingest returned; worker processes end with the run anyway.
    """
    _PreparedBefore.scope, _PreparedBefore.hashes = None, set()
    _RawMemo.scope, _RawMemo.young, _RawMemo.old, _RawMemo.pii = None, {}, {}, {}


def _clean_mask_key(
    texts: list[str], *, domain: str, pii_types: list[str], lap: Callable[[str, float], float]
) -> tuple[list[str], list[dict[str, int] | None], list[str]]:
    """Masked text, PII found and dedup key of each text; `lap` records each step's seconds."""
    t = time.perf_counter()
    cleaned = clean_batch(texts, domain=domain)
    t = lap("clean", t)
    masked, found = mask_each(cleaned, types=pii_types)
    t = lap("mask_pii", t)
    keys = normalize_batch(masked)
    lap("normalize", t)
    return masked, found, keys


def prepare(
    *,
    texts: list[str],
    domain: str,
    pii_types: list[str],
    params: MinHashParams,
    splitter: SentenceSplitter,
    scope: str | None = None,
) -> Prepared:
    """Clean, mask, normalize and hash every text; tokens, sentences and signatures for the new ones.

    A text repeated in the chunk is prepared once. `scope` (a run): a text this process prepared for an earlier
    chunk of that run is not prepared again (see `_RawMemo`), nor are its tokens, sentences and signature computed
    again (see `_PreparedBefore`).
    """
    secs: dict[str, float] = {}

    def lap(name: str, t: float) -> float:
        now = time.perf_counter()
        secs[name] = secs.get(name, 0.0) + now - t
        return now

    t = time.perf_counter()
    # Each distinct text once (`uniq`, in the order met; `idx`: each row's), and what the memory holds of them.
    pos: dict[str, int] = {}
    idx = [pos.setdefault(text, len(pos)) for text in texts]
    uniq = list(pos)
    if scope is not None:
        _RawMemo.start((scope, domain, tuple(pii_types)))
        young, old = _RawMemo.young.get, _RawMemo.old.get
        hash_u: list[str | None] = [young(text) or old(text) for text in uniq]
    else:
        hash_u = [None] * len(uniq)
    fresh_k = [k for k, h in enumerate(hash_u) if h is None]
    fresh = [uniq[k] for k in fresh_k]
    t = lap("repeats", t)
    masked, found, keys = _clean_mask_key(fresh, domain=domain, pii_types=pii_types, lap=lap)
    t = time.perf_counter()
    fresh_hashes = _sha1(keys)
    t = lap("hash", t)
    where = [-1] * len(uniq)  # position in `fresh`
    for j, k in enumerate(fresh_k):
        hash_u[k] = fresh_hashes[j]
        where[k] = j
    pii_u = {k: c for k, c in zip(fresh_k, found, strict=True) if c}
    if scope is not None:
        found_here = {uniq[k]: c for k, c in pii_u.items()}
        if len(fresh) < len(uniq):  # the remembered texts' PII, before `remember` may drop a generation
            known = _RawMemo.pii
            pii_u.update((k, known[uniq[k]]) for k in range(len(uniq)) if where[k] < 0 and uniq[k] in known)
        _RawMemo.remember(fresh, fresh_hashes, found_here)
    hashes: list[str] = [hash_u[k] for k in idx]  # type: ignore[misc]
    times = np.bincount(np.asarray(idx, dtype=np.int64), minlength=len(uniq)) if idx else np.zeros(0, np.int64)
    pii: Counter[str] = Counter()
    for k, c in pii_u.items():
        for name, v in c.items():
            pii[name] += v * int(times[k])
    blank = {k for k, h in enumerate(hash_u) if h == _EMPTY_HASH}
    empty = [i for i, k in enumerate(idx) if k in blank] if blank else []
    # The first row of each distinct non-empty hash, in row order (distinct texts are numbered in the order met).
    first_row = np.unique(np.asarray(idx, dtype=np.int64), return_index=True)[1].tolist() if idx else []
    seen: set[str | None] = set()
    first: list[int] = []
    for k, h in enumerate(hash_u):
        if k not in blank and h not in seen:
            seen.add(h)
            first.append(first_row[k])
    first = _PreparedBefore.split(scope, hashes, first)
    # Masked texts and keys of the new rows: those prepared just now, or (rarely: `_PreparedBefore` forgot them)
    # remembered texts, prepared again.
    again = [texts[i] for i in first if where[idx[i]] < 0]
    if again:
        t = lap("repeats", t)
        m2, _, k2 = _clean_mask_key(again, domain=domain, pii_types=pii_types, lap=lap)
        t = time.perf_counter()  # preparing them again went to the clean, mask and normalize stages
        redo = dict(zip(again, zip(m2, k2, strict=True), strict=True))
    new_texts: list[str] = []
    new_keys: list[str] = []
    for i in first:
        j = where[idx[i]]
        if j >= 0:
            new_texts.append(masked[j])
            new_keys.append(keys[j])
        else:
            m, key = redo[texts[i]]
            new_texts.append(m)
            new_keys.append(key)
    t = lap("repeats", t)
    n_tokens = count_tokens(new_texts)
    t = lap("tokenize", t)
    n_sents = splitter.count(new_texts)
    t = lap("sentences", t)
    sigs = compact_signatures(signatures(new_keys, params=params))
    lap("minhash", t)
    # Only what the writer needs goes back (the result crosses a pipe): masked texts of the new rows only, and
    # the positions whose normalized text is empty instead of all normalized texts.
    return Prepared(masked=new_texts, empty=empty, hashes=hashes, pii=pii, first=first, n_tokens=list(n_tokens),
                    n_sentences=list(n_sents), sigs=sigs, seconds=secs)


def write_job(spool: Path, job: dict[str, Any]) -> str:
    """`prepare`'s keyword arguments pickled to a new file in `spool`, for `prepare_file` in a worker."""
    path = spool / f"{uuid.uuid4().hex}.job"
    path.write_bytes(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
    return str(path)


def prepare_file(path: str) -> str:
    """`prepare` in a worker process, through files: the job (from `write_job`) is read from `path` and removed,
    the result is written beside it, and its path comes back (for `read_result`).

    Why files and not the pool's pipes: a chunk is megabytes each way. A worker killed (by the OOM killer, say) in
    the middle of sending a result through the pipe left ProcessPoolExecutor's reader waiting forever for the rest
    (CPython 3.11), so the run hung instead of failing; a message of a few hundred bytes is written whole (below
    PIPE_BUF) or not at all. The ingest runs as fast as with the pipes (measured).
    """
    src = Path(path)
    result = prepare(**_take(src))
    part, out = src.with_suffix(".part"), src.with_suffix(".out")
    part.write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(part, out)  # the result file is complete or absent
    return str(out)


def read_result(path: str) -> Prepared:
    """A worker's result, from the file `prepare_file` wrote (and removed)."""
    result: Prepared = _take(Path(path))
    return result


def _take(path: Path) -> Any:
    """The object pickled at `path`, which is removed: a job or a result is read once."""
    obj = pickle.loads(path.read_bytes())  # noqa: S301 - written by this ingest or its own worker
    path.unlink()
    return obj
