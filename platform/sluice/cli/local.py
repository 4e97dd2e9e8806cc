"""`sluice local up | down | status [--cluster]`: real Cassandra and Kafka on 127.0.0.1, or
with ``--cluster`` a 3-node cluster of each on 127.0.0.1-3 (configs/platform-cluster.yaml)."""

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
ClusterOption = typer.Option(
    False, "--cluster", help="The 3-node cluster of configs/platform-cluster.yaml."
)
CLUSTER_CONFIG = Path("configs/platform-cluster.yaml")


def _services(config: Path | None, cluster: bool = False) -> LocalServices:
    from sluice.config import REPO_ROOT

    if cluster and config is not None:
        typer.echo("error: --cluster names its config; give --config or --cluster", err=True)
        raise typer.Exit(2)
    try:
        return LocalServices(load_platform_config(REPO_ROOT / CLUSTER_CONFIG if cluster
                                                  else config), echo=typer.echo)  # fmt: skip
    except SluiceError as exc:  # a bad or missing --config: its message, not a traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def up(
    config: Path | None = ConfigOption,
    cluster: bool = ClusterOption,
    auth: bool = typer.Option(
        False, "--auth", help="Start Cassandra with PasswordAuthenticator (user cassandra)."
    ),
) -> None:
    """Fetch (cached), start and health-check Cassandra and Kafka."""
    try:
        _services(config, cluster).up(auth=auth)
    except SluiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def down(config: Path | None = ConfigOption, cluster: bool = ClusterOption) -> None:
    """Stop the servers `up` started (by their recorded pids)."""
    _services(config, cluster).down()


@app.command()
def status(config: Path | None = ConfigOption, cluster: bool = ClusterOption) -> None:
    """Show each server (each node of a cluster); exit 1 unless all are up and answering."""
    rows = _services(config, cluster).status()
    for s in rows:
        state = "up" if s.healthy else ("starting" if s.running else "down")
        pid = f"pid {s.pid}" if s.pid else "-"
        typer.echo(f"{s.name:<12} {state:<9} {pid:<11} {s.detail}")
    if not all(s.healthy for s in rows):
        raise typer.Exit(1)
