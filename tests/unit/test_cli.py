import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluice.cli import app
from sluice.cli._paths import child_env, user_path
from sluice.config import REPO_ROOT

runner = CliRunner()


def test_top_level_help_lists_command_groups():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "local" in result.output


def test_local_help_lists_up_down_status():
    result = runner.invoke(app, ["local", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("up", "down", "status"):
        assert command in result.output


def test_bad_config_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("kafka:\n  bootstrap_server: x\n")
    result = runner.invoke(app, ["local", "status", "--config", str(bad)])
    assert result.exit_code == 1
    assert "kafka.bootstrap_server" in result.stderr


@pytest.mark.parametrize("command", [["local", "status"], ["local", "down"], ["schema", "apply"]])
def test_missing_config_file_is_an_error_naming_it(tmp_path, command):
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, [*command, "--config", str(missing)])
    assert result.exit_code == 1
    assert f"error: {missing}: no such file" in result.stderr


# -- paths the user types are resolved against the user's directory before a subprocess ------
class Started:
    """Records the command a CLI command would start (instead of starting it)."""

    def __init__(self) -> None:
        self.cmd: list[str] = []
        self.env: dict[str, str] = {}
        self.cwd: Path | None = None

    def arg(self, flag: str) -> str:
        return self.cmd[self.cmd.index(flag) + 1]


@pytest.fixture
def started(monkeypatch, tmp_path) -> Started:
    rec = Started()

    def run(cmd, *, cwd=None, env=None, **_kw):
        rec.cmd, rec.cwd, rec.env = list(cmd), cwd, dict(env or {})
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def execve(_exe, cmd, env):
        rec.cmd, rec.cwd, rec.env = list(cmd), Path.cwd(), dict(env)
        raise SystemExit(0)

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(os, "execv", lambda exe, cmd: execve(exe, cmd, os.environ))
    monkeypatch.chdir(tmp_path)  # the user's directory (restored after the test)
    monkeypatch.setenv("SLUICE_CONFIG", "mine/platform.yaml")
    return rec


@pytest.mark.parametrize("command", ["batch", "stream"])
def test_job_and_config_paths_are_the_users(started, tmp_path, command):
    result = runner.invoke(app, [command, "--job", "jobs/j.yaml", "--config", "p.yaml"])
    assert result.exit_code == 0, result.output
    assert started.cwd == REPO_ROOT  # the pipeline runs at the repo root...
    assert started.arg("--job") == str(tmp_path / "jobs/j.yaml")  # ...on the user's files
    assert started.arg("--config") == str(tmp_path / "p.yaml")
    assert started.env["SLUICE_CONFIG"] == str(tmp_path / "mine/platform.yaml")


def test_absolute_paths_and_uris_are_kept():
    assert user_path("/etc/sluice/platform.yaml") == "/etc/sluice/platform.yaml"
    assert user_path("s3://bucket/registry") == "s3://bucket/registry"
    assert child_env({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_retrain_gets_the_users_paths(started, tmp_path):
    from sluice.cli.drift import _retrain

    assert _retrain("fraud", "recent.parquet", "registry", epochs=1) == 0
    assert started.cwd == REPO_ROOT
    assert started.arg("--labels") == str(tmp_path / "recent.parquet")
    assert started.arg("--registry") == str(tmp_path / "registry")
    assert started.env["SLUICE_CONFIG"] == str(tmp_path / "mine/platform.yaml")


@pytest.mark.parametrize("decision", ["blok", "Block", "approve"])
def test_alerts_list_refuses_a_decision_no_alert_has(decision):
    out = runner.invoke(app, ["alerts", "list", "--decision", decision])
    assert out.exit_code == 2, out.output
    assert f"--decision {decision!r} is not one of block, review" in out.output
