"""Active-learning records: model versions, selections, predictions, and which documents are already pending.

Why selections and predictions are rows: a selection says why a document was sent to annotators (strategy, score,
model, seed, round) so that later audits can ask whether a strategy paid off; predictions feed Label Studio
pre-annotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pandas as pd
from sqlalchemy import Table, func, select, union

from store.engine import Store, insert_ignore
from store.models import Document, ModelVersion, Prediction, Selection, Task

__all__ = [
    "document_domains",
    "pending_document_ids",
    "sample_round",
    "record_model_version",
    "record_selections",
    "record_predictions",
    "selections_frame",
    "predictions_frame",
    "model_versions_frame",
]

_IN_CHUNK = 5000


def document_domains(store: Store) -> list[str]:
    """Domains that have at least one document."""
    with store.connect() as conn:
        return sorted(str(d) for d in conn.execute(select(Document.domain).distinct()).scalars())


def pending_document_ids(store: Store, *, domain: str) -> set[int]:
    """Documents of `domain` already selected by an earlier sample run or already sent to Label Studio as tasks.

    The caller removes those that have a training label; what remains is waiting for annotators and must not be
    selected again.
    """
    selected = select(Selection.document_id).join(Document, Document.id == Selection.document_id).where(
        Document.domain == domain
    )
    tasked = select(Task.document_id).join(Document, Document.id == Task.document_id).where(Document.domain == domain)
    with store.connect() as conn:
        return {int(x) for x in conn.execute(union(selected, tasked)).scalars()}


def sample_round(store: Store, *, domain: str) -> int:
    """How many earlier sample runs selected documents in `domain` (the next run's round number)."""
    with store.connect() as conn:
        return int(
            conn.execute(select(func.count(func.distinct(Selection.run_id))).where(Selection.domain == domain)).scalar()
            or 0
        )


def record_model_version(
    store: Store,
    *,
    version: str,
    domain: str | None,
    encoder: str | None,
    mode: str,
    labels: Sequence[str],
    params: dict[str, Any],
    metrics: dict[str, Any],
    run_id: int | None,
) -> bool:
    """Store a model version once (the version id is deterministic); True when it was new."""
    row = {"version": version, "domain": domain, "encoder": encoder, "mode": mode, "labels": list(labels),
           "params": params, "metrics": metrics, "run_id": run_id}
    with store.connect() as conn:
        return insert_ignore(conn, cast(Table, ModelVersion.__table__), [row], conflict=["version"]) > 0


def record_selections(store: Store, rows: Sequence[dict[str, Any]]) -> int:
    """Rows with run_id, document_id, domain, strategy, score, rank, model_version, seed, round."""
    with store.connect() as conn:
        return insert_ignore(conn, cast(Table, Selection.__table__), list(rows), conflict=["run_id", "document_id"])


def record_predictions(store: Store, rows: Sequence[dict[str, Any]]) -> int:
    """Rows with document_id, model_version, label, score, probs (one per document and model version)."""
    with store.connect() as conn:
        return insert_ignore(conn, cast(Table, Prediction.__table__), list(rows),
                             conflict=["document_id", "model_version"])


def selections_frame(store: Store, *, run_id: int | None = None, domain: str | None = None) -> pd.DataFrame:
    cols = ["run_id", "document_id", "domain", "strategy", "score", "rank", "model_version", "seed", "round"]
    q = select(*(getattr(Selection, c) for c in cols)).order_by(Selection.run_id, Selection.rank)
    if run_id is not None:
        q = q.where(Selection.run_id == run_id)
    if domain is not None:
        q = q.where(Selection.domain == domain)
    with store.connect() as conn:
        return pd.DataFrame(conn.execute(q).mappings().all(), columns=cols)


def predictions_frame(
    store: Store, *, document_ids: Sequence[int] | None = None, model_version: str | None = None
) -> pd.DataFrame:
    """Predictions (newest first per document when no model version is given): for pre-annotations."""
    cols = ["document_id", "model_version", "label", "score", "probs", "created_at"]
    base = select(*(getattr(Prediction, c) for c in cols))
    if model_version is not None:
        base = base.where(Prediction.model_version == model_version)
    frames = []
    with store.connect() as conn:
        if document_ids is None:
            frames.append(pd.DataFrame(conn.execute(base).mappings().all(), columns=cols))
        else:
            ids = [int(i) for i in document_ids]
            for i in range(0, len(ids), _IN_CHUNK):
                q = base.where(Prediction.document_id.in_(ids[i : i + _IN_CHUNK]))
                frames.append(pd.DataFrame(conn.execute(q).mappings().all(), columns=cols))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    if model_version is None and not df.empty:
        df = df.sort_values(["document_id", "created_at"], ascending=[True, False]).drop_duplicates("document_id")
    return df.reset_index(drop=True)


def model_versions_frame(store: Store, *, domain: str | None = None) -> pd.DataFrame:
    cols = ["version", "domain", "encoder", "mode", "labels", "params", "metrics", "run_id", "created_at"]
    q = select(*(getattr(ModelVersion, c) for c in cols)).order_by(ModelVersion.id)
    if domain is not None:
        q = q.where(ModelVersion.domain == domain)
    with store.connect() as conn:
        return pd.DataFrame(conn.execute(q).mappings().all(), columns=cols)
