"""The embedding cache: Parquet files keyed by (encoder key, content hash), so each text is encoded once per model.

Why Parquet next to the store instead of store rows: a million 384-float vectors are 1.5 GB, which a database
handles poorly. Layout: `<root>/<model slug>/part-*.parquet`, append-only parts with columns `content_hash`
(SHA-1 of the exact text encoded) and `embedding` (the float32 vector as fixed-size binary, which Parquet reads
at disk speed; a list column would be decoded value by value, 15x slower); `model.json` records the encoder key
and width. A nightly run reads the hash column, encodes only what is missing and appends one part; many parts are
merged under a file lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock

from curation.errors import StoreError

__all__ = ["EmbeddingCache", "text_hash", "text_hashes", "default_cache_dir", "embed_texts"]

_MAX_PARTS = 32


def text_hash(text: str) -> str:
    """SHA-1 of the exact text (lone surrogates kept, as the ingest's content hash does)."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def text_hashes(texts: Sequence[str]) -> list[str]:
    return [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]


def default_cache_dir(db_url: str | None, configured: str | None = None) -> Path:
    """`configured`, else `<SQLite file's folder>/embeddings`, else `./.curate/embeddings`."""
    if configured:
        return Path(configured).expanduser().resolve()
    if db_url and db_url.startswith("sqlite:") and ":///" in db_url:
        db_path = db_url.split(":///", 1)[1].split("?", 1)[0]
        if db_path and db_path != ":memory:":
            return Path(db_path).expanduser().resolve().parent / "embeddings"
    return (Path.cwd() / ".curate" / "embeddings").resolve()


def _slug(key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key.split("|")[0].rsplit("/", 1)[-1])[:60]
    return f"{readable}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:12]}"


class EmbeddingCache:
    """Vectors of one encoder key, looked up by content hash."""

    def __init__(self, root: str | os.PathLike[str], key: str, *, dim: int | None = None) -> None:
        self.root = Path(root)
        self.key = key
        self.dim = dim
        self.folder = self.root / _slug(key)

    def _parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def _lock(self) -> FileLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.folder / ".lock"), timeout=600)

    def count(self) -> int:
        """Distinct hashes cached."""
        hashes = [pq.read_table(p, columns=["content_hash"]).column(0) for p in self._parts()]
        return len(pc.unique(pa.chunked_array(hashes, type=pa.string()))) if hashes else 0

    def get(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, vectors of the found hashes in input order)."""
        if self.dim is None:
            self._read_dim()
        out = np.zeros((len(hashes), self.dim or 0), dtype=np.float32)
        mask = self.get_into(hashes, out) if self.dim else np.zeros(len(hashes), dtype=bool)
        return mask, out[mask]

    def get_into(self, hashes: Sequence[str], out: np.ndarray) -> np.ndarray:
        """Write the cached vectors of `hashes` into the rows of `out`; returns the found mask.

        Why this shape: for a million-document pool the vectors are copied once, straight from each part's
        buffer into `out` (stored as fixed-size binary, which Parquet reads without per-value decoding).
        """
        if not len(hashes):
            return np.zeros(0, dtype=bool)
        for attempt in range(3):
            try:
                return self._scan(hashes, out)
            except FileNotFoundError:  # a compaction replaced parts meanwhile
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _read_dim(self) -> None:
        meta = self.folder / "model.json"
        if meta.is_file():
            self.dim = int(json.loads(meta.read_text(encoding="utf-8"))["dim"])

    def _scan(self, hashes: Sequence[str], out: np.ndarray) -> np.ndarray:
        codes, uniq = pd.factorize(np.asarray(hashes, dtype=object))
        direct = len(uniq) == len(hashes)  # then codes are 0..n-1 in order
        target = out if direct else np.zeros((len(uniq), out.shape[1]), dtype=np.float32)
        index = pd.Index(uniq, dtype=object)
        found = np.zeros(len(uniq), dtype=bool)
        for part in self._parts():
            col = pq.read_table(part, columns=["content_hash"]).column(0)
            pos = index.get_indexer(col.to_numpy(zero_copy_only=False))
            rows = np.flatnonzero(pos >= 0)
            rows = rows[~found[pos[rows]]]
            if not len(rows):
                continue
            emb = pq.read_table(part, columns=["embedding"]).column(0).combine_chunks()
            width = emb.type.byte_width // 4
            if width != out.shape[1]:
                raise StoreError(f"{part} holds {width}-d vectors, not {out.shape[1]}-d.",
                                 hint="delete that cache folder; it was written by a different encoder")
            mat = np.frombuffer(emb.buffers()[1], dtype=np.float32, count=len(emb) * width,
                                offset=emb.offset * width * 4).reshape(-1, width)
            target[pos[rows]] = mat[rows]
            found[pos[rows]] = True
            if found.all():
                break
        if direct:
            return found
        mask = found[codes]
        out[mask] = target[codes[mask]]
        return mask

    def put(self, hashes: Sequence[str], vectors: np.ndarray) -> Path | None:
        """Append one part (written to a temp name and renamed, so readers never see half a file)."""
        if len(hashes) == 0:
            return None
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(hashes):
            raise StoreError(f"{len(hashes)} hashes but {vectors.shape[0]} vectors given to the embedding cache.")
        dim = int(vectors.shape[1])
        if self.dim is None:
            self._read_dim()
        if self.dim is not None and dim != self.dim:
            raise StoreError(
                f"The embedding cache {self.folder} holds {self.dim}-d vectors, not {dim}-d.",
                hint="delete that folder; its encoder key changed without a new fingerprint",
            )
        self.dim = dim
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "model.json"
        if not meta.exists():
            meta.write_text(json.dumps({"key": self.key, "dim": dim, "dtype": "float32"}), encoding="utf-8")
        table = pa.table({
            "content_hash": pa.array(list(hashes), type=pa.string()),
            "embedding": pa.FixedSizeBinaryArray.from_buffers(pa.binary(dim * 4), len(hashes),
                                                              [None, pa.py_buffer(vectors)]),
        })
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(table, tmp, compression="none", row_group_size=262_144)
        final = self.folder / name
        tmp.replace(final)
        if len(self._parts()) > _MAX_PARTS:
            self.compact()
        return final

    def compact(self) -> None:
        """Merge all parts into one, dropping repeated hashes (under the folder's lock)."""
        with self._lock():
            parts = self._parts()
            if len(parts) <= 1:
                return
            table = pa.concat_tables(pq.read_table(p) for p in parts)
            hashes = table.column("content_hash").to_numpy(zero_copy_only=False)
            _, first = np.unique(hashes, return_index=True)
            table = table.take(pa.array(np.sort(first)))
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = self.folder / f".{name}.tmp"
            pq.write_table(table, tmp, compression="none", row_group_size=262_144)
            tmp.replace(self.folder / name)
            for p in parts:
                p.unlink(missing_ok=True)


def embed_texts(
    texts: Sequence[str],
    *,
    encoder: Any,
    cache: EmbeddingCache | None,
    hashes: Sequence[str] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Vectors for `texts` in order: cached ones read, the rest encoded once and appended to the cache.

    Returns (vectors, {"cached": n, "encoded": n}); repeated texts are encoded once.
    """
    hashes = list(hashes) if hashes is not None else text_hashes(texts)
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if not len(texts):
        return out, {"cached": 0, "encoded": 0}
    if cache is not None:
        mask = cache.get_into(hashes, out)
    else:
        mask = np.zeros(len(texts), dtype=bool)
    missing = np.flatnonzero(~mask)
    first: dict[str, int] = {}
    for i in missing:
        first.setdefault(hashes[i], int(i))
    todo = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    if len(todo):
        new = encoder.encode([texts[i] for i in todo], on_progress=on_progress)
        if cache is not None:
            cache.put([hashes[i] for i in todo], new)
        row_of = {hashes[i]: k for k, i in enumerate(todo)}
        out[missing] = new[[row_of[hashes[i]] for i in missing]]
    return out, {"cached": int(mask.sum()), "encoded": len(todo)}
