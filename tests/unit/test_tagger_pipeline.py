"""Pipelined batches (services/tagger/processing.py): a batch is evaluated while the previous one's
commit is in flight, on top of its states, and committed only after it; a failed commit is processed
again before anything after it is committed, and an abandoned one abandons what was built on it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from aiokafka.errors import KafkaTimeoutError
from faust.types import TP

from services.tagger.delivery import SourceBatches
from services.tagger.processing import BatchProcessor

EVENTS_0 = TP("events", 0)


class FakeCheckpoint:
    """What the processor does with a checkpoint: commit it (gated, failing a set number of times)."""

    def __init__(self, processor: FakeProcessor, name: str, after: FakeCheckpoint | None) -> None:
        self.processor = processor
        self.name = name
        self.after = after

    async def commit(self) -> dict[TP, int]:
        steps = self.processor.steps
        steps.append(f"commit {self.name}")
        await self.processor.gates[self.name].wait()
        if self.processor.failures.get(self.name, 0):
            self.processor.failures[self.name] -= 1
            steps.append(f"failed {self.name}")
            raise KafkaTimeoutError()
        steps.append(f"stored {self.name}")
        return {EVENTS_0: self.processor.offsets[self.name]}


class FakeProcessor(BatchProcessor):
    """The processor's pipeline with evaluation replaced: each batch is named by its first record."""

    def __init__(self) -> None:
        self.app = cast(Any, SimpleNamespace(rebalancing=False, should_stop=False))
        self._committing = None
        self.steps: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.failures: dict[str, int] = {}
        self.offsets: dict[str, int] = {}

    async def _evaluate(self, batches: Any, previous: Any) -> tuple[Any, dict[TP, int]]:
        [(_, [name])] = batches
        after = previous.checkpoint if previous is not None else None
        self.steps.append(f"evaluate {name}" + (f" on {after.name}" if after is not None else ""))
        return FakeCheckpoint(self, name, after), {}


def batch(name: str) -> Any:
    return [(EVENTS_0, [name])]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_batch_is_evaluated_on_the_previous_ones_states_and_committed_after_it() -> None:
    processor = FakeProcessor()
    batches = SourceBatches(["events"], limit=100)
    processor.gates = {"a": asyncio.Event(), "b": asyncio.Event()}
    processor.offsets = {"a": 1, "b": 2}
    await processor._process_and_store(batch("a"), batches)
    second = asyncio.ensure_future(processor._process_and_store(batch("b"), batches))
    await settle()
    assert processor.steps == ["evaluate a", "commit a", "evaluate b on a"]  # b waits for a's commit
    processor.gates["a"].set()
    await asyncio.wait_for(second, 1)
    await settle()
    assert processor.steps == ["evaluate a", "commit a", "evaluate b on a", "stored a", "commit b"]
    assert batches.committable() == {EVENTS_0: 1}
    processor.gates["b"].set()
    await settle()
    assert batches.committable() == {EVENTS_0: 2}


async def test_a_failed_commit_is_processed_again_before_the_next_batch_is_committed() -> None:
    processor = FakeProcessor()
    batches = SourceBatches(["events"], limit=100)
    processor.gates = {"a": asyncio.Event(), "b": asyncio.Event()}
    processor.failures = {"a": 1}
    processor.offsets = {"a": 1, "b": 2}
    await processor._process_and_store(batch("a"), batches)
    second = asyncio.ensure_future(processor._process_and_store(batch("b"), batches))
    await settle()
    processor.gates["a"].set()
    processor.gates["b"].set()
    await asyncio.wait_for(second, 2)
    assert processor._committing is not None
    await asyncio.wait_for(processor._committing.task, 1)
    assert processor.steps == [
        "evaluate a",
        "commit a",
        "evaluate b on a",
        "failed a",
        "evaluate a",  # again, from the stored states: the same states b was evaluated on
        "commit a",
        "stored a",
        "commit b",
        "stored b",
    ]
    assert batches.committable() == {EVENTS_0: 2}


async def test_a_batch_built_on_an_abandoned_one_is_abandoned_too() -> None:
    processor = FakeProcessor()
    batches = SourceBatches(["events"], limit=100)
    processor.gates = {"a": asyncio.Event(), "b": asyncio.Event()}
    processor.failures = {"a": 1}
    processor.offsets = {"a": 1, "b": 2}
    await processor._process_and_store(batch("a"), batches)
    second = asyncio.ensure_future(processor._process_and_store(batch("b"), batches))
    await settle()
    processor.app.rebalancing = True  # a rebalance begins while a's changes wait on a dead leader
    processor.gates["a"].set()
    await asyncio.wait_for(second, 1)
    assert processor.steps == ["evaluate a", "commit a", "evaluate b on a", "failed a"]
    assert processor._committing is None
    assert batches.committable() == {}
