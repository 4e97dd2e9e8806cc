"""The `sluice` command line. Each command group lives in its own module."""

from __future__ import annotations

import typer

from sluice.cli import local, models, schema

app = typer.Typer(
    name="sluice",
    help="Sluice: batch, stream and online ML scoring on Ray, with results in Cassandra.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(local.app, name="local")
app.add_typer(models.app, name="models")
app.add_typer(schema.app, name="schema")

__all__ = ["app"]
