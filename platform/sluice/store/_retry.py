"""Bounded-concurrency requests with retries of just the ones that failed transiently.

``run_with_retries`` executes one prepared statement per parameter tuple with at most
``concurrency`` requests in flight (``_Pass``: the scheme of the driver's
``execute_concurrent_with_args``, made safe for the moment every host is down) and retries
the requests that failed with a transient error (``is_transient``: timeouts, unavailable,
overloaded, lost connections) with exponential backoff. The writer, the feature reads and
the drift scans share it. ``describe`` renders an error for a log line without the values
a row may hold.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cassandra import (
    CoordinationFailure,
    DriverException,
    OperationTimedOut,
    Timeout,
    Unavailable,
)
from cassandra.cluster import EXEC_PROFILE_DEFAULT, NoHostAvailable, ResultSet
from cassandra.connection import ConnectionBusy, ConnectionException
from cassandra.protocol import (
    ErrorMessage,
    IsBootstrappingErrorMessage,
    OverloadedErrorMessage,
    ServerError,
    UnavailableErrorMessage,
)

__all__ = ["TRANSIENT", "describe", "is_transient", "run_with_retries"]

log = logging.getLogger(__name__)


TRANSIENT: tuple[type[BaseException], ...] = (
    Timeout,  # ReadTimeout, WriteTimeout
    Unavailable,
    CoordinationFailure,
    OperationTimedOut,
    NoHostAvailable,
    ConnectionException,
    ConnectionBusy,
    OverloadedErrorMessage,
    IsBootstrappingErrorMessage,
    UnavailableErrorMessage,
    ServerError,
)

_MAX_BACKOFF_S = 10.0


def describe(exc: BaseException) -> str:
    """An error for a log line or message, never a row's values: the driver's and the
    server's messages name columns and limits; any other error (a value the driver could
    not serialize, say) may quote the value, so only its type is shown."""
    if isinstance(exc, (DriverException, ErrorMessage, *TRANSIENT)):
        return f"{type(exc).__name__}: {exc}"[:500]
    return f"{type(exc).__name__} (its message may hold row values and is left out)"


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same request later may succeed."""
    return isinstance(exc, TRANSIENT)


def run_with_retries(
    session: Any,
    statement: Any,
    params: Sequence[tuple],
    *,
    concurrency: int,
    retries: int,
    backoff_s: float,
    execution_profile: Any = EXEC_PROFILE_DEFAULT,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "request",
    keep_results: bool = False,
) -> tuple[list[Any], dict[int, BaseException]]:
    """Execute ``statement`` once per params tuple; retry transient failures with backoff.
    With ``statement`` None each item of ``params`` is a statement of its own (a batch).

    Returns (results by index, {index: last error} of failures). A result is the row's
    ``ResultSet`` with ``keep_results`` (reads), else True; None where the row failed.
    An index in the failure map failed permanently or on every attempt.
    """
    results: list[Any] = [None] * len(params)
    pending = list(range(len(params)))
    failed: dict[int, BaseException] = {}
    for attempt in range(retries + 1):
        if attempt:
            delay = min(backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
            log.warning(
                "%s: retrying %d failed row(s) in %.2f s (attempt %d of %d); last error: %s",
                what, len(pending), delay, attempt, retries, describe(next(iter(failed.values()))),
            )  # fmt: skip
            sleep(delay * random.uniform(0.5, 1.0))
        batch = params if len(pending) == len(params) else [params[i] for i in pending]
        run = _Pass(session, statement, batch, execution_profile, keep_results)
        run.run(concurrency)
        if not run.errors and len(pending) == len(params):
            return run.results, {}
        retry: list[int] = []
        for j, idx in enumerate(pending):
            err = run.errors.get(j)
            if err is None:
                results[idx] = run.results[j]
                failed.pop(idx, None)
            else:
                failed[idx] = err
                if is_transient(err):
                    retry.append(idx)
        pending = retry
        if not pending:
            break
    return results, failed


class _Pass:
    """One bounded-concurrency pass over ``params``: at most ``concurrency`` in flight.

    It does what the driver's ``execute_concurrent_with_args`` does — each completion
    starts the next request from its callback — but iteratively. The driver's executor
    recurses once per row when requests fail at once (every host down: the future is
    failed before ``add_callbacks``, which then runs the errback on the spot); past
    Python's recursion limit it records a row twice and fails sorting its results
    (RecursionError, then TypeError), losing every row's outcome. Here a callback that
    runs inside ``_start`` on the same thread only hands its free slot back to the loop.
    """

    def __init__(
        self, session: Any, statement: Any, params: Sequence[tuple], profile: Any, keep: bool
    ) -> None:
        self.session, self.statement, self.params = session, statement, params
        self.profile, self.keep = profile, keep
        self.results: list[Any] = [None] * len(params)
        self.errors: dict[int, BaseException] = {}
        self._next = self._done = 0
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._local = threading.local()

    def run(self, concurrency: int) -> None:
        if self.params:
            self._start(min(concurrency, len(self.params)))
            self._finished.wait()

    def _start(self, slots: int) -> None:
        local = self._local
        if getattr(local, "slots", None) is not None:  # re-entered from a callback: hand back
            local.slots += slots
            return
        local.slots = slots
        try:
            while local.slots > 0:
                local.slots -= 1
                with self._lock:
                    if self._next >= len(self.params):
                        return
                    i = self._next
                    self._next += 1
                try:  # no statement: each item is a whole statement (an unlogged batch)
                    args = (self.params[i],) if self.statement is None else (
                        self.statement, self.params[i])  # fmt: skip
                    future = self.session.execute_async(*args, execution_profile=self.profile)
                except Exception as exc:  # noqa: BLE001 - this row's outcome
                    self._complete(i, None, exc)
                    local.slots += 1
                    continue
                future.add_callbacks(
                    callback=self._on_ok, callback_args=(future, i),
                    errback=self._on_error, errback_args=(future, i),
                )  # fmt: skip
        finally:
            local.slots = None

    def _on_ok(self, rows: Any, future: Any, i: int) -> None:
        # Paging through a kept ResultSet must not call back here: drop the callbacks first.
        future.clear_callbacks()
        self._complete(i, ResultSet(future, rows) if self.keep else True, None)
        self._start(1)

    def _on_error(self, exc: BaseException, future: Any, i: int) -> None:
        self._complete(i, None, exc)
        self._start(1)

    def _complete(self, i: int, result: Any, exc: BaseException | None) -> None:
        with self._lock:
            if exc is None:
                self.results[i] = result
            else:
                self.errors[i] = exc
            self._done += 1
            if self._done == len(self.params):
                self._finished.set()
