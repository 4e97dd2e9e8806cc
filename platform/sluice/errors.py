"""The one exceptions module of Sluice.

The tree is branched by what the caller can do about an error:

    SluiceError
    ├── ConfigError            a config file, contract or job is wrong: fix the file
    │   ├── UnsupportedExpectation   a suite uses an expectation the compiled engine cannot run
    │   └── CredentialsRefused       Cassandra refused the configured username/password
    ├── ValidationFailed       input rows broke the contract: fix the data (rows are quarantined)
    ├── RowsUnaccounted        a job could not place every input row in exactly one output: a bug
    ├── ModelNotFound          no such model, version or alias in the registry
    ├── PromotionRefused       a version failed its contract's promotion gate: retrain it, or
    │                          force the promotion with a recorded reason
    ├── StoreUnavailable       Cassandra cannot be reached or refused the request: retry later
    │   └── WriteFailed        some rows were not written; carries the keys that failed
    ├── StreamError            Kafka cannot be reached or refused the request
    └── LocalServiceError      `sluice local` could not fetch, start or stop a server

Third-party errors are wrapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ConfigError",
    "CredentialsRefused",
    "LocalServiceError",
    "ModelNotFound",
    "PromotionRefused",
    "RowsUnaccounted",
    "SluiceError",
    "StoreUnavailable",
    "StreamError",
    "UnsupportedExpectation",
    "ValidationFailed",
    "WriteFailed",
]


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""


class ConfigError(SluiceError):
    """A config file, contract, suite or job definition is invalid."""


class UnsupportedExpectation(ConfigError):
    """An expectation type the compiled validation engine cannot evaluate."""


class CredentialsRefused(ConfigError):
    """Cassandra refused the configured username/password (fix ``cassandra.username``)."""


class ValidationFailed(SluiceError):
    """Input rows failed the contract's expectations.

    ``reasons`` holds one entry per failing row: a list of dicts with the
    expectation type, the column and the offending value.
    """

    def __init__(self, message: str, reasons: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.reasons = list(reasons)


class ModelNotFound(SluiceError):
    """No such model, version or alias in the registry."""


class PromotionRefused(SluiceError):
    """A version may not become champion: its gate report failed, is missing, or was made
    for another gate. ``failures`` names each failed check with its figure and threshold."""

    def __init__(self, message: str, failures: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


class StoreUnavailable(SluiceError):
    """Cassandra could not be reached or refused the request."""


class WriteFailed(StoreUnavailable):
    """A write gave up after its retries; nothing was dropped silently.

    Failures are per row: ``retry_rows`` holds the rows a later try may still write
    (transient failures, and rows not attempted yet), ``refused_rows`` the rows the store
    refused for good (a retry cannot fix them), both as the table given to ``write``.
    """

    def __init__(
        self,
        message: str,
        written: int,
        failed_keys: Sequence[Any],
        retry_rows: Any = None,
        refused_rows: Any = None,
    ) -> None:
        super().__init__(message)
        self.written = written
        self.failed_keys = list(failed_keys)
        self.retry_rows = retry_rows
        self.refused_rows = refused_rows


class StreamError(SluiceError):
    """Kafka could not be reached or refused the request."""


class LocalServiceError(SluiceError):
    """`sluice local` could not fetch, start, check or stop a local server."""


class RowsUnaccounted(SluiceError):
    """A job could not place every input row in exactly one of its outputs (predictions or
    quarantine): its passes disagreed on a row, or its counts do not add up. A bug to
    report with the message; the job stops rather than lose or double-count a row."""
