"""The review pages of the live Serve app, rendered by a real headless browser (Chromium).

Alerts are written to the served keyspace the way the batch job and the stream write them
(``AlertWriter``); Chromium loads the pages through Serve's proxy with the API key as the
Basic-auth password, and its rendered DOM must list the alerts newest first and draw one
bar per stored reason, with the stored contribution. Without the key it gets no data.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime

import httpx
import pyarrow as pa
import pytest

from sluice.contract import load_contract
from sluice.store import AlertWriter, alert_rows

from .serve_live import TEST_KEY

pytestmark = pytest.mark.integration

CONTRACT = load_contract("fraud")
DAY = datetime(2025, 2, 3, tzinfo=UTC).date()
REASONS = {
    "tx_review_browser_1": [{"feature": "card_count_1h", "value": 6.0, "contribution": 0.2},
                            {"feature": "amount", "value": 812.25, "contribution": -0.05}],
    "tx_review_browser_2": [{"feature": "country_mismatch", "value": 1.0, "contribution": 0.4},
                            {"feature": "hour_of_day", "value": 3.0, "contribution": 0.1},
                            {"feature": "card_amount_sum_24h", "value": 0.0,
                             "contribution": -0.02}],
}  # fmt: skip


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is missing: `make system` installs Debian's chromium"
    return found


def rendered(url: str) -> str:
    """The DOM Chromium renders for ``url`` (headless; --no-sandbox: tests may run as root)."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-dev-shm-usage", "--virtual-time-budget=5000", "--dump-dom", url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def alerts(serve_world):
    keys = list(REASONS)
    scored = pa.table({
        "key": keys, "entity": ["card_000007", "card_000009"],
        "event_time": pa.array([datetime(2025, 2, 3, 8, tzinfo=UTC),
                                datetime(2025, 2, 3, 17, tzinfo=UTC)],
                               pa.timestamp("us", tz="UTC")),
        "score": [0.62, 0.97], "model_version": ["fraud/1", "fraud/1"],
        "decision": ["review", "block"], "policy_id": [CONTRACT.decision.policy_id] * 2,
        "reasons": [json.dumps(REASONS[k]) for k in keys],
    })  # fmt: skip
    rows = alert_rows(CONTRACT, scored, "stream:browser_test", datetime.now(UTC))
    AlertWriter(serve_world.cfg.cassandra, CONTRACT).write(rows)
    return serve_world.base


def test_the_review_page_lists_the_days_alerts_newest_first(alerts):
    base = alerts.replace("http://", f"http://analyst:{TEST_KEY}@", 1)
    dom = rendered(f"{base}/review?day={DAY}")
    listed = re.findall(r'<tr class="alert" data-key="([^"]+)"', dom)
    assert listed == ["tx_review_browser_2", "tx_review_browser_1"], dom[:2000]
    assert "block" in dom and "0.9700" in dom
    blocks = rendered(f"{base}/review?day={DAY}&decision=block")
    assert re.findall(r'data-key="([^"]+)"', blocks) == ["tx_review_browser_2"]


@pytest.mark.parametrize("key", list(REASONS))
def test_an_alerts_bars_are_its_stored_reasons(alerts, key):
    base = alerts.replace("http://", f"http://analyst:{TEST_KEY}@", 1)
    dom = rendered(f"{base}/review/alert/{key}")
    bars = re.findall(r'data-feature="([^"]+)" data-contribution="([^"]+)".*?'
                      r'class="bar (up|down)" style="width: ?(\d+)px;?"', dom, re.S)  # fmt: skip
    stored = REASONS[key]
    assert [(f, float(c)) for f, c, _, _ in bars] == \
        [(r["feature"], r["contribution"]) for r in stored], dom[:3000]  # fmt: skip
    widest = max(abs(r["contribution"]) for r in stored)
    assert [(d, int(w)) for _, _, d, w in bars] == [
        ("up" if r["contribution"] > 0 else "down", round(200 * abs(r["contribution"]) / widest))
        for r in stored]  # fmt: skip


def test_without_the_key_the_browser_gets_no_data(alerts):
    for url in (f"{alerts}/review?day={DAY}", f"{alerts}/review/alert/tx_review_browser_2"):
        dom = rendered(url)  # headless Chromium has nobody to ask for the password
        assert "tx_review_browser" not in dom and "card_0000" not in dom
        r = httpx.get(url, timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic ")
        assert "tx_review_browser" not in r.text
    wrong = alerts.replace("http://", "http://analyst:not-the-key@", 1)
    assert "tx_review_browser" not in rendered(f"{wrong}/review?day={DAY}")
