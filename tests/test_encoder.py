"""The encoder (tiny random BERTs and the packaged MiniLM) and the Parquet embedding cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from curation.embeddings import EmbeddingCache, default_cache_dir, embed_texts, text_hashes
from curation.encoder import DEFAULT_MODEL, Encoder, Tokenized, resolve_device, resolve_model, save_random_bert
from curation.errors import ModelError

TEXTS = [
    "I lost my card yesterday",
    "My card was stolen on the train",
    "What is the exchange rate for euros?",
    "hi",
    "How long does a transfer to another bank take, and is there a fee for sending money abroad to Germany?",
    "",
]


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return Encoder(None, device="cpu")


def test_batching_and_sorting_do_not_change_vectors(tiny_bert: Path) -> None:
    enc = Encoder(tiny_bert, device="cpu")
    many = TEXTS * 5
    batched = enc.encode(many)
    enc.batch_tokens = 8  # forces one or two texts per batch
    small = enc.encode(many)
    one_by_one = np.concatenate([enc.encode([t]) for t in many])
    assert batched.shape == (len(many), 32) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, small, atol=1e-5)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.encode(many[::-1])[::-1], batched, atol=1e-5)


def test_background_tokenization_gives_the_same_vectors(tiny_bert: Path) -> None:
    enc = Encoder(tiny_bert, device="cpu", batch_tokens=16)
    plain = enc.encode(TEXTS * 3)
    enc.overlap = True
    np.testing.assert_array_equal(enc.encode(TEXTS * 3), plain)


def test_prefetch_reraises_and_stops_early() -> None:
    from curation.encoder import _prefetch

    def broken():  # type: ignore[no-untyped-def]
        yield 1
        raise ValueError("tokenizer failed")

    with pytest.raises(ValueError, match="tokenizer failed"):
        list(_prefetch(broken(), depth=2))
    gen = _prefetch(iter(range(10_000)), depth=2)
    assert next(gen) == 0
    gen.close()  # the producer thread must not hang


def test_odd_inputs(tiny_bert: Path) -> None:
    enc = Encoder(tiny_bert, device="cpu")
    assert enc.encode([]).shape == (0, 32)
    out = enc.encode(["lone \ud800 surrogate", "word " * 5000, None])  # type: ignore[list-item]
    assert out.shape == (3, 32) and np.isfinite(out).all()


def test_token_budget_batches_respect_the_budget() -> None:
    lengths = np.array([5, 50, 3, 7, 7, 120, 9, 2])
    tok = Tokenized(ids=[[1] * n for n in lengths], lengths=lengths)
    batches = tok.budget_batches(batch_tokens=60)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for rows in batches:
        assert len(rows) == 1 or len(rows) * lengths[rows].max() <= 60
    ids, mask = tok.pad(np.array([0, 2]))
    assert ids.shape == (2, 5) and mask.sum() == 8


def test_minilm_similarity_ordering(minilm: Encoder) -> None:
    e = minilm.encode(TEXTS[:3])
    assert minilm.dim == 384 and minilm.ref.name == DEFAULT_MODEL
    lost_vs_stolen = float(e[0] @ e[1])
    lost_vs_rate = float(e[0] @ e[2])
    assert lost_vs_stolen > lost_vs_rate + 0.2


def test_minilm_matches_sentence_transformers(minilm: Encoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm.ref.path), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(minilm.encode(TEXTS), reference, atol=1e-4)


def test_model_resolution_and_fingerprints(tiny_bert: Path, tmp_path: Path) -> None:
    ref = resolve_model(tiny_bert)
    assert ref.model_id.startswith(str(tiny_bert)) and len(ref.fingerprint) == 16
    other = save_random_bert(tmp_path / "other", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, seed=1)
    assert resolve_model(other).fingerprint != ref.fingerprint
    with pytest.raises(ModelError, match="local Hugging Face cache"):
        resolve_model("nobody/no-such-model-xyz")
    with pytest.raises(ModelError, match="not a folder"):
        resolve_model(str(tmp_path / "missing"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_an_error() -> None:
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ModelError, match="no CUDA"):
        resolve_device("cuda")


def test_cache_encodes_only_new_texts(tiny_bert: Path, tmp_path: Path) -> None:
    enc = Encoder(tiny_bert, device="cpu")
    cache = EmbeddingCache(tmp_path / "emb", enc.key)
    first, stats = embed_texts(TEXTS[:4], encoder=enc, cache=cache)
    assert stats == {"cached": 0, "encoded": 4}
    again, stats = embed_texts([*TEXTS[:4], TEXTS[4], TEXTS[0]], encoder=enc, cache=cache)
    assert stats == {"cached": 5, "encoded": 1}
    np.testing.assert_array_equal(again[:4], first)
    np.testing.assert_array_equal(again[5], first[0])
    assert cache.count() == 5 and len(list(cache.folder.glob("part-*.parquet"))) == 2
    fresh = Encoder(tiny_bert, device="cpu")
    cached, stats = embed_texts(TEXTS[:5], encoder=fresh, cache=cache)
    assert stats["encoded"] == 0 and fresh._model is None  # all cached: the weights are never loaded
    np.testing.assert_array_equal(cached[:4], first)
    mask, vecs = cache.get(text_hashes(["never seen", TEXTS[1]]))
    assert mask.tolist() == [False, True]
    np.testing.assert_array_equal(vecs[0], first[1])


def test_cache_compaction_keeps_every_vector(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "m@abc|mean|8")
    rng = np.random.default_rng(0)
    vecs = rng.random((40, 8), dtype=np.float32)
    hashes = [f"{i:040x}" for i in range(40)]
    for lo in range(0, 40, 10):
        cache.put(hashes[lo : lo + 10], vecs[lo : lo + 10])
    cache.put(hashes[:5], vecs[:5])  # a concurrent run wrote some again
    cache.compact()
    assert len(list(cache.folder.glob("part-*.parquet"))) == 1
    mask, got = cache.get(hashes[::-1])
    assert mask.all()
    np.testing.assert_array_equal(got, vecs[::-1])


def test_cache_keys_separate_models(tmp_path: Path) -> None:
    a, b = EmbeddingCache(tmp_path, "m@1|mean|8"), EmbeddingCache(tmp_path, "m@2|mean|8")
    a.put(["h"], np.ones((1, 4), dtype=np.float32))
    assert b.get(["h"])[0].tolist() == [False]
    assert a.folder != b.folder


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_cache_dir(f"sqlite:///{tmp_path}/store/x.db") == tmp_path / "store" / "embeddings"
    assert default_cache_dir("postgresql+psycopg://u@h/db") == tmp_path / ".curate" / "embeddings"
    assert default_cache_dir(None, str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_memory_stays_flat() -> None:
    texts = TEXTS * 200
    cpu = Encoder(None, device="cpu").encode(texts)
    gpu_enc = Encoder(None, device="cuda")
    assert gpu_enc.dtype == torch.bfloat16 and gpu_enc.model.config._attn_implementation == "sdpa"
    peaks = []
    for _ in range(3):
        torch.cuda.reset_peak_memory_stats()
        gpu = gpu_enc.encode(texts)
        peaks.append(torch.cuda.max_memory_allocated())
    cos = (cpu * gpu).sum(axis=1)
    assert cos.min() > 0.99
    assert max(peaks) <= min(peaks) * 1.05
