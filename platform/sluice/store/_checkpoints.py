"""``CheckpointStore``: committed stream positions per (job, topic, partition).

A mirror, for operators, of the offsets a stream job committed to Kafka: the consumer
resumes from Kafka's group offsets, never from this table. ``CheckpointMirror``
(sluice.stream) writes it off the batch's path, at most ``MIRROR_INTERVAL_S`` behind;
``committed`` reads it back. Reads and writes use the
platform's *write* consistency level. Offsets are plain upserts: writing the same
position twice is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from sluice.config import CassandraConfig
from sluice.errors import StoreUnavailable
from sluice.store._schema import CHECKPOINTS_TABLE
from sluice.store._session import TUPLES, consistency, session_for
from sluice.store._writer import CassandraWriter, WriteOptions

__all__ = ["CheckpointStore"]


class CheckpointStore:
    """Read and write committed offsets in ``keyspace.stream_checkpoints`` (picklable)."""

    def __init__(self, cfg: CassandraConfig, table: str = CHECKPOINTS_TABLE.name) -> None:
        self.cfg = cfg
        self.table = table
        self._prepared: dict[str, Any] = {}
        self._session: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Sessions and prepared statements belong to one process: never pickle them.
        return {**self.__dict__, "_prepared": {}, "_session": None}

    def _statements(self) -> dict[str, Any]:
        session = session_for(self.cfg)
        if session is not self._session:
            ks, level = self.cfg.keyspace, consistency(self.cfg.write_consistency)
            select = session.prepare(
                f"SELECT partition, offset FROM {ks}.{self.table} WHERE job = ? AND topic = ?"
            )
            select.is_idempotent = True
            select.consistency_level = level
            writer = CassandraWriter(
                session, ks, self.table, ["job", "topic", "partition", "offset", "committed_at"],
                WriteOptions.from_config(self.cfg),
                key_columns=["job", "topic", "partition"],
                cql_types=dict(CHECKPOINTS_TABLE.all_columns),
            )  # fmt: skip
            self._prepared = {"select": select, "writer": writer}
            self._session = session
        return self._prepared

    def commit(self, job: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Record the next offset to read for each partition of ``topic``."""
        if not offsets:
            return
        now = datetime.now(UTC)
        parts = sorted(offsets)
        rows = pa.table(
            {
                "job": pa.array([job] * len(parts), pa.string()),
                "topic": pa.array([topic] * len(parts), pa.string()),
                "partition": pa.array(parts, pa.int32()),
                "offset": pa.array([offsets[p] for p in parts], pa.int64()),
                "committed_at": pa.array([now] * len(parts), pa.timestamp("ms", tz="UTC")),
            }
        )
        self._statements()["writer"].write(rows)

    def committed(self, job: str, topic: str) -> dict[int, int]:
        """Partition -> committed offset for (job, topic); empty when nothing was committed."""
        stmt = self._statements()["select"]
        try:
            rows = session_for(self.cfg).execute(stmt, (job, topic), execution_profile=TUPLES)
            return {partition: offset for partition, offset in rows}
        except Exception as exc:
            raise StoreUnavailable(
                f"reading {self.cfg.keyspace}.{self.table} for job {job!r}, topic {topic!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
