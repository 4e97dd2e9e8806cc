"""`sluice serve`: check configs/serve.yaml key by key, then run or deploy it on Ray Serve.

    sluice serve                          # check, then `serve run configs/serve.yaml` (blocks),
                                          # HAProxy ingress (--ingress proxy: Serve's own)
    sluice serve --deploy [--address URL] # check, then `serve deploy` to a running cluster
                                          # (RAY_AUTH_MODE unset: the cluster's own mode)
    sluice serve --check                  # check only
    sluice serve hash-key --new           # a new API key and the digest line to store
    sluice serve hash-key                 # the line of an existing key: stdin, else a prompt

The check catches what Serve itself would silently ignore (misspelled deployment or
autoscaling keys) and validates the app's typed args; see serve_apps/scoring/config_check.py.
Serve then gets the checked document with the bind address of the platform config
(serve.host / serve.port, 127.0.0.1:8000 by default): its one source.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
import yaml

from sluice.cli._paths import child_env, user_path
from sluice.config import REPO_ROOT
from sluice.errors import SluiceError

app = typer.Typer(
    help="Online scoring on Ray Serve: check and run configs/serve.yaml; make API keys.",
    invoke_without_command=True,
)

DEFAULT_CONFIG = Path("configs/serve.yaml")
DEFAULT_DASHBOARD = "http://localhost:8265"  # `serve deploy`'s own default address
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
ConfigOption = typer.Option(
    None, "--config", help="Serve config file (default: the repository's configs/serve.yaml)."
)


def _repo_on_path() -> None:
    # serve_apps/ is an application folder of the repo, not an installed package (like
    # pipelines/): import it from the repo root, as Serve itself does (`--app-dir .`).
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def _serve_cli() -> str:
    found = Path(sys.executable).parent / "serve"
    return str(found) if found.exists() else (shutil.which("serve") or "serve")


@app.callback()
def serve(
    ctx: typer.Context,
    config: Path | None = ConfigOption,
    deploy: bool = typer.Option(False, "--deploy", help="`serve deploy` to a running cluster."),
    address: str | None = typer.Option(
        None, "--address", help="Dashboard address for --deploy (default: Serve's own)."
    ),
    check: bool = typer.Option(False, "--check", help="Only check the config."),
    ingress: str = typer.Option(
        "haproxy", "--ingress",
        help="haproxy (RAY_SERVE_ENABLE_HA_PROXY=1) or proxy (Serve's Python proxy); applies "
        "to the local Ray `serve run` starts. A cluster sets it on its nodes before Ray starts.",
    ),
) -> None:
    """Check the Serve config, then run it locally (`serve run`) or deploy it (`--deploy`)."""
    if ctx.invoked_subcommand is not None:
        return
    _repo_on_path()
    from serve_apps.scoring.app import load_key_digests
    from serve_apps.scoring.config_check import load_serve_config, scoring_args, with_bind_address

    # A path typed here is the user's (relative to their directory); only the default is
    # the repository's. `serve run` starts at the repository root, so it gets it absolute.
    path = REPO_ROOT / DEFAULT_CONFIG if config is None else Path(user_path(config))
    if os.environ.get("SLUICE_API_KEYS_FILE"):  # the user's path too, for the check and Serve
        os.environ["SLUICE_API_KEYS_FILE"] = user_path(os.environ["SLUICE_API_KEYS_FILE"])
    try:
        doc = with_bind_address(load_serve_config(path))
        args = scoring_args(doc)
        if args is not None and not deploy:
            # What the app refuses at build (the demo key beyond loopback), said before a
            # local Ray starts; a deploy is checked where it is built (the cluster's key file).
            load_key_digests(args.api_keys, doc["http_options"]["host"])
    except SluiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    names = ", ".join(a.get("name", "default") for a in doc.get("applications", []))
    http = doc["http_options"]
    typer.echo(f"{path}: config OK (applications: {names}; binds {http['host']}:{http['port']}, "
               "serve.host/serve.port of the platform config)")  # fmt: skip
    if check:
        return
    if ingress not in ("haproxy", "proxy"):
        typer.echo(f"error: --ingress must be haproxy or proxy, got {ingress!r}", err=True)
        raise typer.Exit(2)
    auth_mode = "disabled"  # `serve run` starts a Ray of its own, on this machine
    if deploy and "RAY_AUTH_MODE" not in os.environ:
        target = address or os.environ.get("RAY_DASHBOARD_ADDRESS", DEFAULT_DASHBOARD)
        try:
            auth_mode = cluster_auth_mode(target, os.environ)
        except SluiceError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    env = serve_env(os.environ, deploy=deploy, ingress=ingress, auth_mode=auth_mode)
    with tempfile.TemporaryDirectory(prefix="sluice-serve-") as tmp:
        # Serve reads the file once, at start: the document with the bind address filled in.
        rendered = Path(tmp) / path.name
        rendered.write_text(yaml.safe_dump(doc, sort_keys=False))
        if deploy:
            cmd = [_serve_cli(), "deploy", str(rendered)] + (
                ["--address", address] if address else [])  # fmt: skip
        else:
            cmd = [_serve_cli(), "run", str(rendered)]
        shown = ("RAY_AUTH_MODE", "RAY_SERVE_ENABLE_HA_PROXY")
        prefix = "".join(f"{k}={env[k]} " for k in shown if k in env)
        typer.echo(f"$ {prefix}{' '.join(cmd)}   # {path.name} + the bind address")
        code = _run_to_end(cmd, env)
    raise typer.Exit(code)


def cluster_auth_mode(address: str, environ: Mapping[str, str], timeout_s: float = 10.0) -> str:
    """The auth mode of the Ray whose dashboard is at ``address``: what its clients must set.

    Asked of the dashboard's public ``/api/authentication_mode``. For ``token``, a token
    must be on this machine (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
    """
    import httpx

    url = address.rstrip("/") + "/api/authentication_mode"
    try:
        answer = httpx.get(url, timeout=timeout_s)
        answer.raise_for_status()
        mode = answer.json()["authentication_mode"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise SluiceError(
            f"cannot ask the Ray dashboard at {address} for its auth mode ({exc}); start or "
            "forward it (`ray dashboard cluster.yaml`), pass --address, or set RAY_AUTH_MODE "
            "(README \"Ray and authentication\")"
        ) from exc
    if mode not in ("disabled", "token"):
        raise SluiceError(f"the Ray at {address} reports auth mode {mode!r}; set RAY_AUTH_MODE")
    token_file = Path(environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if mode == "token" and not (environ.get("RAY_AUTH_TOKEN") or token_file.expanduser().exists()):
        raise SluiceError(
            f"the Ray at {address} uses token auth and this machine has no token: copy the "
            f"cluster's token to {token_file} (or set RAY_AUTH_TOKEN_PATH / RAY_AUTH_TOKEN)"
        )
    return mode


def serve_env(
    environ: Mapping[str, str], *, deploy: bool, ingress: str, auth_mode: str = "disabled"
) -> dict[str, str]:
    """The environment of the `serve run` / `serve deploy` that `sluice serve` starts.

    RAY_AUTH_MODE is always explicit (README "Ray and authentication"): the caller's value,
    else ``auth_mode`` (``disabled`` for the Ray `serve run` starts; for a deploy, the mode
    the cluster reports). Left unset, Ray decides by whether ``~/.ray/auth_token`` exists:
    `serve run` would start its Ray with token auth, `serve deploy` would send no token.
    """
    env = child_env(environ)  # SLUICE_CONFIG made absolute: `serve run` starts elsewhere
    env.setdefault("RAY_AUTH_MODE", auth_mode)
    if not deploy:
        # Read when Ray starts: HAProxy in front of the replicas (bench/serve.py: about 2x
        # the throughput of the Python proxy, and lower latency, on the same machine).
        # A cluster sets it on its nodes before Ray starts (cluster.yaml).
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if ingress == "haproxy" else "0"
    return env


def _run_to_end(cmd: list[str], env: dict[str, str], stop_timeout_s: float = 120.0) -> int:
    """Run ``cmd`` and leave nothing of it behind, however this process is stopped.

    `serve run` starts a Ray of its own (GCS, raylet, workers, Serve's HAProxy), which it
    stops on SIGINT in a few seconds. So Ctrl-C and SIGTERM reach this process only (the
    child runs in a session of its own) and are forwarded as one SIGINT; a second signal,
    or `stop_timeout_s` without an exit, kills the child's group. Then every process still
    below this one is stopped: this process is a child subreaper (Linux), so a daemon that
    left its parent (an orphaned HAProxy kept port 8000 answering once) is found too.
    """
    _become_subreaper()
    signalled: list[float] = []
    proc: subprocess.Popen | None = None

    def forward(signum: int, frame: Any) -> None:
        signalled.append(time.monotonic())
        if proc is not None:
            _signal_group(proc.pid, signal.SIGINT if len(signalled) == 1 else signal.SIGKILL)

    # Handled before the child starts: at exec a handled signal becomes the default again in
    # the child, an ignored one stays ignored. Started in the background by a shell script
    # (`sluice serve &`, CI), this process has SIGINT ignored; `serve run` would inherit
    # that, never see the SIGINT sent to it, and be killed after stop_timeout_s instead.
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, start_new_session=True)
        if signalled:  # a signal came while it started
            _signal_group(proc.pid, signal.SIGINT)
        while True:
            try:
                return proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if signalled and time.monotonic() - signalled[0] > stop_timeout_s:
                    _signal_group(proc.pid, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_descendants()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _become_subreaper() -> bool:
    """Orphaned descendants re-parent to this process instead of init (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: stop what is still a descendant
        return False


def descendants(pid: int) -> list[int]:
    """Live processes below ``pid`` (from /proc; zombies left out)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_descendants(grace_s: float = 10.0) -> None:
    """SIGTERM every process below this one, SIGKILL what outlives ``grace_s``, reap them."""
    me = os.getpid()
    left = descendants(me)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while True:
            _reap()
            left = descendants(me)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not left:
            return


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@app.command("hash-key")
def hash_key(
    new: bool = typer.Option(False, "--new", help="Make a new random key (shown once)."),
    name: str = typer.Option("client", "--name", help="Name of the key in the key file."),
) -> None:
    """Print the SHA-256 line to add to the key file (configs/api_keys).

    The key is never an argument (a command line lands in shell history and in `ps`): it is
    read from stdin when piped, else from a hidden prompt; `--new` makes one instead.
    """
    _repo_on_path()
    from serve_apps.scoring.auth import hash_key as digest_of
    from serve_apps.scoring.auth import new_key

    if new:
        key = new_key()
        typer.echo(f"key (shown once, give it to the client): {key}")
        typer.echo("line for the key file:")
    elif _stdin_is_terminal():
        key = typer.prompt("API key", hide_input=True, confirmation_prompt=True).strip()
    else:
        key = sys.stdin.read().strip()
    if not key:
        typer.echo("error: empty key (pipe it on stdin, type it at the prompt, or use --new)",
                   err=True)  # fmt: skip
        raise typer.Exit(1)
    typer.echo(f"{name} {digest_of(key)}")


__all__ = ["app", "cluster_auth_mode", "serve_env"]
