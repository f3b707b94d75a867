"""What every peer worker shares: the core on the tagger's settings, its timers, and its signals."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks.clock import FileClock
from benchmarks.workload import rules
from schemas.tags import TagGroupSet
from schemas.topics import Tick
from services.engine import Engine, RuleBook
from services.engine.arrival import Arrival
from services.engine.timeutil import to_us
from services.runtime.clock import Clock
from services.runtime.settings import Settings, load_settings
from services.runtime.zone import day_zone
from services.tagger.core import TaggerCore
from services.tagger.decoded import DecodedStates
from services.tagger.index import CustomerIndex


@dataclass(frozen=True)
class PeerWorker:
    """A peer's set-up: the tagger's settings (TAGSTREAM_*), the benchmark clock and the ready file."""

    settings: Settings
    clock: Clock
    ready_file: Path

    @classmethod
    def from_arguments(cls, argv: list[str]) -> PeerWorker:
        clock_file, ready_file = argv
        return cls(load_settings(), FileClock(Path(clock_file)), Path(ready_file))

    def core(self) -> TaggerCore:
        """The tagger's core on the workload's rules, compiled as the tagger compiles what it reads
        from the definitions topic (the harness publishes the same rules there)."""
        settings = self.settings
        zone = day_zone(settings.shop.timezone)
        groups = TagGroupSet.model_validate(rules()).groups
        rulebook = RuleBook.compile(
            groups, horizon_days=settings.tagger.horizon_days, today=zone.date_of(self.clock.now()), zone=zone
        )
        return TaggerCore(
            Engine(rulebook),
            settings.topics,
            self.clock,
            Arrival.of(settings.shop.future_skew, settings.history_age),
            currency=settings.shop.currency,
            partitions=settings.kafka.partitions,  # the tagger's own check, paid here too
            decoded=DecodedStates(),  # states kept decoded between a customer's messages, as the tagger keeps them
        )

    def signal_ready(self) -> None:
        """Tell the harness the worker is about to consume: its CPU and time are counted from here."""
        partial = self.ready_file.with_suffix(".partial")
        partial.write_text(str(os.getpid()))
        os.replace(partial, self.ready_file)


class Timers:
    """The tagger's wake-ups (services/tagger/app.py `_wake_due_customers`): who is due by the clock
    gets a tick on the ticks topic, which the worker consumes like any other record."""

    def __init__(self, clock: Clock, partitions: int) -> None:
        self._clock = clock
        self._index = CustomerIndex()
        self._partitions = partitions

    def schedule(self, customer_id: str, due_us: int | None) -> None:
        self._index.put(customer_id, 0, due_us)

    def due(self) -> list[tuple[bytes, bytes]]:
        """(key, tick) for every customer due now; off the index once handed out."""
        now_us = to_us(self._clock.now())
        return [
            (customer_id.encode(), Tick(customer_id=customer_id, until_us=now_us).model_dump_json().encode())
            for customer_id, _ in self._index.pop_due(now_us, {0})
        ]
