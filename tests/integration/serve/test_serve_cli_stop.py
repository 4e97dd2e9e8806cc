"""`sluice serve` for real — its own Ray, Serve and HAProxy ingress — stopped by SIGTERM
leaves no process behind and its port unbound."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from serve_apps.scoring.auth import hash_key
from sluice.cli.serve import descendants
from sluice.config import REPO_ROOT

pytestmark = pytest.mark.integration

KEYSPACE = "sluice_test_serve_stop"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _bound(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _serve_files(cfg, root: Path) -> Path:
    (root / "platform.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    doc = yaml.safe_load((REPO_ROOT / "configs" / "serve.yaml").read_text())
    app = doc["applications"][0]
    app["args"].update(platform_config=str(root / "platform.yaml"),
                       api_keys={"sha256": {"test": hash_key("sk_test_stop")}},
                       prediction_log={"enabled": False})  # fmt: skip
    app["args"]["resources"].update(ingress_num_cpus=0, model_num_cpus=0)
    for dep in app["deployments"]:  # one replica each: 2 cores
        dep["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    (root / "serve.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root / "serve.yaml"


def test_sigterm_leaves_no_process_behind_and_the_port_unbound(own_keyspace, tmp_path):
    port = _free_port()
    serve_yaml = _serve_files(own_keyspace(KEYSPACE, port=port), tmp_path)
    # A Ray of its own (never the test session's), with the HAProxy ingress sluice serve sets.
    # Serve holds the ingress replica open 30 s by default for a load balancer to deregister
    # it (README "Online scoring"); what is tested here is what is left after the stop.
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled",
           "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
    log = (tmp_path / "serve.log").open("w")
    cmd = [str(Path(sys.executable).with_name("sluice")), "serve", "--config", str(serve_yaml)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, start_new_session=True, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    tree: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "sluice serve did not answer /v1/health"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        tree = descendants(proc.pid)
        assert any("haproxy" in _cmdline(p) for p in tree), [_cmdline(p)[:80] for p in tree]
        assert any("raylet" in _cmdline(p) for p in tree)

        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=240)
        survivors = {p: _cmdline(p)[:120] for p in tree if _alive(p)}
        assert not survivors, survivors
        assert not _bound(port), f"port {port} still answers after sluice serve exited"
    finally:  # pass or fail, leave nothing of it running
        for pid in [proc.pid, *tree]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
