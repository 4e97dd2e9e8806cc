"""The Open Inference Protocol (KServe v2, REST): the same scoring behind a second protocol.

Routes (the model is the contract, e.g. ``fraud``; all but the health probes need a key)::

    GET  /v2                                   server metadata (no key)
    GET  /v2/health/live, /v2/health/ready     200 or 400 (ready: the model is loaded and
                                               Cassandra answers; no key)
    GET  /v2/models/{model}[/versions/{v}]     inputs (one tensor per contract column) and
                                               outputs, with datatypes and shapes
    GET  /v2/models/{model}[/versions/{v}]/ready
    POST /v2/models/{model}[/versions/{v}]/infer   (a version: only the champion, and only
                                               while no canary splits the rows)

An inference request carries one 1-D tensor (shape ``[n]`` or ``[n, 1]``) per input column:
``BYTES`` for strings and for timestamps (ISO-8601 with a zone), ``FP64``/``FP32`` and
``INT8``..``INT64`` as the contract's Arrow types say; row ``i`` is element ``i`` of every
tensor. The tensors become rows and go through the very path of ``POST /v1/{contract}/predict``
(``api.create_api``'s ``score_rows``): body and row limits, the row schema, validation and
quarantine, features, model, prediction log, alerts and metrics. Outputs: ``score`` (FP64),
``decision`` (BYTES, when the contract has a decision policy) and ``model_version`` (BYTES).
Errors are ``{"error": "..."}`` with 400 (a bad request or rows the contract refused: they
are quarantined), 401, 404 (unknown model or version), 413, 503 (with Retry-After) or 504.
JSON tensors only: the binary tensor extension is refused with 400.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_apps.scoring.schemas import REQUEST_ID, Problem, RequestRejected, ScoreReply
from serve_apps.scoring.service import ScoringService
from sluice.contract import Contract

__all__ = ["OIP_PREFIX", "OIP_PUBLIC_PATHS", "add_oip_routes", "input_datatype"]

OIP_PREFIX = "/v2"
OIP_PUBLIC_PATHS = ("/v2", "/v2/health/live", "/v2/health/ready")
ScoreRows = Callable[[Request, list[dict[str, Any]], bool, float], Awaitable[ScoreReply]]

_INTS = {pa.int8(): "INT8", pa.int16(): "INT16", pa.int32(): "INT32", pa.int64(): "INT64",
         pa.uint8(): "UINT8", pa.uint16(): "UINT16", pa.uint32(): "UINT32",
         pa.uint64(): "UINT64"}  # fmt: skip


def input_datatype(typ: pa.DataType) -> str:
    """The v2 datatype of a contract column of Arrow type `typ`."""
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_timestamp(typ):
        return "BYTES"
    if pa.types.is_boolean(typ):
        return "BOOL"
    if typ in _INTS:
        return _INTS[typ]
    if pa.types.is_float64(typ):
        return "FP64"
    if pa.types.is_float32(typ) or pa.types.is_float16(typ):
        return "FP32"
    raise ValueError(f"Arrow type {typ} has no Open Inference Protocol datatype")


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class _Requested(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    parameters: dict[str, Any] | None = None


class _InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[_Tensor] = Field(min_length=1)
    outputs: list[_Requested] | None = None


def _flat(data: list[Any]) -> list[Any] | None:
    """A tensor's values: ``data`` as [n] values or [n] one-value lists; None for any other
    nesting (a row of two values, or lists mixed with values)."""
    if not any(isinstance(x, list) for x in data):
        return data
    if all(isinstance(x, list) and len(x) == 1 for x in data):
        return [x[0] for x in data]
    return None


def _rows(request: _InferenceRequest, contract: Contract) -> list[dict[str, Any]]:
    """The request's tensors as rows (column -> value), each tensor checked against the
    contract: a known column, given once, of its datatype, shaped [n] or [n, 1]."""
    types = {f.name: input_datatype(f.type) for f in contract.scoring_schema}
    problems, columns, n = [], {}, None
    for i, t in enumerate(request.inputs):
        where = f"inputs[{i}] ({t.name})"
        values = _flat(t.data)
        if t.name not in types:
            problems.append(Problem(where, "unknown_input", f"not an input of model "
                                    f"{contract.name!r}; inputs: {', '.join(types)}"))  # fmt: skip
        elif t.name in columns:
            problems.append(Problem(where, "duplicate_input", "given twice"))
        elif t.datatype != types[t.name]:
            problems.append(Problem(where, "datatype", f"must be {types[t.name]}", t.datatype))
        elif values is None:
            problems.append(Problem(where, "shape", "data must be [n] values or [n] lists of "
                                    "one value each (a [n, 1] tensor)"))  # fmt: skip
        elif len(t.shape) == 2 and t.shape[1] != 1 or len(values) != t.shape[0]:
            problems.append(Problem(where, "shape", f"shape {t.shape} must be [n] or [n, 1] "
                                    f"and hold its {len(values)} values"))  # fmt: skip
        elif n is not None and t.shape[0] != n:
            problems.append(Problem(where, "shape", f"has {t.shape[0]} rows, other inputs {n}"))
        else:
            columns[t.name], n = values, t.shape[0]
    if problems:
        raise RequestRejected(400, "the inference request does not match the model", problems)
    return [{name: values[r] for name, values in columns.items()} for r in range(n or 0)]


def _outputs(reply: ScoreReply, contract: Contract) -> list[dict[str, Any]]:
    n = len(reply.scores)
    out = [{"name": "score", "datatype": "FP64", "shape": [n],
            "data": [s.score for s in reply.scores]}]  # fmt: skip
    if contract.decision is not None:
        out.append({"name": "decision", "datatype": "BYTES", "shape": [n],
                    "data": [s.decision for s in reply.scores]})  # fmt: skip
    out.append({"name": "model_version", "datatype": "BYTES", "shape": [n],
                "data": [s.model_version for s in reply.scores]})  # fmt: skip
    return out


def _rejected_message(reply: ScoreReply) -> str:
    problems = [f"row {r.index} ({r.key}): {x.get('expectation')} on {x.get('column')} "
                f"(value {x.get('value')})" for r in reply.rejected for x in r.reasons]  # fmt: skip
    return (f"{len(reply.rejected)} row(s) broke the contract's expectations and were "
            f"quarantined; nothing was scored: " + "; ".join(problems))  # fmt: skip


def add_oip_routes(api: FastAPI, service: ScoringService, score_rows: ScoreRows) -> None:
    """Mount the ``/v2`` routes on the ingress app; `score_rows` is ``/v1``'s scoring path."""
    c = service.contract
    outputs = [{"name": "score", "datatype": "FP64", "shape": [-1]}]
    if c.decision is not None:
        outputs.append({"name": "decision", "datatype": "BYTES", "shape": [-1]})
    outputs.append({"name": "model_version", "datatype": "BYTES", "shape": [-1]})
    output_names = {o["name"] for o in outputs}

    def _err(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def served(info: dict[str, Any]) -> list[str]:
        """Versions this endpoint scores with (champion, and challenger when it has one)."""
        refs = [info.get("champion"), info.get("challenger")]
        return [str(r).rpartition("/")[2] for r in refs if r]

    async def lookup(
        model: str, version: str | None, need_info: bool = False
    ) -> tuple[JSONResponse | None, dict[str, Any]]:
        """(an error for a model or version not served here, or None; the model's info,
        asked for once, only when a version is named or `need_info`)."""
        if model != c.name:
            return _err(404, f"model {model!r} is not served here; served: {c.name}"), {}
        info = await service.info() if version is not None or need_info else {}
        if version is not None and version not in (have := served(info)):
            return _err(404, f"version {version!r} of {model!r} is not served here; served: "
                             f"{', '.join(have)}"), info  # fmt: skip
        return None, info

    async def ready_answer() -> Response:
        checks = await service.readiness()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 400)

    @api.get("/v2", tags=["open inference protocol"], summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "sluice", "version": api.version, "extensions": []}

    @api.get("/v2/health/live", tags=["open inference protocol"], summary="Liveness (no key)",
             openapi_extra={"security": []})  # fmt: skip
    async def live() -> dict[str, Any]:
        return {"live": True}

    @api.get("/v2/health/ready", tags=["open inference protocol"],
             summary="Readiness: the model is loaded and Cassandra answers (no key; 400 if "
                     "not)", openapi_extra={"security": []})  # fmt: skip
    async def server_ready() -> Response:
        return await ready_answer()

    @api.get("/v2/models/{model}", tags=["open inference protocol"], summary="Model metadata")
    @api.get("/v2/models/{model}/versions/{version}", tags=["open inference protocol"],
             summary="Model metadata of one version")  # fmt: skip
    async def metadata(model: str, version: str | None = None) -> Response:
        missing, info = await lookup(model, version, need_info=True)
        if missing is not None:
            return missing
        inputs = [{"name": f.name, "datatype": input_datatype(f.type), "shape": [-1]}
                  for f in c.scoring_schema]  # fmt: skip
        return JSONResponse({"name": c.name, "versions": served(info), "platform": "sluice",
                             "inputs": inputs, "outputs": outputs})  # fmt: skip

    @api.get("/v2/models/{model}/ready", tags=["open inference protocol"])
    @api.get("/v2/models/{model}/versions/{version}/ready", tags=["open inference protocol"])
    async def model_ready(model: str, version: str | None = None) -> Response:
        missing, _ = await lookup(model, version)
        return missing if missing is not None else await ready_answer()

    @api.post("/v2/models/{model}/infer", tags=["open inference protocol"], summary="Score")
    @api.post("/v2/models/{model}/versions/{version}/infer", tags=["open inference protocol"],
              summary="Score (the version must be one this endpoint serves)")  # fmt: skip
    async def infer(model: str, request: Request, version: str | None = None) -> Response:
        t0 = time.perf_counter()
        missing, info = await lookup(model, version)
        if missing is not None:
            return missing
        if version is not None and info.get("challenger"):
            return _err(400, f"version-pinned inference is not available while the canary "
                             f"splits rows between {info['champion']} and {info['challenger']}: "
                             f"call /v2/models/{c.name}/infer (each answer names its "
                             "model_version)")  # fmt: skip
        body = await service.read_body(request)  # read whole, even to refuse it
        if "inference-header-content-length" in request.headers:
            return _err(400, "binary tensor data is not supported: send JSON tensors "
                             "(tritonclient: binary_data=False on inputs and outputs)")  # fmt: skip
        try:
            parsed = _InferenceRequest.model_validate_json(body)
        except ValidationError as exc:
            where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return _err(400, f"not an inference request: {where}")
        # The client's id names the request in the prediction log, as X-Request-ID on /v1.
        given = parsed.id
        request.state.request_id = given if given and REQUEST_ID.match(given) else uuid.uuid4().hex
        wanted = [o.name for o in parsed.outputs or ()]
        if unknown_outputs := [o for o in wanted if o not in output_names]:
            return _err(400, f"unknown output(s) {unknown_outputs}; outputs: "
                             f"{', '.join(sorted(output_names))}")  # fmt: skip
        # The rows take /v1's parser from here: the same schema, rules and row limit.
        try:
            rows, _ = service.parser.parse(json.dumps(_rows(parsed, c)).encode())
        except RequestRejected as exc:  # the protocol answers a bad request with 400
            raise RequestRejected(413 if exc.status == 413 else 400, exc.message,
                                  exc.problems) from None  # fmt: skip
        reply = await score_rows(request, rows, False, t0)
        if reply.error is not None:
            headers = service.retry_headers if reply.error.status == 503 else None
            return _err(reply.error.status, reply.error.message, headers)
        if reply.rejected:
            return _err(400, _rejected_message(reply))
        tensors = [o for o in _outputs(reply, c) if not wanted or o["name"] in wanted]
        versions = {s.model_version for s in reply.scores}
        body: dict[str, Any] = {"model_name": c.name, "id": given or request.state.request_id,
                                "outputs": tensors}  # fmt: skip
        if len(versions) == 1:
            body["model_version"] = versions.pop().rpartition("/")[2]
        return JSONResponse(body)
