"""The two Serve deployments: ``ScoringIngress`` (FastAPI) and ``ScoringModel`` (batched).

``ScoringModel`` loads the contract's Scorer (champion alias, features from the
Cassandra online feature table, ``record_events=False``: online requests never record
events, the stream does) and answers ``score(groups, explains)`` through ``@serve.batch``:
each call a group of requests from one ingress replica (``HandleModelClient``). Its
``user_config`` (``ModelUserConfig``) is applied in ``reconfigure``, in place, without
restarting the replica: a new ``model_generation`` re-resolves the aliases (after
``sluice models promote``), and the batch size, batch wait and canary share change
live. A request in flight keeps the model it started with; the swap is one reference.
An alias is resolved once per deployment generation (``ModelRegistry.pin``): every
replica of a generation, one the autoscaler adds or Serve restarts included, scores with
the version the first one resolved, whatever was promoted since.

``ScoringIngress`` builds its FastAPI app per replica (``__serve_build_asgi_app__``) from
a ``ScoringService``; it calls the model through ``HandleModelClient``, which sends a
request alone while fewer than ``CALLS_IN_FLIGHT`` calls are out and groups the requests
that wait beyond that into one call, and turns Serve's backpressure into ``Overloaded``
(503/429 with Retry-After, at once).

The hop between them uses Serve's own throughput settings (``INGRESS_ENV``, ``MODEL_ENV``,
set per replica through ``runtime_env``; the by-value handle): the ingress never blocks
its loop, so its requests, its router and its user code share one event loop, and replies
come back over the replicas' gRPC channel instead of Ray's object store. The model keeps
its user code on a thread of its own: it scores inline (see ``ScoringModel.score``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_apps.scoring.api import create_api
from serve_apps.scoring.auth import KeyRing
from serve_apps.scoring.batch import BatchScorer
from serve_apps.scoring.prediction_log import (
    CassandraTables,
    LogOptions,
    PredictionLog,
)
from serve_apps.scoring.schemas import ErrorReply, RequestParser, ScoreReply
from serve_apps.scoring.service import Overloaded, ScoringService
from sluice import metrics
from sluice.config import CassandraConfig, PlatformConfig
from sluice.contract import Contract
from sluice.errors import ModelNotFound, StoreUnavailable
from sluice.store import AlertReader
from sluice.stream import AlertPublisher

__all__ = [
    "INGRESS_ENV",
    "MODEL_ENV",
    "HandleModelClient",
    "IngressSettings",
    "ModelSettings",
    "ModelUserConfig",
    "ScoringIngress",
    "ScoringModel",
]

log = logging.getLogger("sluice.serve")

_CASSANDRA_PING = "SELECT release_version FROM system.local"

_LOG_BUFFER = {"RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000"}  # access log lines in memory
INGRESS_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    **_LOG_BUFFER,
}
"""The ingress replica's part of ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` (Ray 2.60): one event
loop for requests, router and user code, access log lines flushed 1,000 at a time (and at
once on an error). Measured (bench/serve.py shape, HAProxy, 2 cores): 1.3-1.5x the req/s
at 32 connections; with the by-value handle 1.8-1.9x, p50 at 1 connection -5 to -8 ms."""
MODEL_ENV = dict(_LOG_BUFFER)
"""The model replica keeps its user code on its own thread: it scores inline and must go
on answering health checks meanwhile."""


GROUP_REQUESTS = 16
"""Requests an ingress replica sends the model in one call, at most (``HandleModelClient``)."""
CALLS_IN_FLIGHT = 8
"""Calls to the model an ingress replica keeps out before requests start to wait and
travel in groups. The model's autoscaler counts calls (``target_ongoing_requests``, 4 in
configs/serve.yaml), so enough of them must be out for each model replica: 8 keep two
replicas at their target from one ingress replica."""


def _app_name() -> str:
    """The Serve application this replica belongs to ("local" outside a replica)."""
    try:
        return serve.get_replica_context().app_name
    except Exception:  # noqa: BLE001 - RayServeException outside a replica
        return "local"


class ModelUserConfig(BaseModel):
    """``user_config`` of ``ScoringModel``: changed by ``serve deploy`` without a restart."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_generation: int = Field(
        1, ge=0, description="Bump after `sluice models promote` to re-resolve the aliases."
    )
    max_batch_size: int = Field(32, ge=1, le=4096, description="Requests per batched call.")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, le=1.0, description="Longest wait for a batch to fill, in seconds "
        "(0: take what queued while the previous batch ran)."
    )
    challenger_share: float = Field(
        0.0, ge=0, le=1, description="Share of keys (by key hash) scored by the challenger."
    )
    challenger_alias: str = Field("challenger", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    shadow_share: float = Field(
        0.0, ge=0, le=1, description="Share of scored rows (by key hash) also scored by the "
        "shadow model after the answer: logged with role shadow, never returned or acted on.",
    )  # fmt: skip
    shadow_alias: str = Field("shadow", pattern=r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class ModelSettings:
    contract: Contract
    platform: PlatformConfig
    feature_store: CassandraConfig  # the platform's, with the online read retries
    torch_threads: int = 1
    # One per build of the app (a fresh `serve deploy`/`serve run`, or new code or args):
    # an alias is pinned per (build, generation), so a fresh deploy resolves it anew while
    # a user_config-only redeploy (Serve keeps the build) and added replicas do not.
    build_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])


@serve.deployment(name="ScoringModel", max_ongoing_requests=64, max_queued_requests=128,
                  graceful_shutdown_timeout_s=10)  # fmt: skip
class ScoringModel:
    """The contract's Scorer behind ``@serve.batch``; hot-swapped through ``reconfigure``."""

    def __init__(self, settings: ModelSettings) -> None:
        from sluice.models import ModelRegistry, set_thread_budget
        from sluice.scoring import Scorer
        from sluice.store import CassandraFeatureStore, check_schema, session_for

        set_thread_budget(settings.torch_threads)  # the model's runtime, torch or onnxruntime
        self.settings = settings
        self.contract = settings.contract
        self.registry = ModelRegistry.from_config(settings.platform)
        self.store = CassandraFeatureStore.for_contract(settings.feature_store, self.contract)
        self._scorer_cls = Scorer
        self.config = ModelUserConfig()
        self._scope = f"serve:{_app_name()}:{self.contract.name}:{settings.build_id}"
        champion = self._pinned_scorer(str(self.contract.model), self.config)
        self.core = BatchScorer(champion)
        metrics.models_in_use("online", self.contract.name, [champion.model.ref])
        self.shadow_core: BatchScorer | None = None
        self.batches = self.batched_requests = 0
        try:  # connect now, so the first request does not pay for it
            session = session_for(settings.feature_store)
        except StoreUnavailable as exc:
            log.warning("feature store not reachable yet (requests will retry): %s", exc)
        else:  # replicas check the schema, never create it: `sluice schema apply` does
            check_schema(session, settings.feature_store, [self.contract])
        log.info("ScoringModel %s ready: %s on %s", self.contract.name, champion.model.ref,
                 champion.device)  # fmt: skip
        # What the replica built (libraries, model) lives as long as it does: out of the
        # collector's sight (bench/serve.py: full collections of 131-147 ms -> <= 10 ms).
        gc.freeze()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        new = ModelUserConfig.model_validate(user_config or {})
        champion = self.core.champion
        if new.model_generation != self.config.model_generation:
            before = champion.model.ref
            champion = self._pinned_scorer(str(self.contract.model), new)  # loads, then swaps
            log.info("model generation %d: champion %s -> %s", new.model_generation, before,
                     champion.model.ref)  # fmt: skip
        challenger = self._other(new.challenger_alias, new, "canary", new.challenger_share)
        shadow = self._other(new.shadow_alias, new, "shadow", new.shadow_share)
        self.score.set_max_batch_size(new.max_batch_size)
        self.score.set_batch_wait_timeout_s(new.batch_wait_timeout_s)
        self.shadow_core = None if shadow is None else BatchScorer(shadow, role="shadow")
        self.core = BatchScorer(champion, challenger, new.challenger_share if challenger else 0.0,
                                shadow_share=new.shadow_share if shadow else 0.0)  # fmt: skip
        self.config = new
        # The versions answers are scored with (the shadow's: sluice_shadow_rows_total).
        metrics.models_in_use("online", self.contract.name,
                              [s.model.ref for s in (champion, challenger) if s is not None])

    def _pinned_scorer(self, alias_ref: str, cfg: ModelUserConfig) -> Any:
        """A Scorer for the version ``alias_ref`` means in ``cfg``'s generation."""
        name, version = self.registry.pin(alias_ref, f"{self._scope}:g{cfg.model_generation}")
        return self._scorer_cls(self.contract, self.registry, self.store,
                                model_ref=f"{name}/{version}", record_events=False)  # fmt: skip

    def _other(self, alias: str, cfg: ModelUserConfig, what: str, share: float) -> Any:
        """The Scorer of the canary's or the shadow's alias; None when its share is 0 or the
        alias is not set (logged: that feature stays off)."""
        if share <= 0:
            return None
        try:
            return self._pinned_scorer(f"{self.contract.model.name}@{alias}", cfg)
        except ModelNotFound as exc:
            log.warning("%s off: %s (share %.3f ignored)", what, exc, share)
            return None

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def score(self, groups: list[list[list[dict[str, Any]]]],
                    explains: list[list[bool]]) -> list[list[ScoreReply]]:  # fmt: skip
        """Calls from the ingress replicas, each a group of requests (``HandleModelClient``):
        every call queued while the previous batch ran, scored ``max_batch_size`` requests
        at a time."""
        # Scored inline, on the replica's user-code loop (Serve runs it in a thread of its
        # own, so health checks stay answered). Calls arriving meanwhile queue up and form
        # the next batch. Measured on 2 cores: handing the batch to a worker thread instead
        # kept batches at ~1.4 requests and halved throughput (GIL hand-offs between the
        # loop, the worker and the driver's threads).
        core = self.core  # the model of this batch, whatever reconfigure does meanwhile
        requests = [r for g in groups for r in g]
        explain = [e for g in explains for e in g]
        step = self.config.max_batch_size
        replies: list[ScoreReply] = []
        for start in range(0, len(requests), step):
            chunk = requests[start:start + step]
            self.batches += 1
            self.batched_requests += len(chunk)
            t0 = time.perf_counter()
            replies += core.score(chunk, explain=explain[start:start + step])
            metrics.SCORE_BATCH_SECONDS.observe(time.perf_counter() - t0, path="online",
                                                contract=self.contract.name)  # fmt: skip
        out, start = [], 0
        for g in groups:
            out.append(replies[start:start + len(g)])
            start += len(g)
        return out

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def shadow(self, requests: list[list[dict[str, Any]]]) -> list[ScoreReply]:
        """The shadow model on rows already answered by the champion (no alerts raised)."""
        core = self.shadow_core
        if core is None:  # shadow turned off since the rows were picked
            off = ScoreReply(error=ErrorReply(503, "shadow_off", "no shadow model configured"))
            return [off] * len(requests)
        return core.score(requests)

    async def ready(self) -> dict[str, Any]:
        """Readiness of this replica: its model is loaded (in ``__init__``, so a replica that
        answers has one) and Cassandra, where its features come from, answers a query."""
        cassandra = await asyncio.to_thread(self._cassandra_answers)
        return {"model": self.core.champion.model.ref, "cassandra": cassandra}

    def _cassandra_answers(self) -> bool:
        from sluice.store import session_for

        cfg = self.settings.feature_store
        try:
            session_for(cfg).execute(_CASSANDRA_PING, timeout=cfg.request_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure to answer means "not ready"
            log.warning("not ready: Cassandra does not answer: %s", exc)
            return False
        return True

    async def info(self) -> dict[str, Any]:
        import ray

        core = self.core
        return {
            "champion": core.champion.model.ref,
            "challenger": core.challenger.model.ref if core.challenger else None,
            "challenger_share": core.challenger_share,
            "shadow": self.shadow_core.champion.model.ref if self.shadow_core else None,
            "shadow_share": core.shadow_share,
            "model_generation": self.config.model_generation,
            "max_batch_size": self.config.max_batch_size,
            "batch_wait_timeout_s": self.config.batch_wait_timeout_s,
            "device": str(core.champion.device),
            "batches": self.batches,
            "mean_batch_requests": round(self.batched_requests / max(self.batches, 1), 2),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "replica": serve.get_replica_context().replica_id.unique_id,
        }


@dataclass
class _Waiting:
    """A request waiting for one of the client's calls to the model to come back."""

    rows: list[dict[str, Any]]
    explain: bool
    answer: asyncio.Future[ScoreReply]


def _fail(group: list[_Waiting], exc: Exception) -> None:
    """Each request of a call that failed gets its error (those still waiting for it)."""
    for w in group:
        if not w.answer.done():
            w.answer.set_exception(exc)


class HandleModelClient:
    """``ModelClient`` over a Serve handle: backpressure becomes ``Overloaded`` at once.

    A request goes to the model alone, at once, while fewer than ``CALLS_IN_FLIGHT`` calls
    are out; beyond that, requests wait for a call to come back and then travel together
    (at most ``GROUP_REQUESTS`` a call). Each call costs both replicas the same fixed work
    (routing, gRPC, the model replica's request handling), so under load it is spent once
    per group (bench/serve.py's Sluice app alone, HAProxy, 32 connections, 2 cores:
    130-146 -> 214-223 req/s, the model's batches 6.7 -> 7.6-8.0 requests). The model's
    queue limits still refuse calls at once (each request of a
    refused call answers ``Overloaded``), and a call whose requests all gave up (their
    timeout, or their clients left) is cancelled, which stops it in the model too."""

    def __init__(self, handle: DeploymentHandle) -> None:
        # By value: the reply comes back on the model replica's gRPC channel, not as an
        # object in Ray's object store (what RAY_SERVE_THROUGHPUT_OPTIMIZED does).
        self.handle = handle.options(_by_reference=False)
        self._out = 0  # calls out now
        self._waiting: deque[_Waiting] = deque()
        self._groups: set[asyncio.Task[None]] = set()

    async def score(self, rows: list[dict[str, Any]], explain: bool = False) -> ScoreReply:
        if self._out < CALLS_IN_FLIGHT:
            self._out += 1
            try:  # cancelled by its caller: awaiting the response cancels it in the model
                return (await self._call(self.handle.score.remote([rows], [explain])))[0]
            finally:
                self._returned()
        waiting = _Waiting(rows, explain, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        return await waiting.answer  # cancelled: its group leaves it out, or goes without it

    def _returned(self) -> None:
        """A call came back: the requests waiting meanwhile go, together, in its place."""
        self._out -= 1
        group: list[_Waiting] = []
        while self._waiting and len(group) < GROUP_REQUESTS:
            waiting = self._waiting.popleft()
            if not waiting.answer.done():  # not given up while it waited
                group.append(waiting)
        if group:
            self._out += 1
            task = asyncio.get_running_loop().create_task(self._send(group))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    async def _send(self, group: list[_Waiting]) -> None:
        try:
            try:
                response = self.handle.score.remote([w.rows for w in group],
                                                    [w.explain for w in group])  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - refused before it left: each request
                _fail(group, exc)  # answers now, not at its timeout
                return
            answer = asyncio.ensure_future(self._call(response))
            # Only cancellation completes a request's future before the answer: all done
            # means every request of the call gave up.
            gone = asyncio.ensure_future(asyncio.wait([w.answer for w in group]))
            await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
            if not answer.done():
                response.cancel()  # stops the request in the model replica too
                answer.cancel()
                return
            gone.cancel()
            try:
                replies = answer.result()
            except Exception as exc:  # noqa: BLE001 - each request of the call gets it
                _fail(group, exc)
                return
            for w, reply in zip(group, replies, strict=True):
                if not w.answer.done():
                    w.answer.set_result(reply)
        finally:
            self._returned()

    async def info(self) -> dict[str, Any]:
        return await self._call(self.handle.info.remote())

    async def ready(self) -> dict[str, Any]:
        return await self._call(self.handle.ready.remote())

    async def shadow(self, rows: list[dict[str, Any]]) -> ScoreReply:
        return await self._call(self.handle.shadow.remote(rows))

    @staticmethod
    async def _call(response: Any) -> Any:
        from ray.exceptions import ActorDiedError, ActorUnavailableError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        try:
            return await response
        except BackPressureError as exc:
            raise Overloaded("the model's request queue is full; retry later") from exc
        except (DeploymentUnavailableError, ActorDiedError, ActorUnavailableError) as exc:
            raise Overloaded(f"the model is unavailable right now ({type(exc).__name__})") \
                from exc


@dataclass(frozen=True)
class IngressSettings:
    contract: Contract
    platform: PlatformConfig
    key_digests: dict[str, str]
    max_rows: int
    max_body_bytes: int
    request_timeout_s: float
    ready_timeout_s: float
    overload_status: int
    retry_after_s: int
    docs_public: bool
    log_predictions: bool
    log_targets: dict[str, tuple[CassandraConfig, Any]]  # table -> (cluster, WriteOptions)
    log_options: LogOptions


@serve.deployment(name="ScoringIngress", max_ongoing_requests=128, max_queued_requests=256,
                  graceful_shutdown_timeout_s=10)  # fmt: skip
@serve.ingress()
class ScoringIngress:
    """Auth, limits, request validation, then the model; logs predictions off the path."""

    def __init__(self, settings: IngressSettings, model: DeploymentHandle) -> None:
        from sluice.models import ModelRegistry

        c = settings.contract
        # Alerts are proposed to the alert relay, which publishes each transaction's once.
        proposals = None if c.decision is None else AlertPublisher(settings.platform.kafka, c.name)
        self.prediction_log = PredictionLog(
            c, CassandraTables(settings.log_targets), settings.log_options,
            log_predictions=settings.log_predictions,
            propose=None if proposals is None else proposals.publish,
        )  # fmt: skip
        self.service = ScoringService(
            contract=c,
            keyring=KeyRing.from_digests(settings.key_digests),
            model=HandleModelClient(model),
            parser=RequestParser(c, settings.max_rows),
            max_body_bytes=settings.max_body_bytes,
            request_timeout_s=settings.request_timeout_s,
            ready_timeout_s=settings.ready_timeout_s,
            overload_status=settings.overload_status,
            retry_after_s=settings.retry_after_s,
            prediction_log=self.prediction_log,
            registry=ModelRegistry.from_config(settings.platform),
            docs_public=settings.docs_public,
            alerts=AlertReader(settings.platform.cassandra, c.name),
        )

    def __serve_build_asgi_app__(self) -> Any:
        app = create_api(self.service)
        gc.freeze()  # the replica's lasting objects, app included (as ScoringModel's)
        return app

    def __del__(self) -> None:
        self.prediction_log.close(timeout_s=2.0)
