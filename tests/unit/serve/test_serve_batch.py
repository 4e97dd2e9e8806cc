"""BatchScorer: many requests in one Scorer call, canary split, rows mapped back to requests."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from serve_testkit import json_rows

from serve_apps.scoring.batch import BatchScorer, canary_bucket
from sluice.contract import load_contract
from sluice.datagen import generate_dataset
from sluice.decisions import DecisionPolicy
from sluice.errors import StoreUnavailable
from sluice.features import InMemoryFeatureStore, to_store_events
from sluice.scoring import Scorer

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CONTRACT = load_contract("fraud")


@pytest.fixture(scope="module")
def store() -> InMemoryFeatureStore:
    """History for the cards of the request rows (same seed), so aggregates are not all 0."""
    s = InMemoryFeatureStore()
    s.record(to_store_events(generate_dataset(400, seed=1).table, CONTRACT.features))
    return s


@pytest.fixture(scope="module")
def scorers(serve_registry, store):
    champion = Scorer(CONTRACT, serve_registry, store, record_events=False)
    challenger = Scorer(CONTRACT, serve_registry, store, model_ref="fraud@challenger",
                        record_events=False)  # fmt: skip
    assert champion.model.ref != challenger.model.ref
    return champion, challenger


def test_batched_requests_score_like_each_request_alone(scorers):
    champion, _ = scorers
    rows = json_rows(40)
    requests = [rows[0:1], rows[1:8], rows[8:9], rows[9:40]]
    replies = BatchScorer(champion).score(requests, now=NOW)
    for req, reply in zip(requests, replies, strict=True):
        alone = champion.score(req, now=NOW).scored
        assert [s.key for s in reply.scores] == [r["transaction_id"] for r in req]
        assert [s.score for s in reply.scores] == alone["score"].to_pylist()
        assert reply.feature_names == CONTRACT.feature_names
        assert list(reply.scores[0].features) == [alone[n][0].as_py() for n in reply.feature_names]
        assert not reply.rejected and reply.quarantine is None and reply.error is None
    assert len(set(s.score for r in replies for s in r.scores)) > 1


def test_each_request_gets_the_alerts_of_its_own_rows(serve_registry, store):
    """With a policy under which every score alerts (review from 0, block from the median),
    each request carries one alert row per scored row, its decision the reply's."""
    champion = Scorer(CONTRACT, serve_registry, store, record_events=False)
    rows = json_rows(12)
    median = float(sorted(champion.score(rows, now=NOW).scored["score"].to_pylist())[6])
    policy = DecisionPolicy.model_validate([{"label": "review", "min_score": 0.0},
                                            {"label": "block", "min_score": median}])  # fmt: skip
    alerting = CONTRACT.model_copy(update={"decision": policy})
    scorer = Scorer(alerting, serve_registry, store, record_events=False)
    requests = [rows[0:1], rows[1:5], rows[5:12]]
    for req, reply in zip(requests, BatchScorer(scorer).score(requests, now=NOW), strict=True):
        got = {r["key"]: r for r in reply.alerts.to_pylist()}
        assert list(got) == [s.key for s in reply.scores] == [r["transaction_id"] for r in req]
        for s in reply.scores:
            assert (got[s.key]["decision"], got[s.key]["score"]) == (s.decision, s.score)
            assert got[s.key]["policy_id"] == s.policy_id == policy.policy_id
            assert got[s.key]["source"] == "online:fraud"
    decisions = {s.decision for r in BatchScorer(scorer).score(requests, now=NOW)
                 for s in r.scores}  # fmt: skip
    assert decisions == {"review", "block"}
    # Under the contract's own policy these rows (scores below 0.5) raise no alert.
    plain = BatchScorer(Scorer(CONTRACT, serve_registry, store, record_events=False))
    for reply in plain.score(requests, now=NOW):
        assert all(s.decision == "approve" for s in reply.scores) and reply.alerts is None


def test_explain_gives_the_asking_requests_rows_their_reasons(scorers):
    champion, _ = scorers
    rows = json_rows(6)
    rows[4]["amount"] = -1.0  # refused: no score, no reasons
    plain, asked = BatchScorer(champion).score([rows[:3], rows[3:]], now=NOW,
                                               explain=[False, True])  # fmt: skip
    assert all(s.reasons is None for s in plain.scores)
    assert [s.key for s in asked.scores] == [rows[3]["transaction_id"], rows[5]["transaction_id"]]
    matrix = np.array([s.features for s in asked.scores])
    assert [s.reasons for s in asked.scores] == champion.explainer.reasons(matrix)
    assert all(len(s.reasons) == 5 for s in asked.scores)
    # The same row explained in another batch, or alone, gets the same reasons.
    (alone,) = BatchScorer(champion).score([rows[5:6]], now=NOW, explain=[True])
    assert alone.scores[0].reasons == asked.scores[1].reasons


def test_rejected_rows_go_back_to_their_request_and_index(scorers):
    rows = json_rows(6)
    rows[1]["amount"] = -3.0
    rows[4]["currency"] = "XXX"
    replies = BatchScorer(scorers[0]).score([rows[:3], rows[3:]], now=NOW)
    a, b = replies
    assert [r.index for r in a.rejected] == [1] and [r.index for r in b.rejected] == [1]
    assert a.rejected[0].key == rows[1]["transaction_id"]
    assert a.rejected[0].reasons[0]["expectation"] == "expect_column_values_to_be_between"
    assert b.rejected[0].reasons[0]["column"] == "currency"
    assert [s.key for s in a.scores] == [rows[0]["transaction_id"], rows[2]["transaction_id"]]
    assert a.quarantine["key"].to_pylist() == [rows[1]["transaction_id"]]
    assert a.quarantine["source"].to_pylist() == ["online:fraud"]


def test_requests_sharing_a_key_do_not_spoil_each_other(scorers):
    row = json_rows(1)[0]
    other = dict(row, amount=row["amount"] + 1.0)  # same key, another event
    replies = BatchScorer(scorers[0]).score([[row], [other], [row]], now=NOW)
    assert all(len(r.scores) == 1 and not r.rejected for r in replies)
    assert replies[0].scores[0].score == replies[2].scores[0].score
    # inside one request the conflict is refused, as everywhere else
    (reply,) = BatchScorer(scorers[0]).score([[row, other]], now=NOW)
    assert not reply.scores and len(reply.rejected) == 2
    assert reply.rejected[0].reasons[0]["expectation"] == "expect_column_values_to_be_unique"


def test_canary_share_is_by_key_hash_and_names_the_version(scorers):
    champion, challenger = scorers
    rows = json_rows(1500, seed=9)
    core = BatchScorer(champion, challenger, 0.2)
    requests = [rows[i : i + 100] for i in range(0, len(rows), 100)]
    replies = core.score(requests, now=NOW)
    versions = {s.key: s.model_version for r in replies for s in r.scores}
    share = sum(v == challenger.model.ref for v in versions.values()) / len(versions)
    assert 0.17 < share < 0.23, share
    for key, version in versions.items():
        expected = challenger.model.ref if canary_bucket(key) < 0.2 else champion.model.ref
        assert version == expected
    again = core.score([rows[:50]], now=NOW)[0]
    assert all(versions[s.key] == s.model_version for s in again.scores)
    # the challenger's scores are its own model's
    key = next(k for k, v in versions.items() if v == challenger.model.ref)
    row = next(r for r in rows if r["transaction_id"] == key)
    assert again_score(core, row) == challenger.score([row], now=NOW).scored["score"][0].as_py()


def again_score(core: BatchScorer, row: dict) -> float:
    return core.score([[row]], now=NOW)[0].scores[0].score


def test_no_challenger_means_no_canary(scorers):
    core = BatchScorer(scorers[0], None, 0.5)
    assert {s.model_version for s in core.score([json_rows(30)], now=NOW)[0].scores} == {
        scorers[0].model.ref}  # fmt: skip


def test_a_store_outage_is_a_503_reply_for_the_group(serve_registry):
    class DownStore:
        def record(self, events):
            raise AssertionError("online scoring must not record events")

        def history(self, entities, start, end):
            raise StoreUnavailable("cannot reach Cassandra at 127.0.0.1:1")

    scorer = Scorer(CONTRACT, serve_registry, DownStore(), record_events=False)
    replies = BatchScorer(scorer).score([json_rows(2), json_rows(1, seed=3)], now=NOW)
    assert [(r.error.status, r.error.kind) for r in replies] == [(503, "StoreUnavailable")] * 2


class _Poisoned:
    """The real Scorer, except that any call holding the poison key raises unexpectedly."""

    def __init__(self, real: Scorer, poison: str) -> None:
        self.real, self.poison, self.contract = real, poison, real.contract

    def score(self, rows, **kw):
        if any(r["transaction_id"] == self.poison for r in rows):
            raise ValueError("an unexpected bug")
        return self.real.score(rows, **kw)


def test_an_unexpected_error_fails_only_its_own_request(scorers):
    champion, _ = scorers
    rows = json_rows(9)
    requests = [rows[0:3], rows[3:6], rows[6:9]]
    replies = BatchScorer(_Poisoned(champion, rows[4]["transaction_id"])).score(requests, now=NOW)
    bad = replies[1]
    assert bad.error is not None and (bad.error.status, bad.error.kind) == (500, "internal_error")
    assert "ValueError" in bad.error.message and "unexpected bug" not in bad.error.message
    for req, reply in zip(requests[::2], replies[::2], strict=True):
        assert reply.error is None
        assert [s.score for s in reply.scores] == champion.score(req, now=NOW).scored[
            "score"].to_pylist()  # fmt: skip


def test_shadow_rows_are_picked_by_key_hash_and_the_shadow_raises_no_alerts(scorers):
    champion, challenger = scorers
    rows = json_rows(300, seed=9)
    requests = [rows[:100], rows[100:300]]
    replies = BatchScorer(champion, challenger, 0.3, shadow_share=0.25).score(requests, now=NOW)
    for req, reply in zip(requests, replies, strict=True):
        want = tuple(i for i, r in enumerate(req)
                     if canary_bucket(f"shadow:{r['transaction_id']}") < 0.25)  # fmt: skip
        assert reply.shadow_rows == want  # every request row was valid, so every one counts
        roles = {s.role for s in reply.scores}
        assert roles == {"champion", "challenger"}  # the canary split names its rows' role
        for s in reply.scores:
            expected = "challenger" if canary_bucket(s.key) < 0.3 else "champion"
            assert s.role == expected
    picked = sum(len(r.shadow_rows) for r in replies)
    assert 0.15 * 300 < picked < 0.35 * 300  # independent of the canary's 30 %
    assert BatchScorer(champion).score(requests, now=NOW)[0].shadow_rows == ()

    # The shadow scores like the model it is, names its role, and never alerts.
    policy = DecisionPolicy.model_validate([{"label": "review", "min_score": 0.0}])
    alerting = CONTRACT.model_copy(update={"decision": policy})
    shadow = Scorer(alerting, challenger.registry, challenger.store,
                    model_ref="fraud@challenger", record_events=False)  # fmt: skip
    (reply,) = BatchScorer(shadow, role="shadow").score([rows[:20]], now=NOW)
    assert {s.role for s in reply.scores} == {"shadow"} and reply.alerts is None
    assert [s.score for s in reply.scores] == \
        challenger.score(rows[:20], now=NOW).scored["score"].to_pylist()  # fmt: skip
    (served,) = BatchScorer(Scorer(alerting, challenger.registry, challenger.store,
                                   record_events=False)).score([rows[:20]], now=NOW)  # fmt: skip
    assert served.alerts is not None and served.alerts.num_rows == 20  # served rows alert
