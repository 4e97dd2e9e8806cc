"""Store integration fixtures: a keyspace of each test module's own, on the shared Cassandra."""

from __future__ import annotations

import pytest

from sluice.config import CassandraConfig, PlatformConfig
from sluice.store import close_sessions, connect, schema_change


@pytest.fixture(scope="module")
def store_cfg(request, local_services, platform_config: PlatformConfig) -> CassandraConfig:
    """The shared server's config with this module's own keyspace, dropped at module start."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_store_")
    keyspace = f"sluice_test_store_{module}"[:48]
    cfg = CassandraConfig.model_validate(
        {**platform_config.cassandra.model_dump(), "keyspace": keyspace,
         "write_consistency": "ONE", "read_consistency": "ONE"}
    )  # fmt: skip
    cluster, session = connect(cfg)
    try:
        schema_change(session, f"DROP KEYSPACE IF EXISTS {keyspace}")
    finally:
        cluster.shutdown()
    yield cfg
    close_sessions()
