"""Request and response shapes of the scoring endpoint, generated from the contract.

``row_model(contract)`` turns the contract's scoring schema (its input schema less the
label) into a pydantic model: one field per column, the JSON type its Arrow type needs
(strict: no number for a string, no string for a number), integer bounds of the Arrow
width, finite floats only (``NaN``/``Infinity`` are refused), times with a time zone,
unknown fields refused. A column the suite says must exist and not be null is required.
The model checks the *shape* of a row; the contract's expectations (regexes, value sets,
ranges) are checked by the ``Scorer``'s compiled engine, which quarantines failing rows.

``RequestParser.parse(body)`` accepts one row (a JSON object) or a JSON array of up to
``max_rows`` rows and raises ``RequestRejected`` with the status (413 or 422) and one
problem per field: where (``rows[3].amount``), the rule and the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any

import pyarrow as pa
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)

from sluice.contract import Contract
from sluice.errors import ConfigError
from sluice.validation import load_suite

__all__ = [
    "ErrorReply",
    "PredictResponse",
    "Prediction",
    "Problem",
    "RejectedRow",
    "RequestParser",
    "RequestRejected",
    "RowScore",
    "ScoreReply",
    "required_columns",
    "row_model",
]

_INT_BOUNDS = {
    pa.int8(): (-(2**7), 2**7 - 1),
    pa.int16(): (-(2**15), 2**15 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
    pa.uint8(): (0, 2**8 - 1),
    pa.uint16(): (0, 2**16 - 1),
    pa.uint32(): (0, 2**32 - 1),
    pa.uint64(): (0, 2**64 - 1),
}
_FLOAT_MAX = {pa.float16(): 65504.0, pa.float32(): 3.4028234663852886e38}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
"""A request id a client may choose (X-Request-ID on /v1, the inference request's id on /v2)."""


def _stdlib_tz(value: datetime) -> datetime:
    """The same instant and offset with a ``datetime.timezone``: pydantic's own tzinfo
    makes pyarrow look for pytz on every conversion (~0.1 ms a request, measured)."""
    return value.replace(tzinfo=timezone(value.utcoffset()))  # type: ignore[arg-type]


def _python_type(column: str, typ: pa.DataType) -> Any:
    """The strict pydantic type a JSON value of Arrow type ``typ`` must have."""
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return str
    if pa.types.is_boolean(typ):
        return bool
    if typ in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[typ]
        return Annotated[int, Field(ge=lo, le=hi)]
    if pa.types.is_floating(typ):
        top = _FLOAT_MAX.get(typ)
        bounds = {"ge": -top, "le": top} if top else {}
        return Annotated[float, Field(allow_inf_nan=False, **bounds)]
    if pa.types.is_timestamp(typ):
        if typ.tz is None:
            raise ConfigError(f"column {column!r}: timestamps without a time zone are ambiguous")
        return Annotated[AwareDatetime, AfterValidator(_stdlib_tz)]
    raise ConfigError(f"column {column!r}: type {typ} cannot be sent in a JSON request")


def required_columns(contract: Contract) -> frozenset[str]:
    """Columns a request must carry: the suite requires them to exist and not be null.

    The key, entity and event-time columns are always required: a prediction needs them.
    """
    suite = load_suite(contract.resolved_suite_path)
    needed = {contract.key_column, contract.entity_column, contract.event_time_column}
    for exp in suite.expectations:
        mostly = exp.kwargs.get("mostly", 1.0)
        unconditional = exp.condition is None and (mostly is None or mostly >= 1.0)
        if exp.type == "expect_column_values_to_not_be_null" and unconditional and exp.column:
            needed.add(exp.column)
    return frozenset(c for c in needed if c in contract.scoring_schema.names)


def row_model(contract: Contract) -> type[BaseModel]:
    """A pydantic model of one request row of ``contract`` (strict, unknown keys refused)."""
    required = required_columns(contract)
    fields: dict[str, Any] = {}
    for f in contract.scoring_schema:
        typ = _python_type(f.name, f.type)
        desc = f"Arrow type {f.type}"
        if f.name in required:
            fields[f.name] = (typ, Field(..., description=desc))
        else:
            fields[f.name] = (typ | None, Field(None, description=desc))
    title = "".join(p.capitalize() for p in contract.name.split("_")) + "Row"
    return create_model(
        title,
        __config__=ConfigDict(extra="forbid", strict=True, frozen=True, title=title),
        __doc__=f"One input row of contract {contract.name!r}.",
        **fields,
    )


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where, the rule it broke, and the value."""

    loc: str
    rule: str
    message: str
    value: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"loc": self.loc, "rule": self.rule, "message": self.message, "value": self.value}


class RequestRejected(Exception):
    """A client mistake: answered with ``status`` and the problems, never a 500."""

    def __init__(self, status: int, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = list(problems)


def _show(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _loc(parts: Sequence[int | str], many: bool) -> str:
    text = "rows" if many else "row"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _problems(exc: ValidationError, many: bool) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        value = None if err["type"] == "missing" else _show(err.get("input"))
        out.append(Problem(_loc(err["loc"], many), err["type"], err["msg"], value))
    return out


class RequestParser:
    """Parses request bodies into validated rows (plain dicts) for one contract."""

    def __init__(self, contract: Contract, max_rows: int) -> None:
        if max_rows < 1:
            raise ConfigError(f"max_rows must be >= 1, got {max_rows}")
        self.contract = contract
        self.max_rows = max_rows
        self.model = row_model(contract)
        self._one = TypeAdapter(self.model)
        self._many = TypeAdapter(
            Annotated[list[self.model], Field(min_length=1, max_length=max_rows)]  # type: ignore[valid-type]
        )

    def parse(self, body: bytes) -> tuple[list[dict[str, Any]], bool]:
        """(rows, many): the rows as dicts in request order; many=False for a single object."""
        start = body.lstrip()[:1]
        if start == b"{":
            many, adapter = False, self._one
        elif start == b"[":
            many, adapter = True, self._many
        else:
            raise RequestRejected(
                422, "the body must be a JSON object (one row) or an array of rows",
                [Problem("body", "json_type", "expected a JSON object or array",
                         _show(body[:40].decode("utf-8", "replace")) if body else "''")],
            )  # fmt: skip
        try:
            parsed = adapter.validate_json(body)
        except ValidationError as exc:
            problems = _problems(exc, many)
            if many and any(p.rule == "too_long" and p.loc == "rows" for p in problems):
                raise RequestRejected(
                    413, f"too many rows: at most {self.max_rows} per request",
                    [Problem("rows", "max_rows", f"at most {self.max_rows} rows per request")],
                ) from None  # fmt: skip
            raise RequestRejected(
                422, "the request does not match the contract", problems
            ) from None
        rows = parsed if many else [parsed]
        return [r.model_dump() for r in rows], many

    def openapi_body(self) -> dict[str, Any]:
        """The request body's JSON schema (one row, or an array of rows)."""
        row = self.model.model_json_schema(ref_template="#/components/schemas/{model}")
        name = self.model.__name__
        ref = {"$ref": f"#/components/schemas/{name}"}
        return {
            "schema": {"anyOf": [ref, {"type": "array", "items": ref, "minItems": 1,
                                       "maxItems": self.max_rows}]},
            "components": {name: row},
        }  # fmt: skip


# -- what the model deployment answers (plain dataclasses: they cross Ray's object store)


@dataclass(frozen=True)
class RowScore:
    key: str
    score: float
    model_version: str
    features: tuple[float, ...]
    decision: str | None = None  # the contract's decision policy (None: it has none)
    policy_id: str | None = None
    reasons: list[dict[str, Any]] | None = None  # top attributions, when asked (explain)
    role: str = "champion"  # champion or challenger (the canary), or shadow


@dataclass(frozen=True)
class RejectedRow:
    index: int
    key: str | None
    reasons: list[dict[str, Any]]


@dataclass(frozen=True)
class ErrorReply:
    """A server-side failure the ingress answers with ``status`` (503 for a store outage)."""

    status: int
    kind: str
    message: str


@dataclass(frozen=True)
class ScoreReply:
    """One request's outcome: scores of its valid rows (in order) and its rejected rows.

    ``quarantine`` holds the rejected rows in the quarantine table's shape, and
    ``alerts`` the alert rows of its review and block decisions (``sluice.store.alert_rows``),
    for the ingress to write. ``error`` is set when the request could not be scored at all.
    """

    scores: list[RowScore] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    feature_names: tuple[str, ...] = ()
    quarantine: pa.Table | None = None
    alerts: pa.Table | None = None
    error: ErrorReply | None = None
    shadow_rows: tuple[int, ...] = ()  # indices of the request's rows to score in shadow


# -- HTTP response bodies (documented in the OpenAPI schema) ---------------------------


class Reason(BaseModel):
    """One feature's part in a score (``sluice.models.Explainer``): contributions of a
    row's features sum to its score minus the score of the training medians."""

    model_config = ConfigDict(frozen=True)

    feature: str
    value: float = Field(description="The row's value of the feature.")
    contribution: float = Field(description="Its Shapley contribution to the score.")


class Prediction(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str = Field(description="The row's key (the contract's key column).")
    score: float = Field(description="Model output, a probability in [0, 1].")
    model_version: str = Field(description="The version that scored this row, e.g. fraud/3.")
    decision: str | None = Field(None, description="approve, review or block, from the "
                                 "contract's decision policy (null: the contract has none).")
    policy_id: str | None = Field(None, description="The decision policy's id (dp-<digest>).")
    reasons: list[Reason] | None = Field(None, description="With `?explain=true`: the row's "
                                         "top features by contribution to its score.")


class PredictResponse(BaseModel):
    """A single-row request gets its prediction's fields at the top level too."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    contract: str
    predictions: list[Prediction]
    key: str | None = None
    score: float | None = None
    model_version: str | None = None
    decision: str | None = None
    policy_id: str | None = None
    reasons: list[Reason] | None = None


def predict_response(
    request_id: str, contract: str, scores: Sequence[RowScore], many: bool
) -> dict[str, Any]:
    preds = [{"key": s.key, "score": s.score, "model_version": s.model_version,
              "decision": s.decision, "policy_id": s.policy_id} for s in scores]  # fmt: skip
    for pred, s in zip(preds, scores, strict=True):
        if s.reasons is not None:  # asked for (explain): absent otherwise
            pred["reasons"] = s.reasons
    body: dict[str, Any] = {"request_id": request_id, "contract": contract, "predictions": preds}
    if not many and preds:
        body.update(preds[0])
    return body


def rejected_body(
    request_id: str, rejected: Sequence[RejectedRow], many: bool
) -> dict[str, Any]:
    """The 422 body for rows that broke the contract's expectations (they are quarantined)."""
    problems = []
    for row in rejected:
        where = f"rows[{row.index}]" if many else "row"
        for r in row.reasons:
            column = r.get("column")
            problems.append({
                "loc": f"{where}.{column}" if column else where,
                "rule": r.get("expectation"), "message": "failed the contract's expectation",
                "value": r.get("value"), "key": row.key,
            })  # fmt: skip
    return {
        "request_id": request_id,
        "error": "rows_rejected",
        "message": f"{len(rejected)} row(s) failed the contract's expectations and were "
        "quarantined; nothing in this request was scored",
        "problems": problems,
    }


def as_mapping(reasons_json: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in reasons_json if isinstance(r, Mapping)]
