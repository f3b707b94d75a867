"""`tagstream demo`: a quarter of a generated shop through the whole pipeline, in one process.

The engine tags customers as they browse, order, refund, go quiet and come back; the notifier runs
the demo playbooks (win-back with a delayed SMS that cancels itself when the customer returns, a VIP
thank-you, a sales alert when a lead clicks) on log providers, with consent, quiet hours, caps, holdouts
and coupon deduplication.
Nothing here is demo-only logic: it wires the same engine, read model and notifier as the services,
over in-memory stores, and drives a simulated clock.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TextIO
from zoneinfo import ZoneInfo

from schemas.notifications import NotificationOutcome
from schemas.tags import TagChanged, TagGroup
from services.embedded.pipeline import EmbeddedTagger
from services.embedded.readmodel import ReadModelFacts
from services.embedded.shop import Shop
from services.notifier.composition import policy_from
from services.notifier.core import Notifier
from services.notifier.memory import MemoryLedger, MemoryScheduler
from services.notifier.policy import PlaybookSet, Policy, load_playbooks
from services.notifier.ports import Message
from services.notifier.providers import LogProvider
from services.runtime.clock import ManualClock
from services.runtime.customers import MemoryCustomers, Profile
from services.runtime.definitions import parse_groups, templates
from services.runtime.settings import NotifierSettings, ShopSettings
from services.runtime.zone import day_zone

START = datetime(2026, 8, 1, tzinfo=UTC)
SHOP_ZONE = "Asia/Shanghai"
"""The demo shop's time zone unless TAGSTREAM_SHOP__TIMEZONE names another: its days, quiet hours,
customers' profiles and the times printed."""
TEMPLATES = ("value_tiers", "lifecycle", "rfm", "churn")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ("伟", "芳", "娜", "敏", "静", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超", "霞")
SALES = ("sales.wang", "sales.li", "sales.zhao")
"""The shop's salespeople (WeCom userids); every customer is assigned one as the profile's owner."""


@dataclass
class DemoSummary:
    events: int = 0
    tag_changes: int = 0
    customers: int = 0
    tags: list[tuple[str, str, int]] = field(default_factory=list)
    """(group name, tag name, customers holding it) in display order."""
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(channel, outcome, reason) -> count."""
    returned_after_coupon: int = 0


def demo_groups() -> list[TagGroup]:
    """The built-in rule set: value tiers, lifecycle, RFM and churn templates, plus a tag built on tags."""
    groups = [group for name in TEMPLATES for group in templates()[name].render()]
    extra = resources.files("services.embedded").joinpath("demo-groups.yaml").read_text(encoding="utf-8")
    return groups + parse_groups(extra, "demo-groups.yaml")


def demo_playbooks() -> PlaybookSet:
    text = resources.files("services.embedded").joinpath("demo-playbooks.yaml").read_text(encoding="utf-8")
    return load_playbooks(text, "demo-playbooks.yaml")


def demo_policy(zone: str = SHOP_ZONE) -> Policy:
    """The notifier's default policy (caps, quiet hours, coupon period), in the shop's time zone."""
    return policy_from(NotifierSettings(), ShopSettings(timezone=zone))


class CouponDesk:
    """The coupon channel of the demo: logs like the log provider, and the shop's customers see it."""

    def __init__(self, shop: Shop, clock: ManualClock) -> None:
        self._log = LogProvider("coupon")
        self._shop = shop
        self._clock = clock

    async def send(self, message: Message) -> int:
        self._shop.coupon_received(message.customer_id, self._clock.now())
        return await self._log.send(message)

    async def close(self) -> None:
        await self._log.close()


class _Outcomes:
    """Collects the notifier's decisions and prints them as they happen."""

    def __init__(self, out: TextIO, names: dict[str, str], zone: str) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self._out = out
        self._names = names
        self._zone = zone
        self.owners: dict[str, str] = {}

    async def emit(self, outcome: NotificationOutcome) -> None:
        self.counts[(outcome.channel, outcome.outcome, outcome.reason)] += 1
        if outcome.outcome == "scheduled":
            return
        what = outcome.coupon or outcome.channel
        why = f" ({outcome.reason})" if outcome.reason and outcome.reason != outcome.outcome else ""
        until = f" until {_local(outcome.deferred_until, self._zone)[-5:]}" if outcome.deferred_until else ""
        mark = _MARK.get(outcome.outcome, "·")
        who = self._names[outcome.customer_id]
        if outcome.channel == "alert":
            who = f"{self.owners.get(outcome.customer_id, '?')} about {who}"
        print(
            f"{_local(outcome.decided_at, self._zone)}  {mark} {outcome.outcome:<10} {what:<12} → {who}{why}{until}"
            f"  [{outcome.playbook_id}]",
            file=self._out,
        )

    async def dead_letter(self, outcome: NotificationOutcome) -> None:
        self.counts[(outcome.channel, "dead-lettered", outcome.reason)] += 1


_MARK = {"sent": "✉", "suppressed": "✗", "deferred": "⏸", "cancelled": "↩", "failed": "!"}


async def run_demo(
    out: TextIO, *, customers: int = 400, days: int = 91, seed: int = 7, follow: int = 3, zone: str = SHOP_ZONE
) -> DemoSummary:
    """Simulate `days` of a shop in `zone`; print what happens; return the summary."""
    clock = ManualClock(START)
    shop = Shop(customers=customers, start=START, days=days, seed=seed)
    groups = demo_groups()
    labels = {(group.id, tag.id): f"{group.name}: {tag.name}" for group in groups for tag in group.tags}
    tagger = EmbeddedTagger(groups, zone=day_zone(zone))
    people = MemoryCustomers()
    names = await _register(people, shop, seed, zone)
    outcomes = _Outcomes(out, names, zone)
    outcomes.owners = {customer_id: owner(customer_id) for customer_id in names}
    notifier = Notifier(
        demo_playbooks(),
        MemoryScheduler(),
        MemoryLedger(),
        people,
        ReadModelFacts(tagger.readmodel),
        {
            "push": LogProvider("push"),
            "sms": LogProvider("sms"),
            "coupon": CouponDesk(shop, clock),
            "alert": LogProvider("alert"),
        },
        outcomes,
        clock,
        policy=demo_policy(zone),
    )
    followed = _followed(shop, follow)

    async def narrate(changes: list[TagChanged]) -> None:
        for change in changes:
            if change.customer_id in followed:
                label = labels.get((change.group_id, change.tag_id), f"{change.group_id}/{change.tag_id}")
                sign = "+" if change.change == "added" else "−"
                who = names[change.customer_id]
                why = f"{change.source}: {change.reason.summary}"
                print(f"{_local(change.occurred_at, zone)}  {sign} {who} {label}  ({why})", file=out)

    tagger.listen(narrate)
    tagger.listen(notifier.on_changes)
    print(_banner(customers, days, groups, notifier.playbooks, followed, names, zone), file=out)

    summary = DemoSummary(customers=customers)
    hour = START
    week_end = START + timedelta(days=7)
    week_events = week_changes = 0
    for event in shop.events():
        while hour + timedelta(hours=1) <= event.occurred_at:
            hour += timedelta(hours=1)
            await _step(clock, tagger, notifier, hour)
            if hour >= week_end:
                print(_week_line(week_end, week_events, tagger.changes - week_changes, outcomes.counts), file=out)
                week_events, week_changes = 0, tagger.changes
                week_end += timedelta(days=7)
        clock.set(max(clock.now(), event.occurred_at))
        await tagger.event(event, clock.now())
        summary.events += 1
        week_events += 1
    end = START + timedelta(days=days)
    while hour < end:
        hour += timedelta(hours=1)
        await _step(clock, tagger, notifier, hour)

    summary.tag_changes = tagger.changes
    summary.outcomes = outcomes.counts
    summary.returned_after_coupon = len(shop.returned_after_coupon)
    for group in groups:
        for tag in group.ordered_tags():
            summary.tags.append((group.name, tag.name, await tagger.readmodel.member_count(group.id, tag.id)))
    print(render_summary(summary), file=out)
    return summary


async def _step(clock: ManualClock, tagger: EmbeddedTagger, notifier: Notifier, now: datetime) -> None:
    clock.set(now)
    await tagger.advance(now)
    while await notifier.run_due():
        pass


async def _register(people: MemoryCustomers, shop: Shop, seed: int, zone: str) -> dict[str, str]:
    """Profiles for every customer (names, phones, the shop's zone); a few opt out of SMS."""
    rng = random.Random(seed)
    names: dict[str, str] = {}
    for customer_id in shop.personas:
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if rng.random() < 0.5 else "")
        names[customer_id] = f"{name}({customer_id})"
        phone = f"+86 13{rng.randint(0, 9)} {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
        profile = Profile(name=name, phone=phone, timezone=zone, owner=owner(customer_id))
        await people.set_profile(customer_id, profile)
        if rng.random() < 0.08:
            await people.opt_out(customer_id, "sms")
    return names


def owner(customer_id: str) -> str:
    """The customer's salesperson: assigned in turn by customer number (no draw, so the shop stays the same)."""
    return SALES[int(customer_id.removeprefix("c")) % len(SALES)]


def _followed(shop: Shop, count: int) -> set[str]:
    """A few customers whose every tag change is narrated: one of each interesting persona."""
    wanted = ("lapsing", "loyal", "one_time", "regular")
    chosen: list[str] = []
    for persona in wanted[:count]:
        chosen += [c for c, p in shop.personas.items() if p.name == persona][:1]
    return set(chosen)


def _banner(
    customers: int,
    days: int,
    groups: Iterable[TagGroup],
    playbooks: PlaybookSet,
    followed: set[str],
    names: dict[str, str],
    zone: str,
) -> str:
    lines = [
        f"tagstream demo: {customers} customers, {days} simulated days from {START:%Y-%m-%d}, all in this process",
        "tag groups: " + ", ".join(f"{g.name} ({g.id})" for g in groups),
        "playbooks: " + ", ".join(p.id for p in playbooks.playbooks) + "  (providers: log)",
        "following every tag change of: " + ", ".join(names[c] for c in sorted(followed)),
        f"notifications: ✉ sent  ✗ suppressed  ⏸ deferred (quiet hours)  ↩ cancelled; times are {zone}",
        "",
    ]
    return "\n".join(lines)


def _week_line(end: datetime, events: int, changes: int, counts: Counter[tuple[str, str, str]]) -> str:
    sent = sum(n for (_, outcome, _), n in counts.items() if outcome == "sent")
    week = f"── week to {end - timedelta(days=1):%m-%d}"
    return f"{week}: {events:,} events, {changes:,} tag changes; {sent} messages sent so far"


def render_summary(summary: DemoSummary) -> str:
    lines = [
        "",
        f"{summary.events:,} events, {summary.tag_changes:,} tag changes for {summary.customers} customers;"
        f" {summary.returned_after_coupon} came back after a coupon.",
        "",
        f"{'group':<12} {'tag':<12} {'customers':>9}",
    ]
    for group, tag, count in summary.tags:
        lines.append(f"{_pad(group, 12)} {_pad(tag, 12)} {count:>9}")
    lines += ["", f"{'channel':<8} {'outcome':<11} {'reason':<12} {'count':>6}"]
    for (channel, outcome, reason), count in sorted(summary.outcomes.items()):
        lines.append(f"{channel:<8} {outcome:<11} {reason or '-':<12} {count:>6}")
    return "\n".join(lines)


def _local(at: datetime, zone: str) -> str:
    return f"{at.astimezone(ZoneInfo(zone)):%m-%d %H:%M}"


def _pad(text: str, width: int) -> str:
    """Pad by display width: CJK characters take two columns."""
    shown = sum(2 if ord(char) > 0x2E80 else 1 for char in text)
    return text + " " * max(0, width - shown)
