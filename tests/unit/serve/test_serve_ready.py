"""Readiness of the real model deployment class: its model loaded, Cassandra answering."""

from __future__ import annotations

import asyncio
import socket

from serve_apps.scoring.deployments import ModelSettings, ScoringModel
from sluice.config import PlatformConfig
from sluice.contract import load_contract


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_model_replica_is_not_ready_while_cassandra_does_not_answer(serve_registry):
    platform = PlatformConfig.model_validate({
        "registry": {"root_uri": serve_registry.root_uri},
        "cassandra": {"port": _closed_port(), "connect_timeout_s": 1, "request_timeout_s": 1},
    })  # fmt: skip
    replica = ScoringModel.func_or_class(
        ModelSettings(load_contract("fraud"), platform, platform.cassandra))
    got = asyncio.run(replica.ready())
    assert got == {"model": "fraud/1", "cassandra": False}
