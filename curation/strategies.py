"""Active-learning strategies, registered by name, and one `select()` that every caller goes through.

Why one entry point: the rules every strategy must keep live there once — N distinct pool items, deterministic for
a seed, N larger than the pool returns the whole pool, an empty pool is an error, and a cold start (too few labels
or a single class, so no useful model) falls back to k-means diversity and says so.

Uncertainty strategies score every pool item and take the top N, breaking exact ties with a seeded random key
(never by id, which would favour old documents). Diversity strategies (k-means, core-set, BADGE) pick sets.
`balanced:<inner>` wraps a scoring strategy so that picks even out the labeled class counts (by predicted class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from curation.classifier import LabelCodes, PoolModel, encode_labels, make_classifier
from curation.errors import ConfigError, InputError, ModelError

__all__ = [
    "Strategy",
    "SelectionContext",
    "SelectionResult",
    "STRATEGIES",
    "strategy_names",
    "get_strategy",
    "cold_start_reason",
    "build_context",
    "select",
]

_MAX_DIVERSITY_CANDIDATES = 50_000
_BALD_CHUNK = 65_536


@dataclass
class SelectionContext:
    """What a strategy sees: the pool (ids, embeddings), the labeled set, and a trained model or None."""

    pool_ids: np.ndarray
    pool_embeddings: np.ndarray
    labeled_embeddings: np.ndarray
    labeled_y: np.ndarray
    classes: list[str] = field(default_factory=list)
    model: PoolModel | None = None
    cold_start: str | None = None
    device: str = "cpu"

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class SelectionResult:
    """Picked pool positions and ids in priority order, with their scores (higher = pick first)."""

    positions: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    strategy: str
    requested: str
    cold_start: bool
    note: str | None = None


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    needs_model: bool = False
    needs_mc: bool = False
    score: Callable[[SelectionContext, np.random.Generator], np.ndarray] | None = None
    pick: Callable[[SelectionContext, int, np.random.Generator, int], tuple[np.ndarray, np.ndarray]] | None = None


# ---------------------------------------------------------------------------------------------------- helpers


def _top(scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the n highest scores; exact ties broken by a seeded random key."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    tiebreak = rng.random(len(s))
    if n < len(s):
        kth = np.partition(-s, n - 1)[n - 1]
        cand = np.flatnonzero(-s <= kth)
    else:
        cand = np.arange(len(s))
    order = np.lexsort((tiebreak[cand], -s[cand]))
    return cand[order[:n]]


def _require_model(ctx: SelectionContext, name: str) -> PoolModel:
    if ctx.model is None:
        raise ModelError(f"Strategy {name!r} needs a trained model.")
    return ctx.model


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=axis)


def _candidates(n_pool: int, rng: np.random.Generator, cap: int) -> np.ndarray:
    return np.arange(n_pool) if n_pool <= cap else np.sort(rng.choice(n_pool, cap, replace=False))


def _torch(x: np.ndarray, device: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)


# ---------------------------------------------------------------------------------------------------- scores


def _random(ctx: SelectionContext, rng: np.random.Generator) -> np.ndarray:
    return rng.random(len(ctx.pool_ids))


def _least_confidence(ctx: SelectionContext, rng: np.random.Generator) -> np.ndarray:
    return 1.0 - _require_model(ctx, "least-confidence").proba().max(axis=1)


def _margin(ctx: SelectionContext, rng: np.random.Generator) -> np.ndarray:
    p = _require_model(ctx, "margin").proba()
    if p.shape[1] < 2:
        return np.ones(len(p))
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def _entropy_score(ctx: SelectionContext, rng: np.random.Generator) -> np.ndarray:
    return _entropy(_require_model(ctx, "entropy").proba())


def _bald(ctx: SelectionContext, rng: np.random.Generator) -> np.ndarray:
    """Mutual information between the prediction and the weights, from MC-dropout samples."""
    model = _require_model(ctx, "bald")
    if not model.supports_mc:
        raise ModelError("Strategy 'bald' needs MC dropout.", hint="use --mode finetune or the mlp head")
    out = np.empty(len(ctx.pool_ids))
    for lo in range(0, len(out), _BALD_CHUNK):
        rows = np.arange(lo, min(lo + _BALD_CHUNK, len(out)))
        mc = model.mc_proba(rows)
        out[rows] = _entropy(mc.mean(axis=0)) - _entropy(mc).mean(axis=0)
    return out


# ---------------------------------------------------------------------------------------------------- set pickers


def _kmeans(ctx: SelectionContext, n: int, rng: np.random.Generator, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One representative per k-means cluster (the member nearest its centroid); score = cluster share."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    cand = _candidates(len(ctx.pool_ids), rng, max(_MAX_DIVERSITY_CANDIDATES, 20 * n))
    x = np.asarray(ctx.pool_embeddings[cand], dtype=np.float32)
    k = min(n, len(cand))
    if k == len(cand):
        return cand[rng.permutation(len(cand))], np.ones(len(cand))
    km: Any = (KMeans(n_clusters=k, random_state=seed, n_init=1) if len(cand) <= 20_000
               else MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=max(4096, 4 * k)))
    labels = km.fit_predict(x)
    dist = np.linalg.norm(x - km.cluster_centers_[labels], axis=1)
    order = np.lexsort((dist, labels))
    first = order[np.r_[True, labels[order][1:] != labels[order][:-1]]]
    share = np.bincount(labels, minlength=k)[labels[first]] / len(cand)
    order = np.lexsort((rng.random(len(first)), -share))
    picked, scores = list(first[order]), list(share[order])
    if len(picked) < k:  # empty clusters: top up at random
        rest = np.setdiff1d(np.arange(len(cand)), first)
        extra = rng.choice(rest, k - len(picked), replace=False)
        picked += list(extra)
        scores += [0.0] * len(extra)
    return cand[np.asarray(picked[:k])], np.asarray(scores[:k], dtype=np.float64)


def _coreset(ctx: SelectionContext, n: int, rng: np.random.Generator, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-center greedy: repeatedly take the pool item farthest from everything labeled or picked."""
    cand = _candidates(len(ctx.pool_ids), rng, 4 * _MAX_DIVERSITY_CANDIDATES)
    x = _torch(ctx.pool_embeddings[cand], ctx.device)
    mind = torch.full((len(cand),), float("inf"), device=ctx.device)
    lab = _torch(ctx.labeled_embeddings, ctx.device)
    for lo in range(0, len(lab), 4096):
        mind = torch.minimum(mind, torch.cdist(x, lab[lo : lo + 4096]).min(dim=1).values)
    picked: list[int] = []
    scores: list[float] = []
    jitter = _torch(rng.random(len(cand)) * 1e-9, ctx.device)
    for _ in range(min(n, len(cand))):
        j = int(torch.argmax(torch.where(torch.isinf(mind), torch.tensor(1e9, device=ctx.device), mind) + jitter))
        scores.append(float(mind[j]) if torch.isfinite(mind[j]) else float("nan"))
        picked.append(j)
        mind = torch.minimum(mind, torch.cdist(x, x[j : j + 1]).squeeze(1))
        mind[j] = -1.0
    arr = np.asarray(scores)
    arr[np.isnan(arr)] = np.nanmax(arr) if np.isfinite(arr).any() else 1.0
    return cand[np.asarray(picked)], arr


def _badge(ctx: SelectionContext, n: int, rng: np.random.Generator, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding on gradient embeddings (p - onehot(argmax p)) ⊗ h, never materialised:
    <g_i, g_j> = <p_i - e_i, p_j - e_j> · <h_i, h_j>."""
    model = _require_model(ctx, "badge")
    cand = _candidates(len(ctx.pool_ids), rng, _MAX_DIVERSITY_CANDIDATES)
    p = model.proba()[cand]
    h = model.features(cand) if len(cand) < len(ctx.pool_ids) else model.features()
    r = p.copy()
    r[np.arange(len(r)), p.argmax(axis=1)] -= 1.0
    rt, ht = _torch(r, ctx.device), _torch(h, ctx.device)
    sq = (rt * rt).sum(1) * (ht * ht).sum(1)
    first = int(torch.argmax(sq))
    picked = [first]
    scores = [float(sq[first])]

    def dist2(c: int) -> torch.Tensor:
        return (sq + sq[c] - 2.0 * (rt @ rt[c]) * (ht @ ht[c])).clamp(min=0.0)

    mind = dist2(first)
    mind[first] = 0.0
    for _ in range(min(n, len(cand)) - 1):
        w = mind.double().cpu().numpy()
        w[picked] = 0.0
        total = w.sum()
        if total <= 0:
            rest = np.setdiff1d(np.arange(len(cand)), picked)
            c = int(rng.choice(rest))
        else:
            c = int(rng.choice(len(cand), p=w / total))
        picked.append(c)
        scores.append(float(w[c]))
        mind = torch.minimum(mind, dist2(c))
        mind[c] = 0.0
    return cand[np.asarray(picked)], np.asarray(scores)


# ---------------------------------------------------------------------------------------------------- registry

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("random", "uniform at random (the baseline)", score=_random),
        Strategy("least-confidence", "lowest top-class probability", needs_model=True, score=_least_confidence),
        Strategy("margin", "smallest gap between the two most probable classes", needs_model=True, score=_margin),
        Strategy("entropy", "highest predictive entropy", needs_model=True, score=_entropy_score),
        Strategy("bald", "mutual information from MC dropout (fine-tune mode or mlp head)", needs_model=True,
                 needs_mc=True, score=_bald),
        Strategy("kmeans", "embedding k-means diversity (also the cold start)", pick=_kmeans),
        Strategy("coreset", "k-center greedy core-set on embeddings", pick=_coreset),
        Strategy("badge", "BADGE: k-means++ on gradient embeddings", needs_model=True, pick=_badge),
    )
}
_BALANCED = "balanced"


def strategy_names() -> list[str]:
    scoring = [n for n, s in STRATEGIES.items() if s.score is not None]
    return [*STRATEGIES, _BALANCED, *(f"{_BALANCED}:{n}" for n in scoring)]


def get_strategy(name: str) -> Strategy:
    """The strategy called `name` (`balanced` = `balanced:margin`); an unknown name lists the valid ones."""
    key = name.strip().lower()
    if key == _BALANCED:
        key = f"{_BALANCED}:margin"
    if key.startswith(f"{_BALANCED}:"):
        inner = STRATEGIES.get(key.split(":", 1)[1])
        if inner is not None and inner.score is not None:
            return Strategy(key, f"class-balanced {inner.name}", needs_model=True, needs_mc=inner.needs_mc,
                            pick=_balanced(inner))
    elif key in STRATEGIES:
        return STRATEGIES[key]
    raise ConfigError(f"Unknown strategy {name!r}.", hint=f"valid strategies: {', '.join(strategy_names())}")


def _balanced(inner: Strategy) -> Callable[[SelectionContext, int, np.random.Generator, int],
                                          tuple[np.ndarray, np.ndarray]]:
    def pick(ctx: SelectionContext, n: int, rng: np.random.Generator, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Water-fill picks over predicted classes so labeled + picked counts even out; inner scores within."""
        assert inner.score is not None
        scores = inner.score(ctx, rng)
        pred = _require_model(ctx, "balanced").proba().argmax(axis=1)
        k = max(ctx.n_classes, int(pred.max()) + 1)
        have = np.bincount(ctx.labeled_y, minlength=k).astype(np.int64)[:k]
        avail = np.bincount(pred, minlength=k)
        quota = np.zeros(k, dtype=np.int64)
        for _ in range(n):
            open_ = quota < avail
            if not open_.any():
                break
            c = int(np.argmin(np.where(open_, have + quota, np.iinfo(np.int64).max)))
            quota[c] += 1
        picked = [np.flatnonzero(pred == c)[_top(scores[pred == c], int(q), rng)] for c, q in enumerate(quota) if q]
        pos = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
        pos = pos[_top(scores[pos], len(pos), rng)]
        return pos, scores[pos]

    return pick


# ---------------------------------------------------------------------------------------------------- entry points


def cold_start_reason(labels: Sequence[Any], *, min_labels: int) -> str | None:
    """Why no model can be trained yet (None when one can)."""
    n_classes = len(set(labels))
    if len(labels) < min_labels:
        return f"only {len(labels)} labeled documents (min_labels = {min_labels})"
    if n_classes < 2:
        return f"only {n_classes} class among the labels"
    return None


def build_context(
    *,
    pool_ids: Sequence[Any] | np.ndarray,
    pool_embeddings: np.ndarray,
    labeled_embeddings: np.ndarray,
    labeled_labels: Sequence[str],
    strategy: str,
    min_labels: int = 1,
    mode: str = "fast",
    head: str = "logreg",
    device: str = "cpu",
    seed: int = 0,
    mc_samples: int = 10,
    pool_texts: Sequence[str] | None = None,
    labeled_texts: Sequence[str] | None = None,
    model: str | None = None,
    classifier_options: dict[str, Any] | None = None,
) -> tuple[SelectionContext, Any, LabelCodes]:
    """Train a classifier on the labeled set (unless this is a cold start) and bind it to the pool.

    Returns (context, trained classifier or None, label codes). A strategy that needs MC dropout gets the mlp head in
    fast mode.
    """
    spec = get_strategy(strategy)
    codes = encode_labels(list(labeled_labels))
    reason = cold_start_reason(list(labeled_labels), min_labels=min_labels)
    ctx = SelectionContext(
        pool_ids=np.asarray(pool_ids),
        pool_embeddings=pool_embeddings,
        labeled_embeddings=labeled_embeddings,
        labeled_y=codes.y,
        classes=codes.classes,
        cold_start=reason,
        device=device,
    )
    if reason is not None or len(ctx.pool_ids) == 0:
        return ctx, None, codes
    if mode == "fast" and spec.needs_mc:
        head = "mlp"
    clf: Any = make_classifier(mode, device=device, seed=seed, head=head, model=model,
                               **(classifier_options or {}))
    if mode == "finetune":
        if pool_texts is None or labeled_texts is None:
            raise ModelError("Fine-tune mode needs the texts of the labeled set and the pool.")
        clf.fit(list(labeled_texts), codes.y, len(codes.classes))
        ctx.model = PoolModel(clf, list(pool_texts), mc_samples=mc_samples)
    else:
        clf.fit(labeled_embeddings, codes.y, len(codes.classes))
        ctx.model = PoolModel(clf, pool_embeddings, mc_samples=mc_samples)
    return ctx, clf, codes


def select(name: str, ctx: SelectionContext, n: int, *, seed: int = 0) -> SelectionResult:
    """Pick min(n, pool size) distinct pool items with strategy `name` (cold start: k-means diversity)."""
    spec = get_strategy(name)
    size = len(ctx.pool_ids)
    if size == 0:
        raise InputError(
            "The unlabeled pool is empty: every document is labeled or already selected.",
            hint="ingest more documents, or pull annotations for the pending selections",
        )
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}.")
    take = min(n, size)
    rng = np.random.default_rng(seed)
    used, note, cold = spec, None, False
    if spec.needs_model and ctx.model is None:
        used, cold = STRATEGIES["kmeans"], True
        note = f"cold start ({ctx.cold_start or 'no trained model'}): used k-means diversity instead of {spec.name}"
    if used.score is not None:
        scores_all = used.score(ctx, rng)
        pos = _top(scores_all, take, rng)
        scores = scores_all[pos]
    else:
        assert used.pick is not None
        pos, scores = used.pick(ctx, take, rng, seed)
    pos = np.asarray(pos, dtype=np.int64)
    if len(np.unique(pos)) != len(pos):  # pragma: no cover - a strategy bug, never user input
        raise ModelError(f"Strategy {used.name} returned repeated items.")
    if n > size:
        note = (note + "; " if note else "") + f"asked for {n} but the pool holds {size}: selected all of it"
    return SelectionResult(positions=pos, ids=ctx.pool_ids[pos], scores=np.asarray(scores, dtype=np.float64),
                           strategy=used.name, requested=spec.name, cold_start=cold, note=note)
