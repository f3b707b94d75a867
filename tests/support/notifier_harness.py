"""The Notifier core over the in-memory stores with recording providers: what the core's unit tests drive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.tags import Reason, TagChanged, TagGroup
from services.notifier.core import Notifier, Tuning
from services.notifier.memory import MemoryLedger, MemoryOutcomes, MemoryScheduler, MemoryTagFacts
from services.notifier.policy import Policy, load_playbooks
from services.notifier.ports import Message
from services.runtime.clock import ManualClock
from services.runtime.customers import MemoryCustomers
from services.runtime.resilience import GaveUp
from tests.support.playbooks import WINBACK_HIGH_VALUE, playbooks_file

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai

PLAYBOOKS = playbooks_file(
    WINBACK_HIGH_VALUE,
    """
  - id: vip
    trigger: {group: value, tag: vip}
    steps: [{channel: coupon, coupon: HV-50}]
  - id: loyal
    trigger: {group: loyalty, tag: loyal}
    steps: [{channel: coupon, coupon: HV-50}]
  - id: control
    trigger: {group: value, tag: test}
    steps: [{channel: push, template: brand-sale}]
    holdout: 100%
""",
)


class RecordingProvider:
    def __init__(self, fail: str | None = None) -> None:
        self.messages: list[Message] = []
        self.fail = fail

    async def send(self, message: Message) -> int:
        if self.fail is not None:
            raise GaveUp(self.fail, 4)
        self.messages.append(message)
        return 1

    async def close(self) -> None:
        return None


class Harness:
    def __init__(
        self,
        policy: Policy | None = None,
        fail: str | None = None,
        playbooks: str = PLAYBOOKS,
        groups: dict[str, TagGroup] | None = None,
    ) -> None:
        self.clock = ManualClock(T0)
        self.customers = MemoryCustomers()
        self.tags = MemoryTagFacts()
        self.outcomes = MemoryOutcomes()
        self.scheduler = MemoryScheduler()
        self.providers = {channel: RecordingProvider(fail) for channel in ("push", "sms", "coupon", "alert")}
        self.notifier = Notifier(
            load_playbooks(playbooks),
            self.scheduler,
            MemoryLedger(),
            self.customers,
            self.tags,
            self.providers,
            self.outcomes,
            self.clock,
            policy=policy,
            tuning=Tuning(lease=timedelta(seconds=30)),
            definitions=(lambda: groups) if groups is not None else None,
        )
        self.seq = 0

    async def tag(self, customer: str, group: str, tag: str, change: str = "added", seq: int | None = None) -> None:
        self.seq += 1
        self.tags.apply(customer, group, tag, change)
        message = TagChanged(
            customer_id=customer,
            group_id=group,
            tag_id=tag,
            change=change,  # type: ignore[arg-type]
            source="rule",
            reason=Reason(summary="test"),
            group_version=1,
            occurred_at=self.clock.now(),
            seq=seq or self.seq,
        )
        await self.notifier.on_changes([message])

    async def drain(self) -> None:
        while await self.notifier.run_due():
            pass

    def sent(self, channel: str) -> list[Message]:
        return self.providers[channel].messages

    def outcomes_of(self, channel: str) -> list[tuple[str, str]]:
        return [(o.outcome, o.reason) for o in self.outcomes.outcomes if o.channel == channel]
