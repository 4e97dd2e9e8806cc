"""The local 3-node cluster (configs/platform-cluster.yaml), started for this package's
tests by the project's own code (`sluice local up --cluster`) and stopped after them."""

from __future__ import annotations

import os
import signal

import pytest

from sluice.config import REPO_ROOT, PlatformConfig, load_platform_config
from sluice.local import LocalServices


class Cluster:
    def __init__(self) -> None:
        self.cfg: PlatformConfig = load_platform_config(REPO_ROOT /
                                                        "configs/platform-cluster.yaml")
        self.services = LocalServices(self.cfg, echo=lambda line: None)

    def pid(self, node: str) -> int:
        rec = self.services._record(node)
        assert rec is not None and rec.alive(), f"{node} is not running"
        return rec.pid

    def kill(self, node: str) -> None:
        """SIGKILL one node (``cassandra-2``, ``kafka-3``): no shutdown, no flush."""
        os.kill(self.pid(node), signal.SIGKILL)

    def restart(self) -> None:
        """Start every node that is down again, and wait until all answer."""
        self.services.up()


@pytest.fixture(scope="module")  # stopped after its module (a directory's "package"
def cluster(local_services) -> Cluster:  # scope lasted the whole session in CI)
    c = Cluster()
    try:
        c.services.up()
    except BaseException:
        c.services.down()  # the nodes that did start: nothing outlives a failed start
        raise
    yield c
    from sluice.store import close_sessions

    close_sessions()
    c.services.down()
