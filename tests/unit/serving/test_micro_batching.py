"""Requests that arrive in the same event-loop turn are scored in one call per model, and each gets its own answers."""

import asyncio
from types import SimpleNamespace

from keiko.serving.model_server import MicroBatcher
from keiko.serving.unseen import UnseenValues


def model(version: int, unseen: UnseenValues | None = None) -> SimpleNamespace:
    return SimpleNamespace(version=version, unseen=unseen or UnseenValues({}, {}, {}))


class CountingServer:
    """What MicroBatcher uses of a ModelServer: its vectorised scoring (scores say which version scored them)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[int, int]] = []  # (version, rows)
        self.fail = fail

    def score_vectorised(self, loaded, rows):
        self.calls.append((loaded.version, len(rows)))
        if self.fail:
            raise RuntimeError("model exploded")
        return [loaded.version + row["x"] / 100 for row in rows]


def test_concurrent_requests_share_one_call_and_get_their_own_rows_back():
    server, v7 = CountingServer(), model(7)
    batcher = MicroBatcher(server)

    async def main():
        requests = [[{"x": i}] for i in range(5)] + [[{"x": 10}, {"x": 11}, {"x": 12}]]
        return await asyncio.gather(*(batcher.score(v7, rows) for rows in requests))

    answers = asyncio.run(main())
    assert server.calls == [(7, 8)]  # one vectorised call for the 8 rows of 6 requests
    assert answers[:5] == [[7 + i / 100] for i in range(5)]
    assert answers[5] == [7.10, 7.11, 7.12]


def test_requests_routed_to_two_versions_are_scored_by_their_own_in_one_call_each():
    server, stable, canary = CountingServer(), model(1), model(2)
    batcher = MicroBatcher(server)

    async def main():
        routed = [stable, canary, stable, canary, canary]
        return await asyncio.gather(*(batcher.score(m, [{"x": n}]) for n, m in enumerate(routed)))

    assert asyncio.run(main()) == [[1.00], [2.01], [1.02], [2.03], [2.04]]
    assert sorted(server.calls) == [(1, 2), (2, 3)]


def test_a_request_after_a_flush_starts_a_new_batch():
    server, v7 = CountingServer(), model(7)
    batcher = MicroBatcher(server)

    async def main():
        first = await batcher.score(v7, [{"x": 1}])
        second = await asyncio.gather(batcher.score(v7, [{"x": 2}]), batcher.score(v7, [{"x": 3}]))
        return first, second

    first, second = asyncio.run(main())
    assert server.calls == [(7, 1), (7, 2)]
    assert first == [7.01] and second == [[7.02], [7.03]]


def test_a_failed_call_fails_every_request_of_its_batch_and_none_hangs():
    batcher = MicroBatcher(CountingServer(fail=True))

    async def main():
        v1 = model(1)
        return await asyncio.gather(*(batcher.score(v1, [{"x": i}]) for i in range(3)), return_exceptions=True)

    answers = asyncio.run(asyncio.wait_for(main(), timeout=5))
    assert [str(a) for a in answers] == ["model exploded"] * 3
    assert batcher.pending == []


def test_a_batch_is_counted_against_the_training_values_of_the_version_that_scored_it():
    v1, v2 = UnseenValues({"x": [1]}, {}, {}), UnseenValues({"x": [1, 2]}, {}, {})
    batcher = MicroBatcher(CountingServer())

    async def main():
        return await asyncio.gather(batcher.score(model(1, v1), [{"x": 1}]), batcher.score(model(2, v2), [{"x": 3}]))

    asyncio.run(main())
    assert v1.rows == 1 and v1.counts == {("x", "unseen_category"): 0}
    assert v2.rows == 1 and v2.counts == {("x", "unseen_category"): 1}
