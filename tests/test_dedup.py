from __future__ import annotations

import csv
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from curation.errors import ConfigError, InputError
from pipelines.dedup import MinHashParams, NearDupIndex, compact_signatures, shingle_hashes, signatures

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
M64 = (1 << 64) - 1

BASE = (
    "my card payment was declined twice at the airport shop yesterday and i still do not "
    "know why it happened"
)
UNRELATED = [
    "how do i change the pin on my new debit card before travelling abroad next week",
    "flight delayed three hours and nobody at the gate told us anything useful at all",
    "the company reported higher operating profit for the third quarter of the year",
]


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


def _reference_shingles(text: str, k: int) -> list[int]:
    """The documented hash, written plainly: one Python loop per byte."""
    words = [w for w in re.split(rb"[ \t\n\r\x0b\x0c]+", text.encode("utf-8")) if w]
    hashes = []
    for w in words:
        poly = sum((c + 1) * pow(0x100000001B3, i, 1 << 64) for i, c in enumerate(w))
        hashes.append(_fmix64((poly + len(w)) & M64))
    groups = [hashes[i : i + k] for i in range(len(hashes) - k + 1)] if len(hashes) >= k else [hashes]
    out = []
    for g in groups:
        if g:
            acc = sum(h * ((0x9E3779B97F4A7C15 * (t + 1)) & M64 | 1) for t, h in enumerate(g)) & M64
            out.append(_fmix64(acc) >> 32)
    return out


def _words(text: str, k: int) -> set[tuple[str, ...]]:
    w = text.split()
    return {tuple(w[i : i + k]) for i in range(len(w) - k + 1)} if len(w) >= k else {tuple(w)}


def _replace(text: str, index: int, word: str) -> str:
    w = text.split()
    w[index] = word
    return " ".join(w)


def _real_texts(n: int) -> list[str]:
    path = DATA / "banking77" / "train.csv"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    with path.open(encoding="utf-8") as fh:
        rows = [" ".join(re.findall(r"\w+", r["text"].lower())) for r in csv.DictReader(fh)]
    return [t for t in dict.fromkeys(rows) if len(t.split()) >= 6][:n]


def test_shingle_hashes_follow_the_documented_hash():
    texts = [BASE, "", "   ", "one", "two words", "  spaced\tout \n words  ", "crème brûlée 😀 ok", *UNRELATED]
    for k in (1, 2, 3):
        hashes, offsets = shingle_hashes(texts, shingle_size=k)
        assert hashes.dtype == np.uint32 and offsets.shape == (len(texts) + 1,)
        for i, t in enumerate(texts):
            assert hashes[offsets[i] : offsets[i + 1]].tolist() == _reference_shingles(t, k), (k, t)


def test_short_texts_get_one_shingle_and_empty_texts_none():
    _, offsets = shingle_hashes(["", "a", "a b", "a b c", "  "], shingle_size=3)
    assert np.diff(offsets).tolist() == [0, 1, 1, 1, 0]


def test_signatures_are_datasketch_affine32_minhash():
    if "scheme" not in inspect.signature(MinHash).parameters:
        pytest.skip("datasketch < 2.0 has no affine32 scheme")
    params = MinHashParams(num_perm=32, bands=8, seed=7)
    texts = [BASE, "one", *UNRELATED]
    hashes, offsets = shingle_hashes(texts, shingle_size=params.shingle_size)
    sigs = signatures(texts, params=params)
    for i in range(len(texts)):
        m = MinHash(num_perm=32, seed=7, hashfunc=int, scheme="affine32")
        m.update_batch(hashes[offsets[i] : offsets[i + 1]].tolist())
        assert np.array_equal(m.hashvalues, sigs[i])
    assert (signatures([""], params=params) == np.uint32(0xFFFFFFFF)).all()


@pytest.mark.integration
def test_estimated_jaccard_tracks_exact_jaccard_like_datasketch():
    texts = _real_texts(300)
    rng = np.random.default_rng(0)
    pairs = []
    for i, t in enumerate(texts):
        w = t.split()
        edits = int(rng.integers(0, 4))
        for _ in range(edits):
            w[int(rng.integers(len(w)))] = texts[(i + 1) % len(texts)].split()[0]
        pairs.append((t, " ".join(w)))
    pairs += list(zip(texts[::2], texts[1::2], strict=False))
    ours = signatures([x for p in pairs for x in p])
    err_ours, err_ds = [], []
    for j, (a, b) in enumerate(pairs):
        sa, sb = _words(a, 2), _words(b, 2)
        exact = len(sa & sb) / len(sa | sb)
        m1, m2 = MinHash(num_perm=64, seed=1), MinHash(num_perm=64, seed=1)
        m1.update_batch([" ".join(s).encode() for s in sa])
        m2.update_batch([" ".join(s).encode() for s in sb])
        err_ours.append(abs(float(np.mean(ours[2 * j] == ours[2 * j + 1])) - exact))
        err_ds.append(abs(m1.jaccard(m2) - exact))
    # 64 permutations: standard error <= 0.0625 per pair, so mean absolute error ~0.03-0.04.
    assert np.mean(err_ours) < 0.05
    assert np.mean(err_ours) < np.mean(err_ds) + 0.015
    assert max(err_ours) < 0.3


def test_one_changed_word_clusters_and_unrelated_texts_do_not():
    near = _replace(BASE, -1, "today")  # 20 words, last one changed: Jaccard 18/20
    dropped = " ".join(BASE.split()[:9] + BASE.split()[10:])  # Jaccard 17/20
    texts = [BASE, *UNRELATED, near, dropped]
    clusters = NearDupIndex().assign(np.arange(10, 10 + len(texts)), signatures(texts))
    assert clusters.tolist() == [10, 11, 12, 13, 10, 10]


def test_middle_word_change_clusters_with_unigram_shingles():
    params = MinHashParams(shingle_size=1)
    texts = [BASE, _replace(BASE, 8, "checkout"), *UNRELATED]
    clusters = NearDupIndex(params=params).assign(np.arange(len(texts)), signatures(texts, params=params))
    assert clusters.tolist() == [0, 0, 2, 3, 4]


def test_cluster_is_found_across_assign_calls_and_through_add_existing():
    first = [BASE, *UNRELATED]
    sigs1 = signatures(first)
    index = NearDupIndex()
    c1 = index.assign(np.array([100, 101, 102, 103]), sigs1)
    assert c1.tolist() == [100, 101, 102, 103]
    second = [_replace(UNRELATED[1], -1, "whatsoever"), _replace(BASE, -1, "today"), "totally new text here"]
    c2 = index.assign(np.array([200, 201, 202]), signatures(second))
    assert c2.tolist() == [102, 100, 202]
    assert len(index) == 7

    # A later run loads what the store holds, streamed in two batches, and keeps going.
    later = NearDupIndex()
    later.add_existing(np.array([100, 101]), sigs1[:2], np.array([100, 101]))
    rest = np.vstack([sigs1[2:], signatures(second[:1])])
    later.add_existing(np.array([102, 103, 200]), rest, np.array([102, 103, 102]))
    c3 = later.assign(np.array([300, 301]), signatures([_replace(BASE, 0, "our"), second[0]]))
    assert c3.tolist() == [100, 102]


def test_near_duplicates_chain_into_one_cluster_within_a_batch():
    words = (BASE + " " + UNRELATED[0]).split()  # 36 words
    chain = [" ".join(words[: len(words) - k]) for k in range(0, 13, 2)]  # drop 2 words per step
    sigs = signatures(chain)
    assert float(np.mean(sigs[0] == sigs[-1])) < 0.8  # the ends are not near-duplicates ...
    clusters = NearDupIndex().assign(np.arange(len(chain)), sigs)
    assert clusters.tolist() == [0] * len(chain)  # ... but each step is, so one cluster


def test_empty_texts_never_cluster_and_one_word_texts_cluster_only_when_equal():
    texts = ["", "", "hello", "hello", "goodbye", "   "]
    clusters = NearDupIndex().assign(np.arange(6), signatures(texts))
    assert clusters.tolist() == [0, 1, 2, 2, 4, 5]


def test_clusters_are_deterministic_and_batching_does_not_matter():
    texts = _synthetic(3000, seed=3)
    sigs = signatures(texts)
    ids = np.arange(len(texts)) * 3 + 1
    whole = NearDupIndex().assign(ids, sigs)
    again = NearDupIndex().assign(ids, sigs)
    index = NearDupIndex()
    pieces = np.concatenate([index.assign(ids[lo : lo + 97], sigs[lo : lo + 97]) for lo in range(0, len(ids), 97)])
    assert np.array_equal(whole, again)
    assert np.array_equal(whole, pieces)
    assert len(np.unique(whole)) < 0.6 * len(texts)  # the copies did cluster
    assert len(index._runs[0]) <= 12  # runs were merged, not kept one per batch


def test_signatures_are_identical_in_another_process():
    texts = [BASE, "crème brûlée 😀", *UNRELATED]
    code = (
        "import json,sys; from pipelines.dedup import signatures; "
        "print(json.dumps(signatures(json.loads(sys.stdin.read())).tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[1], env=env,
    )
    assert json.loads(out.stdout) == signatures(texts).tolist()


def test_compact_signatures_cluster_like_full_ones() -> None:
    """The index takes full (uint32) or compact (uint16, what the store keeps) signatures, in any mix: the same
    clusters."""
    texts = _synthetic(3000, seed=11)
    sigs = signatures(texts)
    ids = np.arange(len(texts))
    full = NearDupIndex().assign(ids, sigs)
    compact = compact_signatures(sigs)
    assert compact.dtype == np.uint16 and np.array_equal(compact, sigs & 0xFFFF)
    assert np.array_equal(compact_signatures(compact), compact)
    assert np.array_equal(NearDupIndex().assign(ids, compact), full)
    mixed = NearDupIndex()
    mixed.add_existing(ids[:1000], sigs[:1000], full[:1000])
    assert np.array_equal(mixed.assign(ids[1000:], compact[1000:]), full[1000:])
    assert (compact_signatures(signatures([""])) == 0xFFFF).all()
    assert (full != ids).sum() > 100  # there were near-duplicates to find


def test_index_memory_stays_small_per_document():
    texts = _synthetic(20000, seed=5)
    index = NearDupIndex()
    for lo in range(0, len(texts), 5000):
        index.assign(np.arange(lo, lo + 5000), signatures(texts[lo : lo + 5000]))
    # 128 B of 16-bit signature values + 16 B ids + at most 16 bands x 8 B keys per document.
    assert index.nbytes <= len(texts) * (128 + 16 + 128)


def test_bad_input_is_rejected_with_actionable_errors():
    with pytest.raises(ConfigError):
        MinHashParams(num_perm=64, bands=10)
    with pytest.raises(ConfigError):
        MinHashParams(threshold=0.0)
    index = NearDupIndex()
    with pytest.raises(InputError, match=r"uint32 \(or compact uint16\) signatures of shape"):
        index.assign(np.arange(2), np.zeros((2, 32), dtype=np.uint32))
    with pytest.raises(InputError, match="one cluster id per document"):
        index.add_existing(np.arange(2), signatures(["a b", "c d"]), np.arange(3))
    assert index.assign(np.zeros(0, dtype=np.int64), signatures([])).shape == (0,)


def _synthetic(n: int, *, seed: int) -> list[str]:
    """Copies of n/10 random 15-word texts, a third of them with their last word changed."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2000, (n // 10, 15))[rng.integers(0, n // 10, n)]
    changed = rng.random(n) < 0.33
    words[changed, -1] = rng.integers(0, 2000, int(changed.sum()))
    return [" ".join(f"w{i}" for i in row) for row in words.tolist()]


def test_agreement_is_exact_where_it_matters() -> None:
    """`_agreement` counts matching positions against stored rows and rows of the batch itself: at or above the
    threshold the count is the full one, below it stays below."""
    rng = np.random.default_rng(3)
    params = MinHashParams(num_perm=64, bands=16, threshold=0.8)
    index = NearDupIndex(params=params)
    stored = rng.integers(0, 2**32, size=(3000, 64), dtype=np.uint32)
    index.add_existing(np.arange(3000), stored, np.arange(3000))
    source = rng.integers(0, 3000, size=500)
    batch = stored[source].copy()
    for row, changes in zip(batch, rng.integers(0, 40, size=500), strict=True):  # 0..39 positions changed
        row[rng.choice(64, size=changes, replace=False)] = rng.integers(0, 2**32, size=changes, dtype=np.uint32)
    sig16 = (batch & np.uint32(0xFFFF)).astype(np.uint16)
    q = np.repeat(np.arange(500), 40)
    cand = rng.integers(0, 3000 + 500, size=q.size)  # stored rows and rows of the batch itself
    cand[::40] = source  # each batch row against the stored row it was made from
    got = index._agreement(sig16, q, cand, 3000)
    theirs = np.where(cand[:, None] < 3000, (stored[np.minimum(cand, 2999)] & 0xFFFF).astype(np.uint16),
                      sig16[np.maximum(cand - 3000, 0)])
    full = np.count_nonzero(sig16[q] == theirs, axis=1)
    high = full >= params.min_agreement
    assert high.sum() > 0 and (~high).sum() > 0
    assert np.array_equal(got[high], full[high])
    assert np.all(got[~high] <= full[~high])


def test_pairs_sharing_one_band_are_not_compared_by_default() -> None:
    """A pair that shares a single band cannot reach the threshold (each other band has a differing position);
    `min_bands=2` (the default through the config) skips it, 1 compares it, and real near-duplicates are found
    either way."""
    params = MinHashParams(num_perm=64, bands=16, threshold=0.8)
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2**32, size=(1, 64), dtype=np.uint32)
    one_band = base.copy()
    one_band[0, 4::4] += np.uint32(1)  # bands 1..15 each differ in one position: only band 0 is shared
    close = base.copy()
    close[0, [5, 9, 13]] += np.uint32(1)  # 13 bands shared, 61 of 64 positions equal
    for min_bands, expected in ((1, 1), (2, 0)):
        index = NearDupIndex(params=params, min_bands=min_bands)
        index.add_existing(np.array([1]), base, np.array([1]))
        q, cand = index._candidates(np.array([0]), index_keys(one_band, params), len(index))
        assert q.size == expected
    index = NearDupIndex(params=params, min_bands=2)
    index.add_existing(np.array([1]), base, np.array([1]))
    assert index.assign(np.array([2, 3]), np.vstack([close, one_band])).tolist() == [1, 3]
    with pytest.raises(ConfigError, match="min_bands"):
        NearDupIndex(params=params, min_bands=17)


def index_keys(sigs: np.ndarray, params: MinHashParams) -> np.ndarray:
    from pipelines.dedup import _band_keys

    return _band_keys(compact_signatures(sigs), params)
