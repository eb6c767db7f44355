"""`curate audit` on a store (SQLite and PostgreSQL): rows per document and run, the CSV, JSON, CROWDLAB consensus
of multi-annotated documents, reviewed documents never flagged, and review decisions closing audit rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from tests.fixtures_audit import NAMES, K, add_votes, labeled_store


def test_audit_records_every_document_and_finds_flips(store, audit_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipelines.audit import audit
    from store.audit import issues_frame
    from store.runs import list_runs

    ids, y, flipped, _ = labeled_store(store, audit_config)
    out = tmp_path / "issues.csv"
    res = audit(store, config=audit_config, out=out)
    assert res["audited"] == len(ids) and res["embeddings"]["cached"] == len(ids)
    assert {"audited", "issues", "estimated_noise_rate", "seconds", "run_id", "review"} <= set(res)
    rows = issues_frame(store, run_id=res["run_id"])
    assert len(rows) == len(ids) and rows["document_id"].is_unique
    found = set(rows.loc[rows["is_label_issue"].astype(bool), "document_id"])
    truth = {ids[i] for i in np.flatnonzero(flipped)}
    assert len(found & truth) >= 0.9 * len(truth) and len(found - truth) <= 2
    assert rows["label_quality"].between(0, 1).all()
    flips = rows[rows["document_id"].isin(truth)]
    assert (flips["suggested_label"] == [NAMES[y[ids.index(d)]] for d in flips["document_id"]]).mean() >= 0.9
    assert rows.loc[rows["is_label_issue"].astype(bool), "details"].map(lambda d: len(d["top"]) == 3).all()

    csv = pd.read_csv(out)
    assert {"external_id", "id", "text", "given_label", "suggested_label", "label_quality",
            "is_label_issue"} <= set(csv.columns)
    assert len(csv) == len(ids) and csv["label_quality"].is_monotonic_increasing
    assert csv["is_label_issue"].sum() == res["issues"]

    run = next(r for r in list_runs(store, kind="audit") if r["id"] == res["run_id"])
    assert run["status"] == "ok" and run["stats"]["issues"] == res["issues"]
    again = audit(store, config=audit_config)  # a second run: new rows, the first run's untouched
    assert again["run_id"] != res["run_id"] and len(issues_frame(store, run_id=res["run_id"])) == len(ids)


def test_multi_annotated_documents_get_crowdlab_consensus(store, audit_config) -> None:  # type: ignore[no-untyped-def]
    from curation.consensus import training_labels
    from curation.label_quality import apply_crowdlab
    from pipelines.audit import annotator_quality, audit
    from store.audit import crowdlab_labels, issues_frame
    from store.documents import annotations_frame

    ids, y, flipped, _ = labeled_store(store, audit_config, seed=1)
    rng = np.random.default_rng(2)
    votes = []
    for i, d in enumerate(ids[:40]):
        votes.append((d, "alice@example.com", NAMES[y[i]]))
        votes.append((d, "bob@example.com", NAMES[y[i]] if rng.random() < 0.85 else NAMES[(y[i] + 1) % K]))
        votes.append((d, "guesser@example.com", NAMES[rng.integers(0, K)]))
    add_votes(store, votes)
    res = audit(store, config=audit_config)
    assert res["multi_annotated"] == 40
    people = {p["annotator"]: p for p in res["annotators"]}
    # the imported label counts as one more annotator (whoever labeled the source file)
    assert {p for p in people if not p.startswith("import:")} == {"alice@example.com", "bob@example.com",
                                                                  "guesser@example.com"} and len(people) == 4
    assert people["guesser@example.com"]["quality"] < people["alice@example.com"]["quality"]
    assert annotator_quality(store, domain="customer_service")[0]["annotator"] == "guesser@example.com"
    stored = crowdlab_labels(store, domain="customer_service")
    assert len(stored) == 40 and stored["fingerprint"].notna().all()
    rows = issues_frame(store, run_id=res["run_id"]).set_index("document_id")
    crowd = stored.set_index("document_id")["label"]
    assert (rows.loc[crowd.index, "given_label"] == crowd).all()  # the audited label is the consensus
    ann = annotations_frame(store, domain="customer_service")
    labels = apply_crowdlab(training_labels(store, domain="customer_service"), ann, stored)
    assert labels.set_index("document_id").loc[crowd.index, "label"].equals(crowd.rename("label"))


def test_reviewed_documents_are_never_flagged(store, audit_config) -> None:  # type: ignore[no-untyped-def]
    from pipelines.audit import audit
    from store.audit import issues_frame

    ids, y, flipped, _ = labeled_store(store, audit_config, seed=3)
    wrong = [ids[i] for i in np.flatnonzero(flipped)][:3]
    # a reviewer insists on the flipped labels: a review wins, and the audit must not flag them again
    by_id = dict(zip(ids, range(len(ids)), strict=True))
    first = audit(store, config=audit_config)
    given = issues_frame(store, run_id=first["run_id"]).set_index("document_id")["given_label"]
    add_votes(store, [(d, "lead@example.com", str(given[d])) for d in wrong], origin="review", start=500)
    res = audit(store, config=audit_config)
    rows = issues_frame(store, run_id=res["run_id"]).set_index("document_id")
    assert not rows.loc[wrong, "is_label_issue"].any()
    assert rows.loc[wrong, "details"].map(lambda d: d.get("reviewed") is True).all()
    assert res["reviewed_not_flagged"] == 3
    assert all(y[by_id[d]] != NAMES.index(str(given[d])) for d in wrong)


def test_review_decisions_close_audit_rows_and_count_confirmed(store, audit_config) -> None:  # type: ignore[no-untyped-def]
    from pipelines.audit import audit, audit_status
    from pipelines.review import apply_review_decisions
    from store.audit import issues_frame, mark_pending
    from store.exports import open_label_issue_ids
    from store.runs import list_runs

    ids, y, flipped, _ = labeled_store(store, audit_config, seed=4)
    res = audit(store, config=audit_config)
    issues = issues_frame(store, run_id=res["run_id"], only_issues=True)
    assert len(issues) >= 4
    a, b, c, d = issues["document_id"].iloc[:4].astype(int)
    assert mark_pending(store, run_id=res["run_id"], document_ids=[a, b, c]) == 3
    given = issues.set_index("document_id")["given_label"]
    suggested = issues.set_index("document_id")["suggested_label"]
    add_votes(store, [(a, "lead@example.com", str(suggested[a])), (b, "lead@example.com", str(given[b]))],
              origin="review", start=900)
    applied = apply_review_decisions(store)
    assert applied["applied"] == 2 and applied["confirmed"] == 1 and applied["rejected"] == 1
    assert apply_review_decisions(store)["applied"] == 0  # idempotent
    rows = issues_frame(store, run_id=res["run_id"]).set_index("document_id")
    assert rows.loc[a, "review_status"] == "confirmed" and rows.loc[a, "reviewed_label"] == suggested[a]
    assert rows.loc[b, "review_status"] == "rejected" and rows.loc[b, "reviewed_label"] == given[b]
    assert rows.loc[c, "review_status"] == "pending" and pd.isna(rows.loc[d, "review_status"])
    st = audit_status(store)
    run = next(r for r in st["runs"] if r["run_id"] == res["run_id"])
    assert (run["sent"], run["pending"], run["confirmed"], run["rejected"]) == (3, 1, 1, 1)
    assert run["confirmed_rate"] == 0.5
    stats = next(r for r in list_runs(store, kind="audit") if r["id"] == res["run_id"])["stats"]
    assert stats["review"]["confirmed"] == 1 and stats["review"]["confirmed_rate"] == 0.5
    # export --exclude-issues: a rejected candidate is no longer open; one not yet reviewed is
    still_open = set(open_label_issue_ids(store).tolist())
    assert b not in still_open and {c, d} <= still_open


def test_cli_audit_json_and_csv(sqlite_url, audit_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from curation.cli import app
    from store.engine import open_store

    store = open_store(sqlite_url)
    ids, *_ = labeled_store(store, audit_config, seed=5)
    cfg = tmp_path / "curate.toml"
    al = audit_config.active_learning
    cfg.write_text(f'[active_learning]\nmodel = "{al.model}"\ndevice = "cpu"\nembeddings_dir = "{al.embeddings_dir}"\n')
    out = tmp_path / "out.csv"
    runner = CliRunner()
    got = runner.invoke(app, ["audit", "--db", sqlite_url, "--config", str(cfg), "--out", str(out), "--json"])
    assert got.exit_code == 0, got.output
    res = json.loads(got.stdout.strip().splitlines()[-1])
    assert res["audited"] == len(ids) and res["issues"] > 0 and 0 < res["estimated_noise_rate"] < 0.3
    assert res["seconds"] > 0 and out.exists()
    status = runner.invoke(app, ["audit", "--status", "--db", sqlite_url, "--config", str(cfg), "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout.strip().splitlines()[-1])["runs"][0]["issues"] == res["issues"]
    human = runner.invoke(app, ["audit", "--db", sqlite_url, "--config", str(cfg)])
    assert human.exit_code == 0 and "suspected label errors" in " ".join(human.stdout.split())
    bad = runner.invoke(app, ["audit", "--db", sqlite_url, "--config", str(cfg), "--project", "x"])
    assert bad.exit_code == 2 and "--push-review" in bad.output
