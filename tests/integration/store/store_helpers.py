"""Helpers shared by the store integration tests."""

from __future__ import annotations


def count_rows(session, keyspace: str, table: str, key: str, splits: int = 16) -> int:
    """COUNT(*) per token range, one range at a time with a long timeout: a whole-table
    COUNT, or many range scans at once, can time out on a loaded 2-core machine."""
    lo, hi = -(2**63), 2**63 - 1
    starts = [lo + (hi - lo) // splits * i for i in range(splits)]
    ranges = [(a, b - 1) for a, b in zip(starts, starts[1:], strict=False)] + [(starts[-1], hi)]
    stmt = session.prepare(
        f"SELECT COUNT(*) FROM {keyspace}.{table} WHERE token({key}) >= ? AND token({key}) <= ?"
    )
    return sum(session.execute(stmt, r, timeout=120).one()[0] for r in ranges)


def extra_services(shared, state, cql_port: int, storage_port: int, kafka_port: int):
    """A separate Cassandra (512M heap) on its own ports and state dir, for destructive tests.

    It reuses the jars the shared servers already fetched (a symlinked lib dir), so no
    second Maven download. LocalServices starts Kafka too; callers stop it with
    ``stop_kafka`` right after ``up`` (these tests need Cassandra only).
    """
    from sluice.config import PlatformConfig
    from sluice.local import LocalServices

    shared_lib = shared.resolve(shared.local.state_dir) / "lib"
    state.mkdir(parents=True, exist_ok=True)
    (state / "lib").symlink_to(shared_lib, target_is_directory=True)
    cfg = PlatformConfig.model_validate({
        "cassandra": {"port": cql_port},
        "kafka": {"bootstrap_servers": [f"127.0.0.1:{kafka_port}"]},
        "local": {"state_dir": str(state), "cassandra_storage_port": storage_port,
                  "kafka_controller_port": kafka_port + 1, "cassandra_heap_mb": 512,
                  "kafka_heap_mb": 256},
    })  # fmt: skip
    return LocalServices(cfg, echo=lambda _: None)


def stop_kafka(services) -> None:
    """Stop only the Kafka that ``services.up()`` started alongside Cassandra."""
    from sluice.local._jvm import ProcessRecord, stop

    rec = ProcessRecord.load(services.run_dir, "kafka")
    if rec is not None:
        stop(rec)
        rec.forget(services.run_dir)
