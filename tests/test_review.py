"""The review loop against a real Label Studio: audit -> push the worst suspected errors to a review project ->
a reviewer decides through the API -> pull -> the reviewed label wins (earlier labels kept) -> the audit rows are
closed and the run's confirmed-error rate is reported; a second audit does not flag reviewed documents again."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures_audit import labeled_store
from tests.fixtures_labelstudio import choice

pytestmark = pytest.mark.integration


def test_review_round_trip(sqlite_url, ls_client, ls_config, audit_config) -> None:  # type: ignore[no-untyped-def]
    from curation.consensus import training_labels
    from pipelines.audit import audit
    from pipelines.pull import pull
    from store.audit import issues_frame
    from store.documents import annotations_frame
    from store.engine import open_store

    store = open_store(sqlite_url)
    cfg = ls_config.model_copy(update={"active_learning": audit_config.active_learning})
    ids, y, flipped, _ = labeled_store(store, cfg, seed=7)
    first = audit(store, config=cfg, push_review=True, review_limit=5, client=ls_client)
    sent = first["review_push"]
    assert sent["pushed"] == 5 and sent["pending"] == 5
    assert sent["project"] == f"{cfg.labelstudio.project}-customer_service-review"
    issues = issues_frame(store, run_id=first["run_id"], only_issues=True).set_index("document_id")
    pending = issues[issues["review_status"] == "pending"]
    assert len(pending) == 5 and pending["label_quality"].max() <= issues["label_quality"].drop(pending.index).min()

    tasks: dict[int, dict[str, Any]] = {}
    for page in ls_client.iter_tasks(sent["project_id"], include=("id", "meta", "data"), all_fields=True):
        tasks.update({int(t["meta"]["document_id"]): t for t in page})
    assert set(tasks) == set(pending.index)
    for doc, task in tasks.items():
        assert task["data"]["given_label"] == pending.loc[doc, "given_label"]
        assert task["data"]["suggested_label"] == pending.loc[doc, "suggested_label"]
    project = ls_client.get_project(sent["project_id"])
    assert "Suggested label" in project["label_config"]

    reviewer = ls_client.create_user(email="reviewer@example.com", password="review-123")
    docs = sorted(tasks)
    confirm, reject = docs[:2], docs[2]
    for d in confirm:
        ls_client.create_annotation(int(tasks[d]["id"]), result=choice(str(pending.loc[d, "suggested_label"])),
                                    completed_by=reviewer, lead_time=3.0)
    ls_client.create_annotation(int(tasks[reject]["id"]), result=choice(str(pending.loc[reject, "given_label"])),
                                completed_by=reviewer, lead_time=2.0)

    got = pull(store, ls_client, config=cfg, project=sent["project"])
    assert got["annotations_new"] == 3
    assert got["review_decisions"]["applied"] == 3  # a pull of a review project applies the decisions
    reviews = annotations_frame(store)
    reviews = reviews[reviews["origin"] == "review"]
    assert sorted(reviews["document_id"]) == sorted([*confirm, reject])
    assert set(reviews["annotator"]) == {"reviewer@example.com"}

    labels = training_labels(store).set_index("document_id")
    for d in confirm:
        assert labels.loc[d, "label"] == pending.loc[d, "suggested_label"]
        assert labels.loc[d, "label_source"] == "reviewed"
    ann = annotations_frame(store)
    for d in confirm:  # the imported label is still there: the review overrides it, nothing is lost
        imported = ann[(ann["document_id"] == d) & (ann["origin"] == "import")]
        assert imported["label"].tolist() == [pending.loc[d, "given_label"]]

    second = audit(store, config=cfg)
    assert second["decisions_applied"] == 0  # already applied by the pull
    earlier = next(h for h in second["review_history"] if h["run_id"] == first["run_id"])
    assert (earlier["confirmed"], earlier["rejected"], earlier["pending"]) == (2, 1, 2)
    assert earlier["confirmed_rate"] == pytest.approx(2 / 3, abs=1e-4)
    closed = issues_frame(store, run_id=first["run_id"]).set_index("document_id")
    assert set(closed.loc[confirm, "review_status"]) == {"confirmed"}
    assert closed.loc[reject, "review_status"] == "rejected"
    again = issues_frame(store, run_id=second["run_id"]).set_index("document_id")
    assert not again.loc[[*confirm, reject], "is_label_issue"].any()
    assert (again.loc[confirm, "given_label"] == pending.loc[confirm, "suggested_label"]).all()

    more = audit(store, config=cfg, push_review=True, review_limit=50, client=ls_client)
    assert more["review_push"]["project_id"] == sent["project_id"]
    pushed_docs = {int(t["meta"]["document_id"])
                   for page in ls_client.iter_tasks(sent["project_id"], include=("id", "meta")) for t in page}
    assert len(pushed_docs) == 5 + more["review_push"]["pushed"]  # each document reviewed once per project
