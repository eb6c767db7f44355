"""Reads and writes for `curate export`: the rows to export, their labels' raw votes, group keys, open label
issues, model versions, and the export_versions table.

Why the reads come back as Arrow: an export reads every labeled document (a million rows and more), and a Python
object per value would dominate its run time. With the ADBC drivers installed (`adbc-driver-sqlite`,
`adbc-driver-postgresql`) the queries return Arrow directly. On SQLite (from 50,000 documents on) they run in child
processes, one per query and in parallel: a second SQLite library inside this process (ADBC bundles its own) would
break SQLite's file locking against the store's stdlib `sqlite3` connections (stale reads, then I/O errors).
Without the drivers, or for small stores, the same queries run through the store's own connection.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from typing import cast as cast_type

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Table, Text, and_, cast, exists, func, select, union
from sqlalchemy.engine import make_url

from curation.errors import StoreError
from store.engine import Store, insert_ignore
from store.models import Annotation, Document, ExportVersion, LabelIssue, ModelVersion, Occurrence, Prediction, Source

__all__ = [
    "RESOLVED_REVIEW_STATUSES",
    "export_inputs",
    "export_documents",
    "label_votes",
    "occurrence_group_keys",
    "open_label_issue_ids",
    "model_versions_used",
    "record_export_version",
    "list_export_versions",
]

#: A label issue whose review ended in one of these is no longer open (`--exclude-issues` keeps its document).
RESOLVED_REVIEW_STATUSES: tuple[str, ...] = (
    "resolved", "accepted", "confirmed", "rejected", "relabeled", "kept", "dismissed",
)


def _live_annotation() -> Any:
    a = Annotation
    return and_(a.deleted_at.is_(None), a.was_cancelled.is_(False), a.label.is_not(None))


def _scope(q: Any, *, domain: str | None, source: str | None) -> Any:
    if domain:
        q = q.where(Document.domain == domain)
    if source:
        q = q.where(Source.name == source)
    return q


_SQLITE_CHILD = r"""
import sys
import adbc_driver_sqlite.dbapi as dbapi
import pyarrow as pa

db, out = sys.argv[1], sys.argv[2]
sql = sys.stdin.read()
with dbapi.connect(db) as conn, conn.cursor() as cur:
    # SQLite has no column types: ADBC infers them from the first batch, so make that batch everything.
    cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "1000000000"})
    cur.execute(sql)
    table = cur.fetch_arrow_table()
with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
    writer.write_table(table)
"""


def _sql(store: Store, q: Any) -> str:
    return str(q.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    table = table.rename_columns(schema.names)
    return pa.table([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def _read_sqlite_children(
    store: Store, path: str, queries: Sequence[tuple[Any, pa.Schema]]
) -> list[pa.Table]:
    with tempfile.TemporaryDirectory(prefix="curate-read-") as tmp:
        procs = []
        for i, (q, _) in enumerate(queries):
            target = os.path.join(tmp, f"{i}.arrow")
            proc = subprocess.Popen([sys.executable, "-c", _SQLITE_CHILD, path, target], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            assert proc.stdin is not None
            proc.stdin.write(_sql(store, q))
            proc.stdin.close()
            procs.append((proc, target))
        tables = []
        for (proc, target), (_, schema) in zip(procs, queries, strict=True):
            err = proc.stderr.read() if proc.stderr else ""
            if proc.wait() != 0:
                raise StoreError(f"Reading the store {store.display_url} failed: {err.strip().splitlines()[-1:]}",
                                 hint="check the store opens (`curate status`); reinstall adbc-driver-sqlite")
            with pa.memory_map(target) as source:
                tables.append(_conform(pa.ipc.open_file(source).read_all(), schema))
        return tables


def _read_in_process(store: Store, q: Any, schema: pa.Schema) -> pa.Table:
    """Rows through the store's connection, column by column (the cyclic GC paused over millions of tuples)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        with store.connect() as conn:
            rows = conn.exec_driver_sql(_sql(store, q)).fetchall()
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
        del rows
        return pa.table([pa.array(c, type=f.type) for c, f in zip(cols, schema, strict=True)], schema=schema)
    finally:
        if enabled:
            gc.enable()


#: Below this many documents a child process costs more than it saves.
_CHILD_MIN_DOCUMENTS = 50_000


def _large(store: Store) -> bool:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Document)).scalar() or 0) >= _CHILD_MIN_DOCUMENTS


def _read(store: Store, queries: Sequence[tuple[Any, pa.Schema]]) -> list[pd.DataFrame]:
    """The queries' rows as DataFrames with the schemas' columns and types (strings Arrow-backed)."""
    url = make_url(store.url)
    tables: list[pa.Table] | None = None
    if (store.dialect == "sqlite" and url.database and url.database != ":memory:"
            and importlib.util.find_spec("adbc_driver_sqlite") is not None and _large(store)):
        tables = _read_sqlite_children(store, url.database, queries)
    elif store.dialect == "postgresql" and importlib.util.find_spec("adbc_driver_postgresql") is not None:
        import adbc_driver_postgresql.dbapi as pg_dbapi

        with pg_dbapi.connect(url.set(drivername="postgresql").render_as_string(hide_password=False)) as conn:
            tables = []
            for q, schema in queries:
                with conn.cursor() as cur:
                    cur.execute(_sql(store, q))
                    tables.append(_conform(cur.fetch_arrow_table(), schema))
    if tables is None:
        tables = [_read_in_process(store, q, schema) for q, schema in queries]
    mapper = {pa.large_string(): pd.StringDtype("pyarrow", na_value=np.nan)}.get
    return [t.to_pandas(types_mapper=mapper) for t in tables]


def _documents_query(
    *, domain: str | None, source: str | None, labeled_only: bool, time_key: str | None
) -> tuple[Any, pa.Schema]:
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
        q = q.where(exists().where(Annotation.document_id == d.id, _live_annotation()))
    return q.order_by(d.id), pa.schema(fields)


def _votes_query(*, domain: str | None, source: str | None) -> tuple[Any, pa.Schema]:
    a = Annotation
    q = select(a.document_id, a.annotator, a.label, a.origin).join(Document, Document.id == a.document_id)
    if source:
        q = q.join(Source, Source.id == Document.source_id)
    q = _scope(q.where(_live_annotation()), domain=domain, source=source).order_by(a.id)
    return q, pa.schema([pa.field("document_id", pa.int64()),
                         *(pa.field(n, pa.large_string()) for n in ("annotator", "label", "origin"))])


def _keys_query(*, domain: str | None, source: str | None) -> tuple[Any, pa.Schema]:
    o, d = Occurrence, Document
    q = select(o.document_id, o.group_key).join(d, d.id == o.document_id)
    if source:
        q = q.join(Source, Source.id == d.source_id)
    q = _scope(q.where(o.group_key.is_not(None)), domain=domain, source=source).distinct()
    return q, pa.schema([pa.field("document_id", pa.int64()), pa.field("group_key", pa.large_string())])


def export_inputs(
    store: Store,
    *,
    domain: str | None = None,
    source: str | None = None,
    labeled_only: bool = True,
    time_key: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(`export_documents`, `label_votes`, `occurrence_group_keys`) read together (in parallel where possible)."""
    docs, votes, keys = _read(store, [
        _documents_query(domain=domain, source=source, labeled_only=labeled_only, time_key=time_key),
        _votes_query(domain=domain, source=source),
        _keys_query(domain=domain, source=source),
    ])
    return docs, votes, keys


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
    return _read(store, [_documents_query(domain=domain, source=source, labeled_only=labeled_only,
                                          time_key=time_key)])[0]


def label_votes(store: Store, *, domain: str | None = None, source: str | None = None) -> pd.DataFrame:
    """Current labeled annotations (document_id, annotator, label, origin) in annotation-id order.

    The same rows as `store.documents.annotations_frame` keeps, with only the columns consensus needs.
    """
    return _read(store, [_votes_query(domain=domain, source=source)])[0]


def occurrence_group_keys(store: Store, *, domain: str | None = None, source: str | None = None) -> pd.DataFrame:
    """Distinct (document_id, group_key) over every occurrence of the documents in scope."""
    return _read(store, [_keys_query(domain=domain, source=source)])[0]


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
        return insert_ignore(conn, cast_type(Table, ExportVersion.__table__), [{
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
