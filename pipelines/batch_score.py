"""Batch scoring: Parquet/CSV files -> Ray Data -> the contract's Scorer -> Cassandra.

    python -m pipelines.batch_score --job configs/jobs/fraud_batch.yaml
    ray job submit --working-dir . -- python -m pipelines.batch_score --job ...

A key check and two streaming passes over the input, so memory stays bounded:
  0. keys:   (key, row hash) bucketed by key on local disk, grouped a bucket at a time ->
     keys carrying different rows (refused), and the rows whose key repeats
     (pipelines/batch_keys).
  1. record: read -> Scorer.split (conform + validate) -> valid events recorded in the
     online feature table; each refused row -> its own quarantine row (CassandraDatasink);
     the suite's counts -> table-level expectation results (pipelines/batch_expectations).
  2. score:  read -> sort by card (finished before scoring; a small input's beside pass 1)
     -> Scorer.split again -> the accepted rows scored -> predictions table.
Every event is recorded before any is scored, so an event's entity aggregates see all the
earlier events of its card however Ray splits the input — the same features the stream and
the online endpoint compute. Writes are idempotent upserts: a re-run changes no row.

Every input row ends in exactly one of the two tables, counted: the rows pass 1 refused
and the rows pass 2 handed to the predictions sink must add up to the rows read, and the
two passes must refuse the same rows (pipelines/batch_stages); otherwise the job fails
with `RowsUnaccounted`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines.batch_expectations import ExpectationResult, check_supported, table_results
from pipelines.batch_input import (
    EntityOrder,
    check_input_schema,
    count_rows,
    file_days,
    read_input,
    resolve_inputs,
)
from pipelines.batch_keys import conflicting_keys
from pipelines.batch_stages import RecordStage, ScoreStage, record_parts, refusals
from sluice.config import PlatformConfig, load_platform_config
from sluice.contract import load_contract
from sluice.errors import RowsUnaccounted, SluiceError, ValidationFailed
from sluice.jobs import BatchJob, load_job
from sluice.validation import load_suite

log = logging.getLogger("sluice.batch")


WRITE_TASK = {"num_cpus": 0.25}
"""A write task waits on Cassandra (the driver's async requests), not on a CPU. Asking for a
whole one let the writes hold every CPU of a 2-node cluster while the objects they needed,
lost with a node, waited for a scoring actor to restart: the job hung (tests/integration/
cluster/test_batch_faults.py)."""


SORT_AHEAD_ROWS = 250_000
"""Inputs of at most this many rows are sorted for the score pass while the record pass
runs (`batch_input.EntityOrder`): the sort needs only the input, and a small job is its
stages' fixed costs, each stage waiting for the one before (new worker processes, the sort's
three steps). 30k rows: 11.0 s -> 8.8 s, the score pass 5.7 -> 3.2 s, the record pass
unchanged. A large input's sort beside the record pass competes with it for the two CPUs
and the object store: 5M rows took 864 s instead of ~470-510, the record pass 583 s
instead of ~182 (docs/benchmarks.md)."""


QUARANTINE_WRITE_TASKS = 2
"""Write tasks at once for the record pass's quarantine. Ray Data ran as many as the CPUs
allow (eight at ``WRITE_TASK``'s quarter CPU on 2 CPUs) for the 150k refused rows of a
5M-row input, and the eight workers, ~125 MiB each, sat idle into the score pass's sort:
1,000 MiB of idle workers were the 5M-row job's peak of private memory (2,425 MiB; with
two, the pass's peak fell to 1,913 MiB, docs/benchmarks.md "Peak memory"). Each task
keeps many requests in flight (the driver's async API), so two keep Cassandra as busy."""


def release_arrow_memory() -> None:
    """Return the memory Arrow's allocator holds freed to the system, after the driver's
    own Arrow work (the key check's buckets, the refusals). This process's mimalloc keeps
    freed pages until it allocates again (``WORKER_ENV`` cannot reach a process already
    running): after the key check the driver held ~165 MiB (1M rows) to ~200 MiB (5M)
    more through the whole record pass, and a job in a process that ran one before
    started with the last one's."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


WORKER_ENV = {"MIMALLOC_PURGE_DELAY": "0"}
"""Set in the job's Ray workers. Arrow's default allocator (mimalloc) keeps the memory it
freed until the same process allocates again, so an idle worker that ran the score pass's
sort tasks held its heap: idle workers 1,466-1,572 MiB of the 5M-row peak. Purged at once,
the peak of private memory fell by 250-280 MiB on 1M and 5M rows, rows/s within 2 %
(docs/benchmarks.md, "Peak memory")."""


def worker_runtime_env() -> dict[str, Any]:
    """The job's ``runtime_env`` when it joins a running Ray: ``WORKER_ENV`` less the
    variables this process already has (a team's own, from ``ray job submit --runtime-env``:
    Ray refuses to merge a job's and a driver's value of one variable)."""
    env = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
    return {"env_vars": env} if env else {}


JOB_RAY_CONFIG = {"idle_worker_killing_time_threshold_ms": 2000}
"""Ray's settings for a Ray the job starts itself. Ray keeps an idle task worker only while
the node runs at most as many workers as CPUs, and Ray Data's three actors of its own
already exceed 2: every worker above that is killed once idle this long (Ray's default
1 s), and the job's next stage, about a second later, waited for a new process. At 2 s
the stages of a small job reuse them: the 30k-row job 12.0-12.7 -> 11.0-11.7 s, peak
private memory the same within a run's spread (1M 2,118 -> 2,132 MiB, 5M 2,409 ->
2,451). 5 s saved as much but cost 5M rows ~350 MiB (measured before the sort's
map tasks were bounded, `batch_input.SORT_TASK_INPUT_BYTES`); keeping 5-8 idle workers
(``num_workers_soft_limit``) cost 1M rows ~400 MiB (docs/benchmarks.md)."""


def start_ray(address: str | None, **init_kwargs: Any) -> None:
    """``ray.init`` for the job, its workers with ``WORKER_ENV``.

    A Ray this process starts (``ray.init`` finds none to join: ``"local"``, or no address,
    no ``RAY_ADDRESS`` and no Ray that ``ray start`` left on this machine) inherits the
    variables from this process's environment (set here; a value already there is
    kept), so the job needs no ``runtime_env``: with one, every worker starts through
    Ray's ``setup_worker`` (a second interpreter, ~0.3 s) and none of the workers Ray
    prestarted is used; a 30k-row job took 17.7 s with it against 14.0-14.3 s without (the
    first job in a fresh Ray, docs/benchmarks.md). Such a Ray also gets ``JOB_RAY_CONFIG``.
    A job joining a running Ray (as under ``ray job submit``) gets the variables in its
    ``runtime_env``: those workers were started by that Ray, not by this process."""
    import ray
    from ray._private.services import canonicalize_bootstrap_address  # ray.init's own

    joins = canonicalize_bootstrap_address(address) is not None
    runtime_env = worker_runtime_env() if joins else {}
    for name, value in WORKER_ENV.items():
        os.environ.setdefault(name, value)
    if not joins:
        init_kwargs["_system_config"] = JOB_RAY_CONFIG | init_kwargs.get("_system_config", {})
    ray.init(address=address, runtime_env=runtime_env or None, **init_kwargs)


# -- the job ------------------------------------------------------------------------------------
@dataclass
class JobSummary:
    job: str
    contract: str
    model_version: str
    input_files: int
    rows_read: int = 0
    rows_scored: int = 0
    rows_quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    rows_written: int = 0
    expectations: list[dict[str, Any]] = field(default_factory=list)  # over the whole input
    expectations_failed: int = 0
    elapsed_s: float = 0.0
    rows_per_s: float = 0.0
    phase_s: dict[str, float] = field(default_factory=dict)


def run(job: BatchJob, cfg: PlatformConfig) -> JobSummary:
    import ray

    from sluice.models import ModelRegistry
    from sluice.scoring import reason_counts
    from sluice.store import CassandraDatasink, check_schema, session_for

    started = time.monotonic()
    contract = load_contract(job.contract)
    suite = load_suite(contract.resolved_suite_path)
    check_supported(suite, contract.key_column)
    files, fs = resolve_inputs(job)
    check_input_schema(job, contract, files, fs)
    registry = ModelRegistry.from_config(cfg)
    model_version = "{}/{}".format(*registry.resolve(job.model or str(contract.model)))
    check_schema(session_for(cfg.cassandra), cfg.cassandra, [contract])  # `sluice schema apply`'s

    if not ray.is_initialized():
        start_ray(cfg.ray.address, namespace=cfg.ray.namespace, log_to_driver=False)
    now = datetime.now(UTC)
    source = f"batch:{job.name}"

    def read():
        return read_input(job, contract, files, fs)

    phase: dict[str, float] = {"setup": time.monotonic() - started}  # checks, schema, Ray
    t = time.monotonic()
    rows_read = count_rows(job, files, fs, read)
    keys = conflicting_keys(read(), contract.key_column, rows_read,
                            columns=contract.scoring_schema.names)
    release_arrow_memory()
    phase["key_check"] = time.monotonic() - t
    stage_args = dict(cfg=cfg, contract_name=job.contract, model_ref=model_version,
                      engine=job.validation_engine, batch_rows=job.batch_rows, source=source,
                      now=now, conflicting_keys=keys.conflicting, files=files,
                      file_days=file_days(files, fs, now.date()))  # fmt: skip
    pool = dict(
        batch_size=job.batch_rows, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=job.actors.min_actors,
                                           max_size=job.actors.max_actors),
        num_gpus=job.num_gpus_per_actor or None,
    )  # fmt: skip

    out = contract.output
    # The score pass's sort needs only the input: a small one is sorted beside pass 1.
    with EntityOrder(read, contract, ahead=rows_read <= SORT_AHEAD_ROWS) as order:
        # Pass 1: record events; quarantined rows are few, kept (spillable) to count reasons.
        t = time.monotonic()
        pass1 = read().map_batches(RecordStage, fn_constructor_kwargs=stage_args, **pool)
        quarantined, totals = record_parts(pass1.materialize())
        quarantined = quarantined.materialize()
        qsink = CassandraDatasink(cfg.cassandra, out.quarantine_table, consistency=out.consistency,
                                  ttl_s=out.ttl_s)  # fmt: skip
        quarantined.write_datasink(qsink, ray_remote_args=WRITE_TASK,
                                   concurrency=QUARANTINE_WRITE_TASKS)
        reasons: Counter[str] = Counter()
        for batch in quarantined.iter_batches(batch_format="pyarrow", batch_size=65536):
            reasons.update(reason_counts(batch.column("reasons").to_pylist()))
        rows_quarantined = quarantined.count()
        if totals.rows != rows_read:
            raise RowsUnaccounted(f"job {job.name}: the record pass saw {totals.rows} rows of "
                                  f"the {rows_read} read")  # fmt: skip
        results = table_results(suite, totals, duplicated_rows=keys.duplicated_rows,
                                keyed_rows=keys.keyed_rows, params={"now": now})  # fmt: skip
        _report(results, source, contract.name)
        failing = [r for r in results if not r.success]
        if failing and job.fail_on_failed_expectations:
            raise ValidationFailed(
                f"job {job.name}: {len(failing)} expectation(s) of suite {suite.name} fail over "
                "the whole input (nothing was scored; refused rows are in the quarantine): "
                + "; ".join(_describe(r) for r in failing)
            )
        phase["record_pass"] = time.monotonic() - t

        # Pass 2: score the rows pass 1 accepted; it must refuse exactly the rows pass 1 did.
        t = time.monotonic()
        refused = refusals(quarantined.iter_batches(batch_format="pyarrow", batch_size=65536))
        release_arrow_memory()
        score_args = dict(stage_args, refused=refused, record_engine=job.validation_engine)
        # Sorted by card: a batch's rows then need one history read per card (pipelines/
        # batch_input.by_entity); every event was recorded in pass 1, so any split is exact.
        # The sort is a barrier (every row in the object store, spilled past its capacity) and
        # is finished before scoring starts: each of its reduce tasks asks a whole CPU, so
        # streamed into the scoring it waited for the writes of the block before to end, and
        # the pass took turns scoring and writing (1.5 of 2 cores busy; 74-79 s of 1M rows
        # against 64 s finished first: docs/benchmarks.md).
        ordered = order.result()
    scored = ordered.map_batches(ScoreStage, fn_constructor_kwargs=score_args, **pool)
    psink = CassandraDatasink(cfg.cassandra, out.predictions_table, consistency=out.consistency,
                              ttl_s=out.ttl_s)  # fmt: skip
    try:
        scored.write_datasink(psink, ray_remote_args=WRITE_TASK)
        if job.parquet_copy_dir:
            # A second execution of pass 2: deterministic, so it writes the same rows.
            scored.drop_columns(["features"]).write_parquet(job.parquet_copy_dir)
    except Exception as exc:
        found = _cause(exc, RowsUnaccounted)
        if found is None:
            raise
        raise RowsUnaccounted(f"job {job.name}: {found.args[0]}") from exc
    rows_scored = psink.total_input_rows  # every row the predictions sink was handed
    if rows_scored + rows_quarantined != rows_read:
        raise RowsUnaccounted(
            f"job {job.name}: {rows_read} rows read, but {rows_scored} scored and "
            f"{rows_quarantined} quarantined"
        )

    phase["score_pass"] = time.monotonic() - t
    elapsed = time.monotonic() - started
    return JobSummary(
        job=job.name, contract=contract.name, model_version=model_version,
        input_files=len(files), rows_read=rows_read, rows_scored=rows_scored,
        rows_quarantined=rows_quarantined, quarantined_by_reason=dict(reasons.most_common()),
        rows_written=qsink.total_written + psink.total_written,
        expectations=[asdict(r) for r in results], expectations_failed=len(failing),
        elapsed_s=round(elapsed, 3), rows_per_s=round(rows_read / elapsed, 1) if elapsed else 0.0,
        phase_s={k: round(v, 2) for k, v in phase.items()},
    )  # fmt: skip


def _report(results: list[ExpectationResult], source: str, contract: str) -> None:
    from sluice import metrics

    for r in results:
        labels = dict(source=source, contract=contract, expectation=r.expectation,
                      column=r.column or "")  # fmt: skip
        metrics.BATCH_EXPECTATION_SUCCESS.set(1 if r.success else 0, **labels)
        metrics.BATCH_EXPECTATION_UNEXPECTED.set(r.unexpected_count, **labels)
        if not r.success:
            log.warning("expectation fails over the whole input: %s", _describe(r))


def _describe(r: ExpectationResult) -> str:
    if r.observed_value is not None:
        return f"{r.label}: {r.observed_value} rows"
    return (f"{r.label}: {r.unexpected_count} unexpected rows ({r.unexpected_percent}%)"
            + (f", mostly {r.mostly}" if r.mostly is not None else ""))  # fmt: skip


def _cause(exc: BaseException, cls: type[SluiceError]) -> SluiceError | None:
    """The ``cls`` error a Ray task raised, from the error the driver gets: the instance
    where Ray keeps it (in a class derived from it that does not carry its message), else
    rebuilt from the task's traceback text, which is all Ray Data keeps of it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if type(e) is cls:
            return e  # type: ignore[return-value]
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    text = str(exc)
    at = text.rfind(marker)
    return cls(text[at + len(marker) :].split("\n", 1)[0]) if at >= 0 else None


def print_summary(summary: JobSummary) -> None:
    print(f"\n== batch job {summary.job} (contract {summary.contract}, "
          f"model {summary.model_version}) ==")  # fmt: skip
    for label, value in (
        ("input files", summary.input_files), ("rows read", summary.rows_read),
        ("rows scored", summary.rows_scored), ("rows quarantined", summary.rows_quarantined),
        ("rows written", summary.rows_written), ("elapsed s", summary.elapsed_s),
        ("rows/s", summary.rows_per_s),
    ):  # fmt: skip
        print(f"  {label:<18} {value}")
    print("  seconds per phase  " + ", ".join(f"{k} {v}" for k, v in summary.phase_s.items()))
    for reason, count in summary.quarantined_by_reason.items():
        print(f"    quarantined: {reason:<55} {count}")
    if summary.expectations_failed:
        print(f"  {summary.expectations_failed} expectation(s) fail over the whole input:")
        for r in summary.expectations:
            if not r["success"]:
                print(f"    {_describe(ExpectationResult(**r))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="Job file, e.g. configs/jobs/fraud_batch.yaml")
    parser.add_argument("--config", default=None, help="Platform config (configs/platform.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_platform_config(args.config)
        job = load_job(args.job)
        summary = run(job, cfg)
    except SluiceError as exc:
        print(f"batch job failed: {exc}", file=sys.stderr)
        return 1
    print_summary(summary)
    path = cfg.resolve(job.summary_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(summary), indent=2) + "\n")
    print(f"  summary written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
