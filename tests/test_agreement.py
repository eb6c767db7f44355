"""Agreement statistics against values computed by hand and a textbook example."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from curation.agreement import (
    _kappa_fast,
    agreement_report,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    ratings_from_frame,
)

# Two annotators, ten documents: 4 x (A, A), 3 x (B, B), 2 x (A, B), 1 x (B, A).
X = ["A"] * 4 + ["B"] * 3 + ["A", "A", "B"]
Y = ["A"] * 4 + ["B"] * 3 + ["B", "B", "A"]
# By hand: p_o = 7/10; p_e = (6/10)(5/10) + (4/10)(5/10) = 1/2; Cohen = (0.7 - 0.5) / 0.5 = 0.4.
# Fleiss (2 ratings per item): P = 0.7; p_A = 11/20, p_B = 9/20; P_e = 0.505; kappa = 0.195 / 0.495 = 13/33.
# Krippendorff (nominal): o_AA = 8, o_BB = 6, o_AB = o_BA = 3, n = 20, n_A = 11, n_B = 9;
# D_o = 6/20, D_e = 2 * 11 * 9 / (20 * 19); alpha = 1 - D_o / D_e = 14/33.
COHEN, FLEISS, ALPHA = 0.4, 13 / 33, 14 / 33


def two_annotators() -> pd.DataFrame:
    rows = []
    for i, (x, y) in enumerate(zip(X, Y, strict=True)):
        rows.append({"id": 2 * i, "document_id": 100 + i, "annotator": "ann1@example.com", "label": x,
                     "origin": "labelstudio"})
        rows.append({"id": 2 * i + 1, "document_id": 100 + i, "annotator": "ann2@example.com", "label": y,
                     "origin": "labelstudio"})
    return pd.DataFrame(rows)


def test_hand_computed_values_for_two_annotators() -> None:
    rep = agreement_report(two_annotators(), n_boot=200, seed=1)
    (pair,) = rep["cohen_kappa"]
    assert pair["kappa"] == pytest.approx(COHEN)
    assert pair["observed_agreement"] == pytest.approx(0.7)
    assert pair["n_items"] == 10
    assert rep["fleiss_kappa"]["value"] == pytest.approx(FLEISS, abs=1e-6)
    assert rep["krippendorff_alpha"]["value"] == pytest.approx(ALPHA, abs=1e-6)
    for stat in (pair["ci_low"], rep["fleiss_kappa"]["ci_low"], rep["krippendorff_alpha"]["ci_low"]):
        assert stat is not None and stat < 0.4
    assert pair["ci_low"] <= COHEN <= pair["ci_high"]
    # Per label (two labels): "A or not" and "B or not" are the same split, so both equal Fleiss' kappa.
    assert [lab["value"] for lab in rep["per_label"]] == pytest.approx([FLEISS, FLEISS], abs=1e-6)
    assert {a["annotator"]: a["agreement_with_others"] for a in rep["per_annotator"]} == {
        "ann1@example.com": pytest.approx(0.7), "ann2@example.com": pytest.approx(0.7)}


def test_fleiss_textbook_example() -> None:
    # Fleiss (1971) as reproduced in most textbooks: 10 subjects, 14 raters, 5 categories; kappa = 0.210.
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-5)


def test_krippendorff_with_missing_ratings_by_hand() -> None:
    # Three coders, four units; coder c rates only units 0 and 1. Values: u0 = (0, 0, 0), u1 = (1, 1, 0),
    # u2 = (1, 1, -), u3 = (0, 1, -). Coincidences: u0 gives o_00 += 6/2; u1 gives o_11 += 2/2, o_10 = o_01 += 2/2;
    # u2 gives o_11 += 2; u3 gives o_01 = o_10 += 1. So o_00 = 3, o_11 = 3, o_01 = o_10 = 2; n = 10, n_0 = n_1 = 5.
    # D_o = 4/10; D_e = 2 * 5 * 5 / (10 * 9) = 50/90; alpha = 1 - 0.4 / (5/9) = 0.28.
    m = np.array([[0, 0, 0], [1, 1, 0], [1, 1, -1], [0, 1, -1]])
    assert krippendorff_alpha(m) == pytest.approx(0.28)


def test_undefined_statistics_are_nan_not_errors() -> None:
    assert math.isnan(cohen_kappa(np.array([1, 1]), np.array([1, 1])))
    assert math.isnan(fleiss_kappa(np.array([[2, 0], [2, 0]])))
    assert math.isnan(krippendorff_alpha(np.array([[0, -1], [1, -1]])))
    rep = agreement_report(pd.DataFrame({"id": [1], "document_id": [1], "annotator": ["a"], "label": ["x"]}))
    assert rep["fleiss_kappa"]["value"] is None and rep["cohen_kappa"] == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=2, max_size=40))
def test_fast_kappa_equals_sklearn(pairs: list[tuple[int, int]]) -> None:
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    ours = _kappa_fast(a, b, 4)
    theirs = cohen_kappa(a, b)
    if math.isnan(theirs):
        assert math.isnan(ours) or len(set(a) | set(b)) < 2
    else:
        assert ours == pytest.approx(float(cohen_kappa_score(a, b)), abs=1e-9)


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3, 200)
    b = np.where(rng.random(200) < 0.8, a, rng.integers(0, 3, 200))

    def stat(idx: np.ndarray) -> float:
        return _kappa_fast(a[idx], b[idx], 3)

    first = bootstrap_ci(stat, 200, n_boot=300, seed=7)
    assert first == bootstrap_ci(stat, 200, n_boot=300, seed=7)
    assert first != bootstrap_ci(stat, 200, n_boot=300, seed=8)
    lo, hi = first
    assert lo is not None and hi is not None and lo < stat(np.arange(200)) < hi
    assert hi - lo < 0.25


def test_consensus_is_the_majority_and_ties_are_flagged() -> None:
    frame = pd.DataFrame([
        {"id": 1, "document_id": 1, "annotator": "a", "label": "x"},
        {"id": 2, "document_id": 1, "annotator": "b", "label": "x"},
        {"id": 3, "document_id": 1, "annotator": "c", "label": "y"},
        {"id": 4, "document_id": 2, "annotator": "a", "label": "x"},
        {"id": 5, "document_id": 2, "annotator": "b", "label": "y"},
    ])
    rep = agreement_report(frame, n_boot=0)
    by_doc = {c["document_id"]: c for c in rep["consensus"]}
    assert by_doc[1]["label"] == "x" and not by_doc[1]["tie"] and by_doc[1]["agreement"] == pytest.approx(2 / 3)
    assert by_doc[2]["tie"] and rep["ties"] == [2]


def test_newest_rating_per_annotator_counts_once() -> None:
    frame = pd.DataFrame([
        {"id": 1, "document_id": 1, "annotator": "a", "label": "x", "updated_at": pd.Timestamp("2024-01-01")},
        {"id": 2, "document_id": 1, "annotator": "a", "label": "y", "updated_at": pd.Timestamp("2024-01-02")},
    ])
    r = ratings_from_frame(frame)
    assert r.matrix.tolist() == [[r.labels.index("y")]]
