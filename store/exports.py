"""Reads and writes for `curate export`: the rows to export, their labels' raw votes, group keys, open label
issues, model versions, and the export_versions table.

Why raw Core queries returning only the needed columns, fetched as Arrow through ADBC where its drivers are installed
(`adbc-driver-sqlite`, `adbc-driver-postgresql`): an export reads every labeled document (a million rows and more),
and building a Python object per value would dominate its run time. Without the drivers the same queries run
through SQLAlchemy.
"""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Select, Text, and_, cast, exists, func, select, union
from sqlalchemy.engine import make_url

from store.engine import Store, insert_ignore
from store.models import Annotation, Document, ExportVersion, LabelIssue, ModelVersion, Occurrence, Prediction, Source

__all__ = [
    "RESOLVED_REVIEW_STATUSES",
    "export_documents",
    "label_votes",
    "occurrence_group_keys",
    "open_label_issue_ids",
    "model_versions_used",
    "record_export_version",
    "list_export_versions",
]

#: A label issue whose review ended in one of these is no longer open (`--exclude-issues` keeps its document).
RESOLVED_REVIEW_STATUSES: tuple[str, ...] = ("resolved", "accepted", "rejected", "relabeled", "kept", "dismissed")


def _live_annotation() -> Any:
    a = Annotation
    return and_(a.deleted_at.is_(None), a.was_cancelled.is_(False), a.label.is_not(None))


def _scope(q: Select[Any], *, domain: str | None, source: str | None) -> Select[Any]:
    if domain:
        q = q.where(Document.domain == domain)
    if source:
        q = q.where(Source.name == source)
    return q


def _adbc_connect(store: Store) -> Any:
    """An ADBC DB-API connection to the store, or None (driver not installed, in-memory SQLite, other backend)."""
    url = make_url(store.url)
    try:
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:":
                return None
            import adbc_driver_sqlite.dbapi as sqlite_dbapi

            return sqlite_dbapi.connect(url.database)
        if url.get_backend_name() == "postgresql":
            import adbc_driver_postgresql.dbapi as pg_dbapi

            return pg_dbapi.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    except ImportError:
        return None
    return None


def _arrow_query(store: Store, q: Select[Any], schema: pa.Schema) -> pa.Table | None:
    conn = _adbc_connect(store)
    if conn is None:
        return None
    sql = str(q.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    try:
        cur = conn.cursor()
        if store.dialect == "sqlite":
            # SQLite has no column types: ADBC infers them from the first batch, so make that batch everything.
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "1000000000"})
        cur.execute(sql)
        table = cur.fetch_arrow_table()
        cur.close()
    finally:
        conn.close()
    table = table.rename_columns(schema.names)
    return pa.table([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def _frame(store: Store, q: Select[Any], schema: pa.Schema) -> pd.DataFrame:
    """The query's rows as a DataFrame with the schema's columns and types (strings Arrow-backed)."""
    table = _arrow_query(store, q, schema)
    if table is None:
        enabled = gc.isenabled()
        gc.disable()  # millions of row tuples; the cyclic collector would rescan them again and again
        try:
            with store.connect() as conn:
                rows = conn.execute(q).all()
            cols = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
            table = pa.table([pa.array(c, type=f.type) for c, f in zip(cols, schema, strict=True)], schema=schema)
            del rows, cols
        finally:
            if enabled:
                gc.enable()
    return table.to_pandas(types_mapper={pa.large_string(): pd.StringDtype("pyarrow", na_value=np.nan)}.get)


def export_documents(
    store: Store,
    *,
    domain: str | None = None,
    source: str | None = None,
    labeled_only: bool = True,
    time_key: str | None = None,
) -> pd.DataFrame:
    """id, external_id, text (masked), content_hash, cluster_id, group_key, domain, source (name), ordered by id.

    `labeled_only`: only documents with at least one current label. `time_key`: add column `time`, the document's
    `created_at` for "created_at", else the value of that key in its `meta` JSON (as text; parse it yourself).
    """
    d = Document
    cols: list[Any] = [d.id, d.external_id, d.text, d.content_hash, d.cluster_id, d.group_key, d.domain,
                       Source.name]
    fields = [pa.field("id", pa.int64()), *(pa.field(n, pa.large_string()) for n in
              ("external_id", "text", "content_hash")), pa.field("cluster_id", pa.int64()),
              *(pa.field(n, pa.large_string()) for n in ("group_key", "domain", "source"))]
    if time_key:
        fields.append(pa.field("time", pa.large_string()))
        cols.append(cast(d.created_at if time_key == "created_at" else d.meta[time_key].as_string(), Text))
    q = select(*cols).join(Source, Source.id == d.source_id)
    q = _scope(q, domain=domain, source=source)
    if labeled_only:
        a = Annotation
        q = q.where(exists().where(a.document_id == d.id, _live_annotation()))
    return _frame(store, q.order_by(d.id), pa.schema(fields))


def label_votes(store: Store, *, domain: str | None = None, source: str | None = None) -> pd.DataFrame:
    """Current labeled annotations (document_id, annotator, label, origin) in annotation-id order.

    The same rows as `store.documents.annotations_frame` keeps, with only the columns consensus needs.
    """
    a = Annotation
    q = select(a.document_id, a.annotator, a.label, a.origin).join(Document, Document.id == a.document_id)
    if source:
        q = q.join(Source, Source.id == Document.source_id)
    q = _scope(q.where(_live_annotation()), domain=domain, source=source).order_by(a.id)
    return _frame(store, q, pa.schema([pa.field("document_id", pa.int64()),
                                       *(pa.field(n, pa.large_string()) for n in ("annotator", "label", "origin"))]))


def occurrence_group_keys(store: Store, *, domain: str | None = None, source: str | None = None) -> pd.DataFrame:
    """Distinct (document_id, group_key) over every occurrence of the documents in scope."""
    o, d = Occurrence, Document
    q = select(o.document_id, o.group_key).join(d, d.id == o.document_id)
    if source:
        q = q.join(Source, Source.id == d.source_id)
    q = _scope(q.where(o.group_key.is_not(None)), domain=domain, source=source).distinct()
    return _frame(store, q, pa.schema([pa.field("document_id", pa.int64()), pa.field("group_key", pa.large_string())]))


def open_label_issue_ids(store: Store, *, domain: str | None = None) -> np.ndarray:
    """Documents whose latest audit verdict is a label issue that no review has resolved yet."""
    li = LabelIssue
    latest = select(li.document_id, func.max(li.id).label("last_id")).group_by(li.document_id).subquery()
    q = (
        select(li.document_id)
        .join(latest, latest.c.last_id == li.id)
        .join(Document, Document.id == li.document_id)
        .where(li.is_label_issue.is_(True))
        .where(li.review_status.is_(None) | li.review_status.not_in(RESOLVED_REVIEW_STATUSES))
    )
    if domain:
        q = q.where(Document.domain == domain)
    with store.connect() as conn:
        return np.array(conn.execute(q).scalars().all(), dtype=np.int64)


def model_versions_used(store: Store, *, domain: str | None = None) -> list[str]:
    """Model versions that produced predictions for the domain's documents or were trained on it."""
    p = Prediction
    preds = select(p.model_version.label("v")).distinct()
    if domain:
        preds = preds.join(Document, Document.id == p.document_id).where(Document.domain == domain)
    trained = select(ModelVersion.version.label("v"))
    if domain:
        trained = trained.where(ModelVersion.domain == domain)
    with store.connect() as conn:
        return sorted({str(v) for v in conn.execute(union(preds, trained)).scalars() if v})


def record_export_version(
    store: Store, *, version: str, out: str, manifest: dict[str, Any], run_id: int | None
) -> bool:
    """Remember a written version (once per version); True if this call recorded it."""
    with store.connect() as conn:
        return insert_ignore(conn, ExportVersion.__table__, [{
            "version": version, "out": out, "manifest": manifest, "run_id": run_id, "created_at": datetime.now(UTC),
        }], conflict=["version"]) > 0


def list_export_versions(store: Store, *, limit: int = 50) -> list[dict[str, Any]]:
    """Recorded versions, newest first: version, out, run_id, created_at."""
    e = ExportVersion
    with store.connect() as conn:
        rows = conn.execute(
            select(e.version, e.out, e.run_id, e.created_at).order_by(e.id.desc()).limit(limit)
        ).mappings().all()
    return [dict(r) for r in rows]
