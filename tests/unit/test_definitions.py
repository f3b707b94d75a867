from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from schemas.tags import Condition, TagGroup
from services.engine import DefinitionError, Engine, RuleBook
from services.runtime.definitions import RulesFileError, parse_groups, templates
from services.runtime.zone import day_zone
from tests.support.builders import at, browse, cond, group, paid, profile, sourced

ISSUE_EXAMPLE = """
groups:
  - id: value                 # stable id; name is for people (any language)
    name: 会员贡献价值
    mode: exclusive           # exclusive | multi
    tagging: auto             # auto | manual | both
    auto_remove: true
    tags:
      - id: high
        name: 高价值
        rule: {match: all, conditions: [{metric: total_spent, op: gte, value: 2000}]}
      - id: mid
        name: 中价值
        rule: {match: all, conditions: [{metric: total_spent, op: gte, value: 300}]}
  - id: vip
    name: 重要价值客户
    mode: multi
    tagging: auto
    auto_remove: true
    tags:
      - id: important
        name: 重要价值
        rule:
          match: all
          conditions:
            - {metric: has_tag, op: eq, value: value/high}
            - {metric: order_count, op: gt, value: 10, window: {last: 365d}}
            - {metric: days_since_last_order, op: lte, value: 7}
"""


def test_the_documented_rules_file_format_compiles():
    groups = parse_groups(ISSUE_EXAMPLE, "rules.yaml")
    assert [g.id for g in groups] == ["value", "vip"]
    rulebook = RuleBook.compile(groups)
    assert [g.id for g in rulebook.evaluation_order] == ["value", "vip"]  # dependencies first
    assert rulebook.dependants["value"] == {"vip"}


def test_money_thresholds_are_exact_decimals_and_counts_whole_numbers():
    spend = Condition.model_validate({"metric": "total_spent", "op": "gte", "value": 0.1})
    assert str(spend.value) == "0.1"
    with pytest.raises(ValidationError, match="counts whole units"):
        Condition.model_validate({"metric": "order_count", "op": "gte", "value": 2.5})


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"metric": "lifetime_value", "op": "gte", "value": 1}, "metric"),
        ({"metric": "order_count", "op": "approx", "value": 1}, "op"),
        ({"metric": "browse_count", "op": "gte", "value": 1}, "needs a window"),
        ({"metric": "total_spent", "op": "gte", "value": 1, "window": {"last": "7d"}}, "takes no window"),
        ({"metric": "order_count", "op": "gte", "value": 1, "window": {"last": "7 days"}}, "last"),
        (
            {"metric": "order_count", "op": "gte", "value": 1, "window": {"from": "2026-02-01", "to": "2026-01-01"}},
            "must be before",
        ),
        ({"metric": "order_count", "op": "between", "value": [5, 1]}, "reversed"),
        ({"metric": "order_count", "op": "in", "value": 3}, "non-empty list"),
        ({"metric": "has_tag", "op": "eq", "value": "no-slash"}, "group/tag"),
        ({"metric": "bought_any", "op": "gt", "value": "sku"}, "supports ops"),
    ],
)
def test_invalid_conditions_are_rejected_with_a_clear_message(condition, message):
    with pytest.raises(ValidationError, match=message):
        Condition.model_validate(condition)


def test_a_rules_file_error_names_the_file_and_the_path_to_the_field():
    broken = ISSUE_EXAMPLE.replace("metric: total_spent, op: gte, value: 2000", "metric: total_spent, op: gte")
    with pytest.raises(RulesFileError) as caught:
        parse_groups(broken, "rules.yaml")
    assert "rules.yaml" in str(caught.value)
    assert "groups.0.tags.0.rule.conditions.0.condition.value: Field required" in str(caught.value)


def test_duplicate_tag_ids_and_duplicate_group_ids_are_rejected():
    with pytest.raises(ValidationError, match="appears twice"):
        group("g", [("t", [cond("order_count", "gte", 1)]), ("t", [cond("order_count", "gte", 2)])])
    with pytest.raises(DefinitionError, match="defined twice"):
        RuleBook.compile([group("g", [("t", [cond("order_count", "gte", 1)])])] * 2)


def test_an_auto_group_needs_rules_and_a_manual_group_has_none():
    with pytest.raises(ValidationError, match="needs a rule"):
        group("g", [("t", None)])
    with pytest.raises(ValidationError, match="manual-only"):
        group("g", [("t", [cond("order_count", "gte", 1)])], tagging="manual")


def test_dependency_cycles_between_tags_are_rejected():
    a = group("a", [("x", [cond("has_tag", "eq", "b/y")])], mode="multi")
    b = group("b", [("y", [cond("has_tag", "eq", "a/x")])], mode="multi")
    with pytest.raises(DefinitionError, match="cycle: a -> b -> a"):
        RuleBook.compile([a, b])


def test_references_to_unknown_or_own_tags_are_rejected():
    unknown_group = group("a", [("x", [cond("has_tag", "eq", "nope/y")])], mode="multi")
    unknown_tag = group("a", [("x", [cond("has_tag", "eq", "b/zzz")])], mode="multi")
    own = group("b", [("y", [cond("has_tag", "eq", "b/y")])], mode="multi")
    other = group("b", [("y", [cond("order_count", "gte", 1)])], mode="multi")
    for groups, message in (
        ([unknown_group], "unknown group 'nope'"),
        ([unknown_tag, other], "unknown tag 'zzz'"),
        ([own], "its own group"),
    ):
        with pytest.raises(DefinitionError, match=message):
            RuleBook.compile(groups)


def test_windows_beyond_the_retained_horizon_are_rejected():
    too_long = group("g", [("t", [cond("browse_count", "gte", 1, "500d")])], mode="multi")
    with pytest.raises(DefinitionError, match="beyond the 400-day horizon"):
        RuleBook.compile([too_long])
    old = group(
        "g",
        [
            (
                "t",
                {
                    "match": "all",
                    "conditions": [
                        {
                            "metric": "order_count",
                            "op": "gte",
                            "value": 1,
                            "window": {"from": "2024-01-01", "to": "2024-02-01"},
                        }
                    ],
                },
            )
        ],
        mode="multi",
    )
    with pytest.raises(DefinitionError, match="before the 400-day horizon"):
        RuleBook.compile([old], today=date(2026, 11, 23))
    RuleBook.compile([old], today=date(2024, 6, 1))


def test_every_problem_is_reported_at_once():
    a = group(
        "a", [("x", [cond("has_tag", "eq", "nope/y")]), ("z", [cond("click_count", "gte", 1, "999d")])], mode="multi"
    )
    with pytest.raises(DefinitionError) as caught:
        RuleBook.compile([a])
    assert len(caught.value.problems) == 2


# -- templates --------------------------------------------------------------------------------------


def test_every_built_in_template_compiles():
    found = templates()
    assert set(found) == {
        "rfm",
        "lifecycle",
        "value_tiers",
        "churn",
        "source_channels",
        "age_bands",
        "loyalty",
        "customer_status",
        "intent",
    }
    for template in found.values():
        RuleBook.compile(template.render())


def test_rfm_has_the_eight_segments_and_configurable_thresholds():
    rfm = templates()["rfm"]
    [segments] = rfm.render({"recent_days": "14", "frequent_orders": "5", "big_spend": "888.8"})
    assert len(segments.tags) == 8
    first = segments.tags[0].rule
    assert first is not None
    assert [c.value for c in first.conditions] == [14, 5, Decimal("888.8")]  # type: ignore[union-attr]
    with pytest.raises(RulesFileError, match="no parameter 'recency'"):
        rfm.render({"recency": "3"})
    with pytest.raises(RulesFileError, match="must be a number"):
        rfm.render({"recent_days": "soon"})


def test_rfm_segments_a_customer_by_recency_frequency_and_money():
    engine = Engine(RuleBook.compile(templates()["rfm"].render()))
    state = engine.new_state("c1")
    for day in range(3):
        engine.on_event(state, paid("400", when=at(day)), at(day))
    assert state.tag_ids() == {"rfm": ["important_value"]}
    engine.advance(state, at(40))
    assert state.tag_ids() == {"rfm": ["important_retention"]}


def test_lifecycle_moves_from_never_bought_to_repeat_buyer():
    engine = Engine(RuleBook.compile(templates()["lifecycle"].render()))
    state = engine.new_state("c1")
    seen = []
    for event in (browse(), paid("10"), paid("10", when=at(1))):
        engine.on_event(state, event, event.occurred_at)
        seen.append(state.tag_ids()["lifecycle"])
    assert seen == [["never_bought"], ["first_purchase"], ["repeat_buyer"]]


def test_churn_prediction_flags_an_active_customer_who_went_silent():
    engine = Engine(RuleBook.compile(templates()["churn"].render()))
    state = engine.new_state("c1")
    engine.on_event(state, paid("10", when=at(0)), at(0))
    assert state.tag_ids() == {}
    assert engine.next_check_at(state) is not None
    engine.advance(state, at(31))
    assert state.tag_ids() == {"churn": ["likely_to_churn"]}
    engine.on_event(state, browse(when=at(32)), at(32))
    assert state.tag_ids() == {}


def test_source_channels_tag_the_channel_of_the_first_touch_even_when_it_arrives_late():
    engine = Engine(RuleBook.compile(templates()["source_channels"].render(), zone=day_zone("Asia/Shanghai")))
    state = engine.new_state("c1")
    engine.on_event(state, sourced("douyin", "live-3", when=at(5)), at(5))
    assert state.tag_ids() == {"source_channel": ["short_video"]}
    engine.on_event(state, sourced("own_store", "静安店", code_id="qr-7", when=at(1)), at(6))
    assert state.tag_ids() == {"source_channel": ["own_store"]}


def test_age_bands_move_a_customer_up_on_the_birthday_at_the_shops_midnight():
    engine = Engine(RuleBook.compile(templates()["age_bands"].render(), zone=day_zone("Asia/Shanghai")))
    state = engine.new_state("c1")
    engine.on_event(state, profile(birth_date="2001-03-10", when=at(0)), at(0))  # 2026-03-02: 24
    assert state.tag_ids() == {"age_band": ["young"]}
    birthday = datetime(2026, 3, 9, 16, tzinfo=UTC)  # 2026-03-10 00:00 in Shanghai
    assert engine.next_check_at(state) == birthday
    engine.advance(state, birthday)
    assert state.tag_ids() == {"age_band": ["prime"]}


def test_templates_round_trip_through_the_group_model():
    for template in templates().values():
        for spec in template.render():
            assert TagGroup.model_validate_json(spec.model_dump_json()) == spec
