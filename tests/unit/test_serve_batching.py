"""MicroBatcher: requests that wait together share one call, kinds never mix, the size cap holds,
a failing batch is retried request by request, off means one call per request, close drains."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bertforge.serve.batching import MicroBatcher, ShuttingDown


class Recorder:
    """A runner that records its calls; the first call blocks until released, so that the
    requests sent meanwhile are all waiting when the batcher next looks (no timing involved)."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[tuple[str, tuple, list]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, endpoint: str, params: tuple, items: list) -> list:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(timeout=10)
        self.calls.append((endpoint, params, list(items)))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot take {self.fail_on}")
        return [f"{endpoint}:{params}:{item}" for item in items]


async def _gather_with_blocked_first(batcher: MicroBatcher, runner: Recorder, requests: list[tuple[str, tuple, list]]):
    await batcher.start()
    first = asyncio.create_task(batcher.call("embed", ("mean",), ["first"]))
    while not runner.entered.is_set():  # the model thread is busy with the first request
        await asyncio.sleep(0.005)
    others = [asyncio.create_task(batcher.call(*request)) for request in requests]
    while len(batcher.pending) < len(requests):  # every other request is queued behind it
        await asyncio.sleep(0.005)
    runner.release.set()
    results = await asyncio.gather(first, *others, return_exceptions=True)
    await batcher.close()
    return results


def test_waiting_requests_of_one_kind_share_a_call_and_keep_their_order():
    runner = Recorder()
    batcher = MicroBatcher(runner, max_batch_items=100, max_wait_ms=100)
    requests = [("embed", ("mean",), [f"a{i}", f"b{i}"]) for i in range(5)]
    results = asyncio.run(_gather_with_blocked_first(batcher, runner, requests))
    assert results[0] == ["embed:('mean',):first"]
    for index, result in enumerate(results[1:]):
        assert result == [f"embed:('mean',):a{index}", f"embed:('mean',):b{index}"]
    assert len(runner.calls) == 2  # the first alone, then the five waiting requests together
    assert runner.calls[1][2] == [item for _, _, items in requests for item in items]
    assert batcher.metrics.value("bertforge_batch_requests_count", endpoint="embed") == 2  # two model calls observed


def test_kinds_and_parameters_never_mix_and_the_size_cap_holds():
    runner = Recorder()
    batcher = MicroBatcher(runner, max_batch_items=4, max_wait_ms=100)
    requests = [("embed", ("mean",), ["m1", "m2"]), ("embed", ("cls",), ["c1"]), ("embed", ("mean",), ["m3", "m4"]),
                ("ner", (), ["n1"]), ("embed", ("mean",), ["m5"])]
    results = asyncio.run(_gather_with_blocked_first(batcher, runner, requests))
    assert results[2] == ["embed:('cls',):c1"] and results[4] == ["ner:():n1"]
    for endpoint, params, items in runner.calls:
        assert len(items) <= 4
        assert all(not item.startswith("c") for item in items) or params == ("cls",)
    merged = [items for endpoint, params, items in runner.calls if params == ("mean",) and "m1" in items]
    assert merged == [["m1", "m2", "m3", "m4"]]  # m5 would pass the cap of 4: next call


def test_a_failing_batch_is_retried_request_by_request():
    runner = Recorder(fail_on="bad")
    batcher = MicroBatcher(runner, max_batch_items=100, max_wait_ms=100)
    requests = [("embed", ("mean",), ["ok1"]), ("embed", ("mean",), ["bad"]), ("embed", ("mean",), ["ok2"])]
    results = asyncio.run(_gather_with_blocked_first(batcher, runner, requests))
    assert results[1] == ["embed:('mean',):ok1"] and results[3] == ["embed:('mean',):ok2"]
    assert isinstance(results[2], ValueError)


def test_off_means_one_call_per_request_in_arrival_order():
    runner = Recorder()
    runner.release.set()
    batcher = MicroBatcher(runner, enabled=False)

    async def scenario():
        await batcher.start()
        results = await asyncio.gather(*(batcher.call("embed", ("mean",), [f"t{i}"]) for i in range(6)))
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert results == [[f"embed:('mean',):t{i}"] for i in range(6)]
    assert [items for _, _, items in runner.calls] == [[f"t{i}"] for i in range(6)]


def test_close_finishes_queued_requests_then_refuses_new_ones():
    runner = Recorder()
    runner.release.set()
    batcher = MicroBatcher(runner, max_batch_items=8, max_wait_ms=10_000)

    async def scenario():
        await batcher.start()
        waiting = [asyncio.create_task(batcher.call("ner", (), [f"x{i}"])) for i in range(3)]
        await asyncio.sleep(0.01)
        await batcher.close()  # does not wait 10 s: closing sends the queue at once
        with pytest.raises(ShuttingDown):
            await batcher.call("ner", (), ["late"])
        return await asyncio.gather(*waiting)

    assert asyncio.run(scenario()) == [["ner:():x0"], ["ner:():x1"], ["ner:():x2"]]
