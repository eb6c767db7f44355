"""The runs table: every command records what it did, how long it took, and whether it worked."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from store.engine import Store
from store.models import Run

__all__ = ["start_run", "finish_run", "list_runs", "last_run", "mark_dead_runs", "pid_alive"]

_HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead_runs(store: Store) -> int:
    """Runs left `running` by a process of this host that no longer exists become `interrupted`.

    Why: a killed command cannot finish its own run row; the next command tidies up, so `curate runs` never shows
    a run as running forever.
    """
    with store.session() as s:
        stale = [
            (r, r.params["_pid"]) for r in s.scalars(select(Run).where(Run.status == "running"))
            if isinstance(r.params, dict) and r.params.get("_host") == _HOST
            and isinstance(r.params.get("_pid"), int) and r.params["_pid"] != os.getpid()
            and not pid_alive(r.params["_pid"])
        ]
        for r, pid in stale:
            r.status = "interrupted"
            r.error = f"process {pid} ended before the run finished"
            r.finished_at = datetime.now(UTC)
        return len(stale)


def start_run(store: Store, *, kind: str, params: dict[str, Any] | None = None, parent_id: int | None = None) -> int:
    """Record a started run (with this process's pid and host, so a killed run can be recognised later)."""
    mark_dead_runs(store)
    with store.session() as s:
        run = Run(kind=kind, status="running", params={**(params or {}), "_pid": os.getpid(), "_host": _HOST},
                  parent_id=parent_id, started_at=datetime.now(UTC))
        s.add(run)
        s.flush()
        return int(run.id)


def finish_run(
    store: Store, run_id: int, *, status: str, stats: dict[str, Any] | None = None, error: str | None = None
) -> None:
    now = datetime.now(UTC)
    with store.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            return
        started = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=UTC)
        s.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status=status, stats=stats or {}, error=error, finished_at=now,
                    seconds=(now - started).total_seconds())
        )


def _as_dict(r: Run) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind,
        "status": r.status,
        "parent_id": r.parent_id,
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "seconds": r.seconds,
        "params": r.params,
        "stats": r.stats,
        "error": r.error,
    }


def list_runs(store: Store, *, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    with store.session() as s:
        q = select(Run).order_by(Run.id.desc()).limit(limit)
        if kind:
            q = q.where(Run.kind == kind)
        return [_as_dict(r) for r in s.scalars(q)]


def last_run(store: Store, *, kind: str, status: str | None = "ok") -> dict[str, Any] | None:
    with store.session() as s:
        q = select(Run).where(Run.kind == kind).order_by(Run.id.desc()).limit(1)
        if status:
            q = q.where(Run.status == status)
        r = s.scalars(q).first()
        return _as_dict(r) if r else None
