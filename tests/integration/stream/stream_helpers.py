"""Stream integration helpers: real Kafka, Cassandra and Ray; a keyspace and topic per test.

Consumers run as real `python -m pipelines.stream_score` driver processes joined to the
test session's Ray (so they can be SIGKILLed and SIGTERMed like a real job), or in
process through ``pipelines.stream_score.run``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from sluice.config import REPO_ROOT, PlatformConfig
from sluice.contract import load_contract
from sluice.datagen import GeneratedData, InvalidKind, generate_dataset, to_json_messages
from sluice.features import InMemoryFeatureStore
from sluice.models import ModelRegistry
from sluice.scoring import Scorer
from sluice.store import apply_schema, schema_change, session_for
from sluice.stream import ensure_topic, produce_messages, read_topic

KINDS = [k for k in InvalidKind if k is not InvalidKind.DUPLICATE_KEY]


_RUN = uuid.uuid4().hex[:8]


def alerts_topic(keyspace: str) -> str:
    """A keyspace's alert topic template, new in each test session (Kafka outlives it)."""
    return f"test-{keyspace}-{_RUN}-{{contract}}-alerts"


@dataclass
class StreamEnv:
    base: PlatformConfig
    registry: ModelRegistry
    registry_root: Path
    ray_address: str
    root: Path

    def cfg(self, keyspace: str, cassandra_port: int | None = None) -> PlatformConfig:
        """The platform config with ``keyspace`` (dropped and re-created) and the registry;
        ``cassandra_port``: a Cassandra of the test's own instead of the shared one."""
        port = cassandra_port or self.base.cassandra.port
        cassandra = self.base.cassandra.model_copy(update={"keyspace": keyspace, "port": port})
        cfg = self.base.model_copy(update={
            "cassandra": cassandra,
            "kafka": self.base.kafka.model_copy(update={"alerts_topic": alerts_topic(keyspace)}),
            "registry": self.base.registry.model_copy(update={"root_uri": str(self.registry_root)}),
        })  # fmt: skip
        session = session_for(cfg.cassandra)
        schema_change(session, f"DROP KEYSPACE IF EXISTS {keyspace}")
        apply_schema(session, cfg.cassandra, [load_contract("fraud")])
        return cfg

    def env(self, keyspace: str, cassandra_port: int | None = None) -> dict[str, str]:
        """Environment of a driver process: this keyspace (on ``cassandra_port``), registry
        and Ray."""
        port = cassandra_port or self.base.cassandra.port
        return {**os.environ, "SLUICE_CASSANDRA__KEYSPACE": keyspace,
                "SLUICE_CASSANDRA__PORT": str(port),
                "SLUICE_REGISTRY__ROOT_URI": str(self.registry_root),
                "SLUICE_RAY__ADDRESS": self.ray_address, "RAY_AUTH_MODE": "disabled",
                "SLUICE_KAFKA__ALERTS_TOPIC": alerts_topic(keyspace),
                "PYTHONUNBUFFERED": "1"}  # fmt: skip


def new_topic(cfg: PlatformConfig, partitions: int = 4) -> str:
    """A fresh topic (AdminClient.create_topics) for one test."""
    topic = f"sluice-test-{uuid.uuid4().hex[:12]}"
    assert ensure_topic(cfg.kafka, topic, partitions) == partitions
    return topic


@dataclass
class Produced:
    """What a test sent, and what each event must become."""

    data: GeneratedData
    payloads: list[bytes]
    keys: list[bytes | None]
    positions: list[tuple[int, int]]  # (partition, offset) per message
    wrong_type_keys: frozenset[str]
    malformed_positions: frozenset[int]
    topic: str

    @property
    def invalid_keys(self) -> set[str]:
        return set(self.data.invalid_keys) | set(self.wrong_type_keys)

    @property
    def valid_table(self) -> pa.Table:
        t = self.data.table.filter(pa.array(self.data.valid_mask))
        ids = t["transaction_id"].to_pylist()
        return t.filter(pa.array([i not in self.wrong_type_keys for i in ids]))

    @property
    def valid_keys(self) -> set[str]:
        return set(self.valid_table["transaction_id"].to_pylist())

    @property
    def malformed_keys(self) -> set[str]:
        return {f"{self.topic}:{p}:{o}" for i, (p, o) in enumerate(self.positions)
                if i in self.malformed_positions}  # fmt: skip

    def prefix(self, n: int) -> Produced:
        """The first ``n`` messages (and their events) only: what was actually sent."""
        rows = n - sum(1 for i in self.malformed_positions if i < n)
        table = self.data.table.slice(0, rows)
        ids = set(table["transaction_id"].to_pylist())
        data = GeneratedData(table, {i: k for i, k in self.data.invalid_rows.items() if i < rows})
        malformed = frozenset(i for i in self.malformed_positions if i < n)
        return Produced(data, self.payloads[:n], self.keys[:n], self.positions[:n],
                        frozenset(self.wrong_type_keys & ids), malformed, self.topic)  # fmt: skip

    def offset_of(self) -> dict[str, tuple[int, int]]:
        """Event id -> (partition, offset) of its message (events only, not malformed)."""
        out = {}
        for i, payload in enumerate(self.payloads):
            if i not in self.malformed_positions:
                out[json.loads(payload)["transaction_id"]] = self.positions[i]
        return out


def lost_acknowledged(cfg: PlatformConfig, produced: Produced) -> list[str]:
    """The messages Kafka acknowledged (a delivery report with its partition and offset)
    that its log does not hold there: read back from the start of every partition. Empty
    where the broker kept them all; else one line per message, naming what the log holds
    at its offset (another message: two acknowledged at one offset; nothing: past the end
    or compacted away). Tells a broker's loss from the stream job's."""
    log = {(m.partition(), m.offset()): m.value()
           for m in read_topic(cfg.kafka, produced.topic)}  # fmt: skip
    out = []
    for i, (payload, at) in enumerate(zip(produced.payloads, produced.positions,
                                          strict=True)):  # fmt: skip
        held = log.get(at)
        if held != payload:
            other = ("nothing" if held is None else f"message {produced.payloads.index(held)}"
                     if held in produced.payloads else "an unknown message")  # fmt: skip
            out.append(f"message {i} (key {produced.keys[i]!r}) acknowledged at {at}, "
                       f"the log holds {other} there")
    return out


def make_messages(n: int, seed: int, *, invalid: float, wrong_types: float, malformed: float,
                  topic: str) -> Produced:  # fmt: skip
    data = generate_dataset(n, seed, invalid_fraction=invalid, invalid_kinds=KINDS)
    msgs = to_json_messages(data.table, wrong_type_fraction=wrong_types,
                            malformed_fraction=malformed, seed=seed)  # fmt: skip
    return Produced(data, msgs.payloads, msgs.partition_keys, [], msgs.wrong_type_keys,
                    msgs.malformed_positions, topic)  # fmt: skip


def produce(cfg: PlatformConfig, produced: Produced, start: int = 0, stop: int | None = None,
            rate: float | None = None) -> None:  # fmt: skip
    """Send messages [start, stop) and record where each one landed."""
    stop = len(produced.payloads) if stop is None else stop
    report = produce_messages(
        cfg.kafka, produced.topic, produced.payloads[start:stop], produced.keys[start:stop],
        rate=rate, record_positions=True,
    )  # fmt: skip
    if len(produced.positions) < len(produced.payloads):
        produced.positions.extend([(-1, -1)] * (len(produced.payloads) - len(produced.positions)))
    produced.positions[start:stop] = report.positions


def group_members(cfg: PlatformConfig, group: str) -> int:
    """Members of a consumer group right now (AdminClient.describe_consumer_groups)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(cfg.kafka.client_settings())
    found = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return len(found.members)


def write_job(root: Path, name: str, topic: str, **fields) -> Path:
    job = {"name": name, "contract": "fraud", "topic": topic, "consumers": 1,
           "max_batch_messages": 1000, "max_batch_wait_ms": 300, "session_timeout_ms": 6000,
           "num_cpus_per_consumer": 0.5, **fields}  # fmt: skip
    path = root / f"{name}.yaml"
    path.write_text(json.dumps(job))  # JSON is YAML
    return path


class Driver:
    """A `python -m pipelines.stream_score` process."""

    def __init__(self, job: Path, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.stream_score", "--job", str(job), *args],
            cwd=REPO_ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.close()

    def summary(self) -> dict:
        for line in reversed(self.log.read_text(errors="replace").splitlines()):
            if line.startswith('{"stream_summary"'):
                return json.loads(line)["stream_summary"]
        raise AssertionError(f"no summary in {self.log}:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.wait(30)


def consumer_actor_pids() -> list[int]:
    """Processes of StreamConsumer actors (Ray titles them ``ray::StreamConsumer...``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "ray::StreamConsumer" in cmd:
                pids.append(int(entry.name))
    return pids


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.3,
             detail: Callable[[], str] | None = None) -> None:  # fmt: skip
    """Poll ``condition`` until true; past ``timeout``, fail naming ``what`` (and what
    ``detail()`` says of the state then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                         + (f": {detail()}" if detail else ""))  # fmt: skip


# -- reading back ------------------------------------------------------------------------------
def predictions(cfg: PlatformConfig) -> dict[str, tuple]:
    """key -> (card, event time, score, model version, features, decision, policy id)."""
    ks = cfg.cassandra.keyspace
    rows = session_for(cfg.cassandra).execute(
        f"SELECT transaction_id, card_id, event_time, score, model_version, features, "
        f"decision, policy_id FROM {ks}.predictions", timeout=60,
    )  # fmt: skip
    return {r.transaction_id: (r.card_id, r.event_time, r.score, r.model_version,
                               dict(r.features), r.decision, r.policy_id)
            for r in rows}  # fmt: skip


def alert_rows(cfg: PlatformConfig) -> tuple[list[tuple], dict[str, tuple]]:
    """(key, decision, policy id) of every row of ``alerts`` (a list: a second row for a key
    would show) and of ``alerts_by_key``."""
    ks, session = cfg.cassandra.keyspace, session_for(cfg.cassandra)
    cols = "key, decision, policy_id"
    by_day = [tuple(r) for r in session.execute(f"SELECT {cols} FROM {ks}.alerts", timeout=60)]
    by_key = {r[0]: tuple(r) for r in session.execute(f"SELECT {cols} FROM {ks}.alerts_by_key",
                                                      timeout=60)}  # fmt: skip
    return by_day, by_key


def alert_reasons(cfg: PlatformConfig) -> dict[str, list[dict]]:
    """key -> the parsed ``reasons`` of its row in ``alerts_by_key``."""
    ks = cfg.cassandra.keyspace
    rows = session_for(cfg.cassandra).execute(f"SELECT key, reasons FROM {ks}.alerts_by_key",
                                              timeout=60)  # fmt: skip
    return {r.key: json.loads(r.reasons) for r in rows}


def topic_alerts(cfg: PlatformConfig, topic: str) -> list[dict]:
    """Every alert on ``topic`` as a ``read_committed`` reader sees it (a list: a second
    message for a key would show), read from the start to the end of each partition."""
    return [json.loads(m.value()) for m in read_topic(cfg.kafka, topic)]


def prediction_keys(cfg: PlatformConfig) -> set[str]:
    ks = cfg.cassandra.keyspace
    rows = session_for(cfg.cassandra).execute(f"SELECT transaction_id FROM {ks}.predictions",
                                              timeout=60)  # fmt: skip
    return {r.transaction_id for r in rows}


def quarantine(cfg: PlatformConfig, source: str) -> list[tuple[str, str]]:
    """(key, reasons) of every quarantine row of ``source`` (a list: duplicates would show)."""
    ks = cfg.cassandra.keyspace
    rows = session_for(cfg.cassandra).execute(f"SELECT source, key, reasons FROM {ks}.quarantine",
                                              timeout=60)  # fmt: skip
    return [(r.key, r.reasons) for r in rows if r.source == source]


def feature_event_keys(cfg: PlatformConfig) -> list[str]:
    ks = cfg.cassandra.keyspace
    rows = session_for(cfg.cassandra).execute(f"SELECT key FROM {ks}.fraud_feature_events",
                                              timeout=60)  # fmt: skip
    return [r.key for r in rows]


def reference_scores(registry: ModelRegistry, valid: pa.Table) -> dict[str, tuple[float, dict]]:
    """The valid events scored in one go in memory: key -> (score, features)."""
    contract = load_contract("fraud")
    scored = Scorer(contract, registry, InMemoryFeatureStore()).score(valid).scored
    names = list(contract.feature_names)
    cols = {n: scored[n].to_numpy().astype("float64") for n in names}
    return {
        key: (score, {n: float(cols[n][i]) for n in names})
        for i, (key, score) in enumerate(zip(scored["key"].to_pylist(),
                                             scored["score"].to_pylist(), strict=True))
    }  # fmt: skip
