"""Label quality in memory: flips found, near-duplicate conflicts, outliers, CROWDLAB consensus, annotator quality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curation.errors import InputError
from curation.label_quality import (
    annotation_fingerprints,
    apply_crowdlab,
    audit_labels,
    choose_c,
    find_issues,
    multiannotator_consensus,
    near_duplicate_conflicts,
    out_of_sample_probs,
    outliers,
)


def clusters(n_per: int = 50, k: int = 6, dim: int = 32, spread: float = 0.3, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters (a stand-in for sentence embeddings of k intents)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim))
    y = np.repeat(np.arange(k), n_per)
    x = centers[y] + spread * rng.normal(size=(len(y), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def flip(y: np.ndarray, k: int, rate: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(y)) < rate
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, k, int(flipped.sum()))) % k
    return noisy, flipped


@pytest.mark.parametrize("classifier", ["lda", "logreg"])
def test_obvious_flips_are_found(classifier: str) -> None:
    x, y = clusters()
    noisy, flipped = flip(y, 6, 0.1)
    res = audit_labels(x, [f"intent_{k}" for k in noisy], classifier=classifier)
    found = res.is_label_issue
    recall = (found & flipped).sum() / flipped.sum()
    precision = (found & flipped).sum() / max(found.sum(), 1)
    assert recall >= 0.9 and precision >= 0.8, (recall, precision)
    assert res.classes == [f"intent_{k}" for k in range(6)]
    assert ((res.label_quality >= 0) & (res.label_quality <= 1)).all()
    assert res.label_quality[flipped].mean() < 0.5 * res.label_quality[~flipped].mean()
    assert (res.suggested[flipped] == y[flipped]).mean() >= 0.9  # the suggestion is the true label
    assert 0.05 <= res.estimated_noise_rate <= 0.2
    assert res.pred_probs.shape == (len(y), 6) and np.allclose(res.pred_probs.sum(axis=1), 1, atol=1e-4)


def test_clean_labels_yield_few_issues() -> None:
    x, y = clusters(spread=0.2, seed=3)
    res = audit_labels(x, [str(k) for k in y])
    assert res.is_label_issue.sum() <= 3


def test_probabilities_are_out_of_sample() -> None:
    """A document whose label is unique to it gets a low probability for it: its own label never trained the model
    that scored it (in-sample, the model would have fit it)."""
    x, y = clusters(n_per=20, k=3, seed=5)
    y = y.copy()
    y[0] = 3  # the only document of class 3
    probs, info = out_of_sample_probs(x, y, 4, folds=5)
    assert probs[0, 3] < 0.05
    assert info["model"] == "lda" and 0 < info["shrinkage"] < 1 and info["temperature"] > 0


def test_choose_c_walks_up_until_the_loss_rises() -> None:
    x, y = clusters(n_per=30, k=4, seed=2)
    best, losses = choose_c(x, y, 4, grid=(0.01, 0.1, 1.0, 10.0, 100.0))
    assert best in losses and losses[best] == min(losses.values())
    assert list(losses) == sorted(losses)
    keys = list(losses)
    assert all(losses[a] > losses[b] for a, b in zip(keys, keys[1:-1], strict=False))  # only the last rose


def test_too_few_documents_or_classes_is_an_input_error() -> None:
    x, y = clusters(n_per=3, k=2)
    with pytest.raises(InputError, match="at least 10 labeled"):
        audit_labels(x[:6], ["a", "b"] * 3)
    x, _ = clusters(n_per=10, k=2)
    with pytest.raises(InputError, match="two classes"):
        audit_labels(x, ["a"] * len(x))


def test_find_issues_quality_is_self_confidence() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.05, 0.95]] * 5)
    labels = np.array([0, 1, 1, 0] * 5)
    mask, quality = find_issues(labels, probs)
    assert np.allclose(quality, probs[np.arange(len(labels)), labels])
    assert mask[3::4].all() and not mask[0::4].any() and not mask[1::4].any()


def test_near_duplicate_conflicts_flag_the_member_labeled_unlike_its_group() -> None:
    probs = np.array([[0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.5, 0.5], [0.3, 0.7], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 0, 0, 1])
    groups = np.array([7, 7, 7, None, 9, 9], dtype=object)
    in_conflict, flagged, group_label = near_duplicate_conflicts(groups, labels, probs)
    assert in_conflict.tolist() == [True, True, True, False, True, True]
    # group 7: two votes and the model for class 0; group 9: one vote each, the model decides for class 1
    assert flagged.tolist() == [False, False, True, False, True, False]
    assert group_label.tolist() == [0, 0, 0, -1, 1, 1]
    none = near_duplicate_conflicts(np.array([None] * 6, dtype=object), labels, probs)
    assert not none[0].any() and not none[1].any()


def test_outliers_are_the_documents_the_model_cannot_place() -> None:
    rng = np.random.default_rng(0)
    probs = np.full((200, 4), 0.01)
    labels = rng.integers(0, 4, 200)
    probs[np.arange(200), labels] = 0.97
    probs[:3] = 0.25  # no idea at all
    scores, is_out = outliers(probs, labels)
    assert is_out[:3].all() and not is_out[3:].any()
    assert scores[:3].max() < scores[3:].min()


# ---------------------------------------------------------------------------------------------------- annotators

def votes(rows: list[tuple[int, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"id": i + 1, "document_id": d, "annotator": a, "label": lab, "origin": "labelstudio"}
                         for i, (d, a, lab) in enumerate(rows)])


def crowd_case() -> tuple[pd.DataFrame, np.ndarray, list[int], list[str], dict[int, str]]:
    """30 documents, three annotators: alice and bob mostly right, carol guesses. Document 0 is a 1:1 tie between
    alice and carol that the model settles; document 1 a 2:1 majority the model disagrees with weakly."""
    rng = np.random.default_rng(0)
    classes = ["neg", "neu", "pos"]
    truth = {d: classes[d % 3] for d in range(30)}
    rows: list[tuple[int, str, str]] = []
    for d in range(30):
        for who, acc in (("alice", 0.95), ("bob", 0.9), ("carol", 0.3)):
            right = rng.random() < acc
            rows.append((d, who, truth[d] if right else classes[(d + 1) % 3]))
    rows = [r for r in rows if not (r[0] == 0 and r[1] == "bob")]
    rows = [r if r[:2] not in {(0, "alice")} else (0, "alice", truth[0]) for r in rows]
    rows = [r if r[:2] not in {(0, "carol")} else (0, "carol", classes[1]) for r in rows]
    probs = np.full((30, 3), 0.1)
    for d in range(30):
        probs[d, d % 3] = 0.8
    return votes(rows), probs, list(range(30)), classes, truth


def test_crowdlab_consensus_and_annotator_quality() -> None:
    ann, probs, ids, classes, truth = crowd_case()
    docs, people = multiannotator_consensus(ann, probs, document_ids=ids, classes=classes)
    assert len(docs) == 30 and set(docs["n_annotators"]) <= {2, 3}
    got = dict(zip(docs["document_id"], docs["label"], strict=True))
    assert got[0] == truth[0]  # the tie: the model and alice's record settle it
    assert np.mean([got[d] == truth[d] for d in ids]) >= 0.95
    assert ((docs["consensus_quality"] >= 0) & (docs["consensus_quality"] <= 1)).all()
    q = dict(zip(people["annotator"], people["quality"], strict=True))
    assert q["carol"] < q["bob"] and q["carol"] < q["alice"]
    assert people["annotator"].iloc[0] == "carol"  # worst first
    assert set(people.columns) >= {"quality", "agreement_with_consensus", "worst_class", "n_labeled"}


def test_crowdlab_skips_single_annotator_documents_and_reviews() -> None:
    ann = votes([(1, "alice", "a"), (2, "alice", "b"), (2, "bob", "b")])
    ann.loc[len(ann)] = {"id": 9, "document_id": 1, "annotator": "lead", "label": "b", "origin": "review"}
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    docs, people = multiannotator_consensus(ann, probs, document_ids=[1, 2], classes=["a", "b"])
    assert docs["document_id"].tolist() == [2]
    docs, people = multiannotator_consensus(ann[ann["document_id"] == 1], probs, document_ids=[1, 2],
                                            classes=["a", "b"])
    assert docs.empty and people.empty


def test_audit_uses_crowdlab_consensus_as_the_audited_label() -> None:
    x, y = clusters(n_per=40, k=3, seed=4)
    ids = list(range(100, 100 + len(y)))
    names = ["a", "b", "c"]
    rows = []
    for i, d in enumerate(ids[:30]):
        true = names[y[i]]
        wrong = names[(y[i] + 1) % 3]
        # two careless votes against one careful: majority is wrong on the first 10 documents
        rows += [(d, "careful", true), (d, "sloppy1", wrong if i < 10 else true),
                 (d, "sloppy2", wrong if i < 10 else true)]
    ann = votes(rows)
    majority = [names[k] for k in y]
    for i in range(10):
        majority[i] = names[(y[i] + 1) % 3]
    res = audit_labels(x, majority, annotations=ann, document_ids=ids)
    assert len(res.consensus) == 30 and set(res.annotators["annotator"]) == {"careful", "sloppy1", "sloppy2"}
    # where CROWDLAB sided with the model and the careful annotator, the audited label is the consensus
    crowd = dict(zip(res.consensus["document_id"], res.consensus["label"], strict=True))
    for i, d in enumerate(ids[:30]):
        assert names[res.given[i]] == crowd[d]


def test_fingerprints_ignore_order_and_reviews() -> None:
    a = votes([(1, "x", "p"), (1, "y", "q")])
    b = votes([(1, "y", "q"), (1, "x", "p")])
    b.loc[len(b)] = {"id": 50, "document_id": 1, "annotator": "lead", "label": "z", "origin": "review"}
    assert annotation_fingerprints(a)[1] == annotation_fingerprints(b)[1]
    c = votes([(1, "x", "p"), (1, "y", "p")])
    assert annotation_fingerprints(a)[1] != annotation_fingerprints(c)[1]


def test_apply_crowdlab_only_while_votes_are_unchanged() -> None:
    from curation.consensus import consensus_labels

    ann = votes([(1, "x", "p"), (1, "y", "q"), (2, "x", "p"), (2, "y", "q"), (3, "x", "p"), (3, "y", "q")])
    ann.loc[len(ann)] = {"id": 99, "document_id": 3, "annotator": "lead", "label": "p", "origin": "review"}
    labels = consensus_labels(ann)
    assert labels.set_index("document_id").loc[1, "label"] == "p" and bool(labels["tie"].iloc[0])
    prints = annotation_fingerprints(ann)
    stored = pd.DataFrame({"document_id": [1, 2, 3], "label": ["q", "q", "q"],
                           "fingerprint": [prints[1], "stale", prints[3]]})
    out = apply_crowdlab(labels, ann, stored).set_index("document_id")
    assert out.loc[1, "label"] == "q" and not out.loc[1, "tie"] and out.loc[1, "agreement"] == 0.5
    assert out.loc[2, "label"] == "p"  # votes changed since the audit: majority stays
    assert out.loc[3, "label"] == "p" and out.loc[3, "label_source"] == "reviewed"  # a review always wins
    assert apply_crowdlab(labels, ann, stored.iloc[0:0]).equals(labels)


def test_finetune_mode_gives_out_of_sample_probabilities(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    """The optional fine-tune mode runs end to end (a tiny random BERT, one epoch: shapes, not accuracy)."""
    texts = [f"{w} message number {i}" for i in range(12) for w in ("refund", "card")]
    labels = ["refund", "card"] * 12
    res = audit_labels(texts, labels, mode="finetune", model=str(tiny_bert), folds=2,
                       classifier_options={"epochs": 1, "batch_size": 8})
    assert res.pred_probs.shape == (24, 2) and np.allclose(res.pred_probs.sum(axis=1), 1, atol=1e-4)
    assert res.info["mode"] == "finetune" and res.label_quality.shape == (24,)
