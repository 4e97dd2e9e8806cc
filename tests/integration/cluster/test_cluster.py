"""A 3-node Cassandra ring, a 3-broker Kafka and a 2-node Ray from `sluice local up
--cluster`: every node up and seeing the others, and Ray placing work on each node. The
fault tests beside this file kill nodes under the batch, stream and online paths."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sluice.cli import app as cli
from sluice.config import REPO_ROOT

pytestmark = pytest.mark.integration


def test_every_node_of_the_cluster_is_up_and_sees_the_others(cluster):
    status = CliRunner().invoke(cli, ["local", "status", "--cluster"])
    assert status.exit_code == 0, status.output
    lines = status.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == [
        "cassandra-1", "cassandra-2", "cassandra-3", "kafka-1", "kafka-2", "kafka-3",
        "ray-1", "ray-2"]  # fmt: skip
    assert all("2 peer(s) in its ring, one schema" in line for line in lines[:3]), lines
    assert all("3 broker(s)" in line for line in lines[3:6]), lines
    assert [f"127.0.0.{i}" in lines[i - 1] for i in (1, 2, 3)] == [True] * 3


def test_ray_has_a_head_and_a_worker_node_each_taking_its_own_work(cluster):
    """A driver (its own process: this one runs the tests' local Ray) sees both nodes alive,
    a task asking for the worker's resource runs on 127.0.0.2 and one asking for the head's
    on the other node."""
    script = (
        "import json, ray\n"
        f"ray.init(address={cluster.cfg.ray.address!r}, log_to_driver=False)\n"
        "ip = lambda: ray.util.get_node_ip_address()\n"
        "on = {n: ray.get(ray.remote(ip).options(resources={n: 1}).remote())\n"
        "      for n in ('node1', 'node2')}\n"
        "alive = sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])\n"
        "print(json.dumps({'alive': alive, 'on': on}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180, cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # The head reports the host's own address (Ray's choice for a head), the worker its own.
    assert len(seen["alive"]) == 2 and "127.0.0.2" in seen["alive"], seen
    assert seen["on"]["node2"] == "127.0.0.2" and seen["on"]["node1"] in seen["alive"]
    assert seen["on"]["node1"] != "127.0.0.2", seen
