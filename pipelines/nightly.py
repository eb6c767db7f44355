"""`curate nightly`: pull, train, audit, sample, push, export and report, once a night, one night at a time.

Dependencies: pull -> train -> (audit, sample) -> push (needs sample); export needs pull; report always runs last.
The rule, kept simple: a step runs when every step it depends on ended `ok` or `skipped` (not applicable, e.g.
Label Studio not configured); when one `failed` or was `blocked`, the step is `blocked` and does nothing. Any failed
step makes the night `failed` (exit code 1), and the summary says which step failed and why. So with Label Studio
down, pull fails and everything but the report waits for the next night, which catches up: pulls are incremental,
pushes send what is missing, and nothing was half-done.

Idempotent within a night (`night` = the UTC date unless given): pull is incremental; sample reuses the night's
selection when one exists (also one recorded by a killed run); push sends each document once; export names versions
by content hash, so unchanged data is not written again; the report is rewritten. Crash safety: every write is
either one transaction or a rename; a killed night's `running` rows become `interrupted` at the next start, and
temporary export folders of dead processes are removed.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from curation.errors import ConfigError, CurationError, ExportError, InputError, LabelStudioError
from store.runs import pid_alive

__all__ = ["STEPS", "DEPENDS", "StepResult", "make_logger", "run_nightly", "export_root", "clean_stale_exports"]

STEPS: tuple[str, ...] = ("pull", "train", "audit", "sample", "push", "export", "report")
DEPENDS: dict[str, tuple[str, ...]] = {
    "pull": (), "train": ("pull",), "audit": ("train",), "sample": ("train",), "push": ("sample",),
    "export": ("pull",), "report": (),
}

Logger = Callable[..., None]


class _Skip(Exception):
    """A step that has nothing to do (not configured, nothing selected): `skipped`, not a failure."""


@dataclass
class StepResult:
    status: str
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 3), "counts": self.counts}
        if self.reason:
            out["reason"] = self.reason
        return out


def make_logger(fmt: str = "text", stream: Any = None) -> Logger:
    """`log(event, **fields)` as one JSON object a line (`--log-format json`) or a short text line."""
    if fmt not in ("text", "json"):
        raise CurationError(f"--log-format must be text or json, not {fmt!r}.")

    def log(event: str, **fields: Any) -> None:
        out = stream or sys.stderr
        ts = datetime.now(UTC).isoformat(timespec="milliseconds")
        if fmt == "json":
            out.write(json.dumps({"ts": ts, "event": event, **fields}, default=str) + "\n")
        else:
            rest = " ".join(f"{k}={v}" for k, v in fields.items())
            out.write(f"{ts} {event} {rest}".rstrip() + "\n")
        out.flush()

    return log


def export_root(config: Any) -> Path:
    """`[export] out`, relative to the config file's folder (else the working directory)."""
    root = Path(config.export.out)
    if not root.is_absolute():
        base = config.path.parent if getattr(config, "path", None) else Path.cwd()
        root = base / root
    return root


def clean_stale_exports(root: Path) -> int:
    """Remove `.tmp-<version>-<pid>` folders left by killed exports (their process is gone)."""
    removed = 0
    if not root.is_dir():
        return 0
    for tmp in root.glob(".tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    for tmp in root.glob(".latest-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
    return removed


def run_nightly(
    store: Any,
    *,
    config: Any,
    project: str | None = None,
    batch: int | None = None,
    strategy: str | None = None,
    domain: str | None = None,
    out: Path | str | None = None,
    night: str | None = None,
    labelstudio: bool = True,
    metrics_file: Path | str | None = None,
    log: Logger | None = None,
) -> dict[str, Any]:
    """Run the night's steps under the lock; returns the summary (`status`, `steps`, ...). Raises `LockError`."""
    from store.nightly import mark_interrupted, nightly_lock
    from store.runs import finish_run, start_run

    log = log or make_logger("text")
    ncfg = config.nightly
    night = night or datetime.now(UTC).date().isoformat()
    out_dir = Path(out or ncfg.out)
    params = {"night": night, "project": project or ncfg.project, "batch": int(batch or ncfg.batch),
              "strategy": strategy or ncfg.strategy, "domain": domain or ncfg.domain, "out": str(out_dir.resolve()),
              "labelstudio": labelstudio}
    t0 = time.perf_counter()
    with nightly_lock(store) as lock:
        interrupted = mark_interrupted(store)
        run_id = start_run(store, kind="nightly", params=params)
        log("nightly.start", run_id=run_id, night=night, lock=lock["kind"], interrupted_before=interrupted)
        ctx = _Night(store=store, config=config, params=params, run_id=run_id, out_dir=out_dir, log=log)
        results: dict[str, StepResult] = {}
        try:
            for step in STEPS:
                results[step] = ctx.run_step(step, results, start_run=start_run, finish_run=finish_run)
        except BaseException as exc:
            finish_run(store, run_id, status="interrupted", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            ctx.close()
        failed = {s: r.reason for s, r in results.items() if r.status == "failed"}
        summary: dict[str, Any] = {
            "status": "failed" if failed else "ok",
            "night": night,
            "run_id": run_id,
            "steps": {s: r.as_dict() for s, r in results.items()},
            "failed": failed,
            "seconds": round(time.perf_counter() - t0, 3),
            "finished_ts": time.time(),
            "report": ctx.report_path,
        }
        finish_run(store, run_id, status=summary["status"], stats=summary,
                   error="; ".join(f"{s}: {r}" for s, r in failed.items()) or None)
        if metrics_file:
            from pipelines.metrics import write_metrics
            from store.runs import last_run

            last = last_run(store, kind="nightly", status="ok")
            last_ts = (last["stats"] or {}).get("finished_ts") if last else None
            summary["metrics_file"] = str(write_metrics(metrics_file, summary, last_success=last_ts))
        log("nightly.end", run_id=run_id, status=summary["status"], seconds=summary["seconds"],
            failed=json.dumps(failed) if failed else None)
        return summary


@dataclass
class _Night:
    store: Any
    config: Any
    params: dict[str, Any]
    run_id: int
    out_dir: Path
    log: Logger
    report_path: str | None = None
    selected: dict[str, list[int]] = field(default_factory=dict)
    domains: list[str] | None = None
    _ls: Any = None

    def run_step(self, step: str, done: dict[str, StepResult], *, start_run: Any, finish_run: Any) -> StepResult:
        blockers = [d for d in DEPENDS[step] if done[d].status in ("failed", "blocked")]
        child = start_run(self.store, kind=f"nightly:{step}", parent_id=self.run_id,
                          params={"night": self.params["night"]})
        t0 = time.perf_counter()
        if blockers:
            res = StepResult("blocked", reason=f"{', '.join(blockers)} did not succeed")
        else:
            self.log("step.start", step=step)
            try:
                counts = getattr(self, f"_{step}")(child)
                res = StepResult("ok", counts=counts)
            except _Skip as exc:
                res = StepResult("skipped", reason=str(exc))
            except CurationError as exc:
                res = StepResult("failed", reason=f"{type(exc).__name__}: {exc.message}")
            except Exception as exc:  # a bug or library failure in one step must not hide the others' results
                res = StepResult("failed", reason=f"{type(exc).__name__}: {exc}")
        res.seconds = time.perf_counter() - t0
        finish_run(self.store, child, status=res.status,
                   stats={"status": res.status, "counts": res.counts, "reason": res.reason},
                   error=res.reason if res.status == "failed" else None)
        self.log("step.end", step=step, status=res.status, seconds=round(res.seconds, 3), reason=res.reason,
                 **{k: v for k, v in res.counts.items()
                    if isinstance(v, int | float | str) and k not in ("note", "step", "status", "seconds", "reason")})
        return res

    # -- helpers --------------------------------------------------------------------------------------------------

    def _domains(self) -> list[str]:
        """`--domain`, else every domain with documents (each has its own project, model and batch)."""
        if self.domains is None:
            from pipelines.sample import pick_domain
            from store.active import document_domains

            present = [] if self.params["domain"] else document_domains(self.store)
            self.domains = present if len(present) > 1 else [pick_domain(self.store, self.params["domain"])]
            if len(self.domains) > 1 and self.params["project"]:
                raise ConfigError(f"--project names one Label Studio project, but the store holds several domains "
                                  f"({', '.join(self.domains)}).", hint="pass --domain too")
        return self.domains

    def _each(self, fn: Callable[[int, str], dict[str, Any]], run_id: int) -> dict[str, Any]:
        """Run a step for each domain; with several, counts are keyed `<domain>.<count>`."""
        domains = self._domains()
        if len(domains) == 1:
            return fn(run_id, domains[0])
        out: dict[str, Any] = {}
        skipped: list[str] = []
        for domain in domains:
            try:
                counts = fn(run_id, domain)
            except _Skip as exc:
                skipped.append(f"{domain}: {exc}")
                continue
            out.update({f"{domain}.{k}": v for k, v in counts.items()})
        if skipped and not out:
            raise _Skip("; ".join(skipped))
        if skipped:
            out["skipped"] = "; ".join(skipped)
        return out

    def _client(self) -> Any:
        if not self.params["labelstudio"]:
            raise _Skip("Label Studio disabled (--no-labelstudio)")
        if self._ls is None:
            from pipelines.ls_client import connect, resolve_connection

            try:
                resolve_connection(self.config)
            except LabelStudioError as exc:
                raise _Skip(f"Label Studio not configured: {exc.message}") from None
            self._ls = connect(self.config)
        return self._ls

    # -- steps ----------------------------------------------------------------------------------------------------

    def _pull(self, run_id: int) -> dict[str, Any]:
        return self._each(self._pull_one, run_id)

    def _pull_one(self, run_id: int, domain: str) -> dict[str, Any]:
        from pipelines.pull import pull
        from pipelines.push import default_title

        client = self._client()
        title = self.params["project"] or default_title(self.config, domain)
        if client.find_project(title) is None:  # also proves the server answers
            raise _Skip(f"no Label Studio project {title!r} yet; tonight's push creates it")
        res = pull(self.store, client, config=self.config, project=title, domain=domain, run_id=run_id)
        return {k: res[k] for k in ("project_id", "tasks_seen", "annotations_new", "annotations_updated",
                                    "annotations_deleted", "incremental") if k in res}

    def _train(self, run_id: int) -> dict[str, Any]:
        return self._each(self._train_one, run_id)

    def _train_one(self, run_id: int, domain: str) -> dict[str, Any]:
        """Embed new documents (the cache makes sample fast), measure the head's cross-validated accuracy on the
        current labels (active-learning yield), label agreement, and drift of newly ingested text."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score

        from curation.consensus import training_labels
        from curation.embeddings import EmbeddingCache, default_cache_dir, embed_texts
        from curation.encoder import Encoder
        from store.documents import documents_frame
        from store.nightly import documents_since, last_nightly_start

        al = self.config.active_learning
        docs = documents_frame(self.store, domain=domain, columns=("id", "text"))
        labels = training_labels(self.store, domain=domain)
        encoder = Encoder(al.model, device=al.device)
        cache = EmbeddingCache(default_cache_dir(self.store.url, al.embeddings_dir), encoder.key)
        emb, enc_stats = embed_texts(docs["text"].astype(str).tolist(), encoder=encoder, cache=cache)
        row_of = {int(d): i for i, d in enumerate(docs["id"].to_numpy())}
        lab = labels[labels["document_id"].astype(int).isin(row_of)]
        rows = np.array([row_of[int(d)] for d in lab["document_id"]], dtype=np.int64)
        y = lab["label"].astype(str).to_numpy()
        counts: dict[str, Any] = {"documents": len(docs), "labeled": len(lab), "encoded": enc_stats["encoded"],
                                  "classes": int(len(set(y)))}
        multi = lab[lab["n_annotations"] >= 2]
        counts["agreement_mean"] = round(float(multi["agreement"].mean()), 4) if len(multi) else None
        classes, per_class = np.unique(y, return_counts=True)
        keep = np.isin(y, classes[per_class >= 2])  # a class seen once cannot be both trained on and tested
        if keep.sum() >= al.min_labels and (per_class >= 2).sum() >= 2:
            folds = StratifiedKFold(n_splits=int(min(5, per_class[per_class >= 2].min())), shuffle=True,
                                    random_state=al.seed)
            scores = cross_val_score(LogisticRegression(max_iter=1000), emb[rows[keep]], y[keep], cv=folds)
            counts["cv_accuracy"] = round(float(scores.mean()), 4)
            counts["cv_labels"] = int(keep.sum())
        else:
            counts["cv_accuracy"] = None
            counts["note"] = (f"cold start: {int(keep.sum())} labels in classes seen twice or more "
                              f"(need {al.min_labels})")
        new_ids = documents_since(self.store, since=last_nightly_start(self.store), domain=domain)
        new_rows = np.array([row_of[i] for i in new_ids if i in row_of], dtype=np.int64)
        counts["new_documents"] = int(len(new_rows))
        counts["drift_cosine"] = _centroid_distance(emb[new_rows], emb[rows]) if len(new_rows) and len(rows) \
            else None
        return counts

    def _audit(self, run_id: int) -> dict[str, Any]:
        try:
            module = importlib.import_module("pipelines.audit")
        except ModuleNotFoundError as exc:
            if exc.name != "pipelines.audit":
                raise
            raise _Skip("label audit not available in this version (pipelines.audit is missing)") from None
        fn = getattr(module, "audit", None)
        if fn is None:
            raise _Skip("pipelines.audit has no audit() function")
        from store.nightly import step_done_tonight

        done = step_done_tonight(self.store, step="audit", night=self.params["night"])
        if done is not None:  # an audit is a full cross-validation: once a night is enough
            return {"reused": True, "audit_step_run": done}

        def one(_run_id: int, domain: str) -> dict[str, Any]:
            try:
                res = fn(self.store, config=self.config, domain=domain)
            except InputError as exc:  # e.g. nothing labeled yet
                raise _Skip(exc.message) from None
            return {k: v for k, v in (res or {}).items() if isinstance(v, int | float | str | bool) or v is None}

        return self._each(one, run_id)

    def _sample(self, run_id: int) -> dict[str, Any]:
        return self._each(self._sample_one, run_id)

    def _sample_one(self, run_id: int, domain: str) -> dict[str, Any]:
        from pipelines.sample import sample
        from store.nightly import sample_runs_of_night, selected_ids

        night = self.params["night"]
        earlier = sample_runs_of_night(self.store, night=night)
        ids = selected_ids(self.store, earlier, domain=domain)
        if ids:
            self.selected[domain] = ids
            return {"selected": len(ids), "reused": True, "sample_runs": earlier}
        try:
            res = sample(self.store, config=self.config, strategy=self.params["strategy"], n=self.params["batch"],
                         domain=domain)
        except InputError as exc:
            raise _Skip(exc.message) from None
        self.selected[domain] = [int(s["document_id"]) for s in res["selections"]]
        return {"selected": res["selected"], "reused": False, "pool": res["pool"], "labeled": res["labeled"],
                "strategy_used": res["strategy_used"], "cold_start": res["cold_start"],
                "model_version": res["model_version"], "sample_run": res["run_id"]}

    def _push(self, run_id: int) -> dict[str, Any]:
        return self._each(self._push_one, run_id)

    def _push_one(self, run_id: int, domain: str) -> dict[str, Any]:
        from pipelines.push import push

        if not self.selected.get(domain):
            raise _Skip("nothing selected tonight")
        client = self._client()
        res = push(self.store, client, config=self.config, project=self.params["project"], domain=domain,
                   document_ids=self.selected[domain], order="priority", run_id=run_id)
        return {k: v for k, v in res.items() if isinstance(v, int | float | str | bool) or v is None}

    def _export(self, run_id: int) -> dict[str, Any]:
        from pipelines.export import export_dataset

        ecfg = self.config.export
        root = export_root(self.config)
        cleaned = clean_stale_exports(root)
        try:
            res = export_dataset(self.store, out=root, split=ecfg.split, fmt=ecfg.format,
                                 domain=self.params["domain"],
                                 seed=ecfg.seed)
        except ExportError as exc:
            if exc.message.startswith("No documents to export"):
                raise _Skip(exc.message) from None
            raise
        return {"version": res["version"], "existed": res["existed"], "rows": int(sum(res["rows"].values())),
                **{f"rows_{k}": int(v) for k, v in res["rows"].items()}, "stale_tmp_removed": cleaned,
                "out": res["out"]}

    def _report(self, run_id: int) -> dict[str, Any]:
        from curation.report import write_report

        path = self.out_dir / "report.html"
        for tmp in self.out_dir.glob(".report.html.*.tmp"):  # left by a killed night
            pid = tmp.name.split(".")[-2]
            if pid.isdigit() and not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)
        info = write_report(self.store, path)
        self.report_path = str(path.resolve())
        return {"plots": info["plots"], "bytes": info["bytes"], "path": self.report_path}

    def close(self) -> None:
        if self._ls is not None:
            self._ls.close()


def _centroid_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance between the mean embeddings of two sets of documents (0: same direction)."""
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    denom = float(np.linalg.norm(ca) * np.linalg.norm(cb))
    return round(1.0 - float(ca @ cb) / denom, 6) if denom > 0 else 0.0
