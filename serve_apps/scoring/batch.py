"""``BatchScorer``: the requests of one ``@serve.batch`` call scored by the contract's Scorer.

Plain Python (no Serve), so unit tests drive it directly. One call takes several
requests (each a list of validated rows) and answers one ``ScoreReply`` per request:

- canary: each row goes to ``champion`` or, for a share of keys, to ``challenger``.
  The choice hashes the row's key (SHA-256), so a key always meets the same model
  whatever replica or batch it lands in, and the share is exact over many keys.
- requests are scored together (one feature read and one forward pass per group), but
  a request never sees another's rows: the Scorer refuses a key carried by different
  rows of one call, so requests that share a key go to separate calls.
- every input row ends scored or rejected; rejected rows come back with their reasons
  and their quarantine rows (the ingress writes them).
- a failure fails only the requests it belongs to: when scoring requests together fails
  for any reason but a store outage (which every request shares: 503 for all), each is
  scored again alone, and only those that fail alone get an error (500 ``internal_error``
  for an unexpected exception, its text kept in the replica's log, not the answer).

The Scorer keeps row order in both of its outputs, and every row sharing a key gets one
verdict (identical rows are a replay, different ones a conflict), so a row is scored iff
its key is among the scored keys; that is checked, and a mismatch re-scores one row at a
time rather than guess.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from serve_apps.scoring.schemas import ErrorReply, RejectedRow, RowScore, ScoreReply
from sluice.contract import SCORED_COLUMNS
from sluice.errors import SluiceError, StoreUnavailable
from sluice.scoring import Scorer
from sluice.store import alert_rows

__all__ = ["BatchScorer", "canary_bucket", "error_status"]

log = logging.getLogger(__name__)


def canary_bucket(key: str) -> float:
    """A key's stable position in [0, 1): the first 8 bytes of its SHA-256."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def error_status(exc: BaseException) -> int:
    """The HTTP status of a server-side failure: a store outage is worth a retry."""
    return 503 if isinstance(exc, StoreUnavailable) else 500


@dataclass
class _Part:
    """Rows of one request sent to one model: their indices in the request."""

    request: int
    rows: list[int]


class BatchScorer:
    """Scores batches of requests with a champion and an optional challenger Scorer."""

    def __init__(
        self,
        champion: Scorer,
        challenger: Scorer | None = None,
        challenger_share: float = 0.0,
        *,
        source: str | None = None,
        shadow_share: float = 0.0,
        role: str = "champion",
    ) -> None:
        self.champion = champion
        self.challenger = challenger
        self.challenger_share = challenger_share
        self.shadow_share = shadow_share
        self.role = role  # "shadow": scores are logged, never acted on (no alerts)
        self.contract = champion.contract
        self.source = source or f"online:{self.contract.name}"

    def shadowed(self, key: Any) -> bool:
        """Whether a scored row also goes to the shadow model (by key hash, its own salt:
        independent of the canary's split)."""
        return (self.shadow_share > 0 and isinstance(key, str)
                and canary_bucket(f"shadow:{key}") < self.shadow_share)  # fmt: skip

    def variant(self, key: Any) -> str:
        if self.challenger is None or self.challenger_share <= 0 or not isinstance(key, str):
            return "champion"
        return "challenger" if canary_bucket(key) < self.challenger_share else "champion"

    def score(
        self, requests: Sequence[Sequence[dict[str, Any]]], now: datetime | None = None,
        explain: Sequence[bool] | None = None,
    ) -> list[ScoreReply]:
        """One reply per request; ``explain[i]``: request i's rows carry their reasons."""
        now = now or datetime.now(UTC)
        # Read by _reasons; one call at a time (the replica scores its batches in turn).
        self._explain = list(explain) if explain is not None else [False] * len(requests)
        replies: list[ScoreReply | None] = [None] * len(requests)
        for group in _groups(requests, self.contract.key_column):
            for index, reply in self._score_isolated(requests, group, now).items():
                replies[index] = reply
        out = [r if r is not None else ScoreReply() for r in replies]
        if self.shadow_share > 0:  # which scored rows of each request the shadow sees
            key_col = self.contract.key_column
            for n, (rows, reply) in enumerate(zip(requests, out, strict=True)):
                scored = {s.key for s in reply.scores}
                picked = tuple(i for i, r in enumerate(rows)
                               if r.get(key_col) in scored and self.shadowed(r.get(key_col)))
                if picked:
                    out[n] = replace(reply, shadow_rows=picked)
        return out

    # -- internals ---------------------------------------------------------------------
    def _score_isolated(
        self, requests: Sequence[Sequence[dict[str, Any]]], group: list[int], now: datetime
    ) -> dict[int, ScoreReply]:
        """The group scored together; if that fails (not a store outage), each request alone."""
        try:
            return self._score_group(requests, group, now)
        except Exception as exc:  # noqa: BLE001 - turned into the failing requests' answers
            if len(group) > 1 and not isinstance(exc, StoreUnavailable):
                log.warning("scoring %d requests together failed (%s): scoring each alone",
                            len(group), type(exc).__name__)  # fmt: skip
                out: dict[int, ScoreReply] = {}
                for index in group:
                    out |= self._score_isolated(requests, [index], now)
                return out
            return {index: ScoreReply(error=_error_reply(exc, len(group))) for index in group}

    def _score_group(
        self, requests: Sequence[Sequence[dict[str, Any]]], group: list[int], now: datetime
    ) -> dict[int, ScoreReply]:
        key_col = self.contract.key_column
        parts: dict[str, list[_Part]] = {"champion": [], "challenger": []}
        for index in group:
            split: dict[str, list[int]] = {"champion": [], "challenger": []}
            for i, row in enumerate(requests[index]):
                split[self.variant(row.get(key_col))].append(i)
            for name, rows in split.items():
                if rows:
                    parts[name].append(_Part(index, rows))
        scores: dict[int, list[tuple[int, RowScore]]] = {i: [] for i in group}
        rejected: dict[int, list[tuple[int, RejectedRow, pa.Table]]] = {i: [] for i in group}
        alerts: dict[str, pa.Table] = {}  # key -> its alert row
        names: tuple[str, ...] = ()
        for name, plist in parts.items():
            if not plist:
                continue
            scorer = self.champion if name == "champion" else self.challenger
            assert scorer is not None
            names = self._run(scorer, requests, plist, now, scores, rejected, alerts) or names
        out = {}
        for index in group:
            bad = sorted(rejected[index], key=lambda t: t[0])
            quarantine = pa.concat_tables([t[2] for t in bad]) if bad else None
            mine = [alerts[s.key] for _, s in sorted(scores[index], key=lambda t: t[0])
                    if s.key in alerts]  # fmt: skip
            out[index] = ScoreReply(
                scores=[s for _, s in sorted(scores[index], key=lambda t: t[0])],
                rejected=[r for _, r, _ in bad],
                feature_names=names,
                quarantine=quarantine,
                alerts=pa.concat_tables(mine) if mine else None,
            )
        return out

    def _reasons(self, scorer: Scorer, scored: pa.Table, matrix: np.ndarray, parts: list[_Part],
                 valid: list[bool]) -> dict[int, list[dict[str, Any]]]:  # fmt: skip
        """Reasons of the scored rows whose request asked: an alert's come with it, the
        others are explained here, in one call."""
        asked = _asked(parts, valid, self._explain)
        if not asked:
            return {}
        known = scored.column("reasons").to_pylist()
        out = {i: json.loads(known[i]) for i in asked if known[i] is not None}
        rest = [i for i in asked if i not in out]
        if rest:
            out |= dict(zip(rest, scorer.explainer.reasons(matrix[rest]), strict=True))
        return out

    def _run(
        self,
        scorer: Scorer,
        requests: Sequence[Sequence[dict[str, Any]]],
        parts: list[_Part],
        now: datetime,
        scores: dict[int, list[tuple[int, RowScore]]],
        rejected: dict[int, list[tuple[int, RejectedRow, pa.Table]]],
        alerts: dict[str, pa.Table],
    ) -> tuple[str, ...]:
        key_col = self.contract.key_column
        rows = [requests[p.request][i] for p in parts for i in p.rows]
        result = scorer.score(rows, source=self.source, now=now)
        scored, quarantined = result.scored, result.quarantined
        scored_keys = set(scored.column("key").to_pylist())
        valid = [r.get(key_col) in scored_keys for r in rows]
        if sum(valid) != scored.num_rows or len(rows) - sum(valid) != quarantined.num_rows:
            if len(rows) == 1:  # pragma: no cover - one row is always one verdict
                raise SluiceError("scorer returned an inconsistent result for one row")
            log.warning("verdicts differ among rows sharing a key: scoring row by row")
            names: tuple[str, ...] = ()
            for p in parts:
                for i in p.rows:
                    names = self._run(scorer, requests, [_Part(p.request, [i])], now,
                                      scores, rejected, alerts) or names  # fmt: skip
            return names
        names = tuple(n for n in scored.column_names if n not in SCORED_COLUMNS)
        raised = (alert_rows(self.contract, scored, self.source, alerted_at=now)
                  if self.role != "shadow" else scored.slice(0, 0))  # fmt: skip
        for j, key in enumerate(raised.column("key").to_pylist()):
            alerts[key] = raised.slice(j, 1)
        keys = scored.column("key").to_pylist()
        values = scored.column("score").to_pylist()
        versions = scored.column("model_version").to_pylist()
        decisions = scored.column("decision").to_pylist()
        policies = scored.column("policy_id").to_pylist()
        matrix = (
            np.column_stack([scored.column(n).to_numpy() for n in names]).astype(np.float64)
            if names and scored.num_rows else np.empty((scored.num_rows, 0))
        )  # fmt: skip
        explained = self._reasons(scorer, scored, matrix, parts, valid)
        q_keys = quarantined.column("key").to_pylist()
        q_reasons = quarantined.column("reasons").to_pylist()
        good = bad = pos = 0
        for p in parts:
            for i in p.rows:
                if valid[pos]:
                    role = "champion" if scorer is self.champion else "challenger"
                    row = RowScore(keys[good], float(values[good]), versions[good],
                                   tuple(matrix[good].tolist()), decisions[good],
                                   policies[good], explained.get(good),
                                   self.role if self.role == "shadow" else role)  # fmt: skip
                    scores[p.request].append((i, row))
                    good += 1
                else:
                    reasons = [dict(r) for r in json.loads(q_reasons[bad])]
                    rej = RejectedRow(i, q_keys[bad], reasons)
                    rejected[p.request].append((i, rej, quarantined.slice(bad, 1)))
                    bad += 1
                pos += 1
        return names


def _asked(parts: list[_Part], valid: list[bool], explain: list[bool]) -> list[int]:
    """The scored rows (their index among the scored) whose request asked to explain."""
    out, good, pos = [], 0, 0
    for p in parts:
        for _ in p.rows:
            if valid[pos]:
                if explain[p.request]:
                    out.append(good)
                good += 1
            pos += 1
    return out


def _error_reply(exc: Exception, requests: int) -> ErrorReply:
    if isinstance(exc, SluiceError):
        log.warning("scoring %d request(s) failed: %s", requests, exc)
        return ErrorReply(error_status(exc), type(exc).__name__, str(exc))
    log.exception("scoring a request failed with an unexpected %s", type(exc).__name__)
    return ErrorReply(500, "internal_error", f"scoring failed with an unexpected "
                      f"{type(exc).__name__}; the replica's log has the details")  # fmt: skip


def _groups(requests: Sequence[Sequence[dict[str, Any]]], key_col: str) -> list[list[int]]:
    """Requests split into groups where no key is carried by two requests."""
    groups: list[tuple[set[Any], list[int]]] = []
    for index, rows in enumerate(requests):
        keys = {r.get(key_col) for r in rows}
        for seen, members in groups:
            if seen.isdisjoint(keys):
                seen |= keys
                members.append(index)
                break
        else:
            groups.append((set(keys), [index]))
    return [members for _, members in groups]
