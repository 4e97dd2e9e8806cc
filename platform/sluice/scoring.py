"""`Scorer`: a contract as one function over an Arrow table, shared by batch, stream and online.

    scorer = Scorer(contract, ModelRegistry.from_config(), store)
    result = scorer.score(table)            # ScoreResult(scored, quarantined)

The path of one row: conform the raw input to the contract's schema
(`sluice.validation.conform`) -> validate it against the contract's suite
(compiled engine or Great Expectations) -> record valid events in the feature
store and compute their features (`sluice.features`) -> predict with the model
the contract names (`sluice.models`) -> decide with the contract's policy
(`sluice.decisions`) -> scored rows. Rows that fail any step
before prediction are quarantined with their raw content and every reason.

Row-level rules of the suite decide validity per row; batch-level ones are
reported by validation but never refuse a row. On top of the suite the Scorer
enforces the contract's key: a key carried by two *different* rows of one
batch refuses all of them (which event is right is unknowable, and only one
prediction per key can be stored); identical copies are a replay and are
scored, identically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.contract import SCORED_COLUMNS, Contract
from sluice.decisions import is_alerting
from sluice.errors import ConfigError
from sluice.features import FeatureStore, compute_features, to_store_events
from sluice.models import Explainer, LoadedModel, ModelRegistry, check_feature_spec, select_device
from sluice.validation import Reason, ValidationReport, conform, load_suite, validate

__all__ = [
    "MALFORMED_EXPECTATION",
    "QUARANTINE_SCHEMA",
    "Engine",
    "ScoreResult",
    "Scorer",
    "Split",
    "reason_counts",
    "scored_schema",
]

log = logging.getLogger(__name__)

_UNIQUE = "expect_column_values_to_be_unique"

Engine = Literal["compiled", "gx"]

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False, metadata={"doc": "the raw row as JSON"}),
        pa.field("reasons", pa.string(), nullable=False, metadata={"doc": "JSON list of reasons"}),
        pa.field("source", pa.string(), nullable=False),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
"""Quarantined rows. ``key`` is the row's key, or ``raw:<sha256 of raw>`` when it has none."""

MALFORMED_EXPECTATION = "malformed_message"
"""The ``expectation`` of a malformed message's quarantine reason (the stream's)."""


def reason_counts(reasons: Iterable[str]) -> Counter[str]:
    """Quarantined rows by reason, from their ``reasons`` JSON: ``<expectation>:<column>``,
    or ``malformed:<kind>`` for a message that was no record at all. A row counts once per
    distinct reason (a row failing two rules counts under both)."""
    out: Counter[str] = Counter()
    for text in reasons:
        found = set()
        for r in json.loads(text):
            if r["expectation"] == MALFORMED_EXPECTATION:
                found.add("malformed:" + str(r["value"]).split(":", 1)[0])
            else:
                found.add(f"{r['expectation']}:{r['column']}")
        out.update(found)
    return out


_SCORED_FIXED = [
    pa.field("key", pa.string(), nullable=False),
    pa.field("entity", pa.string(), nullable=False),
    pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("decision", pa.string()),  # null when the contract has no decision section
    pa.field("policy_id", pa.string()),
    pa.field("reasons", pa.string()),  # JSON top-k attributions of an alerting row, else null
]
assert tuple(f.name for f in _SCORED_FIXED) == SCORED_COLUMNS


def scored_schema(feature_names: Sequence[str]) -> pa.Schema:
    """Scored rows: key, entity, event_time, score, model_version (`fraud/3`), decision and
    policy_id (``sluice.decisions``), reasons (an alerting row's top feature attributions,
    ``sluice.models.Explainer``, as JSON), then the features."""
    return pa.schema(_SCORED_FIXED + [pa.field(n, pa.float32()) for n in feature_names])


@dataclass(frozen=True)
class ScoreResult:
    """Every input row ends in exactly one of the two tables."""

    scored: pa.Table
    quarantined: pa.Table


class Split(NamedTuple):
    """`Scorer.split`'s answer: every input row is in exactly one of ``valid`` and
    ``quarantined``; ``refused`` says which input rows the quarantined ones are."""

    valid: pa.Table
    """The accepted rows, conformed to the scoring schema, in input order."""
    quarantined: pa.Table
    """The refused rows (``QUARANTINE_SCHEMA``), in input order."""
    refused: np.ndarray
    """The input row number of each quarantined row (ascending, int64)."""
    conformed: pa.Table
    """Every input row conformed to the scoring schema (a cell that did not cast is null)."""
    report: ValidationReport
    """The suite's report on ``conformed``: per-expectation results for this table."""


class Scorer:
    """Validate, featurize and score tables for one contract with one model version.

    The model is resolved and loaded at construction (once per process and
    version: the registry caches it) and never changes: callers pass the version they
    resolved once (`model_ref="fraud/3"`: per batch or stream job, per Serve deployment
    generation) and build a new Scorer for another.
    """

    def __init__(
        self,
        contract: Contract,
        registry: ModelRegistry,
        store: FeatureStore,
        engine: Engine = "compiled",
        *,
        model_ref: str | None = None,
        batch_rows: int = 4096,
        record_events: bool = True,
    ) -> None:
        if engine not in ("compiled", "gx"):
            raise ConfigError(f"scoring engine must be 'compiled' or 'gx', got {engine!r}")
        if batch_rows <= 0:
            raise ConfigError(f"batch_rows must be > 0, got {batch_rows}")
        self.contract = contract
        self.registry = registry
        self.store = store
        self.engine: Engine = engine
        self.batch_rows = batch_rows
        self.record_events = record_events
        self.model_ref = model_ref or str(contract.model)
        self.suite = load_suite(contract.resolved_suite_path)
        self.device = select_device(contract.device.value)
        if contract.device.value == "cuda" and self.device != "cuda":
            log.warning(
                "contract %s asks for CUDA but none is visible: scoring on CPU", contract.name
            )
        self.model = self._load()
        self._explainer: Explainer | None = None  # built on the first alert

    def _load(self) -> LoadedModel:
        model = self.registry.load(self.model_ref, device=self.device)
        check_feature_spec(model.ref, model.meta.feature_spec_hash, self.contract)
        return model

    def score(
        self,
        table: pa.Table | Sequence[Mapping[str, Any]],
        engine: Engine | None = None,
        *,
        source: str = "batch",
        now: datetime | None = None,
        conflicting_keys: frozenset[str] = frozenset(),
    ) -> ScoreResult:
        """Score `table` (any column types; a list of JSON objects also works).

        `now` is the clock of this call: the suite's `now` parameter (no event
        from the future) and the rows' `quarantined_at`; it defaults to the
        current time (a naive datetime is taken as UTC).
        """
        split = self.split(table, engine, source=source, now=now,
                           conflicting_keys=conflicting_keys)  # fmt: skip
        return ScoreResult(scored=self.score_valid(split.valid), quarantined=split.quarantined)

    def split(
        self,
        table: pa.Table | Sequence[Mapping[str, Any]],
        engine: Engine | None = None,
        *,
        source: str = "batch",
        now: datetime | None = None,
        conflicting_keys: frozenset[str] = frozenset(),
    ) -> Split:
        """Conform and validate only: valid rows in the scoring schema, quarantined rows.

        `score` is `split` followed by featurize-and-predict on the valid rows. The batch
        job calls `split` alone in its first pass, which records every valid event in the
        feature store before any row is scored (see pipelines/batch_score.py).
        `conflicting_keys` are keys known to carry different rows elsewhere in the same
        data set (the batch job finds them across all its blocks); their rows are refused
        like conflicts inside this table.
        """
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        engine = engine or self.engine
        c = self.contract
        conformed, rejected = conform(table, c.scoring_schema)
        report = validate(conformed, self.suite, engine, params={"now": now})
        reasons: dict[int, list[Reason]] = {row: list(r) for row, r in rejected}
        for row, row_reasons in report.reasons.items():
            known = reasons.setdefault(row, [])
            known.extend([r for r in row_reasons if r not in known])
        for row, reason in _conflicting_keys(conformed, c.key_column, conflicting_keys):
            reasons.setdefault(row, []).append(reason)
        bad = np.zeros(conformed.num_rows, dtype=bool)
        bad[list(reasons)] = True
        valid = conformed.filter(pa.array(~bad))
        quarantined = _quarantine(table, conformed, c.key_column, reasons, source, now)
        return Split(valid, quarantined, np.flatnonzero(bad).astype(np.int64), conformed, report)

    def record(self, valid: pa.Table) -> None:
        """Record valid events (rows from `split`) in the feature store; idempotent."""
        if self.contract.features.aggregates is not None and valid.num_rows:
            self.store.record(to_store_events(valid, self.contract.features))

    def score_valid(self, valid: pa.Table) -> pa.Table:
        """Featurize and predict rows `split` accepted (its ``valid``): the scored rows."""
        c, spec, model = self.contract, self.contract.features, self.model
        if self.record_events:
            # Record, then compute: an event's aggregates only see events strictly
            # before it, so recording its own batch first changes none of them.
            self.record(valid)
        matrix = compute_features(valid, spec, model.meta.feature_stats, self.store)
        scores = model.predict(matrix.values, self.batch_rows)
        n, policy = valid.num_rows, c.decision
        decisions = policy.decide(scores) if policy else pa.nulls(n, pa.string())
        columns = [
            valid.column(c.key_column),
            valid.column(c.entity_column),
            valid.column(c.event_time_column).cast(pa.timestamp("us", tz="UTC")),
            pa.array(scores, pa.float64()),
            _constant(model.ref, n, pa.string()),
            decisions,
            _constant(policy.policy_id, n, pa.string()) if policy else pa.nulls(n, pa.string()),
            self._alert_reasons(matrix.values, decisions),
            *(matrix.values[:, j] for j in range(len(matrix.names))),
        ]
        return pa.Table.from_arrays(columns, schema=scored_schema(matrix.names))

    @property
    def explainer(self) -> Explainer:
        """This Scorer's model's explainer (built on first use: alerts, `explain=true`)."""
        if self._explainer is None:
            self._explainer = Explainer(self.model)
        return self._explainer

    def _alert_reasons(self, features: np.ndarray, decisions: pa.Array) -> pa.Array:
        """The top attributions (JSON) of each row that raises an alert, null for the others."""
        alerting = is_alerting(decisions).to_numpy(zero_copy_only=False)
        out: list[str | None] = [None] * len(alerting)
        if alerting.any():
            rows = np.flatnonzero(alerting)
            for i, reasons in zip(rows, self.explainer.reasons(features[rows]), strict=True):
                out[i] = json.dumps(reasons, separators=(",", ":"))
        return pa.array(out, pa.string())


def _conflicting_keys(
    table: pa.Table, key_column: str, known: frozenset[str] = frozenset()
) -> list[tuple[int, Reason]]:
    """Rows whose key appears again in the batch with different content, or is `known`.

    Identical copies are a replay: they get identical features and scores and
    the upserts absorb them. Different events under one key cannot both be
    stored, and which one is right is unknowable, so all of them are refused.
    """
    keys = table.column(key_column)
    if known:
        hit = pc.is_in(keys, value_set=pa.array(sorted(known), pa.string()))
        rows = pc.indices_nonzero(hit).to_numpy().tolist()
        found = [(row, Reason(_UNIQUE, key_column, repr(keys[row].as_py()))) for row in rows]
        seen = set(rows)
        return found + [r for r in _conflicting_keys(table, key_column) if r[0] not in seen]
    if table.num_rows < 2 or keys.null_count == table.num_rows:
        return []
    counts = pc.value_counts(keys.combine_chunks().drop_null())
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if len(repeated) == 0:
        return []
    rows = pc.indices_nonzero(pc.is_in(keys, value_set=repeated))
    dups = table.take(rows)
    others = [n for n in dups.column_names if n != key_column]
    distinct = dups.group_by(key_column, use_threads=False).aggregate(
        [(n, "count_distinct", pc.CountOptions(mode="all")) for n in others]
    )
    differs = np.zeros(distinct.num_rows, dtype=bool)
    for n in others:  # a loop over columns, not rows
        differs |= distinct.column(f"{n}_count_distinct").to_numpy() > 1
    conflicting = distinct.column(key_column).filter(pa.array(differs))
    hit = pc.is_in(dups.column(key_column), value_set=conflicting).to_numpy(zero_copy_only=False)
    return [
        (row, Reason(_UNIQUE, key_column, repr(key)))
        for row, key in zip(
            rows.to_numpy()[hit].tolist(),
            dups.column(key_column).filter(pa.array(hit)).to_pylist(),
            strict=True,
        )
    ]


def _quarantine(
    raw: pa.Table | Sequence[Any],
    conformed: pa.Table,
    key_column: str,
    reasons: Mapping[int, list[Reason]],
    source: str,
    now: datetime,
) -> pa.Table:
    rows = sorted(reasons)
    if not rows:
        return QUARANTINE_SCHEMA.empty_table()
    # One Python step per *quarantined* row (rare by design), never per scored row.
    if isinstance(raw, pa.Table):
        raw_rows: list[Any] = _rows_of(raw.take(pa.array(rows, pa.int64())))
    else:
        raw_rows = [raw[i] for i in rows]
    keys = conformed.column(key_column).take(pa.array(rows, pa.int64())).to_pylist()
    raw_json = [json.dumps(_json_safe(r), sort_keys=True, default=str) for r in raw_rows]
    out_keys = [
        k if k else _raw_key(r, key_column, text)
        for k, r, text in zip(keys, raw_rows, raw_json, strict=True)
    ]
    return pa.Table.from_arrays(
        [
            pa.array(out_keys, pa.string()),
            pa.array(raw_json, pa.string()),
            pa.array([json.dumps([r.as_dict() for r in reasons[i]]) for i in rows], pa.string()),
            _constant(source, len(rows), pa.string()),
            _constant(now, len(rows), pa.timestamp("us", tz="UTC")),
        ],
        schema=QUARANTINE_SCHEMA,
    )


def _rows_of(table: pa.Table) -> list[dict[str, Any]]:
    """``table.to_pylist()``, but a time Python's datetime cannot hold (past year 9999: a
    seconds column holding milliseconds) is kept as its number and unit, not a crash that
    would fail the whole batch."""
    try:
        return table.to_pylist()
    except (OverflowError, ValueError):
        columns = [_cells(c) for c in table.columns]
        return [dict(zip(table.column_names, cells, strict=True))
                for cells in zip(*columns, strict=True)]  # fmt: skip


def _cells(column: pa.ChunkedArray) -> list[Any]:
    try:
        return column.to_pylist()
    except (OverflowError, ValueError):
        t = column.type  # timestamps in their unit, date64 in ms, date32 in days
        unit = t.unit if pa.types.is_timestamp(t) else "ms" if pa.types.is_date64(t) else "day"
        counts = column.cast(pa.int32() if pa.types.is_date32(t) else pa.int64())
        return [None if v is None else f"{v} {unit} since 1970-01-01 (past datetime's range)"
                for v in counts.to_pylist()]  # fmt: skip


def _constant(value: Any, n: int, type_: pa.DataType) -> pa.Array:
    return pa.nulls(n, type_).fill_null(pa.scalar(value, type_))


def _raw_key(raw: Any, key_column: str, raw_json: str) -> str:
    """A row without a usable key: its raw key as text, else a digest of the raw row."""
    value = raw.get(key_column) if isinstance(raw, Mapping) else None
    if value not in (None, ""):
        return str(value)
    return "raw:" + hashlib.sha256(raw_json.encode()).hexdigest()[:32]


def _json_safe(value: Any) -> Any:
    """NaN and infinities as strings (strict JSON has no literal for them), times in ISO 8601."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
