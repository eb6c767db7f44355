"""`curate pull`: bring annotations from a Label Studio project into the store, incrementally.

How "incremental" works (measured on Label Studio 1.23.2): creating, updating or deleting an annotation bumps its
task's `updated_at`. The pull asks the data manager for tasks with `updated_at >= cursor`, ordered by `updated_at`,
with only the fields it needs (annotations with result, annotator, lead time, times, cancelled flag), one page at a
time. Paging is by keyset (the cursor moves to the last `updated_at` seen), so a task updated during the pull moves
behind the cursor and is read again rather than skipped. Each page is committed with its watermark in one
transaction, so a killed pull resumes where the last commit left it. The next pull starts a few seconds
(`[labelstudio] pull_overlap_s`) before the stored watermark, to catch writes whose timestamp was taken before
their commit; re-reading them changes nothing.

Deleted annotations: an annotation the store holds for a changed task but that is no longer in the task is marked
deleted (its last version goes to annotation_history).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from curation.errors import ConfigError, LabelStudioError
from curation.labelconfig import FROM_NAME
from pipelines.ls_client import LS_DATETIME_FORMAT, LabelStudioClient
from pipelines.push import KILL_HOOK_ENV, default_title
from store import labelstudio as ls_store
from store.engine import Store

__all__ = [
    "WATERMARK_KEY",
    "TASK_FIELDS",
    "parse_ls_time",
    "format_ls_time",
    "normalize_annotation",
    "resolve_project",
    "pull",
]

WATERMARK_KEY = "pull_updated_at"
#: Task and (nested) annotation fields a pull asks for; `include` applies to both levels.
TASK_FIELDS = ("id", "updated_at", "meta", "annotations", "result", "completed_by", "lead_time", "was_cancelled",
               "created_at")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_ls_time(value: str | None) -> datetime | None:
    """Label Studio's ISO times (`...Z`, with or without microseconds) as aware UTC datetimes."""
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def format_ls_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime(LS_DATETIME_FORMAT)


def normalize_annotation(ann: dict[str, Any], users: dict[int, str], *, from_name: str = FROM_NAME) -> dict[str, Any]:
    """One Label Studio annotation as the store keeps it: annotator email, label(s), times, cancelled flag."""
    by = ann.get("completed_by")
    if isinstance(by, dict):
        annotator = by.get("email") or f"user:{by.get('id')}"
    else:
        annotator = users.get(int(by), f"user:{by}") if by is not None else "unknown"
    cancelled = bool(ann.get("was_cancelled"))
    labels: list[str] = []
    for item in ann.get("result") or []:
        if isinstance(item, dict) and item.get("from_name") == from_name and item.get("type") == "choices":
            labels.extend(str(c) for c in (item.get("value") or {}).get("choices") or [])
    return {
        "ls_annotation_id": int(ann["id"]),
        "annotator": annotator,
        "labels": labels,
        "label": labels[0] if len(labels) == 1 and not cancelled else None,
        "lead_time": float(ann["lead_time"]) if ann.get("lead_time") is not None else None,
        "was_cancelled": cancelled,
        "result": ann.get("result") or [],
        "created_at": parse_ls_time(ann.get("created_at")),
        "updated_at": parse_ls_time(ann.get("updated_at")),
    }


def resolve_project(store: Store, client: LabelStudioClient, *, config: Any, project: str | None,
                    domain: str | None) -> dict[str, Any]:
    """The server project to read: `--project` (title or id), else the default title of `--domain`, else the one
    project this store knows on that server. A missing one is an error naming those that exist."""
    if project is None and domain:
        project = default_title(config, domain)
    if project is None:
        known = ls_store.known_projects(store, server_url=client.url)
        if len(known) == 1:
            project = known[0]["title"]
        else:
            listing = ", ".join(f"{p['title']!r} (id {p['project_id']})" for p in known) or "none yet"
            raise ConfigError(
                f"Which Label Studio project? This store knows {len(known)} on {client.url}: {listing}.",
                hint="pass --project NAME (or --domain to use its default project)",
            )
    return client.require_project(project)


def _kill_hook(page_no: int) -> None:
    target = os.environ.get(KILL_HOOK_ENV)
    if target and target.isdigit() and page_no == int(target):
        os._exit(137)


def pull(
    store: Store,
    client: LabelStudioClient,
    *,
    config: Any,
    project: str | None = None,
    domain: str | None = None,
    full: bool = False,
    page_size: int | None = None,
    run_id: int | None = None,
) -> dict[str, Any]:
    """Fetch what changed since the last pull and upsert it; returns counts (see `curate pull --json`)."""
    t0 = time.perf_counter()
    ls_cfg = config.labelstudio
    found = resolve_project(store, client, config=config, project=project, domain=domain)
    project_id = int(found["id"])
    known = ls_store.get_project(store, server_url=client.url, project_id=project_id)
    if known is None:
        ref = ls_store.upsert_project(store, server_url=client.url, project_id=project_id, title=found["title"],
                                      domain=domain, kind="labeling", labels=None, label_config_hash=None)
        kind = "labeling"
    else:
        ref, kind = known["ref"], known["kind"]
    origin = "review" if kind == "review" else "labelstudio"
    users = client.users()

    stored = None if full else ls_store.get_state(store, ref, WATERMARK_KEY)
    start = parse_ls_time(stored) if stored else None
    cursor = (start - timedelta(seconds=ls_cfg.pull_overlap_s)) if start else _EPOCH
    size = page_size or ls_cfg.batch_size
    seen_at_cursor: set[int] = set()
    totals = {"annotations_new": 0, "annotations_updated": 0, "annotations_deleted": 0, "annotations_unchanged": 0,
              "tasks_unknown": 0, "tasks_recorded": 0}
    tasks_seen = pages = 0
    watermark = stored
    while True:
        page = client.list_tasks(
            project_id, include=TASK_FIELDS, all_fields=True, page_size=size, ordering="tasks:updated_at",
            filters=[{"filter": "filter:tasks:updated_at", "operator": "greater_or_equal", "type": "Datetime",
                      "value": format_ls_time(cursor)}],
        )
        fresh = [t for t in page if not (parse_ls_time(t["updated_at"]) == cursor and int(t["id"]) in seen_at_cursor)]
        if not fresh:
            if len(page) < size:
                break
            size *= 2  # more tasks share one timestamp than a page holds
            continue
        if any(int(a.get("completed_by") or 0) not in users for t in fresh for a in t.get("annotations") or []
               if not isinstance(a.get("completed_by"), dict)):
            users = client.users()
        batch = [{"ls_task_id": int(t["id"]), "document_id": (t.get("meta") or {}).get("document_id"),
                  "annotations": [normalize_annotation(a, users) for a in t.get("annotations") or []]}
                 for t in fresh]
        newest = max(parse_ls_time(t["updated_at"]) or _EPOCH for t in fresh)
        if start is None or newest > start:
            watermark = format_ls_time(newest)
        stats = ls_store.apply_pull_batch(store, project_ref=ref, project_id=project_id, origin=origin, tasks=batch,
                                          watermark_key=WATERMARK_KEY, watermark=watermark, run_id=run_id)
        for k, v in stats.items():
            totals[k] += v
        tasks_seen += len(fresh)
        pages += 1
        _kill_hook(pages)
        at_newest = {int(t["id"]) for t in fresh if parse_ls_time(t["updated_at"]) == newest}
        seen_at_cursor = (seen_at_cursor | at_newest) if newest == cursor else at_newest
        cursor = newest
        if len(page) < size:
            break
    if totals["tasks_unknown"]:
        unknown = totals["tasks_unknown"]
        if unknown == tasks_seen and tasks_seen:
            raise LabelStudioError(
                f"None of the {tasks_seen} changed tasks of project {project_id} maps to a document of this store.",
                hint="is --db the store that pushed this project? tasks carry meta.document_id from `curate push`",
            )
    seconds = time.perf_counter() - t0
    return {
        "project_id": project_id,
        "project": found["title"],
        "project_ref": ref,
        "url": client.url,
        "tasks_seen": tasks_seen,
        "pages": pages,
        **totals,
        "watermark": watermark,
        "incremental": stored is not None,
        "seconds": round(seconds, 3),
    }
