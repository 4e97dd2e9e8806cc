"""`sluice local` failure paths that need no server: each error names the fix."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sluice.errors import LocalServiceError
from sluice.local import _jvm


def test_no_jdk17_names_the_fix(monkeypatch):
    monkeypatch.setenv("SLUICE_JAVA", "/bin/false")
    with pytest.raises(LocalServiceError, match="no JDK 17 found.*apt-get install -y openjdk-17"):
        _jvm.find_java17()


def test_jdk17_is_found_by_version_not_path_order(monkeypatch, tmp_path):
    # update-alternatives lists a JDK 24 first (Cassandra fails on it), then a 17.
    javas = {}
    for major in (24, 17):
        java = tmp_path / f"jdk{major}" / "bin" / "java"
        java.parent.mkdir(parents=True)
        java.write_text(f'#!/bin/sh\necho \'openjdk version "{major}.0.1" 2025-01-01\' >&2\n')
        java.chmod(0o755)
        javas[major] = java
    alternatives = tmp_path / "update-alternatives"
    alternatives.write_text(f"#!/bin/sh\necho {javas[24]}\necho {javas[17]}\n")
    alternatives.chmod(0o755)
    monkeypatch.delenv("SLUICE_JAVA", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert _jvm.find_java17() == javas[17]
    alternatives.write_text(f"#!/bin/sh\necho {javas[24]}\n")  # a JDK 24 alone
    monkeypatch.setattr(_jvm.Path, "glob", lambda self, pattern: iter(()))
    with pytest.raises(LocalServiceError, match="no JDK 17 found"):
        _jvm.find_java17()


def test_missing_mvn_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(LocalServiceError, match="`mvn`.*apt-get install -y maven"):
        _jvm.fetch_jars("kafka-pom.xml", "kafka.version", "3.9.2", tmp_path / "lib")


def test_cached_jars_skip_maven(monkeypatch, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / ".complete").write_text("3.9.2\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # mvn would be missing if it were called
    assert _jvm.fetch_jars("kafka-pom.xml", "kafka.version", "3.9.2", lib) is False


def test_process_record_tells_a_dead_or_reused_pid(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ticks = _jvm.process_start_ticks(proc.pid)
        rec = _jvm.ProcessRecord("x", proc.pid, ticks, str(tmp_path / "log"))
        assert rec.alive()
        impostor = _jvm.ProcessRecord("x", proc.pid, ticks + 1, str(tmp_path / "log"))
        assert not impostor.alive()  # same pid, other start time: not ours, never signalled
        rec.save(tmp_path)
        assert _jvm.ProcessRecord.load(tmp_path, "x") == rec
    finally:
        proc.kill()
        proc.wait()
    assert not rec.alive()


def test_stop_never_signals_a_pid_another_process_has_taken(tmp_path):
    # A record left from before a reboot whose pid now leads someone else's group.
    other = _jvm.spawn("other", ["sleep", "60"], tmp_path / "other.log", cwd=tmp_path)
    try:
        stale = _jvm.ProcessRecord("x", other.pid, other.start_ticks - 1, str(tmp_path / "log"))
        assert _jvm.stop(stale, timeout_s=1) == [False]
        assert other.alive()  # untouched
    finally:
        _jvm.stop(other, timeout_s=5)
    assert not other.alive()


def test_stop_ends_the_whole_process_group(tmp_path):
    log = tmp_path / "server.log"
    rec = _jvm.spawn("x", ["sh", "-c", "sleep 60 & sleep 60; wait"], log, cwd=tmp_path)
    assert rec.alive()
    pids: list[int] = []
    deadline = time.monotonic() + 10
    while len(pids) < 3 and time.monotonic() < deadline:  # sh and its two sleeps
        pids = _jvm.group_members(rec.pid)
    assert len(pids) == 3, pids
    assert _jvm.stop(rec, timeout_s=5) == [True]
    for pid in pids:
        assert _jvm.process_start_ticks(pid) is None


def test_groups_signalled_together_each_get_their_own_grace(tmp_path):
    """`down` stops every service at once: a group that ignores SIGTERM is SIGKILLed after
    its own timeout, while one that obeys is gone at once, and the call lasts the longest
    timeout, not their sum."""
    stubborn = ["sh", "-c", "trap '' TERM; sleep 60 & wait; wait"]  # its sleep ignores it too
    cmds = {"a": stubborn, "b": stubborn, "c": ["sleep", "60"]}
    recs = [_jvm.spawn(name, cmd, tmp_path / f"{name}.log", cwd=tmp_path)
            for name, cmd in cmds.items()]  # fmt: skip
    deadline = time.monotonic() + 10
    while any(len(_jvm.group_members(r.pid)) < n for r, n in zip(recs, (2, 2, 1), strict=True)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    assert _jvm.stop(*recs, timeout_s=[1.0, 2.0, 60.0]) == [True, True, True]
    took = time.monotonic() - t0
    assert all(_jvm.group_members(r.pid) == [] for r in recs)
    assert 2.0 <= took < 2.9, took  # b's 2 s (SIGKILL), not 1 + 2 s, nor c's 60 s


def test_stop_ends_what_a_dead_server_left_in_its_group(tmp_path):
    """A Ray node whose raylet was SIGKILLed exits, and its agents hold the node's ports a
    while longer: stopping the dead record still ends them (and says it was not running)."""
    import os
    import signal

    rec = _jvm.spawn("x", ["sh", "-c", "sleep 60 & wait"], tmp_path / "log", cwd=tmp_path)
    deadline = time.monotonic() + 10
    while len(_jvm.group_members(rec.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in _jvm.group_members(rec.pid) if p != rec.pid]
    assert len(left) == 1, left
    os.kill(rec.pid, signal.SIGKILL)
    os.waitpid(rec.pid, 0)
    assert not rec.alive() and _jvm.group_members(rec.pid) == left
    assert _jvm.stop(rec, timeout_s=5) == [False]
    assert _jvm.group_members(rec.pid) == []


def test_server_exiting_during_start_shows_its_log(tmp_path):
    from sluice.config import PlatformConfig
    from sluice.local import LocalServices

    # A port nothing listens on, so only the process's own fate decides the outcome.
    cfg = PlatformConfig.model_validate({
        "local": {"state_dir": str(tmp_path)},
        "kafka": {"bootstrap_servers": ["127.0.0.1:1"]},
    })
    services = LocalServices(cfg, echo=lambda _: None)
    log = tmp_path / "kafka.log"
    rec = _jvm.spawn("kafka", ["sh", "-c", "echo 'FATAL: bad config line 3'; exit 1"],
                     log, cwd=tmp_path)  # fmt: skip
    rec.save(services.run_dir)
    with pytest.raises(LocalServiceError, match="kafka exited during start") as err:
        services._wait_ready("kafka", auth=False)
    assert "FATAL: bad config line 3" in str(err.value)
    assert _jvm.ProcessRecord.load(services.run_dir, "kafka") is None


def test_a_server_exiting_during_start_leaves_no_helper_holding_its_ports(tmp_path):
    from sluice.config import PlatformConfig
    from sluice.local import LocalServices

    cfg = PlatformConfig.model_validate({
        "local": {"state_dir": str(tmp_path)},
        "kafka": {"bootstrap_servers": ["127.0.0.1:1"]},
    })  # fmt: skip
    services = LocalServices(cfg, echo=lambda _: None)
    rec = _jvm.spawn("kafka", ["sh", "-c", "sleep 60 & exit 1"], tmp_path / "k.log",
                     cwd=tmp_path)  # fmt: skip
    rec.save(services.run_dir)
    with pytest.raises(LocalServiceError, match="kafka exited during start"):
        services._wait_ready("kafka", auth=False)
    assert _jvm.group_members(rec.pid) == []  # its forked helper is gone too


def test_up_waits_for_a_node_an_earlier_up_left_starting(monkeypatch, tmp_path):
    from sluice.config import PlatformConfig
    from sluice.local import LocalServices, _cassandra

    cfg = PlatformConfig.model_validate({"local": {"state_dir": str(tmp_path)}})
    services = LocalServices(cfg, echo=lambda _: None)
    for name in services._all():  # every node "running": records of live processes
        mode = _cassandra.mode(False) if name.startswith(_cassandra.NAME) else ""
        rec = _jvm.spawn(name, ["sleep", "60"], tmp_path / f"{name}.log", cwd=tmp_path,
                         mode=mode)  # fmt: skip
        rec.save(services.run_dir)
    waited: list[str] = []
    monkeypatch.setattr(services, "_wait_ready", lambda name, auth: waited.append(name))
    try:
        assert services.up() == {}  # nothing started ...
        assert waited == services._all()  # ... and every running node waited for
    finally:
        services.down()


def test_local_package_has_its_poms():
    here = Path(_jvm.POM_DIR)
    assert (here / "cassandra-pom.xml").is_file() and (here / "kafka-pom.xml").is_file()


def test_a_dead_nodes_port_is_given_time_to_go_free(tmp_path):
    """``up`` waits (bounded) for a dead node's ports, which a helper outside its process
    group may hold a few seconds more; a port held past the wait is still refused."""
    import socket
    import threading

    from sluice.config import PlatformConfig
    from sluice.errors import LocalServiceError
    from sluice.local import LocalServices

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    with socket.socket() as free:  # the controller's port: not the default 9093, which the
        free.bind(("127.0.0.1", 0))  # local Kafka of `make test` holds
        controller = free.getsockname()[1]
    cfg = PlatformConfig.model_validate({
        "local": {"state_dir": str(tmp_path), "kafka_controller_port": controller},
        "kafka": {"bootstrap_servers": [f"127.0.0.1:{port}"]}})  # fmt: skip
    services = LocalServices(cfg, echo=lambda _: None)
    with pytest.raises(LocalServiceError, match=f"port {port}"):
        services._check_ports_free("kafka", wait_s=0.3)
    threading.Timer(0.5, holder.close).start()
    services._check_ports_free("kafka", wait_s=10)  # freed after 0.5 s: no error


def test_a_new_kafka_cluster_id_never_starts_with_a_dash(monkeypatch):
    """`kafka-storage format -t -Vjx...` reads an id starting with "-" as an option (a CI run
    met one, 1 id in 64): a new id is drawn again, as Kafka's own Uuid.randomUuid does."""
    import base64
    import uuid

    from sluice.local import _kafka

    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(_kafka.uuid, "uuid4", lambda: next(draws))
    assert base64.urlsafe_b64encode(b"\xf8").decode().startswith("-")  # the first draw's text
    got = _kafka.new_cluster_id()
    assert got == base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")


def test_up_waits_until_every_cassandra_node_holds_the_whole_ring(monkeypatch, tmp_path):
    """A node answers CQL before the others' gossip has marked it normal; `up` of a ring
    returns only once each node holds the others as token owners with one schema, and
    names each node's view when they never settle."""
    from sluice.config import PlatformConfig
    from sluice.local import LocalServices, _cassandra

    cfg = PlatformConfig.model_validate(
        {"local": {"state_dir": str(tmp_path), "nodes": 3, "start_timeout_s": 1}})
    views = {1: [_cassandra.NodeView("5.0.6", 0), _cassandra.NodeView("5.0.6", 2)],
             2: [_cassandra.NodeView("5.0.6", 2, schema_agreed=False),
                 _cassandra.NodeView("5.0.6", 2)],
             3: [None, _cassandra.NodeView("5.0.6", 2)]}  # fmt: skip
    asked: list[int] = []

    def ready(cfg, auth, node):
        asked.append(node)
        seen = views[node]
        return seen.pop(0) if len(seen) > 1 else seen[0]

    monkeypatch.setattr(_cassandra, "ready", ready)
    LocalServices(cfg, echo=lambda _: None)._wait_ring(auth=False)
    assert asked == [1, 2, 3, 1, 2, 3]  # the first round unsettled on every node
    assert str(views[1][0]) == "5.0.6, 2 peer(s) in its ring, one schema"
    assert str(_cassandra.NodeView("5.0.6", 0)) == "5.0.6, 0 peer(s) in its ring, one schema"
    assert str(_cassandra.NodeView("5.0.6")) == "5.0.6"  # a single node

    views[2] = [_cassandra.NodeView("5.0.6", 1, schema_agreed=False)]
    views[3] = [None]
    with pytest.raises(LocalServiceError, match=r"did not settle .*cassandra-2: 5\.0\.6, 1 "
                       r"peer\(s\) in its ring, schema differs; cassandra-3: not answering"):
        LocalServices(cfg, echo=lambda _: None)._wait_ring(auth=False)
