"""The cluster built from the config, and the per-process session cache (no network)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT
from cassandra.policies import (
    ConstantSpeculativeExecutionPolicy,
    DCAwareRoundRobinPolicy,
    NoSpeculativeExecutionPolicy,
    TokenAwarePolicy,
)

from sluice.config import CassandraConfig
from sluice.store import _session, build_cluster, session_for


def test_cluster_follows_the_config() -> None:
    cfg = CassandraConfig(
        contact_points=("10.0.0.5", "10.0.0.6"), port=9142, local_datacenter="dc-east",
        protocol_version=4, username="app", password="secret",
        connect_timeout_s=2.5, request_timeout_s=7.0,
    )  # fmt: skip
    cluster = build_cluster(cfg)
    try:
        assert cluster.contact_points == ["10.0.0.5", "10.0.0.6"]
        assert cluster.port == 9142 and cluster.protocol_version == 4
        assert cluster.connect_timeout == 2.5 and cluster.control_connection_timeout == 2.5
        assert isinstance(cluster.auth_provider, PlainTextAuthProvider)
        assert cluster.auth_provider.username == "app"
        assert cluster.ssl_context is None
        for name in (EXEC_PROFILE_DEFAULT, _session.TUPLES):
            profile = cluster.profile_manager.profiles[name]
            lb = profile.load_balancing_policy
            assert isinstance(lb, TokenAwarePolicy)
            assert isinstance(lb._child_policy, DCAwareRoundRobinPolicy)
            assert lb._child_policy.local_dc == "dc-east"
            assert profile.request_timeout == 7.0
            assert isinstance(profile.speculative_execution_policy, NoSpeculativeExecutionPolicy)
    finally:
        cluster.shutdown()


def test_speculative_execution_follows_the_config() -> None:
    """``speculative_delay_s``: an unanswered idempotent request goes to the next
    coordinator too after the delay (the driver's ConstantSpeculativeExecutionPolicy)."""
    cluster = build_cluster(CassandraConfig(speculative_delay_s=0.5))
    try:
        for name in (EXEC_PROFILE_DEFAULT, _session.TUPLES):
            plan = cluster.profile_manager.profiles[name].speculative_execution_policy
            assert isinstance(plan, ConstantSpeculativeExecutionPolicy)
            schedule = plan.new_plan("ks", None)
            delays = [schedule.next_execution(None) for _ in range(3)]
            assert delays == [0.5, 0.5, -1]  # two extra coordinators, then no more
    finally:
        cluster.shutdown()


def test_tls_context_from_config(tmp_path: Path) -> None:
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=test"],
        capture_output=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip("openssl is not available to make a test certificate")
    cfg = CassandraConfig(tls={"enabled": True, "ca_file": cert, "cert_file": cert,
                               "key_file": key, "verify_hostname": False})  # fmt: skip
    cluster = build_cluster(cfg)
    try:
        ctx = cluster.ssl_context
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.check_hostname is False and ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.cert_store_stats()["x509_ca"] == 1
    finally:
        cluster.shutdown()


class _FakeCluster:
    is_shutdown = False

    def shutdown(self) -> None:
        self.is_shutdown = True


def test_one_session_per_process_keyed_by_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []

    def fake_connect(cfg: CassandraConfig):
        made.append(object())
        return _FakeCluster(), made[-1]

    monkeypatch.setattr(_session, "connect", fake_connect)
    monkeypatch.setattr(_session, "_SESSIONS", {})
    cfg = CassandraConfig(port=19999)
    first = session_for(cfg)
    assert session_for(cfg) is first and len(made) == 1
    assert session_for(CassandraConfig(port=19998)) is not first  # another config
    # A forked child sees the parent's entries under the parent's pid and connects anew.
    monkeypatch.setattr(_session.os, "getpid", lambda: 1)
    assert session_for(cfg) is not first and len(made) == 3
    _session.close_sessions()  # closes only pid 1's sessions
    assert all(pid != 1 for pid, _ in _session._SESSIONS)
    assert len(_session._SESSIONS) == 2
