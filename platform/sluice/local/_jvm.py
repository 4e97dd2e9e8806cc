"""JVM plumbing shared by the local servers: JDK 17, Maven fetch, processes by recorded pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sluice.errors import LocalServiceError

POM_DIR = Path(__file__).resolve().parent


def find_java17() -> Path:
    """Debian's OpenJDK 17, never whichever JDK is first on PATH.

    Cassandra calls System.setSecurityManager, which throws on JDK 24 and newer,
    so the JDK is chosen by version. SLUICE_JAVA overrides the search.
    """
    override = os.environ.get("SLUICE_JAVA")
    candidates: list[str] = [override] if override else []
    if not override:
        alt = shutil.which("update-alternatives")
        if alt:
            out = subprocess.run(
                [alt, "--list", "java"], capture_output=True, text=True, check=False
            ).stdout
            candidates += [line.strip() for line in out.splitlines() if line.strip()]
        candidates += sorted(str(p) for p in Path("/usr/lib/jvm").glob("*17*/bin/java"))
    for cand in candidates:
        if Path(cand).is_file() and java_major_version(Path(cand)) == 17:
            return Path(cand)
    raise LocalServiceError(
        "no JDK 17 found (looked at `update-alternatives --list java` and /usr/lib/jvm). "
        "Install it with `apt-get install -y openjdk-17-jre-headless`, or point SLUICE_JAVA "
        "at a JDK 17 `java` binary. Cassandra 5.0 fails on JDK 24 and newer."
    )


def java_major_version(java: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    # e.g.: openjdk version "17.0.15" 2025-04-15
    for token in out.split('"')[1:2]:
        head = token.split(".")[0]
        return int(head) if head.isdigit() else None
    return None


def fetch_jars(pom: str, version_property: str, version: str, lib_dir: Path) -> bool:
    """Resolve a server's runtime classpath into lib_dir once; True when it downloaded.

    A marker file makes the second call free: no mvn process, no network.
    """
    marker = lib_dir / ".complete"
    if marker.exists():
        return False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalServiceError(
            "`mvn` (Apache Maven) is missing: it fetches Cassandra and Kafka from Maven Central. "
            "Install it with `apt-get install -y maven`."
        )
    lib_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        # --strict-checksums: a jar whose .sha1 from Maven Central does not match fails
        # the fetch (Maven 3's default only warns, and -q hides the warning).
        mvn, "-B", "-q", "--strict-checksums", "-f", str(POM_DIR / pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={lib_dir}", f"-D{version_property}={version}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise LocalServiceError(f"mvn could not fetch {pom} ({version}):\n{tail}")
    marker.write_text(version + "\n")
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ProcessRecord:
    """What `up` records of a server it started, so `down` stops exactly that process."""

    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a reused pid from ours
    log: str
    mode: str = ""  # server-specific settings that need a restart to change (e.g. auth)

    def save(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f"{self.name}.json.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(run_dir / f"{self.name}.json")

    @classmethod
    def load(cls, run_dir: Path, name: str) -> ProcessRecord | None:
        path = run_dir / f"{name}.json"
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def alive(self) -> bool:
        return process_start_ticks(self.pid) == self.start_ticks

    def forget(self, run_dir: Path) -> None:
        (run_dir / f"{self.name}.json").unlink(missing_ok=True)


def process_start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after the last ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return int(fields[19])


def spawn(name: str, cmd: list[str], log: Path, cwd: Path, mode: str = "",
          env: dict[str, str] | None = None) -> ProcessRecord:  # fmt: skip
    """Start a server in its own session (it outlives this process), output to its log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, start_new_session=True, env=env,
        )  # fmt: skip
    # A process that already exited has no start time: the record is then never alive,
    # and the readiness wait reports the exit with the server's log.
    ticks = process_start_ticks(proc.pid)
    return ProcessRecord(name, proc.pid, -1 if ticks is None else ticks, str(log), mode)


def stop(*records: ProcessRecord, timeout_s: float | Sequence[float] = 60.0) -> list[bool]:
    """SIGTERM the recorded process groups together, SIGKILL what is left of a group after
    its timeout (one for all, or one per record); for each record, True when its server
    was running.

    Returns once no live process is left in any group (the servers and anything they
    forked, also when the server itself had died and left helpers behind: a Ray node
    whose raylet was killed leaves its agents holding the node's ports for a while).
    Nodes of one service stop together: a KRaft broker shut down after its quorum has
    gone waits for a controller that never answers. A record whose pid now belongs to
    another process (started after ours: the pid was reused, say after a reboot) is never
    signalled: Linux reuses no pid while a group of that id has a member, so ours is gone.
    """
    timeouts = [timeout_s] * len(records) if isinstance(timeout_s, int | float) else timeout_s
    running = [r.alive() for r in records]
    groups = [(r.pid, t) for r, t in zip(records, timeouts, strict=True)
              if process_start_ticks(r.pid) in (None, r.start_ticks) and group_members(r.pid)]
    for pgid, _ in groups:
        _signal_group(pgid, signal.SIGTERM)
    signalled = time.monotonic()
    for pgid, timeout in groups:
        if not _wait_group_gone(pgid, max(0.0, signalled + timeout - time.monotonic())):
            _signal_group(pgid, signal.SIGKILL)
            _wait_group_gone(pgid, 10.0)
    return running


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is pgid."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        _reap(pgid)
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (tests start it in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {log})"
    return "\n".join(f"    {line}" for line in text[-lines:])
