"""`sluice stream --job ...` (score a Kafka topic) and `sluice produce ...` (feed one)."""

from __future__ import annotations

import os
import sys

import typer

from sluice.cli._paths import child_env, user_path
from sluice.config import REPO_ROOT
from sluice.errors import SluiceError

__all__ = ["produce", "register", "stream"]


def stream(
    job: str = typer.Option(..., "--job", help="Job file, e.g. configs/jobs/fraud_stream.yaml"),
    config: str | None = typer.Option(None, "--config", help="Platform config file."),
    until_caught_up: bool = typer.Option(
        False, "--until-caught-up", help="Exit once the group's lag is 0 on every partition."
    ),
    max_seconds: float | None = typer.Option(None, "--max-seconds", help="Exit after this long."),
) -> None:
    """Score a Kafka topic continuously on the local (or configured) Ray: `pipelines.stream_score`.

    SIGTERM or Ctrl-C finishes the batch in flight, commits it and exits.
    """
    cmd = [sys.executable, "-m", "pipelines.stream_score", "--job", user_path(job)]
    cmd += ["--config", user_path(config)] if config else []
    cmd += ["--until-caught-up"] if until_caught_up else []
    cmd += ["--max-seconds", str(max_seconds)] if max_seconds is not None else []
    env = child_env()  # before the chdir: a relative SLUICE_CONFIG is the user's
    os.chdir(REPO_ROOT)
    # Replace this process: signals (SIGTERM from a supervisor, Ctrl-C) reach the driver.
    os.execve(sys.executable, cmd, env)


def produce(
    contract: str = typer.Option("fraud", "--contract", help="Contract of the events."),
    rate: float = typer.Option(1000.0, "--rate", min=0, help="Messages per second (0: no limit)."),
    count: int = typer.Option(10_000, "--count", min=1, help="Events to generate and send."),
    invalid: float = typer.Option(
        0.0, "--invalid", min=0, max=1, help="Share of events breaking the contract."
    ),
    malformed: float = typer.Option(
        0.0, "--malformed", min=0, max=0.99, help="Share of messages that are not JSON objects."
    ),
    topic: str | None = typer.Option(None, "--topic", help="Default: sluice-<contract>-events."),
    partitions: int = typer.Option(4, "--partitions", min=1, help="If the topic is created."),
    seed: int = typer.Option(0, "--seed", help="Seeds the generated events."),
    config: str | None = typer.Option(None, "--config", help="Platform config file."),
) -> None:
    """Send generated events to Kafka as JSON, keyed by card id, at a steady rate."""
    from sluice.config import load_platform_config
    from sluice.contract import load_contract
    from sluice.stream import ensure_topic, event_messages, produce_messages

    try:
        cfg = load_platform_config(config)
        name = load_contract(contract).name
        if name != "fraud":
            raise typer.BadParameter("only the fraud contract has an event generator", "--contract")
        topic = topic or f"sluice-{name}-events"
        n_parts = ensure_topic(cfg.kafka, topic, partitions)
        payloads, keys, data = event_messages(count, seed=seed, invalid=invalid,
                                              malformed=malformed)  # fmt: skip
        typer.echo(f"producing {len(payloads):,} messages ({count:,} events, "
                   f"{len(data.invalid_rows):,} invalid, {len(payloads) - count:,} malformed) "
                   f"to {topic} ({n_parts} partitions) at "
                   f"{f'{rate:,.0f}/s' if rate else 'full speed'}")  # fmt: skip
        report = produce_messages(cfg.kafka, topic, payloads, keys, rate=rate or None)
    except SluiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"delivered {report.delivered:,} in {report.elapsed_s:.1f} s "
               f"({report.rate:,.0f} msg/s)")  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add `stream` and `produce` to the top-level `sluice` command."""
    app.command()(stream)
    app.command()(produce)
