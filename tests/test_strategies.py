"""The contract every strategy keeps, and what each one is for."""

from __future__ import annotations

import numpy as np
import pytest

from curation.errors import ConfigError, InputError
from curation.strategies import STRATEGIES, build_context, get_strategy, select, strategy_names

CENTERS = np.array([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])


def blobs(n_per: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + noise * rng.normal(size=(n_per, 4)) for c in CENTERS]).astype(np.float32)
    y = np.repeat(["a", "b", "c"], n_per)
    return x, y


def context(name: str, *, labels: list[str] | None = None, pool: int = 60, seed: int = 0):  # type: ignore[no-untyped-def]
    x_pool, _ = blobs(pool // 3, seed=1)
    x_lab, y_lab = blobs(10, seed=2)
    if labels is not None:
        y_lab = np.asarray(labels)
        x_lab = x_lab[: len(y_lab)]
    ctx, _clf, _codes = build_context(
        pool_ids=np.arange(1000, 1000 + len(x_pool)), pool_embeddings=x_pool, labeled_embeddings=x_lab,
        labeled_labels=list(y_lab), strategy=name, min_labels=5, seed=seed, mc_samples=5)
    return ctx


ALL = strategy_names()


@pytest.mark.parametrize("name", ALL)
def test_contract(name: str) -> None:
    ctx = context(name)
    res = select(name, ctx, 10, seed=3)
    ids = res.ids.tolist()
    assert len(ids) == 10 and len(set(ids)) == 10
    assert set(ids) <= set(ctx.pool_ids.tolist())
    assert len(res.scores) == 10 and np.isfinite(res.scores).all()
    assert res.cold_start is False
    # Deterministic with a seed (a freshly trained model included).
    assert select(name, context(name), 10, seed=3).ids.tolist() == ids
    # More than the pool: the whole pool, said so.
    everything = select(name, ctx, 500, seed=3)
    assert sorted(everything.ids.tolist()) == sorted(ctx.pool_ids.tolist())
    assert "pool holds 60" in (everything.note or "")
    # One class only: no model can be trained, so a cold start (diversity) that still keeps the contract.
    one = context(name, labels=["a"] * 10)
    res1 = select(name, one, 10, seed=3)
    assert len(set(res1.ids.tolist())) == 10 and set(res1.ids.tolist()) <= set(one.pool_ids.tolist())
    assert res1.cold_start == get_strategy(name).needs_model
    if res1.cold_start:
        assert res1.strategy == "kmeans" and "only 1 class" in (res1.note or "")
    # An empty pool is a clear error.
    empty = context(name, pool=60)
    empty.pool_ids, empty.pool_embeddings = empty.pool_ids[:0], empty.pool_embeddings[:0]
    empty.model = None
    with pytest.raises(InputError, match="pool is empty"):
        select(name, empty, 5, seed=0)


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        get_strategy("smallest-margin")
    for name in ("random", "margin", "entropy", "bald", "kmeans", "coreset", "badge", "balanced:margin"):
        assert name in str(err.value)
    assert get_strategy("balanced").name == "balanced:margin"
    assert get_strategy(" Margin ").name == "margin"


def test_too_few_labels_is_a_cold_start() -> None:
    ctx = context("margin", labels=["a", "b", "a"])
    res = select("margin", ctx, 6, seed=0)
    assert res.cold_start and "only 3 labeled" in (res.note or "")
    # k-means diversity covers the three blobs.
    blob = np.argmax(ctx.pool_embeddings[res.positions] @ CENTERS.T, axis=1)
    assert set(blob.tolist()) == {0, 1, 2}


def test_uncertainty_prefers_points_between_classes() -> None:
    x_lab, y_lab = blobs(10, seed=2, noise=0.3)
    between = np.array([[2.0, 2.0, 0, 0], [0, 2.0, 2.0, 0], [2.0, 0, 2.0, 0]], dtype=np.float32)
    ctx, _, _ = build_context(
        pool_ids=np.arange(63), pool_embeddings=np.concatenate([blobs(20, seed=1, noise=0.3)[0], between]),
        labeled_embeddings=x_lab, labeled_labels=list(y_lab), strategy="margin", min_labels=5)
    for name in ("margin", "least-confidence", "entropy"):
        assert set(select(name, ctx, 3, seed=0).ids.tolist()) == {60, 61, 62}, name


def test_margin_ties_are_broken_by_the_seed_not_by_id() -> None:
    ctx = context("margin")
    same = np.zeros((40, 4), dtype=np.float32)  # every pool item identical: all scores tie
    ctx, _, _ = build_context(pool_ids=np.arange(40), pool_embeddings=same,
                              labeled_embeddings=ctx.labeled_embeddings,
                              labeled_labels=[ctx.classes[i] for i in ctx.labeled_y], strategy="margin", min_labels=5)
    picks = {tuple(sorted(select("margin", ctx, 5, seed=s).ids.tolist())) for s in range(5)}
    assert len(picks) > 1
    assert (0, 1, 2, 3, 4) not in picks or len(picks) == 5


def test_balanced_evens_out_class_counts() -> None:
    x_pool, _ = blobs(20, seed=1)
    x_lab, y_lab = blobs(10, seed=2)
    keep = np.r_[0:10, 10:12, 20:30]  # class b has only 2 labels
    ctx, _, _ = build_context(pool_ids=np.arange(60), pool_embeddings=x_pool, labeled_embeddings=x_lab[keep],
                              labeled_labels=list(y_lab[keep]), strategy="balanced:random", min_labels=5)
    res = select("balanced:random", ctx, 8, seed=0)
    pred = ctx.model.proba()[res.positions].argmax(axis=1)  # type: ignore[union-attr]
    assert (pred == ctx.classes.index("b")).sum() == 8  # 2 + 8 = 10, as many as the others


def test_coreset_covers_the_unlabeled_region() -> None:
    x_lab, y_lab = blobs(10, seed=2)
    far = np.array([[0, 0, 0, 8.0]], dtype=np.float32)
    pool = np.concatenate([blobs(5, seed=3)[0], far])
    ctx, _, _ = build_context(pool_ids=np.arange(16), pool_embeddings=pool, labeled_embeddings=x_lab,
                              labeled_labels=list(y_lab), strategy="coreset", min_labels=5)
    assert select("coreset", ctx, 1, seed=0).ids.tolist() == [15]


def test_registry_has_every_named_strategy() -> None:
    assert {"random", "least-confidence", "margin", "entropy", "bald", "kmeans", "coreset", "badge"} <= set(STRATEGIES)
