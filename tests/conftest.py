"""Shared fixtures: one set of real local servers and one local Ray per test session."""

from __future__ import annotations

import os

import pytest

# Ray: an explicit auth mode for every step (README "Ray and authentication": a stray
# ~/.ray/auth_token turns token auth on for `ray start` otherwise). Set before Ray is
# imported anywhere.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from sluice.config import PlatformConfig, load_platform_config  # noqa: E402


@pytest.fixture(scope="session")
def platform_config() -> PlatformConfig:
    return load_platform_config()


@pytest.fixture(scope="session")
def local_services(platform_config: PlatformConfig):
    """The real Cassandra and Kafka, started (or found running) by the CLI's own code."""
    from sluice.local import LocalServices

    services = LocalServices(platform_config)
    services.up()
    return services


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray for the whole test session (2 cores on this machine).

    It advertises one logical GPU (none is there): a `num_gpus=1` Serve replica schedules
    and must fall back to the CPU, which the serve tests check.
    """
    import ray

    from sluice.local import RAY_SYSTEM_CONFIG

    ctx = ray.init(
        address="local",  # never a cluster `ray start` left on this machine
        num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
        object_store_memory=300 * 1024 * 1024, namespace="sluice-tests",
        # Metrics reach Ray's Prometheus export within a second (default 10 s); idle task
        # workers kept as on every small local Ray (sluice.local.RAY_SYSTEM_CONFIG).
        _system_config={"metrics_report_interval_ms": 1000, **RAY_SYSTEM_CONFIG},
    )  # fmt: skip
    yield ctx
    ray.shutdown()


@pytest.fixture
def own_keyspace(local_services, platform_config: PlatformConfig, tmp_path):
    """``make(keyspace, apply=True, train_rows=2000, **serve)``: the platform config with a
    keyspace of the test's own (dropped first; applied as `sluice schema apply` would unless
    ``apply=False``) and a registry under ``tmp_path`` holding a trained champion (none when
    ``train_rows=0``); ``serve`` overrides the platform's serve section (e.g. ``port``)."""
    from fixture_models import train_champion

    from pipelines.train import TrainConfig
    from sluice.contract import load_contract
    from sluice.models import ModelRegistry
    from sluice.store import apply_schema, schema_change, session_for

    def make(keyspace: str, *, apply: bool = True, train_rows: int = 2_000,
             **serve) -> PlatformConfig:  # fmt: skip
        base = platform_config
        cfg = base.model_copy(update={
            "cassandra": base.cassandra.model_copy(update={"keyspace": keyspace}),
            "registry": base.registry.model_copy(update={"root_uri": str(tmp_path / "reg")}),
            "serve": base.serve.model_copy(update=serve),
        })  # fmt: skip
        session = session_for(cfg.cassandra)
        schema_change(session, f"DROP KEYSPACE IF EXISTS {keyspace}")
        if apply:
            apply_schema(session, cfg.cassandra, [load_contract("fraud")])
        if train_rows:
            train_champion(TrainConfig(rows=train_rows, epochs=1), ModelRegistry.from_config(cfg))
        return cfg

    return make
