"""The one exceptions module of Sluice.

The tree is branched by what the caller can do about an error:

    SluiceError
    ├── ConfigError            a config file, contract or job is wrong: fix the file
    │   ├── UnsupportedExpectation   a suite uses an expectation the compiled engine cannot run
    │   └── CredentialsRefused       Cassandra refused the configured username/password
    ├── ValidationFailed       input rows broke the contract: fix the data (rows are quarantined)
    ├── ModelNotFound          no such model, version or alias in the registry
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


class StoreUnavailable(SluiceError):
    """Cassandra could not be reached or refused the request."""


class WriteFailed(StoreUnavailable):
    """A write gave up after its retries; nothing was dropped silently."""

    def __init__(self, message: str, written: int, failed_keys: Sequence[Any]) -> None:
        super().__init__(message)
        self.written = written
        self.failed_keys = list(failed_keys)


class StreamError(SluiceError):
    """Kafka could not be reached or refused the request."""


class LocalServiceError(SluiceError):
    """`sluice local` could not fetch, start, check or stop a local server."""
