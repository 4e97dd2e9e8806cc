"""What one ingress replica needs to answer requests: ``ScoringService`` and the
``ModelClient`` it calls (a Serve handle in production, ``FunctionModelClient`` in tests).

Every call to the model or the registry is bounded by ``request_timeout_s``
(``ScoringTimeout``: the route answers 504); a full model queue is ``Overloaded`` (503 or
429 with Retry-After, at once). ``api.create_api`` turns a service into routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import Request

from serve_apps.scoring.auth import KeyRing
from serve_apps.scoring.prediction_log import PredictionLog, log_entries
from serve_apps.scoring.schemas import ErrorReply, RequestParser, RequestRejected, ScoreReply
from sluice import metrics
from sluice.contract import Contract
from sluice.models import ModelRegistry
from sluice.store import AlertReader

__all__ = [
    "FunctionModelClient",
    "ModelClient",
    "Overloaded",
    "ScoringService",
    "ScoringTimeout",
]

log = logging.getLogger("serve_apps.scoring.api")  # one logger for the ingress


class Overloaded(Exception):
    """The model deployment's queue is full (or it has no replica): answer at once."""


class ScoringTimeout(Exception):
    """Scoring did not finish within ``request_timeout_s``."""


class ModelClient(Protocol):
    async def score(self, rows: list[dict[str, Any]], explain: bool = False) -> ScoreReply:
        """The rows scored; with ``explain``, each with its top attributions."""
        ...

    async def info(self) -> dict[str, Any]: ...

    async def ready(self) -> dict[str, Any]:
        """``{"model": <ref>, "cassandra": <bool>}`` from a replica that has its model."""
        ...

    async def shadow(self, rows: list[dict[str, Any]]) -> ScoreReply:
        """The rows scored by the shadow model (logged only: never answered or acted on)."""
        ...


class FunctionModelClient:
    """A ``ModelClient`` around plain (async) functions: for tests and local tools."""

    def __init__(
        self,
        score: Callable[..., Awaitable[ScoreReply]],
        info: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        ready: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        shadow: Callable[[list[dict[str, Any]]], Awaitable[ScoreReply]] | None = None,
    ) -> None:
        self._score, self._info, self._ready, self._shadow = score, info, ready, shadow

    async def score(self, rows: list[dict[str, Any]], explain: bool = False) -> ScoreReply:
        return await (self._score(rows, explain) if explain else self._score(rows))

    async def info(self) -> dict[str, Any]:
        return await self._info() if self._info else {}

    async def ready(self) -> dict[str, Any]:
        return await self._ready() if self._ready else {}

    async def shadow(self, rows: list[dict[str, Any]]) -> ScoreReply:
        if self._shadow is None:
            raise RuntimeError("this model client has no shadow model")
        return await self._shadow(rows)


@dataclass
class ScoringService:
    """Everything one ingress replica needs; ``create_api`` turns it into routes."""

    contract: Contract
    keyring: KeyRing
    model: ModelClient
    parser: RequestParser
    max_body_bytes: int
    request_timeout_s: float
    overload_status: int = 503
    retry_after_s: int = 1
    prediction_log: PredictionLog | None = None
    registry: ModelRegistry | None = None
    docs_public: bool = False
    ready_timeout_s: float = 2.0
    alerts: AlertReader | None = None  # the review pages read alerts through it
    max_shadow_requests: int = 64  # shadow calls in flight per replica; beyond: dropped
    # Registry reads (a filesystem that may hang) get threads of their own: a stuck read
    # then fails its requests after the timeout without starving asyncio's default pool.
    registry_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="sluice-registry"))
    _shadows: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def retry_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}

    async def read_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestRejected(400, f"bad Content-Length header {declared!r}")
            if int(declared) > limit:
                raise RequestRejected(413, f"body of {declared} bytes is over the limit of "
                                           f"{limit} bytes")  # fmt: skip
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestRejected(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def score(self, rows: list[dict[str, Any]], explain: bool = False) -> ScoreReply:
        return await self._bounded(self.model.score(rows, explain), "scoring")

    async def info(self) -> dict[str, Any]:
        return await self._bounded(self.model.info(), "asking the model")

    async def manifest(self) -> Any:
        """The registry's manifest of the contract's model, read within the request timeout."""
        assert self.registry is not None
        read = asyncio.get_running_loop().run_in_executor(
            self.registry_pool, self.registry.manifest, self.contract.model.name)  # fmt: skip
        return await self._bounded(read, "reading the model registry")

    async def readiness(self) -> dict[str, bool]:
        """Each readiness check: the model is loaded (a replica answers), Cassandra answers."""
        try:
            got = await asyncio.wait_for(self.model.ready(), self.ready_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure to answer in time: not ready
            log.warning("not ready: the model did not answer within %g s: %r",
                        self.ready_timeout_s, exc)  # fmt: skip
            return {"model": False, "cassandra": False}
        return {"model": bool(got.get("model")), "cassandra": got.get("cassandra") is True}

    def shadow_later(self, request_id: str, api_key: str, rows: list[dict[str, Any]]) -> None:
        """Score `rows` with the shadow model after the answer, off the request path, and
        log its scores with role ``shadow``. At most ``max_shadow_requests`` calls are in
        flight (more are dropped and counted); a failing or slow shadow is only counted
        (``sluice_shadow_rows_total``): the answer never waits for it."""
        name = self.contract.name
        if len(self._shadows) >= self.max_shadow_requests:
            metrics.SHADOW_ROWS.inc(len(rows), contract=name, outcome="dropped")
            return
        task = asyncio.get_running_loop().create_task(self._shadow(request_id, api_key, rows))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(self, request_id: str, api_key: str, rows: list[dict[str, Any]]) -> None:
        name = self.contract.name
        t0 = time.perf_counter()
        try:
            reply = await asyncio.wait_for(self.model.shadow(rows), self.request_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is counted, never raised
            reply = ScoreReply(error=ErrorReply(500, type(exc).__name__, str(exc)))
        if reply.error is not None or not reply.scores:
            log.warning("shadow scoring of %d row(s) failed: %s", len(rows),
                        reply.error.message if reply.error else "no row scored")  # fmt: skip
            metrics.SHADOW_ROWS.inc(len(rows), contract=name, outcome="failed")
            return
        if self.prediction_log is not None:
            now, ms = datetime.now(UTC), (time.perf_counter() - t0) * 1000.0
            self.prediction_log.predictions(reply.feature_names, log_entries(
                reply.scores, request_id, api_key, ms, now, role="shadow"))  # fmt: skip
        metrics.SHADOW_ROWS.inc(len(reply.scores), contract=name, outcome="scored")

    async def _bounded(self, call: Awaitable[Any], what: str) -> Any:
        try:
            return await asyncio.wait_for(call, self.request_timeout_s)
        except TimeoutError:
            raise ScoringTimeout(
                f"{what} took longer than {self.request_timeout_s:g} s; retry later"
            ) from None
