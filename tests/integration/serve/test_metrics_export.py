"""Every path's metrics, scraped from Ray's metrics export and checked by promtool.

One small run of each path on the session's Ray — a batch job (pipelines.batch_score.run),
a stream job (pipelines.stream_score.run, until caught up) and requests to the live Serve
app — then the node's Prometheus endpoint (``MetricsExportPort``) is scraped until the
figures of those runs show up: names, labels and values (summed over Ray's worker
processes) must match what each run reported of itself. ``promtool check metrics``
(Debian's prometheus package) must accept the Sluice families of the scrape.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest

from pipelines.batch_score import run as batch_run
from pipelines.stream_score import run as stream_run
from sluice.config import REPO_ROOT
from sluice.contract import load_contract
from sluice.datagen import generate_dataset, to_json_messages, write_parquet
from sluice.jobs import ActorPool, BatchJob, InputSpec, StreamJob
from sluice.metrics import FAMILIES
from sluice.store import apply_schema, schema_change, session_for
from sluice.stream import ensure_topic, produce_messages

from .serve_live import AUTH, Samples, client, expect, json_rows, scrape, total, wait_for_metrics

pytestmark = pytest.mark.integration

KEYSPACE = "sluice_test_metrics"
# Gauges a batch job's driver (this process) sets once, at the end of pass 1, and
# sluice.metrics sets again every REFRESH_S while the process lives (Ray drops a gauge
# series not set for ~20 s): checked after the batch job and again in the final scrape.
DRIVER_GAUGES = ("ray_sluice_batch_expectation_success",
                 "ray_sluice_batch_expectation_unexpected_rows")  # fmt: skip
@pytest.fixture(scope="module")
def cfg(serve_world):
    cfg = serve_world.cfg.model_copy(update={
        "cassandra": serve_world.cfg.cassandra.model_copy(update={"keyspace": KEYSPACE})})
    session = session_for(cfg.cassandra)
    schema_change(session, f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    apply_schema(session, cfg.cassandra, [load_contract("fraud")])
    return cfg


def test_batch_job_metrics(cfg, tmp_path):
    data = generate_dataset(600, seed=71, invalid_fraction=0.05)
    write_parquet(data.table, tmp_path / "in" / "part.parquet")
    job = BatchJob(name="metrics_batch", contract="fraud",
                   input=InputSpec(paths=(str(tmp_path / "in"),)), batch_rows=256,
                   actors=ActorPool(min_actors=1, max_actors=1),
                   summary_path=str(tmp_path / "summary.json"))  # fmt: skip
    summary = batch_run(job, cfg)
    assert summary.rows_quarantined > 0
    src = {"source": "batch:metrics_batch"}

    def check(s: Samples) -> list[str]:
        wrong = expect(s, "ray_sluice_rows_scored_total", summary.rows_scored, **src,
                       path="batch", contract="fraud", model_version=summary.model_version)
        for reason, n in summary.quarantined_by_reason.items():
            wrong += expect(s, "ray_sluice_rows_quarantined_total", n, **src, reason=reason)
        if total(s, "ray_sluice_score_batch_seconds_count", path="batch") < 3:  # 600/256 rows
            wrong.append("no batch scoring latency")
        if not total(s, "ray_sluice_model_in_use", path="batch",
                     model_version=summary.model_version):  # fmt: skip
            wrong.append("no model_in_use for batch")
        # Set once by the job's driver (this process).
        for name in DRIVER_GAUGES:
            if not [lab for n, lab, _ in s if n == name and lab.get("source") == src["source"]]:
                wrong.append(f"no {name} from the batch driver")
        return wrong

    wait_for_metrics(check)


def test_stream_job_metrics(cfg):
    topic = f"sluice-test-metrics-{time.time_ns()}"
    ensure_topic(cfg.kafka, topic, 2)
    data = generate_dataset(400, seed=72, invalid_fraction=0.05)
    msgs = to_json_messages(data.table, malformed_fraction=0.02, seed=72)
    produce_messages(cfg.kafka, topic, msgs.payloads, msgs.partition_keys)
    job = StreamJob(name="metrics_stream", contract="fraud", topic=topic, consumers=1,
                    max_batch_messages=200, max_batch_wait_ms=300, session_timeout_ms=6000,
                    num_cpus_per_consumer=0.5)  # fmt: skip
    summary = stream_run(job, cfg, until_caught_up=True, max_seconds=180)
    assert summary.stopped_by == "caught up" and summary.malformed > 0, summary
    src = {"source": "stream:metrics_stream"}

    def check(s: Samples) -> list[str]:
        wrong = expect(s, "ray_sluice_rows_scored_total", summary.scored, **src,
                       path="stream", model_version=summary.model_version)
        for reason, n in summary.quarantined_by_reason.items():
            wrong += expect(s, "ray_sluice_rows_quarantined_total", n, **src, reason=reason)
        wrong += expect(s, "ray_sluice_stream_event_latency_seconds_count", summary.messages,
                        job="metrics_stream")  # fmt: skip
        for partition in ("0", "1"):
            lag = [v for n, lab, v in s if n == "ray_sluice_stream_consumer_lag"
                   and lab.get("job") == "metrics_stream" and lab.get("partition") == partition]
            if lag != [0.0]:
                wrong.append(f"lag of partition {partition}: {lag}")
        return wrong

    wait_for_metrics(check)


def test_online_metrics(serve_world):
    rows = json_rows(3, seed=73)
    bad = dict(rows[0], transaction_id="metrics-bad", amount=-5.0)
    _, before = scrape()
    fraud = {"contract": "fraud"}
    with client(serve_world.base) as http:
        assert http.post("/v1/fraud/predict", json=rows).status_code == 401
        r = http.post("/v1/fraud/predict", json=rows, headers=AUTH)
        assert r.status_code == 200, r.text
        version = r.json()["predictions"][0]["model_version"]
        assert http.post("/v1/fraud/predict", json=bad, headers=AUTH).status_code == 422

    def delta(s: Samples, name: str, **labels: str) -> float:
        return total(s, name, **labels) - total(before, name, **labels)

    def check(s: Samples) -> list[str]:
        got = {
            "401": delta(s, "ray_sluice_online_requests_total", **fraud, code="401"),
            "200": delta(s, "ray_sluice_online_requests_total", **fraud, code="200"),
            "422": delta(s, "ray_sluice_online_requests_total", **fraud, code="422"),
            "auth": delta(s, "ray_sluice_online_errors_total", **fraud, error_class="auth"),
            "validation": delta(s, "ray_sluice_online_errors_total", **fraud,
                                error_class="validation"),
            "latency": delta(s, "ray_sluice_online_request_seconds_count", **fraud),
            "scored": delta(s, "ray_sluice_rows_scored_total", path="online",
                            model_version=version),
            "quarantined": delta(s, "ray_sluice_rows_quarantined_total", path="online",
                                 reason="expect_column_values_to_be_between:amount"),
        }  # fmt: skip
        want = {"401": 1, "200": 1, "422": 1, "auth": 1, "validation": 1, "latency": 3,
                "scored": 3, "quarantined": 1}  # fmt: skip
        wrong = [] if got == want else [f"online deltas {got}, want {want}"]
        # The model replica's own series (the two authorized requests were scored there,
        # one batch each): exported by its process, which may come a second after the
        # ingress's, so waited for like the rest.
        batches = delta(s, "ray_sluice_score_batch_seconds_count", path="online")
        return wrong + ([] if batches >= 2 else [f"online score batches {batches}, want >= 2"])

    samples = wait_for_metrics(check)
    assert total(samples, "ray_sluice_model_in_use", path="online", model_version=version) > 0


def test_scrape_has_every_family_with_its_labels_and_passes_promtool(cfg):
    """Runs after the three paths above (file order): every family is there."""
    text, samples = scrape()
    for fam in FAMILIES:
        suffix = "_count" if fam.kind == "histogram" else ""
        found = [lab for n, lab, _ in samples if n == fam.exported_name + suffix]
        if fam.name == "sluice_cassandra_write_failures_total":
            continue  # only after a failure: the store fault tests cover the counter
        if fam.name == "sluice_stream_late_events_total":
            continue  # only for a late event: stream/test_stream_late_events.py covers it
        if fam.name == "sluice_shadow_rows_total":
            continue  # only with shadow traffic: test_serve_shadow_live.py checks its export
        assert found, f"{fam.exported_name} is not exported"
        assert all(set(fam.tags) <= set(lab) for lab in found), (fam.name, found[0])
    # The dashboard's queries find these series in a real scrape.
    dashboard = json.loads((REPO_ROOT / "configs/monitoring/sluice-dashboard.json").read_text())
    queried = {m for p in dashboard["panels"] for t in p.get("targets", ())
               for m in re.findall(r"\bray_sluice_[a-z_]+", t["expr"])}  # fmt: skip
    scraped = {n for n, _, _ in samples}
    missing = queried - scraped - {"ray_sluice_cassandra_write_failures_total",
                                   "ray_sluice_stream_late_events_total",
                                   "ray_sluice_shadow_rows_total"}
    assert not missing, f"dashboard queries series the scrape lacks: {sorted(missing)}"
    for table in ("predictions", "quarantine"):
        assert total(samples, "ray_sluice_cassandra_write_seconds_count", table=table) > 0
        assert total(samples, "ray_sluice_cassandra_rows_written_total", table=table) > 0
    # Each histogram is the series a Prometheus histogram has: per worker and labels, a
    # cumulative count per `le` bucket, the +Inf one equal to _count (sluice.metrics).
    histograms = [f.exported_name for f in FAMILIES if f.kind == "histogram"]
    for name in histograms:
        series: dict[tuple, dict[str, float]] = {}
        for n, lab, v in samples:
            if n == f"{name}_bucket":
                rest = tuple(sorted((k, x) for k, x in lab.items() if k != "le"))
                series.setdefault(rest, {})[lab["le"]] = v
        counts = {tuple(sorted(lab.items())): v for n, lab, v in samples if n == f"{name}_count"}
        assert series and series.keys() == counts.keys(), name
        for rest, buckets in series.items():
            ordered = [buckets[le] for le in sorted(buckets, key=float)]
            assert ordered == sorted(ordered) and ordered[-1] == counts[rest], (name, buckets)

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (.ci/run does)"
    ours = "\n".join(line for line in text.splitlines()
                     if line.startswith(("ray_sluice_", "# HELP ray_sluice_",
                                         "# TYPE ray_sluice_"))) + "\n"  # fmt: skip
    assert "# TYPE ray_sluice_rows_scored_total counter" in ours

    def check(exposition: str) -> tuple[int, list[str]]:
        result = subprocess.run([promtool, "check", "metrics"], input=exposition, text=True,
                                capture_output=True, timeout=60)  # fmt: skip
        return result.returncode, (result.stdout + result.stderr).splitlines()

    # What promtool says of a histogram's series typed as gauges, which is how Sluice exports
    # them (sluice.metrics: Ray 2.60's agent replays a Ray histogram's every observation).
    typed_gauge = {f"{name}_bucket non-histogram metrics should not have \"_bucket\" suffix"
                   for name in histograms}  # fmt: skip
    typed_gauge |= {f"{name}_bucket non-histogram metrics should not have \"le\" label"
                    for name in histograms}  # fmt: skip
    typed_gauge |= {f"{name}_{s} non-histogram and non-summary metrics should not have "
                    f"\"_{s}\" suffix" for name in histograms for s in ("count", "sum")}
    # As scraped: no parse error; the other lint complaint is about the labels Ray adds to
    # every metric it exports, its own included (NodeAddress, WorkerId, ...: camelCase).
    rc, problems = check(ours)
    assert rc == 3, problems  # 1: unparsable; 3: lint problems
    assert all("label names should be written in 'snake_case'" in p or p in typed_gauge
               for p in problems), problems  # fmt: skip
    # Without Ray's labels, Sluice's own names, types, help and labels pass the lint but
    # for the histograms typed as gauges.
    rc, problems = check(RAY_LABELS.sub("", ours))
    assert rc == 3 and set(problems) == typed_gauge, problems


RAY_LABELS = re.compile(r'\b(?:Component|NodeAddress|SessionName|Version|WorkerId)="[^"]*",?')


def test_series_set_once_stay_in_the_scrape_until_retired(serve_world):
    """Ray drops a gauge series its worker has not set for ~20 s (sluice.metrics): a
    histogram observed once and a gauge set once must still be scraped 30 s later, as a
    Prometheus histogram's and gauge's would be while their process lives; a gauge series
    retired (a model version replaced) reads 0 at once and then leaves the scrape."""
    import ray

    @ray.remote(num_cpus=0)
    class Once:
        def record(self) -> None:
            from sluice import metrics

            metrics.SCORE_BATCH_SECONDS.observe(0.02, path="batch", contract="keepalive")
            metrics.models_in_use("stream", "keepalive", ["keepalive/1"])
            metrics.models_in_use("stream", "keepalive", ["keepalive/2"])  # a swap

    actor = Once.remote()
    ray.get(actor.record.remote())
    hist, labels = "ray_sluice_score_batch_seconds_count", {"contract": "keepalive"}
    in_use = "ray_sluice_model_in_use"

    def version(samples: Samples, v: str) -> list[float]:
        return [x for n, lab, x in samples if n == in_use
                and lab.get("model_version") == f"keepalive/{v}"]  # fmt: skip

    def both_set(s: Samples) -> list[str]:
        return [] if total(s, hist, **labels) == 1 and version(s, "2") == [1.0] else ["not yet"]

    wait_for_metrics(both_set)
    seen = time.monotonic()
    try:
        while (elapsed := time.monotonic() - seen) < 30:  # Ray dropped them after 20-21 s
            _, samples = scrape()
            assert total(samples, hist, **labels) == 1, f"{hist} gone {elapsed:.0f} s after"
            assert version(samples, "2") == [1.0], f"{in_use} gone {elapsed:.0f} s after"
            assert version(samples, "1") in ([0.0], []), "a retired version still in use"
            time.sleep(1.0)
        wait_for_metrics(lambda s: ["keepalive/1 still scraped"] if version(s, "1") else [],
                         timeout_s=15)
    finally:
        ray.kill(actor)
