"""The Python driver against a client on the C++ driver, side by side, in one run.

    .venv/bin/pip install -e .[bench-clients]     # acsylla, on the ScyllaDB C++ driver
    .venv/bin/python bench/cassandra_clients.py [--rows 40000] [--reads 2000] [--rounds 2]

Issue 15 asks to measure an alternative to ``cassandra-driver`` side by side before
adopting one. Against the Cassandra of configs/platform.yaml, into the fraud contract's
predictions table of keyspace ``sluice_bench`` (recreated; the rows of
``bench/cassandra_write.py``, ready-made parameters, the writer's prepared statement with
its TTL and consistency), each client, one process, does:
- single inserts, 128 in flight (``execute_concurrent_with_args`` for the baseline: what
  R measures);
- UNLOGGED batches of 5 rows (under Cassandra's 5 KiB batch warning), 32 in flight;
- sequential single-partition reads of those rows (a one-row request's fixed cost).
Per kind: rows (or reads) per second, this process's CPU per row (every thread: the
client's whole cost), and, when the local servers run (``sluice local up``), Cassandra's
own CPU per row (its JVM's /proc ticks). Rounds alternate the clients; the best rate of
each kind is kept. Prints a table, then, as its last line, one JSON object. Not a test.
acsylla's driver says "Could not retrieve sharding info ..." once per connection: shard
awareness is a ScyllaDB feature, which Cassandra does not have; nothing is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "bench", REPO / "platform"):
    sys.path.insert(0, str(p))

from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args  # noqa: E402
from cassandra.query import BatchStatement, BatchType  # noqa: E402
from cassandra_write import KEYSPACE, _raw_setup  # noqa: E402

from sluice.config import load_platform_config  # noqa: E402
from sluice.local import LocalServices  # noqa: E402
from sluice.store import close_sessions  # noqa: E402

TARGETS: dict[str, float] = {}  # a measurement for a decision, not a target
BATCH_ROWS = 5
SELECT = f"SELECT score FROM {KEYSPACE}.predictions WHERE transaction_id = ?"
_HZ = os.sysconf("SC_CLK_TCK")


def cassandra_pid() -> int | None:
    """The local Cassandra's pid (``sluice local up``), None when it is not ours."""
    found = [s for s in LocalServices(load_platform_config(), echo=lambda _: None).status()
             if s.name.startswith("cassandra") and s.running]  # fmt: skip
    return found[0].pid if len(found) == 1 else None


def _jvm_seconds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _HZ


def measure(name: str, n: int, run: Callable[[], Any], pid: int | None) -> dict[str, float]:
    c0, j0, t0 = time.process_time(), _jvm_seconds(pid), time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    got = {"per_s": round(n / wall),
           "client_cpu_us": round(1e6 * (time.process_time() - c0) / n, 1),
           "cassandra_cpu_us": round(1e6 * (_jvm_seconds(pid) - j0) / n, 1)}  # fmt: skip
    print(f"  {name:<24}{got['per_s']:>10,} /s  client {got['client_cpu_us']:>7.1f} us"
          f"  cassandra {got['cassandra_cpu_us']:>7.1f} us", flush=True)  # fmt: skip
    return got


class PythonDriver:
    """The baseline: the session, statement and calls Sluice uses today."""

    name = "cassandra_driver"

    def __init__(self, session: Any, statement: Any) -> None:
        self.session, self.statement = session, statement
        self.select = session.prepare(SELECT)

    @staticmethod
    def params(rows: list[tuple]) -> list[tuple]:
        return rows

    def singles(self, rows: list[tuple]) -> None:
        execute_concurrent_with_args(self.session, self.statement, rows, concurrency=128,
                                     raise_on_first_error=True)  # fmt: skip

    def batches(self, rows: list[tuple]) -> None:
        batches = []
        for i in range(0, len(rows), BATCH_ROWS):
            batch = BatchStatement(BatchType.UNLOGGED,
                                   consistency_level=self.statement.consistency_level)
            for row in rows[i : i + BATCH_ROWS]:
                batch.add(self.statement, row)
            batches.append((batch, ()))
        execute_concurrent(self.session, batches, concurrency=32, raise_on_first_error=True)

    def reads(self, keys: list[str]) -> None:
        for key in keys:
            self.session.execute(self.select, (key,)).one()


class Acsylla:
    """The same work through acsylla (asyncio; its own loop in this thread)."""

    name = "acsylla"

    def __init__(self, statement: Any, hosts: list[str], port: int) -> None:
        import acsylla

        self.acsylla = acsylla
        # acsylla reads an int bound to a timestamp as seconds: these get float seconds.
        self._timestamps = [i for i, c in enumerate(statement.column_metadata)
                            if c.type.typename == "timestamp"]  # fmt: skip
        self.loop = asyncio.new_event_loop()

        async def connect() -> Any:  # its Cluster wants a running loop
            cluster = acsylla.create_cluster(hosts, port=port, protocol_version=4,
                                             consistency=acsylla.Consistency.LOCAL_QUORUM,
                                             log_level="error")  # fmt: skip
            return await cluster.create_session()

        self.session = self._run(connect())
        self.insert = self._run(self.session.create_prepared(statement.query_string))
        self.select = self._run(self.session.create_prepared(SELECT))

    def _run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def params(self, rows: list[tuple]) -> list[list[Any]]:
        """The rows as acsylla binds them: lists, timestamps (ms) as float seconds."""
        out = [list(r) for r in rows]
        for row in out:
            for i in self._timestamps:
                row[i] = row[i] / 1000.0
        return out

    def _bound(self, row: list[Any]) -> Any:
        statement = self.insert.bind()
        statement.bind_list(row)
        return statement

    def singles(self, rows: list[list[Any]]) -> None:
        self._run(self._gather(rows, 128, lambda r: self.session.execute(self._bound(r))))

    def batches(self, rows: list[list[Any]]) -> None:
        def send(chunk: list[list[Any]]) -> Awaitable[Any]:
            batch = self.acsylla.create_batch_unlogged()
            for row in chunk:
                batch.add_statement(self._bound(row))
            return self.session.execute_batch(batch)

        chunks = [rows[i : i + BATCH_ROWS] for i in range(0, len(rows), BATCH_ROWS)]
        self._run(self._gather(chunks, 32, send))

    def reads(self, keys: list[str]) -> None:
        async def read_all() -> None:
            for key in keys:
                statement = self.select.bind()
                statement.bind_list([key])
                (await self.session.execute(statement)).first().as_tuple()

        self._run(read_all())

    @staticmethod
    async def _gather(items: list[Any], in_flight: int, call: Callable[[Any], Awaitable]) -> None:
        gate = asyncio.Semaphore(in_flight)

        async def one(item: Any) -> None:
            async with gate:
                await call(item)

        await asyncio.gather(*(one(i) for i in items))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--reads", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)
    try:
        import acsylla  # noqa: F401
    except ImportError:
        print("bench/cassandra_clients.py needs acsylla: .venv/bin/pip install -e "
              ".[bench-clients]", file=sys.stderr)  # fmt: skip
        return 2
    cfg = load_platform_config().cassandra
    session, statement, rows = _raw_setup(a.rows, recreate=True)
    pid = cassandra_pid()
    clients = [PythonDriver(session, statement),
               Acsylla(statement, list(cfg.contact_points), cfg.port)]
    keys = [r[0] for r in rows[: a.reads]]
    best: dict[str, dict[str, float]] = {}
    for rnd in range(a.rounds):
        print(f"round {rnd + 1} of {a.rounds}", flush=True)
        for c in clients:
            data = c.params(rows)  # outside the timing, as R's ready-made parameters
            for kind, run in (("single", lambda c=c, d=data: c.singles(d)),
                              ("batch5", lambda c=c, d=data: c.batches(d)),
                              ("read", lambda c=c: c.reads(keys))):  # fmt: skip
                key = f"{c.name}_{kind}"
                got = measure(key, len(keys) if kind == "read" else len(data), run, pid)
                if key not in best or got["per_s"] > best[key]["per_s"]:
                    best[key] = got
    close_sessions()
    return report(best)


def report(best: dict[str, dict[str, float]]) -> int:
    print(f"\n{'client, kind':<28}{'per s':>10}{'client CPU us':>15}{'Cassandra CPU us':>18}")
    for name, f in best.items():
        print(f"{name:<28}{f['per_s']:>10,}{f['client_cpu_us']:>15.1f}"
              f"{f['cassandra_cpu_us']:>18.1f}")  # fmt: skip
    ratios = {}
    for kind in ("single", "batch5", "read"):
        py, acs = best[f"cassandra_driver_{kind}"], best[f"acsylla_{kind}"]
        ratios[f"acsylla_vs_driver_{kind}_rate"] = round(acs["per_s"] / py["per_s"], 2)
        ratios[f"acsylla_vs_driver_{kind}_client_cpu"] = round(
            acs["client_cpu_us"] / py["client_cpu_us"], 2)  # fmt: skip
    for k, v in ratios.items():
        print(f"{k}: {v}")
    print(json.dumps({"bench": "cassandra_clients", "figures": best, "ratios": ratios,
                      "targets": TARGETS}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
