"""Requests that arrive in the same event-loop turn are scored in one call, and each gets its own answers."""

import asyncio
from types import SimpleNamespace

import pytest

from keiko.serving.app import MicroBatcher
from keiko.serving.unseen import UnseenValues


class CountingServer:
    """The two things MicroBatcher uses of a ModelServer: the serving model and its vectorised scoring."""

    def __init__(self, version: int = 7, fail: bool = False) -> None:
        self.current = SimpleNamespace(version=version, unseen=UnseenValues({}, {}, {}))
        self.calls: list[int] = []
        self.fail = fail

    def score_vectorised(self, loaded, rows):
        self.calls.append(len(rows))
        if self.fail:
            raise RuntimeError("model exploded")
        return [row["x"] / 10 for row in rows]


def test_concurrent_requests_share_one_call_and_get_their_own_rows_back():
    server = CountingServer()
    batcher = MicroBatcher(server)

    async def main():
        requests = [[{"x": i}] for i in range(5)] + [[{"x": 10}, {"x": 11}, {"x": 12}]]
        return await asyncio.gather(*(batcher.score(rows) for rows in requests))

    answers = asyncio.run(main())
    assert server.calls == [8]  # one vectorised call for the 8 rows of 6 requests
    assert answers[:5] == [(7, [i / 10]) for i in range(5)]
    assert answers[5] == (7, [1.0, 1.1, 1.2])


def test_a_request_after_a_flush_starts_a_new_batch():
    server = CountingServer()
    batcher = MicroBatcher(server)

    async def main():
        first = await batcher.score([{"x": 1}])
        second = await asyncio.gather(batcher.score([{"x": 2}]), batcher.score([{"x": 3}]))
        return first, second

    first, second = asyncio.run(main())
    assert server.calls == [1, 2]
    assert first == (7, [0.1]) and second == [(7, [0.2]), (7, [0.3])]


def test_a_failed_call_fails_every_request_of_its_batch_and_none_hangs():
    batcher = MicroBatcher(CountingServer(fail=True))

    async def main():
        return await asyncio.gather(*(batcher.score([{"x": i}]) for i in range(3)), return_exceptions=True)

    answers = asyncio.run(asyncio.wait_for(main(), timeout=5))
    assert [str(a) for a in answers] == ["model exploded"] * 3
    assert batcher.pending == []


@pytest.mark.parametrize("version", [1, 2])
def test_answers_name_the_version_that_scored_them(version):
    batcher = MicroBatcher(CountingServer(version=version))
    assert asyncio.run(batcher.score([{"x": 1}]))[0] == version


def test_a_batch_is_counted_against_the_training_values_of_the_version_that_scored_it():
    server = CountingServer(version=1)
    batcher = MicroBatcher(server)
    v2 = UnseenValues({"x": [1, 2]}, {}, {})

    async def main():
        first = asyncio.ensure_future(batcher.score([{"x": 1}]))
        await asyncio.sleep(0)  # the request has joined the batch, which is not scored yet
        assert batcher.pending and not first.done()
        server.current = SimpleNamespace(version=2, unseen=v2)  # /admin/load swaps the model meanwhile
        return await asyncio.gather(first, batcher.score([{"x": 2}, {"x": 3}]))

    assert [version for version, _ in asyncio.run(main())] == [2, 2]
    assert v2.rows == 3 and v2.counts == {("x", "unseen_category"): 1}
