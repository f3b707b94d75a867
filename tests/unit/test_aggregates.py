import hashlib
from decimal import Decimal

from services.engine.aggregates import DAY_CAP, apply, event_digest, fold, initial
from services.engine.timeutil import DAY_US, to_us
from services.engine.zone import UTC_ZONE
from tests.support.builders import T0, at, browse, click, paid, refunded


def fold_all(*events):
    state = initial()
    for event in events:
        apply(state, event)
    return state


def test_paid_orders_count_and_sum_exactly():
    state = fold_all(paid("99.90", order="o1"), paid("300.10", order="o2", points=30))
    assert state.order_count == 2
    assert state.total_spent == Decimal("400.00")
    assert state.avg_order_value == Decimal("200.0000")
    assert state.points_total == 30


def test_a_full_refund_removes_the_order_from_counts_but_not_from_last_purchase_time():
    state = fold_all(
        paid("100", order="o1", when=at(0)),
        paid("50", order="o2", when=at(5), points=5, products=("sku-9",)),
        refunded("o2", "50", when=at(6)),
    )
    assert state.order_count == 1
    assert state.total_spent == Decimal("100")
    assert state.points_total == 0
    assert state.last_order_us == to_us(at(5))  # refunds do not change last purchase time
    assert "sku-9" in state.products  # nor what was bought


def test_a_partial_refund_reduces_spend_and_keeps_the_order_counted():
    state = fold_all(paid("200", order="o1"), refunded("o1", "80"))
    assert state.order_count == 1
    assert state.total_spent == Decimal("120")


def test_partial_refunds_that_add_up_to_the_order_amount_uncount_it():
    state = fold_all(paid("200", order="o1"), refunded("o1", "80"), refunded("o1", "120"))
    assert state.order_count == 0
    assert state.total_spent == Decimal("0")


def test_a_refund_that_arrives_before_its_order_is_applied_when_the_order_arrives():
    in_order = fold_all(paid("200", order="o1", points=20), refunded("o1", "200"))
    reversed_ = fold_all(refunded("o1", "200"), paid("200", order="o1", points=20))
    for state in (in_order, reversed_):
        assert (state.order_count, state.total_spent, state.points_total) == (0, Decimal("0"), 0)


def test_an_order_paid_at_zero_counts_as_an_order():
    state = fold_all(paid("0", order="free", points=5), paid("80", order="o2"))
    assert state.order_count == 2
    assert state.total_spent == Decimal("80")
    assert state.avg_order_value == Decimal("40.0000")
    assert state.points_total == 5
    assert sum(state.order_days(UTC_ZONE).values()) == 2


def test_any_refund_of_an_order_paid_at_zero_uncounts_it_in_either_arrival_order():
    in_order = fold_all(paid("0", order="free", points=5), refunded("free", "0.01"))
    reversed_ = fold_all(refunded("free", "0.01"), paid("0", order="free", points=5))
    for state in (in_order, reversed_):
        assert (state.order_count, state.total_spent, state.points_total) == (0, Decimal("0"), 0)
        assert state.order_days(UTC_ZONE) == {}


def test_order_days_read_before_a_free_order_follow_it_and_its_refund():
    state = fold_all(paid("10", order="o1"))
    assert sum(state.order_days(UTC_ZONE).values()) == 1
    apply(state, paid("0", order="free"))
    assert sum(state.order_days(UTC_ZONE).values()) == 2
    apply(state, refunded("free", "1"))
    assert sum(state.order_days(UTC_ZONE).values()) == 1


def test_a_duplicate_event_id_changes_nothing():
    event = browse(event_id="same")
    state = initial()
    assert fold(state, event) is True
    assert fold(state, event) is False
    assert sum(state.browse.values()) == 1


def test_a_re_sent_payment_for_the_same_order_is_a_duplicate():
    state = fold_all(paid("10", order="o1"), paid("10", order="o1"))
    assert state.order_count == 1
    assert state.total_spent == Decimal("10")


def test_a_duplicate_refund_is_applied_once():
    refund = refunded("o1", "5")
    state = fold_all(paid("10", order="o1"), refund, refund)
    assert state.total_spent == Decimal("5")


def test_a_resent_batch_of_40_browses_counts_once_however_late_it_comes():
    batch = [browse(event_id=f"b{number}", when=at(0, hours=number / 10)) for number in range(40)]
    state = fold_all(*batch, browse(when=at(30)), click(when=at(60)))
    assert [fold(state, event) for event in batch] == [False] * 40
    assert sum(state.browse.values()) == 41
    assert len(state.seen[min(state.seen)]) == 40 * 8  # one 8-byte digest per counted event


def test_a_day_counts_at_most_the_cap_and_a_resent_capped_event_changes_nothing():
    state = initial()
    events = [browse(event_id=f"b{number}") for number in range(DAY_CAP + 2)]
    for event in events:
        fold(state, event)
    for event in events:
        fold(state, event)
    assert sum(state.browse.values()) == DAY_CAP
    assert len(state.seen[min(state.seen)]) == DAY_CAP * 8  # the memory's bound: what was counted
    fold(state, click())
    assert sum(state.click.values()) == 1  # clicks have a cap of their own


def test_event_id_memory_is_pruned_with_the_day_buckets():
    old = browse(event_id="old", when=at(0))
    state = fold_all(old, browse(when=at(1)))
    apply(state, browse(when=at(400)), horizon_days=400)
    assert sorted(state.seen) == sorted(state.browse)
    assert fold(state, old, 400) is True  # beyond the horizon: seen, counted nowhere
    assert sum(state.browse.values()) == 2


def test_event_digests_are_stable_64_bits_and_match_only_whole():
    digest = hashlib.blake2b(b"e-1", digest_size=8).digest()
    assert event_digest("e-1") == digest  # what stored states hold: the format must not drift
    state = fold_all(browse(event_id="first"))
    wanted = event_digest("wanted")
    day = next(iter(state.seen))
    # a remembered pair of digests whose bytes contain `wanted` across their boundary
    state.seen[day] = bytearray(b"\0" * 4 + wanted + b"\0" * 4)
    assert fold(state, browse(event_id="wanted")) is True  # not a duplicate: no whole match
    assert fold(state, browse(event_id="wanted")) is False  # now it is remembered


def test_first_and_last_order_times_do_not_depend_on_arrival_order():
    early, late = paid("1", when=at(0)), paid("1", when=at(9))
    forward, backward = fold_all(early, late), fold_all(late, early)
    assert forward.first_order_us == backward.first_order_us == to_us(at(0))
    assert forward.last_order_us == backward.last_order_us == to_us(at(9))


def test_activity_is_kept_in_daily_buckets():
    state = fold_all(browse(when=at(0)), browse(when=at(0, hours=3)), click(when=at(1)))
    today = to_us(T0) // DAY_US
    assert state.browse == {today: 2}
    assert state.click == {today + 1: 1}


def test_buckets_older_than_the_horizon_are_dropped_whatever_the_arrival_order():
    old, new = browse(when=at(0)), browse(when=at(30))
    state_forward = initial()
    state_backward = initial()
    for event in (old, new):
        apply(state_forward, event, horizon_days=10)
    for event in (new, old):
        apply(state_backward, event, horizon_days=10)
    assert state_forward.browse == state_backward.browse == {to_us(at(30)) // DAY_US: 1}


def test_windowed_order_days_exclude_fully_refunded_orders():
    state = fold_all(paid("10", order="o1", when=at(0)), paid("10", order="o2", when=at(1)), refunded("o2", "10"))
    assert state.order_days(UTC_ZONE) == {to_us(at(0)) // DAY_US: 1}


def test_order_days_once_read_follow_every_later_order_and_refund():
    day = to_us(at(0)) // DAY_US
    state = fold_all(paid("10", order="o1", when=at(0)))
    assert state.order_days(UTC_ZONE) == {day: 1}  # built now, then kept up to date by the fold
    for event in (
        paid("10", order="o2", when=at(0, hours=2)),
        refunded("o3", "5"),  # before its order: nothing counts yet
        paid("10", order="o3", when=at(1)),  # counts, partly refunded
        refunded("o2", "4"),  # partial: still counts
        refunded("o2", "6"),  # now fully refunded
        refunded("o1", "10"),
        paid("10", order="o1", when=at(0)),  # a re-sent payment: a duplicate
    ):
        fold(state, event)
        rebuilt = fold_all(*[])
        rebuilt.orders = state.orders
        assert state.order_days(UTC_ZONE) == rebuilt.order_days(UTC_ZONE)
    assert state.order_days(UTC_ZONE) == {day + 1: 1}
