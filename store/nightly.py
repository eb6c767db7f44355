"""What the nightly run needs from the store: its lock, its bookkeeping in the runs table, and the report's series.

Why two kinds of lock: on SQLite the store is a file, so a file lock (the `filelock` package, an OS `flock`) beside it
covers every process that opens that file; on PostgreSQL several machines may share one database, so the lock is a
session-level advisory lock held by a dedicated connection for the whole night. Either lock dies with its process,
so a SIGKILLed night never leaves a stale lock behind.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url

from curation.errors import LockError
from store.engine import Store
from store.models import Annotation, Document, ExportVersion, LabelIssue, Run, Selection

__all__ = [
    "ADVISORY_LOCK_KEY",
    "lock_path",
    "nightly_lock",
    "mark_interrupted",
    "sample_runs_of_night",
    "selected_ids",
    "step_done_tonight",
    "last_nightly_start",
    "documents_since",
    "nightly_history",
    "annotations_series",
    "label_issue_counts",
    "latest_export_manifest",
]

#: Arbitrary but fixed: every `curate nightly` on one PostgreSQL database contends for this key.
ADVISORY_LOCK_KEY = 7_231_880_415


def lock_path(store: Store) -> Path | None:
    """`<sqlite file>.nightly.lock` beside the store; None for a server database (advisory lock instead)."""
    if store.dialect != "sqlite":
        return None
    database = make_url(store.url).database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve().with_name(Path(database).name + ".nightly.lock")


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started_at": datetime.now(UTC).isoformat()}


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (holder unknown)"
    return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started_at')}"


@contextmanager
def nightly_lock(store: Store) -> Iterator[dict[str, Any]]:
    """Hold the night's lock or raise `LockError` naming the holder; yields how the lock is held."""
    path = lock_path(store)
    if path is not None:
        yield from _file_lock(path)
    elif store.dialect == "postgresql":
        yield from _advisory_lock(store)
    else:
        yield {"kind": "none"}


def _file_lock(path: Path) -> Iterator[dict[str, Any]]:
    from filelock import FileLock, Timeout

    info_path = path.with_name(path.name + ".info")
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = None
        raise LockError(
            f"Another nightly run holds {path}: {_describe(info)}.",
            hint="wait for it to finish (`curate runs --kind nightly`); the lock is released when that process ends",
        ) from None
    try:
        info_path.write_text(json.dumps(_holder()), encoding="utf-8")
        yield {"kind": "file", "path": str(path)}
    finally:
        info_path.unlink(missing_ok=True)
        lock.release()


def _advisory_lock(store: Store) -> Iterator[dict[str, Any]]:
    conn = store.engine.connect()
    try:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}).scalar())
        conn.commit()
        if not got:
            holder = conn.execute(text(
                "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.objid = (CAST(:k AS bigint) & 4294967295) LIMIT 1"), {"k": ADVISORY_LOCK_KEY}).first()
            conn.commit()
            info = ({"pid": f"{holder[0]} (server backend)", "host": holder[1] or "local socket",
                     "started_at": holder[2]} if holder else None)
            raise LockError(
                f"Another nightly run holds the advisory lock {ADVISORY_LOCK_KEY} on this database: "
                f"{_describe(info)}.",
                hint="wait for it to finish (`curate runs --kind nightly`); the lock ends with that session",
            )
        try:
            yield {"kind": "advisory", "key": ADVISORY_LOCK_KEY}
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
            conn.commit()
    finally:
        conn.close()


def mark_interrupted(store: Store) -> int:
    """Runs of a killed night (nightly and its steps, still `running`) become `interrupted`; call under the lock."""
    with store.session() as s:
        res = s.execute(
            update(Run)
            .where(Run.status == "running", (Run.kind == "nightly") | Run.kind.like("nightly:%"))
            .values(status="interrupted", error="the process ended before the run finished",
                    finished_at=datetime.now(UTC))
        )
        return int(getattr(res, "rowcount", 0) or 0)


def sample_runs_of_night(store: Store, *, night: str) -> list[int]:
    """`sample` runs started inside this night's `nightly:sample` steps (by id window), finished or not.

    A night's sample step is the only writer between its own run row and the next nightly step's row (the lock
    guarantees it), so the `sample` runs with ids in that window are the night's selections, even when the process
    died before the step could note the inner run id.
    """
    with store.session() as s:
        steps = [int(r) for r in s.scalars(select(Run.id).where(Run.kind == "nightly:sample"))
                 if r is not None]
        if not steps:
            return []
        params = {int(i): p for i, p in s.execute(select(Run.id, Run.params).where(Run.id.in_(steps)))}
        steps = [i for i in steps if (params.get(i) or {}).get("night") == night]
        out: list[int] = []
        for step in steps:
            upper = s.scalar(select(func.min(Run.id)).where(Run.id > step, Run.kind.like("nightly%")))
            q = select(Run.id).where(Run.kind == "sample", Run.id > step)
            if upper is not None:
                q = q.where(Run.id < upper)
            out.extend(int(x) for x in s.scalars(q))
        return sorted(out)


def step_done_tonight(store: Store, *, step: str, night: str) -> int | None:
    """The id of an earlier `nightly:<step>` run of this night that ended ok, if any."""
    with store.session() as s:
        rows = s.execute(select(Run.id, Run.params).where(Run.kind == f"nightly:{step}", Run.status == "ok")
                         .order_by(Run.id.desc())).all()
    return next((int(i) for i, p in rows if (p or {}).get("night") == night), None)


def selected_ids(store: Store, run_ids: list[int], *, domain: str | None = None) -> list[int]:
    """Documents (of `domain`) selected by these sample runs, in rank order."""
    if not run_ids:
        return []
    q = select(Selection.document_id).where(Selection.run_id.in_(run_ids))
    if domain:
        q = q.where(Selection.domain == domain)
    with store.connect() as conn:
        rows = conn.execute(q.order_by(Selection.run_id, Selection.rank)).scalars()
        seen: dict[int, None] = {}
        for r in rows:
            seen.setdefault(int(r), None)
        return list(seen)


def last_nightly_start(store: Store) -> datetime | None:
    """When the last successful (or partly failed) night began: "newly ingested" means after it."""
    with store.session() as s:
        t = s.scalar(select(func.max(Run.started_at)).where(Run.kind == "nightly",
                                                            Run.status.in_(("ok", "failed"))))
    if t is not None and t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t


def documents_since(store: Store, *, since: datetime | None, domain: str | None = None) -> list[int]:
    """Ids of documents stored after `since` (all when None). A scan of the table, once a night: an index on
    `created_at` would cost every ingested row more than this saves (migration 0003)."""
    q = select(Document.id)
    if since is not None:
        q = q.where(Document.created_at > since)
    if domain:
        q = q.where(Document.domain == domain)
    with store.connect() as conn:
        return [int(x) for x in conn.execute(q).scalars()]


def nightly_history(store: Store, *, limit: int = 365) -> pd.DataFrame:
    """One row per night and step: night id, step kind, status, started_at, seconds, stats (dict), error."""
    with store.session() as s:
        parents = s.execute(select(Run.id, Run.started_at, Run.status, Run.params, Run.seconds)
                            .where(Run.kind == "nightly").order_by(Run.id.desc()).limit(limit)).all()
        ids = [int(p[0]) for p in parents]
        children = s.execute(select(Run.parent_id, Run.kind, Run.status, Run.seconds, Run.stats, Run.error)
                             .where(Run.parent_id.in_(ids))).all() if ids else []
    rows = [{"night_id": int(p[0]), "step": "nightly", "status": p[2], "started_at": p[1], "seconds": p[4],
             "stats": {}, "night": (p[3] or {}).get("night"), "error": None} for p in parents]
    by_parent = {int(p[0]): p for p in parents}
    for c in children:
        p = by_parent[int(c[0])]
        rows.append({"night_id": int(c[0]), "step": str(c[1]).split(":", 1)[-1], "status": c[2],
                     "started_at": p[1], "seconds": c[3], "stats": c[4] or {}, "night": (p[3] or {}).get("night"),
                     "error": c[5]})
    frame = pd.DataFrame(rows, columns=["night_id", "step", "status", "started_at", "seconds", "stats", "night",
                                        "error"])
    return frame.sort_values(["night_id", "step"]).reset_index(drop=True)


def annotations_series(store: Store) -> pd.DataFrame:
    """Live human annotations (not imports): document_id, annotator, label, created_at, lead_time, origin."""
    a = Annotation
    q = select(a.document_id, a.annotator, a.label, a.created_at, a.lead_time, a.origin).where(
        a.deleted_at.is_(None), a.origin != "import")
    with store.connect() as conn:
        rows = conn.execute(q).all()
    frame = pd.DataFrame(rows, columns=["document_id", "annotator", "label", "created_at", "lead_time", "origin"])
    if len(frame):
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def label_issue_counts(store: Store) -> pd.DataFrame:
    """Per audit run: when, issues found, and review outcomes (review_status counts)."""
    li = LabelIssue
    q = (select(Run.id, Run.started_at, li.is_label_issue, li.review_status, func.count())
         .join(Run, Run.id == li.run_id).group_by(Run.id, Run.started_at, li.is_label_issue, li.review_status))
    with store.connect() as conn:
        rows = conn.execute(q).all()
    return pd.DataFrame(rows, columns=["run_id", "started_at", "is_label_issue", "review_status", "n"])


def latest_export_manifest(store: Store) -> dict[str, Any] | None:
    with store.connect() as conn:
        row = conn.execute(select(ExportVersion.version, ExportVersion.manifest)
                           .order_by(ExportVersion.id.desc()).limit(1)).first()
    if row is None:
        return None
    return {"version": row[0], **(row[1] or {})}
