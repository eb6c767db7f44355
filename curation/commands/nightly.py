"""`curate nightly`, `curate report` and `curate schedule`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curation.commands.common import ConfigOpt, DbOpt, JsonOpt, console, emit, make_context
from curation.errors import ConfigError

__all__ = ["register", "nightly", "report", "schedule", "crontab_line", "systemd_units"]


def nightly(
    project: Annotated[str | None, typer.Option("--project", help="Label Studio project title.")] = None,
    batch: Annotated[int | None, typer.Option("--batch", min=1, help="Documents to select tonight.")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="Active-learning strategy.")] = None,
    domain: Annotated[str | None, typer.Option("--domain")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for report.html (default [nightly] out).")] = None,
    night: Annotated[str | None, typer.Option("--night", help="Night label (default: today's UTC date).")] = None,
    no_labelstudio: Annotated[bool, typer.Option("--no-labelstudio", help="Skip pull and push.")] = False,
    metrics_file: Annotated[Path | None, typer.Option("--metrics-file",
                                                      help="Write Prometheus textfile metrics here.")] = None,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json (stderr).")] = "text",
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Pull, train, audit, sample, push, export and report, once; non-zero exit when a step failed."""
    from pipelines.nightly import make_logger, run_nightly

    log = make_logger(log_format)
    ctx = make_context(db, config)
    result = run_nightly(ctx.store, config=ctx.config, project=project, batch=batch, strategy=strategy,
                         domain=domain, out=out, night=night, labelstudio=not no_labelstudio,
                         metrics_file=metrics_file, log=log)

    def render() -> None:
        t = Table(title=f"nightly {result['night']} (run {result['run_id']}): {result['status']}")
        for c in ("step", "status", "seconds", "counts / reason"):
            t.add_column(c, overflow="fold")
        for name, s in result["steps"].items():
            detail = s.get("reason") or ", ".join(f"{k}={v}" for k, v in s["counts"].items()
                                                  if k not in ("out", "path"))
            colour = {"ok": "green", "failed": "red"}.get(s["status"], "yellow")
            t.add_row(name, f"[{colour}]{s['status']}[/]", f"{s['seconds']:.1f}", detail[:200])
        console.print(t)
        if result.get("report"):
            console.print(f"report: {result['report']}")

    emit(result, as_json=json_out, render=render)
    if result["status"] != "ok":
        raise typer.Exit(1)


def report(
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report with plots of labels, annotators, agreement, yield, issues and drift."""
    from curation.report import write_report
    from store.runs import finish_run, start_run

    ctx = make_context(db, config)
    run_id = start_run(ctx.store, kind="report", params={"out": str(out.resolve())})
    try:
        info = write_report(ctx.store, out)
    except BaseException as exc:
        finish_run(ctx.store, run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finish_run(ctx.store, run_id, status="ok", stats=info)
    emit(info, as_json=json_out, render=lambda: console.print(
        f"wrote {info['path']} ({info['bytes']:,} bytes, {info['plots']} plots; no data yet: "
        f"{', '.join(info['empty']) or 'none'})"))


def _paths(config_file: Path | None) -> tuple[Path, Path, Path | None]:
    """(project folder, curate executable, config file) as absolute paths."""
    from curation.config import find_config_file

    cfg = (config_file or find_config_file())
    cfg = cfg.resolve() if cfg else None
    if config_file is not None and (cfg is None or not cfg.is_file()):
        raise ConfigError(f"Config file {config_file} does not exist.", hint="pass an existing file to --config")
    project = cfg.parent if cfg else Path.cwd().resolve()
    exe = Path(sys.executable).absolute().parent / "curate"  # the venv bin, not the interpreter it links to
    if not exe.exists():
        exe = Path(sys.argv[0]).resolve()
    return project, exe, cfg


def crontab_line(*, project: Path, exe: Path, config: Path | None, minute: int = 15, hour: int = 2) -> str:
    """`M H * * * cd PROJECT && flock -n LOCK CURATE nightly --config CFG >> LOG 2>&1` (absolute paths)."""
    state = project / ".curate"
    cfg = f" --config {shlex.quote(str(config))}" if config else ""
    return (f"{minute} {hour} * * * mkdir -p {shlex.quote(str(state))} && cd {shlex.quote(str(project))} && "
            f"flock -n {shlex.quote(str(state / 'nightly.cron.lock'))} {shlex.quote(str(exe))} nightly{cfg} "
            f"--metrics-file {shlex.quote(str(state / 'curate_nightly.prom'))} "
            f">> {shlex.quote(str(state / 'nightly.log'))} 2>&1")


def systemd_units(*, project: Path, exe: Path, config: Path | None, hour: int = 2, minute: int = 15) -> str:
    cfg = f" --config {config}" if config else ""
    return (f"# ~/.config/systemd/user/curate-nightly.service\n[Unit]\nDescription=curate nightly curation\n\n"
            f"[Service]\nType=oneshot\nWorkingDirectory={project}\nExecStart={exe} nightly{cfg} --log-format json\n\n"
            f"# ~/.config/systemd/user/curate-nightly.timer\n[Unit]\nDescription=Run curate nightly\n\n"
            f"[Timer]\nOnCalendar=*-*-* {hour:02d}:{minute:02d}:00\nPersistent=true\n\n"
            f"[Install]\nWantedBy=timers.target\n")


def schedule(
    print_crontab: Annotated[bool, typer.Option("--print-crontab", help="Print a crontab line.")] = False,
    print_systemd: Annotated[bool, typer.Option("--print-systemd", help="Print a systemd service and timer.")] = False,
    hour: Annotated[int, typer.Option("--hour", min=0, max=23)] = 2,
    minute: Annotated[int, typer.Option("--minute", min=0, max=59)] = 15,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print how to run `curate nightly` every night (cron with flock, or a systemd timer)."""
    if not (print_crontab or print_systemd):
        raise ConfigError("Nothing to print.", hint="pass --print-crontab or --print-systemd")
    project, exe, cfg = _paths(config)
    result: dict[str, str] = {}
    if print_crontab:
        result["crontab"] = crontab_line(project=project, exe=exe, config=cfg, minute=minute, hour=hour)
    if print_systemd:
        result["systemd"] = systemd_units(project=project, exe=exe, config=cfg, hour=hour, minute=minute)
    def render() -> None:
        sys.stdout.write("\n".join(result.values()) + "\n")

    emit(result, as_json=json_out, render=render)


def register(app: typer.Typer) -> None:
    app.command("nightly")(nightly)
    app.command("report")(report)
    app.command("schedule")(schedule)
