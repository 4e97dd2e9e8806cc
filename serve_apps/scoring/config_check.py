"""Checks ``configs/serve.yaml`` key by key against Serve's own schema models.

Serve silently ignores keys it does not know in several places (``max_concurrent_queries``
and ``target_num_ongoing_requests_per_replica`` are the classic misspellings: the
deployment then runs with defaults). ``check_serve_config`` walks the file and names
every key that is not a field of the model that reads it — ``ServeDeploySchema``,
``HTTPOptionsSchema``, ``ServeApplicationSchema``, ``DeploymentSchema``,
``AutoscalingConfig``, ``RayActorOptionsSchema``, ``BackpressureConfig`` — with the
closest valid name; then validates the scoring app's ``args`` (``ScoringAppArgs``) and
the model's ``user_config`` (``ModelUserConfig``), and finally the whole document with
``ServeDeploySchema`` itself. ``sluice serve`` runs it before deploying.

The bind address is not in this file: ``http_options.host``/``port`` are refused here, and
``with_bind_address`` writes the platform config's ``serve.host``/``serve.port`` into the
document `sluice serve` hands Serve (one source; see ``app.check_bind_host``).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError
from ray.serve.config import AutoscalingConfig, BackpressureConfig
from ray.serve.schema import (
    DeploymentSchema,
    HTTPOptionsSchema,
    RayActorOptionsSchema,
    ServeApplicationSchema,
    ServeDeploySchema,
    gRPCOptionsSchema,
)

from sluice.errors import ConfigError

if TYPE_CHECKING:
    from serve_apps.scoring.app import ScoringAppArgs

__all__ = [
    "SCORING_IMPORT_PATH",
    "check_serve_config",
    "load_serve_config",
    "model_keys",
    "with_bind_address",
]

SCORING_IMPORT_PATH = "serve_apps.scoring.app:build_app"
SCORING_DEPLOYMENTS = ("ScoringIngress", "ScoringModel")
# Owned by the platform config (serve.host / serve.port), never by the Serve config.
BIND_KEYS = ("host", "port")


def model_keys(model: type[BaseModel]) -> set[str]:
    """Every key ``model`` reads: field names and their aliases."""
    keys = set(model.model_fields)
    for name, f in model.model_fields.items():
        for alias in (f.alias, f.validation_alias):
            if isinstance(alias, str):
                keys.add(alias)
        keys.add(name)
    return keys


def _unknown(node: Any, model: type[BaseModel], where: str, problems: list[str]) -> None:
    if not isinstance(node, Mapping):
        if node is not None:
            problems.append(f"{where}: expected a mapping, got {type(node).__name__}")
        return
    known = model_keys(model)
    for key in node:
        if key not in known:
            near = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            problems.append(
                f"{where}.{key}: not a key of Serve's {model.__name__} (Serve would ignore "
                f"it silently){hint}"
            )


def _pydantic(
    model: type[BaseModel], node: Any, where: str, problems: list[str]
) -> None:
    try:
        model.model_validate(node if node is not None else {})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"])
            problems.append(f"{where}{'.' + loc if loc else ''}: {err['msg']} "
                            f"(got {err.get('input')!r})")  # fmt: skip


def check_serve_config(raw: Any) -> list[str]:
    """Every problem in a Serve config document (empty when it deploys as written)."""
    from serve_apps.scoring.app import ScoringAppArgs
    from serve_apps.scoring.deployments import ModelUserConfig

    problems: list[str] = []
    if not isinstance(raw, Mapping):
        return [f"<root>: expected a mapping, got {type(raw).__name__}"]
    _unknown(raw, ServeDeploySchema, "<root>", problems)
    _unknown(raw.get("http_options"), HTTPOptionsSchema, "http_options", problems)
    http = raw.get("http_options")
    for key in BIND_KEYS if isinstance(http, Mapping) else ():
        if key in http:
            problems.append(
                f"http_options.{key}: {http[key]!r} here would be a second source of the bind "
                f"address; set serve.{key} in the platform config (configs/platform.yaml, "
                f"SLUICE_SERVE__{key.upper()}) and `sluice serve` writes it for Serve"
            )
    _unknown(raw.get("grpc_options"), gRPCOptionsSchema, "grpc_options", problems)
    apps = raw.get("applications") or []
    for i, app in enumerate(apps if isinstance(apps, list) else []):
        where = f"applications[{i}]"
        _unknown(app, ServeApplicationSchema, where, problems)
        if not isinstance(app, Mapping):
            continue
        ours = app.get("import_path") == SCORING_IMPORT_PATH
        if ours:
            _pydantic(ScoringAppArgs, app.get("args"), f"{where}.args", problems)
        for j, dep in enumerate(app.get("deployments") or []):
            dwhere = f"{where}.deployments[{j}]"
            _unknown(dep, DeploymentSchema, dwhere, problems)
            if not isinstance(dep, Mapping):
                continue
            _unknown(dep.get("autoscaling_config"), AutoscalingConfig,
                     f"{dwhere}.autoscaling_config", problems)  # fmt: skip
            _unknown(dep.get("ray_actor_options"), RayActorOptionsSchema,
                     f"{dwhere}.ray_actor_options", problems)  # fmt: skip
            _unknown(dep.get("backpressure_config"), BackpressureConfig,
                     f"{dwhere}.backpressure_config", problems)  # fmt: skip
            name = dep.get("name")
            if ours and name not in SCORING_DEPLOYMENTS:
                problems.append(f"{dwhere}.name: the scoring app has no deployment {name!r} "
                                f"(it has {', '.join(SCORING_DEPLOYMENTS)})")  # fmt: skip
            if ours and name == "ScoringModel" and "user_config" in dep:
                _pydantic(ModelUserConfig, dep["user_config"], f"{dwhere}.user_config",
                          problems)  # fmt: skip
            if ours and name == "ScoringModel" and "ray_actor_options" in dep:
                problems.append(
                    f"{dwhere}.ray_actor_options: would replace the CPUs/GPUs the builder "
                    "sets from the contract's device; use args.resources instead"
                )
    if not problems:
        _pydantic(ServeDeploySchema, raw, "<root>", problems)
    return problems


def scoring_args(raw: Mapping[str, Any]) -> ScoringAppArgs | None:
    """The scoring app's ``ScoringAppArgs`` in a checked document (None: no scoring app)."""
    from serve_apps.scoring.app import ScoringAppArgs

    for app in raw.get("applications") or []:
        if app.get("import_path") == SCORING_IMPORT_PATH:
            return ScoringAppArgs.model_validate(app.get("args") or {})
    return None


def with_bind_address(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A checked document with ``http_options.host``/``port`` from the platform config.

    The platform config is the one the scoring app names (``args.platform_config``): the
    builder reads the same file and refuses to start when Serve binds another host.
    """
    from serve_apps.scoring.app import platform_config_of
    from sluice.config import load_platform_config

    args = scoring_args(raw)
    platform = platform_config_of(args) if args is not None else load_platform_config()
    doc = copy.deepcopy(dict(raw))
    http = dict(doc.get("http_options") or {})
    http.update(host=platform.serve.host, port=platform.serve.port)
    doc["http_options"] = http
    return doc


def load_serve_config(path: Path | str) -> dict[str, Any]:
    """The parsed config file, or ``ConfigError`` listing every problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read it as YAML: {exc}") from exc
    problems = check_serve_config(raw)
    if problems:
        raise ConfigError(f"{path}: invalid Serve config\n  " + "\n  ".join(problems))
    return raw
