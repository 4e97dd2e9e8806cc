"""`sluice serve` stopped by SIGTERM or Ctrl-C leaves no process behind.

The command it runs here stands in for `serve run`: it stops on SIGINT, as `serve run`
does, but first starts a daemon that leaves it (double fork, a session of its own), as
Ray's processes and Serve's HAProxy may; an orphaned HAProxy once kept port 8000
answering after `sluice serve` exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

CHILD = textwrap.dedent("""
    import os, signal, sys, time
    if os.fork() == 0:            # the daemon: double fork, new session, outlives its parent
        os.setsid()
        if os.fork() == 0:
            open(sys.argv[1], "w").write(str(os.getpid()))
            time.sleep(300)
        os._exit(0)
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))   # `serve run` stops on SIGINT
    time.sleep(300)
""")

# `serve run` has no SIGINT handler of its own: Python's KeyboardInterrupt, which Python
# installs only when SIGINT is not ignored at its start.
PLAIN_CHILD = textwrap.dedent("""
    import os, sys, time
    try:
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(300)
    except KeyboardInterrupt:
        sys.exit(0)
""")

WRAPPER = textwrap.dedent("""
    import os, sys
    from sluice.cli.serve import _run_to_end
    sys.exit(_run_to_end([sys.executable, "-c", sys.argv[1], sys.argv[2]], dict(os.environ)))
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_sluice_serve_leaves_no_process_behind(tmp_path, sig):
    pid_file = tmp_path / "daemon.pid"
    wrapper = subprocess.Popen([sys.executable, "-c", WRAPPER, CHILD, str(pid_file)],
                               start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        daemon = int(pid_file.read_text())
        assert _alive(daemon)
        os.kill(wrapper.pid, sig)
        assert wrapper.wait(timeout=30) == 0  # the child stopped cleanly on the SIGINT
        assert not _alive(daemon), "the orphaned daemon outlived sluice serve"
    finally:  # whatever happened, leave nothing of this test running
        for kill, pid in ((os.killpg, wrapper.pid),
                          (os.kill, int(pid_file.read_text() or 0) if pid_file.exists() else 0)):
            if pid:
                try:
                    kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_a_sluice_serve_started_in_the_background_still_stops_its_child_cleanly(tmp_path):
    """A non-interactive shell starts a background job (`sluice serve &` in a script, CI)
    with SIGINT ignored, and an ignored signal stays ignored across exec: `serve run` then
    ignored the SIGINT it was sent and was killed 120 s later (make test's stop test took
    148 s in CI, 32 s from a terminal)."""
    ready = tmp_path / "ready"
    background = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731 - as bash
    wrapper = subprocess.Popen([sys.executable, "-c", WRAPPER, PLAIN_CHILD, str(ready)],
                               start_new_session=True, preexec_fn=background)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (ready.exists() and ready.read_text()):
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.05)
        os.kill(wrapper.pid, signal.SIGTERM)
        assert wrapper.wait(timeout=30) == 0  # the child took the SIGINT as Ctrl-C
    finally:
        child = int(ready.read_text() or 0) if ready.exists() else 0
        for kill, pid in ((os.killpg, wrapper.pid), (os.kill, child)):
            if pid:
                try:
                    kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
