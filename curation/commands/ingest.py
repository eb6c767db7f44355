"""`curate ingest`: files to documents (clean, PII-masked, deduplicated, tokenized)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from curation.commands.common import ConfigOpt, DbOpt, JsonOpt, console, emit, make_context, progress
from curation.config import DOMAINS, check_domain

__all__ = ["register", "render_ingest_summary"]


def render_ingest_summary(result: dict[str, Any], *, store_url: str) -> None:
    t = Table(title=f"ingest ({result['domain']}) into {store_url}", show_header=False)
    for key in ("rows_read", "stored", "duplicates", "already_ingested", "near_duplicate_clusters",
                "near_duplicates", "quarantined", "labels_imported", "seconds", "docs_per_s"):
        t.add_row(key, str(result.get(key)))
    for reason, n in sorted(result["quarantine_reasons"].items()):
        t.add_row(f"  quarantined: {reason}", str(n))
    for kind, n in sorted(result["pii_masked"].items()):
        t.add_row(f"  PII masked: {kind}", str(n))
    console.print(t)
    balance = result["stored"] + result["duplicates"] + result["quarantined"]
    mark = "[green]ok[/]" if balance == result["rows_read"] else "[red]MISMATCH[/]"
    console.print(f"rows_read {result['rows_read']} = stored {result['stored']} + duplicates "
                  f"{result['duplicates']} + quarantined {result['quarantined']}: {mark}")


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="CSV/TSV, JSONL, Parquet or text files.")],
    domain: Annotated[str, typer.Option("--domain", help=f"One of: {', '.join(DOMAINS)}.")],
    text_column: Annotated[str | None, typer.Option("--text-column", help="Column with the text.")] = None,
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="Column with labels (become annotations).")
    ] = None,
    id_column: Annotated[str | None, typer.Option("--id-column", help="Column with the external id.")] = None,
    group_column: Annotated[
        str | None, typer.Option("--group-column", help="Group key (conversation, customer, company).")
    ] = None,
    source: Annotated[str | None, typer.Option("--source", help="Source name (default: the file name).")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Read raw text files, clean them, mask PII, drop duplicates, cluster near-duplicates, and store them."""
    from pipelines.ingest import ingest_files

    check_domain(domain)
    ctx = make_context(db, config)
    with progress(enabled=not json_out) as prog:
        task = prog.add_task("ingesting rows", total=None)
        result = ingest_files(
            ctx.store, paths, domain=domain, config=ctx.config, text_column=text_column,
            label_column=label_column, id_column=id_column, group_column=group_column, source=source,
            on_progress=lambda n: prog.advance(task, n), auto_workers=True,
        )
    emit(result, as_json=json_out, render=lambda: render_ingest_summary(result, store_url=ctx.store.display_url))


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
