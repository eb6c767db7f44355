"""Label Studio benchmark: push 10k tasks; pull after 1,000 of 50k tasks changed; beside the naive SDK ways.

Against a real Label Studio 1.23.2 (started here from `.ls-venv` on a free port with a temporary data folder, unless
--url/--api-key name one). Texts are real financial tweets (../shared/data/twitter_financial_news_sentiment),
numbered to make 60k distinct documents; 10% of the pushed ones carry a model prediction (a pre-annotation).

Measured in the same run:
- `curate push` of 10,000 documents (store reads, validation, batches of 1,000, store writes): tasks/s.
  Beside it the naive SDK way: `projects.import_tasks` with the same tasks as dicts, batches of 1,000, no store.
- After 1,000 of 50,000 tasks changed (annotations created from their predictions in one data-manager action,
  so they share one timestamp, the worst case for paging by `updated_at`): the incremental `curate pull`, and
  beside it the naive SDK way, `tasks.list(fields="all")` over the whole project.
Goals: push >= 2,000 tasks/s; that incremental pull < 5 s.

    .venv/bin/python -m benchmarks.labelstudio.bench [--push-n 10000] [--pull-n 50000] [--changed 1000]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import SHARED_DATA, write_result

REPO = Path(__file__).resolve().parents[2]
SENTIMENT = ["positive", "negative", "neutral"]
GOAL_PUSH_TASKS_S = 2000.0
GOAL_PULL_S = 5.0


def _texts(n: int) -> list[str]:
    src = SHARED_DATA / "twitter_financial_news_sentiment" / "sent_train.csv"
    base: list[str] = []
    if src.exists():
        with src.open(encoding="utf-8", newline="") as f:
            base = [row["text"] for row in csv.DictReader(f) if row["text"].strip()]
    if not base:
        base = [f"Shares of company {i} moved {i % 17} percent after the quarterly report" for i in range(1000)]
    # The ingest cleaning would repair mojibake; here C1 control characters (a few tweets hold them) are dropped.
    base = [re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", "", t) for t in base]
    return [f"{base[i % len(base)]} (#{i})" for i in range(n)]


def _add_documents(store: Any, texts: list[str], source: str) -> list[int]:
    import hashlib

    from sqlalchemy import select

    from store.engine import insert_ignore
    from store.models import Document, Source

    with store.connect() as conn:
        insert_ignore(conn, Source.__table__, [{"name": source, "domain": "financial", "path": None}],
                      conflict=["name"])
        sid = conn.execute(select(Source.id).where(Source.name == source)).scalar_one()
        rows = [{"domain": "financial", "source_id": sid, "row_number": i, "raw_text": t, "text": t,
                 "content_hash": hashlib.sha1(t.encode()).hexdigest(), "cluster_id": None,
                 "n_tokens": len(t.split()), "n_sentences": 1} for i, t in enumerate(texts)]
        for i in range(0, len(rows), 5000):
            insert_ignore(conn, Document.__table__, rows[i : i + 5000], conflict=["domain", "content_hash"])
        return list(conn.execute(select(Document.id).where(Document.source_id == sid).order_by(Document.id))
                    .scalars())


def _add_predictions(store: Any, doc_ids: list[int], rng: random.Random) -> None:
    from store.models import Prediction

    with store.connect() as conn:
        conn.execute(Prediction.__table__.insert(), [
            {"document_id": d, "model_version": "bench-v1", "label": rng.choice(SENTIMENT),
             "score": round(rng.random(), 3), "probs": None} for d in doc_ids])


def _naive_import(client: Any, tasks: list[dict[str, Any]], batch: int) -> float:
    project = client.sdk.projects.create(title=f"bench-naive-push-{time.time_ns()}",
                                         label_config=_config_xml())
    t0 = time.perf_counter()
    for i in range(0, len(tasks), batch):
        client.sdk.projects.import_tasks(id=project.id, request=tasks[i : i + batch], return_task_ids=True)
    return time.perf_counter() - t0


def _config_xml() -> str:
    from curation.labelconfig import build_label_config

    return build_label_config(domain="financial", labels=SENTIMENT).xml


def run(*, client: Any, workdir: Path, push_n: int, pull_n: int, changed: int, naive: bool, seed: int
        ) -> dict[str, Any]:
    from curation.config import Config
    from pipelines.pull import pull
    from pipelines.push import push
    from store.engine import open_store
    from store.labelstudio import latest_predictions, task_rows

    rng = random.Random(seed)
    store = open_store(f"sqlite:///{workdir / 'bench.db'}")
    texts = _texts(push_n + pull_n)
    push_docs = _add_documents(store, texts[:push_n], "bench-push")
    pull_docs = _add_documents(store, texts[push_n:], "bench-pull")
    _add_predictions(store, rng.sample(push_docs, push_n // 10), rng)
    changed_docs = rng.sample(pull_docs, changed)
    _add_predictions(store, changed_docs, rng)
    cfg = Config.model_validate({"labelstudio": {"project": f"bench-{time.time_ns()}", "retries": 2}})
    out: dict[str, Any] = {"push_n": push_n, "pull_n": pull_n, "changed": changed}

    print(f"push {push_n} documents ...", flush=True)
    pushed = push(store, client, config=cfg, source="bench-push", labels=SENTIMENT,
                  project=f"{cfg.labelstudio.project}-push")
    assert pushed["pushed"] == push_n, pushed
    out["push"] = {"seconds": pushed["seconds"], "tasks_per_s": pushed["tasks_per_s"],
                   "with_predictions": pushed["with_predictions"], "batches": pushed["batches"]}
    again = push(store, client, config=cfg, source="bench-push", labels=SENTIMENT,
                 project=f"{cfg.labelstudio.project}-push")
    out["push_again"] = {"seconds": again["seconds"], "pushed": again["pushed"],
                         "already_present": again["already_present"]}
    if naive:
        docs = {d: t for d, t in zip(push_docs, texts[:push_n], strict=True)}
        preds = latest_predictions(store, push_docs)
        tasks = []
        for d in push_docs:
            task: dict[str, Any] = {"data": {"text": docs[d], "document_id": d}, "meta": {"document_id": d}}
            if d in preds:
                task["predictions"] = [{"model_version": "bench-v1", "score": preds[d]["score"], "result": [
                    {"from_name": "label", "to_name": "text", "type": "choices",
                     "value": {"choices": [preds[d]["label"]]}}]}]
            tasks.append(task)
        secs = _naive_import(client, tasks, 1000)
        out["push_naive_sdk"] = {"seconds": round(secs, 3), "tasks_per_s": round(push_n / secs, 1),
                                 "what": "sdk projects.import_tasks, batches of 1,000, no store, no validation"}
    print(f"push: {out['push']}; naive: {out.get('push_naive_sdk')}", flush=True)

    title = f"{cfg.labelstudio.project}-pull"
    print(f"push {pull_n} documents for the pull ...", flush=True)
    big = push(store, client, config=cfg, source="bench-pull", labels=SENTIMENT, project=title)
    out["push_large"] = {"seconds": big["seconds"], "tasks_per_s": big["tasks_per_s"]}
    # The pull before the changes happens once the import has settled (as it would hours later in real use): a pull
    # right after it would leave its last `pull_overlap_s` seconds of imported tasks to the next pull's scan.
    time.sleep(cfg.labelstudio.pull_overlap_s + 1.5)
    first = pull(store, client, config=cfg, project=title)
    out["pull_first"] = {"seconds": first["seconds"], "tasks_seen": first["tasks_seen"]}
    print(f"large push: {out['push_large']}; first pull: {out['pull_first']}", flush=True)

    rows = task_rows(store, big["project_ref"])
    task_of = dict(zip(rows["document_id"], rows["ls_task_id"], strict=True))
    changed_tasks = [int(task_of[d]) for d in changed_docs]
    t0 = time.perf_counter()
    client.run_action(big["project_id"], "predictions_to_annotations", changed_tasks)
    out["change_seconds"] = round(time.perf_counter() - t0, 3)

    inc = pull(store, client, config=cfg, project=title)
    assert inc["annotations_new"] == changed, inc
    out["pull_incremental"] = {"seconds": inc["seconds"], "tasks_seen": inc["tasks_seen"],
                               "annotations_new": inc["annotations_new"]}
    print(f"incremental pull: {out['pull_incremental']}", flush=True)
    if naive:
        t0 = time.perf_counter()
        n_tasks = n_ann = 0
        for task in client.sdk.tasks.list(project=big["project_id"], fields="all", page_size=1000):
            n_tasks += 1
            n_ann += len(task.annotations or [])
        secs = time.perf_counter() - t0
        out["pull_naive_sdk"] = {"seconds": round(secs, 3), "tasks": n_tasks, "annotations": n_ann,
                                 "what": 'sdk tasks.list(fields="all") over the whole project'}
        print(f"naive pull: {out['pull_naive_sdk']}", flush=True)
    out["goals"] = {
        "push_tasks_per_s": {"goal": GOAL_PUSH_TASKS_S, "measured": out["push"]["tasks_per_s"],
                             "met": out["push"]["tasks_per_s"] >= GOAL_PUSH_TASKS_S},
        "incremental_pull_s": {"goal": GOAL_PULL_S, "measured": inc["seconds"], "met": inc["seconds"] < GOAL_PULL_S},
    }
    store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--push-n", type=int, default=10_000)
    parser.add_argument("--pull-n", type=int, default=50_000)
    parser.add_argument("--changed", type=int, default=1_000)
    parser.add_argument("--url", default=None)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from pipelines import ls_server
    from pipelines.ls_client import LabelStudioClient

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ls-") as tmp:
        workdir = Path(tmp)
        started = None
        if args.url and args.api_key:
            url, key = args.url, args.api_key
        else:
            venv = REPO / ".ls-venv"
            if not (venv / "bin" / "label-studio").exists():
                print(f"Label Studio is not installed in {venv}: run `make labelstudio` first", file=sys.stderr)
                return 2
            print("starting Label Studio ...", flush=True)
            t0 = time.perf_counter()
            started = ls_server.start(data_dir=workdir / "ls", venv=venv, port=ls_server.free_port(),
                                      install_missing=False)
            print(f"started in {time.perf_counter() - t0:.0f} s", flush=True)
            url, key = started.url, started.api_key
        client = LabelStudioClient(url, key, timeout_s=600, retries=2)
        try:
            result = run(client=client, workdir=workdir, push_n=args.push_n, pull_n=args.pull_n,
                         changed=args.changed, naive=not args.skip_naive, seed=args.seed)
        finally:
            client.close()
            if started is not None:
                ls_server.stop(data_dir=workdir / "ls")
    result["server"] = {"label_studio": ls_server.LS_VERSION, "database": "sqlite", "own_server": started is not None}
    # Client and server share this machine's cores; other work on it slows both (the 1-minute load average).
    result["load_average_1m"] = {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}
    write_result("labelstudio", result)
    ok = all(g["met"] for g in result["goals"].values())
    for name, g in result["goals"].items():
        print(f"{name}: measured {g['measured']} (goal {g['goal']}): {'met' if g['met'] else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
