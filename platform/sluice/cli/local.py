"""`sluice local up | down | status`: real Cassandra and Kafka on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import typer

from sluice.config import load_platform_config
from sluice.errors import SluiceError
from sluice.local import LocalServices

app = typer.Typer(help="Start, stop and check the local Cassandra and Kafka servers.",
                  no_args_is_help=True)

ConfigOption = typer.Option(
    None, "--config", help="Platform config (default configs/platform.yaml)."
)


def _services(config: Path | None) -> LocalServices:
    try:
        return LocalServices(load_platform_config(config), echo=typer.echo)
    except SluiceError as exc:  # a bad or missing --config: its message, not a traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def up(
    config: Path | None = ConfigOption,
    auth: bool = typer.Option(
        False, "--auth", help="Start Cassandra with PasswordAuthenticator (user cassandra)."
    ),
) -> None:
    """Fetch (cached), start and health-check Cassandra and Kafka."""
    try:
        _services(config).up(auth=auth)
    except SluiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def down(config: Path | None = ConfigOption) -> None:
    """Stop the servers `up` started (by their recorded pids)."""
    _services(config).down()


@app.command()
def status(config: Path | None = ConfigOption) -> None:
    """Show each server; exit 1 unless both are up and answering."""
    rows = _services(config).status()
    for s in rows:
        state = "up" if s.healthy else ("starting" if s.running else "down")
        pid = f"pid {s.pid}" if s.pid else "-"
        typer.echo(f"{s.name:<10} {state:<9} {pid:<11} {s.detail}")
    if not all(s.healthy for s in rows):
        raise typer.Exit(1)
