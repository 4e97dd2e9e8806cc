"""``HandleModelClient`` without Ray: requests grouped into few calls, each its own reply.

The handle is a small fake with Serve's call shape (``handle.score.remote(rows, explain)``
returns an awaitable); the grouping is Serve's own ``@serve.batch``, run as in an ingress
replica's event loop.
"""

from __future__ import annotations

import asyncio

import pytest
from ray.serve.exceptions import BackPressureError

from serve_apps.scoring.deployments import CALLS_IN_FLIGHT, GROUP_REQUESTS, HandleModelClient
from serve_apps.scoring.schemas import RowScore, ScoreReply
from serve_apps.scoring.service import Overloaded

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _outside_a_replica(monkeypatch):
    """``@serve.batch`` compares its sizes with the replica's ``max_ongoing_requests`` (a
    warning only); outside a replica there is no deployment config to read."""
    from ray.serve import batching

    monkeypatch.setattr(batching._BatchQueue,
                        "_warn_if_max_batch_size_exceeds_max_ongoing_requests",
                        lambda self: None)  # fmt: skip


class _Remote:
    def __init__(self, fn):
        self.remote = fn


class FakeResponse:
    """What ``handle.method.remote()`` returns: awaitable once, cancellable."""

    def __init__(self, coro, cancelled: list[FakeResponse]) -> None:
        self.task = asyncio.ensure_future(coro)
        self._cancelled = cancelled

    def __await__(self):
        return self.task.__await__()

    def cancel(self) -> None:
        self._cancelled.append(self)
        self.task.cancel()


class FakeHandle:
    """Records each call's requests; answers when ``release`` is set (or raises ``fail``)."""

    def __init__(self) -> None:
        self.calls: list[list[list[dict]]] = []
        self.explains: list[list[bool]] = []
        self.out = 0  # calls in flight now
        self.most_out = 0
        self.release = asyncio.Event()
        self.fail: Exception | None = None
        self.cancelled: list[FakeResponse] = []
        self.score = _Remote(lambda *a: FakeResponse(self._score(*a), self.cancelled))

    def options(self, **_: object) -> FakeHandle:
        return self

    async def _score(self, requests, explain):
        self.calls.append(requests)
        self.explains.append(explain)
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        try:
            await self.release.wait()
            if self.fail is not None:
                raise self.fail
            return [ScoreReply(scores=[RowScore(r[0]["key"], 0.5, "m/1", (), None, None)])
                    for r in requests]  # fmt: skip
        finally:
            self.out -= 1


async def _settle(handle: FakeHandle) -> None:
    """Until the client has sent every call it can while the handle holds them."""
    seen = -1
    while seen != len(handle.calls):
        seen = len(handle.calls)
        for _ in range(20):
            await asyncio.sleep(0)


async def test_requests_arriving_while_calls_are_out_travel_together():
    handle = FakeHandle()
    client = HandleModelClient(handle)
    n = 3 * GROUP_REQUESTS + CALLS_IN_FLIGHT
    tasks = [asyncio.create_task(client.score([{"key": f"k{i}"}], explain=i % 2 == 0))
             for i in range(n)]  # fmt: skip
    await _settle(handle)
    assert handle.most_out <= CALLS_IN_FLIGHT
    handle.release.set()
    replies = await asyncio.gather(*tasks)
    # Each request got the reply to its own rows, whatever call carried it.
    assert [r.scores[0].key for r in replies] == [f"k{i}" for i in range(n)]
    assert all(len(c) <= GROUP_REQUESTS for c in handle.calls)
    assert len(handle.calls) < n / 4, [len(c) for c in handle.calls]
    carried = {rows[0]["key"]: e for c, es in zip(handle.calls, handle.explains, strict=True)
               for rows, e in zip(c, es, strict=True)}  # fmt: skip
    assert carried == {f"k{i}": i % 2 == 0 for i in range(n)}  # each request's explain flag


async def test_one_request_alone_is_one_call_at_once():
    handle = FakeHandle()
    handle.release.set()
    reply = await HandleModelClient(handle).score([{"key": "a"}])
    assert reply.scores[0].key == "a" and handle.calls == [[[{"key": "a"}]]]


async def test_a_full_model_queue_fails_every_request_of_the_call_as_overloaded():
    handle = FakeHandle()
    handle.fail = BackPressureError(num_queued_requests=128, max_queued_requests=128)
    handle.release.set()
    client = HandleModelClient(handle)
    results = await asyncio.gather(*(client.score([{"key": f"k{i}"}]) for i in range(5)),
                                   return_exceptions=True)  # fmt: skip
    assert all(isinstance(r, Overloaded) for r in results), results


async def test_a_call_whose_requests_all_gave_up_is_cancelled_and_frees_its_slot():
    """A request that times out (or whose client leaves) is cancelled by its caller; when
    every request of a call has gone, the call is cancelled too, so a slow model stops
    working on it and the client's calls in flight do not fill up with abandoned ones."""
    handle = FakeHandle()
    client = HandleModelClient(handle)
    first = asyncio.create_task(client.score([{"key": "a"}]))
    await _settle(handle)
    rest = [asyncio.create_task(client.score([{"key": f"k{i}"}])) for i in range(3)]
    await _settle(handle)
    assert len(handle.calls) == 2 and handle.out == 2  # "a" alone, then k0-k2 together
    for t in rest:  # k0..k2 give up: their call goes
        t.cancel()
    await _settle(handle)
    assert len(handle.cancelled) == 1 and handle.out == 1
    first.cancel()  # and "a"'s
    await _settle(handle)
    assert len(handle.cancelled) == 2 and handle.out == 0


async def test_a_call_with_one_request_still_waiting_goes_on():
    handle = FakeHandle()
    client = HandleModelClient(handle)
    tasks = [asyncio.create_task(client.score([{"key": f"k{i}"}])) for i in range(3)]
    await _settle(handle)
    tasks[0].cancel()
    tasks[1].cancel()
    await _settle(handle)
    assert handle.cancelled == []
    handle.release.set()
    assert (await tasks[2]).scores[0].key == "k2"
