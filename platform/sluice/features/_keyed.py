"""``KeyedFeatureStore``: a stream consumer's keyed state over a durable ``FeatureStore``.

A card's events all travel in one Kafka partition (the producer keys by card), so the
consumer that owns the partition sees every new event of the card. It can keep the
card's recent history in memory, as Kafka Streams and Flink keep keyed state, and
answer ``history`` without a read per event:

    state = KeyedFeatureStore(CassandraFeatureStore(...), contract.features.aggregates)
    state.record(events)    # loads unseen cards once, updates memory, starts the write
    state.history(...)      # from memory
    state.flush()           # every recorded event is durable (or this raises)
    state.forget()          # on a rebalance: another consumer may own the cards now

The durable store stays the copy of record and the recovery source: a card is loaded
from it on first sight (one concurrent read for all new cards of a batch, from the
earliest time the batch needs to the end), after a rebalance, after eviction, or when an
event reaches further back than memory holds. Writes go through to it on a background
thread, so the events' write overlaps computing the features and writing the
predictions; the caller commits offsets only after ``flush``.

Memory holds, per card, every event from ``floor`` on (events older than the newest one
less ``horizon + lateness`` are pruned and ``floor`` moves up), and at most
``max_entities`` cards (the least recently used are dropped and reloaded when needed):
about 300 bytes an event, so 20,000 cards of 20 events each take ~120 MB.

Late events: an event is *late* when its card already has a recorded event with a later
event time (it arrived after that one was scored). Its own features are exact — they
see every earlier event of its card — but the events scored before it arrived keep the
features they were scored with; the batch job, which sees its whole input, counts the
late event for them. ``late_events`` counts them (the stream reports it as
``sluice_stream_late_events_total``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from sluice.features._spec import AggregateSpec
from sluice.features._store import (
    STORE_SCHEMA,
    FeatureStore,
    _conform,
    distinct_entities,
    from_micros,
    last_per_key,
    to_micros,
)

__all__ = ["KeyedFeatureStore"]

_US = 1_000_000
_END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass
class _Card:
    """One card's events from ``floor`` (µs) on: key -> (event time µs, amount)."""

    floor: int
    events: dict[str, tuple[int, float | None]] = field(default_factory=dict)
    newest: int = -(2**63)


class KeyedFeatureStore:
    """Recent events per entity in memory, written through to ``backing``; see the module
    doc. Not thread-safe: one consumer loop uses it."""

    def __init__(
        self,
        backing: FeatureStore,
        spec: AggregateSpec,
        *,
        max_entities: int = 20_000,
        lateness_s: int = 86_400,
    ) -> None:
        if max_entities < 1:
            raise ValueError(f"max_entities must be >= 1, got {max_entities}")
        self.backing = backing
        self.horizon_us = spec.horizon_s * _US
        self.keep_us = (spec.horizon_s + lateness_s) * _US
        self.max_entities = max_entities
        self.late_events = 0
        self.loads = 0  # entities read from the backing store
        self._cards: OrderedDict[str, _Card] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyed-state-write")
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()

    @property
    def entities(self) -> int:
        """Entities in memory now. (No ``__len__``: an empty state must stay truthy.)"""
        return len(self._cards)

    # -- FeatureStore -----------------------------------------------------------------------
    def record(self, events: pa.Table) -> None:
        """Add ``events`` to their cards' state (loading unseen cards first) and start
        writing them to the backing store; ``flush`` waits for that write."""
        batch = last_per_key(_conform(events))
        if batch.num_rows == 0:
            return
        entities = batch["entity"].to_pylist()
        times = batch["event_time"].cast(pa.int64()).to_numpy(zero_copy_only=False)
        keys = batch["key"].to_pylist()
        amounts = batch["amount"].to_pylist()
        start_us = int(times.min()) - self.horizon_us
        self._load(entities, start_us)
        newest = {e: self._cards[e].newest for e in set(entities)}  # before this batch
        # Late: a new event older than one its card already has (a replayed key is not).
        self.late_events += sum(
            1
            for e, t, k in zip(entities, times.tolist(), keys, strict=True)
            if t < newest[e] and k not in self._cards[e].events
        )
        for e, t, k, a in zip(entities, times.tolist(), keys, amounts, strict=True):
            card = self._cards[e]
            card.events[k] = (t, a)
            card.newest = max(card.newest, t)
        for e in newest:
            self._prune(self._cards[e], start_us)
        self._evict()
        future = self._pool.submit(self.backing.record, batch)
        with self._lock:
            self._pending.append(future)

    def history(
        self, entities: Sequence[str] | pa.Array, start: datetime, end: datetime
    ) -> pa.Table:
        """Events of ``entities`` with ``start <= event_time < end``, from memory (a card
        not in memory, or not as far back as ``start``, is loaded first)."""
        wanted = distinct_entities(entities)
        lo, hi = to_micros(start), to_micros(end)
        self._load(wanted, lo)
        ent: list[str] = []
        t_us: list[int] = []
        key: list[str] = []
        amount: list[float | None] = []
        for e in wanted:
            for k, (t, a) in self._cards[e].events.items():
                if lo <= t < hi:
                    ent.append(e)
                    t_us.append(t)
                    key.append(k)
                    amount.append(a)
        self._evict()
        return pa.Table.from_arrays(
            [
                pa.array(ent, pa.string()),
                pa.array(np.array(t_us, dtype=np.int64)).cast(STORE_SCHEMA.field(1).type),
                pa.array(key, pa.string()),
                pa.array(amount, pa.float64()),
            ],
            schema=STORE_SCHEMA,
        )

    # -- durability and ownership -------------------------------------------------------------
    def flush(self) -> None:
        """Return once every event recorded so far is in the backing store; raise the first
        write error (the events stay in memory: recording them again is idempotent)."""
        with self._lock:
            pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def forget(self) -> None:
        """Drop every card's state (its partition may have moved to another consumer, which
        records its next events); they are reloaded from the backing store when needed."""
        self._cards.clear()

    def close(self) -> None:
        """Wait for the writes in flight and stop the writer thread."""
        self._pool.shutdown(wait=True)

    # -- internals ------------------------------------------------------------------------------
    def _load(self, entities: Sequence[str], start_us: int) -> None:
        """Make every card of ``entities`` hold its events from ``start_us`` on."""
        need = []
        for e in dict.fromkeys(entities):
            card = self._cards.get(e)
            if card is None or card.floor > start_us:
                need.append(e)
            else:
                self._cards.move_to_end(e)
        if not need:
            return
        self.flush()  # a read must see every write already started
        stored = self.backing.history(need, from_micros(start_us), _END_OF_TIME)
        self.loads += len(need)
        # Keys a reloaded card already holds keep what this consumer recorded; for the
        # others a later row of a key (an id re-used at another time) wins, as it does in
        # ``entity_aggregates`` over the same history, so a reload changes no feature.
        held = {e: set(self._cards[e].events) for e in need if e in self._cards}
        for e in need:
            card = self._cards.pop(e, None) or _Card(floor=start_us)
            card.floor = start_us
            self._cards[e] = card
        times = stored["event_time"].cast(pa.int64()).to_pylist()
        for e, t, k, a in zip(stored["entity"].to_pylist(), times, stored["key"].to_pylist(),
                              stored["amount"].to_pylist(), strict=True):  # fmt: skip
            card = self._cards[e]
            if k not in held.get(e, ()):
                card.events[k] = (t, a)
            card.newest = max(card.newest, t)

    def _prune(self, card: _Card, needed_us: int) -> None:
        """Drop events older than the card's newest less horizon + lateness (never ones
        from ``needed_us`` on, which the batch being recorded reads)."""
        cutoff = min(card.newest - self.keep_us, needed_us)
        if cutoff - card.floor > self.keep_us:  # prune in steps, not on every event
            card.events = {k: v for k, v in card.events.items() if v[0] >= cutoff}
            card.floor = cutoff

    def _evict(self) -> None:
        while len(self._cards) > self.max_entities:
            self._cards.popitem(last=False)
