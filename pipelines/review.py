"""The review loop of label audits: send suspected errors to a Label Studio review project, and apply the decisions.

How a decision comes back: `curate pull` of the review project stores each reviewer's choice as an annotation with
origin `review` (the project is recorded with kind `review`), which `curation.consensus` makes the document's
training label; the earlier labels stay as they were (history). `apply_review_decisions` then closes the audit rows:
`confirmed` when the reviewer chose another label than the audited one (a real error), `rejected` when the reviewer
kept it. Each audit run's confirmed-error rate (confirmed / reviewed) goes into its stats.
"""

from __future__ import annotations

from typing import Any

from curation.errors import InputError
from store import audit as audit_store

__all__ = ["push_review", "apply_review_decisions", "review_summary"]


def _rate(confirmed: int, rejected: int) -> float | None:
    reviewed = confirmed + rejected
    return round(confirmed / reviewed, 4) if reviewed else None


def review_summary(store: Any, *, run_ids: list[int] | None = None, domain: str | None = None) -> list[dict[str, Any]]:
    """Per audit run: issues, sent for review, reviewed, confirmed, rejected, confirmed_rate (newest first)."""
    counts = audit_store.review_counts(store, run_ids=run_ids, domain=domain)
    out = []
    for r in counts.itertuples(index=False):
        reviewed = int(r.confirmed) + int(r.rejected)
        out.append({"run_id": int(r.run_id), "audited": int(r.audited), "issues": int(r.issues),
                    "sent": int(r.pending) + reviewed, "pending": int(r.pending), "reviewed": reviewed,
                    "confirmed": int(r.confirmed), "rejected": int(r.rejected),
                    "confirmed_rate": _rate(int(r.confirmed), int(r.rejected))})
    return sorted(out, key=lambda d: -d["run_id"])


def _store_summaries(store: Any, run_ids: list[int]) -> None:
    for s in review_summary(store, run_ids=run_ids):
        audit_store.update_run_stats(store, s["run_id"], {"review": {k: v for k, v in s.items() if k != "run_id"}})


def apply_review_decisions(store: Any, *, domain: str | None = None) -> dict[str, Any]:
    """Close pending audit rows whose document has a pulled review; returns counts and the runs' review stats.

    Idempotent: rows already closed are not touched, so it may run after every pull and before every audit.
    """
    pending = audit_store.pending_decisions(store, domain=domain)
    rows = [{"id": int(r.id), "reviewed_label": str(r.reviewed_label),
             "review_status": "rejected" if str(r.reviewed_label) == str(r.given_label) else "confirmed"}
            for r in pending.itertuples(index=False)]
    audit_store.set_review_outcomes(store, rows)
    runs = sorted({int(r) for r in pending["run_id"]})
    _store_summaries(store, runs)
    confirmed = sum(r["review_status"] == "confirmed" for r in rows)
    return {"applied": len(rows), "confirmed": confirmed, "rejected": len(rows) - confirmed,
            "runs": review_summary(store, run_ids=runs) if runs else []}


def push_review(
    store: Any,
    client: Any,
    *,
    config: Any,
    run_id: int | None = None,
    domain: str | None = None,
    project: str | None = None,
    limit: int = 100,
    push_run_id: int | None = None,
) -> dict[str, Any]:
    """Send the run's worst suspected errors (lowest label quality first, at most `limit`) to the review project.

    The project (default `<labelstudio.project>-<domain>-review`) shows each text with its given and suggested
    label and offers the whole label set. Rows of documents now in the project become `pending` (also those a
    review project already held from an earlier audit: their decision will close both).
    """
    from pipelines.push import default_title, push
    from store import labelstudio as ls_store

    if run_id is None:
        run_id = audit_store.latest_audit_run(store, domain=domain)
        if run_id is None:
            raise InputError("No label audit to review yet.", hint="run `curate audit` first")
    cand = audit_store.review_candidates(store, run_id=run_id, limit=limit)
    if cand.empty:
        return {"run_id": run_id, "candidates": 0, "pushed": 0, "pending": 0, "project": None}
    task_data = {
        int(r.document_id): {"given_label": str(r.given_label), "suggested_label": str(r.suggested_label),
                             "label_quality": round(float(r.label_quality), 4), "issue": str(r.kind)}
        for r in cand.itertuples(index=False)
    }
    title = project or (default_title(config, domain, "review") if domain else None)
    result = push(store, client, config=config, project=title, domain=domain, kind="review",
                  document_ids=list(task_data), task_data=task_data, include_labeled=True, order="priority",
                  run_id=push_run_id)
    in_project = set(ls_store.task_rows(store, int(result["project_ref"]))["document_id"].astype(int))
    marked = audit_store.mark_pending(store, run_id=run_id, document_ids=[d for d in task_data if d in in_project])
    _store_summaries(store, [run_id])
    return {"run_id": run_id, "candidates": len(task_data), "pending": marked, "project": result["project"],
            "project_id": result["project_id"], "pushed": result["pushed"],
            "already_present": result["already_present"], "skipped": result["skipped"],
            "skipped_reasons": result["skipped_reasons"], "url": result["url"]}
