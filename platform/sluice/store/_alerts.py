"""``AlertWriter``: a contract's alerts into ``alerts`` and ``alerts_by_key``, both or raise.

The batch score pass and the stream call it with the same rows (``alert_rows``) before
their own writes count as done (the batch stage returns its predictions, the stream
commits its offsets), so a failure fails that batch and a re-run or replay rewrites the
same rows: each transaction has one alert row per table, whatever the path or the crash.
"""

from __future__ import annotations

import pyarrow as pa

from sluice.config import CassandraConfig
from sluice.contract import Contract
from sluice.store._rows import ALERT_COLUMNS
from sluice.store._schema import ALERTS_BY_KEY_TABLE, ALERTS_TABLE
from sluice.store._session import session_for
from sluice.store._writer import CassandraWriter, WriteOptions

__all__ = ["AlertWriter"]


class AlertWriter:
    """Upserts alert rows into both alert tables, with the contract's consistency and TTL.

    The writers are prepared on first use in the calling process (a prepared statement
    belongs to that process's session), so an instance may be built on a driver and
    shipped to a Ray actor.
    """

    def __init__(self, cfg: CassandraConfig, contract: Contract) -> None:
        self.cfg = cfg
        out = contract.output
        self.options = WriteOptions.from_config(cfg, out.consistency, out.ttl_s)
        self._session = None
        self._writers: list[CassandraWriter] = []

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_session": None, "_writers": []}

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
