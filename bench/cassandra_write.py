"""Cassandra write throughput in one run: the raw driver vs the Sluice writer vs the Ray sink.

    .venv/bin/python bench/cassandra_write.py [--rows 200000] [--concurrency 64,128,256]

Against the Cassandra of configs/platform.yaml (keyspace ``sluice_bench``, recreated),
into the fraud contract's predictions table (7 columns with a features map), it measures:
- R, the raw driver ceiling: the writer's own prepared statement (same consistency, TTL,
  idempotent flag) through ``execute_concurrent_with_args`` with ready-made parameter
  tuples, at each --concurrency; the best is R;
- the Sluice writer (``CassandraWriter.write`` on the Arrow table, conversion and retry
  bookkeeping included) at R's concurrency and at the configured ``write_concurrency``;
- the ``CassandraDatasink`` under Ray Data (``ray.init(num_cpus=2)``), the dataset
  materialized beforehand, so the time is the write alone;
- R_max, the store's ceiling rather than one client's: the same raw writes split over 1..4
  client processes started together (each its own driver session, at R's concurrency);
  the best aggregate rows/s. Every ratio is given against R and R_max.
Runs are interleaved for --rounds rounds and the best of each kind is kept (the least
disturbed by other load); beside each in-process run, this process's CPU a row (all its
threads, the driver's I/O thread included; the least of the rounds). Prints a table,
then, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from cassandra.concurrent import execute_concurrent_with_args  # noqa: E402

from sluice.config import CassandraConfig, load_platform_config  # noqa: E402
from sluice.contract import load_contract  # noqa: E402
from sluice.datagen import generate_transactions  # noqa: E402
from sluice.store import (  # noqa: E402
    CassandraWriter,
    WriteOptions,
    apply_schema,
    close_sessions,
    session_for,
    to_python,
)

TARGETS = {"writer_vs_raw": 0.9}
KEYSPACE = "sluice_bench"


def predictions(n: int) -> pa.Table:
    tx = generate_transactions(n, seed=3)
    rng = np.random.default_rng(3)
    score = rng.random(n)
    features = pa.array(
        [[("amount", a), ("hour", float(h))] for a, h in
         zip(tx["amount"].to_numpy(), rng.integers(0, 24, n), strict=True)],
        pa.map_(pa.string(), pa.float64()),
    )  # fmt: skip
    return pa.table({
        "transaction_id": tx["transaction_id"], "card_id": tx["card_id"],
        "event_time": tx["event_time"], "score": score,
        "model_version": pa.array(["fraud/1"] * n), "features": features,
        "scored_at": pa.array([datetime.now(UTC)] * n, pa.timestamp("ms", tz="UTC")),
    })  # fmt: skip


def _raw_setup(rows: int, *, recreate: bool) -> tuple[object, object, list[tuple]]:
    """(session, the writer's prepared statement, parameter tuples) for `rows` predictions
    into keyspace ``sluice_bench`` (dropped and re-created when `recreate`)."""
    platform = load_platform_config()
    cfg = CassandraConfig.model_validate({**platform.cassandra.model_dump(), "keyspace": KEYSPACE})
    contract = load_contract("fraud")
    session = session_for(cfg)
    if recreate:
        session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
        apply_schema(session, cfg, [contract])
    data = predictions(rows)
    opts = WriteOptions.from_config(cfg, contract.output.consistency, contract.output.ttl_s)
    w = CassandraWriter(session, KEYSPACE, contract.output.predictions_table,
                        data.column_names, opts)  # fmt: skip
    params = list(zip(*[to_python(data[c], w.cql_types[c]) for c in data.column_names],
                      strict=True))  # fmt: skip
    return session, w.statement, params


def raw_ceiling(rows: int, levels: tuple[int, ...] = (64, 128, 256)) -> tuple[float, int]:
    """R, for any bench: the best rows/s of the raw driver (the Sluice writer's own prepared
    statement, ready-made parameters, ``execute_concurrent_with_args``) into the fraud
    predictions table of keyspace ``sluice_bench`` (recreated), and its concurrency."""
    session, statement, params = _raw_setup(rows, recreate=True)
    rates = {c: rows / timed(lambda c=c: execute_concurrent_with_args(
        session, statement, params, concurrency=c)) for c in levels}  # fmt: skip
    level = max(rates, key=rates.__getitem__)
    return rates[level], level


def _raw_share(rows: int, processes: int, index: int, concurrency: int, barrier, out) -> None:
    """One client process of `raw_ceiling_max`: its own session, every `processes`-th row."""
    session, statement, params = _raw_setup(rows, recreate=False)
    share = params[index::processes]
    barrier.wait()
    execute_concurrent_with_args(session, statement, share, concurrency=concurrency)
    out.put(len(share))


def raw_ceiling_max(rows: int, concurrency: int, processes: tuple[int, ...] = (1, 2, 3, 4),
                    ) -> tuple[float, int, dict[int, float]]:  # fmt: skip
    """R_max, for any bench: the best aggregate rows/s of `rows` raw writes split over k
    client processes (k in `processes`) released together, each with its own session at
    `concurrency`; timed from the release to the last process's last acknowledgement.
    Returns (R_max, its k, rows/s per k). Expects keyspace ``sluice_bench`` to exist
    (call `raw_ceiling` first)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a fresh driver per process (no forked event loop)
    rates: dict[int, float] = {}
    for k in processes:
        barrier, out = ctx.Barrier(k + 1), ctx.Queue()
        procs = [ctx.Process(target=_raw_share, args=(rows, k, i, concurrency, barrier, out))
                 for i in range(k)]  # fmt: skip
        for proc in procs:
            proc.start()
        barrier.wait(timeout=300)  # every client connected and prepared
        t0 = time.perf_counter()
        written = sum(out.get(timeout=600) for _ in procs)
        rates[k] = written / (time.perf_counter() - t0)
        for proc in procs:
            proc.join(60)
        print(f"  raw_{k}proc_c{concurrency:<14} {rates[k]:>10,.0f} rows/s", flush=True)
    best = max(rates, key=rates.__getitem__)
    return rates[best], best, rates


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--concurrency", default="64,128,256", help="raw driver levels")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-ray", action="store_true", help="skip the datasink")
    ap.add_argument("--max-processes", type=int, default=4, help="R_max: 1..N client processes")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    platform = load_platform_config()
    cfg = CassandraConfig.model_validate(
        {**platform.cassandra.model_dump(), "keyspace": KEYSPACE}
    )
    contract = load_contract("fraud")
    session = session_for(cfg)
    session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
    apply_schema(session, cfg, [contract])
    table_name = contract.output.predictions_table
    data = predictions(args.rows)
    n = data.num_rows
    base = WriteOptions.from_config(cfg, contract.output.consistency, contract.output.ttl_s)

    def writer(concurrency: int) -> CassandraWriter:
        opts = WriteOptions(**{**base.__dict__, "concurrency": concurrency})
        return CassandraWriter(session, KEYSPACE, table_name, data.column_names, opts)

    stmt = writer(base.concurrency).statement
    w0 = writer(base.concurrency)
    params = list(zip(*[to_python(data[c], w0.cql_types[c]) for c in data.column_names],
                      strict=True))  # fmt: skip

    best: dict[str, float] = {}
    cpu_us: dict[str, float] = {}  # this process's CPU a row (all its threads), least seen

    def keep(name: str, fn: Callable[[], object], in_process: bool = True) -> None:
        c0 = time.process_time()
        seconds = timed(fn)
        rate = n / seconds
        best[name] = max(best.get(name, 0.0), rate)
        cpu = ""
        if in_process:
            us = 1e6 * (time.process_time() - c0) / n
            cpu_us[name] = min(cpu_us.get(name, us), us)
            cpu = f", client CPU {us:.0f} µs a row"
        print(f"  {name:<28} {rate:>10,.0f} rows/s  ({seconds:.1f} s{cpu})", flush=True)

    ray_ds = None
    if not args.no_ray:
        import ray

        from sluice.store import CassandraDatasink

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=300 * 1024 * 1024)  # fmt: skip
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ray_ds = ray.data.from_arrow(data).repartition(8).materialize()

    for r in range(args.rounds):
        print(f"round {r + 1} of {args.rounds} ({n:,} rows each)", flush=True)
        for c in levels:
            keep(f"raw_c{c}", lambda c=c: execute_concurrent_with_args(
                session, stmt, params, concurrency=c))  # fmt: skip
        r_level = max(levels, key=lambda c: best[f"raw_c{c}"])
        for c in dict.fromkeys([r_level, base.concurrency]):
            w = writer(c)
            keep(f"writer_c{c}", lambda w=w: w.write(data))
        if ray_ds is not None:
            sink = CassandraDatasink(cfg, table_name, consistency=contract.output.consistency,
                                     ttl_s=contract.output.ttl_s)  # fmt: skip
            keep("datasink_ray_2cpu", lambda s=sink: ray_ds.write_datasink(s), in_process=False)
            assert sink.total_written == n, sink.total_written

    raw_best = max(best[f"raw_c{c}"] for c in levels)
    r_level = max(levels, key=lambda c: best[f"raw_c{c}"])
    if ray_ds is not None:
        import ray

        ray.shutdown()  # its workers would compete with the client processes
    print("R_max: the raw writes over 1..N client processes", flush=True)
    r_max, r_max_k, per_k = raw_ceiling_max(n, r_level, tuple(range(1, args.max_processes + 1)))
    figures = {k: round(v) for k, v in best.items()}
    figures.update({"raw_best_R": round(raw_best), "R_max": round(r_max),
                    "R_max_processes": r_max_k,
                    **{f"raw_{k}proc": round(v) for k, v in per_k.items()},
                    **{f"client_cpu_us_per_row_{k}": round(v, 1) for k, v in cpu_us.items()}})
    ratios = {
        "writer_vs_raw": round(best[f"writer_c{r_level}"] / raw_best, 3),
        "writer_at_config_vs_raw": round(best[f"writer_c{base.concurrency}"] / raw_best, 3),
        "raw_vs_rmax": round(raw_best / r_max, 3),
        "writer_vs_rmax": round(best[f"writer_c{r_level}"] / r_max, 3),
    }
    if "datasink_ray_2cpu" in best:
        ratios["datasink_vs_raw"] = round(best["datasink_ray_2cpu"] / raw_best, 3)
        ratios["datasink_vs_rmax"] = round(best["datasink_ray_2cpu"] / r_max, 3)

    print(f"\nCassandra writes, {n:,} rows, best of {args.rounds} round(s); R = raw driver at "
          f"concurrency {r_level}")  # fmt: skip
    print(f"{'run':<28} {'rows/s':>10} {'vs R':>7} {'vs R_max':>9} {'client µs/row':>14}")
    runs = {**best, **{f"raw_{k}proc_c{r_level}": v for k, v in per_k.items()}}
    for name, rate in sorted(runs.items(), key=lambda kv: -kv[1]):
        cpu = f"{cpu_us[name]:>14.1f}" if name in cpu_us else f"{'-':>14}"
        print(f"{name:<28} {rate:>10,.0f} {rate / raw_best:>7.2f} {rate / r_max:>9.2f} {cpu}")
    print(f"R_max = {r_max:,.0f} rows/s with {r_max_k} client process(es)")
    for name, value in ratios.items():
        target = TARGETS.get(name)
        mark = "" if target is None else (" ok" if value >= target else f" BELOW {target}")
        print(f"{name:<28} {value:>10.3f}{mark}")
    close_sessions()
    print(json.dumps({"bench": "cassandra_write", "figures": figures, "ratios": ratios,
                      "targets": TARGETS}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
