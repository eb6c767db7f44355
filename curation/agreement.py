"""Inter-annotator agreement: Cohen's kappa per pair, Fleiss' kappa, Krippendorff's alpha, with bootstrap intervals.

Why these three: Cohen's kappa says which pairs of annotators disagree; Fleiss' kappa and Krippendorff's alpha
(nominal) summarise the whole project, alpha also with missing ratings (not every annotator sees every task).
Intervals come from a seeded bootstrap over documents (resampled with replacement), so a report is reproducible.

Fleiss' kappa here allows a varying number of ratings per document (documents with fewer than two ratings carry no
agreement information and are left out): P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)), P = mean P_i,
p_j = sum_i n_ij / sum_i n_i, P_e = sum_j p_j^2, kappa = (P - P_e) / (1 - P_e). With the same number of ratings per
document this is exactly Fleiss (1971). Per label: the kappa of "this label or not" (Fleiss' category kappa).
The consensus label is the majority (ties flagged for adjudication), as in `curation.consensus`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "Ratings",
    "ratings_from_frame",
    "cohen_kappa",
    "fleiss_kappa",
    "krippendorff_alpha",
    "bootstrap_ci",
    "agreement_report",
]


@dataclass(frozen=True)
class Ratings:
    """Documents x annotators, each cell a label index or -1 (not rated)."""

    matrix: np.ndarray
    documents: list[int]
    annotators: list[str]
    labels: list[str]

    def counts(self, items: np.ndarray | None = None) -> np.ndarray:
        """Documents x labels: how many annotators gave each label."""
        m = self.matrix if items is None else self.matrix[items]
        out = np.zeros((m.shape[0], len(self.labels)), dtype=np.int64)
        rows, cols = np.nonzero(m >= 0)
        np.add.at(out, (rows, m[rows, cols]), 1)
        return out


def ratings_from_frame(frame: pd.DataFrame) -> Ratings:
    """From annotations (document_id, annotator, label): one rating per annotator and document (the newest)."""
    df = frame.dropna(subset=["label"])
    if "updated_at" in df.columns:
        df = df.sort_values(["updated_at", "id"] if "id" in df.columns else ["updated_at"], kind="stable")
    df = df.drop_duplicates(["document_id", "annotator"], keep="last")
    documents = sorted(int(d) for d in df["document_id"].unique())
    annotators = sorted(str(a) for a in df["annotator"].unique())
    labels = sorted(str(x) for x in df["label"].unique())
    m = np.full((len(documents), len(annotators)), -1, dtype=np.int64)
    di = {d: i for i, d in enumerate(documents)}
    ai = {a: i for i, a in enumerate(annotators)}
    li = {x: i for i, x in enumerate(labels)}
    for d, a, lab in zip(df["document_id"], df["annotator"], df["label"], strict=True):
        m[di[int(d)], ai[str(a)]] = li[str(lab)]
    return Ratings(matrix=m, documents=documents, annotators=annotators, labels=labels)


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two raters on the same items (NaN when undefined: fewer than 2 items or no variation)."""
    if len(a) < 2:
        return math.nan
    from sklearn.metrics import cohen_kappa_score

    if len(set(a.tolist()) | set(b.tolist())) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(a, b))


def _kappa_fast(a: np.ndarray, b: np.ndarray, n_labels: int) -> float:
    """Cohen's kappa from a confusion matrix (same value as sklearn's, for the bootstrap's thousands of calls)."""
    if len(a) < 2:
        return math.nan
    conf = np.bincount(a * n_labels + b, minlength=n_labels * n_labels).reshape(n_labels, n_labels) / len(a)
    p_o = np.trace(conf)
    p_e = float(conf.sum(axis=1) @ conf.sum(axis=0))
    if math.isclose(p_e, 1.0):
        return math.nan
    return float((p_o - p_e) / (1 - p_e))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from a documents x labels count matrix (documents with < 2 ratings are ignored)."""
    counts = np.asarray(counts, dtype=np.float64)
    n_i = counts.sum(axis=1)
    keep = n_i >= 2
    counts, n_i = counts[keep], n_i[keep]
    if len(counts) == 0:
        return math.nan
    p_i = ((counts * (counts - 1)).sum(axis=1)) / (n_i * (n_i - 1))
    p_bar = p_i.mean()
    p_j = counts.sum(axis=0) / n_i.sum()
    p_e = float((p_j**2).sum())
    if math.isclose(p_e, 1.0):
        return math.nan
    return float((p_bar - p_e) / (1 - p_e))


def krippendorff_alpha(matrix: np.ndarray) -> float:
    """Krippendorff's alpha (nominal) from a documents x annotators matrix of label indexes (-1 = missing)."""
    import krippendorff

    data = matrix.T.astype(np.float64)
    data[data < 0] = np.nan
    pairable = (~np.isnan(data)).sum(axis=0) >= 2
    data = data[:, pairable]
    if data.shape[1] == 0 or len(np.unique(data[~np.isnan(data)])) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))


def bootstrap_ci(
    stat: Callable[[np.ndarray], float], n_items: int, *, n_boot: int = 1000, seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float | None, float | None]:
    """Percentile interval of `stat(item indexes)` over bootstrap resamples of the items (None if undefined)."""
    if n_items < 2 or n_boot < 1:
        return None, None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        v = stat(rng.integers(0, n_items, n_items))
        if not math.isnan(v):
            values.append(v)
    if len(values) < max(10, n_boot // 10):
        return None, None
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def _num(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)


def _with_ci(value: float, ci: tuple[float | None, float | None]) -> dict[str, float | None]:
    lo, hi = ci
    return {"value": _num(value), "ci_low": None if lo is None else _num(lo),
            "ci_high": None if hi is None else _num(hi)}


def agreement_report(
    frame: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Everything `curate agreement` prints, from annotations with document_id, annotator, label (and origin)."""
    from curation.consensus import consensus_labels

    r = ratings_from_frame(frame)
    m = r.matrix
    n_docs, n_ann = m.shape
    multi = np.nonzero((m >= 0).sum(axis=1) >= 2)[0]
    mm = m[multi]

    pairs: list[dict[str, Any]] = []
    for i in range(n_ann):
        for j in range(i + 1, n_ann):
            both = (mm[:, i] >= 0) & (mm[:, j] >= 0)
            a, b = mm[both, i], mm[both, j]

            def pair_stat(idx: np.ndarray, a: np.ndarray = a, b: np.ndarray = b) -> float:
                return _kappa_fast(a[idx], b[idx], len(r.labels))

            k = cohen_kappa(a, b)
            ci = bootstrap_ci(pair_stat, len(a), n_boot=n_boot, seed=seed, confidence=confidence)
            stats = _with_ci(k, ci)
            pairs.append({"annotator_a": r.annotators[i], "annotator_b": r.annotators[j], "n_items": int(both.sum()),
                          "observed_agreement": _num(float((a == b).mean())) if len(a) else None,
                          "kappa": stats["value"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"]})

    counts = r.counts(multi)
    fleiss = fleiss_kappa(counts)
    fleiss_ci = bootstrap_ci(lambda idx: fleiss_kappa(counts[idx]), len(multi), n_boot=n_boot, seed=seed,
                             confidence=confidence)
    alpha = krippendorff_alpha(mm)
    alpha_ci = bootstrap_ci(lambda idx: krippendorff_alpha(mm[idx]), len(multi), n_boot=min(n_boot, 1000),
                            seed=seed, confidence=confidence)

    per_label = []
    all_counts = r.counts()
    for j, lab in enumerate(r.labels):
        binary = np.stack([counts[:, j], counts.sum(axis=1) - counts[:, j]], axis=1)
        kj = fleiss_kappa(binary)
        def label_stat(idx: np.ndarray, b: np.ndarray = binary) -> float:
            return fleiss_kappa(b[idx])

        ci = bootstrap_ci(label_stat, len(multi), n_boot=n_boot, seed=seed, confidence=confidence)
        per_label.append({"label": lab, "n_ratings": int(all_counts[:, j].sum()), **_with_ci(kj, ci)})

    per_annotator = []
    for i, name in enumerate(r.annotators):
        rated = mm[:, i] >= 0
        agree = total = 0
        for row in mm[rated]:
            others = np.delete(row, i)
            others = others[others >= 0]
            if len(others) == 0:
                continue
            vals, cnt = np.unique(others, return_counts=True)
            if (cnt == cnt.max()).sum() > 1:
                continue  # the others tie: no majority to compare with
            total += 1
            agree += int(vals[cnt.argmax()] == row[i])
        kappas = [p["kappa"] for p in pairs if name in (p["annotator_a"], p["annotator_b"]) and p["kappa"] is not None]
        per_annotator.append({"annotator": name, "n_items": int((m[:, i] >= 0).sum()), "n_shared": int(rated.sum()),
                              "agreement_with_others": _num(agree / total) if total else None,
                              "mean_pairwise_kappa": _num(float(np.mean(kappas))) if kappas else None})

    cons_in = frame.dropna(subset=["label"]).copy()
    if "origin" not in cons_in.columns:
        cons_in["origin"] = "labelstudio"
    cons = consensus_labels(cons_in.sort_values("id") if "id" in cons_in.columns else cons_in)
    consensus = [
        {"document_id": int(row.document_id), "label": row.label, "agreement": _num(float(row.agreement)),
         "n_annotations": int(row.n_annotations), "tie": bool(row.tie)}
        for row in cons.itertuples()
    ]
    return {
        "n_documents": n_docs,
        "n_documents_multi": len(multi),
        "n_annotators": n_ann,
        "annotators": r.annotators,
        "labels": r.labels,
        "bootstrap": {"n": n_boot, "seed": seed, "confidence": confidence},
        "cohen_kappa": pairs,
        "fleiss_kappa": _with_ci(fleiss, fleiss_ci),
        "krippendorff_alpha": _with_ci(alpha, alpha_ci),
        "per_label": per_label,
        "per_annotator": per_annotator,
        "consensus": consensus,
        "ties": [c["document_id"] for c in consensus if c["tie"]],
    }
