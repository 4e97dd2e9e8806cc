"""`sluice local up | down | status`: real Cassandra and Kafka on 127.0.0.1.

Layout under the state directory (configs/platform.yaml `local.state_dir`):
    lib/cassandra-<v>/   lib/kafka-<v>/     jars from Maven Central (fetched once)
    cassandra/{conf,data,logs}  kafka/{conf,data,logs}
    run/<name>.json      the pid (and its start time) of each server `up` started
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sluice.config import PlatformConfig
from sluice.errors import LocalServiceError
from sluice.local import _cassandra, _jvm, _kafka

SERVICES = (_cassandra.NAME, _kafka.NAME)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool  # the process `up` recorded is alive
    healthy: bool  # and it answers its health check
    pid: int | None
    detail: str


class LocalServices:
    """Fetch, start, health-check and stop the local servers described by one config."""

    def __init__(self, cfg: PlatformConfig, echo: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.echo = echo
        self.state = cfg.resolve(cfg.local.state_dir)
        self.run_dir = self.state / "run"

    # -- paths ------------------------------------------------------------------------------
    def _lib(self, name: str) -> Path:
        version = self.cfg.local.cassandra_version if name == _cassandra.NAME else (
            self.cfg.local.kafka_version
        )
        return self.state / "lib" / f"{name}-{version}"

    def _home(self, name: str) -> Path:
        return self.state / name

    def _ports(self, name: str) -> dict[str, int]:
        return (_cassandra if name == _cassandra.NAME else _kafka).ports(self.cfg)

    def _record(self, name: str) -> _jvm.ProcessRecord | None:
        return _jvm.ProcessRecord.load(self.run_dir, name)

    # -- commands ---------------------------------------------------------------------------
    def up(self, auth: bool = False) -> dict[str, float]:
        """Start whatever is not running; wait until both answer. Returns seconds per server."""
        want_mode = {_cassandra.NAME: _cassandra.mode(auth), _kafka.NAME: ""}
        to_start = []
        for name in SERVICES:
            rec = self._record(name)
            if rec is not None and rec.alive():
                if rec.mode != want_mode[name]:
                    raise LocalServiceError(
                        f"{name} is already running with {rec.mode or 'default settings'}; "
                        f"run `sluice local down` first to restart it with {want_mode[name]}"
                    )
                self.echo(f"{name}: already running (pid {rec.pid})")
                continue
            if rec is not None:
                rec.forget(self.run_dir)
            self._check_ports_free(name)
            to_start.append(name)

        java = _jvm.find_java17() if to_start else None
        t0 = time.monotonic()
        for name, pom, prop, version in (
            (_cassandra.NAME, _cassandra.POM, _cassandra.VERSION_PROPERTY,
             self.cfg.local.cassandra_version),
            (_kafka.NAME, _kafka.POM, _kafka.VERSION_PROPERTY, self.cfg.local.kafka_version),
        ):  # fmt: skip
            if name in to_start:
                fetched = _jvm.fetch_jars(pom, prop, version, self._lib(name))
                if fetched:
                    self.echo(f"{name}: fetched {version} from Maven Central "
                              f"({time.monotonic() - t0:.1f} s)")

        started: dict[str, float] = {}
        begun: dict[str, float] = {}
        for name in to_start:
            begun[name] = time.monotonic()
            self._start(name, java, auth)  # type: ignore[arg-type]
        for name in to_start:
            self._wait_ready(name, auth)
            started[name] = time.monotonic() - begun[name]
            self.echo(f"{name}: ready in {started[name]:.1f} s")
        return started

    def down(self) -> list[str]:
        """Stop exactly the processes `up` recorded; returns the names stopped."""
        stopped = []
        for name in reversed(SERVICES):
            rec = self._record(name)
            if rec is None:
                self.echo(f"{name}: not started by sluice")
                continue
            if _jvm.stop(rec):
                stopped.append(name)
                self.echo(f"{name}: stopped (pid {rec.pid})")
            else:
                self.echo(f"{name}: was not running")
            rec.forget(self.run_dir)
        return stopped

    def status(self) -> list[ServiceStatus]:
        out = []
        for name in SERVICES:
            rec = self._record(name)
            if rec is None or not rec.alive():
                out.append(ServiceStatus(name, False, False, None, "down"))
                continue
            detail = self._health(name, auth=rec.mode == "auth=password")
            out.append(ServiceStatus(name, True, detail is not None, rec.pid,
                                     detail or "running, not answering"))  # fmt: skip
        return out

    # -- internals --------------------------------------------------------------------------
    def _check_ports_free(self, name: str) -> None:
        for what, port in self._ports(name).items():
            if _jvm.port_open(port):
                raise LocalServiceError(
                    f"port {port} ({name} {what}) is already taken by another program; "
                    f"stop it (`ss -ltnp 'sport = :{port}'` shows which) or change the port "
                    "in configs/platform.yaml / SLUICE_* variables"
                )

    def _start(self, name: str, java: Path, auth: bool) -> None:
        home, lib = self._home(name), self._lib(name)
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        if name == _cassandra.NAME:
            _cassandra.write_config(self.cfg, home, auth)
            cmd, mode = _cassandra.command(self.cfg, java, lib, home), _cassandra.mode(auth)
        else:
            _kafka.write_config(self.cfg, home)
            _kafka.format_storage(self.cfg, java, lib, home)
            cmd, mode = _kafka.command(self.cfg, java, lib, home), ""
        rec = _jvm.spawn(name, cmd, home / "logs" / "server.log", cwd=home, mode=mode)
        rec.save(self.run_dir)

    def _health(self, name: str, auth: bool) -> str | None:
        if name == _cassandra.NAME:
            version = _cassandra.ready(self.cfg, auth)
            where = f"127.0.0.1:{self.cfg.cassandra.port}"
            return f"Cassandra {version} on {where}" if version else None
        brokers = _kafka.ready(self.cfg)
        return f"Kafka {brokers} on {self.cfg.kafka.bootstrap_servers[0]}" if brokers else None

    def _wait_ready(self, name: str, auth: bool) -> None:
        rec = self._record(name)
        assert rec is not None
        main_port = next(iter(self._ports(name).values()))
        deadline = time.monotonic() + self.cfg.local.start_timeout_s
        while time.monotonic() < deadline:
            if not rec.alive():
                rec.forget(self.run_dir)
                raise LocalServiceError(
                    f"{name} exited during start; last lines of {rec.log}:\n"
                    f"{_jvm.log_tail(Path(rec.log))}"
                )
            if _jvm.port_open(main_port) and self._health(name, auth) is not None:
                return
            time.sleep(0.5)
        raise LocalServiceError(
            f"{name} did not answer within {self.cfg.local.start_timeout_s:.0f} s "
            f"(it is still running, pid {rec.pid}); last lines of {rec.log}:\n"
            f"{_jvm.log_tail(Path(rec.log))}"
        )

