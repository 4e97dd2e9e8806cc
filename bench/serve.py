"""Online scoring throughput in one run: plain uvicorn vs bare Ray Serve vs the Sluice endpoint.

    .venv/bin/python bench/serve.py [--seconds 8] [--connections 1,32]

The same model (trained here into a scratch registry), the same rows, the same feature
reads (the Cassandra online table of keyspace ``sluice_bench_serve``, recreated and
filled with card history) are served five ways, each in a process of its own:
- ``uvicorn``: one uvicorn process, a FastAPI route that calls ``Scorer.score`` per
  request (no auth, no checks beyond the Scorer's, no log);
- ``trivial`` / ``bare_serve`` / ``sluice`` under Serve's default proxy: one Ray
  (``num_cpus=2``) with a trivial deployment (a FastAPI route answering a constant: the
  cost of the HTTP stack alone), a bare deployment (the same route as uvicorn, as a Serve
  deployment), a trivial chain (Sluice's shape with no work: a FastAPI ingress calling a
  ``@serve.batch`` deployment that answers a constant, through Sluice's
  ``HandleModelClient``: requests grouped under load) and the Sluice app (API key, request
  model, ``@serve.batch`` model deployment, prediction log to Cassandra), one replica
  each, and the Sluice app again with ``?explain=true`` (each row's top feature
  attributions, issue 17) and through the Open Inference Protocol
  (``/v2/models/fraud/infer``, one tensor per column, issue 18) and with every row also
  scored by a shadow model after the answer (``shadow_share: 1``, issue 18) under HAProxy;
- the same two with ``RAY_SERVE_ENABLE_HA_PROXY=1`` set before that Ray starts.
The load generator is ``wrk`` (C; ``apt-get install -y wrk``), one JSON row per request
from 1,000 different rows, at each --connections, after a warm-up. Prints a table, which
ingress serves users best and why, then, as its last line, one JSON object.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run
# time, also in the Serve replica that gets the bare deployment class by value.
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "platform"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

KEYSPACE = "sluice_bench_serve"
KEY = "bench-key"
TARGETS = {"sluice_vs_bare_serve": 0.9, "sluice_vs_uvicorn_32": 0.5, "sluice_vs_trivial_32": 0.5,
           "p50_over_trivial_c1_ms": 2.0, "p99_over_trivial_c1_ms": 8.0}
"""Ratios are at least their target; ``*_ms`` figures at most theirs."""
N_BODIES = 1000


# -- the world every variant shares ------------------------------------------------------
def make_world(root: Path) -> None:
    import yaml

    from pipelines.train import TrainConfig, train
    from serve_apps.scoring.auth import hash_key
    from sluice.config import load_platform_config
    from sluice.contract import load_contract
    from sluice.datagen import generate_dataset
    from sluice.features import to_store_events
    from sluice.models import ModelRegistry
    from sluice.store import CassandraFeatureStore, apply_schema, close_sessions, session_for

    base = load_platform_config()
    cfg = base.model_copy(update={
        "cassandra": base.cassandra.model_copy(update={"keyspace": KEYSPACE}),
        "registry": base.registry.model_copy(update={"root_uri": str(root / "registry")}),
    })  # fmt: skip
    (root / "platform.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    (root / "keys").write_text(f"bench {hash_key(KEY)}\n")
    contract = load_contract("fraud")
    session = session_for(cfg.cassandra)
    session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
    apply_schema(session, cfg.cassandra, [contract])
    registry = ModelRegistry.from_config(cfg)
    version = train(TrainConfig(rows=10_000, epochs=2, seed=5), registry).version
    registry.promote("fraud", version, alias="shadow")  # the shadow app's second opinion
    data = generate_dataset(4000, seed=1).table
    store = CassandraFeatureStore.for_contract(cfg.cassandra, contract)
    store.record(to_store_events(data, contract.features))
    rows = data.slice(data.num_rows - N_BODIES).drop(["is_fraud"]).to_pylist()
    bodies = [json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v)
                          for k, v in r.items()}) for r in rows]  # fmt: skip
    # The same rows as Open Inference Protocol requests: one [1]-shaped tensor per column.
    from serve_apps.scoring.oip import input_datatype

    types = {f.name: input_datatype(f.type) for f in contract.scoring_schema}
    oip = [json.dumps({"inputs": [{"name": k, "shape": [1], "datatype": types[k], "data": [v]}
                                  for k, v in json.loads(b).items()]}) for b in bodies]  # fmt: skip
    for name, texts in (("post", bodies), ("oip", oip)):
        (root / f"{name}-bodies.json").write_text(json.dumps(texts))
        lua = ["local bodies = {"] + [f"[==[{b}]==]," for b in texts] + ["}", WRK_LUA % KEY]
        (root / f"{name}.lua").write_text("\n".join(lua))
    close_sessions()


WRK_LUA = """
local counter = 0
function setup(thread)
  thread:set("offset", counter * 500)
  counter = counter + 1
end
local i = nil
local hdrs = {["Content-Type"] = "application/json", ["X-API-Key"] = "%s"}
function request()
  if i == nil then i = offset or 0 end
  i = i %% #bodies + 1
  return wrk.format("POST", nil, hdrs, bodies[i])
end
"""


def _scorer(root: Path) -> Any:
    from sluice.config import load_platform_config
    from sluice.contract import load_contract
    from sluice.models import ModelRegistry
    from sluice.scoring import Scorer
    from sluice.store import CassandraFeatureStore

    cfg = load_platform_config(root / "platform.yaml")
    contract = load_contract("fraud")
    store = CassandraFeatureStore.for_contract(cfg.cassandra, contract)
    return Scorer(contract, ModelRegistry.from_config(cfg), store, record_events=False)


def _answer(result: Any) -> dict[str, Any]:
    s = result.scored
    return {"scores": s["score"].to_pylist(), "model_version": s["model_version"].to_pylist(),
            "quarantined": result.quarantined.num_rows}  # fmt: skip


# -- variant processes ---------------------------------------------------------------------
def run_uvicorn(root: Path, port: int) -> None:
    import torch
    import uvicorn
    from starlette.concurrency import run_in_threadpool

    torch.set_num_threads(1)
    scorer = _scorer(root)
    app = FastAPI()

    @app.post("/v1/fraud/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await request.json()
        rows = body if isinstance(body, list) else [body]
        return _answer(await run_in_threadpool(scorer.score, rows))

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def run_ray(root: Path, port: int) -> None:
    import asyncio

    import ray
    from ray import serve

    from serve_apps.scoring.app import ScoringAppArgs, assemble_app
    from serve_apps.scoring.deployments import INGRESS_ENV, MODEL_ENV, HandleModelClient

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    bare_api = FastAPI()

    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
    @serve.ingress(bare_api)
    class Bare:
        def __init__(self, world: str) -> None:
            import torch

            torch.set_num_threads(1)
            self.scorer = _scorer(Path(world))

        @bare_api.post("/v1/fraud/predict")
        async def predict(self, request: Request) -> dict[str, Any]:
            body = await request.json()
            rows = body if isinstance(body, list) else [body]
            return _answer(await asyncio.to_thread(self.scorer.score, rows))

    trivial_api = FastAPI()

    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
    @serve.ingress(trivial_api)
    class Trivial:
        @trivial_api.post("/v1/fraud/predict")
        async def predict(self, request: Request) -> dict[str, Any]:
            await request.body()
            return {"scores": [0.5], "model_version": ["trivial"], "quarantined": 0}

    # Sluice's hop without its work: the same per-replica settings and by-value handle.
    @serve.deployment(max_ongoing_requests=128, ray_actor_options={
        "num_cpus": 0, "runtime_env": {"env_vars": MODEL_ENV}})  # fmt: skip
    class ConstantModel:
        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
        async def score(self, groups: list[list[list[dict[str, Any]]]],
                        explains: list[list[bool]]) -> list[list[dict[str, Any]]]:  # fmt: skip
            return [[{"scores": [0.5] * len(rows)} for rows in g] for g in groups]

    chain_api = FastAPI()

    @serve.deployment(max_ongoing_requests=128, ray_actor_options={
        "num_cpus": 0, "runtime_env": {"env_vars": INGRESS_ENV}})  # fmt: skip
    @serve.ingress(chain_api)
    class TrivialChain:
        def __init__(self, model: Any) -> None:
            self.model = HandleModelClient(model)  # requests grouped under load, as Sluice's

        @chain_api.post("/v1/fraud/predict")
        async def predict(self, request: Request) -> dict[str, Any]:
            body = json.loads(await request.body())
            rows = body if isinstance(body, list) else [body]
            got = await self.model.score(rows, False)
            return {"scores": got["scores"], "model_version": ["trivial"], "quarantined": 0}

    args = ScoringAppArgs.model_validate({
        "platform_config": str(root / "platform.yaml"), "api_keys": {"file": str(root / "keys")},
        "resources": {"ingress_num_cpus": 0, "model_num_cpus": 0},
    })  # fmt: skip
    one = {"max_ongoing_requests": 128, "max_queued_requests": 512}
    sluice = assemble_app(args, ingress_options=one, model_options=one)
    serve.run(Bare.bind(str(root)), name="bare", route_prefix="/bare")
    serve.run(Trivial.bind(), name="trivial", route_prefix="/trivial")
    serve.run(TrivialChain.bind(ConstantModel.bind()), name="chain", route_prefix="/chain")
    serve.run(sluice, name="sluice", route_prefix="/")
    # The same app with every scored row also sent to the shadow model (issue 18).
    shadowed = assemble_app(args, ingress_options=one,
                            model_options={**one, "user_config": {"shadow_share": 1.0}})
    serve.run(shadowed, name="sluice-shadow", route_prefix="/shadow")
    print("READY", flush=True)
    sys.stdin.read()  # the parent closes our stdin when it is done
    serve.shutdown()
    ray.shutdown()


# -- load ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, body: str, proc: subprocess.Popen, timeout_s: float = 240.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server of {url} exited:\n{log_tail(proc)}")
        try:
            r = httpx.post(url, content=body, timeout=10,
                           headers={"X-API-Key": KEY, "Content-Type": "application/json"})
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout_s} s")
        time.sleep(0.5)


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    threads = 1 if connections == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
           "--timeout", "10s", "-s", str(script), url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?timeout (\d+)", out)
    return {"rps": rps, "p50_ms": _ms(lat.get("50", "")), "p99_ms": _ms(lat.get("99", "")),
            "requests": total, "non_2xx": int(bad.group(1)) if bad else 0,
            "timeouts": int(errors.group(1)) if errors else 0}  # fmt: skip


def measure(name: str, url: str, root: Path, conns: list[int], seconds: int,
            figures: dict[str, Any], proc: subprocess.Popen,
            script: str = "post") -> None:  # fmt: skip
    """wrk on `url` with `script`'s bodies: "post" (/v1 rows) or "oip" (v2 tensors)."""
    body = json.loads((root / f"{script}-bodies.json").read_text())[0]
    wait_http(url, body, proc)
    wrk(url, root / f"{script}.lua", max(conns), 3)  # warm-up: batching, connections, caches
    for c in conns:
        load = os.getloadavg()[0]
        figures[f"{name}_c{c}"] = r = wrk(url, root / f"{script}.lua", c, seconds)
        r["load_1m"] = round(load, 2)  # other work on the machine disturbs the figures
        print(f"  {name:<20} c={c:<3} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
              f"p99 {r['p99_ms']:7.2f} ms  non-2xx {r['non_2xx']}  (load {load:.1f})", flush=True)


def child(role: str, root: Path, port: int, haproxy: bool = False) -> subprocess.Popen:
    env = dict(os.environ, RAY_SERVE_ENABLE_HA_PROXY="1" if haproxy else "0",
               # HAProxy's stats and metrics listeners default to fixed ports (8404, 9101)
               RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()),
               RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()))
    cmd = [sys.executable, __file__, "--role", role, "--world", str(root), "--port", str(port)]
    log = open(root / f"{role}-{port}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=log, text=True)


def log_tail(proc: subprocess.Popen) -> str:
    path = Path(proc.args[proc.args.index("--world") + 1])
    port = proc.args[proc.args.index("--port") + 1]
    role = proc.args[proc.args.index("--role") + 1]
    text = (path / f"{role}-{port}.log").read_text(errors="replace")
    return "\n".join(text.splitlines()[-25:])


def wait_ready(proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == "READY":
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"variant process exited with {proc.returncode}:\n"
                               f"{log_tail(proc)}")
    raise RuntimeError("variant process not ready in time")


def stop(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", default="1,32")
    ap.add_argument("--role", choices=["uvicorn", "ray"], help=argparse.SUPPRESS)
    ap.add_argument("--world", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role == "uvicorn":
        run_uvicorn(Path(a.world), a.port)
        return 0
    if a.role == "ray":
        run_ray(Path(a.world), a.port)
        return 0
    if shutil.which("wrk") is None:
        print("bench/serve.py needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    conns = [int(c) for c in a.connections.split(",")]
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-serve-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_world(root)
        print(f"world ready in {time.perf_counter() - t0:.0f} s (model, keyspace "
              f"{KEYSPACE}, card history, {N_BODIES} request rows)", flush=True)
        port = free_port()
        proc = child("uvicorn", root, port)
        try:
            measure("uvicorn", f"http://127.0.0.1:{port}/v1/fraud/predict", root, conns,
                    a.seconds, figures, proc)  # fmt: skip
        finally:
            stop(proc)
        for ingress, haproxy in (("proxy", False), ("haproxy", True)):
            port = free_port()
            proc = child("ray", root, port, haproxy)
            try:
                wait_ready(proc)
                base = f"http://127.0.0.1:{port}"
                measure(f"trivial_{ingress}", f"{base}/trivial/v1/fraud/predict", root, conns,
                        a.seconds, figures, proc)  # fmt: skip
                measure(f"trivial_chain_{ingress}", f"{base}/chain/v1/fraud/predict", root,
                        conns, a.seconds, figures, proc)  # fmt: skip
                measure(f"bare_serve_{ingress}", f"{base}/bare/v1/fraud/predict", root, conns,
                        a.seconds, figures, proc)  # fmt: skip
                measure(f"sluice_{ingress}", f"{base}/v1/fraud/predict", root, conns,
                        a.seconds, figures, proc)  # fmt: skip
                if haproxy:  # explanations on (issue 17): each row's top attributions
                    measure(f"sluice_explain_{ingress}", f"{base}/v1/fraud/predict?explain=true",
                            root, conns, a.seconds, figures, proc)  # fmt: skip
                    # The same rows through the Open Inference Protocol (issue 18).
                    measure(f"sluice_oip_{ingress}", f"{base}/v2/models/fraud/infer", root,
                            conns, a.seconds, figures, proc, script="oip")  # fmt: skip
                    # Every row also scored by a shadow model after the answer (issue 18).
                    measure(f"sluice_shadow_{ingress}", f"{base}/shadow/v1/fraud/predict",
                            root, conns, a.seconds, figures, proc)  # fmt: skip
            finally:
                stop(proc)
    return report(figures, conns)


def report(figures: dict[str, Any], conns: list[int]) -> int:
    hi = max(conns)
    rows = [(name, f) for name, f in figures.items()]
    print(f"\n{'variant':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}"
          f"{'load':>7}")  # fmt: skip
    for name, f in rows:
        print(f"{name:<26}{f['rps']:>10.1f}{f['p50_ms']:>10.2f}{f['p99_ms']:>10.2f}"
              f"{f['non_2xx']:>9}{f['load_1m']:>7.1f}")  # fmt: skip

    def rps(name: str) -> float:
        return figures[f"{name}_c{hi}"]["rps"]

    def ok(name: str) -> bool:
        return all(figures[f"{name}_c{c}"]["non_2xx"] == 0 for c in conns)

    # Which ingress serves users best: more req/s at high concurrency and a lower p50 at
    # one connection, with no failed request; both must hold to call it.
    s_p, s_h = "sluice_proxy", "sluice_haproxy"
    better_h = ok(s_h) and rps(s_h) > rps(s_p) and (
        figures[f"{s_h}_c{min(conns)}"]["p50_ms"] <= figures[f"{s_p}_c{min(conns)}"]["p50_ms"])
    best = "haproxy" if better_h else "proxy"
    lo = min(conns)

    def gap(a: str, b: str, stat: str) -> float:
        """How much more `stat` (ms) variant `a` has than `b` at one connection."""
        return round(figures[f"{a}_c{lo}"][stat] - figures[f"{b}_c{lo}"][stat], 2)

    ratios = {
        "sluice_vs_bare_serve": round(rps(f"sluice_{best}") / rps(f"bare_serve_{best}"), 3),
        f"sluice_vs_trivial_{hi}": round(rps(f"sluice_{best}") / rps(f"trivial_{best}"), 3),
        f"p50_over_trivial_c{lo}_ms": gap(f"sluice_{best}", f"trivial_{best}", "p50_ms"),
        f"p99_over_trivial_c{lo}_ms": gap(f"sluice_{best}", f"trivial_{best}", "p99_ms"),
        f"sluice_vs_uvicorn_{hi}": round(rps(f"sluice_{best}") / rps("uvicorn"), 3),
        # The floor of Sluice's shape (an ingress calling a batched model deployment through
        # a handle) with no work at all: what the two hops alone leave of the trivial route.
        f"trivial_chain_vs_trivial_{hi}": round(rps(f"trivial_chain_{best}")
                                                / rps(f"trivial_{best}"), 3),
        f"sluice_vs_trivial_chain_{hi}": round(rps(f"sluice_{best}")
                                               / rps(f"trivial_chain_{best}"), 3),
        f"explain_vs_plain_{hi}": round(rps("sluice_explain_haproxy") / rps("sluice_haproxy"), 3),
        f"oip_vs_v1_{hi}": round(rps("sluice_oip_haproxy") / rps("sluice_haproxy"), 3),
        f"oip_p50_over_v1_c{lo}_ms": gap("sluice_oip_haproxy", "sluice_haproxy", "p50_ms"),
        f"shadow_vs_plain_{hi}": round(rps("sluice_shadow_haproxy") / rps("sluice_haproxy"), 3),
        f"shadow_p50_over_plain_c{lo}_ms": gap("sluice_shadow_haproxy", "sluice_haproxy",
                                               "p50_ms"),  # fmt: skip
        f"shadow_p99_over_plain_c{lo}_ms": gap("sluice_shadow_haproxy", "sluice_haproxy",
                                               "p99_ms"),  # fmt: skip
        f"explain_p50_over_plain_c{lo}_ms": gap("sluice_explain_haproxy", "sluice_haproxy",
                                                "p50_ms"),  # fmt: skip
        f"trivial_chain_p50_over_trivial_c{lo}_ms": gap(f"trivial_chain_{best}",
                                                        f"trivial_{best}", "p50_ms"),
        "sluice_vs_bare_serve_proxy": round(rps(s_p) / rps("bare_serve_proxy"), 3),
        "sluice_vs_bare_serve_haproxy": round(rps(s_h) / rps("bare_serve_haproxy"), 3),
        "sluice_haproxy_vs_proxy": round(rps(s_h) / rps(s_p), 3),
    }
    print(f"\ningress: {best} serves users best here (sluice at c={hi}: "
          f"{rps(s_h):.0f} req/s with HAProxy vs {rps(s_p):.0f} with the default proxy; "
          f"p50 at c={min(conns)}: {figures[f'{s_h}_c{min(conns)}']['p50_ms']:.2f} vs "
          f"{figures[f'{s_p}_c{min(conns)}']['p50_ms']:.2f} ms)")
    # wrk counts every answer: a variant that answered errors (or timed out) did less work a
    # request, so no ratio of this run may be read as met.
    invalid = sorted({n.rsplit("_c", 1)[0] for n, f in rows if f["non_2xx"] or f["timeouts"]})
    if invalid:
        print(f"\nINVALID run: {', '.join(invalid)} answered non-2xx or timed out; "
              "no target is judged")  # fmt: skip
    for k, target in TARGETS.items():
        got = ratios.get(k)
        met = got is not None and (got <= target if k.endswith("_ms") else got >= target)
        verdict = "INVALID" if invalid else "ok" if met else "MISSED"
        print(f"{k}: {got} (target {target}) {verdict}")
    print(json.dumps({"bench": "serve", "ingress": best, "invalid": invalid,
                      "figures": figures, "ratios": ratios, "targets": TARGETS}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
