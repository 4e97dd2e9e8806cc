"""The analyst's review page: a day's alerts, and one alert with the reasons for its score.

    GET /review                 today's alerts (UTC day of the event), newest first
    GET /review?day=2026-12-01&decision=block
    GET /review/alert/{key}     one alert: score, decision, model, policy, a bar per reason

Server-rendered HTML (no script, no front-end build), read from Cassandra's ``alerts`` and
``alerts_by_key`` tables (``sluice.store.AlertReader``). The pages sit behind the same API
keys as the API (``auth.AuthMiddleware``); a browser sends the key as the password of HTTP
Basic auth (any user name), which the middleware asks for on these paths. Every value shown is
escaped. Each reason's bar carries its stored numbers (``data-feature``,
``data-contribution``) and is as wide as its share of the largest contribution: green
lowers the score, red raises it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from html import escape
from itertools import islice
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

__all__ = ["REVIEW_PATH", "add_review_pages"]

REVIEW_PATH = "/review"
_LIMIT = 500
_DECISIONS = ("review", "block")


_STYLE = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
.block{color:#b00020;font-weight:600}.review{color:#a66400;font-weight:600}
.bar{height:14px;display:inline-block}.up{background:#c62828}.down{background:#2e7d32}
nav a{margin-right:1em}"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}"
                        f"</title><style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>"
                        f"{body}</body></html>")  # fmt: skip


def _when(value: datetime) -> str:
    return value.replace(tzinfo=UTC).isoformat(timespec="seconds")


def _bars(reasons_json: str | None) -> str:
    reasons = json.loads(reasons_json) if reasons_json else []
    if not reasons:
        return "<p>No reasons were computed for this alert.</p>"
    widest = max(abs(r["contribution"]) for r in reasons) or 1.0
    rows = []
    for r in reasons:
        c = r["contribution"]
        width = round(200 * abs(c) / widest)
        rows.append(
            f"<tr class='reason' data-feature='{escape(r['feature'])}' data-contribution='{c!r}'>"
            f"<td>{escape(r['feature'])}</td><td>{r['value']:.4g}</td><td>{c:+.4f}</td>"
            f"<td><span class='bar {'up' if c > 0 else 'down'}' style='width:{width}px'>"
            "</span></td></tr>")  # fmt: skip
    return ("<table><tr><th>feature</th><th>value</th><th>contribution</th><th></th></tr>"
            + "".join(rows) + "</table>")  # fmt: skip


def add_review_pages(api: FastAPI, reader: Any, contract: str) -> None:
    """The review routes on ``api`` (the auth middleware covers them like every path)."""

    @api.get(REVIEW_PATH, response_class=HTMLResponse, include_in_schema=False)
    async def review(day: date | None = None, decision: str | None = None) -> HTMLResponse:
        if decision is not None and decision not in _DECISIONS:
            page = _page("Bad filter", f"<p>decision must be one of {', '.join(_DECISIONS)}, "
                         f"got {escape(decision)!s}</p>")  # fmt: skip
            page.status_code = 422
            return page
        when = day or datetime.now(UTC).date()
        # The filter applies while the day is paged, before the cap: the newest _LIMIT
        # alerts of that decision, however many of the other the day holds.
        shown = await asyncio.to_thread(lambda: list(islice(
            (a for a in reader.day(when) if decision is None or a.decision == decision),
            _LIMIT)))  # fmt: skip
        links = " ".join(f"<a href='{REVIEW_PATH}?day={when}&decision={d}'>{d}</a>"
                         for d in _DECISIONS)  # fmt: skip
        rows = "".join(
            f"<tr class='alert' data-key='{escape(a.key)}'><td>{_when(a.event_time)}</td>"
            f"<td class='{escape(a.decision)}'>{escape(a.decision)}</td><td>{a.score:.4f}</td>"
            f"<td><a href='{REVIEW_PATH}/alert/{quote(a.key, safe='')}'>{escape(a.key)}</a></td>"
            f"<td>{escape(a.entity)}</td><td>{escape(a.model_version)}</td></tr>"
            for a in shown)  # fmt: skip
        body = (f"<nav><a href='{REVIEW_PATH}?day={when}'>all</a>{links}</nav>"
                f"<p>{len(shown)} alert(s) of contract {escape(contract)} on {when}, newest first"
                f"{' (the newest ' + str(_LIMIT) + ')' if len(shown) >= _LIMIT else ''}.</p>"
                "<table><tr><th>event time</th><th>decision</th><th>score</th><th>transaction"
                f"</th><th>card</th><th>model</th></tr>{rows}</table>")  # fmt: skip
        return _page(f"Alerts: {contract}, {when}", body)

    @api.get(REVIEW_PATH + "/alert/{key}", response_class=HTMLResponse, include_in_schema=False)
    async def alert(key: str) -> HTMLResponse:
        a = await asyncio.to_thread(reader.one, key)
        if a is None:
            page = _page("No such alert", f"<p>No alert for transaction {escape(key)}.</p>")
            page.status_code = 404
            return page
        body = (f"<p><a href='{REVIEW_PATH}?day={a.day}'>&larr; alerts of {a.day}</a></p>"
                f"<table><tr><th>decision</th><td class='{escape(a.decision)}'>"
                f"{escape(a.decision)}</td></tr><tr><th>score</th><td>{a.score:.4f}</td></tr>"
                f"<tr><th>card</th><td>{escape(a.entity)}</td></tr>"
                f"<tr><th>event time</th><td>{_when(a.event_time)}</td></tr>"
                f"<tr><th>model</th><td>{escape(a.model_version)}</td></tr>"
                f"<tr><th>decision policy</th><td>{escape(a.policy_id)}</td></tr>"
                f"<tr><th>scored by</th><td>{escape(a.source)}</td></tr></table>"
                f"<h2>Why: the top features by contribution to the score</h2>"
                f"{_bars(a.reasons)}")  # fmt: skip
        return _page(f"Alert {key}", body)
