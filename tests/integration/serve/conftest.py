"""Live serve fixtures: Serve on the session's Ray, the scoring apps deployed once.

Both are package-scoped and this folder is a package (`__init__.py`), so Serve and its
replicas end with the folder's last test instead of living, ~1 GB a replica, through
every later test of the session.

`serve_world` deploys configs/serve.yaml — the real file, with test overrides (a keyspace
and registry of its own, no reserved CPUs, one replica) — as two applications in one
declarative apply, in parallel:
  - `sluice-test` at /: the fraud contract with `device: cuda`, so its model replica asks
    for the session's one logical GPU (and scores on the CPU: there is no GPU);
  - `sluice-faults` at /faults: its prediction log points at a closed port.
"""

from __future__ import annotations

import copy
import socket
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from sluice.config import REPO_ROOT, PlatformConfig
from sluice.contract import load_contract
from sluice.models import ModelRegistry
from sluice.store import apply_schema, close_sessions, schema_change, session_for

from .serve_live import TEST_KEY, deploy_config

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

KEYSPACE = "sluice_test_serve"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def serve_base(ray_session) -> str:
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


class World:
    def __init__(self, base: str, cfg: PlatformConfig, registry: ModelRegistry, doc: dict,
                 session, root: Path) -> None:  # fmt: skip
        self.base, self.cfg, self.registry, self.doc = base, cfg, registry, doc
        self.session, self.root = session, root

    def app(self, name: str) -> dict:
        return next(a for a in self.doc["applications"] if a["name"] == name)

    def model_user_config(self, name: str = "sluice-test") -> dict:
        deps = self.app(name)["deployments"]
        return next(d for d in deps if d["name"] == "ScoringModel")["user_config"]

    def redeploy(self) -> None:
        deploy_config(self.doc)


@pytest.fixture(scope="package")
def serve_world(local_services, platform_config, serve_base, tmp_path_factory) -> World:
    from pipelines.train import TrainConfig, train

    root = tmp_path_factory.mktemp("serve")
    cfg = platform_config.model_copy(update={
        "cassandra": platform_config.cassandra.model_copy(update={"keyspace": KEYSPACE}),
        "registry": platform_config.registry.model_copy(update={"root_uri": str(root / "reg")}),
        "kafka": platform_config.kafka.model_copy(update={  # new each session: Kafka outlives it
            "alerts_topic": f"test-serve-{uuid.uuid4().hex[:8]}-{{contract}}-alerts"}),
    })  # fmt: skip
    (root / "platform.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    contract_doc = yaml.safe_load((REPO_ROOT / "configs/contracts/fraud.yaml").read_text())
    contract_doc["device"] = "cuda"
    (root / "fraud_cuda.yaml").write_text(yaml.safe_dump(contract_doc))

    session = session_for(cfg.cassandra)
    schema_change(session, f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    apply_schema(session, cfg.cassandra, [load_contract("fraud")])
    registry = ModelRegistry.from_config(cfg)
    # A champion good enough to decide some transactions review or block (alerts).
    train(TrainConfig(rows=10_000, epochs=2, seed=5), registry)
    if train(TrainConfig(rows=3000, epochs=2, seed=6), registry).alias != "challenger":
        registry.promote("fraud", 1)
        registry.promote("fraud", 2, alias="challenger")

    base_doc = yaml.safe_load((REPO_ROOT / "configs/serve.yaml").read_text())
    port = int(serve_base.rsplit(":", 1)[1])
    base_doc["http_options"].update(host="127.0.0.1", port=port)
    main = base_doc["applications"][0]
    main["name"] = "sluice-test"
    args = main["args"]
    args.update(contract=str(root / "fraud_cuda.yaml"), platform_config=str(root / "platform.yaml"))
    args["api_keys"] = {"sha256": {"test": _digest(TEST_KEY)}}
    args["limits"] = {"max_rows": 16, "max_body_bytes": 16384, "request_timeout_s": 20.0}
    args["resources"] = {"ingress_num_cpus": 0, "model_num_cpus": 0, "model_num_gpus": 1}
    for dep in main["deployments"]:  # one replica each: 2 cores, one logical GPU
        dep["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    faults = copy.deepcopy(main)
    faults.update(name="sluice-faults", route_prefix="/faults")
    faults["args"]["contract"] = "fraud"
    faults["args"]["prediction_log"] = {
        "queue_size": 4, "batch_rows": 8, "flush_interval_s": 0.05,
        "cassandra": {**cfg.cassandra.model_dump(mode="json"), "port": free_port(),
                      "connect_timeout_s": 1.0},
    }  # fmt: skip
    base_doc["applications"] = [main, faults]
    deploy_config(base_doc)
    yield World(serve_base, cfg, registry, base_doc, session, root)
    from ray import serve

    for app in base_doc["applications"]:
        serve.delete(app["name"])
    close_sessions()


def _digest(key: str) -> str:
    from serve_apps.scoring.auth import hash_key

    return hash_key(key)
