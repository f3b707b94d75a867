"""The shop's days: the offset table built from the zone database, and the engine counting in it."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.engine import DefinitionError, RuleBook
from services.engine.timeutil import DAY_US, SECOND_US, date_to_day, day_to_date, from_us, to_us
from services.engine.zone import DayZone
from services.runtime.zone import day_zone
from tests.support.builders import browse, cond, engine, group, paid

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
HOUR_US = 3600 * SECOND_US
BERLIN = ZoneInfo("Europe/Berlin")


def local(zone: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=zone)  # type: ignore[misc]


def day_length_hours(zone: DayZone, value: date) -> float:
    day = date_to_day(value)
    return (zone.start(day + 1) - zone.start(day)) / HOUR_US


# -- the offset table -------------------------------------------------------------------------------


def test_a_zone_without_changes_since_1991_is_a_constant_offset_after_them():
    shanghai = day_zone("Asia/Shanghai")
    assert shanghai.offset(to_us(local(SHANGHAI, 2026, 1, 2, 7, 30))) == 8 * HOUR_US
    assert shanghai.changes[-1] < to_us(datetime(1992, 1, 1, tzinfo=UTC))
    assert day_zone("UTC").constant


def test_a_purchase_at_0730_in_shanghai_is_on_the_local_day_not_the_utc_day_before():
    shanghai = day_zone("Asia/Shanghai")
    morning = to_us(local(SHANGHAI, 2026, 1, 2, 7, 30))  # 2026-01-01T23:30Z
    assert shanghai.day(morning) == date_to_day(date(2026, 1, 2))
    assert day_zone("UTC").day(morning) == date_to_day(date(2026, 1, 1))


def test_days_across_a_dst_change_last_23_and_25_hours():
    new_york, berlin = day_zone("America/New_York"), day_zone("Europe/Berlin")
    assert day_length_hours(new_york, date(2026, 3, 8)) == 23
    assert day_length_hours(new_york, date(2026, 11, 1)) == 25
    assert day_length_hours(new_york, date(2026, 6, 1)) == 24
    assert day_length_hours(berlin, date(2026, 3, 29)) == 23
    assert day_length_hours(berlin, date(2026, 10, 25)) == 25


@pytest.mark.parametrize("name", ["America/New_York", "Europe/Berlin", "Asia/Shanghai", "Australia/Lord_Howe"])
def test_every_local_midnight_of_two_years_is_where_the_zone_database_puts_it(name):
    zone, database = day_zone(name), ZoneInfo(name)
    for offset in range(0, 730):
        value = date(2025, 1, 1) + timedelta(days=offset)
        midnight = datetime(value.year, value.month, value.day, tzinfo=database).astimezone(UTC)
        assert from_us(zone.start(date_to_day(value))) == midnight, value
        assert zone.day(to_us(midnight)) == date_to_day(value)
        assert zone.day(to_us(midnight) - 1) == date_to_day(value) - 1


@pytest.mark.parametrize(
    "name", ["America/New_York", "America/Sao_Paulo", "America/Santiago", "Asia/Tehran", "Pacific/Apia"]
)
def test_every_day_from_1970_to_2040_starts_at_its_first_instant_by_the_zone_database(name):
    zone, database = day_zone(name), ZoneInfo(name)

    def local_day(us: int) -> int:
        return date_to_day(from_us(us).astimezone(database).date())

    for day in range(date_to_day(date(1970, 1, 2)), date_to_day(date(2040, 1, 1))):
        start = zone.start(day)  # Apia skipped 2011-12-30 whole: that day "starts" where 12-31 does
        assert local_day(start - 1) < day <= local_day(start), day_to_date(day)


def test_a_day_whose_midnight_is_skipped_starts_when_its_clock_starts():
    # Sao Paulo sprang forward at 00:00 on 2018-11-04: that day began at 01:00 local (03:00Z).
    sao_paulo = day_zone("America/Sao_Paulo")
    start = sao_paulo.start(date_to_day(date(2018, 11, 4)))
    assert from_us(start) == datetime(2018, 11, 4, 3, tzinfo=UTC)
    assert sao_paulo.day(start - 1) == date_to_day(date(2018, 11, 3))


def test_days_since_counts_local_calendar_days():
    shanghai = day_zone("Asia/Shanghai")
    late = to_us(local(SHANGHAI, 2026, 1, 1, 23, 0))
    assert shanghai.days_between(late, to_us(local(SHANGHAI, 2026, 1, 1, 23, 59))) == 0
    assert shanghai.days_between(late, to_us(local(SHANGHAI, 2026, 1, 2, 0, 0))) == 1
    assert shanghai.days_between(late, late - DAY_US) == 0  # never negative


def test_a_table_with_its_changes_out_of_order_is_refused():
    with pytest.raises(ValueError, match="increasing order"):
        DayZone("bad", [2, 1], [0, 1, 2])


# -- the engine in the shop's days -----------------------------------------------------------------


def test_a_shanghai_days_since_flips_at_local_midnight():
    eng = engine(group("recency", [("today", [cond("days_since_last_order", "eq", 0)])]), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    changes = eng.on_event(state, paid("10", when=local(SHANGHAI, 2026, 1, 2, 7, 30)), local(SHANGHAI, 2026, 1, 2, 8))
    assert [change.change for change in changes] == ["added"]
    midnight = local(SHANGHAI, 2026, 1, 3)
    assert eng.next_check_at(state) == midnight  # 16:00Z, not 07:30 local the next day
    [dropped] = eng.advance(state, midnight)
    assert (dropped.change, from_us(dropped.occurred_us)) == ("removed", midnight)


def test_a_shanghai_window_counts_a_0730_browse_on_its_local_day_and_drops_it_at_local_midnight():
    eng = engine(
        group("activity", [("today", [cond("browse_count", "gte", 1, "1d")])], mode="multi"), zone="Asia/Shanghai"
    )
    state = eng.new_state("c1")
    eng.on_event(state, browse(when=local(SHANGHAI, 2026, 1, 2, 7, 30)), local(SHANGHAI, 2026, 1, 2, 7, 31))
    assert state.tag_ids() == {"activity": ["today"]}
    assert eng.next_check_at(state) == local(SHANGHAI, 2026, 1, 3)


@pytest.mark.parametrize("span", [1, 2])  # the day leaves the night of the change, or the night after it
@pytest.mark.parametrize(
    ("zone", "day_before"),
    [
        (NEW_YORK, date(2026, 3, 7)),  # spring forward on 03-08 at 02:00: a 23-hour day
        (NEW_YORK, date(2026, 10, 31)),  # fall back on 11-01 at 02:00: a 25-hour day
        (BERLIN, date(2026, 3, 28)),
        (BERLIN, date(2026, 10, 24)),
    ],
)
def test_a_window_lets_a_day_go_at_local_midnight_across_a_clock_change(zone, day_before, span):
    eng = engine(group("activity", [("recent", [cond("browse_count", "gte", 1, f"{span}d")])]), zone=zone.key)
    state = eng.new_state("c1")
    seen = datetime.combine(day_before, datetime.min.time(), tzinfo=zone) + timedelta(hours=23, minutes=30)
    eng.on_event(state, browse(when=seen), seen)
    leaves = datetime.combine(day_before + timedelta(days=span), datetime.min.time(), tzinfo=zone)
    assert eng.next_check_at(state) == leaves.astimezone(UTC)
    assert eng.advance(state, leaves - timedelta(microseconds=1)) == []
    [dropped] = eng.advance(state, leaves)
    assert from_us(dropped.occurred_us) == leaves


def test_a_window_given_as_local_dates_starts_at_local_midnight():
    spring = {"from": "2026-03-08", "to": "2026-03-09"}
    on_the_day = group("spring", [("browsed", [cond("browse_count", "gte", 1) | {"window": spring}])])
    eng = engine(on_the_day, zone="America/New_York")
    state = eng.new_state("c1")
    eng.on_event(state, browse(when=local(NEW_YORK, 2026, 3, 8, 0, 10)), local(NEW_YORK, 2026, 3, 8, 0, 10))
    assert state.tag_ids() == {"spring": ["browsed"]}
    other = eng.new_state("c2")
    eng.on_event(other, browse(when=local(NEW_YORK, 2026, 3, 7, 23, 50), customer="c2"), local(NEW_YORK, 2026, 3, 8))
    assert other.tag_ids() == {}


def test_a_window_bound_with_an_offset_must_be_a_local_midnight_of_the_shop():
    bounds = {"from": "2026-03-01T00:00:00+08:00", "to": "2026-03-09T00:00:00+08:00"}
    spec = group("g", [("t", [cond("order_count", "gte", 1) | {"window": bounds}])])
    assert RuleBook.compile([spec], zone=day_zone("Asia/Shanghai")).groups["g"]
    with pytest.raises(DefinitionError, match=r"window 'from' .* not the start of a day .* Europe/Berlin"):
        RuleBook.compile([spec], zone=day_zone("Europe/Berlin"))
