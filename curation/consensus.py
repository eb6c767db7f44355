"""The training label of each document, from all its annotations.

Why one function: sampling, audits and exports must agree on what a document's label is. Precedence:
a reviewed label (origin "review") wins; else the majority of the current annotations (Label Studio and imported
alike: one vote per annotation); ties are flagged for adjudication and resolved deterministically (the label
seen first) so downstream code always has a label. `label_source` says where the label came from: `reviewed`,
`consensus` (at least one human annotation from Label Studio), or `imported` (only labels from ingested files).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["consensus_labels", "training_labels"]

_COLUMNS = ["document_id", "label", "label_source", "agreement", "n_annotations", "n_annotators", "tie"]


def consensus_labels(annotations: pd.DataFrame) -> pd.DataFrame:
    """One row per document: label, label_source, agreement (share of votes for the label), tie flag.

    `annotations` needs columns document_id, annotator, label, origin (as `store.documents.annotations_frame`).
    """
    if annotations.empty:
        return pd.DataFrame(columns=_COLUMNS)
    ann = annotations[annotations["label"].notna()].copy()
    ann["order"] = range(len(ann))
    reviewed = ann[ann["origin"] == "review"].sort_values("order").groupby("document_id").tail(1)
    votes = ann[ann["origin"] != "review"]
    counts = (
        votes.groupby(["document_id", "label"], sort=False)
        .agg(n=("label", "size"), first=("order", "min"))
        .reset_index()
        .sort_values(["document_id", "n", "first"], ascending=[True, False, True])
    )
    by_doc = votes.groupby("document_id")
    totals = pd.DataFrame({
        "n_annotations": by_doc["label"].size(),
        "n_annotators": by_doc["annotator"].nunique(),
        "human": votes["origin"].ne("import").groupby(votes["document_id"]).any(),
    })
    top = counts.groupby("document_id").head(2).copy()
    top["rank"] = top.groupby("document_id").cumcount()
    best = top[top["rank"] == 0].set_index("document_id")
    second = top[top["rank"] == 1].set_index("document_id")["n"]
    out = best[["label", "n"]].join(totals)
    out["tie"] = second.reindex(out.index).eq(out["n"]).fillna(False).astype(bool)
    out["agreement"] = out["n"] / out["n_annotations"]
    out["label_source"] = out["human"].map({True: "consensus", False: "imported"})
    out = out.reset_index()[["document_id", "label", "label_source", "agreement", "n_annotations", "n_annotators",
                             "tie"]]
    if not reviewed.empty:
        rev = reviewed.set_index("document_id")["label"]
        hit = out["document_id"].isin(rev.index)
        out.loc[hit, "label"] = out.loc[hit, "document_id"].map(rev)
        out.loc[hit, "label_source"] = "reviewed"
        out.loc[hit, "tie"] = False
        only_reviewed = rev[~rev.index.isin(out["document_id"])]
        if len(only_reviewed):
            extra = pd.DataFrame({"document_id": only_reviewed.index, "label": only_reviewed.values,
                                  "label_source": "reviewed", "agreement": 1.0, "n_annotations": 0,
                                  "n_annotators": 0, "tie": False})
            out = pd.concat([out, extra], ignore_index=True)
    return out.sort_values("document_id").reset_index(drop=True)


def training_labels(
    store: Any,
    *,
    domain: str | None = None,
    source: str | None = None,
    min_agreement: float | None = None,
    method: str = "crowdlab",
) -> pd.DataFrame:
    """Consensus labels of the store's documents (optionally only those with agreement >= min_agreement).

    `method="crowdlab"`: where the latest audit stored a CROWDLAB consensus for a document with several annotators
    and its votes have not changed since, that label replaces the majority (a review still wins); otherwise, and
    with `method="majority"`, the majority vote.
    """
    from store.documents import annotations_frame

    annotations = annotations_frame(store, domain=domain, source=source)
    labels = consensus_labels(annotations)
    if method == "crowdlab" and not labels.empty:
        from curation.label_quality import apply_crowdlab
        from store.audit import crowdlab_labels

        labels = apply_crowdlab(labels, annotations, crowdlab_labels(store, domain=domain))
    elif method not in ("crowdlab", "majority"):
        raise ValueError(f"unknown consensus method {method!r}; use 'crowdlab' or 'majority'")
    if min_agreement is not None and not labels.empty:
        labels = labels[labels["agreement"] >= min_agreement].reset_index(drop=True)
    return labels
