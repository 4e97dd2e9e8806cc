"""The batch job's Ray workers run with WORKER_ENV: Arrow's freed memory goes back to the
system at once, not when the worker next allocates."""

from __future__ import annotations

import os
import subprocess
import sys

from pipelines.batch_score import WORKER_ENV, worker_runtime_env

# Allocates ~300 MiB through Arrow's default pool, frees it, then reports RssAnon (MiB) at
# the peak and after, without allocating anything in between (an idle worker).
PROBE = """
import pyarrow as pa, pyarrow.compute as pc
def anon():
    return next(int(l.split()[1]) // 1024 for l in open("/proc/self/status")
                if l.startswith("RssAnon"))
t = pa.table({f"c{i}": pa.array(range(4_000_000), pa.float64()) for i in range(5)})
t2 = t.take(pc.sort_indices(t, [("c0", "descending")]))
peak = anon()
del t, t2
print(pa.default_memory_pool().backend_name, peak, anon())
"""


def probe(env: dict[str, str]) -> tuple[str, int, int]:
    clean = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    out = subprocess.run([sys.executable, "-c", PROBE], env=clean | env, capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()  # fmt: skip
    return out[0], int(out[1]), int(out[2])


def test_the_worker_env_returns_arrows_freed_memory_to_the_system_at_once():
    backend, peak, idle = probe(WORKER_ENV)
    assert peak > 250, f"the probe allocated too little to tell ({peak} MiB)"
    assert idle < peak - 200, f"{backend}: {idle} MiB kept of a {peak} MiB peak"


def test_without_it_arrows_default_pool_keeps_what_it_freed():
    """Why the setting exists: if Arrow's default pool stops keeping freed memory, this
    fails, and WORKER_ENV can go."""
    backend, peak, idle = probe({})
    assert backend == "mimalloc"
    assert idle > peak - 100, f"{backend} returned {peak - idle} MiB of {peak} by itself"


def test_the_runtime_env_carries_the_worker_env(monkeypatch):
    for name in WORKER_ENV:
        monkeypatch.delenv(name, raising=False)
    assert worker_runtime_env() == {"env_vars": WORKER_ENV}


def test_a_variable_the_job_already_has_is_left_to_it(monkeypatch):
    """Ray refuses to merge a submitted job's runtime_env with a driver's that sets the same
    variable: the team's own value wins and ray.init is not given it again."""
    (name,) = WORKER_ENV
    monkeypatch.setenv(name, "250")
    assert worker_runtime_env() == {}

