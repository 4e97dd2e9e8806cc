"""``HandleModelClient`` without Ray: alone while call slots are free, grouped beyond.

The handle is a small fake with Serve's call shape: ``handle.score.remote(requests,
explains)`` returns an awaitable, cancellable response.
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


async def _settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def _ask(client: HandleModelClient, keys, explain: bool = False) -> list[asyncio.Task]:
    return [asyncio.create_task(client.score([{"key": k}], explain=explain)) for k in keys]


async def test_requests_go_alone_while_call_slots_are_free_and_together_beyond():
    handle = FakeHandle()
    client = HandleModelClient(handle)
    alone = _ask(client, [f"a{i}" for i in range(CALLS_IN_FLIGHT)])
    waiting = [asyncio.create_task(client.score([{"key": f"w{i}"}], explain=i % 2 == 0))
               for i in range(GROUP_REQUESTS + 3)]  # fmt: skip
    await _settle()
    assert [len(c) for c in handle.calls] == [1] * CALLS_IN_FLIGHT  # the rest wait
    handle.release.set()
    replies = await asyncio.gather(*alone, *waiting)
    # Each request got the reply to its own rows, whatever call carried it.
    assert [r.scores[0].key for r in replies] == (
        [f"a{i}" for i in range(CALLS_IN_FLIGHT)] + [f"w{i}" for i in range(GROUP_REQUESTS + 3)])
    assert [len(c) for c in handle.calls] == [1] * CALLS_IN_FLIGHT + [GROUP_REQUESTS, 3]
    assert handle.most_out <= CALLS_IN_FLIGHT
    carried = {rows[0]["key"]: e for c, es in zip(handle.calls, handle.explains, strict=True)
               for rows, e in zip(c, es, strict=True) if rows[0]["key"].startswith("w")}
    assert carried == {f"w{i}": i % 2 == 0 for i in range(GROUP_REQUESTS + 3)}  # each its own


async def test_a_full_model_queue_refuses_each_request_of_a_call_as_overloaded():
    handle = FakeHandle()
    client = HandleModelClient(handle)
    tasks = _ask(client, [f"k{i}" for i in range(CALLS_IN_FLIGHT + 5)])  # 8 alone, 5 grouped
    await _settle()
    handle.fail = BackPressureError(num_queued_requests=128, max_queued_requests=128)
    handle.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Overloaded) for r in results), results
    assert [len(c) for c in handle.calls] == [1] * CALLS_IN_FLIGHT + [5]


async def test_a_grouped_call_whose_requests_all_gave_up_is_cancelled_and_frees_its_slot():
    """A request that times out (or whose client leaves) is cancelled by its caller; when
    every request of a call has gone, the call is cancelled too, so a slow model stops
    working on it and the client's slots do not fill up with abandoned calls."""
    handle = FakeHandle()
    client = HandleModelClient(handle)
    alone = _ask(client, [f"a{i}" for i in range(CALLS_IN_FLIGHT)])
    grouped = _ask(client, ["g0", "g1", "g2"])
    await _settle()
    alone[0].cancel()  # its call is cancelled (as Serve does for an awaited response) ...
    await _settle()
    assert [len(c) for c in handle.calls][-1] == 3 and handle.out == CALLS_IN_FLIGHT
    for t in grouped:  # ... and the group that took its slot is given up on by all
        t.cancel()
    await _settle()
    assert len(handle.cancelled) == 1 and handle.out == CALLS_IN_FLIGHT - 1
    late = _ask(client, ["late"])  # the freed slot takes a new request at once
    await _settle()
    assert handle.calls[-1] == [[{"key": "late"}]]
    handle.release.set()
    assert (await late[0]).scores[0].key == "late"


async def test_a_waiting_request_that_gave_up_is_left_out_and_the_others_go_on():
    handle = FakeHandle()
    client = HandleModelClient(handle)
    alone = _ask(client, [f"a{i}" for i in range(CALLS_IN_FLIGHT)])
    grouped = _ask(client, ["g0", "g1", "g2"])
    await _settle()
    grouped[1].cancel()  # gave up while it waited: never sent
    await _settle()
    handle.release.set()
    replies = await asyncio.gather(*alone, grouped[0], grouped[2])
    assert [r.scores[0].key for r in replies[-2:]] == ["g0", "g2"]
    assert handle.calls[-1] == [[{"key": "g0"}], [{"key": "g2"}]]
    assert handle.cancelled == []


async def test_a_group_the_handle_refuses_before_sending_answers_each_request_at_once():
    """An error raised by ``handle.score.remote()`` itself (not by awaiting its response)
    reaches every request of the group now, not at its timeout; the slot is freed."""
    handle = FakeHandle()
    client = HandleModelClient(handle)
    alone = _ask(client, [f"a{i}" for i in range(CALLS_IN_FLIGHT)])
    grouped = _ask(client, ["g0", "g1"])
    await _settle()
    send = handle.score.remote

    def refuse(*args):
        handle.score.remote = send  # the next call goes through again
        raise RuntimeError("the handle refused the call")

    handle.score.remote = refuse
    alone[0].cancel()  # its slot goes to the group, whose call is refused
    await _settle()
    for t in grouped:
        assert t.done() and isinstance(t.exception(), RuntimeError)
    late = _ask(client, ["late"])  # the slot is free again
    await _settle()
    assert handle.calls[-1] == [[{"key": "late"}]]
    handle.release.set()
    assert (await late[0]).scores[0].key == "late"
    await asyncio.gather(*alone[1:])
