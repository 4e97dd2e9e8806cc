"""`sluice alerts list | show | tail`: the alerts an analyst works from.

    sluice alerts list --contract fraud [--day 2026-12-01] [--decision block] [--limit 20]
    sluice alerts show tx_0123... --contract fraud
    sluice alerts tail --contract fraud [--since 10m]
    sluice alerts relay --contract fraud [--until-caught-up] [--max-seconds N]

``list`` pages one day's alerts newest first (the ``alerts`` table: one partition per
contract and day of the event); ``show`` reads one transaction's alert from
``alerts_by_key``. Both exit 1 with the reason when Cassandra cannot answer, and ``show``
exits 2 when the transaction has no alert. ``tail`` follows the alert topic
(``sluice-<contract>-alerts``, written by the alert relay in Kafka transactions) as a
``read_committed`` reader: each alert once, as the relay commits it. ``relay`` runs the
relay (``pipelines.alert_relay``).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import typer

from sluice.decisions import ALERTING
from sluice.errors import SluiceError

app = typer.Typer(help="Alerts (review and block decisions) from Cassandra.",
                  no_args_is_help=True)  # fmt: skip


def _reader(config: Path | None, contract: str) -> Any:
    from sluice.config import load_platform_config
    from sluice.store import AlertReader

    return AlertReader(load_platform_config(config).cassandra, contract)


def _line(row: Any) -> str:
    when = row.event_time.replace(tzinfo=UTC).isoformat(timespec="seconds")
    return (f"{when}  {row.decision:<7}  {row.score:.4f}  {row.key}  card {row.entity}  "
            f"{row.model_version}  {row.policy_id}  ({row.source})")  # fmt: skip


def _driver_error(exc: Exception) -> None:
    hint = " (run `sluice schema apply`)" if "does not exist" in str(exc) else ""
    typer.echo(f"error: reading alerts from Cassandra: {type(exc).__name__}: {exc}{hint}",
               err=True)  # fmt: skip
    raise typer.Exit(1) from exc


@app.command("list")
def list_alerts(
    contract: str = typer.Option("fraud", "--contract", help="Contract name."),
    day: str | None = typer.Option(None, "--day", help="UTC day of the events, YYYY-MM-DD "
                                   "(default: today)."),  # fmt: skip
    decision: str | None = typer.Option(None, "--decision", help="Only this decision."),
    limit: int = typer.Option(20, "--limit", min=1, max=10_000, help="At most this many."),
    config: Path | None = typer.Option(None, "--config", help="Platform config."),  # noqa: B008
) -> None:
    """One day's alerts, newest event first."""
    try:
        when = date.fromisoformat(day) if day else datetime.now(UTC).date()
    except ValueError:
        typer.echo(f"error: --day {day!r} is not a date (YYYY-MM-DD)", err=True)
        raise typer.Exit(2) from None
    alerting = sorted(d.value for d in ALERTING)
    if decision is not None and decision not in alerting:
        typer.echo(f"error: --decision {decision!r} is not one of {', '.join(alerting)} "
                   "(the decisions that raise an alert)", err=True)  # fmt: skip
        raise typer.Exit(2)
    try:
        shown = 0
        for row in _reader(config, contract).day(when):
            if decision and row.decision != decision:
                continue
            typer.echo(_line(row))
            shown += 1
            if shown >= limit:
                break
    except SluiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except Exception as exc:  # noqa: BLE001 - the driver's errors: say what failed
        _driver_error(exc)
    if shown == 0:
        typer.echo(f"no {decision + ' ' if decision else ''}alerts for {contract} on {when}")


@app.command()
def show(
    key: str = typer.Argument(..., help="The transaction key."),
    contract: str = typer.Option("fraud", "--contract", help="Contract name."),
    config: Path | None = typer.Option(None, "--config", help="Platform config."),  # noqa: B008
) -> None:
    """One transaction's alert, with its reasons."""
    try:
        row = _reader(config, contract).one(key)
    except SluiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except Exception as exc:  # noqa: BLE001 - the driver's errors: say what failed
        _driver_error(exc)
    if row is None:
        typer.echo(f"no alert for transaction {key!r} of contract {contract}", err=True)
        raise typer.Exit(2)
    typer.echo(_line(row))
    typer.echo(f"  alerted at {row.alerted_at.replace(tzinfo=UTC).isoformat(timespec='seconds')}")
    reasons = json.loads(row.reasons) if row.reasons else []
    if not reasons:
        typer.echo("  reasons: none computed for this alert")
    else:
        typer.echo(f"  reasons (feature, its value, contribution to the score; {len(reasons)}):")
    for r in reasons:
        typer.echo(f"  {r['feature']:<24} {r['value']:>12.4f}  {r['contribution']:+.4f}")


def _since_ms(since: str) -> int:
    """``--since``: an ISO time (UTC if it names no zone) or a duration ago (30s, 10m, 2h, 1d)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if since[-1:] in units and since[:-1].isdigit():
        return int((datetime.now(UTC).timestamp() - int(since[:-1]) * units[since[-1]]) * 1000)
    when = datetime.fromisoformat(since)
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


@app.command()
def tail(
    contract: str = typer.Option("fraud", "--contract", help="Contract name."),
    topic: str | None = typer.Option(None, "--topic", help="Default: the platform config's "
                                     "kafka.alerts_topic (sluice-<contract>-alerts)."),
    since: str | None = typer.Option(None, "--since", help="Start at this time (ISO) or this "
                                     "long ago (10m, 2h); default: new alerts only."),
    max_alerts: int | None = typer.Option(None, "--max", min=1, help="Stop after this many."),
    idle_exit_s: float | None = typer.Option(None, "--idle-exit-s", min=0.1,
                                             help="Stop after this long without an alert."),
    config: Path | None = typer.Option(None, "--config", help="Platform config."),  # noqa: B008
) -> None:
    """Follow the alert topic as alerts are committed (read_committed), one line each."""
    import time

    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    from sluice.config import load_platform_config
    from sluice.stream import alert_topic

    try:
        start = _since_ms(since) if since else None
    except ValueError:
        typer.echo(f"error: --since {since!r} is neither an ISO time nor a duration like 10m",
                   err=True)  # fmt: skip
        raise typer.Exit(2) from None
    kafka = load_platform_config(config).kafka
    name = topic or alert_topic(kafka, contract)
    consumer = Consumer(kafka.client_settings() | {
        "group.id": "sluice-alerts-tail", "enable.auto.commit": False,
        "isolation.level": "read_committed"})  # fmt: skip
    shown, last = 0, time.monotonic()
    try:
        meta = consumer.list_topics(name, timeout=kafka.request_timeout_s).topics.get(name)
        if meta is None or meta.error is not None or not meta.partitions:
            typer.echo(f"error: alert topic {name!r} does not exist (the alert relay creates "
                       "it)",
                       err=True)  # fmt: skip
            raise typer.Exit(1)
        parts = [TopicPartition(name, p, start if start is not None else OFFSET_END)
                 for p in sorted(meta.partitions)]  # fmt: skip
        if start is not None:
            parts = consumer.offsets_for_times(parts, timeout=kafka.request_timeout_s)
        consumer.assign(parts)
        while max_alerts is None or shown < max_alerts:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                if idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                    break
                continue
            a = json.loads(msg.value())
            top = ", ".join(f"{r['feature']} {r['contribution']:+.3f}" for r in a["reasons"][:3])
            typer.echo(f"{a['event_time']}  {a['decision']:<7}  {a['score']:.4f}  {a['key']}  "
                       f"{a['model_version']}  {a['policy_id']}  ({a['path']})  {top}")  # fmt: skip
            shown, last = shown + 1, time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


@app.command()
def relay(
    contract: str = typer.Option("fraud", "--contract", help="Contract name."),
    until_caught_up: bool = typer.Option(False, "--until-caught-up",
                                         help="Stop once every candidate is relayed."),
    max_seconds: float | None = typer.Option(None, "--max-seconds", min=0.1),
    config: Path | None = typer.Option(None, "--config", help="Platform config."),  # noqa: B008
) -> None:
    """Publish each transaction's first alert candidate on the alert topic, exactly once
    (`pipelines.alert_relay`, run at the repo root)."""
    import subprocess
    import sys

    from sluice.cli._paths import child_env, user_path
    from sluice.config import REPO_ROOT

    cmd = [sys.executable, "-m", "pipelines.alert_relay", "--contract", contract]
    cmd += ["--until-caught-up"] if until_caught_up else []
    cmd += [] if max_seconds is None else ["--max-seconds", str(max_seconds)]
    cmd += [] if config is None else ["--config", user_path(str(config))]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=child_env(), check=False)
    raise typer.Exit(done.returncode)
