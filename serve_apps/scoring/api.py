"""The HTTP surface: ``create_api(service)`` builds the FastAPI app of one ingress replica.

Routes (all but ``/v1/health`` and ``/v1/ready`` need an API key; see ``auth``)::

    POST /v1/{contract}/predict   one row (object) or up to max_rows rows (array)
    GET  /v1/health               liveness: this process answers (no key)
    GET  /v1/ready                readiness: the model is loaded and Cassandra answers (no key;
                                  503 otherwise, within ``ready_timeout_s``)
    GET  /v1/models               versions and aliases, and what this endpoint serves (the
                                  registry read is bounded by ``request_timeout_s``: else 504)
    GET  /v1/stats                this replica process's metrics (prediction log included)
    GET  /docs, /openapi.json     OpenAPI

Status codes: 401 wrong or missing key; 404 unknown contract; 413 body over
``max_body_bytes`` or more than ``max_rows`` rows; 415 a ``Content-Type`` that is not JSON;
422 malformed rows (field and rule) or rows that broke the contract's expectations
(quarantined, with the reasons);
503 (or 429) with ``Retry-After`` when the model's queue is full or the store is down;
504 when scoring takes longer than ``request_timeout_s``. A client mistake is never a 500.

The app talks to the model through a ``ModelClient`` (a Serve handle in production, a
plain function in unit tests; ``service.py``), so every route is testable without Ray.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_apps.scoring.auth import AuthMiddleware, route_path
from serve_apps.scoring.oip import OIP_PREFIX, OIP_PUBLIC_PATHS, add_oip_routes
from serve_apps.scoring.prediction_log import log_entries
from serve_apps.scoring.review import REVIEW_PATH, add_review_pages
from serve_apps.scoring.schemas import (
    REQUEST_ID,
    PredictResponse,
    RequestRejected,
    ScoreReply,
    predict_response,
    rejected_body,
)
from serve_apps.scoring.service import Overloaded, ScoringService, ScoringTimeout
from sluice import metrics
from sluice.errors import (
    ConfigError,
    ModelNotFound,
    SluiceError,
    StoreUnavailable,
    ValidationFailed,
)
from sluice.scoring import reason_counts

__all__ = [
    "HEALTH_PATH",
    "READY_PATH",
    "create_api",
    "is_json_media_type",
    "status_for",
]

log = logging.getLogger(__name__)

HEALTH_PATH = "/v1/health"
READY_PATH = "/v1/ready"
# application/json, or a structured-syntax JSON type (application/problem+json), any params.
_JSON_MEDIA_TYPE = re.compile(r"^application/([a-z0-9.!#$&^_-]+\+)?json$")


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header declares JSON (parameters such as charset aside)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return bool(_JSON_MEDIA_TYPE.match(media))

# SluiceError branch -> status. The most specific class in an error's MRO wins.
STATUS_BY_ERROR: dict[type[SluiceError], int] = {
    ValidationFailed: 422,
    StoreUnavailable: 503,  # includes WriteFailed: retry later
    ModelNotFound: 503,  # the endpoint has no model to serve right now
    ConfigError: 500,  # the deployment is misconfigured: not the client's doing
    SluiceError: 500,
}


def status_for(exc_type: type[BaseException]) -> int:
    for klass in exc_type.__mro__:
        if klass in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[klass]
    return 500


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    return given if given and REQUEST_ID.match(given) else uuid.uuid4().hex


def _json(status: int, body: dict[str, Any], request_id: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    # `request_id` is passed only when we made it: Serve's proxy puts its own id on the
    # request (which we adopt) and echoes it on the response; a second header would clash.
    extra = dict(headers or {})
    if request_id:
        extra["X-Request-ID"] = request_id
    return JSONResponse(body, status_code=status, headers=extra)


def _ours(request: Request) -> str | None:
    """The request id to put on the response: only one this app made up."""
    rid = getattr(request.state, "request_id", None)
    return rid if rid and request.headers.get("x-request-id") != rid else None


def _is_oip(request: Request) -> bool:
    path = route_path(request.scope)
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def _error(request: Request, status: int, kind: str, message: str,
           headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:  # fmt: skip
    """An error in the protocol of the route: ``{"error": message}`` under ``/v2`` (Open
    Inference Protocol), ``{"error": kind, "message": ..., ...}`` under ``/v1``."""
    if _is_oip(request):
        problems = "; ".join(f"{p['loc']}: {p['message']}" + (f" (value {p['value']})"
                             if p.get("value") is not None else "")
                             for p in extra.get("problems", ()))  # fmt: skip
        body: dict[str, Any] = {"error": f"{message}: {problems}" if problems else message}
    else:
        body = {"error": kind, "message": message, **extra}
    return _json(status, body, _ours(request), headers)


def create_api(service: ScoringService) -> FastAPI:
    """The FastAPI app of one ingress replica (routes close over ``service``)."""
    c = service.contract
    source = f"online:{c.name}"  # as on its quarantine rows
    api = FastAPI(
        title=f"Sluice scoring: {c.name}",
        description=c.description or f"Scores rows of contract {c.name}.",
        version="1",
    )
    @api.exception_handler(RequestRejected)
    async def _rejected(request: Request, exc: RequestRejected) -> Response:
        kind = {413: "too_large", 400: "bad_request",
                415: "unsupported_media_type"}.get(exc.status, "invalid_request")  # fmt: skip
        return _error(request, exc.status, kind, exc.message,
                      problems=[p.as_dict() for p in exc.problems])  # fmt: skip

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if not _is_oip(request):  # /v1 keeps FastAPI's own answer ({"detail": ...})
            return await http_exception_handler(request, exc)
        return JSONResponse({"error": f"{request.method} {request.url.path}: {exc.detail}"},
                            status_code=exc.status_code, headers=exc.headers)  # fmt: skip

    @api.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> Response:
        return _error(request, service.overload_status, "overloaded", str(exc),
                      service.retry_headers)  # fmt: skip

    @api.exception_handler(ScoringTimeout)
    async def _timeout(request: Request, exc: ScoringTimeout) -> Response:
        return _error(request, 504, "timeout", str(exc), service.retry_headers)

    @api.exception_handler(SluiceError)
    async def _sluice(request: Request, exc: SluiceError) -> Response:
        status = status_for(type(exc))
        if isinstance(exc, StoreUnavailable):
            request.state.error_class = metrics.STORE_UNAVAILABLE
        headers = service.retry_headers if status == 503 else None
        log.warning("%s answered %d: %s", request.url.path, status, exc)
        return _error(request, status, type(exc).__name__, str(exc), headers)

    async def score_rows(request: Request, rows: list[dict[str, Any]], explain: bool,
                         t0: float) -> ScoreReply:  # fmt: skip
        """Score parsed rows and record what every protocol records alike: quarantined
        rows (metrics, log), then, when none was refused, the predictions (log, metrics)
        and alerts. The caller renders the reply in its protocol."""
        reply = await service.score(rows, explain)
        if reply.error is not None:
            if reply.error.status == 503:  # batch.error_status: a store outage, any subclass
                request.state.error_class = metrics.STORE_UNAVAILABLE
            return reply
        if reply.quarantine is not None:
            reasons = reason_counts(reply.quarantine.column("reasons").to_pylist())
            for reason, n in reasons.items():
                metrics.ROWS_QUARANTINED.inc(n, path="online", source=source, contract=c.name,
                                             reason=reason)  # fmt: skip
            if service.prediction_log is not None:
                service.prediction_log.quarantine(reply.quarantine)
        if reply.rejected:
            return reply
        latency_ms = (time.perf_counter() - t0) * 1000.0
        key_name = getattr(request.state, "api_key_name", "")
        if service.prediction_log is not None:
            now = datetime.now(UTC)
            entries = log_entries(reply.scores, request.state.request_id, key_name, latency_ms,
                                  now)  # fmt: skip
            service.prediction_log.predictions(reply.feature_names, entries)
            if reply.alerts is not None:  # written off the path; the reply has the decisions
                service.prediction_log.alerts(reply.alerts)
        if reply.shadow_rows:  # scored again by the shadow model, after the answer
            service.shadow_later(request.state.request_id, key_name,
                                 [rows[i] for i in reply.shadow_rows])  # fmt: skip
        for version, n in Counter(s.model_version for s in reply.scores).items():
            decided = Counter(s.decision for s in reply.scores
                              if s.model_version == version and s.decision)  # fmt: skip
            metrics.record_rows(source, c.name, version, n, {}, decided)
        return reply

    @api.get(HEALTH_PATH, tags=["ops"], summary="Liveness (no API key needed)",
             openapi_extra={"security": []})
    async def health() -> dict[str, Any]:
        return {"status": "ok", "contract": c.name}

    @api.get(READY_PATH, tags=["ops"], openapi_extra={"security": []},
             summary="Readiness: the model is loaded and Cassandra answers (no API key)",
             responses={503: {"description": "not ready; the failed checks are false"}})
    async def ready() -> Response:
        checks = await service.readiness()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "contract": c.name, "checks": checks},
                            status_code=200 if ok else 503,
                            headers=None if ok else service.retry_headers)  # fmt: skip

    @api.post(
        "/v1/{contract}/predict",
        tags=["scoring"],
        summary="Score one row or a list of rows",
        response_model=PredictResponse,
        responses={401: {"description": "missing or wrong API key"},
                   413: {"description": "body or row count over the limit"},
                   415: {"description": "Content-Type is not JSON"},
                   422: {"description": "malformed rows, or rows failing the contract"},
                   503: {"description": "overloaded or store unavailable; see Retry-After"},
                   504: {"description": "scoring took longer than the request timeout"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": service.parser.openapi_body()["schema"]}}}},
    )  # fmt: skip
    async def predict(contract: str, request: Request, explain: bool = False) -> Response:
        t0 = time.perf_counter()
        request_id = request.state.request_id = _request_id(request)
        ours = request_id if request.headers.get("x-request-id") != request_id else None
        if contract != c.name:
            return _json(404, {"error": "unknown_contract",
                               "message": f"contract {contract!r} is not served here; "
                                          f"served: {c.name}"}, ours)  # fmt: skip
        declared = request.headers.get("content-type")
        if not is_json_media_type(declared):
            raise RequestRejected(415, f"Content-Type {declared!r} is not JSON: send the rows "
                                       "as 'Content-Type: application/json'")  # fmt: skip
        rows, many = service.parser.parse(await service.read_body(request))
        reply = await score_rows(request, rows, explain, t0)
        if reply.error is not None:
            headers = service.retry_headers if reply.error.status == 503 else None
            return _json(reply.error.status, {"error": reply.error.kind,
                                              "message": reply.error.message},
                         ours, headers)  # fmt: skip
        if reply.rejected:
            return _json(422, rejected_body(request_id, reply.rejected, many), ours)
        return _json(200, predict_response(request_id, c.name, reply.scores, many), ours)

    @api.get("/v1/models", tags=["models"], summary="Versions, aliases and what is served")
    async def models() -> dict[str, Any]:
        serving = await service.info()
        body: dict[str, Any] = {"contract": c.name, "model": str(c.model), "serving": serving}
        if service.registry is not None:
            manifest = await service.manifest()
            body["registry"] = {
                "name": manifest.name,
                "aliases": dict(manifest.aliases),
                "versions": [
                    {"version": v.version, "registered_at": v.registered_at.isoformat(),
                     "metrics": dict(v.metrics),
                     "aliases": sorted(a for a, n in manifest.aliases.items() if n == v.version)}
                    for v in manifest.versions
                ],
            }  # fmt: skip
        return body

    @api.get("/v1/stats", tags=["ops"], summary="This replica's counters")
    async def stats() -> dict[str, Any]:
        """This replica process's share of the metrics (Prometheus has every replica's)."""
        by_status = {k[1]: int(v) for k, v in sorted(metrics.ONLINE_REQUESTS.series().items())
                     if k[0] == c.name}  # fmt: skip
        errors = {k[1]: int(v) for k, v in sorted(metrics.ONLINE_ERRORS.series().items())
                  if k[0] == c.name}  # fmt: skip
        body: dict[str, Any] = {
            "requests": sum(by_status.values()), "by_status": by_status, "errors": errors,
            "predictions": int(metrics.ROWS_SCORED.value(path="online", contract=c.name)),
            "quarantined": int(metrics.ROWS_QUARANTINED.value(path="online", contract=c.name)),
        }  # fmt: skip
        if service.prediction_log is not None:
            body["prediction_log"] = service.prediction_log.stats()
        return body

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version,
                                 description=api.description, routes=api.routes)  # fmt: skip
            comps = schema.setdefault("components", {})
            comps.setdefault("schemas", {}).update(service.parser.openapi_body()["components"])
            comps["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            schema["security"] = [{"bearer": []}, {"apiKey": []}]
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    add_oip_routes(api, service, score_rows)
    if service.alerts is not None:
        add_review_pages(api, service.alerts, c.name)
    docs = {"/docs", "/openapi.json", "/docs/oauth2-redirect"} if service.docs_public else set()
    public = {HEALTH_PATH, READY_PATH, *OIP_PUBLIC_PATHS} | docs
    api.add_middleware(AuthMiddleware, keyring=service.keyring, public_paths=public,
                       browser_prefix=REVIEW_PATH)  # fmt: skip
    api.add_middleware(MetricsMiddleware, contract=c.name)  # outermost: sees the 401s too
    return api


# Health and readiness, both protocols': not counted (a load balancer's polling). The
# protocol's server metadata (/v2), public too, is an answer like any other.
_PROBES = frozenset({HEALTH_PATH, READY_PATH, *(p for p in OIP_PUBLIC_PATHS if "/health/" in p)})


class MetricsMiddleware:
    """ASGI middleware: every answer but the probes' (health, ready) counted by status code
    and error class, and its latency observed (``sluice.metrics``, ``sluice_online_*``).
    A request cancelled before its answer started (the client closed the connection, which
    Serve turns into a cancellation) counts as 499, ``cancelled``: not the server's failure."""

    def __init__(self, app: Any, contract: str) -> None:
        self.app = app
        self.contract = contract

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or route_path(scope) in _PROBES:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status: int | None = None  # until the answer starts

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            if status is None:  # no answer started: nobody is left to receive one
                status = metrics.CLIENT_CLOSED
            raise
        finally:
            if status is None:  # an exception that escaped every handler: a 500
                status = 500
            metrics.ONLINE_REQUEST_SECONDS.observe(time.perf_counter() - t0,
                                                   contract=self.contract)  # fmt: skip
            metrics.ONLINE_REQUESTS.inc(contract=self.contract, code=str(status))
            # The app names a class its status cannot tell (a 503 for an unreachable store).
            kind = scope.get("state", {}).get("error_class") or metrics.error_class(status)
            if kind is not None:
                metrics.ONLINE_ERRORS.inc(contract=self.contract, error_class=kind)
