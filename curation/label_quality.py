"""Label quality with cleanlab: out-of-sample probabilities, label issues, near-duplicate conflicts, outliers, and
CROWDLAB consensus where a document has several annotators.

Why out-of-sample: confident learning needs each document's class probabilities from a model that never saw that
document's label, so they come from K-fold cross-validation on the cached embeddings of the active-learning encoder
(fine-tune mode instead trains the whole encoder per fold: slow, optional).

Why a linear discriminant by default (`classifier="lda"`): its five fold models come from one pass over the data,
so an audit of 100k documents takes seconds on two CPU cores; the active-learning head
(`curation.classifier.HeadClassifier`, `classifier="logreg"`) needs five L-BFGS fits, minutes at that size. On
BANKING77 with 10% injected flips it flags slightly better (F1 0.879 against 0.863, benchmark seeds) at 20 to 30
times the cost. Both choose their regularisation (shrinkage and temperature, or the head's `c`) by the lowest
held-out log-loss *on the given labels* (no ground truth needed): a model that fits noisy labels closely reproduces
their errors (on a development seed, the head with c = 1 lost 7 points of F1 against the chosen c = 0.03).

Why near-duplicates with different labels are reported but not counted as label issues: on the development seeds,
only 9% of the documents flagged that way alone (MinHash clusters of the ingest, on BANKING77) were injected errors;
short texts that share most words often carry different intents legitimately. They are stored with kind
`near_duplicate_conflict` (and the group's likeliest label) for a person to look at; cleanlab catches the real
errors among them anyway.

Why `low_self_confidence`: cleanlab estimates how many labels are wrong (calibrated confident joint) and flags that
many documents with the lowest self-confidence (the probability of the given label, which is also the label quality
score stored for every document). On the development seed it beat cleanlab's default `prune_by_noise_rate` by
6 to 10 points of F1 at every regularisation strength.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from curation.errors import InputError, ModelError

__all__ = [
    "FILTER_BY",
    "C_GRID",
    "AuditResult",
    "choose_c",
    "SHRINKAGE_GRID",
    "lda_oof_logits",
    "out_of_sample_probs",
    "find_issues",
    "near_duplicate_conflicts",
    "outliers",
    "multiannotator_consensus",
    "annotation_fingerprints",
    "apply_crowdlab",
    "audit_labels",
]

FILTER_BY = "low_self_confidence"
#: Candidate regularisation strengths of the head (scikit-learn's convention: larger is weaker).
C_GRID: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
_C_SAMPLE = 10_000
_EPS = 1e-7


@dataclass
class AuditResult:
    """Per labeled document (rows in input order) and for the whole set."""

    classes: list[str]
    given: np.ndarray
    pred_probs: np.ndarray
    label_quality: np.ndarray
    suggested: np.ndarray
    near_duplicate_conflict: np.ndarray
    near_duplicate_flag: np.ndarray
    group_label: np.ndarray
    outlier_score: np.ndarray
    is_outlier: np.ndarray
    is_label_issue: np.ndarray
    estimated_noise_rate: float
    consensus: pd.DataFrame = field(default_factory=pd.DataFrame)
    annotators: pd.DataFrame = field(default_factory=pd.DataFrame)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> np.ndarray:
        """Why a row is of interest: `label` (a cleanlab issue, or nothing), else `near_duplicate_conflict`, else
        `outlier`."""
        out = np.full(len(self.given), "label", dtype=object)
        out[self.is_outlier & ~self.is_label_issue] = "outlier"
        out[self.near_duplicate_flag & ~self.is_label_issue] = "near_duplicate_conflict"
        return out


# ---------------------------------------------------------------------------------------------------- probabilities


def _head(device: str, seed: int, c: float) -> Any:
    from curation.classifier import make_classifier

    return make_classifier("fast", device=device, seed=seed, head="logreg", c=c)


def _subset(inputs: Any, rows: np.ndarray) -> Any:
    if isinstance(inputs, np.ndarray):
        return inputs[rows]
    return [inputs[int(i)] for i in rows]


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], _EPS, 1.0)).mean())


def choose_c(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    grid: Sequence[float] = C_GRID,
    seed: int = 0,
    max_rows: int = _C_SAMPLE,
    device: str = "cpu",
) -> tuple[float, dict[float, float]]:
    """The head's regularisation with the lowest held-out log-loss on the given labels, and each candidate's loss.

    One stratified 80/20 split of at most `max_rows` documents, walking `grid` upwards and stopping once the loss
    rises (it is unimodal in practice, and the weakly regularised fits are the slow ones): a few small fits,
    whatever the set's size.
    """
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    rows = np.arange(len(y)) if len(y) <= max_rows else np.sort(rng.choice(len(y), max_rows, replace=False))
    counts = np.bincount(y[rows], minlength=n_classes)
    strat = y[rows] if counts[counts > 0].min() >= 2 else None
    tr, te = train_test_split(rows, test_size=0.2, random_state=seed, stratify=strat)
    losses: dict[float, float] = {}
    for c in sorted(grid):
        clf = _head(device, seed, float(c)).fit(x[tr], y[tr], n_classes)
        losses[float(c)] = round(_log_loss(clf.predict_proba(x[te]), y[te]), 5)
        clf.release()
        if len(losses) > 1 and losses[float(c)] > min(losses.values()):
            break
    best = min(losses, key=lambda k: (losses[k], k))
    return best, losses


def out_of_sample_probs(
    inputs: Any,
    y: np.ndarray,
    n_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    mode: str = "fast",
    classifier: str = "lda",
    c: float | None = None,
    device: str = "cpu",
    model: str | None = None,
    classifier_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Class probabilities of every document from a model trained on the other folds (stratified K-fold).

    `inputs`: embeddings [n, dim] in fast mode, texts in fine-tune mode. Fast mode's `classifier`: `lda` (the
    calibrated discriminant of `lda_oof_logits`, the default: seconds at 100k documents) or `logreg` (the
    active-learning head, `c=None` choosing its regularisation with `choose_c`). Returns (probabilities
    [n, n_classes], what was done).
    """
    from sklearn.model_selection import StratifiedKFold

    from curation.classifier import make_classifier

    n = len(y)
    if n < 2 * folds:
        raise InputError(
            f"An audit with {folds} folds needs at least {2 * folds} labeled documents; found {n}.",
            hint="label more documents, or pass --folds with a smaller number (at least 2)",
        )
    if folds < 2:
        raise InputError(f"--folds must be at least 2, not {folds}.")
    info: dict[str, Any] = {"folds": folds, "mode": mode}
    t0 = time.perf_counter()
    if mode == "fast" and classifier == "lda":
        from scipy.special import softmax

        logits, lda_info = lda_oof_logits(np.asarray(inputs, dtype=np.float32), y, n_classes, folds=folds,
                                          seed=seed, device=device)
        info.update(lda_info, kfold_seconds=round(time.perf_counter() - t0, 3))
        return softmax(logits, axis=1).astype(np.float32), info
    if mode == "fast" and classifier != "logreg":
        raise ModelError(f"Unknown audit classifier {classifier!r}.", hint="use lda or logreg")
    if mode == "fast":
        info["model"] = "logreg"
        x = np.asarray(inputs, dtype=np.float32)
        if c is None:
            c, losses = choose_c(x, y, n_classes, seed=seed, device=device)
            info["c_log_loss"] = losses
        info["c"] = float(c)
        info["choose_c_seconds"] = round(time.perf_counter() - t0, 3)
    elif mode != "finetune":
        raise ModelError(f"Unknown audit mode {mode!r}.", hint="use fast or finetune")
    probs = np.zeros((n, n_classes), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(n), y))
    t1 = time.perf_counter()
    for train, test in splits:
        if mode == "fast":
            clf = _head(device, seed, float(c))  # type: ignore[arg-type]
        else:
            clf = make_classifier("finetune", device=device, seed=seed, model=model, **(classifier_options or {}))
        clf.fit(_subset(inputs, train), y[train], n_classes)
        probs[test] = clf.predict_proba(_subset(inputs, test))
        clf.release()
    info["kfold_seconds"] = round(time.perf_counter() - t1, 3)
    return probs, info


SHRINKAGE_GRID: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.7, 0.9)
_CALIBRATION_ROWS = 20_000
_CHUNK_ROWS = 65_536


def _fold_statistics(
    x: np.ndarray, y: np.ndarray, fold_of: np.ndarray, folds: int, n_classes: int, device: str
) -> tuple[Any, Any, Any]:
    """Per fold: Gram matrix X'X, class sums and class counts (float64), in one chunked pass over the rows."""
    import torch

    dev = torch.device(device)
    d = x.shape[1]
    gram = torch.zeros((folds, d, d), dtype=torch.float64, device=dev)
    sums = torch.zeros((folds, n_classes, d), dtype=torch.float64, device=dev)
    counts = torch.zeros((folds, n_classes), dtype=torch.float64, device=dev)
    for lo in range(0, len(y), _CHUNK_ROWS):
        xb = torch.as_tensor(x[lo : lo + _CHUNK_ROWS], device=dev).to(torch.float64)
        yb = torch.as_tensor(y[lo : lo + _CHUNK_ROWS], device=dev)
        fb = torch.as_tensor(fold_of[lo : lo + _CHUNK_ROWS], device=dev)
        for f in range(folds):
            m = fb == f
            if not bool(m.any()):
                continue
            xf = xb[m]
            gram[f] += xf.T @ xf
            sums[f].index_add_(0, yb[m], xf)
            counts[f] += torch.bincount(yb[m], minlength=n_classes).to(torch.float64)
    return gram, sums, counts


def _lda_logits(
    x: np.ndarray, y: np.ndarray, fold_of: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
    n_classes: int, *, shrinkage: Sequence[float], device: str,
) -> Iterator[tuple[float, np.ndarray]]:
    """(shrinkage, out-of-fold logits) for each shrinkage, one at a time: every fold's model from the other folds'
    statistics."""
    import torch

    dev = torch.device(device)
    gram, sums, counts = _fold_statistics(x, y, fold_of, len(splits), n_classes, device)
    d = x.shape[1]
    eye = torch.eye(d, dtype=torch.float64, device=dev)
    xt = torch.as_tensor(x, device=dev).to(torch.float32)
    for lam in shrinkage:
        out = np.zeros((len(y), n_classes), dtype=np.float32)
        for f, (_, test) in enumerate(splits):
            g = gram.sum(0) - gram[f]
            s_ = sums.sum(0) - sums[f]
            n_k = counts.sum(0) - counts[f]
            n = float(n_k.sum())
            seen = n_k > 0
            mu = torch.where(seen[:, None], s_ / n_k.clamp(min=1)[:, None], torch.zeros_like(s_))
            cov = (g - s_.T @ mu) / max(n - int(seen.sum()), 1)
            cov = (1 - lam) * cov + lam * (torch.trace(cov) / d) * eye
            w = torch.linalg.solve(cov, mu.T)
            prior = torch.where(seen, torch.log(n_k.clamp(min=1) / n), torch.full_like(n_k, -30.0))
            b = prior - 0.5 * (mu * w.T).sum(1)
            rows = torch.as_tensor(test, device=dev)
            out[test] = (xt[rows] @ w.to(torch.float32) + b.to(torch.float32)).cpu().numpy()
        yield float(lam), out


def lda_oof_logits(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    shrinkage: Sequence[float] = SHRINKAGE_GRID,
    device: str = "cpu",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Out-of-fold logits of a shrunk linear discriminant (shared covariance), calibrated by a temperature.

    Why not refit a classifier per fold: the discriminant needs only each fold's Gram matrix and class sums, so
    every fold's model comes from one pass over the data (O(n d^2)) plus d x d solves, about 1 s for 100k
    documents on two CPU cores where five logistic-regression fits take minutes. The shrinkage and the temperature
    are those with the lowest out-of-fold log-loss on the given labels.
    """
    from scipy.optimize import minimize_scalar
    from sklearn.model_selection import StratifiedKFold

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    fold_of = np.empty(len(y), dtype=np.int64)
    for f, (_, test) in enumerate(splits):
        fold_of[test] = f
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    cal = np.arange(len(y)) if len(y) <= _CALIBRATION_ROWS else rng.choice(len(y), _CALIBRATION_ROWS, replace=False)
    fits: dict[float, tuple[float, float]] = {}
    best: tuple[float, np.ndarray] | None = None
    from curation.classifier import cpu_threads

    with cpu_threads(device, int(len(y) * d * (d + n_classes * len(shrinkage))), limit=2_000_000_000):
        for lam, logits in _lda_logits(x, y, fold_of, splits, n_classes, shrinkage=shrinkage, device=device):
            z, t = logits[cal].astype(np.float64), y[cal]
            res = minimize_scalar(lambda log_t: _nll(z, t, float(np.exp(log_t))), bounds=(-3.0, 6.0),  # noqa: B023
                                  method="bounded", options={"xatol": 1e-3})
            fits[lam] = (float(np.exp(res.x)), float(res.fun))
            if best is None or fits[lam][1] < fits[best[0]][1]:
                best = (lam, logits)  # only the best logits so far are kept (1M x 77 floats each)
    assert best is not None
    temperature = fits[best[0]][0]
    info = {"model": "lda", "shrinkage": best[0], "temperature": round(temperature, 4),
            "calibration_log_loss": {k: round(v[1], 5) for k, v in fits.items()}}
    return best[1] / np.float32(temperature), info


def _nll(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    return float(-log_softmax(z / temperature, axis=1)[np.arange(len(y)), y].mean())


# ---------------------------------------------------------------------------------------------------- issues


def find_issues(
    labels: np.ndarray, pred_probs: np.ndarray, *, filter_by: str = FILTER_BY
) -> tuple[np.ndarray, np.ndarray]:
    """(is-issue mask, label quality in [0, 1]) from cleanlab; quality is the self-confidence score."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        mask = find_label_issues(labels, pred_probs, filter_by=filter_by)
        quality = get_label_quality_scores(labels, pred_probs, method="self_confidence")
    return np.asarray(mask, dtype=bool), np.clip(np.asarray(quality, dtype=np.float64), 0.0, 1.0)


def near_duplicate_conflicts(
    groups: np.ndarray, labels: np.ndarray, pred_probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Near-duplicates (same group, e.g. the ingest's MinHash cluster) that carry different labels.

    Returns (in a conflicting group, flagged, the group's label): the group's label is the class with the most
    weight over its members (one vote per given label plus the model's probabilities); members labeled otherwise
    are flagged. `-1` where a row is in no conflicting group.
    """
    n = len(labels)
    in_conflict = np.zeros(n, dtype=bool)
    flagged = np.zeros(n, dtype=bool)
    group_label = np.full(n, -1, dtype=np.int64)
    frame = pd.DataFrame({"g": groups, "y": labels})
    frame = frame[frame["g"].notna()]
    if frame.empty:
        return in_conflict, flagged, group_label
    stats = frame.groupby("g")["y"].agg(["size", "nunique"])
    bad = stats.index[(stats["size"] > 1) & (stats["nunique"] > 1)]
    if len(bad) == 0:
        return in_conflict, flagged, group_label
    members = frame[frame["g"].isin(bad)]
    for _, rows in members.groupby("g").groups.items():
        idx = np.asarray(rows, dtype=np.int64)
        weight = pred_probs[idx].sum(axis=0) + np.bincount(labels[idx], minlength=pred_probs.shape[1])
        top = int(weight.argmax())
        in_conflict[idx] = True
        group_label[idx] = top
        flagged[idx[labels[idx] != top]] = True
    return in_conflict, flagged, group_label


def outliers(pred_probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(outlier score in [0, 1], lower is more atypical; is-outlier) from the model's probabilities.

    Cheap at any size (no nearest-neighbour search), with Datalab's rule for pred_probs: an outlier scores below
    0.13 x the median score.
    """
    from cleanlab.datalab.internal.issue_manager.outlier import OutlierIssueManager
    from cleanlab.outlier import OutOfDistribution

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        scores = np.asarray(OutOfDistribution().fit_score(pred_probs=pred_probs, labels=labels, verbose=False),
                            dtype=np.float64)
    threshold = OutlierIssueManager.DEFAULT_THRESHOLDS["pred_probs"] * float(np.median(scores))
    return scores, scores < threshold


# ---------------------------------------------------------------------------------------------------- annotators


def _votes(annotations: pd.DataFrame) -> pd.DataFrame:
    """One label per (document, annotator): the latest one; reviews and label-less rows left out."""
    ann = annotations[annotations["label"].notna()]
    if "origin" in ann.columns:
        ann = ann[ann["origin"] != "review"]
    if "id" in ann.columns:
        ann = ann.sort_values("id")
    return ann.drop_duplicates(["document_id", "annotator"], keep="last")[["document_id", "annotator", "label"]]


def annotation_fingerprints(annotations: pd.DataFrame) -> pd.Series:
    """Per document: a hash of its (annotator, label) votes, so a stored consensus is used only while they hold."""
    votes = _votes(annotations)
    if votes.empty:
        return pd.Series(dtype=object)
    keyed = (votes["annotator"].astype(str) + "\t" + votes["label"].astype(str)).to_numpy()
    frame = pd.DataFrame({"document_id": votes["document_id"].to_numpy(), "k": keyed}).sort_values(
        ["document_id", "k"])
    return frame.groupby("document_id")["k"].agg(
        lambda s: hashlib.sha1("\n".join(s).encode("utf-8")).hexdigest()[:16])


def _no_consensus() -> tuple[pd.DataFrame, pd.DataFrame]:
    return (pd.DataFrame(columns=["document_id", "label", "consensus_quality", "annotator_agreement",
                                  "n_annotators", "majority_label", "fingerprint"]),
            pd.DataFrame(columns=["annotator", "quality", "agreement_with_consensus", "worst_class", "n_labeled"]))


def multiannotator_consensus(
    annotations: pd.DataFrame,
    pred_probs: np.ndarray,
    *,
    document_ids: Sequence[int],
    classes: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CROWDLAB over the documents with two or more annotators (reviews excluded: a review overrides anyway).

    `pred_probs` rows follow `document_ids`. Returns (per document: document_id, label, consensus_quality,
    annotator_agreement, n_annotators, majority_label, fingerprint) and (per annotator: annotator, quality,
    agreement_with_consensus, worst_class, n_labeled). Both empty when no document has two annotators.
    """
    from cleanlab.multiannotator import get_label_quality_multiannotator

    empty = _no_consensus()
    votes = _votes(annotations)
    row_of = pd.Series(np.arange(len(document_ids)), index=pd.Index(np.asarray(document_ids, dtype=np.int64)))
    votes = votes[votes["document_id"].astype(np.int64).isin(row_of.index) & votes["label"].isin(set(classes))]
    n_ann = votes.groupby("document_id")["annotator"].nunique()
    multi = n_ann.index[n_ann >= 2]
    if len(multi) == 0:
        return empty
    votes = votes[votes["document_id"].isin(multi)]
    code = {c: i for i, c in enumerate(classes)}
    matrix = votes.assign(code=votes["label"].map(code)).pivot(index="document_id", columns="annotator",
                                                                values="code")
    matrix = matrix.loc[:, matrix.notna().any()]
    rows = row_of.loc[matrix.index.astype(np.int64)].to_numpy()
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        try:
            res = get_label_quality_multiannotator(matrix.astype(float), pred_probs[rows], verbose=False)
        except (ValueError, AssertionError) as exc:
            raise ModelError(f"CROWDLAB could not run on {len(matrix)} multi-annotated documents: {exc}") from exc
    quality = res["label_quality"]
    counts = votes.groupby(["document_id", "label"]).size().reset_index(name="n").sort_values(
        ["document_id", "n"], ascending=[True, False])
    majority = counts.drop_duplicates("document_id").set_index("document_id")["label"]
    prints = annotation_fingerprints(votes)
    docs = pd.DataFrame({
        "document_id": matrix.index.astype(np.int64),
        "label": [classes[int(c)] for c in quality["consensus_label"].to_numpy()],
        "consensus_quality": quality["consensus_quality_score"].to_numpy(dtype=float),
        "annotator_agreement": quality["annotator_agreement"].to_numpy(dtype=float),
        "n_annotators": quality["num_annotations"].to_numpy(dtype=int),
    })
    docs["majority_label"] = docs["document_id"].map(majority)
    docs["fingerprint"] = docs["document_id"].map(prints)
    stats = res["annotator_stats"]
    people = pd.DataFrame({
        "annotator": stats.index.astype(str),
        "quality": stats["annotator_quality"].to_numpy(dtype=float),
        "agreement_with_consensus": stats["agreement_with_consensus"].to_numpy(dtype=float),
        "worst_class": [classes[int(c)] if pd.notna(c) else None for c in stats["worst_class"]],
        "n_labeled": stats["num_examples_labeled"].to_numpy(dtype=int),
    }).sort_values("quality").reset_index(drop=True)
    return docs.reset_index(drop=True), people


def apply_crowdlab(labels: pd.DataFrame, annotations: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """Replace majority labels by stored CROWDLAB consensus labels where the document's votes are unchanged.

    `labels`: `curation.consensus.consensus_labels` output; `annotations`: what it was computed from; `stored`:
    document_id, label, fingerprint (e.g. `store.audit.crowdlab_labels`). Reviewed labels are left alone; the
    agreement becomes the share of votes for the new label and ties are settled.
    """
    if labels.empty or stored is None or stored.empty:
        return labels
    stored = stored[stored["label"].notna()].drop_duplicates("document_id", keep="last")
    now = annotation_fingerprints(annotations[annotations["document_id"].isin(stored["document_id"])])
    keep = stored[stored["fingerprint"].notna()
                  & (stored["document_id"].map(now) == stored["fingerprint"])].set_index("document_id")["label"]
    out = labels.copy()
    hit = out["document_id"].isin(keep.index) & (out["label_source"] != "reviewed")
    if not hit.any():
        return out
    out.loc[hit, "label"] = out.loc[hit, "document_id"].map(keep)
    votes = _votes(annotations[annotations["document_id"].isin(out.loc[hit, "document_id"])])
    share = votes.groupby(["document_id", "label"]).size()
    pairs = list(zip(out.loc[hit, "document_id"], out.loc[hit, "label"], strict=True))
    n_for = np.array([share.get(p, 0) for p in pairs], dtype=float)
    out.loc[hit, "agreement"] = n_for / out.loc[hit, "n_annotations"].to_numpy(dtype=float)
    out.loc[hit, "tie"] = False
    return out


# ---------------------------------------------------------------------------------------------------- the audit


def audit_labels(
    inputs: Any,
    labels: Sequence[str],
    *,
    classes: Sequence[str] | None = None,
    groups: Sequence[Any] | None = None,
    trusted: np.ndarray | None = None,
    annotations: pd.DataFrame | None = None,
    document_ids: Sequence[int] | None = None,
    folds: int = 5,
    seed: int = 0,
    mode: str = "fast",
    classifier: str = "lda",
    c: float | None = None,
    device: str = "cpu",
    model: str | None = None,
    filter_by: str = FILTER_BY,
    classifier_options: dict[str, Any] | None = None,
) -> AuditResult:
    """The whole audit of one labeled set, in memory.

    `inputs`: embeddings (fast) or texts (finetune); `labels`: each document's training label; `classes`: the label
    set (default: the labels seen); `groups`: near-duplicate group per document (None where it has none);
    `trusted`: documents whose label a person confirmed (a review): never flagged. With `annotations` (document_id,
    annotator, label, origin) and `document_ids`, documents with two or more annotators get CROWDLAB's consensus
    as the label that is audited (the model is trained on `labels`, their majority).
    """
    t0 = time.perf_counter()
    seen = {str(x) for x in labels}
    if annotations is not None and len(annotations):
        seen |= {str(x) for x in annotations["label"].dropna()}
    classes = sorted(seen) if classes is None else list(classes)
    code = {c_: i for i, c_ in enumerate(classes)}
    unknown = sorted({str(x) for x in labels} - set(code))
    if unknown:
        raise InputError(f"Labels {unknown[:5]} are not in the label set.", hint="pass classes that cover them")
    y = np.fromiter((code[str(x)] for x in labels), dtype=np.int64, count=len(labels))
    present = np.unique(y)
    if len(present) < 2:
        raise InputError(
            f"An audit needs labels of at least two classes; found {len(present)} among {len(y)} documents.",
            hint="label documents of more than one class first",
        )
    probs, info = out_of_sample_probs(inputs, y, len(classes), folds=folds, seed=seed, mode=mode,
                                      classifier=classifier, c=c, device=device, model=model,
                                      classifier_options=classifier_options)
    t1 = time.perf_counter()
    trusted = np.zeros(len(y), dtype=bool) if trusted is None else np.asarray(trusted, dtype=bool)
    consensus, people = _no_consensus()
    if annotations is not None and document_ids is not None and len(annotations):
        consensus, people = multiannotator_consensus(annotations, probs, document_ids=document_ids,
                                                     classes=classes)
        if len(consensus):
            row_of = pd.Series(np.arange(len(y)), index=pd.Index(np.asarray(document_ids, dtype=np.int64)))
            rows = row_of.loc[consensus["document_id"].to_numpy(dtype=np.int64)].to_numpy()
            swap = ~trusted[rows]
            y = y.copy()
            y[rows[swap]] = consensus["label"].map(code).to_numpy(dtype=np.int64)[swap]
    flagged, quality = find_issues(y, probs, filter_by=filter_by)
    noise = float(flagged.mean())
    flagged &= ~trusted
    if groups is not None:
        in_conflict, nd_flag, group_label = near_duplicate_conflicts(np.asarray(list(groups), dtype=object), y,
                                                                     probs)
        nd_flag &= ~trusted
    else:
        in_conflict = nd_flag = np.zeros(len(y), dtype=bool)
        group_label = np.full(len(y), -1, dtype=np.int64)
    out_score, is_out = outliers(probs, y)
    info["cleanlab_seconds"] = round(time.perf_counter() - t1, 3)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    info["filter_by"] = filter_by
    return AuditResult(
        classes=classes, given=y, pred_probs=probs, label_quality=quality, suggested=probs.argmax(axis=1),
        near_duplicate_conflict=in_conflict, near_duplicate_flag=nd_flag,
        group_label=group_label, outlier_score=out_score, is_outlier=is_out, is_label_issue=flagged,
        estimated_noise_rate=noise, consensus=consensus, annotators=people, info=info,
    )
