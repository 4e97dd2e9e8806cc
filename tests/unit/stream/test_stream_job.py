"""Stream job files, consumer settings and the `sluice stream` / `sluice produce` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluice.cli import app
from sluice.config import KafkaConfig
from sluice.errors import ConfigError
from sluice.jobs import load_stream_job
from sluice.stream import consumer_settings

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_repo_stream_job_loads():
    job = load_stream_job(REPO / "configs" / "jobs" / "fraud_stream.yaml")
    assert (job.name, job.contract, job.topic) == ("fraud_stream", "fraud", "sluice-fraud-events")
    assert job.group == "sluice-fraud-stream"
    assert job.max_batch_messages > 0 and job.max_batch_wait_ms > 0


def test_defaults_and_group_name(tmp_path):
    job = load_stream_job(write(tmp_path, "name: s\ncontract: fraud\ntopic: t\n"))
    assert job.group == "sluice-s" and job.consumers == 1


@pytest.mark.parametrize("text, expected", [
    ("name: s\ncontract: fraud\n", "topic: got"),
    ("name: s\ncontract: fraud\ntopic: 'a b'\n", "topic: got 'a b'"),
    ("name: s\ncontract: fraud\ntopic: t\nconsumers: 0\n", "consumers: got 0"),
    ("name: s\ncontract: fraud\ntopic: t\nmax_batch_wait_ms: -5\n", "max_batch_wait_ms: got -5"),
    ("name: s\ncontract: fraud\ntopic: t\nbatch_size: 5\n", "batch_size: unknown key"),
    ("name: s\ncontract: fraud\ntopic: t\nsession_timeout_ms: 60000\nmax_poll_interval_ms: 30000\n",
     "must not be below session_timeout_ms"),
    ("name: s\ncontract: fraud\ntopic: t\nmax_poll_interval_ms: 60000\nstore_outage_max_s: 60\n",
     r"store_outage_max_s \(60\) must stay below max_poll_interval_ms \(60000 ms\)"),
    ("name: s\ncontract: fraud\ntopic: t\nrestart_window_s: 0\n", "restart_window_s: got 0"),
    ("name: s\ncontract: fraud\ntopic: t\nmax_message_bytes: 10\n", "max_message_bytes: got 10"),
    ("name: s\ncontract: fraud\ntopic: t\nmax_message_bytes: 1048576\n",
     "max_message_bytes: got 1048576"),
    ("name: s\ncontract: fraud\ntopic: t\nmax_unknown_fields: -1\n", "max_unknown_fields: got -1"),
])  # fmt: skip
def test_bad_stream_jobs_name_the_field(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_stream_job(write(tmp_path, text))


def test_consumers_never_auto_commit(tmp_path):
    job = load_stream_job(write(tmp_path, "name: s\ncontract: fraud\ntopic: t\n"))
    settings = consumer_settings(KafkaConfig(), job, "s-0")
    assert settings["enable.auto.commit"] is False
    assert settings["enable.auto.offset.store"] is False
    assert settings["group.id"] == "sluice-s" and settings["auto.offset.reset"] == "earliest"
    assert settings["heartbeat.interval.ms"] < settings["session.timeout.ms"]


def test_cli_has_stream_and_produce():
    runner = CliRunner()
    assert "stream" in runner.invoke(app, ["--help"]).output
    out = runner.invoke(app, ["stream", "--help"]).output
    assert "--until-caught-up" in out and "--max-seconds" in out
    out = runner.invoke(app, ["produce", "--help"]).output
    for option in ("--rate", "--count", "--invalid", "--malformed", "--topic"):
        assert option in out


def test_a_summary_adds_up_its_consumers_from_the_first_batch_to_the_last_commit():
    from pipelines.stream_score import StreamSummary, _add_up
    from sluice.stream import LoopStats

    early = LoopStats(messages=6_000, first_batch_at=100.0, last_commit_at=103.0)
    late = LoopStats(messages=4_000, first_batch_at=101.5, last_commit_at=104.0)
    summary = StreamSummary(job="j", contract="fraud", model_version="1", topic="t",
                            group="g", partitions=4, consumers=2)  # fmt: skip
    _add_up(summary, [early, late], latency_after=None)
    assert summary.messages == 10_000
    assert summary.busy_s == 4.0  # the first consumer's first batch to the last commit
    assert summary.last_commit_at == 104.0
    assert summary.events_per_s == 2_500.0
