"""The review pages, without Cassandra: alerts from a fake reader, rendered and guarded."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, date, datetime
from types import SimpleNamespace

import httpx
import pytest

from serve_apps.scoring.api import create_api
from serve_apps.scoring.auth import KeyRing, hash_key
from serve_apps.scoring.schemas import RequestParser
from serve_apps.scoring.service import FunctionModelClient, ScoringService
from sluice.contract import load_contract

pytestmark = pytest.mark.anyio

KEY = "review-key"
CONTRACT = load_contract("fraud")
DAY = date(2026, 3, 4)
REASONS = [{"feature": "card_count_1h", "value": 7.0, "contribution": 0.31},
           {"feature": "amount", "value": 950.5, "contribution": -0.12}]  # fmt: skip


def alert(key: str, hour: int, decision: str, reasons=REASONS) -> SimpleNamespace:
    return SimpleNamespace(
        key=key, entity="card_1", event_time=datetime(2026, 3, 4, hour), day=DAY,
        score=0.95 if decision == "block" else 0.6, decision=decision, policy_id="dp-abc",
        model_version="fraud/2", source="stream:fraud", alerted_at=datetime(2026, 3, 4, 23),
        reasons=json.dumps(reasons) if reasons is not None else None,
    )  # fmt: skip


class FakeReader:
    def __init__(self) -> None:
        self.alerts = [alert("tx_<b>", 9, "block"), alert("tx_2", 14, "review", None),
                       alert("tx_3", 11, "block")]  # fmt: skip

    def day(self, day: date) -> list:
        got = [a for a in self.alerts if a.day == day]
        return sorted(got, key=lambda a: a.event_time, reverse=True)

    def one(self, key: str):
        return next((a for a in self.alerts if a.key == key), None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def client():
    async def never(rows, explain=False):
        raise AssertionError("the review pages never score")

    service = ScoringService(
        contract=CONTRACT, keyring=KeyRing.from_digests({"analyst": hash_key(KEY)}),
        model=FunctionModelClient(never), parser=RequestParser(CONTRACT, max_rows=4),
        max_body_bytes=4096, request_timeout_s=1.0, alerts=FakeReader(),
    )  # fmt: skip
    transport = httpx.ASGITransport(app=create_api(service))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def basic(password: str, user: str = "anna") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_without_the_key_the_page_asks_for_it_and_shows_nothing(client):
    for headers in ({}, basic("wrong"), {"Authorization": "Basic !!notbase64"}):
        r = await client.get(f"/review?day={DAY}", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Basic realm=")
        assert "tx_" not in r.text and "card_" not in r.text
    r = await client.get("/review/alert/tx_3")
    assert r.status_code == 401 and "tx_3" not in r.text


async def test_a_days_alerts_newest_first_filtered_and_escaped(client):
    r = await client.get(f"/review?day={DAY}", headers=basic(KEY))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    keys = re.findall(r"<tr class='alert' data-key='([^']+)'", r.text)
    assert keys == ["tx_2", "tx_3", "tx_&lt;b&gt;"]  # newest event first, keys escaped
    assert "<b>" not in r.text
    blocks = await client.get(f"/review?day={DAY}&decision=block", headers={"X-API-Key": KEY})
    assert re.findall(r"data-key='([^']+)'", blocks.text) == ["tx_3", "tx_&lt;b&gt;"]
    bad = await client.get(f"/review?day={DAY}&decision=approve", headers=basic(KEY))
    assert bad.status_code == 422 and "decision must be one of review, block" in bad.text
    assert "data-key" not in bad.text
    empty = await client.get("/review?day=2026-03-05", headers=basic(KEY))
    assert "0 alert(s)" in empty.text


async def test_a_decision_filter_finds_older_alerts_past_the_newest_page(client, monkeypatch):
    import serve_apps.scoring.review as review

    monkeypatch.setattr(review, "_LIMIT", 2)  # the newest alert is a review, both blocks older
    blocks = await client.get(f"/review?day={DAY}&decision=block", headers=basic(KEY))
    assert re.findall(r"data-key='([^']+)'", blocks.text) == ["tx_3", "tx_&lt;b&gt;"]
    assert "2 alert(s)" in blocks.text and "(the newest 2)" in blocks.text
    reviews = await client.get(f"/review?day={DAY}&decision=review", headers=basic(KEY))
    assert "1 alert(s)" in reviews.text and "the newest" not in reviews.text


async def test_an_alert_shows_a_bar_per_stored_reason(client):
    r = await client.get("/review/alert/tx_3", headers=basic(KEY))
    assert r.status_code == 200
    bars = re.findall(r"data-feature='([^']+)' data-contribution='([^']+)'.*?"
                      r"class='bar (up|down)' style='width:(\d+)px'", r.text)  # fmt: skip
    assert [(f, float(c)) for f, c, _, _ in bars] == \
        [(x["feature"], x["contribution"]) for x in REASONS]  # fmt: skip
    assert [(d, int(w)) for _, _, d, w in bars] == [("up", 200), ("down", round(200 * .12 / .31))]
    for text in ("block", "0.9500", "fraud/2", "dp-abc", "stream:fraud", "card_1"):
        assert text in r.text
    none = await client.get("/review/alert/tx_2", headers=basic(KEY))
    assert "No reasons were computed" in none.text
    missing = await client.get("/review/alert/tx_9", headers=basic(KEY))
    assert missing.status_code == 404 and "No alert for transaction tx_9" in missing.text


async def test_today_is_the_default_day(client):
    r = await client.get("/review", headers=basic(KEY))
    assert r.status_code == 200 and str(datetime.now(UTC).date()) in r.text
