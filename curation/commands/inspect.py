"""Looking at the store: `status`, `docs`, `quarantine`, `runs`, `db`, `config check`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from curation.commands.common import ConfigOpt, DbOpt, JsonOpt, console, emit, make_context

__all__ = ["register"]

db_app = typer.Typer(help="Store schema migrations.", no_args_is_help=True)
config_app = typer.Typer(help="Project config.", no_args_is_help=True)


def status(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Counts of documents, labels, duplicates, quarantine, annotations and tasks, per source and domain."""
    from store.documents import store_status

    ctx = make_context(db, config)
    result = store_status(ctx.store)
    result["store"] = ctx.store.display_url

    def render() -> None:
        t = Table(title=f"store {result['store']}", show_header=False)
        for k in ("documents", "labeled_documents", "unlabeled_documents", "duplicates", "near_duplicate_clusters",
                  "quarantined", "annotations", "annotated_documents", "tasks"):
            t.add_row(k, str(result[k]))
        console.print(t)
        if result["per_source"]:
            s = Table(title="per source")
            cols = ["source", "domain", "documents", "labeled_documents", "unlabeled_documents", "duplicates",
                    "quarantined"]
            for c in cols:
                s.add_column(c)
            for row in result["per_source"]:
                s.add_row(*[str(row[c]) for c in cols])
            console.print(s)

    emit(result, as_json=json_out, render=render)


def docs(
    source: Annotated[str | None, typer.Option("--source")] = None,
    domain: Annotated[str | None, typer.Option("--domain")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Documents with their masked text, labels and near-duplicate cluster."""
    from store.documents import annotations_frame, documents_frame

    ctx = make_context(db, config)
    frame = documents_frame(ctx.store, domain=domain, source=source, limit=limit)
    ann = annotations_frame(ctx.store, domain=domain, source=source)
    labels: dict[int, list[str]] = {}
    for doc_id, label in zip(ann["document_id"], ann["label"], strict=True):
        if doc_id in set(frame["id"]):
            labels.setdefault(int(doc_id), []).append(str(label))
    rows: list[dict[str, Any]] = [
        {"id": int(r.id), "external_id": r.external_id, "text": r.text, "labels": labels.get(int(r.id), []),
         "source": r.source, "domain": r.domain, "cluster": None if r.cluster_id is None else int(r.cluster_id)}
        for r in frame.itertuples()
    ]

    def render() -> None:
        t = Table(title=f"{len(rows)} documents")
        for c in ("id", "external_id", "text", "labels", "source", "domain", "cluster"):
            t.add_column(c, overflow="fold", max_width=80 if c == "text" else None)
        for r in rows:
            t.add_row(str(r["id"]), str(r["external_id"] or ""), r["text"], ",".join(r["labels"]), r["source"],
                      r["domain"], str(r["cluster"]))
        console.print(t)

    emit({"documents": rows}, as_json=json_out, render=render)


def quarantine(
    source: Annotated[str | None, typer.Option("--source")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rows that could not be stored, with the reason and the raw payload."""
    from store.documents import quarantine_frame

    ctx = make_context(db, config)
    frame = quarantine_frame(ctx.store, source=source, limit=limit)
    rows = [{"source": r.source, "row_number": int(r.row_number), "reason": r.reason, "raw": r.raw_payload}
            for r in frame.itertuples()]
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1

    def render() -> None:
        t = Table(title=f"{len(rows)} quarantined rows")
        for c in ("source", "row", "reason", "raw payload"):
            t.add_column(c, overflow="fold", max_width=70 if c == "raw payload" else None)
        for r in rows:
            raw = (r["raw"] or "")[:300]
            t.add_row(r["source"], str(r["row_number"]), r["reason"], raw)
        console.print(t)

    emit({"quarantined": len(rows), "reasons": reasons, "rows": rows}, as_json=json_out, render=render)


def runs(
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 30,
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recent runs of every command, with status, timings and counts."""
    from store.runs import list_runs

    ctx = make_context(db, config)
    items = list_runs(ctx.store, kind=kind, limit=limit)

    def render() -> None:
        t = Table(title="runs")
        for c in ("id", "kind", "status", "started", "seconds", "error"):
            t.add_column(c, overflow="fold")
        for r in items:
            secs = f"{r['seconds']:.2f}" if r["seconds"] is not None else ""
            t.add_row(str(r["id"]), r["kind"], r["status"], r["started_at"] or "", secs, (r["error"] or "")[:80])
        console.print(t)

    emit({"runs": items}, as_json=json_out, render=render)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument()] = "head", db: DbOpt = None, config: ConfigOpt = None
) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from store.engine import current_revision, open_store, upgrade

    ctx = make_context(db, config)
    store = open_store(ctx.db_url, migrate=False)
    upgrade(store.engine, revision)
    console.print(f"{store.display_url}: at revision {current_revision(store.engine)}")


@db_app.command("current")
def db_current(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Show the store's schema revision and the newest one this version knows."""
    from store.engine import current_revision, head_revision, open_store

    ctx = make_context(db, config)
    store = open_store(ctx.db_url, migrate=False)
    result = {"store": store.display_url, "current": current_revision(store.engine), "head": head_revision()}
    emit(result, as_json=json_out,
         render=lambda: console.print(f"{result['store']}: revision {result['current']} (newest {result['head']})"))


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()], db: DbOpt = None, config: ConfigOpt = None) -> None:
    """Revert migrations down to REVISION ('base' empties the store: back it up first)."""
    from store.engine import current_revision, downgrade, open_store

    ctx = make_context(db, config)
    store = open_store(ctx.db_url, migrate=False)
    downgrade(store.engine, revision)
    console.print(f"{store.display_url}: at revision {current_revision(store.engine)}")


@config_app.command("check")
def config_check(config: ConfigOpt = None, db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """Validate the project config and show where it and the store come from."""
    ctx = make_context(db, config)
    from store.engine import redact_url

    result: dict[str, Any] = {
        "valid": True,
        "config": str(ctx.config.path) if ctx.config.path else None,
        "store": redact_url(ctx.db_url),
        "domains": {d: {"labels": len(c.labels)} for d, c in ctx.config.domains.items()},
    }

    def render() -> None:
        src = result["config"] or "built-in defaults (no curate.toml found)"
        console.print(f"[green]config ok[/]: {src}\nstore: {result['store']}")
        for d, c in result["domains"].items():
            console.print(f"  domain {d}: {c['labels'] or 'labels from the store'}"
                          f"{' labels' if c['labels'] else ''}")

    emit(result, as_json=json_out, render=render)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("docs")(docs)
    app.command("quarantine")(quarantine)
    app.command("runs")(runs)
    app.add_typer(db_app, name="db")
    app.add_typer(config_app, name="config")
