"""cluster.yaml checked offline with Ray's own schema and defaults (`ray up` needs a cloud)."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def check(config: dict) -> dict:
    # Private API (pinned Ray 2.60): the same fill-in and schema check `ray up` runs first.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_is_valid(cluster):
    prepared = check(cluster)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "ray.head.default"
    assert types["ray.head.default"]["resources"] == {"CPU": 0}, "head must run no scoring work"
    assert types["gpu_worker"]["resources"]["GPU"] == 1
    assert "GPU" not in types["cpu_worker"]["resources"]
    for name in ("cpu_worker", "gpu_worker"):
        assert types[name]["max_workers"] >= max(1, types[name]["min_workers"])


def test_every_node_starts_ray_with_token_auth(cluster):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    assert any("auth_token" in remote for remote in cluster["file_mounts"])


def test_setup_installs_this_project_with_pinned_constraints(cluster):
    # the project and its gbm extra (drift retraining of a LightGBM trainer runs there)
    assert any('-c constraints.txt -e ".[gbm]"' in c for c in cluster["setup_commands"])


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda c: c.update(idle_timout_minutes=5), id="typo-top-level-key"),
        pytest.param(lambda c: c.update(head_node_type="head"), id="unknown-head-type"),
        pytest.param(
            lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5),
            id="non-integer-gpu",
        ),
        pytest.param(
            lambda c: c["available_node_types"]["cpu_worker"].update(min_wokers=1),
            id="typo-node-type-key",
        ),
        pytest.param(lambda c: c["available_node_types"]["cpu_worker"].pop("node_config"),
                     id="node-config-removed"),
        pytest.param(lambda c: c.update(max_workers=0), id="max-below-sum-of-min"),
    ],
)
def test_broken_copies_are_caught(cluster, breakage):
    broken = copy.deepcopy(cluster)
    breakage(broken)
    with pytest.raises(Exception):  # noqa: B017 - jsonschema.ValidationError or ValueError
        check(broken)


def test_local_fake_cluster_mirrors_the_real_node_types(cluster):
    """configs/cluster.local.yaml: the same worker types on the fake multi-node provider.

    Ray's fake provider has no defaults file in the wheel, so the file is complete by
    itself and checked against the schema directly (no prepare_config)."""
    from ray.autoscaler._private.util import validate_config

    local = yaml.safe_load((REPO / "configs" / "cluster.local.yaml").read_text())
    validate_config(local)
    assert local["provider"]["type"] == "fake_multinode"
    assert local["head_node_type"] == "ray.head.default"
    assert set(local["available_node_types"]) == set(cluster["available_node_types"])
    assert local["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1
    for spec in local["available_node_types"].values():
        assert all(isinstance(v, int) for v in spec["resources"].values())


def test_dashboard_and_job_submission_stay_on_the_heads_loopback(cluster):
    # Users reach 8265 through `ray dashboard cluster.yaml` (SSH port-forward); a dashboard
    # on every interface would expose job submission (code execution) to the network.
    starts = [c for c in cluster["head_start_ray_commands"] if "ray start" in c]
    assert starts
    for command in starts:
        args = shlex.split(command)
        hosts = [a.split("=", 1)[1] for a in args if a.startswith("--dashboard-host=")]
        hosts += [args[i + 1] for i, a in enumerate(args) if a == "--dashboard-host"]
        assert hosts and all(h in ("127.0.0.1", "localhost") for h in hosts), command
        assert "RAY_AUTH_MODE=token" in args, command
