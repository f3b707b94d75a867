"""States kept decoded between a customer's messages (services/tagger/decoded.py): a core keeping them
gives, message for message, the bytes and changes of a core decoding every stored state, whatever
else writes the store, when a message fails halfway, or when a batch's states are never written
(no I/O)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from schemas.events import event_adapter
from schemas.topics import Tick, TopicNames
from services.engine import Engine, RuleBook
from services.engine.codec import decode, encode
from services.engine.timeutil import to_us
from services.runtime.clock import ManualClock
from services.runtime.zone import day_zone
from services.tagger.core import Incoming, TaggerCore
from services.tagger.decoded import DecodedStates
from tests.support.builders import at, browse, click, cond, group, order_bands, paid, refunded, value_tiers

TOPICS = TopicNames()
GROUPS = [
    value_tiers(),
    order_bands(),
    group("recent", [("week", [cond("browse_count", "gte", 2, "7d")])], mode="multi"),
    group("clicky", [("day", [cond("click_count", "gte", 1, "1d")])], mode="multi"),
    group("churn", [("likely", [cond("days_since_last_order", "gte", 14)])]),
    group("important", [("vip", [cond("has_tag", "eq", "value/high"), cond("has_tag", "eq", "orders/o4_6")])]),
]


def _core(decoded: DecodedStates | None) -> TaggerCore:
    engine = Engine(RuleBook.compile(GROUPS, zone=day_zone("Asia/Shanghai")))
    return TaggerCore(engine, TOPICS, ManualClock(at(0)), currency="CNY", decoded=decoded)


def _messages(count: int, customers: int) -> Iterator[Incoming]:
    """A shop's stream: sessions of browses and clicks that sometimes end in an order (free ones
    too), refunds days later, a few events resent and a few arriving hours late, timers' wake-ups
    between; each stamped with the latest instant so far (a shop's clock never runs backwards)."""
    rng = random.Random(11)
    adapter = event_adapter()
    owners = [f"顾客-{number:04d}" for number in range(customers)]
    orders: list[tuple[str, str, int]] = []
    sent: list[Any] = []
    when = at(0)
    latest = when
    offset = 0
    while offset < count:
        when += timedelta(minutes=rng.expovariate(1 / 20))
        customer = rng.choice(owners)
        session: list[Any] = []
        for step in range(rng.randint(1, 6)):
            moment = when + timedelta(seconds=40 * step)
            session.append(browse(when=moment, customer=customer, product=f"p{rng.randint(1, 30)}"))
            if rng.random() < 0.4:
                session.append(click(when=moment, customer=customer, target=rng.choice(("banner", "coupon"))))
        if rng.random() < 0.3:
            amount = rng.choice((0, 19, 99, 350, 2600))
            order = paid(amount, when=when + timedelta(minutes=5), customer=customer, products=("p1",))
            orders.append((order.order_id, customer, amount))
            session.append(order)
        refundable = [order for order in orders if order[2] > 0]  # a free order has nothing to refund
        if refundable and rng.random() < 0.03:
            order_id, owner, amount = rng.choice(refundable)
            session.append(refunded(order_id, amount, when=when, customer=owner))
        if rng.random() < 0.02 and sent:
            session.append(rng.choice(sent))  # resent as it was
        if rng.random() < 0.01:
            session.append(browse(when=when - timedelta(hours=rng.randint(1, 20)), customer=customer))
        for event in session:
            sent.append(event)
            latest = max(latest, event.occurred_at)
            key = event.customer_id.encode()
            yield Incoming(TOPICS.events, 0, offset, key, adapter.dump_json(event), to_us(latest))
            offset += 1
        if rng.random() < 0.1:  # a timer's wake-up: time alone moves a customer on (churn, windows)
            woken = rng.choice(owners)
            until = to_us(latest + timedelta(days=rng.randint(1, 20)))
            tick = Tick(customer_id=woken, until_us=until).model_dump_json().encode()
            yield Incoming(TOPICS.tagger_ticks, 0, offset, woken.encode(), tick, to_us(latest))
            offset += 1


Outcome = tuple[str, bytes | None, list[bytes]]


def _run(
    core: TaggerCore,
    messages: list[Incoming],
    *,
    meddle: Callable[[int, dict[str, bytes]], None] = lambda number, store: None,
    unwritten: frozenset[int] = frozenset(),
) -> list[Outcome]:
    """Each message handled against a dict store; its state written unless its number is `unwritten`
    (a batch abandoned before its states were written: the message comes again, as redelivered)."""
    store: dict[str, bytes] = {}
    seen: list[Outcome] = []
    for number, message in enumerate(messages):
        meddle(number, store)
        try:
            result = core.handle(message, store.get)
        except ZeroDivisionError:
            seen.append(("failed", None, []))
            continue
        seen.append((result.outcome, result.state, [change.to_json() for change in result.changes]))
        if number in unwritten:
            result = core.handle(message, store.get)  # read again from what the store still holds
            seen.append((result.outcome, result.state, [change.to_json() for change in result.changes]))
        if result.customer_id is not None and result.state is not None:
            store[result.customer_id] = result.state
    return seen


MESSAGES = list(_messages(3_000, 150))


def test_a_core_keeping_states_decoded_gives_every_message_the_same_bytes_and_changes() -> None:
    decoded = DecodedStates()
    kept = _run(_core(decoded), MESSAGES)
    assert kept == _run(_core(None), MESSAGES)
    assert sum(1 for outcome, _, changes in kept if changes) > 1_000  # the rules really fire
    assert 0 < len(decoded) <= 150


def test_a_state_written_by_someone_else_is_read_from_the_store_not_from_the_kept_one() -> None:
    # a restore, a backfill, another worker before a rebalance: the store holds other bytes than the
    # ones the kept state was encoded to (here: the customer's state as it was ten messages earlier)
    history: dict[int, dict[str, bytes]] = {}

    def meddle(number: int, store: dict[str, bytes]) -> None:
        history[number] = dict(store)
        if number % 7 == 0 and number >= 10:
            customer = MESSAGES[number].key
            assert customer is not None
            earlier = history[number - 10].get(customer.decode())
            if earlier is not None:
                store[customer.decode()] = earlier

    assert _run(_core(DecodedStates()), MESSAGES, meddle=meddle) == _run(_core(None), MESSAGES, meddle=meddle)


class _FailingEngine:
    """The engine, but every 13th event changes the state, then fails (a bug halfway)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def on_event_us(self, state: Any, *args: Any) -> Any:
        self._calls += 1
        if self._calls % 13 == 0:
            state.seq += 1_000
            state.agg.order_count += 5
            raise ZeroDivisionError("a bug")
        return self._engine.on_event_us(state, *args)


def _failing(core: TaggerCore) -> TaggerCore:
    core.engine = _FailingEngine(core.engine)  # type: ignore[assignment]
    return core


def test_a_message_that_fails_halfway_leaves_no_state_changed_behind() -> None:
    kept = _run(_failing(_core(DecodedStates())), MESSAGES)
    assert kept == _run(_failing(_core(None)), MESSAGES)
    assert sum(1 for outcome, _, _ in kept if outcome == "failed") > 100


def test_states_of_a_batch_never_written_are_not_used_when_its_messages_come_again() -> None:
    unwritten = frozenset(range(0, len(MESSAGES), 5))
    kept = _run(_core(DecodedStates()), MESSAGES, unwritten=unwritten)
    assert kept == _run(_core(None), MESSAGES, unwritten=unwritten)


def test_a_kept_state_is_taken_out_and_given_only_for_the_bytes_it_was_encoded_to() -> None:
    states = DecodedStates(limit=2)
    first = decode(encode(_core(None).engine.new_state("c1")))
    stored = encode(first)
    states.keep("c1", stored, first)
    assert states.take("c1", bytes(stored)) is first  # equal bytes, read back from a store
    assert states.take("c1", stored) is None  # taken out: the caller owns it
    states.keep("c1", stored, first)
    assert states.take("c1", stored + b" ") is None  # other bytes: dropped
    assert states.take("c1", stored) is None
    for customer in ("c1", "c2", "c3"):
        states.keep(customer, stored, first)
    assert len(states) == 2
    assert states.take("c1", stored) is None  # the least recently kept went first
    assert states.take("c3", stored) is first
    none_kept = DecodedStates(limit=0)
    none_kept.keep("c1", stored, first)
    assert len(none_kept) == 0
    with pytest.raises(ValueError, match="0 or more"):
        DecodedStates(limit=-1)
