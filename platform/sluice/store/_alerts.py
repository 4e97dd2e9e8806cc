"""``AlertWriter``: a contract's alerts into ``alerts`` and ``alerts_by_key``, both or raise;
``AlertReader``: them read back (``sluice alerts``, the review pages).

The batch score pass and the stream call it with the same rows (``alert_rows``) before
their own writes count as done (the batch stage returns its predictions, the stream
commits its offsets), so a failure fails that batch and a re-run or replay rewrites the
same rows: each transaction has one alert row per table, whatever the path or the crash.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

import pyarrow as pa

from sluice.config import CassandraConfig
from sluice.contract import Contract
from sluice.store._rows import ALERT_COLUMNS
from sluice.store._schema import ALERTS_BY_KEY_TABLE, ALERTS_TABLE
from sluice.store._session import session_for
from sluice.store._writer import CassandraWriter, WriteOptions

__all__ = ["AlertReader", "AlertWriter"]

_COLUMNS = ("key, entity, event_time, day, score, decision, policy_id, model_version, source, "
            "reasons, alerted_at")  # fmt: skip


class AlertWriter:
    """Upserts alert rows into both alert tables, with the contract's consistency and TTL.

    The writers are prepared on first use in the calling process (a prepared statement
    belongs to that process's session).
    """

    def __init__(self, cfg: CassandraConfig, contract: Contract) -> None:
        self.cfg = cfg
        out = contract.output
        self.options = WriteOptions.from_config(cfg, out.consistency, out.ttl_s)
        self._session = None
        self._writers: list[CassandraWriter] = []

    def write(self, rows: pa.Table) -> int:
        """Write every row to both tables; the rows written. Raises ``WriteFailed``."""
        if rows.num_rows == 0:
            return 0
        session = session_for(self.cfg)
        if session is not self._session:
            ks, columns = self.cfg.keyspace, list(ALERT_COLUMNS)
            self._writers = [CassandraWriter(session, ks, table.name, columns, self.options)
                             for table in (ALERTS_TABLE, ALERTS_BY_KEY_TABLE)]  # fmt: skip
            self._session = session
        for writer in self._writers:
            writer.write(rows)
        return rows.num_rows


class AlertReader:
    """Reads a contract's alerts (blocking: an async caller runs it in a thread)."""

    def __init__(self, cfg: CassandraConfig, contract: str) -> None:
        self.cfg, self.contract = cfg, contract

    def day(self, day: date) -> Iterable[Any]:
        """The day's alerts (``day``: of the event, UTC), newest event first, paged lazily."""
        return session_for(self.cfg).execute(
            f"SELECT {_COLUMNS} FROM {self.cfg.keyspace}.alerts WHERE contract = %s AND day = %s "
            "ORDER BY event_time DESC", (self.contract, day),
            timeout=self.cfg.request_timeout_s)  # fmt: skip

    def one(self, key: str) -> Any | None:
        """The alert of transaction ``key`` (None: it has none)."""
        return session_for(self.cfg).execute(
            f"SELECT {_COLUMNS} FROM {self.cfg.keyspace}.alerts_by_key "
            "WHERE contract = %s AND key = %s", (self.contract, key),
            timeout=self.cfg.request_timeout_s).one()  # fmt: skip
