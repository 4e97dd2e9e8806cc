"""The batch job's Ray workers run with WORKER_ENV: Arrow's freed memory goes back to the
system at once, not when the worker next allocates."""

from __future__ import annotations

import os
import subprocess
import sys

from pipelines.batch_score import WORKER_ENV, start_ray, worker_runtime_env
from sluice.config import REPO_ROOT

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


def test_the_driver_returns_what_arrow_keeps_once_its_own_arrow_work_is_done():
    """The job's own process started before WORKER_ENV could reach its allocator: after the
    key check and the refusals it returns Arrow's freed memory itself."""
    release = PROBE.replace("print(", "from pipelines.batch_score import release_arrow_memory\n"
                            "release_arrow_memory()\nprint(")  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    out = subprocess.run([sys.executable, "-c", release], env=clean, capture_output=True,
                         text=True, check=True, timeout=120, cwd=REPO_ROOT).stdout.split()
    peak, after = int(out[1]), int(out[2])
    assert peak > 250, f"the probe allocated too little to tell ({peak} MiB)"
    assert after < peak - 200, f"{after} MiB kept of a {peak} MiB peak"


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



# A Ray the job starts itself: what one of its task workers sees.
RAY_PROBE = """
import os, ray
from pipelines.batch_score import WORKER_ENV, start_ray
start_ray("local", num_cpus=1, include_dashboard=False)
@ray.remote(num_cpus=0)
def probe():
    return ([os.environ.get(k) for k in WORKER_ENV],
            ray.get_runtime_context().get_runtime_env_string())
print(repr(ray.get(probe.remote())))
"""


def test_a_ray_the_job_starts_gives_its_workers_the_env_without_a_runtime_env():
    """Inherited from the job's process, not through a runtime_env: with one, every worker
    starts through Ray's setup_worker (a second interpreter) and the 30k-row job took
    17.7 s against 14.0-14.3 s."""
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV and k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", RAY_PROBE], env=env, cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    values, runtime_env = eval(out.stdout.strip().splitlines()[-1])
    assert values == list(WORKER_ENV.values())
    assert runtime_env == "{}"


def test_a_job_joining_a_running_ray_passes_the_env_in_its_runtime_env(monkeypatch):
    """Under `ray job submit` (RAY_ADDRESS set) the workers belong to a Ray started
    elsewhere: the job's runtime_env is the only way to give them the variables."""
    import ray

    for name in WORKER_ENV:  # set, then removed: the test's end restores what was there
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")
    seen = {}
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    start_ray(None, namespace="n")
    assert seen == {"address": None, "runtime_env": {"env_vars": WORKER_ENV}, "namespace": "n"}
