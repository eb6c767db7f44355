"""`curate push` against a real Label Studio: what is sent, exactly once, across re-runs, kills and faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from curation.config import Config
from curation.errors import ConfigError, InputError, LabelStudioError
from pipelines.ls_client import LabelStudioClient
from pipelines.push import KILL_HOOK_ENV, build_task, push, resolve_labels, task_problem
from store import labelstudio as ls_store
from tests.fixtures_labelstudio import (
    FaultyProxy,
    add_documents,
    add_predictions,
    cli_json,
    closed_port_url,
    curate_cli,
)

SENTIMENT = ["positive", "negative", "neutral"]


def server_tasks(client: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    return [t for page in client.iter_tasks(project_id, include=("id", "data", "meta", "predictions"),
                                            all_fields=True) for t in page]


def with_config(cfg: Config, **labelstudio: Any) -> Config:
    return cfg.model_copy(update={"labelstudio": cfg.labelstudio.model_copy(update=labelstudio)})


# ------------------------------------------------------------------------------------------------ no server needed
def test_task_validation_reasons() -> None:
    assert task_problem("fine text", max_chars=100) is None
    assert task_problem("   ", max_chars=100) == "empty_text"
    assert task_problem("half a pair \ud800 here", max_chars=100) == "lone_surrogate"
    assert task_problem("bell \x07 ringing", max_chars=100) == "control_characters"
    assert task_problem("C1 \x85 control", max_chars=100) == "control_characters"
    assert task_problem("x" * 101, max_chars=100) == "too_long"
    assert task_problem("tabs\tand\nnewlines\r\n are fine", max_chars=100) is None
    doc = {"id": 7, "text": "ok", "source": "s", "domain": "financial"}
    task, why = build_task(doc, labels=set(SENTIMENT), max_chars=100,
                           prediction={"model_version": "m1", "label": "bullish", "score": 0.9})
    assert task is None and why == "prediction_label_unknown"
    task, why = build_task(doc, labels=set(SENTIMENT), max_chars=100,
                           prediction={"model_version": "m1", "label": "positive", "score": float("nan")})
    assert task is None and why == "prediction_bad_score"
    task, why = build_task(doc, labels=set(SENTIMENT), max_chars=100,
                           prediction={"model_version": "m1", "label": "positive", "score": 0.75})
    assert why is None and task is not None
    assert task["predictions"] == [{"model_version": "m1", "score": 0.75, "result": [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}]}]
    assert task["data"]["document_id"] == 7 and task["meta"]["document_id"] == 7


def test_label_set_comes_from_override_then_config_then_store(sqlite_url: str) -> None:
    from store.engine import open_store

    store = open_store(sqlite_url)
    add_documents(store, ["a", "b"], domain="financial", labels=["up", "down"])
    empty = Config()
    assert resolve_labels(store, empty, "financial") == ["down", "up"]
    configured = Config.model_validate({"domains": {"financial": {"labels": SENTIMENT}}})
    assert resolve_labels(store, configured, "financial") == SENTIMENT
    assert resolve_labels(store, configured, "financial", ["x", "y"]) == ["x", "y"]
    with pytest.raises(ConfigError, match="repeats"):
        resolve_labels(store, configured, "financial", ["x", "x"])
    assert resolve_labels(store, empty, "customer_service") == []


def test_mixed_domains_are_refused_before_any_request(sqlite_url: str) -> None:
    from store.engine import open_store

    store = open_store(sqlite_url)
    add_documents(store, ["a"], domain="financial")
    add_documents(store, ["b"], domain="customer_service")
    client = LabelStudioClient(closed_port_url(), "k", retries=0)
    with pytest.raises(InputError, match="several domains"):
        push(store, client, config=Config(), labels=SENTIMENT)
    with pytest.raises(InputError, match="No documents"):
        push(store, client, config=Config(), source="nope", labels=SENTIMENT)


# ------------------------------------------------------------------------------------------------ real server
@pytest.mark.integration
def test_push_sends_masked_text_metadata_and_predictions_once(store, ls_client, ls_config) -> None:  # type: ignore[no-untyped-def]
    raw = ["Call me on +44 20 7946 0958 about the merger", "Profit up 10%", "Shares fell", "Neutral outlook",
           "Mixed results"]
    masked = ["Call me on [PHONE] about the merger", "Profit up 10%", "Shares fell", "Neutral outlook",
              "Mixed results"]
    ids = add_documents(store, masked, raw_texts=raw, domain="financial", source="news")
    labeled = add_documents(store, ["Already labeled"], domain="financial", labels=["neutral"], source="old")[0]
    add_predictions(store, {ids[1]: ("positive", 0.91), ids[2]: ("bullish", 0.5)}, model_version="clf-v1")
    cfg = with_config(ls_config, annotations_per_task=2)

    first = push(store, ls_client, config=cfg, labels=SENTIMENT)
    assert first["created"] is True
    assert first["pushed"] == 4 and first["already_present"] == 0
    assert first["skipped"] == 1 and first["skipped_reasons"] == {"prediction_label_unknown": 1}
    assert first["skipped_examples"] == [{"document_id": ids[2], "reason": "prediction_label_unknown"}]
    assert first["with_predictions"] == 1

    project = ls_client.get_project(first["project_id"])
    assert project["title"] == f"{cfg.labelstudio.project}-financial"
    assert project["maximum_annotations"] == 2
    assert project["model_version"] == "clf-v1"
    tasks = server_tasks(ls_client, first["project_id"])
    by_doc = {t["data"]["document_id"]: t for t in tasks}
    assert sorted(by_doc) == sorted([ids[0], ids[1], ids[3], ids[4]])
    assert by_doc[ids[0]]["data"]["text"] == masked[0]
    assert "7946" not in json.dumps(tasks)
    assert by_doc[ids[0]]["data"]["source"] == "news"
    assert by_doc[ids[0]]["meta"]["document_id"] == ids[0] and by_doc[ids[0]]["meta"]["domain"] == "financial"
    (pred,) = by_doc[ids[1]]["predictions"]
    assert pred["model_version"] == "clf-v1" and pred["score"] == pytest.approx(0.91)
    assert pred["result"][0]["value"]["choices"] == ["positive"]
    assert by_doc[ids[3]]["predictions"] == []

    rows = ls_store.task_rows(store, first["project_ref"])
    assert dict(zip(rows["document_id"], rows["ls_task_id"], strict=True)) == {d: t["id"] for d, t in by_doc.items()}

    again = push(store, ls_client, config=cfg, labels=SENTIMENT)
    assert again["created"] is False and again["project_id"] == first["project_id"]
    assert again["pushed"] == 0 and again["already_present"] == 4 and again["skipped"] == 1
    assert len(server_tasks(ls_client, first["project_id"])) == 4

    labeled_too = push(store, ls_client, config=cfg, labels=SENTIMENT, include_labeled=True)
    assert labeled_too["pushed"] == 1
    assert labeled in {t["data"]["document_id"] for t in server_tasks(ls_client, first["project_id"])}
    assert len(ls_store.task_rows(store, first["project_ref"])) == 5


@pytest.mark.integration
def test_bad_documents_are_skipped_and_never_poison_the_project(sqlite_url, ls_client, ls_config) -> None:  # type: ignore[no-untyped-def]
    from store.engine import open_store

    store = open_store(sqlite_url)
    texts = ["good one", "bell \x07 inside", "x" * 500, "   ", "good two", "nul \x00 byte"]
    ids = add_documents(store, texts, domain="financial")
    cfg = with_config(ls_config, max_text_chars=200)
    result = push(store, ls_client, config=cfg, labels=SENTIMENT)
    assert result["pushed"] == 2
    assert result["skipped_reasons"] == {"control_characters": 2, "too_long": 1, "empty_text": 1}
    tasks = server_tasks(ls_client, result["project_id"])
    assert sorted(t["data"]["document_id"] for t in tasks) == [ids[0], ids[4]]


@pytest.mark.integration
def test_priority_order_follows_the_latest_selection(sqlite_url, ls_client, ls_config) -> None:  # type: ignore[no-untyped-def]
    from store.engine import open_store
    from store.models import Selection
    from store.runs import start_run

    store = open_store(sqlite_url)
    a, b, c, d = add_documents(store, ["doc a", "doc b", "doc c", "doc d"], domain="financial")
    old_run = start_run(store, kind="sample")
    new_run = start_run(store, kind="sample")
    with store.connect() as conn:
        conn.execute(Selection.__table__.insert(), [
            {"run_id": old_run, "document_id": b, "strategy": "margin", "score": 0.9, "rank": 0, "domain": "financial"},
            {"run_id": new_run, "document_id": c, "strategy": "margin", "score": 0.8, "rank": 0, "domain": "financial"},
            {"run_id": new_run, "document_id": a, "strategy": "margin", "score": 0.7, "rank": 1, "domain": "financial"},
        ])
    result = push(store, ls_client, config=ls_config, labels=SENTIMENT, limit=3)
    assert result["pushed"] == 3
    tasks = sorted(server_tasks(ls_client, result["project_id"]), key=lambda t: t["id"])
    assert [t["data"]["document_id"] for t in tasks] == [c, a, b]
    assert tasks[0]["meta"]["priority"] == pytest.approx(0.8)
    rest = push(store, ls_client, config=ls_config, labels=SENTIMENT, order="random", seed=3)
    assert rest["pushed"] == 1 and rest["already_present"] == 3
    assert {t["data"]["document_id"] for t in server_tasks(ls_client, result["project_id"])} == {a, b, c, d}


@pytest.mark.integration
def test_push_killed_after_the_first_batch_resumes_without_duplicates(tmp_path: Path, ls_env, ls_config) -> None:  # type: ignore[no-untyped-def]
    from pipelines.pull import pull
    from store.engine import open_store

    db = tmp_path / "curate.db"
    store = open_store(f"sqlite:///{db}")
    ids = add_documents(store, [f"headline number {i}" for i in range(25)], domain="financial")
    (tmp_path / "curate.toml").write_text(
        f'[labelstudio]\nproject = "{ls_config.labelstudio.project}"\nbatch_size = 10\nretries = 1\n'
        '[domains.financial]\nlabels = ["positive", "negative", "neutral"]\n')
    args = ("push", "--db", str(db), "--config", str(tmp_path / "curate.toml"), "--json")

    killed = curate_cli(*args, env={**ls_env, KILL_HOOK_ENV: "1"}, cwd=tmp_path)
    assert killed.returncode == 137, killed.stderr
    client = LabelStudioClient(ls_env["LABEL_STUDIO_URL"], ls_env["LABEL_STUDIO_API_KEY"])
    project = client.require_project(f"{ls_config.labelstudio.project}-financial")
    on_server = server_tasks(client, project["id"])
    assert len(on_server) == 10
    ref = ls_store.get_project(store, server_url=client.url, project_id=project["id"])["ref"]  # type: ignore[index]
    assert ls_store.count_tasks(store, ref) == 0

    # An annotator starts before the push is repaired: the pull still maps the task to its document.
    first_task = min(on_server, key=lambda t: t["id"])
    client.create_annotation(first_task["id"], result=[{"from_name": "label", "to_name": "text", "type": "choices",
                                                         "value": {"choices": ["neutral"]}}])
    pulled = pull(store, client, config=ls_config, project=project["title"])
    assert pulled["annotations_new"] == 1 and pulled["tasks_recorded"] >= 1

    resumed = cli_json(curate_cli(*args, env=ls_env, cwd=tmp_path))
    assert resumed["project_id"] == project["id"]
    # Ten are in the project; the annotated one is labeled now, so it no longer counts among the selection.
    assert resumed["pushed"] == 15 and resumed["already_present"] == 9
    assert resumed["reconciled"] + pulled["tasks_recorded"] == 10
    assert {"project_id", "pushed", "already_present", "skipped"} <= set(resumed)
    docs = [t["data"]["document_id"] for t in server_tasks(client, project["id"])]
    assert sorted(docs) == sorted(ids) and len(docs) == len(set(docs))
    rows = ls_store.task_rows(store, ref)
    assert sorted(rows["document_id"]) == sorted(ids)
    assert rows["ls_task_id"].notna().all() and rows["ls_task_id"].is_unique
    assert cli_json(curate_cli(*args, env=ls_env, cwd=tmp_path))["pushed"] == 0


@pytest.mark.integration
def test_unanswered_import_is_reconciled_not_sent_twice(sqlite_url, ls_server, ls_config) -> None:  # type: ignore[no-untyped-def]
    from store.engine import open_store

    store = open_store(sqlite_url)
    ids = add_documents(store, [f"text {i}" for i in range(12)], domain="financial")

    def drop_first_import(method: str, path: str, n: int) -> str | None:
        return "drop" if method == "POST" and "/import" in path and not proxy.faults else None

    with FaultyProxy(ls_server.url, drop_first_import) as proxy:
        client = LabelStudioClient(proxy.url, ls_server.api_key, retries=2, backoff_s=0.05)
        result = push(store, client, config=ls_config, labels=SENTIMENT, batch_size=5)
    assert [f[2] for f in proxy.faults] == ["drop"]
    assert result["pushed"] == 12 and result["resent_after_unknown_outcome"] == 0
    direct = LabelStudioClient(ls_server.url, ls_server.api_key)
    docs = [t["data"]["document_id"] for t in server_tasks(direct, result["project_id"])]
    assert sorted(docs) == sorted(ids)


@pytest.mark.integration
def test_server_failing_mid_push_leaves_a_consistent_store(sqlite_url, ls_server, ls_config) -> None:  # type: ignore[no-untyped-def]
    from store.engine import open_store

    store = open_store(sqlite_url)
    ids = add_documents(store, [f"text {i}" for i in range(12)], domain="financial")
    imports = []

    def fail_after_first_import(method: str, path: str, n: int) -> str | None:
        if method == "POST" and "/import" in path:
            imports.append(n)
            return "refuse" if len(imports) > 1 else None
        return None

    with FaultyProxy(ls_server.url, fail_after_first_import) as proxy:
        client = LabelStudioClient(proxy.url, ls_server.api_key, retries=2, backoff_s=0.05)
        with pytest.raises(LabelStudioError, match="503") as err:
            push(store, client, config=ls_config, labels=SENTIMENT, batch_size=5)
    assert proxy.url in str(err.value)
    direct = LabelStudioClient(ls_server.url, ls_server.api_key)
    project = direct.require_project(f"{ls_config.labelstudio.project}-financial")
    ref = ls_store.get_project(store, server_url=proxy.url, project_id=project["id"])["ref"]  # type: ignore[index]
    assert ls_store.count_tasks(store, ref) == 5 == len(server_tasks(direct, project["id"]))

    # Seen through another URL the project is new to the store: reconciling finds the five tasks already there.
    done = push(store, direct, config=ls_config, labels=SENTIMENT, batch_size=5)
    assert done["pushed"] == 7 and done["reconciled"] == 5 and done["already_present"] == 5
    docs = [t["data"]["document_id"] for t in server_tasks(direct, project["id"])]
    assert sorted(docs) == sorted(ids)


@pytest.mark.integration
def test_stopped_server_wrong_key_and_missing_project_are_clear_errors(sqlite_url, ls_server, ls_config) -> None:  # type: ignore[no-untyped-def]
    from pipelines.pull import pull
    from store.engine import open_store

    store = open_store(sqlite_url)
    add_documents(store, ["a text"], domain="financial")
    url = closed_port_url()
    stopped = LabelStudioClient(url, ls_server.api_key, retries=2, backoff_s=0.05)
    with pytest.raises(LabelStudioError) as err:
        push(store, stopped, config=ls_config, labels=SENTIMENT)
    msg = str(err.value)
    assert url in msg and "connection refused" in msg and "3 attempts" in msg and "make labelstudio" in msg
    with pytest.raises(LabelStudioError, match="connection refused"):
        pull(store, stopped, config=ls_config, project="anything")
    assert ls_store.known_projects(store) == []

    bad_key = LabelStudioClient(ls_server.url, "0" * 40, retries=0)
    with pytest.raises(LabelStudioError, match="API key rejected") as err:
        push(store, bad_key, config=ls_config, labels=SENTIMENT)
    assert "0" * 40 not in str(err.value)

    good = LabelStudioClient(ls_server.url, ls_server.api_key)
    made = push(store, good, config=ls_config, labels=SENTIMENT)
    with pytest.raises(LabelStudioError, match="has no project 'no-such-project'") as err:
        pull(store, good, config=ls_config, project="no-such-project")
    assert f"{made['project']!r} (id {made['project_id']})" in str(err.value)


@pytest.mark.integration
def test_cli_never_prints_the_key(tmp_path: Path, ls_env, ls_config) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "curate.db"
    from store.engine import open_store

    add_documents(open_store(f"sqlite:///{db}"), ["one", "two"], domain="financial")
    env = dict(ls_env)
    proc = curate_cli("push", "--db", str(db), "--labels", "positive,negative,neutral", "--project",
                      f"{ls_config.labelstudio.project}-cli", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pushed 2" in proc.stdout
    bad = curate_cli("pull", "--db", str(db), "--project", "x", env={**env, "LABEL_STUDIO_API_KEY": "secret-key-123"},
                     cwd=tmp_path)
    assert bad.returncode == 1 and "API key rejected" in bad.stderr
    for out in (proc.stdout, proc.stderr, bad.stdout, bad.stderr):
        assert ls_env["LABEL_STUDIO_API_KEY"] not in out and "secret-key-123" not in out
