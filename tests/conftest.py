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

    ctx = ray.init(
        num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
        object_store_memory=300 * 1024 * 1024, namespace="sluice-tests",
        # Metrics reach Ray's Prometheus export within a second (default 10 s).
        _system_config={"metrics_report_interval_ms": 1000},
    )  # fmt: skip
    yield ctx
    ray.shutdown()
