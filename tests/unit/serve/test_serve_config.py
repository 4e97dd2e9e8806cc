"""configs/serve.yaml: every key is one Serve's schema models read (Serve ignores the rest)."""

from __future__ import annotations

import copy

import pytest
import yaml
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import (
    DeploymentSchema,
    HTTPOptionsSchema,
    RayActorOptionsSchema,
    ServeApplicationSchema,
    ServeDeploySchema,
)

from serve_apps.scoring.app import ScoringAppArgs
from serve_apps.scoring.config_check import check_serve_config, load_serve_config, model_keys
from serve_apps.scoring.deployments import ModelUserConfig
from sluice.config import REPO_ROOT
from sluice.errors import ConfigError

SERVE_YAML = REPO_ROOT / "configs" / "serve.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(SERVE_YAML.read_text())


def test_every_key_is_a_field_of_serves_own_models(raw):
    assert set(raw) <= set(ServeDeploySchema.model_fields)
    assert set(raw["http_options"]) <= set(HTTPOptionsSchema.model_fields)
    assert raw["applications"]
    for app in raw["applications"]:
        assert set(app) <= set(ServeApplicationSchema.model_fields), app.keys()
        ScoringAppArgs.model_validate(app["args"])  # extra="forbid": no stray key
        names = set()
        for dep in app["deployments"]:
            assert set(dep) <= set(DeploymentSchema.model_fields), dep.keys()
            assert set(dep.get("autoscaling_config", {})) <= set(AutoscalingConfig.model_fields)
            assert set(dep.get("ray_actor_options", {})) <= set(RayActorOptionsSchema.model_fields)
            assert not ({"num_replicas", "autoscaling_config"} <= set(dep))
            names.add(dep["name"])
            if "user_config" in dep:
                ModelUserConfig.model_validate(dep["user_config"])
        assert names == {"ScoringIngress", "ScoringModel"}
    ServeDeploySchema.model_validate(raw)
    assert check_serve_config(raw) == []
    assert load_serve_config(SERVE_YAML) == raw


def test_the_config_sets_what_the_issue_asks_for(raw):
    deps = {d["name"]: d for d in raw["applications"][0]["deployments"]}
    for dep in deps.values():
        assert {"max_ongoing_requests", "max_queued_requests", "autoscaling_config"} <= set(dep)
        assert {"min_replicas", "max_replicas", "target_ongoing_requests"} <= set(
            dep["autoscaling_config"])  # fmt: skip
    assert {"max_batch_size", "batch_wait_timeout_s", "model_generation"} <= set(
        deps["ScoringModel"]["user_config"])  # fmt: skip


@pytest.mark.parametrize(
    ("path", "key", "hint"),
    [
        (("applications", 0, "deployments", 1), "max_concurrent_queries", "max_ongoing_requests"),
        (("applications", 0, "deployments", 1, "autoscaling_config"),
         "target_num_ongoing_requests_per_replica", "target_ongoing_requests"),
        (("applications", 0), "import_paht", "import_path"),
        (("http_options",), "prot", "port"),
        ((), "aplications", "applications"),
    ],
)
def test_misspelled_keys_are_caught_with_a_hint(raw, path, key, hint):
    doc = copy.deepcopy(raw)
    node = doc
    for part in path:
        node = node[part]
    node[key] = 1
    problems = check_serve_config(doc)
    assert len(problems) == 1, problems
    assert key in problems[0] and f"did you mean {hint!r}" in problems[0]


def test_typed_args_and_user_config_are_checked(raw, tmp_path):
    doc = copy.deepcopy(raw)
    doc["applications"][0]["args"]["limits"]["max_rows"] = 0
    doc["applications"][0]["deployments"][1]["user_config"]["challenger_share"] = 1.5
    doc["applications"][0]["deployments"][1]["user_config"]["model_gen"] = 2
    doc["applications"][0]["deployments"][1]["ray_actor_options"] = {"num_cpus": 1}
    doc["applications"][0]["deployments"].append({"name": "Scorer"})
    text = "\n".join(check_serve_config(doc))
    assert "args.limits.max_rows" in text
    assert "user_config.challenger_share" in text and "user_config.model_gen" in text
    assert "ray_actor_options: would replace" in text
    assert "no deployment 'Scorer'" in text
    bad = tmp_path / "serve.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="invalid Serve config") as info:
        load_serve_config(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_serve_config(tmp_path / "missing.yaml")


def test_model_keys_include_aliases():
    assert "name" in model_keys(DeploymentSchema)
    assert "target_ongoing_requests" in model_keys(AutoscalingConfig)


def test_the_bind_address_has_one_source_the_platform_config(raw, tmp_path):
    """configs/serve.yaml cannot name a host or port; `sluice serve` writes the platform's."""
    from serve_apps.scoring.config_check import with_bind_address
    from sluice.config import load_platform_config

    assert not {"host", "port"} & set(raw["http_options"])
    for key, value in (("host", "0.0.0.0"), ("port", 8001)):
        doc = copy.deepcopy(raw)
        doc["http_options"][key] = value
        problems = check_serve_config(doc)
        assert len(problems) == 1 and f"http_options.{key}" in problems[0], problems
        assert f"serve.{key} in the platform config" in problems[0]

    shipped = load_platform_config(REPO_ROOT / "configs" / "platform.yaml").serve
    assert (shipped.host, shipped.port) == ("127.0.0.1", 8000)
    doc = with_bind_address(raw)
    assert doc["http_options"] == {**raw["http_options"], "host": "127.0.0.1", "port": 8000}
    assert check_serve_config(raw) == [] and "host" not in raw["http_options"]  # not mutated

    platform = tmp_path / "platform.yaml"
    platform.write_text("serve:\n  host: 10.1.2.3\n  port: 8123\n")
    other = copy.deepcopy(raw)
    other["applications"][0]["args"]["platform_config"] = str(platform)
    http = with_bind_address(other)["http_options"]
    assert (http["host"], http["port"]) == ("10.1.2.3", 8123)  # the file the builder reads


def test_the_app_refuses_to_start_where_serve_binds_another_host(raw, tmp_path, monkeypatch):
    """A plain `serve deploy configs/serve.yaml` binds Serve's default host: refused unless
    the platform config names that host too."""
    from serve_apps.scoring import app as scoring_app
    from serve_apps.scoring.auth import hash_key, new_key

    keys = tmp_path / "keys"
    keys.write_text(f"svc {hash_key(new_key())}\n")
    monkeypatch.setenv("SLUICE_API_KEYS_FILE", str(keys))
    bind = ServeDeploySchema.model_validate(raw).http_options.host
    assert bind == "0.0.0.0"
    monkeypatch.setattr(scoring_app, "serve_http_host", lambda: bind)
    args = ScoringAppArgs.model_validate(raw["applications"][0]["args"])
    with pytest.raises(ConfigError, match="Serve binds '0.0.0.0' but the platform config says"):
        scoring_app.build_app(args)
    platform = scoring_app.platform_config_of(args)
    scoring_app.check_bind_host("127.0.0.1", platform)  # where `sluice serve` binds it
    with pytest.raises(ConfigError, match="sluice serve --deploy"):
        scoring_app.check_bind_host(None, platform)
