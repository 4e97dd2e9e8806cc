"""``build_app(args)``: the online scoring application, from typed arguments.

``configs/serve.yaml`` names it (``import_path: serve_apps.scoring.app:build_app``) and
passes ``args``, which Serve validates into ``ScoringAppArgs`` (unknown keys refused).
Deployment options that Serve owns — ``max_ongoing_requests``, ``max_queued_requests``,
``autoscaling_config``, the model's ``user_config`` — sit beside ``args`` in the
``deployments`` section of that file; the builder sets only what depends on the
contract: replica CPUs, and GPUs when the contract's device is ``cuda``.

Everything is parsed and checked here, once, before any replica starts: the platform
config, the contract, the API keys (digests only), and that the contract's model alias
resolves in the registry. A problem fails the deploy with a message naming the fix.
"""

# No `from __future__ import annotations` here: Serve reads the builder's parameter
# annotation at run time to validate the YAML `args` into ScoringAppArgs.

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from serve_apps.scoring.auth import KeyRing, parse_key_file, refuse_published_keys
from serve_apps.scoring.deployments import (
    INGRESS_ENV,
    MODEL_ENV,
    IngressSettings,
    ModelSettings,
    ModelUserConfig,
    ScoringIngress,
    ScoringModel,
)
from serve_apps.scoring.prediction_log import LogOptions
from sluice.config import (
    REPO_ROOT,
    CassandraConfig,
    ConsistencyLevel,
    PlatformConfig,
    load_platform_config,
)
from sluice.contract import Device, load_contract
from sluice.errors import ConfigError, ModelNotFound
from sluice.models import ModelRegistry
from sluice.store import ALERTS_BY_KEY_TABLE, ALERTS_TABLE, PREDICTION_LOG_TABLE, WriteOptions

__all__ = [
    "ApiKeysArgs",
    "LimitsArgs",
    "OverloadArgs",
    "PredictionLogArgs",
    "ResourcesArgs",
    "ScoringAppArgs",
    "assemble_app",
    "build_app",
    "check_bind_host",
    "load_key_digests",
    "platform_config_of",
    "serve_http_host",
]


class _Args(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiKeysArgs(_Args):
    sha256: dict[str, str] = Field(
        default_factory=dict,
        description="Key name -> hex SHA-256 digest (`sluice serve hash-key`); never the key.",
    )
    file: str | None = Field(
        None, description="Key file of '<name> <sha256 hex>' lines; relative to the repo root."
    )
    file_env: str = Field(
        "SLUICE_API_KEYS_FILE", description="Environment variable that overrides `file`."
    )


class LimitsArgs(_Args):
    max_rows: int = Field(256, ge=1, le=100_000, description="Rows per request (else 413).")
    max_body_bytes: int = Field(
        1_048_576, ge=256, le=256 * 1_048_576, description="Request body size (else 413)."
    )
    request_timeout_s: float = Field(
        5.0, gt=0, le=600,
        description="Longest time a request may take to score or read the registry (else 504).",
    )
    ready_timeout_s: float = Field(
        2.0, gt=0, le=60,
        description="Longest wait of /v1/ready for the model and Cassandra (else 503).",
    )


class OverloadArgs(_Args):
    status_code: Literal[503, 429] = Field(
        503, description="Status when a queue is full (`max_queued_requests` reached)."
    )
    retry_after_s: int = Field(1, ge=0, le=3600, description="Retry-After on 503/429/504.")


class ResourcesArgs(_Args):
    ingress_num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per ingress replica.")
    model_num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per model replica.")
    model_num_gpus: float = Field(
        1.0, ge=0, description="GPUs per model replica when the contract's device is cuda."
    )
    torch_threads: int = Field(1, ge=1, le=256, description="Threads per model replica for the "
                               "model's runtime, torch or onnxruntime (OMP_NUM_THREADS).")


class PredictionLogArgs(_Args):
    enabled: bool = Field(True, description="Log every prediction to Cassandra.")
    queue_size: int = Field(
        1024, ge=1, le=1_000_000, description="Requests waiting to be logged (then dropped)."
    )
    batch_rows: int = Field(256, ge=1, le=100_000, description="Rows per write.")
    flush_interval_s: float = Field(0.2, gt=0, le=60, description="Longest wait before a write.")
    ttl_s: int = Field(30 * 86_400, ge=0, description="Row TTL of the log; 0 keeps rows.")
    consistency: ConsistencyLevel = Field(ConsistencyLevel.LOCAL_ONE)
    write_retries: int = Field(1, ge=0, le=10, description="Retries per failed log write.")
    cassandra: CassandraConfig | None = Field(
        None, description="A separate cluster for the log (quarantine rows stay on the "
        "platform's)."
    )


class ScoringAppArgs(_Args):
    """Arguments of the scoring application (`args:` in configs/serve.yaml)."""

    contract: str = Field("fraud", description="Contract name or YAML path.")
    platform_config: str | None = Field(
        None, description="Platform config path (default: SLUICE_CONFIG or configs/platform.yaml)."
    )
    api_keys: ApiKeysArgs = ApiKeysArgs()
    limits: LimitsArgs = LimitsArgs()
    overload: OverloadArgs = OverloadArgs()
    resources: ResourcesArgs = ResourcesArgs()
    prediction_log: PredictionLogArgs = PredictionLogArgs()
    feature_read_retries: int = Field(
        1, ge=0, le=10, description="Retries of a failed online feature read."
    )
    docs_public: bool = Field(False, description="Serve /docs and /openapi.json without a key.")


def _repo_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def platform_config_of(args: ScoringAppArgs) -> PlatformConfig:
    """The platform config the app runs with (`sluice serve` reads the bind address here)."""
    if args.platform_config:
        return load_platform_config(_repo_path(args.platform_config))
    return load_platform_config()


def check_bind_host(bound: str | None, platform: PlatformConfig) -> None:
    """``ConfigError`` unless Serve binds the host the platform config names.

    ``serve.host`` of the platform config is the one source of the bind address:
    ``configs/serve.yaml`` may not name one, and `sluice serve` writes this one into the
    document it hands Serve. A plain ``serve deploy configs/serve.yaml`` binds Serve's
    default (all interfaces), so it starts only where the platform config says so too.
    (The port is not compared: tests and benchmarks run Serve on a free port.)
    """
    if bound != platform.serve.host:
        raise ConfigError(
            f"Serve binds {bound!r} but the platform config says serve.host "
            f"{platform.serve.host!r}: deploy with `sluice serve --deploy`, which writes the "
            "platform config's serve.host/serve.port into Serve's http_options, or change "
            "serve.host in the platform config (SLUICE_SERVE__HOST overrides it)"
        )


def serve_http_host() -> str | None:
    """The host Serve's HTTP ingress binds: the running controller's ``http_options``.

    The builder runs inside Serve (``serve deploy``/``serve run`` build the app in a task of
    the cluster, after the controller started with the file's ``http_options``), so this is
    where the endpoint really listens. Without a controller: the host ``serve.run`` would
    start one with. None: Serve has no HTTP ingress.
    """
    import ray
    from ray.serve.config import HTTPOptions

    if ray.is_initialized():
        from ray.serve.context import _get_global_client  # private; pinned with Ray 2.60

        client = _get_global_client(raise_if_no_controller_running=False)
        if client is not None:
            return client.http_config.host
    return HTTPOptions().host


def load_key_digests(
    keys: ApiKeysArgs, bind_host: str | None, environ: dict[str, str] | None = None
) -> dict[str, str]:
    """name -> digest from the config and the key file (the env var wins over `file`).

    A key published in this repository (the demo key) is refused unless ``bind_host`` is
    loopback: `make demo` works on 127.0.0.1, a deploy reachable by others does not start.
    """
    env = os.environ if environ is None else environ
    path = env.get(keys.file_env) or keys.file
    digests = dict(keys.sha256)
    if path:
        for name, digest in parse_key_file(_repo_path(path)).items():
            if name in digests:
                raise ConfigError(f"API key {name!r} is in both api_keys.sha256 and {path}")
            digests[name] = digest
    KeyRing.from_digests(digests)  # checks every digest, and that there is at least one
    refuse_published_keys(digests, bind_host)
    return digests


def build_app(args: ScoringAppArgs) -> Application:
    """The scoring application for one contract: ScoringIngress -> ScoringModel."""
    return assemble_app(args)


def assemble_app(
    args: ScoringAppArgs | dict,
    model: Application | None = None,
    *,
    ingress_options: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
) -> Application:
    """``build_app`` for Python callers (``serve.run``), who have no YAML ``deployments``.

    ``ingress_options`` / ``model_options`` are Serve's own deployment options
    (``max_ongoing_requests``, ``autoscaling_config``...). ``model`` binds another model
    deployment in place of ScoringModel: the ingress calls on its handle ``score(requests,
    explains)`` (a group of requests, each a list of rows, and their explain flags; one
    ``ScoreReply`` per request back), ``info()``, ``ready()`` (``{"model": ..., "cassandra":
    bool}``: the readiness routes answer 503 without it) and, with a shadow share,
    ``shadow(rows)``; so tests (a deliberately slow model) can bind their own.
    """
    if not isinstance(args, ScoringAppArgs):
        args = ScoringAppArgs.model_validate(args)
    platform = platform_config_of(args)
    contract = load_contract(args.contract if "/" not in args.contract
                             else _repo_path(args.contract))  # fmt: skip
    bound = serve_http_host()
    digests = load_key_digests(args.api_keys, bound)
    check_bind_host(bound, platform)
    try:
        ModelRegistry.from_config(platform).resolve(str(contract.model))
    except ModelNotFound as exc:
        raise ModelNotFound(
            f"contract {contract.name} serves {contract.model}, which the registry "
            f"{platform.registry.root_uri} cannot resolve ({exc}); train or register and "
            "promote a model first (`python -m pipelines.train`, `sluice models promote`)"
        ) from exc

    res = args.resources
    model_actor = {"num_cpus": res.model_num_cpus, "runtime_env": {"env_vars": MODEL_ENV}}
    if contract.device == Device.CUDA:
        model_actor["num_gpus"] = res.model_num_gpus
    feature_cfg = platform.cassandra.model_copy(update={"write_retries": args.feature_read_retries})
    if model is None:
        options = {"ray_actor_options": model_actor, **(model_options or {})}
        # A caller's user_config is checked and completed with the defaults, as a YAML one is.
        options["user_config"] = ModelUserConfig.model_validate(
            options.get("user_config") or {}).model_dump()  # fmt: skip
        model = ScoringModel.options(**options).bind(
            ModelSettings(contract, platform, feature_cfg, res.torch_threads))

    plog = args.prediction_log
    log_cfg = plog.cassandra or platform.cassandra
    log_cfg = log_cfg.model_copy(update={"write_retries": plog.write_retries})
    out = contract.output
    q_cfg = platform.cassandra.model_copy(update={"write_retries": plog.write_retries})
    targets = {
        PREDICTION_LOG_TABLE.name: (
            log_cfg, WriteOptions.from_config(log_cfg, plog.consistency, plog.ttl_s)),
        out.quarantine_table: (
            q_cfg, WriteOptions.from_config(q_cfg, out.consistency, out.ttl_s)),
        # Alerts live beside the batch and stream ones, on the platform's cluster.
        **{t.name: (q_cfg, WriteOptions.from_config(q_cfg, out.consistency, out.ttl_s))
           for t in (ALERTS_TABLE, ALERTS_BY_KEY_TABLE)},
    }  # fmt: skip
    lim, over = args.limits, args.overload
    settings = IngressSettings(
        contract=contract, platform=platform, key_digests=digests,
        max_rows=lim.max_rows, max_body_bytes=lim.max_body_bytes,
        request_timeout_s=lim.request_timeout_s, ready_timeout_s=lim.ready_timeout_s,
        overload_status=over.status_code, retry_after_s=over.retry_after_s,
        docs_public=args.docs_public, log_predictions=plog.enabled, log_targets=targets,
        log_options=LogOptions(plog.queue_size, plog.batch_rows, plog.flush_interval_s),
    )  # fmt: skip
    backpressure = BackpressureConfig(status_code=over.status_code,
                                      retry_after_s=over.retry_after_s or None)  # fmt: skip
    ingress_actor = {"num_cpus": res.ingress_num_cpus, "runtime_env": {"env_vars": INGRESS_ENV}}
    options = {"ray_actor_options": ingress_actor, **(ingress_options or {})}
    return ScoringIngress.options(backpressure_config=backpressure, **options).bind(settings, model)
