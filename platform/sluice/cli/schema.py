"""`sluice schema apply`: create (and check) the keyspace and tables Sluice writes to."""

from __future__ import annotations

from pathlib import Path

import typer

from sluice.config import load_platform_config
from sluice.contract import CONTRACTS_DIR, load_contract
from sluice.errors import SluiceError

app = typer.Typer(help="Create and check Sluice's Cassandra tables.", no_args_is_help=True)


@app.command()
def apply(
    contract: list[str] = typer.Option(  # noqa: B008 - typer declares options this way
        None, "--contract", help="Contract name or YAML path (repeatable; default: all)."
    ),
    config: Path | None = typer.Option(  # noqa: B008
        None, "--config", help="Platform config (default configs/platform.yaml)."
    ),
) -> None:
    """Create the keyspace and tables; fail, naming the fix, where an existing one differs."""
    from sluice.store import apply_schema, connect

    try:
        cfg = load_platform_config(config).cassandra
        names = contract or sorted(p.stem for p in CONTRACTS_DIR.glob("*.yaml"))
        contracts = [load_contract(n) for n in names]
        cluster, session = connect(cfg)
        try:
            for line in apply_schema(session, cfg, contracts):
                typer.echo(line)
        finally:
            cluster.shutdown()
    except SluiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
