"""`curate push`: send documents to a Label Studio project, each exactly once, crash-safe.

How "exactly once" holds across crashes and re-runs: the store records a batch's tasks only after the server
accepted the batch; before sending anything, the push lists the project's tasks above the highest task id the
store knows (a cheap keyset query) and records those it finds by their `meta.document_id`. So a push killed between
the server's answer and the store's commit is repaired by the next run, which then sends only what is missing.
A create request that got no answer (timeout, 5xx) is handled the same way: reconcile, then resend the rest.

What is sent: the masked text (`documents.text`), the document id and metadata, and, when the store has
predictions for the document, the newest one as a pre-annotation (model version and score). Every task is checked
first (no lone surrogates or control characters, a size limit, prediction labels in the project's config); a bad
document is skipped with a reason and never reaches the server, where it could break listing or export.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from curation.config import check_domain
from curation.errors import ConfigError, InputError
from curation.labelconfig import FROM_NAME, TO_NAME, LabelConfig, build_label_config, config_choices
from pipelines.ls_client import LabelStudioClient, OutcomeUnknownError
from store import labelstudio as ls_store
from store.engine import Store

__all__ = [
    "KILL_HOOK_ENV",
    "ORDERS",
    "default_title",
    "resolve_labels",
    "task_problem",
    "build_task",
    "reconcile_tasks",
    "ensure_project",
    "push",
]

#: TEST HOOK (used by tests/test_labelstudio_push.py only): when set to N, `push` ends the process with
#: `os._exit(137)` right after the server accepted batch N and before the store records it, and `pull` right after
#: committing page N, to prove that a killed run resumes without gaps or duplicates. Never set it otherwise.
KILL_HOOK_ENV = "CURATE_TEST_KILL_AFTER_BATCHES"
ORDERS = ("priority", "random", "oldest")
_BAD_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_MAX_BATCH_BYTES = 50 * 1024 * 1024


def default_title(config: Any, domain: str, kind: str = "labeling") -> str:
    """`<labelstudio.project>-<domain>` (e.g. `curate-customer_service`), `-review` appended for reviews."""
    base = f"{config.labelstudio.project}-{domain}"
    return f"{base}-review" if kind == "review" else base


def resolve_labels(store: Store, config: Any, domain: str, override: Sequence[str] | None = None) -> list[str]:
    """`--labels` if given, else `domains.<d>.labels` of the config, else the labels already in the store."""
    if override:
        labels = [x.strip() for x in override if x.strip()]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ConfigError(f"--labels repeats {dupes}.", hint="list each label once")
        return labels
    configured = list(config.domain(domain).labels)
    return configured or ls_store.domain_labels(store, domain)


def task_problem(text: Any, *, max_chars: int) -> str | None:
    """Why a text must not be sent (None when it is fine)."""
    if not isinstance(text, str) or not text.strip():
        return "empty_text"
    if _SURROGATE.search(text):
        return "lone_surrogate"
    if _BAD_TEXT.search(text):
        return "control_characters"
    if len(text) > max_chars:
        return "too_long"
    return None


def _prediction(pred: Mapping[str, Any] | None, labels: set[str]) -> tuple[dict[str, Any] | None, str | None]:
    if not pred:
        return None, None
    label, score = pred.get("label"), pred.get("score")
    if label not in labels:
        return None, "prediction_label_unknown"
    if score is not None and (not isinstance(score, int | float) or not math.isfinite(score)):
        return None, "prediction_bad_score"
    out: dict[str, Any] = {
        "model_version": str(pred["model_version"]),
        "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [label]}}],
    }
    if score is not None:
        out["score"] = float(score)
    return out, None


def build_task(
    doc: Mapping[str, Any],
    *,
    labels: set[str],
    max_chars: int,
    prediction: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    priority: float | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """The task JSON for one document, or (None, reason) when it must be skipped."""
    text = doc.get("text")
    problem = task_problem(text, max_chars=max_chars)
    if problem:
        return None, problem
    data: dict[str, Any] = {"text": text, "document_id": int(doc["id"]), "source": doc.get("source")}
    for key, value in (extra or {}).items():
        if isinstance(value, str) and task_problem(value, max_chars=max_chars) not in (None, "empty_text"):
            return None, f"bad_{key}"
        data[key] = value
    meta = {"document_id": int(doc["id"]), "domain": doc.get("domain"), "source": doc.get("source"),
            "external_id": doc.get("external_id"), "cluster_id": doc.get("cluster_id"),
            "group_key": doc.get("group_key"), "priority": priority}
    for key in ("external_id", "group_key"):
        if isinstance(meta[key], str) and task_problem(meta[key], max_chars=max_chars) not in (None, "empty_text"):
            meta[key] = None
    meta = {k: v for k, v in meta.items() if v is not None}
    task: dict[str, Any] = {"data": data, "meta": meta}
    pred, problem = _prediction(prediction, labels)
    if problem:
        return None, problem
    if pred:
        task["predictions"] = [pred]
    return task, None


def reconcile_tasks(store: Store, client: LabelStudioClient, *, project_ref: int, project_id: int,
                    run_id: int | None = None) -> int:
    """Record tasks the project holds above the store's highest known task id (e.g. after a killed push)."""
    after = ls_store.max_task_id(store, project_ref)
    rows: list[dict[str, Any]] = []
    for page in client.iter_tasks(project_id, include=("id", "meta"), after_id=after):
        for t in page:
            doc = (t.get("meta") or {}).get("document_id")
            if isinstance(doc, int):
                rows.append({"project_ref": project_ref, "document_id": doc, "ls_task_id": int(t["id"]),
                             "run_id": run_id})
    return ls_store.record_tasks(store, rows) if rows else 0


def ensure_project(
    store: Store,
    client: LabelStudioClient,
    *,
    title: str,
    label_config: LabelConfig,
    domain: str,
    kind: str,
    annotations_per_task: int,
) -> tuple[dict[str, Any], int, bool, list[str]]:
    """(server project, project_ref, created, its choices): reuse the project titled `title` or create it."""
    found = client.find_project(title)
    created = False
    if found is None:
        project = client.create_project(title=title, label_config=label_config.xml,
                                        maximum_annotations=annotations_per_task,
                                        description=f"curate: {kind} of {domain} documents")
        created = True
        choices = list(label_config.labels)
    else:
        project = client.get_project(found["id"])
        choices = config_choices(project.get("label_config") or "")
    ref = ls_store.upsert_project(
        store, server_url=client.url, project_id=int(project["id"]), title=title, domain=domain, kind=kind,
        labels=choices, label_config_hash=label_config.hash if created else _hash(project.get("label_config")),
    )
    return project, ref, created, choices


def _hash(xml: str | None) -> str | None:
    import hashlib

    return hashlib.sha256(xml.encode("utf-8")).hexdigest() if xml else None


def _kill_hook(batch_no: int) -> None:
    target = os.environ.get(KILL_HOOK_ENV)
    if target and target.isdigit() and batch_no == int(target):
        os._exit(137)


_Ready = tuple[int, float | None, dict[str, Any], str, int]  # doc id, priority, task, its JSON, its bytes


def _batches(tasks: Sequence[_Ready], size: int) -> list[list[_Ready]]:
    """Batches of at most `size` tasks and about 50 MB (Label Studio refuses requests over 200 MB)."""
    out: list[list[_Ready]] = []
    cur: list[_Ready] = []
    cur_bytes = 0
    for item in tasks:
        if cur and (len(cur) >= size or cur_bytes + item[4] > _MAX_BATCH_BYTES):
            out.append(cur)
            cur, cur_bytes = [], 0
        cur.append(item)
        cur_bytes += item[4]
    if cur:
        out.append(cur)
    return out


def push(
    store: Store,
    client: LabelStudioClient,
    *,
    config: Any,
    project: str | None = None,
    domain: str | None = None,
    source: str | None = None,
    limit: int | None = None,
    order: str = "priority",
    include_labeled: bool = False,
    labels: Sequence[str] | None = None,
    seed: int = 0,
    kind: str = "labeling",
    document_ids: Sequence[int] | None = None,
    task_data: Mapping[int, Mapping[str, Any]] | None = None,
    batch_size: int | None = None,
    run_id: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Send the selected documents not yet in the project; returns counts (see `curate push --json`).

    `kind="review"` with `document_ids` and `task_data` ({document id: {"given_label": .., "suggested_label": ..}})
    pushes to a review project (used by the label audit); labeled documents are included there, since a review is
    about a label.
    """
    t0 = time.perf_counter()
    if order not in ORDERS:
        raise ConfigError(f"--order must be one of {', '.join(ORDERS)}, not {order!r}.")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, not {limit}.")
    ls_cfg = config.labelstudio
    include_labeled = include_labeled or kind == "review"
    domains = ls_store.selection_domains(store, domain=domain, source=source, document_ids=document_ids)
    if domain:
        check_domain(domain)
    elif len(domains) > 1:
        raise InputError(
            f"The selected documents span several domains ({', '.join(domains)}); a project holds one.",
            hint="pass --domain (and --source) to choose",
        )
    elif not domains:
        where = f" of source {source!r}" if source else ""
        raise InputError(f"No documents{where} in the store to push.", hint="ingest some first (`curate ingest`)")
    domain = domain or domains[0]
    label_set = resolve_labels(store, config, domain, labels)
    label_config = build_label_config(domain=domain, labels=label_set, config=config, kind=kind)
    title = project or default_title(config, domain, kind)

    server_project, ref, created, choices = ensure_project(
        store, client, title=title, label_config=label_config, domain=domain, kind=kind,
        annotations_per_task=ls_cfg.annotations_per_task,
    )
    project_id = int(server_project["id"])
    config_differs = not created and set(choices) != set(label_config.labels)
    reconciled = 0 if created else reconcile_tasks(store, client, project_ref=ref, project_id=project_id,
                                                   run_id=run_id)
    candidates, already = ls_store.push_candidates(
        store, project_ref=ref, domain=domain, source=source, include_labeled=include_labeled, order=order,
        limit=limit, seed=seed, document_ids=document_ids,
    )
    size = batch_size or ls_cfg.batch_size
    allowed = set(choices)
    skipped: Counter[str] = Counter()
    skipped_examples: list[dict[str, Any]] = []
    pushed = with_predictions = batches_sent = resent = 0
    model_versions: Counter[str] = Counter()

    def finish(job: Future[tuple[int, int]] | None) -> None:
        nonlocal pushed, resent
        if job is None:
            return
        sent, again = job.result()
        pushed += sent
        resent += again
        if on_batch:
            on_batch(pushed, len(candidates))

    # One batch in flight while the next is prepared: the server's import time dominates, so overlap the rest.
    job: Future[tuple[int, int]] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ls-push") as pool:
        # The first chunk is one batch, so the server starts working while the rest is read and checked.
        bounds = [0, *range(min(size, len(candidates)), len(candidates), size * 5), len(candidates)]
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            chunk = candidates[lo:hi]
            if not chunk:
                continue
            ids = [d for d, _ in chunk]
            docs = ls_store.documents_for_tasks(store, ids)
            preds = ls_store.latest_predictions(store, ids) if kind == "labeling" else {}
            ready: list[tuple[int, float | None, dict[str, Any], str, int]] = []
            for doc_id, priority in chunk:
                task, problem = build_task(docs[doc_id], labels=allowed, max_chars=ls_cfg.max_text_chars,
                                           prediction=preds.get(doc_id), priority=priority,
                                           extra=(task_data or {}).get(doc_id))
                encoded = ""
                if task is not None:
                    try:
                        encoded = json.dumps(task, ensure_ascii=False)
                        nbytes = len(encoded.encode("utf-8"))
                    except (UnicodeEncodeError, TypeError, ValueError):
                        task, problem = None, "not_serializable"
                if task is None:
                    skipped[problem or "invalid"] += 1
                    if len(skipped_examples) < 20:
                        skipped_examples.append({"document_id": doc_id, "reason": problem})
                    continue
                ready.append((doc_id, priority, task, encoded, nbytes))
            for batch in _batches(ready, size):
                finish(job)
                batches_sent += 1
                job = pool.submit(_send_batch, store, client, batch, project_ref=ref, project_id=project_id,
                                  run_id=run_id, batch_no=batches_sent)
                for _, _, task, _, _ in batch:
                    if "predictions" in task:
                        with_predictions += 1
                        model_versions[task["predictions"][0]["model_version"]] += 1
        finish(job)

    if model_versions and server_project.get("model_version") != model_versions.most_common(1)[0][0]:
        # Annotators see pre-annotations of the project's model version: show the newest pushed one.
        client.update_project(project_id, model_version=model_versions.most_common(1)[0][0],
                              show_collab_predictions=True)
    seconds = time.perf_counter() - t0
    return {
        "project_id": project_id,
        "project": title,
        "project_ref": ref,
        "url": client.url,
        "domain": domain,
        "kind": kind,
        "created": created,
        "labels": len(choices),
        "label_config_differs": config_differs,
        "pushed": pushed,
        "already_present": already,
        "reconciled": reconciled,
        "resent_after_unknown_outcome": resent,
        "skipped": sum(skipped.values()),
        "skipped_reasons": dict(skipped),
        "skipped_examples": skipped_examples,
        "with_predictions": with_predictions,
        "batches": batches_sent,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(pushed / seconds, 1) if seconds > 0 else None,
    }


def _send_batch(
    store: Store,
    client: LabelStudioClient,
    batch: list[_Ready],
    *,
    project_ref: int,
    project_id: int,
    run_id: int | None,
    batch_no: int,
) -> tuple[int, int]:
    """Import one batch and record it; after an unknown outcome, reconcile and send only what is missing."""
    pending = batch
    attempts = 0
    sent = resent = 0
    while pending:
        try:
            task_ids = client.import_tasks(project_id, [encoded for _, _, _, encoded, _ in pending])
        except OutcomeUnknownError:
            attempts += 1
            if attempts > max(1, client.retries):
                raise
            time.sleep(client.backoff_s * 2 ** (attempts - 1))
            reconcile_tasks(store, client, project_ref=project_ref, project_id=project_id, run_id=run_id)
            present = set(ls_store.task_rows(store, project_ref)["document_id"].astype(int))
            before = len(pending)
            pending = [p for p in pending if p[0] not in present]
            sent += before - len(pending)
            resent += len(pending)
            continue
        _kill_hook(batch_no)
        rows = [{"project_ref": project_ref, "document_id": doc_id, "ls_task_id": tid, "priority": priority,
                 "payload": task["meta"], "run_id": run_id}
                for (doc_id, priority, task, _, _), tid in zip(pending, task_ids, strict=True)]
        ls_store.record_tasks(store, rows)
        sent += len(pending)
        pending = []
    return sent, resent
