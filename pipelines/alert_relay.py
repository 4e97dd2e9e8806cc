"""The alert relay: every path's alert candidates -> the alert topic, each transaction once.

    python -m pipelines.alert_relay --contract fraud [--until-caught-up] [--max-seconds N]
    sluice alerts relay --contract fraud [--until-caught-up]
    ray job submit --working-dir . -- python -m pipelines.alert_relay --contract fraud

Batch, stream and online scoring propose their alerts on ``<alerts>-candidates``, at least
once; the relay (``sluice.stream.AlertRelay``) publishes each transaction's first candidate
on the alert topic in Kafka transactions, so a ``read_committed`` reader sees each alert
once. Long-running: one relay in this process; more processes, each with a ``--member``
name of its own, share the candidate partitions through the relay's consumer group. A
relay whose transaction fails is replaced (a fresh consumer, producer and key set,
resuming from the group's offsets) up to ``--max-restarts`` within any 5 minutes.

It runs until SIGTERM/SIGINT (the batch in flight is committed first), ``--max-seconds``,
or, with ``--until-caught-up``, until no committed candidate is past the group's offsets.
Its last line is one JSON object ``{"relay_summary": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass

from sluice.config import PlatformConfig, load_platform_config
from sluice.errors import SluiceError, StreamError
from sluice.stream import (
    AlertRelay,
    RelayStats,
    RestartBudget,
    alert_topic,
    candidate_topic,
    install_stop_signals,
    pending_messages,
)

log = logging.getLogger("sluice.alert_relay")

_CHECK_EVERY_S = 1.0


@dataclass
class RelaySummary:
    contract: str
    candidates_topic: str
    alerts_topic: str
    stopped_by: str = ""
    candidates: int = 0
    published: int = 0
    duplicates: int = 0
    keyless: int = 0
    commits: int = 0
    restarts: int = 0
    elapsed_s: float = 0.0

    def add(self, stats: RelayStats) -> None:
        for name in ("candidates", "published", "duplicates", "keyless", "commits"):
            setattr(self, name, getattr(self, name) + getattr(stats, name))


class _Running:
    """One relay in a thread; ``error`` is what ended it, if it failed."""

    def __init__(self, cfg: PlatformConfig, contract: str, member: str,
                 batch_messages: int) -> None:  # fmt: skip
        self.relay = AlertRelay(cfg.kafka, contract, member=member, max_messages=batch_messages)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="alert-relay", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.relay.run()
        except BaseException as exc:  # noqa: BLE001 - reported to the supervising thread
            self.error = exc

    def stop(self) -> RelayStats:
        self.relay.stop()
        self.thread.join()
        return self.relay.stats()


def run(cfg: PlatformConfig, contract: str, *, until_caught_up: bool = False,
        max_seconds: float | None = None, max_restarts: int = 5, member: str = "0",
        batch_messages: int = 1000,
        stop: threading.Event | None = None) -> RelaySummary:  # fmt: skip
    """Relay until stopped (see the module doc)."""
    started = time.monotonic()
    stop = stop or threading.Event()
    summary = RelaySummary(contract, candidate_topic(cfg.kafka, contract),
                           alert_topic(cfg.kafka, contract))  # fmt: skip
    budget = RestartBudget(max_restarts, 300.0)
    running = _Running(cfg, contract, member, batch_messages)
    try:
        while True:
            if stop.wait(_CHECK_EVERY_S):
                summary.stopped_by = "signal"
                break
            if not running.thread.is_alive():
                if not budget.spend():
                    summary.stopped_by = "failures"
                    break
                log.warning("alert relay failed (%s); starting a new one", running.error)
                summary.add(running.relay.stats())
                summary.restarts += 1
                running = _Running(cfg, contract, member, batch_messages)
                continue
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                summary.stopped_by = "max-seconds"
                break
            if until_caught_up and pending_messages(cfg.kafka, running.relay.group,
                                                    summary.candidates_topic) == 0:  # fmt: skip
                summary.stopped_by = "caught-up"
                break
    finally:
        summary.add(running.stop())
        summary.elapsed_s = round(time.monotonic() - started, 3)
    if running.error is not None:
        raise StreamError(f"alert relay of {contract}: more than {max_restarts} failure(s) "
                          f"within 5 minutes; the last: {running.error}") from running.error
    return summary


def print_summary(s: RelaySummary) -> None:
    print(f"alert relay {s.candidates_topic} -> {s.alerts_topic}: {s.candidates} candidate(s), "
          f"{s.published} published, {s.duplicates} duplicate(s) dropped, {s.restarts} "
          f"restart(s); stopped by {s.stopped_by} after {s.elapsed_s:.1f} s")  # fmt: skip
    print(json.dumps({"relay_summary": asdict(s)}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contract", default="fraud", help="contract name")
    parser.add_argument("--config", default=None, help="platform config")
    parser.add_argument("--until-caught-up", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--max-restarts", type=int, default=5)
    parser.add_argument("--member", default="0", help="this relay's name, one per process")
    parser.add_argument("--batch-messages", type=int, default=1000,
                        help="most candidates per transaction")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    restore = install_stop_signals(stop)
    try:
        summary = run(load_platform_config(args.config), args.contract,
                      until_caught_up=args.until_caught_up, max_seconds=args.max_seconds,
                      max_restarts=args.max_restarts, member=args.member,
                      batch_messages=args.batch_messages, stop=stop)  # fmt: skip
    except SluiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        restore()
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
