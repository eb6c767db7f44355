"""`curate nightly`: steps and their runs, idempotency, the lock, failure propagation, metrics, crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import shared_data

STEP_NAMES = ["pull", "train", "audit", "sample", "push", "export", "report"]


def make_project(tmp_path: Path, tiny_bert: Path, *, db_url: str | None = None, rows: int = 300, labeled: int = 80,
                 extra: str = "") -> tuple[Path, str]:
    """A project folder: `curate.toml` (tiny encoder, small batch) and a store with BANKING77 rows, some labeled."""
    from curation.config import load_config
    from pipelines.ingest import ingest_files
    from store.engine import open_store

    db_url = db_url or f"sqlite:///{tmp_path / 'curate.db'}"
    frame = pd.read_csv(shared_data("banking77", "train.csv"))
    keep = frame["category"].value_counts().index[:8]
    frame = frame[frame["category"].isin(keep)].sample(rows, random_state=0).reset_index(drop=True)
    frame["label"] = [c if i < labeled else None for i, c in enumerate(frame["category"])]
    data = tmp_path / "data.csv"
    frame[["text", "label"]].to_csv(data, index=False)
    cfg = tmp_path / "curate.toml"
    cfg.write_text(
        f'[store]\nurl = "{db_url}"\n'
        f'[active_learning]\nmodel = "{tiny_bert}"\ndevice = "cpu"\nmin_labels = 20\n'
        f'embeddings_dir = "{tmp_path / "emb"}"\n'
        f'[export]\nout = "{tmp_path / "exports"}"\n'
        f'[nightly]\nbatch = 10\ndomain = "customer_service"\nout = "{tmp_path / "nightly"}"\n' + extra,
        encoding="utf-8")
    store = open_store(db_url)
    ingest_files(store, [data], domain="customer_service", config=load_config(cfg), label_column="label")
    store.close()
    return cfg, db_url


def cli(*args: str, cwd: Path, timeout: float = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "curation.cli", *args], capture_output=True, text=True,
                          cwd=str(cwd), env=full, timeout=timeout, check=False)


def counts(db_url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from store.engine import open_store
    from store.models import Annotation, Selection, Task

    store = open_store(db_url)
    with store.connect() as conn:
        out = {
            "selections": conn.execute(select(func.count()).select_from(Selection)).scalar_one(),
            "selected_docs": conn.execute(select(func.count(func.distinct(Selection.document_id)))).scalar_one(),
            "tasks": conn.execute(select(func.count()).select_from(Task)).scalar_one(),
            "task_docs": conn.execute(select(func.count(func.distinct(Task.document_id)))).scalar_one(),
            "annotations": conn.execute(select(func.count()).select_from(Annotation)).scalar_one(),
        }
    store.close()
    return out


def test_nightly_runs_every_step_and_is_idempotent(tmp_path: Path, tiny_bert: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .labelstudio/env of the checkout is found
    cfg, db_url = make_project(tmp_path, tiny_bert)
    metrics = tmp_path / "prom" / "curate.prom"
    first = cli("nightly", "--config", str(cfg), "--json", "--metrics-file", str(metrics), "--log-format", "json",
                cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    assert one["status"] == "ok"
    assert list(one["steps"]) == STEP_NAMES
    assert {k: v["status"] for k, v in one["steps"].items()} == {
        "pull": "skipped", "train": "ok", "audit": "ok", "sample": "ok", "push": "skipped", "export": "ok",
        "report": "ok"}
    assert "not configured" in one["steps"]["pull"]["reason"]
    assert one["steps"]["sample"]["counts"]["selected"] == 10
    assert one["steps"]["train"]["counts"]["labeled"] == 80
    assert 0 < one["steps"]["train"]["counts"]["cv_accuracy"] <= 1
    assert one["steps"]["export"]["counts"]["rows"] == 80
    assert all(isinstance(v["seconds"], float) for v in one["steps"].values())
    # structured logs: one JSON object per line on stderr
    events = [json.loads(line)["event"] for line in first.stderr.splitlines() if line.startswith("{")]
    assert events[0] == "nightly.start" and events[-1] == "nightly.end" and events.count("step.end") == 7
    prom = metrics.read_text()
    assert "curate_nightly_success 1" in prom
    assert 'curate_nightly_step_count{step="sample",count="selected"} 10' in prom
    assert "curate_nightly_last_success_timestamp_seconds 0" not in prom

    from curation.config import load_config
    from pipelines.nightly import run_nightly
    from store.engine import open_store

    config = load_config(cfg)
    store = open_store(db_url)
    before = counts(db_url)
    two = run_nightly(store, config=config, log=lambda *a, **k: None)
    assert two["status"] == "ok", two
    assert two["steps"]["sample"]["counts"]["reused"] is True
    assert two["steps"]["audit"]["counts"]["reused"] is True
    assert one["steps"]["audit"]["counts"]["audited"] == 80
    assert two["steps"]["export"]["counts"]["existed"] is True
    assert two["steps"]["export"]["counts"]["version"] == one["steps"]["export"]["counts"]["version"]
    assert counts(db_url) == before  # no duplicate selections
    assert before["selections"] == before["selected_docs"] == 10

    # another night selects a new batch, never a pending document again
    third = run_nightly(store, config=config, night="2099-01-01", log=lambda *a, **k: None)
    store.close()
    assert third["steps"]["sample"]["counts"]["reused"] is False
    after = counts(db_url)
    assert after["selections"] == after["selected_docs"] == 20

    runs = json.loads(cli("runs", "--config", str(cfg), "--json", "--kind", "nightly", cwd=tmp_path).stdout)["runs"]
    assert [r["status"] for r in runs] == ["ok", "ok", "ok"]
    assert runs[0]["stats"]["steps"]["sample"]["status"] == "ok"
    children = json.loads(cli("runs", "--config", str(cfg), "--json", "--kind", "nightly:train",
                              cwd=tmp_path).stdout)["runs"]
    assert {c["parent_id"] for c in children} == {r["id"] for r in runs}
    assert (tmp_path / "nightly" / "report.html").is_file()


def test_lock_refuses_an_overlapping_night(db_url: str, tmp_path: Path) -> None:
    from curation.errors import LockError
    from store.engine import open_store
    from store.nightly import nightly_lock

    a, b = open_store(db_url), open_store(db_url)
    with nightly_lock(a) as held:
        assert held["kind"] == ("file" if db_url.startswith("sqlite") else "advisory")
        with pytest.raises(LockError) as err, nightly_lock(b):
            pass
        assert "Another nightly run holds" in str(err.value) and "pid" in str(err.value)
        assert err.value.exit_code == 3
    with nightly_lock(b):  # released with the first holder
        pass
    a.close()
    b.close()


def test_cli_exits_3_while_another_night_runs(tmp_path: Path, tiny_bert: Path) -> None:
    from store.engine import open_store
    from store.nightly import nightly_lock

    cfg, db_url = make_project(tmp_path, tiny_bert, rows=60, labeled=30)
    store = open_store(db_url)
    with nightly_lock(store):
        proc = cli("nightly", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "Another nightly run holds" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    store.close()


def test_labelstudio_down_fails_the_night_and_blocks_dependents(tmp_path: Path, tiny_bert: Path) -> None:
    from tests.fixtures_labelstudio import closed_port_url

    cfg, db_url = make_project(tmp_path, tiny_bert, rows=60, labeled=30,
                               extra=f'[labelstudio]\nurl = "{closed_port_url()}"\napi_key = "x"\nretries = 0\n'
                                     'timeout_s = 5\n')
    proc = cli("nightly", "--config", str(cfg), "--json", cwd=tmp_path)
    assert proc.returncode == 1
    res = json.loads(proc.stdout)
    assert res["status"] == "failed" and list(res["failed"]) == ["pull"]
    assert "LabelStudioError" in res["failed"]["pull"]
    steps = {k: v["status"] for k, v in res["steps"].items()}
    assert steps == {"pull": "failed", "train": "blocked", "audit": "blocked", "sample": "blocked",
                     "push": "blocked", "export": "blocked", "report": "ok"}
    assert res["steps"]["sample"]["reason"] == "train did not succeed"
    assert counts(db_url)["selections"] == 0


def test_schedule_prints_a_crontab_line_and_systemd_units(tmp_path: Path) -> None:
    cfg = tmp_path / "curate.toml"
    cfg.write_text("[nightly]\nbatch = 5\n", encoding="utf-8")
    res = json.loads(cli("schedule", "--print-crontab", "--print-systemd", "--config", str(cfg), "--json",
                         cwd=tmp_path).stdout)
    line = res["crontab"]
    fields = line.split(" ", 5)
    assert fields[:5] == ["15", "2", "*", "*", "*"]
    assert f"cd {tmp_path}" in line and "flock -n " in line and f"--config {cfg}" in line
    assert f">> {tmp_path / '.curate' / 'nightly.log'} 2>&1" in line
    exe = line.split("flock -n ", 1)[1].split()[1]
    assert Path(exe).is_absolute() and Path(exe).name == "curate"
    assert "OnCalendar=*-*-* 02:15:00" in res["systemd"]
    assert cli("schedule", cwd=tmp_path).returncode == 2


@pytest.mark.slow
def test_killed_nights_leave_the_store_consistent(tmp_path: Path, tiny_bert: Path) -> None:
    """SIGKILL `curate nightly` at seeded random moments (>= 10 times), then run it cleanly once."""
    from pipelines.export import list_versions

    cfg, db_url = make_project(tmp_path, tiny_bert, rows=200, labeled=60)
    env = {"CURATE_CACHE_DIR": str(tmp_path / "cache")}
    rng = random.Random(7)
    # Calibrate: how long a whole night takes here, so the kills land across all steps.
    t0 = time.perf_counter()
    warm = cli("nightly", "--config", str(cfg), "--json", "--night", "2000-01-01", cwd=tmp_path, env=env)
    full = time.perf_counter() - t0
    assert warm.returncode == 0, warm.stderr
    kills = attempts = 0
    while kills < 10 and attempts < 16:
        night = f"2000-01-{2 + attempts // 4:02d}"  # several kills per night: a resumed night must not redo work
        attempts += 1
        proc = subprocess.Popen([sys.executable, "-m", "curation.cli", "nightly", "--config", str(cfg), "--night",
                                 night], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, **env})
        time.sleep(rng.uniform(0.2, full))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 10
    final = cli("nightly", "--config", str(cfg), "--json", "--night", "2000-01-05", cwd=tmp_path, env=env)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["status"] == "ok"

    c = counts(db_url)
    assert c["selections"] == c["selected_docs"]  # no document selected twice
    assert c["tasks"] == c["task_docs"]
    root = tmp_path / "exports"
    assert not list(root.glob(".tmp-*")), "a killed export's temporary folder was not cleaned"
    versions = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "latest"]
    assert versions and all((p / "manifest.json").is_file() for p in versions)
    assert {v["version"] for v in list_versions(root)} == {p.name for p in versions}
    runs = json.loads(cli("runs", "--config", str(cfg), "--json", "--limit", "500", cwd=tmp_path).stdout)["runs"]
    nightly = [r for r in runs if r["kind"] == "nightly" or r["kind"].startswith("nightly:")]
    assert not [r for r in nightly if r["status"] == "running"]
    assert sum(r["status"] == "interrupted" for r in runs if r["kind"] == "nightly") >= 1
    from store.engine import open_store
    from store.nightly import sample_runs_of_night, selected_ids

    store = open_store(db_url)
    for night in {f"2000-01-{2 + i // 4:02d}" for i in range(attempts)}:
        ids = selected_ids(store, sample_runs_of_night(store, night=night))
        assert len(ids) <= 10  # at most one batch per night, however often the night was restarted
    store.close()


@pytest.mark.integration
def test_three_nights_against_label_studio(tmp_path: Path, tiny_bert: Path, ls_server: Any) -> None:
    """Night 1 sends a batch; annotators label it through the REST API; night 2 pulls those labels and sends the
    next batch; Label Studio is down for a night (fails clearly, nothing lost); night 3 catches up."""
    from curation.config import load_config
    from pipelines.ls_client import LabelStudioClient
    from pipelines.nightly import run_nightly
    from store.documents import annotations_frame
    from store.engine import open_store
    from tests.fixtures_labelstudio import choice, closed_port_url

    title = f"nightly-{os.getpid()}-{int(time.time())}"
    cfg, db_url = make_project(tmp_path, tiny_bert, rows=120, labeled=40, extra=(
        f'[labelstudio]\nurl = "{ls_server.url}"\napi_key = "{ls_server.api_key}"\nretries = 1\n'
        f'pull_overlap_s = 0\n'))
    config = load_config(cfg)
    config = config.model_copy(update={"nightly": config.nightly.model_copy(update={"project": title})})
    store = open_store(db_url)
    truth = dict(zip(*_truth(store), strict=True))
    client = LabelStudioClient(ls_server.url, ls_server.api_key, retries=1)
    users = [client.create_user(email=f"{n}-{title}@example.com", password="annotate-123") for n in ("a1", "a2")]
    quiet = {"log": lambda *a, **k: None}

    def annotate(project_id: int) -> int:
        done = 0
        for page in client.iter_tasks(project_id, include=("id", "meta", "total_annotations")):
            for t in page:
                if not t.get("total_annotations"):
                    doc = int(t["meta"]["document_id"])
                    client.create_annotation(int(t["id"]), result=choice(truth[doc]), completed_by=users[done % 2],
                                             lead_time=5.0 + done)
                    done += 1
        return done

    n1 = run_nightly(store, config=config, night="2026-01-01", **quiet)
    assert n1["status"] == "ok", n1
    assert n1["steps"]["pull"]["status"] == "skipped"  # no project before the first push
    assert n1["steps"]["push"]["counts"]["pushed"] == 10
    pid = int(n1["steps"]["push"]["counts"]["project_id"])
    v1 = n1["steps"]["export"]["counts"]
    assert v1["rows"] == 40
    assert annotate(pid) == 10
    time.sleep(1.1)

    n2 = run_nightly(store, config=config, night="2026-01-02", **quiet)
    assert n2["status"] == "ok", n2
    assert n2["steps"]["pull"]["counts"]["annotations_new"] == 10
    assert n2["steps"]["push"]["counts"]["pushed"] == 10
    assert n2["steps"]["export"]["counts"]["rows"] == 50 and n2["steps"]["export"]["counts"]["version"] != v1["version"]
    assert annotate(pid) == 10
    time.sleep(1.1)

    down = config.model_copy(update={"labelstudio": config.labelstudio.model_copy(
        update={"url": closed_port_url(), "retries": 0, "timeout_s": 5})})
    before = counts(db_url)
    nd = run_nightly(store, config=down, night="2026-01-03", **quiet)
    assert nd["status"] == "failed" and list(nd["failed"]) == ["pull"]
    assert nd["steps"]["sample"]["status"] == "blocked" and nd["steps"]["report"]["status"] == "ok"
    assert counts(db_url) == before  # nothing lost, nothing half-done

    n3 = run_nightly(store, config=config, night="2026-01-04", **quiet)
    assert n3["status"] == "ok", n3
    assert n3["steps"]["pull"]["counts"]["annotations_new"] == 10  # the missed night's labels arrive now
    assert n3["steps"]["push"]["counts"]["pushed"] == 10
    assert n3["steps"]["export"]["counts"]["rows"] == 60
    c = counts(db_url)
    assert c["tasks"] == c["task_docs"] == 30 and c["selections"] == c["selected_docs"] == 30
    human = annotations_frame(store, domain="customer_service")
    assert (human["origin"] == "labelstudio").sum() == 20
    page = (tmp_path / "nightly" / "report.html").read_text(encoding="utf-8")
    for pid_ in ("labels-over-time", "annotator-throughput", "lead-time", "al-yield", "split-sizes", "drift"):
        assert f'<section id="{pid_}" data-plot="yes">' in page
    client.close()
    store.close()


def _truth(store: Any) -> tuple[list[int], list[str]]:
    """The BANKING77 intent of every document (the simulated annotators answer with it)."""
    from store.documents import documents_frame
    from store.labelstudio import domain_labels

    frame = pd.read_csv(shared_data("banking77", "train.csv"))
    intent = {str(t).strip(): c for t, c in zip(frame["text"], frame["category"], strict=True)}
    fallback = domain_labels(store, "customer_service")[0]
    docs = documents_frame(store, domain="customer_service", columns=("id", "raw_text"))
    return [int(i) for i in docs["id"]], [intent.get(str(t).strip(), fallback) for t in docs["raw_text"]]


def test_a_store_with_two_domains_gets_a_batch_per_domain(tmp_path: Path, tiny_bert: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from curation.config import load_config
    from pipelines.nightly import run_nightly
    from store.engine import open_store
    from tests.fixtures_labelstudio import add_documents

    monkeypatch.chdir(tmp_path)
    cfg, db_url = make_project(tmp_path, tiny_bert, rows=60, labeled=30)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('domain = "customer_service"\n', ""), encoding="utf-8")
    lines = shared_data("financial_phrasebank", "Sentences_AllAgree.txt").read_text(encoding="latin-1").splitlines()
    pairs = [line.rsplit("@", 1) for line in lines[:60]]
    store = open_store(db_url)
    add_documents(store, [t for t, _ in pairs], domain="financial",
                  labels=[lab if i < 30 else None for i, (_, lab) in enumerate(pairs)])
    res = run_nightly(store, config=load_config(cfg), labelstudio=False, log=lambda *a, **k: None)
    assert res["status"] == "ok", res
    sample = res["steps"]["sample"]["counts"]
    assert sample["customer_service.selected"] == 10 and sample["financial.selected"] == 10
    assert res["steps"]["train"]["counts"]["financial.labeled"] == 30
    assert res["steps"]["export"]["counts"]["rows"] == 60  # one version holding both domains
    assert counts(db_url)["selected_docs"] == 20
    store.close()
