"""The runs table: every command records what it did, how long it took, and whether it worked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from store.engine import Store
from store.models import Run

__all__ = ["start_run", "finish_run", "list_runs", "last_run"]


def start_run(store: Store, *, kind: str, params: dict[str, Any] | None = None, parent_id: int | None = None) -> int:
    with store.session() as s:
        run = Run(kind=kind, status="running", params=params or {}, parent_id=parent_id,
                  started_at=datetime.now(UTC))
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
