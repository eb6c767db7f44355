"""The fast head and full fine-tuning (on a tiny random BERT), and model version ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.classifier import FineTuneClassifier, HeadClassifier, encode_labels, model_version
from curation.errors import ModelError
from curation.strategies import build_context, select


def separable(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 16))
    y = np.repeat(np.arange(3), n // 3)
    x = centers[y] + 0.3 * rng.normal(size=(len(y), 16))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_head_learns_and_is_deterministic(kind: str) -> None:
    x, y = separable()
    xt, yt = separable(seed=0)
    a = HeadClassifier(kind=kind, seed=1).fit(x, y, 3)  # type: ignore[arg-type]
    b = HeadClassifier(kind=kind, seed=1).fit(x, y, 3)  # type: ignore[arg-type]
    p = a.predict_proba(xt)
    assert p.shape == (len(yt), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p.argmax(axis=1) == yt).mean() > 0.95
    np.testing.assert_allclose(p, b.predict_proba(xt), atol=1e-6)
    assert a.features(xt).shape == (len(yt), 16 if kind == "logreg" else a.hidden)


def test_mc_dropout_needs_dropout() -> None:
    x, y = separable()
    with pytest.raises(ModelError, match="MC dropout"):
        HeadClassifier(kind="logreg").fit(x, y, 3).mc_proba(x, 4)
    mc = HeadClassifier(kind="mlp", dropout=0.5).fit(x, y, 3).mc_proba(x, 4)
    assert mc.shape == (4, len(y), 3)
    assert np.abs(mc[0] - mc[1]).max() > 0  # dropout is on


def test_model_version_is_deterministic() -> None:
    kw = {"mode": "fast", "encoder_id": "m@1", "params": {"c": 1.0}}
    v1 = model_version(**kw, train_keys=["1", "2"], train_labels=["a", "b"])
    assert v1 == model_version(**kw, train_keys=["2", "1"], train_labels=["b", "a"])
    assert v1 != model_version(**kw, train_keys=["1", "2"], train_labels=["a", "a"])
    assert v1.startswith("fast-")
    assert encode_labels(["b", "a", "b"]).classes == ["a", "b"]


def keyword_texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    words = ["card", "transfer", "account", "fee", "money", "today", "please", "help"]
    texts, y = [], []
    for i in range(n):
        label = i % 2
        body = " ".join(rng.choice(words, 5))
        texts.append(f"{body} {'refund refund' if label else 'balance balance'}")
        y.append(label)
    return texts, np.asarray(y)


def test_finetune_on_a_tiny_bert(tiny_bert: Path) -> None:
    texts, y = keyword_texts(40, seed=0)
    clf = FineTuneClassifier(model=str(tiny_bert), device="cpu", epochs=8, lr=2e-3, batch_size=8, seed=0)
    clf.fit(texts, y, 2)
    test_texts, yt = keyword_texts(20, seed=1)
    p = clf.predict_proba(test_texts)
    assert p.shape == (20, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p.argmax(axis=1) == yt).mean() >= 0.9
    mc = clf.mc_proba(test_texts, 3)
    assert mc.shape == (3, 20, 2) and np.abs(mc[0] - mc[1]).max() > 0
    assert clf.features(test_texts).shape == (20, 32)
    assert clf.model_id and str(tiny_bert) in clf.model_id
    clf.release()
    with pytest.raises(ModelError, match="not been trained"):
        clf.predict_proba(test_texts)


def test_bald_in_finetune_mode(tiny_bert: Path) -> None:
    texts, y = keyword_texts(30, seed=0)
    pool, _ = keyword_texts(20, seed=2)
    emb = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    ctx, clf, _ = build_context(
        pool_ids=np.arange(100, 120), pool_embeddings=emb[30:], labeled_embeddings=emb[:30],
        labeled_labels=[str(v) for v in y], strategy="bald", mode="finetune", model=str(tiny_bert), seed=0,
        mc_samples=4, pool_texts=pool, labeled_texts=texts,
        classifier_options={"epochs": 1, "batch_size": 8},
    )
    assert clf is not None and clf.mode == "finetune"
    res = select("bald", ctx, 5, seed=0)
    assert len(set(res.ids.tolist())) == 5 and (res.scores >= -1e-6).all()
    assert select("badge", ctx, 5, seed=0).ids.shape == (5,)
