"""`curate pull` and `curate agreement` against a real Label Studio, with annotators simulated through the API."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from pipelines.ls_client import LabelStudioClient
from pipelines.pull import WATERMARK_KEY, pull
from pipelines.push import KILL_HOOK_ENV, push
from store import labelstudio as ls_store
from tests.fixtures_labelstudio import add_documents, choice, cli_json, curate_cli
from tests.test_agreement import ALPHA, COHEN, FLEISS, X, Y

pytestmark = pytest.mark.integration
SENTIMENT = ["positive", "negative", "neutral"]
AB = ["A", "B"]


def task_of(client: LabelStudioClient, project_id: int) -> dict[int, int]:
    """Label Studio task id per document id."""
    return {t["meta"]["document_id"]: int(t["id"])
            for page in client.iter_tasks(project_id, include=("id", "meta")) for t in page}


def annotators(client: LabelStudioClient, *names: str) -> list[int]:
    return [client.create_user(email=f"{n}@example.com", password="annotate-123") for n in names]


def test_two_annotators_push_annotate_pull_and_agreement(store, ls_client, ls_config) -> None:  # type: ignore[no-untyped-def]
    docs = add_documents(store, [f"message {i}" for i in range(10)], domain="customer_service")
    cfg = ls_config.model_copy(update={"labelstudio": ls_config.labelstudio.model_copy(
        update={"annotations_per_task": 2})})
    pushed = push(store, ls_client, config=cfg, labels=AB)
    pid = pushed["project_id"]
    tasks = task_of(ls_client, pid)
    u1, u2 = annotators(ls_client, "ann1", "ann2")
    for doc, x, y in zip(docs, X, Y, strict=True):
        ls_client.create_annotation(tasks[doc], result=choice(x), completed_by=u1, lead_time=4.5)
        ls_client.create_annotation(tasks[doc], result=choice(y), completed_by=u2, lead_time=6.0)

    first = pull(store, ls_client, config=cfg, project=pushed["project"])
    assert first["annotations_new"] == 20 and first["annotations_updated"] == 0 and first["tasks_seen"] == 10
    frame = ls_store.project_annotations_frame(store, project_id=pid)
    assert len(frame) == 20 and frame["ls_annotation_id"].is_unique
    assert set(frame["annotator"]) == {"ann1@example.com", "ann2@example.com"}
    assert set(frame["lead_time"]) == {4.5, 6.0}
    assert (frame["origin"] == "labelstudio").all() and frame["created_at"].notna().all()
    got = {(r.document_id, r.annotator): r.label for r in frame.itertuples()}
    assert got[(docs[7], "ann1@example.com")] == "A" and got[(docs[7], "ann2@example.com")] == "B"
    assert all(r.labels == [r.label] for r in frame.itertuples())

    again = pull(store, ls_client, config=cfg, project=pushed["project"])
    assert again["annotations_new"] == 0 and again["annotations_updated"] == 0 and again["annotations_deleted"] == 0
    assert len(ls_store.project_annotations_frame(store, project_id=pid)) == 20

    from curation.commands.labelstudio import run_agreement

    rep = run_agreement(store, project=pushed["project"], domain=None, config=cfg, n_boot=200)
    assert rep["cohen_kappa"][0]["kappa"] == pytest.approx(COHEN)
    assert rep["fleiss_kappa"]["value"] == pytest.approx(FLEISS, abs=1e-6)
    assert rep["krippendorff_alpha"]["value"] == pytest.approx(ALPHA, abs=1e-6)
    assert rep["ties"] == sorted(docs[7:])  # one A and one B each: flagged for adjudication
    assert {c["document_id"]: c["label"] for c in rep["consensus"] if not c["tie"]} == dict(
        zip(docs[:7], X[:7], strict=True))


def test_updated_deleted_and_cancelled_annotations(sqlite_url, ls_client, ls_config) -> None:  # type: ignore[no-untyped-def]
    from store.documents import annotations_frame
    from store.engine import open_store

    store = open_store(sqlite_url)
    a, b = add_documents(store, ["first", "second"], domain="financial")
    pushed = push(store, ls_client, config=ls_config, labels=SENTIMENT)
    tasks = task_of(ls_client, pushed["project_id"])
    (u1,) = annotators(ls_client, "editor")
    ann = ls_client.create_annotation(tasks[a], result=choice("positive"), completed_by=u1, lead_time=2.0)
    skipped = ls_client.create_annotation(tasks[b], result=[], completed_by=u1, was_cancelled=True)
    assert pull(store, ls_client, config=ls_config)["annotations_new"] == 2  # the store knows one project

    ls_client.update_annotation(ann, result=choice("negative"), lead_time=3.0)
    upd = pull(store, ls_client, config=ls_config)
    assert upd["annotations_updated"] == 1 and upd["annotations_new"] == 0
    frame = ls_store.project_annotations_frame(store, project_id=pushed["project_id"]).set_index("ls_annotation_id")
    assert frame.loc[ann, "label"] == "negative" and frame.loc[ann, "version"] == 2
    assert frame.loc[ann, "lead_time"] == 3.0
    history = ls_store.annotation_history(store, ls_annotation_id=ann)
    assert [(h["version"], h["label"], h["reason"]) for h in history] == [(1, "positive", "updated")]
    assert bool(frame.loc[skipped, "was_cancelled"]) and pd.isna(frame.loc[skipped, "label"])
    assert set(annotations_frame(store, domain="financial")["label"]) == {"negative"}

    ls_client.delete_annotation(ann)
    gone = pull(store, ls_client, config=ls_config)
    assert gone["annotations_deleted"] == 1
    all_rows = ls_store.project_annotations_frame(store, project_id=pushed["project_id"], include_deleted=True)
    assert pd.notna(all_rows.set_index("ls_annotation_id").loc[ann, "deleted_at"])
    assert annotations_frame(store, domain="financial").empty
    assert [h["reason"] for h in ls_store.annotation_history(store, ls_annotation_id=ann)] == ["updated", "deleted"]


def test_pull_reads_only_what_changed(sqlite_url, ls_client, ls_config) -> None:  # type: ignore[no-untyped-def]
    from store.engine import open_store

    store = open_store(sqlite_url)
    docs = add_documents(store, [f"text {i}" for i in range(40)], domain="financial")
    cfg = ls_config.model_copy(update={"labelstudio": ls_config.labelstudio.model_copy(
        update={"pull_overlap_s": 0.0})})
    pushed = push(store, ls_client, config=cfg, labels=SENTIMENT)
    tasks = task_of(ls_client, pushed["project_id"])
    time.sleep(2.1)  # the server clock (whole seconds) must pass the import before the first pull
    ls_client.create_annotation(tasks[docs[0]], result=choice("neutral"))
    first = pull(store, ls_client, config=cfg, project=pushed["project"])
    assert first["tasks_seen"] == 1 and first["incremental"] is False  # a first pull reads annotated tasks only
    ref = pushed["project_ref"]
    mark = ls_store.get_state(store, ref, WATERMARK_KEY)
    time.sleep(1.1)  # so the watermark (capped by the server clock, whole seconds) can move
    ls_client.create_annotation(tasks[docs[5]], result=choice("positive"))
    second = pull(store, ls_client, config=cfg, project=pushed["project"])
    assert second["incremental"] is True
    assert second["annotations_new"] == 1 and second["tasks_seen"] <= 2
    assert ls_store.get_state(store, ref, WATERMARK_KEY) > mark  # type: ignore[operator]


def test_killed_pull_resumes_without_gaps_or_duplicates(tmp_path: Path, ls_env, ls_config) -> None:  # type: ignore[no-untyped-def]
    from store.engine import open_store

    db = tmp_path / "curate.db"
    store = open_store(f"sqlite:///{db}")
    docs = add_documents(store, [f"text {i}" for i in range(25)], domain="financial")
    client = LabelStudioClient(ls_env["LABEL_STUDIO_URL"], ls_env["LABEL_STUDIO_API_KEY"])
    pushed = push(store, client, config=ls_config, labels=SENTIMENT)
    assert pull(store, client, config=ls_config, project=pushed["project"])["tasks_seen"] == 0
    tasks = task_of(client, pushed["project_id"])
    for i, doc in enumerate(docs):
        client.create_annotation(tasks[doc], result=choice(SENTIMENT[i % 3]))
    (tmp_path / "curate.toml").write_text(f'[labelstudio]\nproject = "{ls_config.labelstudio.project}"\n'
                                          "batch_size = 10\n")
    args = ("pull", "--db", str(db), "--config", str(tmp_path / "curate.toml"), "--project", pushed["project"],
            "--json")
    mark = ls_store.get_state(store, pushed["project_ref"], WATERMARK_KEY)
    killed = curate_cli(*args, env={**ls_env, KILL_HOOK_ENV: "1"}, cwd=tmp_path)
    assert killed.returncode == 137, killed.stderr
    assert len(ls_store.project_annotations_frame(store, project_id=pushed["project_id"])) == 10
    assert ls_store.get_state(store, pushed["project_ref"], WATERMARK_KEY) >= mark  # type: ignore[operator]

    resumed = cli_json(curate_cli(*args, env=ls_env, cwd=tmp_path))
    assert resumed["annotations_new"] == 15
    assert {"project_id", "annotations_new", "annotations_updated", "tasks_seen"} <= set(resumed)
    frame = ls_store.project_annotations_frame(store, project_id=pushed["project_id"])
    assert len(frame) == 25 and sorted(frame["document_id"]) == sorted(docs)
    assert dict(zip(frame["document_id"], frame["label"], strict=True)) == {
        d: SENTIMENT[i % 3] for i, d in enumerate(docs)}


def test_agreement_cli_and_missing_project(tmp_path: Path, ls_env, ls_config) -> None:  # type: ignore[no-untyped-def]
    from store.engine import open_store

    db = tmp_path / "curate.db"
    store = open_store(f"sqlite:///{db}")
    docs = add_documents(store, [f"message {i}" for i in range(10)], domain="customer_service")
    client = LabelStudioClient(ls_env["LABEL_STUDIO_URL"], ls_env["LABEL_STUDIO_API_KEY"])
    pushed = push(store, client, config=ls_config, labels=AB)
    tasks = task_of(client, pushed["project_id"])
    u1, u2 = annotators(client, "cli1", "cli2")
    for doc, x, y in zip(docs, X, Y, strict=True):
        client.create_annotation(tasks[doc], result=choice(x), completed_by=u1)
        client.create_annotation(tasks[doc], result=choice(y), completed_by=u2)
    pulled = cli_json(curate_cli("pull", "--db", str(db), "--project", pushed["project"], "--json", env=ls_env,
                                 cwd=tmp_path))
    assert pulled["annotations_new"] == 20
    out = tmp_path / "consensus.csv"
    rep = cli_json(curate_cli("agreement", "--db", str(db), "--project", pushed["project"], "--bootstrap", "100",
                              "--consensus-out", str(out), "--json", cwd=tmp_path))
    assert rep["cohen_kappa"][0]["kappa"] == pytest.approx(COHEN)
    assert rep["krippendorff_alpha"]["value"] == pytest.approx(ALPHA, abs=1e-6)
    assert len(out.read_text().splitlines()) == 11
    human = curate_cli("agreement", "--db", str(db), "--project", pushed["project"], "--bootstrap", "50",
                       cwd=tmp_path)
    assert human.returncode == 0 and "Fleiss" in human.stdout
    missing = curate_cli("agreement", "--db", str(db), "--project", "nope", cwd=tmp_path)
    assert missing.returncode == 2 and pushed["project"] in missing.stderr
