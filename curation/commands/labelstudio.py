"""Label Studio commands: `push`, `pull`, `agreement`, and `labelstudio start|stop|status` for a local server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from curation.commands.common import ConfigOpt, DbOpt, JsonOpt, console, emit, err_console, make_context, progress
from curation.errors import ConfigError

__all__ = ["register", "run_agreement"]

ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", help="Project title or id (default: <labelstudio.project>-<domain>)."),
]
DomainOpt = Annotated[
    str | None,
    typer.Option("--domain", help="customer_service or financial (default: the domain of the selected documents)."),
]


def _recorded(ctx: Any, kind: str, params: dict[str, Any], fn: Any) -> dict[str, Any]:
    """Run `fn(run_id)` as a recorded run: the runs table gets its stats, or its error."""
    from store.runs import finish_run, start_run

    run_id = start_run(ctx.store, kind=kind, params=params)
    try:
        result = fn(run_id)
    except BaseException as exc:
        finish_run(ctx.store, run_id, status="error", error=str(exc)[:2000])
        raise
    stats = {k: v for k, v in result.items() if k not in ("skipped_examples", "consensus", "per_label",
                                                            "per_annotator", "cohen_kappa", "ties")}
    finish_run(ctx.store, run_id, status="ok", stats=stats)
    result["run_id"] = run_id
    return result


def run_agreement(store: Any, *, project: str | None, domain: str | None, config: Any, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """The agreement report of a project the store has pulled (no server needed)."""
    from curation.agreement import agreement_report
    from pipelines.push import default_title
    from store.labelstudio import known_projects, project_annotations_frame

    known = known_projects(store)
    wanted = project or (default_title(config, domain) if domain else None)
    if wanted is None:
        hits = known
    else:
        hits = [p for p in known if p["title"] == wanted] or [
            p for p in known if wanted.isdigit() and p["project_id"] == int(wanted)]
    if len(hits) != 1:
        listing = ", ".join(f"{p['title']!r} (id {p['project_id']} on {p['server_url']})" for p in known) or "none"
        what = f"no project {wanted!r}" if wanted and not hits else (
            f"{len(hits)} projects" + (f" named {wanted!r}" if wanted else ""))
        raise ConfigError(
            f"This store has {what}. Projects it knows: {listing}.",
            hint="pass --project with one of them (run `curate pull` first for a project not listed)",
        )
    proj = hits[0]
    frame = project_annotations_frame(store, project_id=proj["project_id"])
    frame = frame[~frame["was_cancelled"].astype(bool)]
    report = agreement_report(frame, n_boot=n_boot, seed=seed)
    from pipelines.audit import annotator_quality

    quality = annotator_quality(store, domain=proj.get("domain"))
    return {"project_id": proj["project_id"], "project": proj["title"], **report, "annotator_quality": quality}


def register(app: typer.Typer) -> None:
    @app.command("push")
    def push_cmd(
        project: ProjectOpt = None,
        domain: DomainOpt = None,
        source: Annotated[str | None, typer.Option("--source", help="Only documents of this source.")] = None,
        limit: Annotated[int | None, typer.Option("--limit", min=1, help="Send at most N documents.")] = None,
        order: Annotated[str, typer.Option("--order", help="priority | random | oldest")] = "priority",
        include_labeled: Annotated[bool, typer.Option("--include-labeled",
                                                      help="Also send documents that already have a label.")] = False,
        labels: Annotated[str | None, typer.Option("--labels", help="Label set a,b,c (overrides the config).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of --order random.")] = 0,
        db: DbOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Send documents not yet in the Label Studio project (creating it if missing); safe to re-run."""
        from pipelines.ls_client import connect
        from pipelines.push import push

        ctx = make_context(db, config)
        label_list = [x for x in labels.split(",")] if labels else None
        params = {"project": project, "domain": domain, "source": source, "limit": limit, "order": order,
                  "include_labeled": include_labeled, "labels": label_list, "seed": seed}
        client = connect(ctx.config)
        with progress(enabled=not as_json) as prog:
            bar = prog.add_task("pushing", total=None)

            def on_batch(done: int, total: int) -> None:
                prog.update(bar, completed=done, total=total)

            result = _recorded(ctx, "push", params, lambda run_id: push(
                ctx.store, client, config=ctx.config, project=project, domain=domain, source=source, limit=limit,
                order=order, include_labeled=include_labeled, labels=label_list, seed=seed, run_id=run_id,
                on_batch=on_batch))

        def render() -> None:
            verb = "created" if result["created"] else "reused"
            console.print(f"Project [bold]{result['project']}[/] (id {result['project_id']}, {verb}) at "
                          f"{result['url']}")
            console.print(f"pushed {result['pushed']} tasks ({result['with_predictions']} with pre-annotations) in "
                          f"{result['seconds']} s; already present {result['already_present']}; "
                          f"skipped {result['skipped']}")
            for reason, n in sorted(result["skipped_reasons"].items()):
                console.print(f"  skipped {n}: {reason}")
            if result["label_config_differs"]:
                err_console.print("[yellow]note:[/] the project's choices differ from the label set; predictions "
                                  "were checked against the project's choices")

        emit(result, as_json=as_json, render=render)

    @app.command("pull")
    def pull_cmd(
        project: ProjectOpt = None,
        domain: DomainOpt = None,
        full: Annotated[bool, typer.Option("--full", help="Ignore the watermark and read every task.")] = False,
        db: DbOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Fetch annotations changed since the last pull (incremental, resumable) into the store."""
        from pipelines.ls_client import connect
        from pipelines.pull import pull

        ctx = make_context(db, config)
        client = connect(ctx.config)
        result = _recorded(ctx, "pull", {"project": project, "domain": domain, "full": full}, lambda run_id: pull(
            ctx.store, client, config=ctx.config, project=project, domain=domain, full=full, run_id=run_id))

        def render() -> None:
            console.print(f"Project [bold]{result['project']}[/] (id {result['project_id']}): "
                          f"{result['tasks_seen']} changed tasks read in {result['seconds']} s")
            console.print(f"annotations: {result['annotations_new']} new, {result['annotations_updated']} updated, "
                          f"{result['annotations_deleted']} deleted, {result['annotations_unchanged']} unchanged")
            if result["tasks_unknown"]:
                err_console.print(f"[yellow]note:[/] {result['tasks_unknown']} tasks name no document of this store "
                                  "(pushed from another store?); their annotations were not stored")

        emit(result, as_json=as_json, render=render)

    @app.command("agreement")
    def agreement_cmd(
        project: ProjectOpt = None,
        domain: DomainOpt = None,
        bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for the CIs.")] = 1000,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
        consensus_out: Annotated[Path | None, typer.Option("--consensus-out",
                                                           help="Write the consensus per document (CSV).")] = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Inter-annotator agreement of a pulled project (kappas, alpha, CIs) and a consensus label per document."""
        ctx = make_context(db, config)
        result = _recorded(ctx, "agreement", {"project": project, "domain": domain, "bootstrap": bootstrap,
                                              "seed": seed},
                           lambda run_id: run_agreement(ctx.store, project=project, domain=domain,
                                                        config=ctx.config, n_boot=bootstrap, seed=seed))
        if consensus_out:
            import pandas as pd

            consensus_out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(result["consensus"]).to_csv(consensus_out, index=False)

        def ci(d: dict[str, Any], key: str = "value") -> str:
            if d.get(key) is None:
                return "n/a"
            lo, hi = d.get("ci_low"), d.get("ci_high")
            return f"{d[key]:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")

        def render() -> None:
            console.print(f"Project [bold]{result['project']}[/]: {result['n_documents']} documents, "
                          f"{result['n_documents_multi']} with 2+ annotators, {result['n_annotators']} annotators")
            console.print(f"Fleiss' kappa {ci(result['fleiss_kappa'])}; Krippendorff's alpha "
                          f"{ci(result['krippendorff_alpha'])}")
            t = Table("annotator A", "annotator B", "items", "Cohen's kappa [95% CI]", title="Pairs")
            for p in result["cohen_kappa"]:
                t.add_row(p["annotator_a"], p["annotator_b"], str(p["n_items"]), ci(p, "kappa"))
            console.print(t)
            t = Table("annotator", "items", "agrees with others", "mean kappa", title="Annotators")
            for a in result["per_annotator"]:
                agree = "n/a" if a["agreement_with_others"] is None else f"{a['agreement_with_others']:.2f}"
                mk = "n/a" if a["mean_pairwise_kappa"] is None else f"{a['mean_pairwise_kappa']:.3f}"
                t.add_row(a["annotator"], str(a["n_items"]), agree, mk)
            console.print(t)
            if result.get("annotator_quality"):
                t = Table("annotator", "quality (CROWDLAB)", "agreement with consensus", "labeled",
                          title="Annotator quality (latest audit)")
                for q in result["annotator_quality"]:
                    agree_c = q.get("agreement_with_consensus")
                    t.add_row(str(q["annotator"]), f"{q['quality']:.3f}",
                              "n/a" if agree_c is None else f"{agree_c:.2f}", str(q.get("n_labeled", "")))
                console.print(t)
            t = Table("label", "ratings", "kappa [95% CI]", title="Labels")
            for lab in result["per_label"]:
                t.add_row(lab["label"], str(lab["n_ratings"]), ci(lab))
            console.print(t)
            console.print(f"consensus: {len(result['consensus'])} documents, {len(result['ties'])} ties to "
                          "adjudicate" + (f": {result['ties'][:20]}" if result["ties"] else ""))

        emit(result, as_json=as_json, render=render)

    ls_app = typer.Typer(help="A local Label Studio server (data under .labelstudio/).", no_args_is_help=True)

    @ls_app.command("start")
    def ls_start(
        port: Annotated[int | None, typer.Option("--port", help="Port (default: the last one, else 8080).")] = None,
        data_dir: Annotated[Path, typer.Option("--data-dir")] = Path(".labelstudio"),
        venv: Annotated[Path, typer.Option("--venv")] = Path(".ls-venv"),
        as_json: JsonOpt = False,
    ) -> None:
        """Install (once) and start Label Studio on 127.0.0.1; says so if it already runs."""
        from pipelines import ls_server

        info = ls_server.start(data_dir=data_dir, venv=venv, port=port)
        result = {"url": info.url, "pid": info.pid, "started": info.started, "username": info.username,
                  "env_file": str(info.data_dir / "env")}
        emit(result, as_json=as_json, render=lambda: console.print(
            f"Label Studio {'started' if info.started else 'already running'} at {info.url}; log in as "
            f"{info.username} (password and API key in {result['env_file']})"))

    @ls_app.command("stop")
    def ls_stop(data_dir: Annotated[Path, typer.Option("--data-dir")] = Path(".labelstudio"),
                as_json: JsonOpt = False) -> None:
        """Stop the local Label Studio."""
        from pipelines import ls_server

        stopped = ls_server.stop(data_dir=data_dir)
        emit({"stopped": stopped}, as_json=as_json,
             render=lambda: console.print("Label Studio stopped." if stopped else "Label Studio was not running."))

    @ls_app.command("status")
    def ls_status(data_dir: Annotated[Path, typer.Option("--data-dir")] = Path(".labelstudio"),
                  as_json: JsonOpt = False) -> None:
        """Whether the local Label Studio runs, and where."""
        from pipelines import ls_server

        st = ls_server.status(data_dir=data_dir)
        emit(st, as_json=as_json, render=lambda: console.print(
            f"running at {st['url']} (pid {st['pid']})" if st["running"] else "not running"))

    @ls_app.command("invite")
    def ls_invite(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
        """The sign-up link to send to annotators (they create their own login with it)."""
        from curation.config import load_config
        from pipelines.ls_client import connect

        client = connect(load_config(config))
        link = client.invite_url()
        emit({"invite_url": link, "url": client.url}, as_json=as_json,
             render=lambda: console.print(f"Send this link to each annotator: {link}", soft_wrap=True))

    app.add_typer(ls_app, name="labelstudio")
