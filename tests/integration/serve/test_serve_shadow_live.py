"""Shadow traffic on the live Serve endpoint: the answers are the champion's, the shadow's
scores land in the prediction log with role shadow, and `sluice models compare` reads them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sluice.cli import app
from sluice.datagen import generate_dataset, write_parquet

from .serve_live import AUTH, json_rows, scrape, total, wait_for_metrics, wait_until

pytestmark = pytest.mark.integration
PREDICT = "/v1/fraud/predict"


def test_shadow_scores_are_logged_never_returned_and_compared(serve_world, tmp_path):
    import httpx

    world = serve_world
    http = httpx.Client(base_url=world.base, timeout=30)
    champion = http.get("/v1/models", headers=AUTH).json()["serving"]["champion"]
    other = next(v.version for v in world.registry.manifest("fraud").versions
                 if f"fraud/{v.version}" != champion)  # fmt: skip
    world.registry.promote("fraud", other, alias="shadow")
    _, before = scrape()
    uc = world.model_user_config()
    uc["shadow_share"] = 1.0
    world.redeploy()
    try:
        wait_until(lambda: http.get("/v1/models", headers=AUTH).json()["serving"]["shadow"],
                   60, "the shadow model to load")  # fmt: skip
        data = generate_dataset(48, seed=919)
        rows = json_rows(48, seed=919)
        for i in range(0, 48, 16):
            r = http.post(PREDICT, json=rows[i : i + 16],
                          headers={**AUTH, "X-Request-ID": f"shadow-live-{i}"})  # fmt: skip
            assert r.status_code == 200, r.text
            assert {p["model_version"] for p in r.json()["predictions"]} == {champion}
        keys = [r["transaction_id"] for r in rows]
        select = world.session.prepare(
            "SELECT row_key, model_version, role FROM sluice_test_serve.prediction_log "
            "WHERE request_id = ? ALLOW FILTERING")  # fmt: skip

        def shadowed() -> dict[str, str]:
            out = {}
            for i in range(0, 48, 16):
                for row in world.session.execute(select, [f"shadow-live-{i}"]):
                    if row.role == "shadow":
                        out[row.row_key] = row.model_version
            return out

        wait_until(lambda: len(shadowed()) == 48, 60, "48 shadow rows in the prediction log")
        assert set(shadowed()) == set(keys) and set(shadowed().values()) == {f"fraud/{other}"}

        # Counted too, in Ray's metrics export: 48 rows scored by the shadow, none failed.
        def counted(samples) -> list[str]:
            got = {o: total(samples, "ray_sluice_shadow_rows_total", contract="fraud", outcome=o)
                   - total(before, "ray_sluice_shadow_rows_total", contract="fraud", outcome=o)
                   for o in ("scored", "failed", "dropped")}  # fmt: skip
            want = {"scored": 48, "failed": 0, "dropped": 0}
            return [] if got == want else [f"shadow rows {got}, want {want}"]

        wait_for_metrics(counted)

        labels = write_parquet(data.table, tmp_path / "labels.parquet")
        out = CliRunner().invoke(app, ["models", "compare", "fraud", "--since", "30m",
                                       "--labels", str(labels), "--config",
                                       str(world.root / "platform.yaml")])  # fmt: skip
        assert out.exit_code == 0, out.output
        print(out.output)  # shown with `pytest -s`: the figures of this run
        pair = sorted([champion, f"fraud/{other}"])
        line = next(x.split() for x in out.output.splitlines() if x.split()[:2] == pair)
        assert int(line[2]) >= 48  # rows both versions scored (earlier tests' keys may add)
        assert -1.0 <= float(line[3]) <= 1.0 and 0.0 <= float(line[4]) <= 1.0
    finally:
        uc["shadow_share"] = 0.0
        world.redeploy()
        http.close()
