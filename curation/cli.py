"""The `curate` command line: thin wrappers that parse options, call a plain function and print.

Each area registers its commands from `curation/commands/<area>.py` (a `register(app)` function), so the CLI stays
a list of small modules. Heavy libraries (torch, transformers, label-studio-sdk) are imported inside commands, so
`curate status` starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from curation.errors import CurationError

if TYPE_CHECKING:  # the click Context class typer's own signatures use (typer vendors click)
    from typer._click import Context as _ClickContext

__all__ = ["app", "main"]

COMMAND_MODULES = ("ingest", "inspect", "labelstudio", "active", "audit", "export", "nightly")

class _Group(TyperGroup):
    """Turns a `CurationError` into a red message and its exit code, also under typer's test runner."""

    def invoke(self, ctx: _ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except CurationError as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from exc


app = typer.Typer(
    cls=_Group,
    name="curate",
    help="Label and curate customer-service and financial text datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"curation.commands.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name == f"curation.commands.{_name}":
            continue
        raise
    _mod.register(app)


def main() -> None:
    """Entry point (console script `curate`)."""
    app()


if __name__ == "__main__":
    main()
