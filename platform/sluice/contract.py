"""The scoring contract: one YAML file that every path (batch, stream, online) obeys.

``load_contract("fraud")`` parses ``configs/contracts/fraud.yaml`` once into a
frozen ``Contract``: the input schema (column -> Arrow type string), the key,
entity, event-time and label columns, the expectation suite, the features, the
model reference (``fraud@champion``), the decision policy (``sluice.decisions``), the
outputs, the device, the drift thresholds (``sluice drift``) and the promotion gate
(``sluice.gate``). Everything a
contract names is checked at load — columns, feature kinds, the suite file — and
a problem fails with ``ConfigError`` naming the file, the field and the bad name.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sluice.config import CQL_NAME_PATTERN, REPO_ROOT, ConsistencyLevel, CqlName, read_yaml_mapping
from sluice.decisions import DecisionPolicy
from sluice.errors import ConfigError
from sluice.features import CategoryIndex, DayOfWeek, EqualityFlag, FeatureSpec, HourOfDay
from sluice.gate import GateSpec

__all__ = [
    "CONTRACTS_DIR",
    "FEATURE_EVENTS_SUFFIX",
    "PREDICTION_COLUMNS",
    "SCORED_COLUMNS",
    "Contract",
    "Device",
    "DriftSpec",
    "ModelRef",
    "OutputSpec",
    "contract_path",
    "load_contract",
    "parse_arrow_type",
]

CONTRACTS_DIR = REPO_ROOT / "configs" / "contracts"

_SIMPLE_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "bool": pa.bool_(),
    "binary": pa.binary(),
    "date32[day]": pa.date32(),
    **{
        name: getattr(pa, name)()
        for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    },
    "float": pa.float32(),
    "double": pa.float64(),
    "halffloat": pa.float16(),
}
_TIMESTAMP = re.compile(r"^timestamp\[(s|ms|us|ns)(?:, tz=([A-Za-z0-9_/+:-]+))?\]$")
_NAME = CQL_NAME_PATTERN
FEATURE_EVENTS_SUFFIX = "_feature_events"
"""The store keeps a contract's entity events in table ``<name>_feature_events``."""
PREDICTION_COLUMNS = ("score", "model_version", "decision", "policy_id", "features",
                      "scored_at")  # fmt: skip
"""The predictions table's own columns beside the contract's key, entity and event time
(``sluice.store.predictions_table``): those three must not take one of these names."""
SCORED_COLUMNS = ("key", "entity", "event_time", "score", "model_version", "decision", "policy_id",
                  "reasons")  # fmt: skip
"""The columns every scored table starts with (``sluice.scoring.scored_schema``); the
model's features follow them."""


def parse_arrow_type(text: str) -> pa.DataType:
    """An Arrow type from its ``str()`` form: ``"double"``, ``"timestamp[us, tz=UTC]"``...

    Only the flat types a scoring input needs are accepted; ``str(parse(s)) == s``.
    """
    if text in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[text]
    m = _TIMESTAMP.match(text)
    if m:
        return pa.timestamp(m.group(1), tz=m.group(2))
    raise ValueError(
        f"unknown Arrow type {text!r}; use one of {', '.join(_SIMPLE_TYPES)} "
        "or timestamp[<unit>, tz=<zone>]"
    )


class Device(StrEnum):
    """Where the model runs: ``auto`` picks CUDA when a GPU is visible, else CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Frozen):
    """A registry reference: ``name@alias`` (``fraud@champion``) or ``name/version``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    alias: str | None = Field(None, pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    version: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _parse_string(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        if "@" in data:
            name, alias = data.split("@", 1)
            return {"name": name, "alias": alias}
        if "/" in data:
            name, version = data.split("/", 1)
            if not version.isdigit():
                raise ValueError(f"model {data!r}: the version after '/' must be a number")
            return {"name": name, "version": int(version)}
        raise ValueError(f"model {data!r}: expected name@alias (fraud@champion) or name/version")

    @model_validator(mode="after")
    def _alias_xor_version(self) -> ModelRef:
        if (self.alias is None) == (self.version is None):
            raise ValueError(f"model {self.name!r}: give exactly one of an alias or a version")
        return self

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


class OutputSpec(_Frozen):
    """Where scored rows go. The row key is the contract's ``key_column``."""

    predictions_table: CqlName = Field(description="Cassandra predictions table.")
    quarantine_table: CqlName = Field("quarantine", description="Rejected rows.")
    ttl_s: int = Field(ge=0, le=630_720_000, description="Row TTL in seconds; 0 keeps rows.")
    consistency: ConsistencyLevel = Field(
        description="Write level of the predictions and quarantine rows (feature events use "
        "the platform's write_consistency, checked against its read_consistency)."
    )


class DriftSpec(_Frozen):
    """When ``sluice drift`` calls the recent inputs drifted from the model's training data."""

    psi_threshold: float = Field(
        0.2, gt=0, description="A feature whose PSI is above this has drifted (exit status 3)."
    )
    ks_threshold: float | None = Field(
        0.1, gt=0, le=1,
        description="A feature whose binned KS is above this is flagged 'warn' (not judged: "
        "PSI decides); null shows KS without flagging.",
    )  # fmt: skip
    min_rows: int = Field(
        500, ge=1, description="Fewer recent rows than this give no verdict (too noisy)."
    )


class Contract(_Frozen):
    """A parsed scoring contract. Build it with ``load_contract``.

    ``arrow_schema`` is the full input schema (label included, for training);
    ``scoring_schema`` leaves the label out (what a scoring request must carry).
    """

    name: str = Field(
        pattern=rf"^[a-z][a-z0-9_]{{0,{47 - len(FEATURE_EVENTS_SUFFIX)}}}$",
        description="Contract name; with the suffix it names the feature events table, which "
        "must fit Cassandra's 48 characters.",
    )
    description: str = ""
    input_schema: dict[CqlName, str] = Field(
        min_length=1, description="Column -> Arrow type; the names become Cassandra columns."
    )
    key_column: str
    entity_column: str
    event_time_column: str
    label_column: str | None = None
    suite_path: Path = Field(description="GX suite JSON; relative paths are under the repo root.")
    features: FeatureSpec
    model: ModelRef
    decision: DecisionPolicy | None = Field(
        None, description="Score thresholds to actions (approve/review/block); without it "
        "rows are scored and carry no decision.",
    )  # fmt: skip
    output: OutputSpec
    device: Device = Device.AUTO
    drift: DriftSpec = DriftSpec()
    gate: GateSpec | None = Field(
        None, description="Promotion checks a version must pass to become champion "
        "(sluice.gate); without it, training promotes on holdout AUC alone.",
    )  # fmt: skip
    trainer: str = Field(
        "pipelines.trainers:fit_mlp_candidate",
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
        description="module:function that trains a candidate model (`pipelines.train` and "
        "`sluice drift --retrain` call it; it returns a `pipelines.trainers.Candidate`).",
    )

    @field_validator("input_schema")
    @classmethod
    def _types_parse(cls, schema: dict[str, str]) -> dict[str, str]:
        for column, text in schema.items():
            try:
                parse_arrow_type(text)
            except ValueError as exc:
                raise ValueError(f"column {column!r}: {exc}") from None
        return schema

    @model_validator(mode="before")
    @classmethod
    def _aggregates_default_to_contract_columns(cls, data: Any) -> Any:
        # The store keys events by the contract's entity, time and key columns, so
        # the aggregates section may leave them out; they are filled in here.
        if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
            return data
        agg = data["features"].get("aggregates")
        if not isinstance(agg, dict):
            return data
        filled = dict(agg)
        for col in ("entity_column", "event_time_column", "key_column"):
            if data.get(col) is not None:
                filled.setdefault(col, data[col])
        return {**data, "features": {**data["features"], "aggregates": filled}}

    @model_validator(mode="after")
    def _names_exist(self) -> Contract:
        types = self.arrow_schema
        problems = [
            f"{field}: column {col!r} is not in input_schema"
            for field, col in (
                ("key_column", self.key_column),
                ("entity_column", self.entity_column),
                ("event_time_column", self.event_time_column),
                ("label_column", self.label_column),
            )
            if col is not None and col not in types.names
        ]
        problems.extend(
            f"{field}: {col!r} is a column the predictions table adds itself "
            f"({', '.join(PREDICTION_COLUMNS)}); rename the input column"
            for field, col in (
                ("key_column", self.key_column),
                ("entity_column", self.entity_column),
                ("event_time_column", self.event_time_column),
            )
            if col in PREDICTION_COLUMNS
        )
        if self.event_time_column in types.names and not pa.types.is_timestamp(
            types.field(self.event_time_column).type
        ):
            problems.append(f"event_time_column: {self.event_time_column!r} is not a timestamp")
        problems.extend(_feature_problems(self.features, types, self.label_column))
        if self.gate is not None:
            problems.extend(self.gate.problems(types, self.label_column, self.alert_threshold))
        agg = self.features.aggregates
        if agg is not None:
            for col in ("entity_column", "event_time_column", "key_column"):
                if getattr(agg, col) != getattr(self, col):
                    problems.append(
                        f"features.aggregates.{col}: {getattr(agg, col)!r} differs from "
                        f"{col} {getattr(self, col)!r}; leave it out to use the contract's"
                    )
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c, parse_arrow_type(t)) for c, t in self.input_schema.items()])

    @property
    def scoring_schema(self) -> pa.Schema:
        schema = self.arrow_schema
        if self.label_column is None:
            return schema
        return schema.remove(schema.get_field_index(self.label_column))

    @property
    def alert_threshold(self) -> float | None:
        """The lowest score the decision policy alerts at (None without an alerting rule)."""
        return None if self.decision is None else self.decision.alert_threshold

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.features.feature_names

    @property
    def resolved_suite_path(self) -> Path:
        return self.suite_path if self.suite_path.is_absolute() else REPO_ROOT / self.suite_path


def _feature_problems(spec: FeatureSpec, schema: pa.Schema, label: str | None) -> list[str]:
    """Every column a feature names must exist, have a fitting type, and not be the label."""
    problems = []

    def check(where: str, column: str, kind: str | None = None) -> None:
        if column not in schema.names:
            problems.append(f"{where}: column {column!r} is not in input_schema")
            return
        if column == label:
            problems.append(f"{where}: {column!r} is the label; a feature must not read it")
        typ = schema.field(column).type
        ok = {
            "numeric": pa.types.is_integer(typ)
            or pa.types.is_floating(typ)
            or pa.types.is_boolean(typ),
            "string": pa.types.is_string(typ) or pa.types.is_large_string(typ),
            "timestamp": pa.types.is_timestamp(typ),
            None: True,
        }[kind]
        if not ok:
            problems.append(f"{where}: column {column!r} has type {typ}; it needs a {kind} column")

    for i, col in enumerate(spec.passthrough):
        check(f"features.passthrough[{i}]", col, "numeric")
    for i, t in enumerate(spec.transforms):
        where = f"features.transforms[{i}] ({t.name})"
        if isinstance(t, EqualityFlag):
            for col in t.columns:
                check(where, col)
            kinds = {_kind(schema.field(c).type) for c in t.columns if c in schema.names}
            if len(kinds) > 1:
                a, b = t.columns
                problems.append(
                    f"{where}: columns {a!r} ({schema.field(a).type}) and {b!r} "
                    f"({schema.field(b).type}) cannot be compared: {t.op} needs two columns "
                    "of one kind (both text, both numbers, both times)"
                )
        elif isinstance(t, CategoryIndex):
            check(where, t.column, "string")
        elif isinstance(t, HourOfDay | DayOfWeek):
            check(where, t.column, "timestamp")
        else:
            check(where, t.column, "numeric")
    if spec.aggregates is not None:
        a = spec.aggregates
        check("features.aggregates.entity_column", a.entity_column, "string")
        check("features.aggregates.event_time_column", a.event_time_column, "timestamp")
        check("features.aggregates.key_column", a.key_column, "string")
        check("features.aggregates.value_column", a.value_column, "numeric")
    return problems


def _kind(typ: pa.DataType) -> str:
    """What an equality flag compares a column as: Arrow compares within a kind."""
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "text"
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        return "number"
    if pa.types.is_timestamp(typ):
        return "time"
    return str(typ)


def contract_path(name_or_path: str | Path) -> Path:
    """``"fraud"`` -> ``<repo>/configs/contracts/fraud.yaml``; a path is returned as is."""
    text = str(name_or_path)
    if re.fullmatch(_NAME, text):
        return CONTRACTS_DIR / f"{text}.yaml"
    return Path(name_or_path)


def _loc(parts: tuple[int | str, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _format(exc: ValidationError, source: Path) -> str:
    lines = [f"{source}: invalid contract"]
    for err in exc.errors():
        loc = _loc(err["loc"])
        where = f"{loc}: " if loc else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key; remove it or fix its name")
        elif err["type"] in ("value_error", "assertion_error"):
            lines.append(f"  {where}{err['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {where}got {err.get('input')!r}; {err['msg']}")
    return "\n".join(lines)


def load_contract(name_or_path: str | Path) -> Contract:
    """Parse and check a contract: a name under ``configs/contracts/`` or a YAML path.

    Raises ``ConfigError`` naming the file and the bad field or name for: a
    missing file, bad YAML, an unknown key, a column that is not in the input
    schema, an unknown feature op or aggregate, or a suite file that does not
    exist (when ``sluice.validation`` is importable, the suite is also loaded so an
    unsupported expectation fails here, at load).
    """
    path = contract_path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such contract file")
    raw = read_yaml_mapping(path)
    try:
        contract = Contract.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format(exc, path)) from exc
    suite = contract.resolved_suite_path
    if not suite.is_file():
        raise ConfigError(f"{path}: suite_path: suite file {str(suite)!r} does not exist")
    _load_suite_if_available(path, suite)
    return contract


def _load_suite_if_available(path: Path, suite: Path) -> None:
    # The validation layer is a sibling package; when it is importable the suite
    # is parsed here so an unsupported expectation fails at contract load. Its own
    # tests cover its import; here its absence only skips the early parse.
    try:
        from sluice.validation import load_suite
    except ImportError:
        return
    try:
        load_suite(suite)
    except ConfigError as exc:
        raise type(exc)(f"{path}: suite_path {str(suite)!r}: {exc}") from exc
