"""The tagger's read-only views of its state: a customer's aggregates as the rules read them, and the
preview of a definition change, which must count exactly what applying it does."""

from __future__ import annotations

from decimal import Decimal

from schemas.queries import PreviewTally
from services.engine import CustomerState, Engine, RuleBook
from services.engine.codec import encode
from services.engine.lookup import Preview, aggregates_of, merge
from services.engine.timeutil import to_us
from tests.support.builders import at, browse, cond, engine, group, paid, refunded, value_tiers

RAISED_MID = group(
    "value",
    [
        ("high", [cond("total_spent", "gte", 2000)]),
        ("mid", [cond("total_spent", "gte", 400)]),
        ("low", [cond("total_spent", "lt", 400)]),
    ],
)


def shop(amounts: dict[str, str]) -> tuple[Engine, dict[str, CustomerState]]:
    tagger = engine(value_tiers())
    states = {}
    for customer, amount in amounts.items():
        state = tagger.new_state(customer)
        tagger.on_event(state, paid(amount, customer=customer), at())
        states[customer] = state
    return tagger, states


def test_aggregates_show_money_exactly_and_every_window_the_rules_read_at_that_instant() -> None:
    keen = group("browsing", [("keen", [cond("browse_count", "gte", 2, last="7d")])])
    tagger = engine(value_tiers(), keen, zone="Asia/Shanghai")
    state = tagger.new_state("c1")
    first = paid("120.50", order="o1")
    for event in (first, paid("0"), refunded("o1", "20.25"), browse(), browse(when=at(days=3))):
        tagger.on_event(state, event, at(days=3))

    found = aggregates_of(state, tagger.rulebook, to_us(at(days=9)))

    assert (found.order_count, found.total_spent, found.avg_order_value) == (2, Decimal("100.25"), Decimal("50.1250"))
    assert found.last_order_at == at()
    assert [(w.metric.value, w.window.last, w.count) for w in found.windows] == [("browse_count", "7d", 1)]


def test_a_preview_counts_what_applying_the_draft_does_and_changes_no_stored_state() -> None:
    tagger, states = shop({"a": "100", "b": "350", "c": "390", "d": "450", "e": "0"})
    stored = {customer: encode(state) for customer, state in states.items()}
    preview = Preview(tagger.rulebook, [RAISED_MID], sample=5)
    for data in stored.values():
        preview.add(data, to_us(at(hours=1)))

    tally = preview.tally()
    assert {customer: encode(state) for customer, state in states.items()} == stored  # untouched

    change = tagger.load(RuleBook.compile([RAISED_MID]))  # what the tagger does when the draft is applied
    applied: dict[tuple[str, str], list[int]] = {}
    for state in states.values():
        for flip in tagger.backfill(state, change, at(hours=1)):
            counts = applied.setdefault((flip.group_id, flip.tag_id), [0, 0])
            counts[0 if flip.change == "added" else 1] += 1
    assert (
        {(i.group_id, i.tag_id): [i.gained, i.lost] for i in tally.impacts}
        == applied
        == {
            ("value", "low"): [2, 0],
            ("value", "mid"): [0, 2],
        }
    )
    low = next(i for i in tally.impacts if i.tag_id == "low")
    assert [s.customer_id for s in low.gained_sample] == ["b", "c"]
    assert low.gained_sample[0].reason.conditions[0].observed == "350"


def test_an_unchanged_draft_evaluates_nobody_and_moves_nobody() -> None:
    tagger, states = shop({"a": "100"})
    preview = Preview(tagger.rulebook, [value_tiers()], sample=5)
    preview.add(encode(states["a"]), to_us(at()))
    assert preview.empty
    assert preview.tally() == PreviewTally(customers=1, impacts=[])


def test_partition_answers_merge_into_sums_and_the_lowest_ids_of_all() -> None:
    tagger, states = shop({f"c{n:02d}": "350" for n in range(12)})
    halves = []
    for part in (sorted(states)[1::2], sorted(states)[::2]):  # odd ids first: the lowest are in the second
        preview = Preview(tagger.rulebook, [RAISED_MID], sample=3)
        for customer in part:
            preview.add(encode(states[customer]), to_us(at()))
        halves.append(preview.tally())

    merged = merge(halves, sample=3)

    assert merged.customers == 12
    low = next(i for i in merged.impacts if i.tag_id == "low")
    assert (low.gained, low.lost) == (12, 0)
    assert [s.customer_id for s in low.gained_sample] == ["c00", "c01", "c02"]
