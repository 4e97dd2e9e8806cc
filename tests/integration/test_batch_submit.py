"""The batch job submitted as a Ray job to a head started with `ray start --head`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from fixture_models import train_champion

from pipelines.train import TrainConfig
from sluice.config import REPO_ROOT
from sluice.contract import load_contract
from sluice.datagen import generate_dataset, write_parquet
from sluice.local import RAY_SYSTEM_CONFIG, _jvm
from sluice.models import ModelRegistry
from sluice.store import apply_schema, schema_change, session_for

pytestmark = pytest.mark.integration

KEYSPACE = "sluice_test_submit"
DASHBOARD = 8266  # the session's own local Ray has no dashboard; this head is separate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    """`ray start --head` in its own process group, stopped by that group (never `ray stop`,
    which would also stop the test session's Ray)."""
    # Short: Ray's unix sockets live under the temp dir (107-byte path limit).
    tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    ray = Path(sys.executable).parent / "ray"
    # Every port of its own: the test session's Ray (ray_session) already holds Ray's
    # defaults, and a head whose dashboard agent cannot bind never accepts a job.
    agent, agent_grpc, metrics, runtime_env = (free_port() for _ in range(4))
    cmd = [str(ray), "start", "--head", "--block", "--port=6390",
           f"--dashboard-port={DASHBOARD}", "--include-dashboard=true", "--num-cpus=2",
           "--ray-client-server-port=10011", "--min-worker-port=12000",
           "--max-worker-port=12999", f"--temp-dir={tmp}",
           f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={runtime_env}",
           f"--system-config={json.dumps(RAY_SYSTEM_CONFIG)}"]  # fmt: skip
    rec = _jvm.spawn("ray-head", cmd, tmp / "head.log", cwd=tmp)
    address = f"http://127.0.0.1:{DASHBOARD}"
    try:
        deadline = time.monotonic() + 180
        while not _jvm.port_open(DASHBOARD):
            assert rec.alive(), _jvm.log_tail(tmp / "head.log")
            assert time.monotonic() < deadline, "ray head did not open its dashboard in 180 s"
            time.sleep(1)
        _wait_until_jobs_run(address, deadline)
        yield address
    finally:
        # `ray start --block` with its GCS and monitor takes about 35 s to leave after SIGTERM
        # (measured); a test's throwaway head gets 10 s, then SIGKILL, as `sluice local` nodes.
        _jvm.stop(rec, timeout_s=10)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_until_jobs_run(address: str, deadline: float) -> None:
    """The dashboard answers before the node's job agent registers ("No available agent to
    submit job"): ready means a trivial job was accepted and succeeded."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    while True:
        try:
            job_id = client.submit_job(entrypoint="true")
            break
        except RuntimeError as exc:
            assert "No available agent" in str(exc), exc
            assert time.monotonic() < deadline, "the head's job agent never registered"
            time.sleep(1)
    while (status := client.get_job_status(job_id)) not in (
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED,
    ):  # fmt: skip
        assert time.monotonic() < deadline, "the readiness job did not finish"
        time.sleep(0.5)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job_id)


@pytest.fixture(scope="module")
def job_files(local_services, platform_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("submit")
    cfg = platform_config.model_copy(update={
        "cassandra": platform_config.cassandra.model_copy(update={"keyspace": KEYSPACE}),
        "registry": platform_config.registry.model_copy(update={"root_uri": str(root / "reg")}),
    })  # fmt: skip
    schema_change(session_for(cfg.cassandra), f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    apply_schema(session_for(cfg.cassandra), cfg.cassandra, [load_contract("fraud")])
    train_champion(TrainConfig(rows=5_000, epochs=1), ModelRegistry.from_config(cfg))
    data = generate_dataset(3_000, seed=4, invalid_fraction=0.03)
    write_parquet(data.table, root / "in" / "part-0.parquet")
    platform_yaml = root / "platform.yaml"
    platform_yaml.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    job_yaml = root / "job.yaml"
    job_yaml.write_text(yaml.safe_dump({
        "name": "submitted", "contract": "fraud", "batch_rows": 1024,
        "input": {"paths": [str(root / "in" / "*.parquet")]},
        "actors": {"min_actors": 1, "max_actors": 1},
        "summary_path": str(root / "summary.json"),
    }))  # fmt: skip
    valid = set(data.table["transaction_id"].filter(pa.array(data.valid_mask)).to_pylist())
    return cfg, platform_yaml, job_yaml, valid, data.invalid_keys


def _entrypoint(platform_yaml: Path, job_yaml: Path) -> str:
    return (f"{sys.executable} -m pipelines.batch_score --job {job_yaml} "
            f"--config {platform_yaml}")  # fmt: skip


def _stored(cfg) -> tuple[set[str], set[str]]:
    s = session_for(cfg.cassandra)
    rows = s.execute(f"SELECT transaction_id FROM {KEYSPACE}.predictions")
    preds = {r.transaction_id for r in rows}
    quar = {r.key for r in s.execute(f"SELECT key FROM {KEYSPACE}.quarantine")}
    return preds, quar


def test_ray_job_submit_cli(head, job_files):
    cfg, platform_yaml, job_yaml, valid, invalid = job_files
    ray = Path(sys.executable).parent / "ray"
    proc = subprocess.run(
        [str(ray), "job", "submit", "--address", head, "--working-dir", str(REPO_ROOT), "--",
         *_entrypoint(platform_yaml, job_yaml).split()],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rows scored" in proc.stdout and "succeeded" in proc.stdout
    assert _stored(cfg) == (valid, invalid)


def test_job_submission_client(head, job_files):
    from ray.job_submission import JobStatus, JobSubmissionClient

    cfg, platform_yaml, job_yaml, valid, invalid = job_files
    client = JobSubmissionClient(head)
    job_id = client.submit_job(
        entrypoint=_entrypoint(platform_yaml, job_yaml),
        runtime_env={"working_dir": str(REPO_ROOT)},
    )
    deadline = time.monotonic() + 600
    while (status := client.get_job_status(job_id)) not in (
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED,
    ):  # fmt: skip
        assert time.monotonic() < deadline, "job did not finish in 600 s"
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "rows quarantined" in logs
    assert _stored(cfg) == (valid, invalid)


def test_failed_job_reports_its_cause(head, job_files, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    _, platform_yaml, _, _, _ = job_files
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ncontract: fraud\ninput: {paths: [/nonexistent/*.parquet]}\n")
    client = JobSubmissionClient(head)
    job_id = client.submit_job(entrypoint=_entrypoint(platform_yaml, bad),
                               runtime_env={"working_dir": str(REPO_ROOT)})  # fmt: skip
    deadline = time.monotonic() + 300
    while (status := client.get_job_status(job_id)) not in (
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED,
    ):  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(1)
    assert status == JobStatus.FAILED
    assert "matches no file" in client.get_job_logs(job_id)
