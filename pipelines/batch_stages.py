"""The batch job's two passes, run by Ray Data actors (`map_batches`) over the input.

    record = RecordStage(...)(batch)   # quarantine rows + one totals row, per batch
    scored = ScoreStage(...)(batch)    # prediction rows; fails on a disagreement

Pass 1 (`RecordStage`) splits each batch with the job's engine, records the valid events
in the online feature table and returns the refused rows, each with its own ``row_id``
(``<file>#<row>``), plus one row of the batch's expectation counts (``TOTALS_COLUMN``
set, every other column null): `map_batches` has one output, and a count carried in it
is counted once even when Ray retries a batch. `record_parts` separates the two.

Pass 2 (`ScoreStage`) splits each batch again with the compiled engine, and scores the
rows it accepts. Both passes must refuse the same rows: a row pass 2 refuses that pass 1
accepted, or the reverse, fails the job (`RowsUnaccounted`) naming the key and the
expectation, before that row is written anywhere.
"""

from __future__ import annotations

import json
import time
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.batch_expectations import Totals
from pipelines.batch_input import ADDED_COLUMNS, FILE_COLUMN, POSITION_COLUMNS, row_ids
from sluice.config import PlatformConfig
from sluice.contract import load_contract
from sluice.errors import RowsUnaccounted

__all__ = ["TOTALS_COLUMN", "RecordStage", "ScoreStage", "record_parts", "refusals"]

TOTALS_COLUMN = "__sluice_totals"


class _Stage:
    """Builds the contract's Scorer once per actor: model, suite and sessions load once."""

    def __init__(self, cfg: PlatformConfig, contract_name: str, model_ref: str, engine: str,
                 batch_rows: int, source: str, now: datetime, conflicting_keys: frozenset[str],
                 files: list[str], file_days: list[date]) -> None:  # fmt: skip
        from sluice.models import ModelRegistry
        from sluice.scoring import Scorer
        from sluice.store import CassandraFeatureStore

        self.contract = load_contract(contract_name)
        store = CassandraFeatureStore.for_contract(cfg.cassandra, self.contract)
        # model_ref is the version the driver resolved the alias to once for the whole job:
        # an actor started (or restarted) after a promotion still scores with it.
        self.scorer = Scorer(self.contract, ModelRegistry.from_config(cfg), store, engine,
                             model_ref=model_ref, batch_rows=batch_rows,
                             record_events=False)  # fmt: skip
        self.cfg, self.source, self.now = cfg, source, now
        self.conflicting_keys = conflicting_keys
        self.files, self.file_days = files, file_days

    def split(self, batch: pa.Table, engine: str | None = None):
        """The batch's rows (the columns Sluice added dropped: no part of a row) split."""
        rows = batch.drop_columns([c for c in ADDED_COLUMNS if c in batch.column_names])
        return self.scorer.split(rows, engine, source=self.source, now=self.now,
                                 conflicting_keys=self.conflicting_keys)  # fmt: skip


class RecordStage(_Stage):
    """Pass 1: validate, record valid events, return the quarantined rows and the counts."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        from sluice import metrics
        from sluice.scoring import reason_counts
        from sluice.store import quarantine_rows

        split = self.split(batch)
        self.scorer.record(split.valid)
        reasons = reason_counts(split.quarantined.column("reasons").to_pylist())
        metrics.record_rows(self.source, self.contract.name, self.scorer.model.ref, 0, reasons)
        positions = batch.select(list(POSITION_COLUMNS)).take(split.refused)
        ids = row_ids(self.files, positions)
        rows = quarantine_rows(self.contract, split.quarantined, row_ids=ids,
                               days=self.quarantine_days(split, positions))  # fmt: skip
        rows = rows.append_column(TOTALS_COLUMN, pa.nulls(rows.num_rows, pa.string()))
        totals = Totals.of(self.scorer.suite, split).to_json()
        counts = pa.Table.from_arrays([pa.nulls(1, f.type) for f in rows.schema][:-1]
                                      + [pa.array([totals], pa.string())],
                                      schema=rows.schema)  # fmt: skip
        return pa.concat_tables([rows, counts])

    def quarantine_days(self, split, positions: pa.Table) -> pa.Array:
        """The day of each refused row: its event's (when its event time is readable), else
        its file's modification day: times a re-run of the same input gives again, so it
        rewrites the same quarantine rows (the job's clock would add a day's copy)."""
        event = split.conformed.column(self.contract.event_time_column).take(split.refused)
        files = positions.column(FILE_COLUMN).combine_chunks()
        of_file = pa.array(self.file_days, pa.date32()).take(files)
        return pc.coalesce(pc.cast(event.combine_chunks(), pa.date32()), of_file)


def record_parts(pass1) -> tuple[object, Totals]:
    """Pass 1's output (materialized) -> (the quarantine rows' dataset, the input's totals)."""
    totals = Totals()
    for part in pass1.map_batches(_totals_rows, batch_format="pyarrow").iter_batches(
        batch_format="pyarrow", batch_size=None
    ):
        for text in part.column(TOTALS_COLUMN).to_pylist():
            totals = totals + Totals.from_json(text)
    return pass1.map_batches(_quarantine_rows, batch_format="pyarrow"), totals


def _totals_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_valid(batch.column(TOTALS_COLUMN))).select([TOTALS_COLUMN])


def _quarantine_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_null(batch.column(TOTALS_COLUMN))).drop_columns([TOTALS_COLUMN])


def refusals(quarantine_rows_batches) -> pa.Table:
    """The keys pass 1 refused, each once and sorted (``key``), with the expectations it
    refused the key's first row for (``expectations``: ``a:col, b:col``). Arrow columns,
    not a dict: the 145,320 refused keys of a 5M-row input held ~28 MiB of Python
    objects in the driver, and again in each scoring actor, which only tests membership
    and names one key's expectations in an error."""
    parts = [pa.table({"key": batch.column("key"), "expectations": pa.array(
        [_expectations(text) for text in batch.column("reasons").to_pylist()], pa.string())})
        for batch in quarantine_rows_batches]  # fmt: skip
    if not parts:
        return pa.table({"key": pa.array([], pa.string()),
                         "expectations": pa.array([], pa.string())})  # fmt: skip
    rows = pa.concat_tables(parts)
    at = pa.array(np.arange(rows.num_rows))
    first = rows.append_column("at", at).group_by("key", use_threads=False).aggregate(
        [("at", "min")])  # fmt: skip
    return rows.take(first.column("at_min")).sort_by("key")


def _expectations(reasons_json: str) -> str:
    return ", ".join(dict.fromkeys(f"{r['expectation']}:{r['column']}"
                                   for r in json.loads(reasons_json)))  # fmt: skip


class ScoreStage(_Stage):
    """Pass 2: score the rows pass 1 accepted; refuse exactly the rows it refused.

    Pass 1 ran the job's engine (GX by default) and wrote the quarantine; here the rows
    only need to be split the same way again, which the compiled engine does with the
    same verdicts (the parity property test and GX's conformance cases prove it) at a
    fraction of the cost. Should they ever differ, the job fails here, naming the row.
    """

    def __init__(self, *, refused: pa.Table, record_engine: str, **kw) -> None:
        from sluice import metrics

        super().__init__(**kw)
        metrics.models_in_use("batch", self.contract.name, [self.scorer.model.ref])
        self.refused = refused  # `refusals`: key, expectations
        self.record_engine = record_engine
        from sluice.store import AlertWriter
        from sluice.stream import AlertPublisher

        self.alerts = AlertWriter(self.cfg.cassandra, self.contract)
        self.proposals = AlertPublisher(self.cfg.kafka, self.contract.name)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from sluice import metrics
        from sluice.decisions import decision_counts
        from sluice.store import alert_rows, prediction_rows

        t0 = time.perf_counter()
        split = self.split(batch, "compiled")
        self.check_agreement(split.quarantined, split.valid)
        scored = self.scorer.score_valid(split.valid)
        name = self.contract.name
        metrics.SCORE_BATCH_SECONDS.observe(time.perf_counter() - t0, path="batch", contract=name)
        # Counted here, before the sink writes them: a write failure fails the job.
        metrics.record_rows(self.source, name, self.scorer.model.ref, scored.num_rows, {},
                            decision_counts(scored))
        # The batch's alerts are written, and proposed to the alert relay, before its
        # predictions are handed on: a failure fails the job, and a re-run rewrites the
        # same alert rows (keyed by transaction) and proposes them again (the relay
        # publishes each transaction's alert once).
        alerts = alert_rows(self.contract, scored, self.source, alerted_at=self.now)
        self.alerts.write(alerts)
        self.proposals.publish(alerts)
        return prediction_rows(self.contract, scored, scored_at=self.now)

    def check_agreement(self, quarantined: pa.Table, valid: pa.Table) -> None:
        """Raise `RowsUnaccounted` for a row the two passes judge differently.

        Pass 1's refusals are keyed as the quarantine table stores keys (``storable_keys``:
        a key over 1 KiB is its start plus a digest), so this pass's keys are looked up so.
        """
        from sluice.store._rows import storable_keys

        refused = self.refused.column("key")
        # One lookup for both sides: each call hashes the whole value set (~3.6 ms a
        # call for the 145,320 refused keys of a 5M-row input).
        refusing = storable_keys(quarantined.column("key"))
        keys = storable_keys(valid.column(self.contract.key_column))
        both = [c for a in (refusing, keys)
                for c in (a.chunks if isinstance(a, pa.ChunkedArray) else [a])]  # fmt: skip
        found = pc.is_in(pa.chunked_array(both, pa.string()), value_set=refused)
        unknown = pc.invert(found.slice(0, len(refusing)))
        hit = found.slice(len(refusing))
        if pc.any(unknown).as_py():  # None when nothing was refused
            i = pc.index(unknown, True).as_py()
            key, text = (quarantined.column(c)[i].as_py() for c in ("key", "reasons"))
            raise RowsUnaccounted(
                f"the row with key {key!r} passed the record pass ({self.record_engine} "
                f"engine) but the score pass (compiled engine) refuses it: "
                f"{_expectations(text)}. It is in neither table; the job stops"
            )
        if pc.any(hit).as_py():
            key = keys.filter(hit)[0].as_py()
            at = pc.index(refused, key).as_py()
            raise RowsUnaccounted(
                f"the row with key {key!r} was refused by the record pass "
                f"({self.record_engine} engine: {self.refused.column('expectations')[at].as_py()}) "
                "but the score pass "
                "(compiled engine) accepts it; it would be in both tables, so the job stops"
            )
