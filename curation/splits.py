"""Leak-free, stratified, stable train/dev/test assignment: pure functions on DataFrames.

Why groups: a document's exact duplicates, near-duplicates and everything sharing a group key (a conversation, a
customer, a company) must land in one split, or the test set measures memory instead of generalisation. Groups are
connected components over those links, named by the content hash of their oldest member (smallest document id), so
a group keeps its name when new documents join it.

Why a hash and not a shuffle: a group's split is a function of its name and the seed alone, so a document keeps its
split when new documents arrive and test sets don't churn night to night. Pure hashing is only stratified on
average, so a balancing step then moves the few groups whose hash lies nearest another split's range until each
label's share per split matches the ratios; groups pinned to an earlier assignment (`previous`) are never moved.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curation.errors import ConfigError

__all__ = [
    "SPLITS",
    "SplitAssignment",
    "parse_split",
    "normalize_texts",
    "group_documents",
    "hash_units",
    "assign_splits",
    "time_splits",
    "DocumentKeys",
    "document_keys",
    "cross_split_pairs",
    "check_leaks",
    "label_balance",
    "balance_of_counts",
    "split_label_counts",
]

SPLITS: tuple[str, str, str] = ("train", "dev", "test")
_UNLABELED = "\x00unlabeled"
_WS = r"[\s\p{Z}]"
_MASK64 = (1 << 64) - 1


@dataclass
class SplitAssignment:
    """The split of each row (aligned with the input frame) and what it took to get there."""

    split: np.ndarray
    groups: int
    pinned_documents: int = 0
    moved_documents: int = 0
    balanced_documents: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def parse_split(spec: str) -> tuple[float, float, float]:
    """'80/10/10' (or '0.8/0.1/0.1', or 'train/test' as '90/10') as train/dev/test fractions."""
    parts = [p.strip() for p in re.split(r"[/:,]", str(spec).strip())]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or any(v < 0 or not np.isfinite(v) for v in values):
        raise ConfigError(f"--split {spec!r} is not train/dev/test percentages.",
                          hint="write e.g. 80/10/10 (or 90/10 for train/test only)")
    total = sum(values)
    if not (abs(total - 100) < 1e-6 or abs(total - 1) < 1e-9):
        raise ConfigError(f"--split {spec!r} adds up to {total:g}, not 100.", hint="write e.g. 80/10/10")
    if values[0] == 0:
        raise ConfigError(f"--split {spec!r} leaves no training data.", hint="give train a positive share")
    if len(values) == 2:
        values = [values[0], 0.0, values[1]]
    return (values[0] / total, values[1] / total, values[2] / total)


def normalize_texts(texts: Any) -> np.ndarray:
    """Lowercased, whitespace-collapsed, stripped texts (the leak check's own notion of "same text").

    Vectorized in Arrow; only the texts with runs of or unusual whitespace go through the regex.
    """
    low = pc.utf8_lower(_as_arrow(texts))
    odd = pc.fill_null(pc.match_substring_regex(low, rf"{_WS}{_WS}|[^\S ]|[^\P{{Z}} ]|^{_WS}|{_WS}$"), False)
    out = low.to_numpy(zero_copy_only=False).astype(object, copy=False)
    idx = np.flatnonzero(odd.to_numpy(zero_copy_only=False))
    if len(idx):
        fixed = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.filter(low, odd), rf"{_WS}+", " "))
        out = out.copy()
        out[idx] = fixed.to_numpy(zero_copy_only=False)
    return out


def _first_per_group(codes: np.ndarray, order_key: np.ndarray) -> np.ndarray:
    """Position of the row with the smallest `order_key` per group code (indexed by code; -1 for absent codes)."""
    if not len(codes):
        return np.empty(0, dtype=np.int64)
    order = np.argsort(order_key, kind="stable")
    first = np.full(int(codes.max()) + 1, len(codes), dtype=np.int64)
    np.minimum.at(first, codes[order], np.arange(len(codes), dtype=np.int64))
    return np.where(first < len(codes), order[np.minimum(first, len(codes) - 1)], -1)


def _as_arrow(values: Any) -> pa.Array:
    """Strings as one Arrow array (zero-copy for Arrow-backed pandas columns)."""
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(
        values.to_numpy(dtype=object, na_value=None) if isinstance(values, pd.Series) and values.dtype == object
        else values, type=None if isinstance(values, pd.Series) and values.dtype != object else pa.large_string(),
        from_pandas=True,
    )
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    return arr


def _hex_prefix64(values: Any) -> np.ndarray | None:
    """The first 64 bits of equal-length hex strings (content hashes), vectorized; None if they are not that."""
    if isinstance(values, pd.Series) and values.dtype == object or isinstance(values, np.ndarray):
        return None  # Python objects: no contiguous buffer to read; let pandas factorize them
    try:
        arr = _as_arrow(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    n = len(arr)
    if n == 0 or arr.null_count:
        return None
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + n + 1]
    width = int(offsets[1] - offsets[0])
    if width < 16 or not (np.diff(offsets) == width).all():
        return None
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    nib = _HEX[data.reshape(n, width)[:, :16]]
    if (nib == 255).any():
        return None
    out: np.ndarray = np.zeros(n, dtype=np.uint64)
    for i in range(16):
        out = (out << np.uint64(4)) | nib[:, i].astype(np.uint64)
    return out


def _codes(values: Any) -> np.ndarray:
    """Integer codes per value (-1 for missing): equal values, equal codes."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(dtype=np.int64)
    arr = np.asarray(values) if not isinstance(values, pd.Series) else values
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "iu":
        return pd.factorize(arr)[0].astype(np.int64)
    prefix = _hex_prefix64(values)
    if prefix is not None:
        return pd.factorize(prefix)[0].astype(np.int64)
    return pd.factorize(pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values)[0].astype(
        np.int64)


@dataclass
class DocumentKeys:
    """What links documents, as integer codes per row (-1: none): built once, used to group and to check leaks.

    `key_pos`/`key_code` are the (row, group key) pairs, several per row where a document occurred under several
    group keys.
    """

    ids: np.ndarray
    content: np.ndarray
    cluster: np.ndarray
    key_pos: np.ndarray
    key_code: np.ndarray


def document_keys(docs: pd.DataFrame, group_keys: pd.DataFrame | None = None) -> DocumentKeys:
    """Codes for `docs` (id, content_hash, cluster_id, group_key) plus the keys of further occurrences
    (`group_keys`: document_id, group_key)."""
    ids = docs["id"].to_numpy(dtype=np.int64)
    n = len(ids)
    cluster = docs["cluster_id"]
    cluster_codes = _codes(cluster.to_numpy(dtype=np.int64)) if cluster.notna().all() and n else _codes(
        cluster.astype("Int64").astype(object).where(cluster.notna(), None))
    key_pos: np.ndarray = np.arange(n, dtype=np.int64)
    own = docs["group_key"]
    if group_keys is not None and len(group_keys):
        at = pd.Index(ids).get_indexer(group_keys["document_id"].to_numpy(dtype=np.int64))
        ok = at >= 0
        key_pos = np.concatenate([key_pos, at[ok]])
        both = pa.concat_arrays([_as_arrow(own), _as_arrow(group_keys["group_key"]).filter(pa.array(ok))])
        key_code = _codes(pd.Series(both, dtype=pd.StringDtype("pyarrow", na_value=np.nan)))
    else:
        key_code = _codes(own)
    keep = key_code >= 0
    key_pos, key_code = key_pos[keep], key_code[keep]
    if len(key_code):
        pair = np.unique(key_pos * (int(key_code.max()) + 1) + key_code)
        key_pos, key_code = pair // (int(key_code.max()) + 1), pair % (int(key_code.max()) + 1)
    return DocumentKeys(ids=ids, content=_codes(docs["content_hash"]), cluster=cluster_codes, key_pos=key_pos,
                        key_code=key_code)


def group_documents(
    docs: pd.DataFrame, group_keys: pd.DataFrame | None = None, *, keys: DocumentKeys | None = None
) -> pd.Series:
    """The group of each document: connected components over content hash, near-dup cluster and group keys.

    `docs` needs id, content_hash, cluster_id, group_key; `group_keys` (document_id, group_key) adds the keys of
    further occurrences of a document. A group is named by the first 16 characters of its oldest member's content
    hash, which stays its name as newer documents join. Returned as a categorical Series aligned with `docs`.
    """
    n = len(docs)
    if n == 0:
        return pd.Series(pd.Categorical([]), index=docs.index, name="group")
    k = keys or document_keys(docs, group_keys)
    pos = np.arange(n, dtype=np.int64)
    rows, cols, offset = [], [], n
    for at, codes in ((pos, k.content), (pos, k.cluster), (k.key_pos, k.key_code)):
        keep = codes >= 0
        rows.append(at[keep])
        cols.append(codes[keep] + offset)
        offset += int(codes.max()) + 1 if len(codes) else 0
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(offset, offset)).tocsr()
    _, comp = connected_components(graph, directed=False)
    comp = comp[:n]
    present = np.zeros(int(comp.max()) + 1, dtype=bool)
    present[comp] = True
    comp = (np.cumsum(present) - 1)[comp]
    rep = _first_per_group(comp, k.ids)
    hashes = _as_arrow(docs["content_hash"]).take(pa.array(rep))
    names = pc.utf8_slice_codeunits(hashes, 0, 16).to_numpy(zero_copy_only=False)
    return pd.Series(pd.Categorical.from_codes(comp, categories=pd.Index(names, dtype=object)), index=docs.index,
                     name="group")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def _key64(keys: Sequence[Any] | np.ndarray) -> np.ndarray:
    """64 bits per key: the key itself when it is 16 hex digits (a content-hash prefix), else its BLAKE2b."""
    strs = [str(k) for k in keys]
    out = np.zeros(len(strs), dtype=np.uint64)
    if not strs:
        return out
    fixed = np.array([len(s) == 16 and s.isascii() for s in strs], dtype=bool)
    if fixed.any():
        raw = np.frombuffer("".join(s for s, f in zip(strs, fixed, strict=True) if f).encode("ascii"), dtype=np.uint8)
        nib = _HEX[raw].reshape(-1, 16)
        good = (nib != 255).all(axis=1)
        vals: np.ndarray = np.zeros(len(nib), dtype=np.uint64)
        for i in range(16):
            vals = (vals << np.uint64(4)) | nib[:, i].astype(np.uint64)
        where = np.flatnonzero(fixed)
        out[where[good]] = vals[good]
        fixed[where[~good]] = False
    for i in np.flatnonzero(~fixed):
        digest = hashlib.blake2b(strs[i].encode("utf-8", "surrogatepass"), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big")
    return out


def hash_units(keys: Sequence[Any] | np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per key for this seed: splitmix64(key bits XOR splitmix64(seed)).

    Plain integer arithmetic, so the numbers (and thus every split) are the same on every platform and version.
    """
    s = _splitmix64(np.array([int(seed) & _MASK64], dtype=np.uint64))
    x = _splitmix64(_key64(keys) ^ s)
    return (x >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def _group_codes(groups: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, name per code) of a group column; categorical columns are taken as they are."""
    if isinstance(groups.dtype, pd.CategoricalDtype):
        cat = groups.cat.remove_unused_categories()
        return cat.cat.codes.to_numpy(dtype=np.int64), np.asarray(cat.cat.categories, dtype=object)
    codes, names = pd.factorize(groups.to_numpy(dtype=object))
    return codes.astype(np.int64), np.asarray(names, dtype=object)


def _ratios(ratios: Sequence[float]) -> np.ndarray:
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (3,) or (r < 0).any() or r.sum() <= 0:
        raise ConfigError(f"Split ratios {list(ratios)} are not three non-negative numbers.")
    return r / r.sum()


def _split_codes(values: Any) -> np.ndarray:
    """Split names (None/NaN for none) as codes 0..2, -1 for none."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype) \
            and list(values.cat.categories) == list(SPLITS):
        return values.cat.codes.to_numpy(dtype=np.int64)
    s = pd.Series(values, dtype=object)
    codes = s.map({name: i for i, name in enumerate(SPLITS)})
    bad = s.notna() & codes.isna()
    if bad.any():
        raise ValueError(f"unknown split names: {sorted(set(s[bad]))[:5]}")
    return codes.fillna(-1).to_numpy(dtype=np.int64)


def assign_splits(
    frame: pd.DataFrame,
    *,
    ratios: Sequence[float],
    seed: int,
    previous: Sequence[Any] | np.ndarray | None = None,
    balance: bool = True,
) -> SplitAssignment:
    """Split per row of `frame` (columns id, group, label): by group hash, pinned, then balanced per label.

    `previous` (aligned with `frame`, a split name or None per row) pins every group holding previously assigned
    documents to the split most of them had (ties: the oldest one's); only unpinned groups are balanced, so adding
    documents never moves an old one, unless new links merge groups that sat in different splits: then the
    minority side moves (counted in `moved_documents`), as keeping both would leak.
    """
    r = _ratios(ratios)
    n = len(frame)
    if n == 0:
        return SplitAssignment(split=np.array([], dtype=object), groups=0)
    gcodes, gnames = _group_codes(frame["group"])
    ng = len(gnames)
    u = hash_units(gnames, seed)
    bounds = np.cumsum(r)[:-1]
    gsplit = np.searchsorted(bounds, u, side="right").astype(np.int64)
    movable = np.ones(ng, dtype=bool)
    pinned = moved = 0
    if previous is not None:
        prev = _split_codes(previous)
        if len(prev) != n:
            raise ValueError(f"previous has {len(prev)} entries for {n} rows")
        has = np.flatnonzero(prev >= 0)
        if len(has):
            ids = frame["id"].to_numpy(dtype=np.int64)
            votes = np.zeros((ng, 3), dtype=np.float64)
            np.add.at(votes, (gcodes[has], prev[has]), 1.0)
            first = _first_per_group(gcodes[has], ids[has])
            first = has[first[first >= 0]]
            votes[gcodes[first], prev[first]] += 0.5
            held = np.unique(gcodes[has])
            gsplit[held] = votes[held].argmax(axis=1)
            movable[held] = False
            pinned = len(has)
            moved = int((prev[has] != gsplit[gcodes[has]]).sum())
    balanced = 0
    stats: dict[str, Any] = {}
    if balance:
        balanced, stats = _balance(frame["label"], gcodes, gsplit, movable, u, r, bounds)
    split = np.array(SPLITS, dtype=object)[gsplit[gcodes]]
    return SplitAssignment(split=split, groups=ng, pinned_documents=pinned, moved_documents=moved,
                           balanced_documents=balanced, stats=stats)


def _balance(
    labels: pd.Series,
    gcodes: np.ndarray,
    gsplit: np.ndarray,
    movable: np.ndarray,
    u: np.ndarray,
    r: np.ndarray,
    bounds: np.ndarray,
) -> tuple[int, dict[str, Any]]:
    """Move whole single-label groups between splits until each label's counts match the ratios (in place).

    For a move into split t, the candidates are taken in order of how close their hash lies to t's hash range, so
    balancing acts like nudging each label's split boundaries: deterministic, and only as many groups as needed.
    """
    lab = labels.astype(object).where(labels.notna(), _UNLABELED).to_numpy(dtype=object)
    lcodes, lnames = pd.factorize(lab)
    nl = len(lnames)
    ng = len(gsplit)
    doc_split = gsplit[gcodes]
    counts = np.bincount(doc_split * nl + lcodes, minlength=3 * nl).reshape(3, nl).astype(np.float64)
    target = r[:, None] * counts.sum(axis=0)[None, :]
    gsize = np.bincount(gcodes, minlength=ng)
    glabel = np.full(ng, nl, dtype=np.int64)
    np.minimum.at(glabel, gcodes, lcodes)
    gmax = np.full(ng, -1, dtype=np.int64)
    np.maximum.at(gmax, gcodes, lcodes)
    cand = np.flatnonzero(movable & (glabel == gmax))
    by_label = np.argsort(glabel[cand], kind="stable")
    cand = cand[by_label]
    starts = np.searchsorted(glabel[cand], np.arange(nl + 1))
    lows = np.concatenate([[0.0], bounds])
    highs = np.concatenate([bounds, [1.0]])
    moved_docs = 0
    before = float(np.abs(counts - target).max()) if counts.size else 0.0
    for lc in range(nl):
        members = cand[starts[lc]:starts[lc + 1]]
        for _ in range(16):
            dev = counts[:, lc] - target[:, lc]
            o, t = int(np.argmax(dev)), int(np.argmin(dev))
            k = int(np.floor(min(dev[o], -dev[t]) + 0.5))
            if k < 1 or not len(members):
                break
            pool = members[gsplit[members] == o]
            pool = pool[gsize[pool] <= k]
            if not len(pool):
                break
            dist = np.maximum(np.maximum(lows[t] - u[pool], u[pool] - highs[t]), 0.0)
            pool = pool[np.lexsort((u[pool], dist))]
            take = pool[np.cumsum(gsize[pool]) <= k]
            if not len(take):
                break
            m = int(gsize[take].sum())
            gsplit[take] = t
            counts[o, lc] -= m
            counts[t, lc] += m
            moved_docs += m
            members = members[~np.isin(members, take)]
    after = float(np.abs(counts - target).max()) if counts.size else 0.0
    return moved_docs, {"max_count_deviation_before": round(before, 2), "max_count_deviation_after": round(after, 2)}


def time_splits(frame: pd.DataFrame, *, ratios: Sequence[float]) -> SplitAssignment:
    """Oldest groups train, newest test: groups (columns group, time) ordered by their newest document's time.

    A group goes to the split in which its middle document's position (by cumulative document count) falls.
    """
    r = _ratios(ratios)
    n = len(frame)
    if n == 0:
        return SplitAssignment(split=np.array([], dtype=object), groups=0)
    gcodes, gnames = _group_codes(frame["group"])
    ng = len(gnames)
    times = pd.Series(frame["time"].to_numpy()).groupby(gcodes).max().to_numpy()
    gsize = np.bincount(gcodes, minlength=ng)
    order = np.lexsort((np.asarray(gnames, dtype=str), times))
    middle = (np.cumsum(gsize[order]) - gsize[order] / 2) / n
    gsplit = np.empty(ng, dtype=np.int64)
    gsplit[order] = np.searchsorted(np.cumsum(r)[:-1], middle, side="right")
    split = np.array(SPLITS, dtype=object)[gsplit[gcodes]]
    return SplitAssignment(split=split, groups=ng)


def cross_split_pairs(codes: np.ndarray, split: np.ndarray) -> tuple[int, np.ndarray]:
    """(pairs of rows sharing a key code across different splits, the leaking codes); code -1 links nothing.

    `split` holds split codes 0..2 aligned with `codes`.
    """
    keep = codes >= 0
    codes, split = codes[keep].astype(np.int64), split[keep].astype(np.int64)
    if not len(codes):
        return 0, np.empty(0, dtype=np.int64)
    cell, cnt = np.unique(codes * 3 + split, return_counts=True)
    key = cell // 3
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    ukey = key[first]
    nsplits = np.diff(np.append(np.flatnonzero(first), len(key)))
    leaky = ukey[nsplits > 1]
    if not len(leaky):
        return 0, leaky
    idx = np.searchsorted(ukey, key)
    total = np.bincount(idx, weights=cnt)
    sq = np.bincount(idx, weights=cnt.astype(np.float64) ** 2)
    bad = nsplits > 1
    return int(round(((total[bad] ** 2 - sq[bad]) / 2).sum())), leaky


def check_leaks(
    frame: pd.DataFrame,
    *,
    group_keys: pd.DataFrame | None = None,
    texts: np.ndarray | None = None,
    keys: DocumentKeys | None = None,
    examples: int = 3,
) -> dict[str, Any]:
    """Count document pairs that would straddle splits: same content hash, near-dup cluster, group key or text.

    `frame` needs id, split, content_hash, cluster_id, group_key and text (or pass `texts`, already normalized, and
    `keys` from `document_keys`); `group_keys` (document_id, group_key) adds keys of further occurrences. 0
    everywhere is the only acceptable answer; `examples` lists a few offending keys' documents with their splits.
    """
    split = _split_codes(frame["split"])
    k = keys or document_keys(frame, group_keys)
    norm = texts if texts is not None else normalize_texts(frame["text"])
    pos = np.arange(len(frame))
    checks = {
        "exact": (pos, k.content),
        "near_duplicate": (pos, k.cluster),
        "group_key": (k.key_pos, k.key_code),
        "text": (pos, pd.factorize(norm)[0].astype(np.int64)),
    }
    out: dict[str, Any] = {}
    found: list[dict[str, Any]] = []
    for name, (at, codes) in checks.items():
        pairs, bad = cross_split_pairs(codes, split[at])
        out[name] = pairs
        for b in bad[:examples]:
            hit = at[codes == b]
            found.append({"kind": name, "documents": [{"id": int(k.ids[i]), "split": SPLITS[split[i]]}
                                                      for i in hit[:6]]})
    out["total"] = int(sum(out[name] for name in checks))
    out["examples"] = found
    return out


def split_label_counts(split: Any, labels: Any) -> pd.DataFrame:
    """Documents per label (rows, sorted; missing labels dropped) and split (columns train, dev, test)."""
    scodes = _split_codes(split if isinstance(split, pd.Series) else np.asarray(split, dtype=object))
    lab = labels if isinstance(labels, pd.Series) else pd.Series(np.asarray(labels, dtype=object))
    lcodes, lnames = pd.factorize(lab)
    keep = (lcodes >= 0) & (scodes >= 0)
    nl = len(lnames)
    mat = np.bincount(lcodes[keep] * 3 + scodes[keep], minlength=3 * nl).reshape(nl, 3)
    return pd.DataFrame(mat, index=pd.Index([str(x) for x in lnames], name="label"), columns=list(SPLITS)).sort_index()


def label_balance(split: Any, labels: Any, *, min_rows: int = 50) -> dict[str, Any]:
    """Each label's share overall and per split, and the largest gap in percentage points.

    Only labels with at least `min_rows` documents count towards `max_deviation_points`: tiny labels cannot be
    spread evenly over small splits.
    """
    return balance_of_counts(split_label_counts(split, labels), min_rows=min_rows)


def balance_of_counts(counts: pd.DataFrame, *, min_rows: int = 50) -> dict[str, Any]:
    """`label_balance` from a `split_label_counts` table."""
    totals = counts.sum(axis=1)
    if totals.sum() == 0:
        return {"overall": {}, "by_split": {}, "max_deviation_points": 0.0, "labels_checked": []}
    overall = totals / totals.sum()
    big = totals >= min_rows
    by_split: dict[str, dict[str, float]] = {}
    worst = 0.0
    for name in SPLITS:
        n = counts[name].sum()
        if n == 0:
            continue
        share = counts[name] / n
        by_split[name] = {str(k): round(float(v), 6) for k, v in share.items()}
        if big.any():
            worst = max(worst, float((share - overall)[big].abs().max()) * 100)
    return {
        "overall": {str(k): round(float(v), 6) for k, v in overall.items()},
        "by_split": by_split,
        "max_deviation_points": round(worst, 3),
        "labels_checked": sorted(str(x) for x in totals[big].index),
    }
