"""Label audits: one `label_issues` row per audited document and audit run, and the review of suspected errors.

Why a row for every audited document (not only the flagged ones): the label quality of each document per run is
what lets a later run, an export or a person ask how a label's standing changed. Review status moves from None
(not sent) to `pending` (in the review project) to `confirmed` (the reviewer chose another label: a real error) or
`rejected` (the reviewer kept the given label).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pandas as pd
from sqlalchemy import Table, and_, bindparam, func, select, update

from store.engine import Store, insert_ignore
from store.models import Annotation, Document, LabelIssue, Run

__all__ = [
    "REVIEW_STATUSES",
    "record_issues",
    "issues_frame",
    "latest_audit_run",
    "review_candidates",
    "mark_pending",
    "pending_decisions",
    "set_review_outcomes",
    "review_counts",
    "update_run_stats",
    "audit_runs",
    "crowdlab_labels",
    "votes_frame",
]

REVIEW_STATUSES: tuple[str, ...] = ("pending", "confirmed", "rejected")
_IN_CHUNK = 5000


def record_issues(store: Store, rows: Sequence[dict[str, Any]]) -> int:
    """Rows with run_id, document_id, given_label, suggested_label, label_quality, is_label_issue, kind, details."""
    if not rows:
        return 0
    # Rows without details omit the key, so the column is SQL NULL on every dialect (not a JSON 'null').
    plain = [{k: v for k, v in r.items() if k != "details"} for r in rows if r.get("details") is None]
    rich = [r for r in rows if r.get("details") is not None]
    n = 0
    with store.connect() as conn:
        for part in (plain, rich):
            if part:
                n += insert_ignore(conn, cast(Table, LabelIssue.__table__), part,
                                   conflict=["run_id", "document_id"])
    return n


_ISSUE_COLUMNS = ("run_id", "document_id", "given_label", "suggested_label", "label_quality", "is_label_issue",
                  "kind", "review_status", "reviewed_label", "details")


def issues_frame(
    store: Store,
    *,
    run_id: int | None = None,
    domain: str | None = None,
    only_issues: bool = False,
    with_text: bool = False,
) -> pd.DataFrame:
    """Audit rows (worst label quality first), with the document's external id (and text)."""
    li = LabelIssue
    cols = [getattr(li, c) for c in _ISSUE_COLUMNS] + [Document.external_id]
    if with_text:
        cols.append(Document.text)
    q = select(*cols).join(Document, Document.id == li.document_id)
    if run_id is not None:
        q = q.where(li.run_id == run_id)
    if domain is not None:
        q = q.where(Document.domain == domain)
    if only_issues:
        q = q.where(li.is_label_issue.is_(True))
    q = q.order_by(li.label_quality, li.document_id)
    names = [*_ISSUE_COLUMNS, "external_id", *(["text"] if with_text else [])]
    with store.connect() as conn:
        return pd.DataFrame(conn.execute(q).all(), columns=names)


def votes_frame(store: Store, *, domain: str | None = None) -> pd.DataFrame:
    """The live labeled annotations an audit needs (id, document_id, annotator, label, origin): the rows of
    `store.documents.annotations_frame` with five columns, read as plain tuples (a third of the time at 100k)."""
    a = Annotation
    q = (select(a.id, a.document_id, a.annotator, a.label, a.origin)
         .where(a.deleted_at.is_(None), a.was_cancelled.is_(False), a.label.is_not(None)))
    if domain is not None:
        q = q.join(Document, Document.id == a.document_id).where(Document.domain == domain)
    with store.connect() as conn:
        rows = conn.execute(q.order_by(a.id)).all()
    return pd.DataFrame(rows, columns=["id", "document_id", "annotator", "label", "origin"])


def latest_audit_run(store: Store, *, domain: str | None = None) -> int | None:
    """The newest run that stored audit rows (for documents of `domain`)."""
    q = select(func.max(LabelIssue.run_id))
    if domain is not None:
        q = q.join(Document, Document.id == LabelIssue.document_id).where(Document.domain == domain)
    with store.connect() as conn:
        got = conn.execute(q).scalar()
    return int(got) if got is not None else None


def review_candidates(store: Store, *, run_id: int, limit: int | None = None) -> pd.DataFrame:
    """Suspected errors of a run not yet sent for review, worst label quality first."""
    li = LabelIssue
    q = (select(li.id, li.document_id, li.given_label, li.suggested_label, li.label_quality, li.kind, li.details)
         .where(li.run_id == run_id, li.is_label_issue.is_(True), li.review_status.is_(None))
         .order_by(li.label_quality, li.document_id))
    if limit:
        q = q.limit(limit)
    with store.connect() as conn:
        return pd.DataFrame(conn.execute(q).all(), columns=["id", "document_id", "given_label", "suggested_label",
                                                            "label_quality", "kind", "details"])


def mark_pending(store: Store, *, run_id: int, document_ids: Sequence[int]) -> int:
    """Mark the run's rows of these documents as sent for review (only rows not reviewed yet)."""
    li = LabelIssue
    n = 0
    ids = [int(i) for i in document_ids]
    with store.connect() as conn:
        for i in range(0, len(ids), _IN_CHUNK):
            res = conn.execute(update(li).where(li.run_id == run_id, li.document_id.in_(ids[i : i + _IN_CHUNK]),
                                                li.review_status.is_(None)).values(review_status="pending"))
            n += int(res.rowcount or 0)
    return n


def pending_decisions(store: Store, *, domain: str | None = None) -> pd.DataFrame:
    """Pending rows whose document now has a live review annotation: issue id, run, document, given and reviewed
    label (the newest review annotation of the document)."""
    li, a = LabelIssue, Annotation
    live = and_(a.origin == "review", a.deleted_at.is_(None), a.was_cancelled.is_(False), a.label.is_not(None))
    newest = select(a.document_id, func.max(a.id).label("aid")).where(live).group_by(a.document_id).subquery()
    q = (select(li.id, li.run_id, li.document_id, li.given_label, a.label)
         .join(newest, newest.c.document_id == li.document_id)
         .join(a, a.id == newest.c.aid)
         .where(li.review_status == "pending"))
    if domain is not None:
        q = q.join(Document, Document.id == li.document_id).where(Document.domain == domain)
    with store.connect() as conn:
        return pd.DataFrame(conn.execute(q).all(),
                            columns=["id", "run_id", "document_id", "given_label", "reviewed_label"])


def set_review_outcomes(store: Store, rows: Sequence[dict[str, Any]]) -> int:
    """Rows with id, review_status, reviewed_label."""
    if not rows:
        return 0
    li = cast(Table, LabelIssue.__table__)
    params = [{"b_id": int(r["id"]), "v_status": r["review_status"], "v_label": r["reviewed_label"]} for r in rows]
    with store.connect() as conn:
        conn.execute(update(li).where(li.c.id == bindparam("b_id"))
                     .values(review_status=bindparam("v_status"), reviewed_label=bindparam("v_label")), params)
    return len(params)


def review_counts(store: Store, *, run_ids: Sequence[int] | None = None, domain: str | None = None
                  ) -> pd.DataFrame:
    """Per audit run: audited, issues, and issues by review status (none, pending, confirmed, rejected)."""
    li = LabelIssue
    q = (select(li.run_id, li.is_label_issue, li.review_status, func.count())
         .group_by(li.run_id, li.is_label_issue, li.review_status))
    if run_ids is not None:
        q = q.where(li.run_id.in_([int(r) for r in run_ids]))
    if domain is not None:
        q = q.join(Document, Document.id == li.document_id).where(Document.domain == domain)
    with store.connect() as conn:
        raw = pd.DataFrame(conn.execute(q).all(), columns=["run_id", "is_label_issue", "review_status", "n"])
    cols = ["run_id", "audited", "issues", "not_sent", "pending", "confirmed", "rejected"]
    if raw.empty:
        return pd.DataFrame(columns=cols)
    raw["review_status"] = raw["review_status"].fillna("not_sent")
    out = raw.groupby("run_id")["n"].sum().rename("audited").to_frame()
    issues = raw[raw["is_label_issue"].astype(bool)]
    out["issues"] = issues.groupby("run_id")["n"].sum()
    by_status = raw.pivot_table(index="run_id", columns="review_status", values="n", aggfunc="sum")
    for status in ("not_sent", "pending", "confirmed", "rejected"):
        out[status] = by_status[status] if status in by_status else 0
    out = out.fillna(0).astype(int).reset_index()
    return out[cols].sort_values("run_id").reset_index(drop=True)


def update_run_stats(store: Store, run_id: int, patch: dict[str, Any]) -> None:
    """Merge `patch` into a run's stats (e.g. review counts that change after the run ended)."""
    with store.connect() as conn:
        stats = conn.execute(select(Run.stats).where(Run.id == run_id)).scalar()
        conn.execute(update(Run).where(Run.id == run_id).values(stats={**(stats or {}), **patch}))


def audit_runs(store: Store, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest finished audit runs: id, started_at, params, stats."""
    q = (select(Run.id, Run.started_at, Run.params, Run.stats)
         .where(Run.kind == "audit", Run.status == "ok").order_by(Run.id.desc()).limit(limit))
    with store.connect() as conn:
        return [{"run_id": int(r[0]), "started_at": r[1], "params": r[2] or {}, "stats": r[3] or {}}
                for r in conn.execute(q)]


def crowdlab_labels(store: Store, *, domain: str | None = None) -> pd.DataFrame:
    """CROWDLAB consensus of each document's latest audit row that has one: document_id, label, quality,
    fingerprint (of the votes it was computed from; `curation.label_quality.apply_crowdlab` checks it)."""
    li = LabelIssue
    latest = select(li.document_id, func.max(li.id).label("last_id")).group_by(li.document_id).subquery()
    q = (select(li.document_id, li.details).join(latest, latest.c.last_id == li.id)
         .where(li.details.is_not(None)))
    if domain is not None:
        q = q.join(Document, Document.id == li.document_id).where(Document.domain == domain)
    rows = []
    with store.connect() as conn:
        for doc, details in conn.execute(q):
            crowd = (details or {}).get("crowdlab")
            if crowd:
                rows.append({"document_id": int(doc), "label": crowd.get("label"),
                             "consensus_quality": crowd.get("quality"), "fingerprint": crowd.get("fingerprint")})
    return pd.DataFrame(rows, columns=["document_id", "label", "consensus_quality", "fingerprint"])
