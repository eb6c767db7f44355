"""Label Studio bookkeeping in the store: projects, pushed tasks, pull watermarks, pulled annotations.

Why the writes look the way they do: a push records its tasks only after the server accepted them, and a pull
writes a batch of annotations together with its watermark, each in one transaction; so a process killed at any
point leaves the store either before or after a batch, never in between. Unique constraints (project+document for
tasks, Label Studio annotation id for annotations) make every write idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Table, and_, bindparam, exists, func, insert, select, update

from store.engine import Store, insert_ignore
from store.models import (
    Annotation,
    AnnotationHistory,
    Document,
    LSProject,
    Prediction,
    Selection,
    Source,
    SyncState,
    Task,
)

__all__ = [
    "LS_ORIGINS",
    "upsert_project",
    "get_project",
    "known_projects",
    "max_task_id",
    "count_tasks",
    "record_tasks",
    "task_rows",
    "selection_domains",
    "push_candidates",
    "documents_for_tasks",
    "latest_predictions",
    "domain_labels",
    "get_state",
    "set_state",
    "apply_pull_batch",
    "tasks_with_live_annotations",
    "project_annotations_frame",
    "annotation_history",
]

#: Origins of annotations that come from Label Studio projects (labeling and review projects).
LS_ORIGINS = ("labelstudio", "review")
_IN_CHUNK = 2000


def _chunks(values: Sequence[Any], n: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), n):
        yield values[i : i + n]


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# ---------------------------------------------------------------------------------------------------- projects
def upsert_project(
    store: Store,
    *,
    server_url: str,
    project_id: int,
    title: str,
    domain: str | None,
    kind: str,
    labels: Sequence[str] | None,
    label_config_hash: str | None,
) -> int:
    """The store's id (`project_ref`) of a Label Studio project, created or refreshed."""
    t = cast(Table, LSProject.__table__)
    values = {"title": title, "domain": domain, "kind": kind, "labels": list(labels) if labels is not None else None,
              "label_config_hash": label_config_hash}
    with store.connect() as conn:
        insert_ignore(conn, t, [{"server_url": server_url, "project_id": project_id, **values}],
                      conflict=["server_url", "project_id"])
        conn.execute(update(t).where(t.c.server_url == server_url, t.c.project_id == project_id).values(**values))
        return int(conn.execute(select(t.c.id).where(t.c.server_url == server_url,
                                                     t.c.project_id == project_id)).scalar_one())


def _project_dict(row: Any) -> dict[str, Any]:
    return {"ref": int(row.id), "server_url": row.server_url, "project_id": int(row.project_id), "title": row.title,
            "domain": row.domain, "kind": row.kind, "labels": row.labels, "label_config_hash": row.label_config_hash}


def get_project(store: Store, *, server_url: str, project_id: int) -> dict[str, Any] | None:
    with store.connect() as conn:
        row = conn.execute(select(LSProject).where(LSProject.server_url == server_url,
                                                   LSProject.project_id == project_id)).first()
    return _project_dict(row) if row else None


def known_projects(store: Store, *, server_url: str | None = None) -> list[dict[str, Any]]:
    q = select(LSProject).order_by(LSProject.id)
    if server_url:
        q = q.where(LSProject.server_url == server_url)
    with store.connect() as conn:
        return [_project_dict(r) for r in conn.execute(q)]


# ---------------------------------------------------------------------------------------------------- tasks
def max_task_id(store: Store, project_ref: int) -> int:
    """The highest Label Studio task id recorded for the project (0 when none): tasks above it are unknown."""
    with store.connect() as conn:
        return int(conn.execute(select(func.max(Task.ls_task_id)).where(Task.project_ref == project_ref)).scalar()
                   or 0)


def count_tasks(store: Store, project_ref: int) -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Task).where(Task.project_ref == project_ref))
                   .scalar() or 0)


def record_tasks(store: Store, rows: Sequence[dict[str, Any]]) -> int:
    """Record pushed tasks (project_ref, document_id, ls_task_id, priority, payload, run_id) in one transaction."""
    if not rows:
        return 0
    with store.connect() as conn:
        return _record_tasks(conn, rows)


def _record_tasks(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    full = [{"priority": None, "payload": None, "run_id": None, **r} for r in rows]
    return insert_ignore(conn, Task.__table__, full, conflict=["project_ref", "document_id"])


def task_rows(store: Store, project_ref: int) -> pd.DataFrame:
    """document_id, ls_task_id, priority of every task recorded for the project."""
    with store.connect() as conn:
        rows = conn.execute(
            select(Task.document_id, Task.ls_task_id, Task.priority).where(Task.project_ref == project_ref)
            .order_by(Task.id)
        ).all()
    return pd.DataFrame(rows, columns=["document_id", "ls_task_id", "priority"])


# ---------------------------------------------------------------------------------------------------- push reads
def _selection_filter(q: Any, *, domain: str | None, source: str | None, document_ids: Sequence[int] | None) -> Any:
    if domain:
        q = q.where(Document.domain == domain)
    if source:
        q = q.where(Document.source_id.in_(select(Source.id).where(Source.name == source)))
    if document_ids is not None:
        q = q.where(Document.id.in_([int(i) for i in document_ids]))
    return q


def selection_domains(
    store: Store, *, domain: str | None = None, source: str | None = None, document_ids: Sequence[int] | None = None
) -> list[str]:
    """Distinct domains of the documents a push would select (a project holds one domain)."""
    q = _selection_filter(select(Document.domain).distinct(), domain=domain, source=source,
                          document_ids=document_ids)
    with store.connect() as conn:
        return sorted(str(d) for d in conn.execute(q).scalars())


def _labeled() -> Any:
    a = Annotation
    return exists().where(a.document_id == Document.id, a.deleted_at.is_(None), a.was_cancelled.is_(False),
                          a.label.is_not(None))


def push_candidates(
    store: Store,
    *,
    project_ref: int,
    domain: str,
    source: str | None = None,
    include_labeled: bool = False,
    order: str = "priority",
    limit: int | None = None,
    seed: int = 0,
    document_ids: Sequence[int] | None = None,
) -> tuple[list[tuple[int, float | None]], int]:
    """(document id, priority) of documents to send, in sending order, and how many were already in the project.

    Priority order: documents picked by active learning first (their latest selection: newest run, then rank), then
    the rest by id. `random` is a seeded shuffle; `oldest` is the order they were stored in (document ids grow in that
    order; no index on `created_at` is kept, see migration 0003).
    """
    in_project = exists().where(Task.project_ref == project_ref, Task.document_id == Document.id)
    with store.connect() as conn:
        has_tasks = conn.execute(select(Task.id).where(Task.project_ref == project_ref).limit(1)).first() is not None

        def selected(q: Any) -> Any:
            q = _selection_filter(q, domain=domain, source=source, document_ids=document_ids)
            return q if include_labeled else q.where(~_labeled())

        already = 0
        if has_tasks:
            already = int(conn.execute(select(func.count()).select_from(
                selected(select(Document.id)).where(in_project).subquery())).scalar() or 0)
        if order == "priority":
            latest = (select(Selection.document_id, func.max(Selection.id).label("sid"))
                      .group_by(Selection.document_id).subquery())
            q = selected(
                select(Document.id, Selection.score)
                .select_from(Document)
                .outerjoin(latest, latest.c.document_id == Document.id)
                .outerjoin(Selection, Selection.id == latest.c.sid)
            ).where(~in_project).order_by(Selection.run_id.is_(None), Selection.run_id.desc(), Selection.rank,
                                          Document.id)
            if limit:
                q = q.limit(limit)
            rows = [(int(r[0]), None if r[1] is None else float(r[1])) for r in conn.execute(q)]
        elif order == "oldest":
            q = selected(select(Document.id)).where(~in_project).order_by(Document.id)
            if limit:
                q = q.limit(limit)
            rows = [(int(i), None) for i in conn.execute(q).scalars()]
        elif order == "random":
            q = selected(select(Document.id)).where(~in_project).order_by(Document.id)
            ids = np.fromiter(conn.execute(q).scalars(), dtype=np.int64)
            np.random.default_rng(seed).shuffle(ids)
            rows = [(int(i), None) for i in (ids[:limit] if limit else ids)]
        else:
            raise ValueError(f"unknown order {order!r}")
    return rows, already


def documents_for_tasks(store: Store, doc_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """What a task shows and carries: masked text, source, external id, cluster, group, domain."""
    out: dict[int, dict[str, Any]] = {}
    with store.connect() as conn:
        for part in _chunks(list(doc_ids)):
            rows = conn.execute(
                select(Document.id, Document.text, Document.domain, Document.external_id, Document.cluster_id,
                       Document.group_key, Document.content_hash, Source.name.label("source"))
                .join(Source, Source.id == Document.source_id)
                .where(Document.id.in_(part))
            ).mappings()
            out.update({int(r["id"]): dict(r) for r in rows})
    return out


def latest_predictions(store: Store, doc_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The newest prediction per document: model_version, label, score."""
    out: dict[int, dict[str, Any]] = {}
    with store.connect() as conn:
        for part in _chunks(list(doc_ids)):
            latest = (select(func.max(Prediction.id).label("pid")).where(Prediction.document_id.in_(part))
                      .group_by(Prediction.document_id).subquery())
            rows = conn.execute(
                select(Prediction.document_id, Prediction.model_version, Prediction.label, Prediction.score)
                .where(Prediction.id.in_(select(latest.c.pid)))
            ).mappings()
            out.update({int(r["document_id"]): dict(r) for r in rows})
    return out


def domain_labels(store: Store, domain: str) -> list[str]:
    """Distinct labels of the domain's current annotations (any origin), sorted."""
    a = Annotation
    q = (select(a.label).distinct().join(Document, Document.id == a.document_id)
         .where(Document.domain == domain, a.label.is_not(None), a.deleted_at.is_(None), a.was_cancelled.is_(False)))
    with store.connect() as conn:
        return sorted(str(x) for x in conn.execute(q).scalars())


# ---------------------------------------------------------------------------------------------------- sync state
def get_state(store: Store, project_ref: int, key: str) -> str | None:
    with store.connect() as conn:
        return conn.execute(select(SyncState.value).where(SyncState.project_ref == project_ref,
                                                          SyncState.key == key)).scalar()


def set_state(conn: Connection, project_ref: int, key: str, value: str | None) -> None:
    t = cast(Table, SyncState.__table__)
    insert_ignore(conn, t, [{"project_ref": project_ref, "key": key, "value": value}], conflict=["project_ref", "key"])
    conn.execute(update(t).where(t.c.project_ref == project_ref, t.c.key == key)
                 .values(value=value, updated_at=datetime.now(UTC)))


# ---------------------------------------------------------------------------------------------------- pull writes
def _same(old: Any, new: dict[str, Any]) -> bool:
    return (
        _utc(old.updated_at) == _utc(new["updated_at"])
        and json.dumps(old.result, sort_keys=True) == json.dumps(new["result"], sort_keys=True)
        and bool(old.was_cancelled) == bool(new["was_cancelled"])
        and old.annotator == new["annotator"]
        and old.lead_time == new["lead_time"]
        and old.deleted_at is None
    )


def apply_pull_batch(
    store: Store,
    *,
    project_ref: int,
    project_id: int,
    origin: str,
    tasks: Sequence[dict[str, Any]],
    watermark_key: str,
    watermark: str | None,
    run_id: int | None = None,
) -> dict[str, int]:
    """Upsert the annotations of a page of changed tasks and move the watermark, in one transaction.

    Each task: ls_task_id, document_id (from the task's meta, used when the store has no task row, e.g. after a
    push killed before its commit), annotations (normalized: ls_annotation_id, annotator, label, labels, lead_time,
    was_cancelled, result, created_at, updated_at). A changed annotation keeps its previous version in
    annotation_history; one missing from its task is marked deleted.
    """
    now = datetime.now(UTC)
    stats = {"annotations_new": 0, "annotations_updated": 0, "annotations_deleted": 0, "annotations_unchanged": 0,
             "tasks_unknown": 0, "tasks_recorded": 0}
    a = cast(Table, Annotation.__table__)
    h = cast(Table, AnnotationHistory.__table__)
    with store.connect() as conn:
        task_ids = [int(t["ls_task_id"]) for t in tasks]
        doc_of: dict[int, int] = {}
        for part in _chunks(task_ids):
            doc_of.update({int(tid): int(did) for tid, did in conn.execute(  # type: ignore[arg-type]
                select(Task.ls_task_id, Task.document_id).where(Task.project_ref == project_ref,
                                                                Task.ls_task_id.in_(part)))})
        missing = [t for t in tasks if int(t["ls_task_id"]) not in doc_of and t.get("document_id") is not None]
        if missing:
            known_docs: set[int] = set()
            for part in _chunks([int(t["document_id"]) for t in missing]):
                known_docs.update(int(i) for i in conn.execute(select(Document.id).where(Document.id.in_(part)))
                                  .scalars())
            new_rows: list[dict[str, Any]] = [{"project_ref": project_ref, "document_id": int(t["document_id"]),
                                                "ls_task_id": int(t["ls_task_id"]), "run_id": run_id}
                                               for t in missing if int(t["document_id"]) in known_docs]
            stats["tasks_recorded"] = _record_tasks(conn, new_rows)
            doc_of.update({int(r["ls_task_id"]): int(r["document_id"]) for r in new_rows})

        fetched = {int(ann["ls_annotation_id"]): (int(t["ls_task_id"]), ann) for t in tasks for ann in t["annotations"]}
        existing: dict[int, Any] = {}
        for part in _chunks(task_ids):
            for row in conn.execute(
                select(a).where(a.c.ls_task_id.in_(part), a.c.project_id == project_id,
                                a.c.origin.in_(LS_ORIGINS))
            ):
                existing[int(row.ls_annotation_id)] = row
        lost = [i for i in fetched if i not in existing]
        for part in _chunks(lost):
            for row in conn.execute(select(a).where(a.c.ls_annotation_id.in_(part))):
                existing[int(row.ls_annotation_id)] = row

        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        for ann_id, (task_id, ann) in fetched.items():
            doc = doc_of.get(task_id)
            if doc is None:
                continue
            values = {"document_id": doc, "annotator": ann["annotator"], "label": ann["label"],
                      "labels": ann["labels"], "lead_time": ann["lead_time"], "was_cancelled": ann["was_cancelled"],
                      "result": ann["result"], "ls_task_id": task_id, "project_id": project_id,
                      "created_at": ann["created_at"], "updated_at": ann["updated_at"]}
            old = existing.get(ann_id)
            if old is None:
                inserts.append({**values, "origin": origin, "ls_annotation_id": ann_id, "version": 1,
                                "deleted_at": None, "occurrence_id": None, "run_id": run_id})
            elif _same(old, ann):
                stats["annotations_unchanged"] += 1
            else:
                history.append({"annotation_id": old.id, "version": old.version, "label": old.label,
                                "labels": old.labels, "result": old.result, "was_cancelled": old.was_cancelled,
                                "updated_at": old.updated_at, "replaced_at": now,
                                "reason": "restored" if old.deleted_at is not None else "updated"})
                updates.append({**{f"v_{k}": v for k, v in values.items()}, "b_id": old.id,
                                "v_version": int(old.version) + 1, "v_deleted_at": None, "v_run_id": run_id})
        seen_tasks = set(task_ids)
        deletions = [row for ann_id, row in existing.items()
                     if ann_id not in fetched and row.deleted_at is None and row.ls_task_id in seen_tasks
                     and row.project_id == project_id]
        for row in deletions:
            history.append({"annotation_id": row.id, "version": row.version, "label": row.label, "labels": row.labels,
                            "result": row.result, "was_cancelled": row.was_cancelled, "updated_at": row.updated_at,
                            "replaced_at": now, "reason": "deleted"})
        if inserts:
            stats["annotations_new"] = insert_ignore(conn, a, inserts, conflict=["ls_annotation_id"])
        if history:
            conn.execute(insert(h), history)
        if updates:
            cols = [k[2:] for k in updates[0] if k.startswith("v_")]
            conn.execute(update(a).where(a.c.id == bindparam("b_id")).values(**{c: bindparam(f"v_{c}") for c in cols}),
                         updates)
            stats["annotations_updated"] = len(updates)
        if deletions:
            conn.execute(update(a).where(a.c.id.in_([r.id for r in deletions])).values(deleted_at=now))
            stats["annotations_deleted"] = len(deletions)
        stats["tasks_unknown"] = sum(1 for t in task_ids if t not in doc_of)
        if watermark is not None:
            set_state(conn, project_ref, watermark_key, watermark)
    return stats


# ---------------------------------------------------------------------------------------------------- reads
def tasks_with_live_annotations(store: Store, *, project_id: int) -> set[int]:
    """Label Studio task ids for which the store holds current (not deleted) annotations of that project."""
    a = Annotation
    q = select(a.ls_task_id).distinct().where(a.project_id == project_id, a.origin.in_(LS_ORIGINS),
                                               a.deleted_at.is_(None), a.ls_task_id.is_not(None))
    with store.connect() as conn:
        return {int(t) for t in conn.execute(q).scalars() if t is not None}


def project_annotations_frame(store: Store, *, project_id: int, include_deleted: bool = False,
                              server_url: str | None = None) -> pd.DataFrame:
    """Annotations pulled from one Label Studio project (by its id), current versions."""
    a = Annotation
    q = select(a.id, a.document_id, a.annotator, a.label, a.labels, a.origin, a.lead_time, a.was_cancelled,
               a.ls_annotation_id, a.ls_task_id, a.project_id, a.version, a.created_at, a.updated_at, a.deleted_at
               ).where(a.project_id == project_id, a.origin.in_(LS_ORIGINS))
    if server_url is not None:
        refs = select(Task.ls_task_id).join(LSProject, LSProject.id == Task.project_ref).where(
            and_(LSProject.server_url == server_url, LSProject.project_id == project_id))
        q = q.where(a.ls_task_id.in_(refs))
    if not include_deleted:
        q = q.where(a.deleted_at.is_(None))
    cols = ["id", "document_id", "annotator", "label", "labels", "origin", "lead_time", "was_cancelled",
            "ls_annotation_id", "ls_task_id", "project_id", "version", "created_at", "updated_at", "deleted_at"]
    with store.connect() as conn:
        return pd.DataFrame(conn.execute(q.order_by(a.id)).mappings().all(), columns=cols)


def annotation_history(store: Store, *, ls_annotation_id: int) -> list[dict[str, Any]]:
    """Earlier versions of one pulled annotation, oldest first."""
    a, h = Annotation, AnnotationHistory
    q = (select(h.version, h.label, h.labels, h.was_cancelled, h.updated_at, h.reason)
         .join(a, a.id == h.annotation_id).where(a.ls_annotation_id == ls_annotation_id).order_by(h.id))
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]
