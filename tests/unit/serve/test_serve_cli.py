"""`sluice serve`: API keys never on a command line; what the command hands Serve."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from serve_apps.scoring.auth import hash_key
from sluice.cli import serve as serve_cli

runner = CliRunner()


def test_hash_key_reads_the_key_from_stdin():
    result = runner.invoke(serve_cli.app, ["hash-key", "--name", "ops"], input="s3cret\n")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"ops {hash_key('s3cret')}"
    assert "s3cret" not in result.output


def test_hash_key_prompts_without_echo_on_a_terminal(monkeypatch):
    monkeypatch.setattr(serve_cli, "_stdin_is_terminal", lambda: True)
    result = runner.invoke(serve_cli.app, ["hash-key"], input="s3cret\ns3cret\n")
    assert result.exit_code == 0, result.output
    assert f"client {hash_key('s3cret')}" in result.output
    assert "s3cret" not in result.output  # hidden input: never echoed


def test_a_key_on_the_command_line_is_refused():
    result = runner.invoke(serve_cli.app, ["hash-key", "s3cret"])
    assert result.exit_code == 2  # usage error: there is no key argument
    for legacy in (["hash-key", "-"], ["hash-key", "--key", "s3cret"]):
        assert runner.invoke(serve_cli.app, legacy, input="s3cret\n").exit_code == 2


def test_hash_key_new_prints_a_fresh_key_once_and_its_line():
    result = runner.invoke(serve_cli.app, ["hash-key", "--new", "--name", "app"])
    assert result.exit_code == 0, result.output
    key = result.output.split("give it to the client): ", 1)[1].split()[0]
    assert key.startswith("sk_") and f"app {hash_key(key)}" in result.output


@pytest.mark.parametrize("text", ["", "  \n"])
def test_an_empty_key_is_an_error(text):
    result = runner.invoke(serve_cli.app, ["hash-key"], input=text)
    assert result.exit_code == 1 and "empty key" in result.output
