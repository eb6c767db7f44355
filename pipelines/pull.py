"""`curate pull`: bring annotations from a Label Studio project into the store, incrementally.

How "incremental" works (measured on Label Studio 1.23.2): creating, updating or deleting an annotation bumps its
task's `updated_at`. A pull asks the data manager for tasks with `updated_at >= watermark`, ordered by `updated_at`,
about 1,000 a page: first a cheap scan (id, time, annotation counters), then, for the tasks that hold annotations
(or that the store thinks do), only the fields it needs (annotations with result, annotator, lead time, times,
cancelled flag). Paging is by keyset (the cursor moves to the last `updated_at` seen; ties at the cursor are
skipped by id), so a task updated during the pull moves behind the cursor and is read again rather than
skipped. Each page is committed with its watermark in one transaction, so a killed pull resumes where the last
commit left it.

The watermark never passes the server's clock at the start of the pull minus `labelstudio.pull_overlap_s` (2 s):
a write whose timestamp was taken before its commit is read by the next pull at the latest. Re-reading a task
changes nothing.

The first pull of a project (no watermark yet, or `--full`) reads only tasks that hold annotations (keyset by id,
filtered on the task's annotation counters), so a new 50k-task project costs what its annotated tasks cost; the
watermark is written at its end. Deleted annotations: one the store holds for a task read now but no longer in
that task is marked deleted (its last version goes to annotation_history). A deleted task is noticed by `--full`.
"""


from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from curation.errors import ConfigError
from curation.labelconfig import FROM_NAME
from pipelines.ls_client import LS_DATETIME_FORMAT, LabelStudioClient
from pipelines.push import KILL_HOOK_ENV, default_title
from store import labelstudio as ls_store
from store.engine import Store

__all__ = [
    "WATERMARK_KEY",
    "TASK_FIELDS",
    "SCAN_FIELDS",
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


#: What the scan for changed tasks reads: enough to tell which tasks need their annotations fetched.
SCAN_FIELDS = ("id", "updated_at", "total_annotations", "cancelled_annotations")
_Page = tuple[list[dict[str, Any]], set[int], datetime | None]  # tasks with annotations, task ids read, newest time


def _pull_pages(
    store: Store, client: LabelStudioClient, pages: Iterator[_Page], *, ref: int, project_id: int,
    origin: str, users: dict[int, str], totals: dict[str, int], watermark_of: Any, run_id: int | None,
) -> set[int]:
    """Upsert each page in its own transaction, with the watermark `watermark_of(newest)`; returns the task ids."""
    seen: set[int] = set()
    for n, (tasks, ids, newest) in enumerate(pages, start=1):
        if any(int(a.get("completed_by") or 0) not in users for t in tasks for a in t.get("annotations") or []
               if not isinstance(a.get("completed_by"), dict)):
            users.update(client.users())
        batch = [{"ls_task_id": int(t["id"]), "document_id": (t.get("meta") or {}).get("document_id"),
                  "annotations": [normalize_annotation(a, users) for a in t.get("annotations") or []]}
                 for t in tasks]
        stats = ls_store.apply_pull_batch(store, project_ref=ref, project_id=project_id, origin=origin, tasks=batch,
                                          watermark_key=WATERMARK_KEY, watermark=watermark_of(newest), run_id=run_id)
        for k, v in stats.items():
            totals[k] += v
        seen |= ids
        _kill_hook(n)
    return seen


def _fetch(client: LabelStudioClient, project_id: int, task_ids: list[int], *, size: int) -> list[dict[str, Any]]:
    """The given tasks with their annotations; one the server no longer has comes back without annotations."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(task_ids), size):
        part = task_ids[i : i + size]
        got = client.list_tasks(project_id, include=TASK_FIELDS, all_fields=True, page_size=len(part),
                                task_ids=part)
        found = {int(t["id"]) for t in got}
        out.extend(got + [{"id": t, "annotations": []} for t in part if t not in found])
    return out


def _changed_pages(client: LabelStudioClient, project_id: int, *, since: datetime, size: int, live: set[int]
                   ) -> Iterator[_Page]:
    """Tasks with updated_at >= since, by keyset on updated_at (ties at the cursor are skipped when seen).

    Two steps per page: a cheap scan (ids, times, annotation counters), then the annotations of only those tasks
    that hold some or that the store still thinks hold some (`live`). Fresh imports change many tasks that hold
    none; reading them with all fields would cost 4 times more.
    """
    cursor, seen_at_cursor = since, set[int]()
    scan = size
    while True:
        page = client.list_tasks(
            project_id, include=SCAN_FIELDS, page_size=scan, ordering="tasks:updated_at",
            filters=[{"filter": "filter:tasks:updated_at", "operator": "greater_or_equal", "type": "Datetime",
                      "value": format_ls_time(cursor)}],
        )
        fresh = [t for t in page if not (parse_ls_time(t["updated_at"]) == cursor and int(t["id"]) in seen_at_cursor)]
        if not fresh:
            if len(page) < scan:
                return
            scan *= 2  # more tasks share one timestamp than a page holds
            continue
        wanted = [int(t["id"]) for t in fresh
                  if (t.get("total_annotations") or 0) + (t.get("cancelled_annotations") or 0) > 0
                  or int(t["id"]) in live]
        newest = max(parse_ls_time(t["updated_at"]) or _EPOCH for t in fresh)
        yield _fetch(client, project_id, wanted, size=size), {int(t["id"]) for t in fresh}, newest
        at_newest = {int(t["id"]) for t in fresh if parse_ls_time(t["updated_at"]) == newest}
        seen_at_cursor = (seen_at_cursor | at_newest) if newest == cursor else at_newest
        cursor = newest
        if len(page) < scan:
            return


def _annotated_pages(client: LabelStudioClient, project_id: int, *, size: int) -> Iterator[_Page]:
    """Every task holding an annotation (submitted or cancelled), by keyset on id: what a first pull needs."""
    seen: set[int] = set()
    for counter in ("total_annotations", "cancelled_annotations"):
        flt = {"filter": f"filter:tasks:{counter}", "operator": "greater", "type": "Number", "value": 0}
        for page in client.iter_tasks(project_id, include=TASK_FIELDS, all_fields=True, page_size=size,
                                      filters=[flt]):
            fresh = [t for t in page if int(t["id"]) not in seen]
            ids = {int(t["id"]) for t in fresh}
            seen |= ids
            if fresh:
                yield fresh, ids, None


def _tasks_by_id(client: LabelStudioClient, project_id: int, task_ids: list[int], *, size: int) -> Iterator[_Page]:
    for i in range(0, len(task_ids), size):
        part = task_ids[i : i + size]
        yield _fetch(client, project_id, part, size=size), set(part), None


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
    # Everything changed before `cap` is surely committed and read by the end of this pull.
    cap = client.server_time() - timedelta(seconds=ls_cfg.pull_overlap_s)
    stored = None if full else ls_store.get_state(store, ref, WATERMARK_KEY)
    size = page_size or ls_cfg.batch_size
    totals = {"annotations_new": 0, "annotations_updated": 0, "annotations_deleted": 0, "annotations_unchanged": 0,
              "tasks_unknown": 0, "tasks_recorded": 0}
    common: dict[str, Any] = {"ref": ref, "project_id": project_id, "origin": origin, "users": users,
                              "totals": totals, "run_id": run_id}
    if stored is not None:
        start = parse_ls_time(stored) or _EPOCH

        def watermark_of(newest: datetime | None) -> str:
            return format_ls_time(max(start, min(newest or start, cap)))

        live = ls_store.tasks_with_live_annotations(store, project_id=project_id)
        seen = _pull_pages(store, client, _changed_pages(client, project_id, since=start, size=size, live=live),
                           watermark_of=watermark_of, **common)
    else:
        # First (or --full) pull: only tasks holding annotations matter, then those the store still thinks hold
        # some; the watermark is written once all is read, so a killed first pull simply starts over.
        seen = _pull_pages(store, client, _annotated_pages(client, project_id, size=size),
                           watermark_of=lambda newest: None, **common)
        stale = sorted(ls_store.tasks_with_live_annotations(store, project_id=project_id) - seen)
        if stale:
            seen |= _pull_pages(store, client, _tasks_by_id(client, project_id, stale, size=size),
                                watermark_of=lambda newest: None, **common)
        ls_store.apply_pull_batch(store, project_ref=ref, project_id=project_id, origin=origin, tasks=[],
                                  watermark_key=WATERMARK_KEY, watermark=format_ls_time(cap), run_id=run_id)
    tasks_seen = len(seen)
    review_applied = None
    if kind == "review":
        from pipelines.review import apply_review_decisions

        review_applied = apply_review_decisions(store, domain=domain)
    seconds = time.perf_counter() - t0
    return {
        "review_decisions": review_applied,
        "project_id": project_id,
        "project": found["title"],
        "project_ref": ref,
        "url": client.url,
        "tasks_seen": tasks_seen,
        **totals,
        "watermark": ls_store.get_state(store, ref, WATERMARK_KEY),
        "incremental": stored is not None,
        "seconds": round(seconds, 3),
    }
