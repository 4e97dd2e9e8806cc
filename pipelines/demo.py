"""`make demo`: the main job, run against the local servers `sluice local up` started.

1. smoke: one row through Cassandra, one message through Kafka, one tiny Ray Data job;
2. schema: `sluice schema apply` (jobs and replicas only check the schema);
   model: train the fraud model if the registry has no champion;
3. batch: generate transactions (3% invalid), run configs/jobs/fraud_batch.yaml on Ray
   Data, and read scored rows and quarantine reasons back from Cassandra;
   bring your own model: train a LightGBM model (300 trees, exported to ONNX) through
   the trainer hook, register it, and score other transactions with it on the batch path;
4. drift: `sluice drift` on the batch (no drift, exit 0), then on a shifted batch (drift,
   exit 3) with `--retrain` on its labels: the candidate's promotion gate report is printed;
5. stream: produce a burst of events to Kafka (2% invalid, 1% malformed), run
   configs/jobs/fraud_stream.yaml until the consumer lag is zero, and count the rows
   read back from Cassandra;
6. metrics: what Prometheus would scrape from this Ray node;
7. online: `sluice serve` (Ray Serve, HAProxy ingress), a few authenticated requests (200),
   one rejected input (422) and one call without a key (401), and the analysts' review page;
8. alerts: the relay publishes each transaction's alert once; `sluice alerts tail` reads
   them back.

Every stage checks its outcome (exit statuses, HTTP statuses): a step that fails fails the
demo, with what it expected and what it got.
"""

from __future__ import annotations

import time
import uuid

from sluice.config import PlatformConfig, load_platform_config


def cassandra_round_trip(cfg: PlatformConfig) -> str:
    from cassandra.cluster import Cluster

    c = cfg.cassandra
    cluster = Cluster(list(c.contact_points), port=c.port, protocol_version=c.protocol_version)
    try:
        session = cluster.connect()
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {c.keyspace} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {c.keyspace}.smoke "
            "(id uuid PRIMARY KEY, note text, at timestamp)"
        )
        row_id = uuid.uuid4()
        session.execute(
            f"INSERT INTO {c.keyspace}.smoke (id, note, at) VALUES (%s, %s, toTimestamp(now()))",
            (row_id, "hello from sluice"),
        )
        query = f"SELECT id, note FROM {c.keyspace}.smoke WHERE id = %s"
        row = session.execute(query, (row_id,)).one()
        return f"{c.keyspace}.smoke id={row.id} note={row.note!r}"
    finally:
        cluster.shutdown()


def kafka_round_trip(cfg: PlatformConfig) -> str:
    from confluent_kafka import Consumer, Producer

    topic, payload = "sluice.smoke", uuid.uuid4().hex.encode()
    producer = Producer(cfg.kafka.client_settings())
    producer.produce(topic, value=payload)
    producer.flush(10)
    consumer = Consumer({
        **cfg.kafka.client_settings(), "group.id": f"smoke-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })  # fmt: skip
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error() and msg.value() == payload:
                return f"topic {topic} partition {msg.partition()} offset {msg.offset()}"
        raise RuntimeError(f"message not read back from {topic} within 30 s")
    finally:
        consumer.close()


def ray_data_job() -> str:
    import ray

    ds = ray.data.range(10_000).map_batches(lambda b: {"x": b["id"] * 2})
    return f"sum of 2*i for i < 10000 = {ds.sum('x')}"


def ensure_model(cfg: PlatformConfig) -> str:
    from pipelines.train import TrainConfig, train
    from sluice.errors import ModelNotFound
    from sluice.models import ModelRegistry

    registry = ModelRegistry.from_config(cfg)
    try:
        name, version = registry.resolve("fraud@champion")
        return f"champion fraud/{version} already registered"
    except ModelNotFound:
        result = train(TrainConfig(), registry)
        return (f"trained {result.name}/{result.version} ({result.alias}), "
                f"holdout AUC {result.holdout_auc:.3f}")


def batch_stage(cfg: PlatformConfig) -> None:
    import json

    from pipelines.batch_score import print_summary, run
    from sluice.datagen import generate_dataset, write_parquet
    from sluice.jobs import load_job
    from sluice.store import session_for

    job = load_job("configs/jobs/fraud_batch.yaml")
    out = cfg.resolve(".state/data/transactions")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.parquet"):  # the job reads every file here
        old.unlink()
    data = generate_dataset(20_000, seed=2026, invalid_fraction=0.03)
    for i in range(2):
        write_parquet(data.table.slice(i * 10_000, 10_000), out / f"part-{i}.parquet")
    print(f"Generated 20000 transactions ({len(data.invalid_rows)} invalid) into {out}")
    summary = run(job, cfg)
    print_summary(summary)
    ks = cfg.cassandra.keyspace
    session = session_for(cfg.cassandra)
    print(f"\nA few scored rows from {ks}.predictions:")
    for row in session.execute(f"SELECT transaction_id, card_id, score, model_version, decision, "
                               f"policy_id FROM {ks}.predictions LIMIT 5"):  # fmt: skip
        print(f"  {row.transaction_id}  {row.card_id}  score={row.score:.4f}  {row.model_version}  "
              f"{row.decision} ({row.policy_id})")  # fmt: skip
    alerts = list(session.execute(f"SELECT key, day, decision, score, policy_id "
                                  f"FROM {ks}.alerts_by_key LIMIT 5"))  # fmt: skip
    print(f"A few alerts (review, block) from {ks}.alerts and {ks}.alerts_by_key:")
    for row in alerts:
        print(f"  {row.key}  {row.decision}  score={row.score:.4f}  {row.policy_id}  "
              f"(sluice alerts list --day {row.day}; sluice alerts show {row.key})")
    print(f"A few quarantined rows from {ks}.quarantine:")
    for row in session.execute(f"SELECT key, reasons FROM {ks}.quarantine LIMIT 5"):
        reasons = "; ".join(f"{r['expectation']} on {r['column']} (value {r['value']})"
                            for r in json.loads(row.reasons))  # fmt: skip
        print(f"  {row.key}: {reasons}")


def gbm_stage(cfg: PlatformConfig) -> None:
    """A team's own model: LightGBM -> ONNX via pipelines.train_gbm, scored by the batch job."""
    from pipelines.batch_score import print_summary, run
    from pipelines.train import TrainConfig, train
    from sluice.datagen import generate_dataset, write_parquet
    from sluice.jobs import load_job
    from sluice.models import ModelRegistry
    from sluice.store import session_for

    trainer = "pipelines.train_gbm:fit_lightgbm_candidate"
    print(f"\n$ python -m pipelines.train --trainer {trainer}")
    registry = ModelRegistry.from_config(cfg)
    result = train(TrainConfig(rows=20_000, trainer=trainer), registry)
    ref = f"{result.name}/{result.version}"
    meta = registry.show(ref).meta
    print(f"registered {ref} ({result.alias}): format {meta.format}, "
          f"{meta.architecture['n_estimators']} trees of depth {meta.architecture['max_depth']}, "
          f"holdout AUC {result.holdout_auc:.3f}")  # fmt: skip
    out = cfg.resolve(".state/data/transactions-gbm")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.parquet"):
        old.unlink()
    write_parquet(generate_dataset(5_000, seed=2027).table, out / "part-0.parquet")
    job = load_job("configs/jobs/fraud_batch.yaml")
    job = job.model_copy(update={
        "name": "fraud_batch_gbm", "model": ref,
        "input": job.input.model_copy(update={"paths": (str(out / "*.parquet"),)}),
    })  # fmt: skip
    print_summary(run(job, cfg))
    ks = cfg.cassandra.keyspace
    rows = session_for(cfg.cassandra).execute(
        f"SELECT transaction_id, score, model_version FROM {ks}.predictions LIMIT 2000")
    picked = [r for r in rows if r.model_version == ref][:3]
    print(f"A few rows scored by {ref} (LightGBM through onnxruntime) in {ks}.predictions:")
    for row in picked:
        print(f"  {row.transaction_id}  score={row.score:.4f}  {row.model_version}")


def drift_stage(cfg: PlatformConfig, since: float) -> None:
    """`since`: when the batch stage began; the drift window covers the demo's rows only."""
    import subprocess
    import sys
    from pathlib import Path

    from pipelines.batch_score import print_summary, run
    from sluice.datagen import DriftShift, generate_dataset, write_parquet
    from sluice.jobs import BatchJob, InputSpec

    metrics = cfg.resolve(".state/metrics/sluice_drift.prom")

    def check(label: str, *extra: str) -> int:
        window = f"{int(time.time() - since) + 5}s"
        shown = " ".join(("sluice drift --window", window, *extra))
        print(f"\n$ {shown}   # {label}")
        cmd = [str(Path(sys.executable).with_name("sluice")), "drift", "--window", window,
               "--source", "predictions", "--metrics-file", str(metrics), *extra]  # fmt: skip
        return subprocess.run(cmd, check=False).returncode

    code = check("the batch above: the training world")
    print(f"exit status {code}")
    if code != 0:
        raise RuntimeError(f"sluice drift on the unshifted batch exited {code}, expected 0")
    out = cfg.resolve(".state/data/shifted")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.parquet"):
        old.unlink()
    shift = DriftShift(amount_scale=2.5, country_weights={"BR": 30, "IN": 30}, active_hours=(0, 6))
    write_parquet(generate_dataset(20_000, seed=2027, shift=shift).table, out / "part-0.parquet")
    job = BatchJob(name="fraud_batch_shifted", contract="fraud",
                   input=InputSpec(paths=(str(out / "*.parquet"),)),
                   summary_path=str(out / "summary.json"))  # fmt: skip
    print_summary(run(job, cfg))
    # The shifted rows' labels have arrived: on drift, retrain on them. The candidate is
    # judged by the contract's promotion gate (its report is printed) and becomes champion
    # only if it passes every check and beats the champion on the same holdout.
    labels = out / "part-0.parquet"
    code = check("half the window is now shifted", "--retrain", "--labels", str(labels))
    print(f"exit status {code} (3 means drift); metrics for Prometheus in {metrics}")
    if code != 3:
        raise RuntimeError(f"sluice drift on the shifted batch exited {code}, expected 3")


def online_stage(cfg: PlatformConfig) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    from sluice.config import REPO_ROOT
    from sluice.datagen import generate_dataset

    base = f"http://{cfg.serve.host}:{cfg.serve.port}"
    key = {"Authorization": "Bearer sluice-demo-key"}  # the demo key of configs/api_keys
    print(f"\n$ sluice serve   # Ray Serve app of configs/serve.yaml on {base}")
    # Serve runs on a Ray of its own (started with the HAProxy ingress), so this process's
    # Ray is not needed meanwhile.
    proc = subprocess.Popen([str(Path(sys.executable).with_name("sluice")), "serve"],
                            cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"sluice serve did not answer {base}/v1/health within "
                                   "240 s (`sluice serve` in a shell shows why)")  # fmt: skip
            time.sleep(2)
        rows = [{k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in r.items()}
                for r in generate_dataset(3, seed=42).table.drop(["is_fraud"]).to_pylist()]

        def call(label: str, expected: int = 200, **kw) -> None:
            r = httpx.post(f"{base}/v1/fraud/predict", timeout=10, **kw)
            if r.status_code != expected:
                raise RuntimeError(f"POST /v1/fraud/predict {label}: HTTP {r.status_code}, "
                                   f"expected {expected}: {r.text[:300]}")  # fmt: skip
            if r.status_code == 200:
                b = r.json()
                answer = (f"key={b['key']} score={b['score']:.4f} {b['model_version']} "
                          f"decision={b['decision']} policy_id={b['policy_id']}")  # fmt: skip
            else:
                answer = r.text[:200]
            print(f"$ curl -X POST {base}/v1/fraud/predict {label}\n  HTTP {r.status_code} "
                  f"{answer}")  # fmt: skip

        for row in rows:
            call(f"-H 'Authorization: Bearer ...' -d '<{row['transaction_id']}>'",
                 json=row, headers=key)  # fmt: skip
        call("-d '{..., \"currency\": \"XXX\"}'   # 422, quarantined", 422,
             json=dict(rows[0], currency="XXX"), headers=key)  # fmt: skip
        call("(no API key)   # 401", 401, json=rows[0])
        from sluice.store import session_for

        ks = cfg.cassandra.keyspace
        newest = session_for(cfg.cassandra).execute(
            f"SELECT day FROM {ks}.alerts_by_key LIMIT 1").one()  # fmt: skip
        if newest is not None:
            url = f"{base}/review?day={newest.day}"
            page = httpx.get(url, auth=("analyst", "sluice-demo-key"), timeout=30)
            if page.status_code != 200:
                raise RuntimeError(f"GET {url}: HTTP {page.status_code}, expected 200")
            shown = page.text.count("<tr class='alert'")
            print(f"Review page for analysts (user: any, password: an API key): {url}\n"
                  f"  HTTP {page.status_code}, {shown} alert(s) listed; each links to "
                  f"{base}/review/alert/<key> with a bar per reason")  # fmt: skip
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def stream_stage(cfg: PlatformConfig) -> None:
    from pipelines.stream_score import print_summary
    from pipelines.stream_score import run as stream_run
    from sluice.jobs import load_stream_job
    from sluice.store import session_for
    from sluice.stream import ensure_topic, event_messages, produce_messages

    job = load_stream_job("configs/jobs/fraud_stream.yaml")
    ensure_topic(cfg.kafka, job.topic, partitions=4)
    payloads, keys, _ = event_messages(5_000, seed=7, invalid=0.02, malformed=0.01)
    produce_messages(cfg.kafka, job.topic, payloads, keys, rate=2_000)
    print(f"\nProduced {len(payloads)} events to Kafka topic {job.topic}")
    summary = stream_run(job, cfg, until_caught_up=True)
    print_summary(summary)
    ks = cfg.cassandra.keyspace
    rows = session_for(cfg.cassandra).execute(f"SELECT source FROM {ks}.quarantine")
    quarantined = sum(1 for r in rows if r.source == f"stream:{job.name}")
    print(f"stream: {summary.scored} scored, {quarantined} quarantine rows in {ks}.quarantine, "
          f"final lag {summary.final_lag}")


def alerts_stage(cfg: PlatformConfig) -> None:
    """Every path proposed its alerts; the relay publishes each transaction's once."""
    import subprocess
    import sys
    from pathlib import Path

    from pipelines.alert_relay import print_summary
    from pipelines.alert_relay import run as relay

    print("\n$ sluice alerts relay --until-caught-up   # candidates of every path -> alert topic")
    summary = relay(cfg, "fraud", until_caught_up=True, max_seconds=300)
    print_summary(summary)
    print(f"\n$ sluice alerts tail --since 7d --max 3   # topic {summary.alerts_topic}, "
          "read_committed: each alert once, whatever re-runs proposed")
    tail = subprocess.run([str(Path(sys.executable).with_name("sluice")), "alerts", "tail",
                           "--since", "7d", "--max", "3", "--idle-exit-s", "15"],
                          capture_output=True, text=True)  # fmt: skip
    print("\n".join("  " + line for line in tail.stdout.splitlines()) or f"  {tail.stderr}")
    if tail.returncode != 0:
        raise RuntimeError(f"sluice alerts tail exited {tail.returncode}: {tail.stderr[-500:]}")


def metrics_stage() -> None:
    """What Prometheus would scrape from this Ray node (sluice.metrics via Ray's export)."""
    import urllib.request

    import ray
    from prometheus_client.parser import text_string_to_metric_families

    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    url = f"http://127.0.0.1:{port}/metrics"
    time.sleep(3)  # one export interval
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    totals: dict[tuple[str, str], float] = {}
    decided: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name in ("ray_sluice_rows_scored_total", "ray_sluice_rows_quarantined_total"):
                key = (sample.labels["path"], sample.name.split("_")[-2])
                totals[key] = totals.get(key, 0) + sample.value
            elif sample.name == "ray_sluice_decisions_total":
                key = (sample.labels["path"], sample.labels["decision"])
                decided[key] = decided.get(key, 0) + sample.value
    print(f"\n$ curl {url}   # Ray's metrics export (Prometheus), sluice families:")
    for (path, what), value in sorted(totals.items()):
        print(f"  ray_sluice_rows_{what}_total{{path={path!r}}}  {value:,.0f}")
    for (path, label), value in sorted(decided.items()):
        print(f"  ray_sluice_decisions_total{{path={path!r}, decision={label!r}}}  {value:,.0f}")


def schema_apply() -> None:
    """`sluice schema apply`, as a user runs it once: jobs and replicas only check the schema."""
    import subprocess
    import sys
    from pathlib import Path

    print("\n$ sluice schema apply")
    subprocess.run([str(Path(sys.executable).with_name("sluice")), "schema", "apply"], check=True)


def main() -> None:
    import ray

    from sluice.local import RAY_SYSTEM_CONFIG

    cfg = load_platform_config()
    print("== Sluice demo ==")
    print(f"Cassandra round trip: {cassandra_round_trip(cfg)}")
    print(f"Kafka round trip:     {kafka_round_trip(cfg)}")
    schema_apply()
    ray.init(address=cfg.ray.address or "local", num_cpus=2, include_dashboard=False,
             log_to_driver=False, namespace=cfg.ray.namespace,
             _system_config={"metrics_report_interval_ms": 2000, **RAY_SYSTEM_CONFIG})  # fmt: skip
    try:
        print(f"Ray Data job:         {ray_data_job()}")
        print(f"Model:                {ensure_model(cfg)}")
        since = time.time()
        batch_stage(cfg)
        gbm_stage(cfg)
        drift_stage(cfg, since)
        stream_stage(cfg)
        metrics_stage()
    finally:
        ray.shutdown()
    online_stage(cfg)
    alerts_stage(cfg)
    print(f"Results are in Cassandra at {cfg.cassandra.contact_points[0]}:{cfg.cassandra.port}, "
          f"keyspace {cfg.cassandra.keyspace}.")


if __name__ == "__main__":
    main()
