"""`curate export`: leak-free train/dev/test files with a manifest and a data card; `--diff V1 V2` compares two."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from curation.commands.common import ConfigOpt, DbOpt, JsonOpt, console, emit, err_console, make_context
from curation.config import DOMAINS, Config, load_config

__all__ = ["register", "render_export", "render_diff"]


def render_export(result: dict[str, Any]) -> None:
    state = "already existed, not rewritten" if result["existed"] else "written"
    console.print(f"version [bold]{result['version']}[/] ({result['format']}) {state}: {result['out']}")
    splits = [s for s, n in result["rows"].items() if n]
    labels = sorted({lab for s in splits for lab in result["labels"].get(s, {})})
    t = Table(title="documents per split and label")
    t.add_column("label")
    for s in splits:
        t.add_column(s, justify="right")
    t.add_column("all", justify="right")
    for lab in labels:
        counts = [result["labels"].get(s, {}).get(lab, 0) for s in splits]
        t.add_row(lab, *[str(c) for c in counts], str(sum(counts)))
    t.add_row("[bold]total[/]", *[f"[bold]{result['rows'][s]}[/]" for s in splits],
              f"[bold]{sum(result['rows'].values())}[/]")
    console.print(t)
    leaks = result["leaks"]
    mark = "[green]0 leaks[/]" if leaks["total"] == 0 else f"[red]{leaks['total']} leaking pairs[/]"
    console.print(f"leak check: {mark} (exact {leaks['exact']}, near-duplicate {leaks['near_duplicate']}, "
                  f"group key {leaks['group_key']}, same text {leaks['text']})")
    console.print(f"{result['groups']} groups (largest {result['largest_group']}); label share gap at most "
                  f"{result['label_balance_max_deviation_points']} points; {result['mode']} split"
                  + (f", anchored on {result['anchored_on']} ({result['moved_documents']} earlier documents moved)"
                     if result.get("anchored_on") else "")
                  + f"; {result['seconds']} s")
    for w in result["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")


def render_diff(result: dict[str, Any], *, show: int = 10) -> None:
    t = Table(title=f"{result['from']} -> {result['to']}", show_header=False)
    for k in ("added", "removed", "relabeled", "moved", "unchanged"):
        t.add_row(k, str(result[k]))
    console.print(t)
    docs = result["documents"]
    for k in ("added", "removed"):
        if docs[k]:
            more = f" (+{len(docs[k]) - show} more)" if len(docs[k]) > show else ""
            console.print(f"{k}: " + ", ".join(str(i) for i in docs[k][:show]) + more)
    for k in ("relabeled", "moved"):
        if docs[k]:
            more = f" (+{len(docs[k]) - show} more)" if len(docs[k]) > show else ""
            console.print(f"{k}: " + ", ".join(f"{c['id']} {c['from']}->{c['to']}" for c in docs[k][:show]) + more)


def export(
    split: Annotated[
        str | None, typer.Option("--split", help="train/dev/test percentages, e.g. 80/10/10 (default: config).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder holding the versions (default: config export.out).")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="parquet | jsonl | csv | hf (default: config).")] = None,
    domain: Annotated[str | None, typer.Option("--domain", help=f"Only this domain: {', '.join(DOMAINS)}.")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Only documents from this source.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the split hash (default: config).")] = None,
    min_agreement: Annotated[
        float | None, typer.Option("--min-agreement", help="Leave out labels with a lower share of votes.")
    ] = None,
    exclude_issues: Annotated[
        bool, typer.Option("--exclude-issues", help="Leave out documents with an open label issue (audit).")
    ] = False,
    time_split: Annotated[
        str | None,
        typer.Option("--time-split", help="Split by time: `created_at` or a meta key; older trains, newer tests."),
    ] = None,
    include_unlabeled: Annotated[
        bool, typer.Option("--include-unlabeled", help="Export unlabeled documents too (label empty).")
    ] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Ignore earlier versions: don't keep documents in their earlier split.")
    ] = False,
    diff: Annotated[
        tuple[str, str] | None,
        typer.Option("--diff", help="Compare two versions instead: V1 V2 (names under --out, `latest`, or folders)."),
    ] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write labeled documents as leak-free, stratified, stable train/dev/test files with a versioned manifest."""
    from pipelines.export import diff_versions, export_dataset

    if diff:
        cfg = load_config(config)
        result = diff_versions(out or _default_out(cfg), diff[0], diff[1])
        emit(result, as_json=json_out, render=lambda: render_diff(result))
        return
    ctx = make_context(db, config)
    opts = ctx.config.export
    live = not json_out and err_console.is_terminal
    with err_console.status("exporting", spinner="dots") if live else nullcontext() as status:
        result = export_dataset(
            ctx.store, out=out or _default_out(ctx.config), split=split or opts.split, fmt=fmt or opts.format,
            domain=domain, source=source, seed=opts.seed if seed is None else seed, min_agreement=min_agreement,
            exclude_issues=exclude_issues, time_split=time_split, include_unlabeled=include_unlabeled, fresh=fresh,
            on_stage=(lambda name: status.update(f"exporting: {name}")) if status is not None else None,
        )
    emit(result, as_json=json_out, render=lambda: render_export(result))


def _default_out(cfg: Config) -> Path:
    """`[export] out`, relative to the config file's folder (else the working directory), as `curate nightly`."""
    root = Path(cfg.export.out)
    if not root.is_absolute() and cfg.path is not None:
        root = cfg.path.parent / root
    return root


def register(app: typer.Typer) -> None:
    app.command("export")(export)
