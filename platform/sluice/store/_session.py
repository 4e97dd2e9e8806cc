"""One Cassandra session per process, built from ``CassandraConfig``.

``session_for(cfg)`` is what every actor, task and replica calls: it connects on
first use *inside* that process and reuses the session afterwards. The cache is keyed
by ``os.getpid()``: a forked child (Ray workers, multiprocessing) inherits the parent's
dict but never its sockets and event-loop thread, so it connects afresh instead of
reusing a session that cannot work there.

Sessions are closed by an ``atexit`` hook, not ``__del__``: ``Cluster.shutdown()`` joins
the driver's event-loop and executor threads, which may already be gone (or hold the
import lock) when the interpreter runs finalizers, and a finalizer would also run in a
forked child that must not touch the parent's connections. ``atexit`` runs once, in the
process that registered it, while threads still work.

Failures are turned into Sluice errors at this boundary: an unreachable cluster into
``StoreUnavailable`` naming the host(s), refused credentials into ``CredentialsRefused``.
"""

from __future__ import annotations

import atexit
import logging
import os
import ssl
import threading
from typing import Any

from cassandra import AuthenticationFailed, UnresolvableContactPoints
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.policies import (
    ConstantSpeculativeExecutionPolicy,
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    TokenAwarePolicy,
)
from cassandra.query import named_tuple_factory, tuple_factory

from sluice.config import CassandraConfig, ConsistencyLevel
from sluice.errors import ConfigError, CredentialsRefused, StoreUnavailable

__all__ = [
    "TUPLES",
    "CredentialsRefused",
    "build_cluster",
    "close_sessions",
    "connect",
    "consistency",
    "session_for",
]

log = logging.getLogger(__name__)

RECONNECT_MAX_DELAY_S = 10.0
"""Longest wait between attempts to reach a host that went down, with no limit on the
attempts. The driver's default doubles the wait up to 10 minutes, which keeps a client
away for minutes after a short outage has ended (a stream waiting out a 2-minute outage
would give up first); this bounds the lag after recovery to about 10 s."""

SPECULATIVE_ATTEMPTS = 2
"""Extra coordinators an unanswered idempotent request is sent to (``speculative_delay_s``)."""

TUPLES = "sluice_tuples"
"""Execution profile whose rows are plain tuples (bulk reads build Arrow columns from them)."""


def consistency(level: ConsistencyLevel | str) -> int:
    """The driver's code for a consistency level name."""
    from cassandra import ConsistencyLevel as DriverLevel

    return DriverLevel.name_to_value[str(level)]


def _ssl_context(cfg: CassandraConfig) -> ssl.SSLContext | None:
    tls = cfg.tls
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    ctx.check_hostname = tls.verify_hostname
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


def build_cluster(cfg: CassandraConfig) -> Cluster:
    """A ``Cluster`` (not yet connected) with Sluice's policies and timeouts."""

    def profile(row_factory: Any) -> ExecutionProfile:
        # Each profile gets its own policy objects: the driver binds a policy to one cluster.
        return ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(
                DCAwareRoundRobinPolicy(local_dc=cfg.local_datacenter)
            ),
            retry_policy=RetryPolicy(),
            consistency_level=consistency(cfg.read_consistency),
            request_timeout=cfg.request_timeout_s,
            row_factory=row_factory,
            speculative_execution_policy=None if cfg.speculative_delay_s is None else (
                ConstantSpeculativeExecutionPolicy(cfg.speculative_delay_s, SPECULATIVE_ATTEMPTS)),
        )

    auth = (
        PlainTextAuthProvider(cfg.username, cfg.password) if cfg.username is not None else None
    )
    return Cluster(
        contact_points=list(cfg.contact_points),
        port=cfg.port,
        protocol_version=cfg.protocol_version,
        auth_provider=auth,
        ssl_context=_ssl_context(cfg),
        connect_timeout=cfg.connect_timeout_s,
        control_connection_timeout=cfg.connect_timeout_s,
        reconnection_policy=ExponentialReconnectionPolicy(
            base_delay=0.5, max_delay=RECONNECT_MAX_DELAY_S, max_attempts=None
        ),
        execution_profiles={
            EXEC_PROFILE_DEFAULT: profile(named_tuple_factory),
            TUPLES: profile(tuple_factory),
        },
    )


def _hosts(cfg: CassandraConfig) -> str:
    return ", ".join(f"{h}:{cfg.port}" for h in cfg.contact_points)


def _refused(errors: dict[Any, Any]) -> Exception | None:
    for err in errors.values():
        if isinstance(err, AuthenticationFailed):
            return err
    return None


def connect(cfg: CassandraConfig) -> tuple[Cluster, Session]:
    """A new, connected (cluster, session) pair; the caller owns and shuts it down."""
    try:
        cluster = build_cluster(cfg)
    except UnresolvableContactPoints as exc:
        raise StoreUnavailable(
            f"cannot resolve any Cassandra contact point ({_hosts(cfg)}); check "
            "cassandra.contact_points and DNS"
        ) from exc
    except (ValueError, OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cassandra: cannot build a client for {_hosts(cfg)}: {exc}") from exc
    try:
        session = cluster.connect()
    except NoHostAvailable as exc:
        cluster.shutdown()
        refused = _refused(exc.errors)
        if refused is not None:
            who = f"user {cfg.username!r}" if cfg.username else "no credentials (none configured)"
            raise CredentialsRefused(
                f"Cassandra at {_hosts(cfg)} refused the credentials ({who}): {refused}; "
                "check cassandra.username / cassandra.password"
            ) from exc
        detail = "; ".join(f"{host}: {err}" for host, err in exc.errors.items()) or str(exc)
        raise StoreUnavailable(
            f"cannot reach Cassandra at {_hosts(cfg)} (connect timeout "
            f"{cfg.connect_timeout_s:g} s): {detail}"
        ) from exc
    except AuthenticationFailed as exc:
        cluster.shutdown()
        raise CredentialsRefused(
            f"Cassandra at {_hosts(cfg)} refused the credentials: {exc}; "
            "check cassandra.username / cassandra.password"
        ) from exc
    except Exception as exc:  # the driver raises bare DriverException/OSError on odd failures
        cluster.shutdown()
        raise StoreUnavailable(f"cannot connect to Cassandra at {_hosts(cfg)}: {exc}") from exc
    return cluster, session


_LOCK = threading.Lock()
_SESSIONS: dict[tuple[int, str], tuple[Cluster, Session]] = {}


def session_for(cfg: CassandraConfig) -> Session:
    """This process's session for ``cfg``: connected on first call, reused afterwards."""
    key = (os.getpid(), cfg.model_dump_json())
    with _LOCK:
        found = _SESSIONS.get(key)
        if found is not None and not found[0].is_shutdown:
            return found[1]
        cluster, session = connect(cfg)
        _SESSIONS[key] = (cluster, session)
        return session


def close_sessions() -> None:
    """Shut down the sessions this process opened (run at exit; safe to call twice)."""
    pid = os.getpid()
    with _LOCK:
        mine = [k for k in _SESSIONS if k[0] == pid]
        pairs = [_SESSIONS.pop(k) for k in mine]
    for cluster, _ in pairs:
        try:
            cluster.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit; nothing left to report to
            log.debug("error while shutting down a Cassandra cluster", exc_info=True)


atexit.register(close_sessions)
