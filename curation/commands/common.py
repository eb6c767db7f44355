"""Shared option types and output helpers for the command modules."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from curation.config import Config, load_config, resolve_db_url

__all__ = [
    "DbOpt",
    "ConfigOpt",
    "JsonOpt",
    "AppContext",
    "make_context",
    "emit",
    "console",
    "err_console",
    "progress",
    "to_jsonable",
]

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Store URL or SQLite file (else CURATE_DATABASE_URL, the config, ./.curate/curate.db)."),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Project config (else CURATE_CONFIG or the nearest curate.toml).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]

console = Console()
err_console = Console(stderr=True)


@dataclass
class AppContext:
    """What a command needs: the validated config and the store (opened on first use)."""

    config: Config
    db_url: str
    _store: Any = field(default=None, repr=False)

    @property
    def store(self) -> Any:
        if self._store is None:
            from store.engine import open_store

            self._store = open_store(self.db_url)
        return self._store


def make_context(db: str | None, config: Path | None) -> AppContext:
    cfg = load_config(config)
    return AppContext(config=cfg, db_url=resolve_db_url(db, cfg))


def to_jsonable(obj: Any) -> Any:
    """Make numpy/pandas/datetime values JSON-serialisable (NaN becomes null)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        try:
            obj = obj.item()
        except (ValueError, TypeError):
            pass
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    return obj


def emit(result: dict[str, Any] | list[Any], *, as_json: bool, render: Callable[[], None]) -> None:
    """Print `result` as one JSON object with --json, else call the human renderer."""
    if as_json:
        sys.stdout.write(json.dumps(to_jsonable(result), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        render()


@contextmanager
def progress(*, enabled: bool = True, transient: bool = False) -> Iterator[Progress]:
    """A rich progress bar on stderr (off with --json or when stderr is not a terminal)."""
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
        disable=not enabled or not err_console.is_terminal,
    )
    with prog:
        yield prog
