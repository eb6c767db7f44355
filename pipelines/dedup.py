"""Near-duplicate clustering with MinHash LSH, streamed batch by batch across ingest runs.

Exact duplicates are caught earlier by hashing the normalized text; this stage groups texts that
differ by a word or two (retweets with a changed handle, templated complaints), so that a split
never puts two members of one cluster on different sides. Signatures are computed for a whole
batch at once in numpy and the LSH index keeps everything in flat numpy arrays (about 180 MB
for a million documents), so cluster ids are reproducible from run to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from curation.errors import ConfigError, InputError

__all__ = [
    "ClusterPlan", "MinHashParams", "NearDupIndex", "add_sorted_run", "compact_signatures", "shingle_hashes",
    "signatures",
]

_U32_MAX = np.uint32(0xFFFFFFFF)
_U16_MAX = np.uint16(0xFFFF)
_LOW32 = np.uint64(0xFFFFFFFF)
_WORD_BASE = 0x100000001B3
_SHINGLE_WEIGHT = 0x9E3779B97F4A7C15
_KEY_WEIGHT = 0xC2B2AE3D27D4EB4F
_IN_WORD = np.ones(256, dtype=np.int8)
_IN_WORD[list(b" \t\n\r\x0b\x0c")] = 0
_BYTE_VALUE = np.arange(1, 257, dtype=np.uint64) * _IN_WORD.astype(np.uint64)
_CHUNK_DOCS = 8192
_PERM_DOCS = 1024
_PAIR_CHUNK = 1 << 16
_BLOCK_BITS = 16


@dataclass(frozen=True)
class MinHashParams:
    """Signature and LSH settings; changing any of them invalidates stored signatures.

    With 16 bands of 4 rows a pair at Jaccard 0.8 shares a band with probability 0.9998 (two
    bands, which `NearDupIndex(min_bands=2)` asks for: 0.997), so recall is governed by the
    verification `threshold`, not by the banding. Word bigrams are
    strict on short texts: replacing one middle word of an n-word text leaves Jaccard
    (n - 3) / (n + 1), i.e. 0.81 at 20 words and 0.69 at 12; `shingle_size=1` is the lenient
    choice (0.9 and 0.85).
    """

    num_perm: int = 64
    bands: int = 16
    shingle_size: int = 2
    threshold: float = 0.8
    seed: int = 1

    def __post_init__(self) -> None:
        if self.num_perm < 1 or self.bands < 1 or self.num_perm % self.bands:
            raise ConfigError(
                f"MinHash needs num_perm divisible by bands; got num_perm={self.num_perm}, "
                f"bands={self.bands}.",
                hint="Use e.g. num_perm=64, bands=16 (4 rows per band).",
            )
        if self.shingle_size < 1:
            raise ConfigError(f"shingle_size must be >= 1; got {self.shingle_size}.")
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1]; got {self.threshold}.")

    @property
    def rows(self) -> int:
        return self.num_perm // self.bands

    @property
    def min_agreement(self) -> int:
        """Matching signature positions needed for estimated Jaccard >= threshold."""
        return int(np.ceil(self.threshold * self.num_perm - 1e-9))


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: an avalanching bijection (uint64 wraps by design)."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch applies it before permuting."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@lru_cache(maxsize=8)
def _powers(n: int) -> np.ndarray:
    out = np.full(n, _WORD_BASE, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every whitespace-separated word, and how many words each text has.

    A word is a maximal run of non-ASCII-whitespace bytes of the UTF-8 text; its hash is
    fmix64(len + sum((byte_i + 1) * B**i) mod 2**64), computed for all words at once from a
    running sum over the joined batch.
    """
    encoded = [t.encode("utf-8") for t in texts]
    buf = np.frombuffer(b" ".join(encoded), dtype=np.uint8)
    doc_starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))[:-1] + 1, out=doc_starts[1:])
    edges = np.flatnonzero(np.diff(_IN_WORD[buf], prepend=np.int8(0), append=np.int8(0)))
    starts, ends = edges[0::2], edges[1::2]
    counts = np.diff(np.searchsorted(starts, doc_starts), append=starts.size)
    if starts.size == 0:
        return np.zeros(0, dtype=np.uint64), counts
    buf = buf[starts[0] :]
    starts, ends = starts - starts[0], ends - starts[0]
    pos = np.arange(buf.size) - np.repeat(starts, np.diff(starts, append=buf.size))
    vals = _BYTE_VALUE[buf]
    vals *= _powers(int(pos.max()) + 1)[pos]
    running = np.zeros(vals.size + 1, dtype=np.uint64)
    np.cumsum(vals, out=running[1:])
    poly = running[ends] - running[starts]
    return _fmix64(poly + (ends - starts).astype(np.uint64)), counts


def shingle_hashes(texts: Sequence[str], *, shingle_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the word shingles of each text, flat, with offsets (len(texts) + 1).

    Shingle i of text d is `hashes[offsets[d] + i]`. A text with fewer words than
    `shingle_size` gets a single shingle of all its words; an empty text gets none. The hash
    (fmix64 of the position-weighted sum of the word hashes, upper 32 bits) is plain integer
    arithmetic, so it is the same in every process and on every machine.
    """
    if shingle_size < 1:
        raise ConfigError(f"shingle_size must be >= 1; got {shingle_size}.")
    words, counts = _word_hashes(texts)
    n_shingles = np.where(counts >= shingle_size, counts - shingle_size + 1, np.minimum(counts, 1))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(n_shingles, out=offsets[1:])
    if words.size == 0:
        return np.zeros(0, dtype=np.uint32), offsets
    word_doc = np.repeat(np.arange(len(texts)), counts)
    word_start = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(counts[:-1], out=word_start[1:])
    # A shingle starts at word j when the doc still has shingle_size words from j on, or when
    # j is the first word of a doc shorter than that.
    remaining = word_start[word_doc] + counts[word_doc] - np.arange(words.size)
    first = np.arange(words.size) == word_start[word_doc]
    starts = np.flatnonzero((remaining >= shingle_size) | (first & (counts[word_doc] < shingle_size)))
    length = np.minimum(remaining[starts], shingle_size)
    acc = np.zeros(starts.size, dtype=np.uint64)
    for t in range(shingle_size):
        take = length > t
        weight = np.uint64((_SHINGLE_WEIGHT * (t + 1)) & 0xFFFFFFFFFFFFFFFF | 1)
        acc[take] += words[starts[take] + t] * weight
    return (_fmix64(acc) >> np.uint64(32)).astype(np.uint32), offsets


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's "affine32" permutations: odd a, any b, drawn from RandomState(seed)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def signatures(texts: Sequence[str], *, params: MinHashParams = MinHashParams()) -> np.ndarray:
    """MinHash signatures, shape (len(texts), num_perm), uint32, for a whole batch at once.

    Each value is min over shingles of `a_k * fmix32(h) + b_k (mod 2**32)`. This is exactly
    datasketch's default scheme since 2.0 ("affine32"): row d equals
    `datasketch.MinHash(num_perm, seed=seed, hashfunc=int)` updated with the shingle hashes of
    text d (tested). Only the shingle hash differs from datasketch's default (SHA-1 per shingle,
    one Python call each), so estimates have the same accuracy at a fraction of the cost. An
    empty text keeps datasketch's empty value, 2**32 - 1 everywhere.
    """
    a, b = _permutations(params.num_perm, params.seed)
    out = np.full((params.num_perm, len(texts)), _U32_MAX, dtype=np.uint32)
    for lo in range(0, len(texts), _CHUNK_DOCS):
        hashes, offsets = shingle_hashes(texts[lo : lo + _CHUNK_DOCS], shingle_size=params.shingle_size)
        mixed = _fmix32(hashes)
        # Permutation-major blocks of ~1,000 docs keep the working set in cache.
        for sub in range(0, len(offsets) - 1, _PERM_DOCS):
            off = offsets[sub : sub + _PERM_DOCS + 1]
            has = np.flatnonzero(off[1:] > off[:-1])
            if has.size == 0:
                continue
            permuted = a[:, None] * mixed[None, off[0] : off[-1]]
            permuted += b[:, None]
            out[:, lo + sub + has] = np.minimum.reduceat(permuted, off[has] - off[0], axis=1)
    return np.ascontiguousarray(out.T)


def compact_signatures(sigs: np.ndarray) -> np.ndarray:
    """The low 16 bits of each signature value (b-bit MinHash): all that the index uses and the store keeps.

    Why: half the bytes per document in the store, in the index and between processes. Verification loses almost
    nothing (two different values agree in their low 16 bits with probability 2**-16), and a band's bucket key is
    a hash of its `rows` 16-bit values (64 bits for 4 rows: chance collisions are negligible). An empty text's
    signature (all 2**32 - 1) becomes all 2**16 - 1. uint16 input is returned as it is.
    """
    sigs = np.asarray(sigs)
    if sigs.dtype == np.uint16:
        return sigs
    return (sigs & np.uint32(0xFFFF)).astype(np.uint16)


def _band_keys(sigs: np.ndarray, params: MinHashParams) -> np.ndarray:
    """One uint32 bucket key per (doc, band): a hash of the band's `rows` (compact) signature values."""
    banded = sigs.reshape(len(sigs), params.bands, params.rows).astype(np.uint64)
    h = np.zeros((len(sigs), params.bands), dtype=np.uint64)
    for r in range(params.rows):
        h = _fmix64((h ^ banded[:, :, r]) * np.uint64(_KEY_WEIGHT))
    return (h >> np.uint64(32)).astype(np.uint32)


def _sig_hash(sigs: np.ndarray) -> np.ndarray:
    h = np.zeros(len(sigs), dtype=np.uint64)
    for col in sigs.T:
        h = _fmix64((h ^ col.astype(np.uint64)) * np.uint64(_KEY_WEIGHT))
    return h


def _ranges(lo: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated aranges lo[i] .. lo[i] + count[i], and which i each element came from."""
    owner = np.repeat(np.arange(lo.size), count)
    first = np.cumsum(count) - count
    return lo[owner] + np.arange(owner.size) - first[owner], owner


def add_sorted_run(runs: list[np.ndarray], run: np.ndarray) -> None:
    """Append sorted `run` to `runs`, merging while the previous run is at most twice its size (an LSM tree):
    log(n) runs to search, and each value is merged about log(n) times."""
    runs.append(run)
    while len(runs) > 1 and runs[-2].size <= 2 * runs[-1].size:
        newer = runs.pop()
        runs[-1] = np.sort(np.concatenate([runs[-1], newer]), kind="stable")


class _Blocks:
    """Append-only rows in blocks of 65,536, 65,536, 131,072, 262,144, ... rows.

    Block k >= 1 starts at row 2**(15 + k), so growing never copies stored rows, a row's block
    is a bit length, and a million rows live in six blocks. Untouched capacity is never paged in.
    """

    def __init__(self, dtype: type, width: int | None = None) -> None:
        self._dtype = dtype
        self._width: tuple[int, ...] = () if width is None else (width,)
        self._blocks: list[np.ndarray] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def nbytes(self) -> int:
        per_row = np.dtype(self._dtype).itemsize * (self._width[0] if self._width else 1)
        return self._len * per_row

    @staticmethod
    def _start(k: int) -> int:
        return 0 if k == 0 else 1 << (_BLOCK_BITS - 1 + k)

    def append(self, values: np.ndarray) -> None:
        done = 0
        while done < len(values):
            k = max(0, self._len.bit_length() - _BLOCK_BITS)
            if k == len(self._blocks):
                size = self._start(k + 1) - self._start(k)
                self._blocks.append(np.empty((size,) + self._width, dtype=self._dtype))
            fill = self._len - self._start(k)
            step = min(len(values) - done, len(self._blocks[k]) - fill)
            self._blocks[k][fill : fill + step] = values[done : done + step]
            done += step
            self._len += step

    def take(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.empty((len(rows),) + self._width, dtype=self._dtype)
        if len(self._blocks) == 1:
            out[:] = self._blocks[0][rows]
            return out
        bits = np.zeros(len(rows), dtype=np.int64)
        for k in range(1, len(self._blocks)):
            bits += rows >= self._start(k)
        for k in np.unique(bits):
            sel = np.flatnonzero(bits == k)
            out[sel] = self._blocks[k][rows[sel] - self._start(k)]
        return out


@dataclass
class ClusterPlan:
    """A batch's cluster ids and its pending index entries (see `NearDupIndex.plan`)."""

    doc_ids: np.ndarray
    clusters: np.ndarray
    sig16: np.ndarray
    keys: np.ndarray
    rows: np.ndarray
    base: int

    def relabel(self, mapping: dict[int, int]) -> None:
        """Replace document ids (and cluster ids equal to them) by others, e.g. provisional ids by real ones."""
        if not mapping:
            return
        old = np.fromiter(mapping, dtype=np.int64, count=len(mapping))
        new = np.fromiter(mapping.values(), dtype=np.int64, count=len(mapping))
        order = np.argsort(old)
        old, new = old[order], new[order]
        for arr in (self.doc_ids, self.clusters):
            pos = np.minimum(np.searchsorted(old, arr), old.size - 1)
            hit = old[pos] == arr
            arr[hit] = new[pos[hit]]


class NearDupIndex:
    """Streaming MinHash-LSH clustering over all documents seen so far (this run and earlier).

    Storage per document: the low 16 bits of each signature value (b-bit MinHash, see
    `compact_signatures`: a chance agreement adds at most 2**-16 to the estimate), doc id, cluster
    id, and per band a uint64 `key << 32 | row` in sorted runs that are merged geometrically
    (an LSM tree), so each batch is a binary search and no Python object exists per document.

    `min_bands`: a pair is verified only when it shares at least this many band buckets. A band that is not
    shared has at least one differing position, so a pair sharing k of 16 bands agrees on at most 48 + k of 64
    positions, and the threshold 0.8 needs 52: a pair that shares one band cannot be a near-duplicate. It could
    only pass the 16-bit check by chance agreements of the low bits, or look like one band because `bucket_cap`
    hid its other shared buckets. Such pairs are nearly all the work: on the 1M-row ingest benchmark, 65.5M of
    70.6M candidate pairs shared one band (318 of them passed). With 2 that step took 7.8 s instead of 19.5 s and
    joined 251,126 instead of 251,148 of 814,437 documents (37 cluster ids differ); 1 verifies every pair.

    `bucket_cap` bounds the candidates taken from one bucket of one run for one document (the
    oldest ones): a document whose signature is identical to an indexed one is not indexed again,
    so crowded buckets only come from many distinct but overlapping texts.
    """

    def __init__(self, *, params: MinHashParams = MinHashParams(), bucket_cap: int = 32, min_bands: int = 1) -> None:
        if bucket_cap < 1:
            raise ConfigError(f"bucket_cap must be >= 1; got {bucket_cap}.")
        if not 1 <= min_bands <= params.bands:
            raise ConfigError(f"min_bands must be between 1 and bands ({params.bands}); got {min_bands}.")
        self.params = params
        self.bucket_cap = bucket_cap
        self.min_bands = min_bands
        self._sig16 = _Blocks(np.uint16, params.num_perm)
        self._doc_ids = _Blocks(np.int64)
        self._clusters = _Blocks(np.int64)
        self._runs: list[list[np.ndarray]] = [[] for _ in range(params.bands)]

    def __len__(self) -> int:
        return len(self._doc_ids)

    @property
    def nbytes(self) -> int:
        """Bytes held in numpy arrays (signatures, ids, LSH runs)."""
        runs = sum(r.nbytes for band in self._runs for r in band)
        return self._sig16.nbytes + self._doc_ids.nbytes + self._clusters.nbytes + runs

    def add_existing(self, doc_ids: np.ndarray, sigs: np.ndarray, cluster_ids: np.ndarray) -> None:
        """Load documents stored by an earlier run, with the cluster ids they already have."""
        doc_ids, sigs = self._check(doc_ids, sigs)
        cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
        if cluster_ids.shape != doc_ids.shape:
            raise InputError(
                f"Expected one cluster id per document ({doc_ids.size}); got shape {cluster_ids.shape}."
            )
        base = len(self)
        indexed = np.flatnonzero((sigs != _U16_MAX).any(axis=1))
        self._insert(_band_keys(sigs[indexed], self.params), base + indexed)
        self._store(doc_ids, sigs, cluster_ids)

    def assign(self, doc_ids: np.ndarray, sigs: np.ndarray) -> np.ndarray:
        """Cluster id for each new document, in order; afterwards the documents are indexed.

        A document joins the cluster of its most similar near-duplicate (signature agreement
        >= threshold; ties go to the earliest document) among indexed documents and the earlier
        documents of this batch; without one, its cluster id is its own doc id. A text with no
        words is never a near-duplicate.
        """
        plan = self.plan(doc_ids, sigs)
        self.commit(plan)
        return plan.clusters

    def plan(self, doc_ids: np.ndarray, sigs: np.ndarray) -> ClusterPlan:
        """`assign` without indexing: the clusters, and what `commit` adds to the index.

        Why split: the ingest computes clusters before its database insert (so that each row is written once,
        cluster id included) and indexes the batch only after the insert, with the ids it really got.
        """
        doc_ids, sigs = self._check(doc_ids, sigs)
        doc_ids = doc_ids.copy()  # the plan owns its ids (`relabel` changes them in place)
        n, base, p = len(doc_ids), len(self), self.params
        nonempty = (sigs != _U16_MAX).any(axis=1)
        # Identical signatures inside the batch: later copies simply follow the first.
        rep = np.arange(n)
        if n:
            _, first, inverse = np.unique(_sig_hash(sigs), return_index=True, return_inverse=True)
            rep = first[inverse.ravel()]
            own = ~nonempty | ~(sigs[rep] == sigs).all(axis=1)
            rep[own] = np.flatnonzero(own)
        queries = np.flatnonzero(nonempty & (rep == np.arange(n)))
        keys = _band_keys(sigs[queries], p)
        sig16 = sigs

        q, cand = self._candidates(queries, keys, base)
        best_row = np.full(n, -1, dtype=np.int64)
        best_agree = np.zeros(n, dtype=np.int64)
        if q.size:
            agree: np.ndarray = np.empty(q.size, dtype=np.int64)
            for lo in range(0, q.size, _PAIR_CHUNK):
                agree[lo : lo + _PAIR_CHUNK] = self._agreement(
                    sig16, q[lo : lo + _PAIR_CHUNK], cand[lo : lo + _PAIR_CHUNK], base
                )
            ok = agree >= p.min_agreement
            q, cand, agree = q[ok], cand[ok], agree[ok]
            order = np.lexsort((cand, -agree, q))
            q, cand, agree = q[order], cand[order], agree[order]
            head: np.ndarray = np.flatnonzero(np.r_[True, q[1:] != q[:-1]]) if q.size else q
            best_row[q[head]] = cand[head]
            best_agree[q[head]] = agree[head]

        # Parent pointers: to an earlier doc of this batch, or to self with a known cluster.
        parent = rep.copy()
        clusters = doc_ids.copy()
        to_old = best_row >= 0
        to_old &= best_row < base
        clusters[to_old] = self._clusters.take(best_row[to_old])
        in_batch = best_row >= base
        parent[in_batch] = best_row[in_batch] - base
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
        clusters = clusters[parent]

        fresh = best_agree[queries] < p.num_perm
        return ClusterPlan(doc_ids=doc_ids, clusters=clusters, sig16=sig16, keys=keys[fresh],
                           rows=base + queries[fresh], base=base)

    def _agreement(self, sig16: np.ndarray, q: np.ndarray, cand: np.ndarray, base: int) -> np.ndarray:
        """Matching 16-bit signature positions of each (batch position, row) pair; rows >= base are the batch's."""
        theirs = np.empty((cand.size, self.params.num_perm), dtype=np.uint16)
        old = cand < base
        theirs[old] = self._sig16.take(cand[old])
        theirs[~old] = sig16[cand[~old] - base]
        agree: np.ndarray = np.count_nonzero(sig16[q] == theirs, axis=1)
        return agree

    def commit(self, plan: ClusterPlan) -> None:
        """Index a planned batch (after `relabel`, if some ids changed). Plans commit in the order made."""
        if plan.base != len(self):
            raise InputError(
                f"This plan was made for an index of {plan.base} documents; the index now has {len(self)}.",
                hint="commit each plan before planning the next batch",
            )
        self._insert(plan.keys, plan.rows)
        self._store(plan.doc_ids, plan.sig16, plan.clusters)

    def _check(self, doc_ids: np.ndarray, sigs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        doc_ids = np.asarray(doc_ids, dtype=np.int64).reshape(-1)
        sigs = np.asarray(sigs)
        if sigs.dtype not in (np.uint32, np.uint16) or sigs.shape != (doc_ids.size, self.params.num_perm):
            raise InputError(
                f"Expected uint32 (or compact uint16) signatures of shape ({doc_ids.size}, {self.params.num_perm}); "
                f"got {sigs.dtype} {sigs.shape}.",
                hint="Compute them with pipelines.dedup.signatures using the same MinHashParams.",
            )
        sigs = compact_signatures(sigs)
        if len(self) + doc_ids.size >= 1 << 32:
            raise InputError("The near-duplicate index holds at most 2**32 documents.")
        return doc_ids, sigs

    def _store(self, doc_ids: np.ndarray, sig16: np.ndarray, clusters: np.ndarray) -> None:
        self._sig16.append(sig16)
        self._doc_ids.append(doc_ids)
        self._clusters.append(clusters)

    def _candidates(self, queries: np.ndarray, keys: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (batch position, row) pairs sharing a band bucket; rows >= base are earlier
        documents of the batch itself."""
        cap = self.bucket_cap
        qs64 = queries.astype(np.uint64) << np.uint64(32)
        pairs: list[np.ndarray] = []  # (batch position << 32) | row
        position = np.arange(queries.size, dtype=np.uint64)
        for band in range(self.params.bands):
            # Sorted needles let numpy's binary search reuse its last bound. Sorting key << 32 | position (all
            # distinct) keeps equal keys in batch order without a stable sort.
            both = np.sort((keys[:, band].astype(np.uint64) << np.uint64(32)) | position)
            order = (both & _LOW32).astype(np.int64)
            wide = both & ~_LOW32
            sorted_keys = (both >> np.uint64(32)).astype(np.uint32)
            # Each part below comes out sorted without sorting it: its matches are taken in batch order (a query
            # has one key per band, so one match per run), and a bucket lists its rows in increasing order.
            for run in self._runs[band]:
                lo = np.searchsorted(run, wide, side="left")
                hit = np.flatnonzero((run[np.minimum(lo, run.size - 1)] >> np.uint64(32)) == sorted_keys)
                hit = hit[np.argsort(order[hit])]
                lo = lo[hit]
                count = np.searchsorted(run, wide[hit] | _LOW32, side="right") - lo
                idx, owner = _ranges(lo, np.minimum(count, cap))
                pairs.append(qs64[order[hit[owner]]] | (run[idx] & _LOW32))
            # Earlier documents of this batch in the same bucket, the latest `cap` of them, in batch order: for the
            # query at sorted place k (`at`), those at sorted places k - n .. k - 1.
            group_start = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
            rank = np.arange(order.size) - np.repeat(group_start, np.diff(np.r_[group_start, order.size]))
            at = np.empty_like(order)
            at[order] = np.arange(order.size)
            n_earlier = np.minimum(rank, cap)[at]
            step, query = _ranges(np.zeros(order.size, dtype=np.int64), n_earlier)
            earlier = order[at[query] - n_earlier[query] + step]
            pairs.append(qs64[query] | (np.uint64(base) + queries[earlier].astype(np.uint64)))
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        # The sorted parts merged by timsort ("stable"), which finds the sorted runs: on the 1M-row benchmark's pairs
        # a third quicker than one sort of the whole, and sorting each part first took longer than this merge.
        pair = np.concatenate(pairs)
        pair.sort(kind="stable")
        if self.min_bands > 1:
            # A pair listed k times shares k bands: its (min_bands - 1)th repeat marks it. Cheaper than np.unique's
            # counts, and what survives is a small fraction of the pairs.
            k = self.min_bands - 1
            pair = pair[k:][pair[k:] == pair[:-k]]
        pair = pair[np.r_[True, pair[1:] != pair[:-1]]] if pair.size else pair
        return (pair >> np.uint64(32)).astype(np.int64), (pair & _LOW32).astype(np.int64)

    def _insert(self, keys: np.ndarray, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        for band in range(self.params.bands):
            run = np.sort((keys[:, band].astype(np.uint64) << np.uint64(32)) | rows.astype(np.uint64))
            add_sorted_run(self._runs[band], run)
