"""The tagger's bounds on a stuck rebalance (liveness), a stuck shutdown (services/tagger/watchdog.py) and a
batch whose Kafka send failed (retried, or left unacknowledged once a rebalance is under way)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any, cast

from aiokafka.errors import KafkaTimeoutError
from faust.types import TP

from services.tagger.processing import BatchProcessor
from services.tagger.watchdog import RebalanceWatch, exit_after, liveness


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_worker_not_rebalancing_is_alive() -> None:
    verdict = liveness(None, now=5000.0, limit_s=180.0)
    assert verdict.alive
    assert verdict.body() == {"status": "ok"}


def test_a_rebalance_up_to_the_limit_is_alive_and_past_it_is_stuck() -> None:
    assert liveness(100.0, now=280.0, limit_s=180.0).alive
    stuck = liveness(100.0, now=280.5, limit_s=180.0)
    assert not stuck.alive
    assert stuck.body() == {"status": "stuck", "rebalancing_for_s": 180.5, "rebalance_stuck_s": 180.0}


def test_the_watch_counts_from_the_first_start_of_a_rebalance_that_restarts_before_ending() -> None:
    clock = FakeMonotonic()
    watch = RebalanceWatch(clock=clock)
    watch.on_rebalance_start(None)
    clock.now += 100
    watch.on_rebalance_start(None)  # the group's rebalance began again (a second broker event)
    clock.now += 100
    assert not watch.liveness(limit_s=180.0).alive
    watch.on_rebalance_return(None, {})  # the new assignment is taken
    assert watch.liveness(limit_s=180.0).alive
    watch.on_rebalance_start(None)
    clock.now += 10
    assert watch.liveness(limit_s=180.0).rebalancing_for_s == 10


def test_a_stop_that_outlasts_the_timeout_exits_with_the_code() -> None:
    exited: list[int] = []
    done = threading.Event()

    def fake_exit(code: int) -> None:
        exited.append(code)
        done.set()

    timer = exit_after(0.05, code=3, exit=fake_exit)
    assert done.wait(5.0)
    timer.join(5.0)
    assert exited == [3]


class FakeTagger:
    """What `BatchProcessor.process_or_abandon` touches: the app's rebalance/stop flags and `_process`."""

    def __init__(self, failures: int, rebalancing: bool = False) -> None:
        self.app = SimpleNamespace(rebalancing=rebalancing, should_stop=False)
        self.failures = failures
        self.calls = 0

    async def _process(self, batches: list[tuple[TP, list[str]]]) -> dict[TP, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaTimeoutError()
        return {tp: len(records) for tp, records in batches}


BATCHES = [(TP("events", 0), ["e1", "e2"])]


async def test_a_batch_whose_send_failed_is_processed_again_and_then_stored() -> None:
    fake = FakeTagger(failures=2)
    stored = await BatchProcessor.process_or_abandon(cast(Any, fake), cast(Any, BATCHES))
    assert stored == {TP("events", 0): 2}
    assert fake.calls == 3


async def test_a_batch_whose_send_failed_during_a_rebalance_is_abandoned_with_no_position_stored() -> None:
    fake = FakeTagger(failures=1, rebalancing=True)
    assert await BatchProcessor.process_or_abandon(cast(Any, fake), cast(Any, BATCHES)) == {}
    assert fake.calls == 1
