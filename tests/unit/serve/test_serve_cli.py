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


class Recorded:
    """`sluice serve`'s child process, recorded instead of run."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str], dict]] = []

    def __call__(self, cmd: list[str], env: dict[str, str]) -> int:
        import yaml

        self.calls.append((cmd, env, yaml.safe_load(open(cmd[2]).read())))
        return 0


@pytest.fixture
def recorded(monkeypatch) -> Recorded:
    rec = Recorded()
    monkeypatch.setattr(serve_cli, "_run_to_end", rec)
    monkeypatch.delenv("SLUICE_SERVE__HOST", raising=False)
    monkeypatch.delenv("SLUICE_SERVE__PORT", raising=False)
    return rec


class Dashboard:
    """A stand-in for a Ray dashboard's public /api/authentication_mode, on a real socket."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        self.mode, self.asked = "disabled", 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.asked += 1
                ok = self.path == "/api/authentication_mode"
                body = json.dumps({"authentication_mode": outer.mode}).encode()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def dashboard():
    d = Dashboard()
    yield d
    d.server.shutdown()


@pytest.mark.parametrize("deploy", [False, True])
def test_serve_hands_serve_the_bind_address_of_the_platform_config(recorded, monkeypatch,
                                                                   dashboard, deploy):  # fmt: skip
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    args = ["--deploy", "--address", dashboard.address] if deploy else []
    result = runner.invoke(serve_cli.app, args)
    assert result.exit_code == 0, result.output
    (cmd, env, doc), = recorded.calls
    assert cmd[1] == ("deploy" if deploy else "run") and cmd[3:] == args[1:]
    assert (doc["http_options"]["host"], doc["http_options"]["port"]) == ("127.0.0.1", 8000)
    assert "binds 127.0.0.1:8000" in result.output
    assert env["RAY_AUTH_MODE"] == "disabled"  # explicit, whatever ~/.ray holds
    assert dashboard.asked == (1 if deploy else 0)


def test_deploy_uses_the_auth_mode_the_cluster_reports(recorded, monkeypatch, dashboard,
                                                       tmp_path):  # fmt: skip
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "auth_token"))
    dashboard.mode = "token"
    deploy = ["--deploy", "--address", dashboard.address]
    result = runner.invoke(serve_cli.app, deploy)  # no token on this machine: said, not sent
    assert result.exit_code == 1 and "uses token auth and this machine has no token" in (
        result.output)  # fmt: skip
    assert not recorded.calls
    (tmp_path / "auth_token").write_text("t0ken")
    assert runner.invoke(serve_cli.app, deploy).exit_code == 0
    assert recorded.calls[-1][1]["RAY_AUTH_MODE"] == "token"

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the caller's choice is kept, not asked
    asked = dashboard.asked
    assert runner.invoke(serve_cli.app, deploy).exit_code == 0
    assert recorded.calls[-1][1]["RAY_AUTH_MODE"] == "disabled" and dashboard.asked == asked


def test_deploy_with_no_dashboard_to_ask_says_what_to_do(recorded, monkeypatch):
    import socket

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = runner.invoke(serve_cli.app, ["--deploy", "--address", closed])
    assert result.exit_code == 1 and "set RAY_AUTH_MODE" in result.output
    assert not recorded.calls


def test_the_bind_address_follows_the_platform_config_override(recorded, monkeypatch):
    monkeypatch.setenv("SLUICE_SERVE__HOST", "10.0.0.7")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert runner.invoke(serve_cli.app, ["--deploy"]).exit_code == 0
    assert recorded.calls[0][2]["http_options"]["host"] == "10.0.0.7"


def test_serve_env_keeps_an_explicit_auth_mode_and_sets_the_ingress_for_run_only():
    base = {"PATH": "/bin"}
    assert serve_cli.serve_env(base, deploy=False, ingress="haproxy") == {
        "PATH": "/bin", "RAY_AUTH_MODE": "disabled", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/t"}
    assert serve_cli.serve_env(token, deploy=True, ingress="haproxy") == token
    proxy = serve_cli.serve_env({}, deploy=False, ingress="proxy")
    assert proxy["RAY_SERVE_ENABLE_HA_PROXY"] == "0"


def test_a_local_run_beyond_loopback_with_the_demo_key_stops_at_once(recorded, monkeypatch):
    monkeypatch.setenv("SLUICE_SERVE__HOST", "0.0.0.0")
    monkeypatch.delenv("SLUICE_API_KEYS_FILE", raising=False)
    result = runner.invoke(serve_cli.app, [])
    assert result.exit_code == 1 and "sluice serve hash-key --new" in result.output
    assert not recorded.calls


def test_paths_given_are_the_users_and_only_the_default_is_the_repos(recorded, monkeypatch,
                                                                     tmp_path):  # fmt: skip
    from serve_apps.scoring.auth import hash_key
    from sluice.config import REPO_ROOT

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "serve.yaml").write_text(
        (REPO_ROOT / "configs" / "serve.yaml").read_text())  # fmt: skip
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "api_keys").write_text(f"app {hash_key('sk_mine')}\n")
    monkeypatch.setenv("SLUICE_API_KEYS_FILE", "keys/api_keys")
    monkeypatch.delenv("SLUICE_CONFIG", raising=False)
    result = runner.invoke(serve_cli.app, ["--config", "mine/serve.yaml"])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'mine' / 'serve.yaml'}: config OK" in result.output
    (cmd, env, _), = recorded.calls  # what `serve run` (at the repository root) is handed
    assert env["SLUICE_API_KEYS_FILE"] == str(tmp_path / "keys" / "api_keys")

    result = runner.invoke(serve_cli.app, ["--check", "--config", "configs/serve.yaml"])
    assert result.exit_code == 1  # the repository's file is not looked up for a given path
    assert str(tmp_path / "configs" / "serve.yaml") in result.output

    env = serve_cli.serve_env({"SLUICE_CONFIG": "p.yaml"}, deploy=False, ingress="haproxy")
    assert env["SLUICE_CONFIG"] == str(tmp_path / "p.yaml")
