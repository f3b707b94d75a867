"""Playbooks: loading, validation errors that name the playbook and field, trigger matching, planning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from schemas.durations import parse_duration
from schemas.tags import Reason, TagChanged
from schemas.templates import check_template
from services.notifier.policy import PlaybookError, load_playbooks, plan
from services.notifier.policy.templates import render
from services.runtime.definitions import parse_groups
from tests.support.playbooks import WINBACK_HIGH_VALUE, playbooks_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "playbooks.yaml"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

WINBACK = playbooks_file(WINBACK_HIGH_VALUE + "    holdout: 5%\n")


def change(group: str = "value", tag: str = "high_churned", kind: str = "added", seq: int = 1) -> TagChanged:
    return TagChanged(
        customer_id="c1",
        group_id=group,
        tag_id=tag,
        change=kind,  # type: ignore[arg-type]
        source="rule",
        reason=Reason(summary="test"),
        group_version=1,
        occurred_at=T0,
        seq=seq,
    )


def test_the_issue_s_winback_playbook_loads_with_its_delays_and_holdout() -> None:
    playbooks = load_playbooks(WINBACK)
    [playbook] = playbooks.playbooks
    assert [step.delay for step in playbook.steps] == [timedelta(0), timedelta(0), timedelta(days=3)]
    assert playbook.holdout == Decimal("0.05")
    assert playbook.steps[2].cancel_if == ("tag_removed", "customer_returned")


def test_the_example_playbooks_file_is_valid() -> None:
    playbooks = load_playbooks(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE))
    assert {playbook.id for playbook in playbooks.playbooks} == {"winback-likely-to-churn", "welcome-first-purchase"}


def test_the_example_playbooks_trigger_on_tags_the_example_rules_define() -> None:
    playbooks = load_playbooks(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE))
    rules = EXAMPLE.with_name("rules.yaml")
    defined = {(g.id, t.id) for g in parse_groups(rules.read_text(encoding="utf-8"), str(rules)) for t in g.tags}
    assert {(p.trigger.group, p.trigger.tag) for p in playbooks.playbooks} <= defined


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(0, 0), ("0", 0), ("90", 90), ("45s", 45), ("30m", 1800), ("12h", 43200), ("3d", 259200), ("1w", 604800)],
)
def test_durations_read_as_seconds_or_with_a_unit(text: object, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["3 days", "-1d", "1.5h", "", True, 2.5])
def test_a_malformed_duration_is_refused_with_the_value(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_an_error_names_the_playbook_and_the_step_field() -> None:
    bad = WINBACK.replace("delay: 3d", "delay: 3 days")
    with pytest.raises(PlaybookError, match=r"playbook 'winback-high-value' steps\[2\]\.delay: .*3 days"):
        load_playbooks(bad, "playbooks.yaml")


def test_an_unknown_template_is_refused_naming_the_playbook_and_step() -> None:
    bad = WINBACK.replace("template: miss-you", "template: nope")
    with pytest.raises(PlaybookError, match=r"winback-high-value.*steps\[2\]\.template: no template 'nope'"):
        load_playbooks(bad)


def test_a_template_with_an_unknown_placeholder_is_refused() -> None:
    bad = WINBACK.replace("Hi ${name|there}", "Hi ${phone}")
    with pytest.raises(PlaybookError, match=r"template 'brand-sale': unknown placeholder\(s\) phone"):
        load_playbooks(bad)


def test_a_coupon_step_needs_a_coupon_and_a_push_step_a_template() -> None:
    with pytest.raises(PlaybookError, match=r"steps\[1\].*needs `coupon`"):
        load_playbooks(WINBACK.replace("coupon: HV-50,", ""))
    with pytest.raises(PlaybookError, match=r"steps\[0\].*needs `template`"):
        load_playbooks(WINBACK.replace("template: brand-sale,", ""))


def test_unknown_fields_channels_and_cancel_conditions_are_refused() -> None:
    with pytest.raises(PlaybookError, match=r"steps\[0\]\.colour"):
        load_playbooks(WINBACK.replace("{channel: push,", "{colour: red, channel: push,"))
    with pytest.raises(PlaybookError, match=r"steps\[0\]\.channel"):
        load_playbooks(WINBACK.replace("channel: push", "channel: fax"))
    with pytest.raises(PlaybookError, match="cancel_if"):
        load_playbooks(WINBACK.replace("customer_returned]", "full_moon]"))


def test_tag_removed_as_a_cancel_condition_needs_a_trigger_on_added() -> None:
    with pytest.raises(PlaybookError, match="tag_removed only fits a trigger `on: added`"):
        load_playbooks(WINBACK.replace("on: added", "on: removed"))


@pytest.mark.parametrize("holdout", ["150%", "-1%", "abc"])
def test_a_holdout_outside_zero_to_a_hundred_percent_is_refused(holdout: str) -> None:
    with pytest.raises(PlaybookError, match="holdout"):
        load_playbooks(WINBACK.replace("holdout: 5%", f"holdout: {holdout!r}"))


def test_two_playbooks_with_one_id_are_refused() -> None:
    text = WINBACK + WINBACK.split("playbooks:\n", 1)[1]
    with pytest.raises(PlaybookError, match="defined twice"):
        load_playbooks(text)


def test_a_file_that_is_not_yaml_or_not_a_mapping_is_refused_naming_the_source() -> None:
    with pytest.raises(PlaybookError, match=r"^pb\.yaml: not valid YAML"):
        load_playbooks("playbooks: [", "pb.yaml")
    with pytest.raises(PlaybookError, match=r"^pb\.yaml: expected a mapping"):
        load_playbooks("- 1", "pb.yaml")


def test_an_empty_file_means_no_playbooks() -> None:
    assert load_playbooks("").playbooks == ()


def test_a_playbook_matches_only_its_group_tag_and_direction() -> None:
    playbooks = load_playbooks(WINBACK)
    assert [p.id for p in playbooks.matching(change())] == ["winback-high-value"]
    assert playbooks.matching(change(kind="removed")) == []
    assert playbooks.matching(change(tag="high")) == []
    assert playbooks.matching(change(group="churn")) == []


def test_a_trigger_limited_to_some_sources_ignores_the_others() -> None:
    playbooks = load_playbooks(WINBACK.replace("on: added}", "on: added, sources: [rule, time]}"))
    assert playbooks.matching(change())  # source "rule"
    backfill = change().model_copy(update={"source": "rule_change"})
    assert playbooks.matching(backfill) == []
    with pytest.raises(PlaybookError, match=r"trigger\.sources"):
        load_playbooks(WINBACK.replace("on: added}", "on: added, sources: [magic]}"))


def test_a_disabled_playbook_matches_nothing() -> None:
    playbooks = load_playbooks(WINBACK.replace("holdout: 5%", "holdout: 5%\n    disabled: true"))
    assert playbooks.matching(change()) == []


def test_a_change_plans_every_step_due_at_its_delay_with_a_key_per_step() -> None:
    jobs = plan(load_playbooks(WINBACK), change())
    assert [(job.channel, job.due_at) for job in jobs] == [
        ("push", T0),
        ("coupon", T0),
        ("sms", T0 + timedelta(days=3)),
    ]
    assert len({job.key for job in jobs}) == 3
    assert jobs[1].coupon == "HV-50"


def test_a_redelivered_change_plans_the_same_keys_and_the_next_change_new_ones() -> None:
    playbooks = load_playbooks(WINBACK)
    first = [job.key for job in plan(playbooks, change(seq=7))]
    assert first == [job.key for job in plan(playbooks, change(seq=7))]
    assert set(first).isdisjoint(job.key for job in plan(playbooks, change(seq=8)))


def test_a_missing_value_renders_its_fallback_or_drops_its_line_never_a_blank() -> None:
    assert render("Hi ${name|there}, you are ${tag}", {"name": None, "tag": "金卡"}) == "Hi there, you are 金卡"
    assert render("Hi ${name|there}, you are ${tag}", {"name": "李雷", "tag": "金卡"}) == "Hi 李雷, you are 金卡"
    assert render("Hi ${name},\n$$5 off for you", {"name": ""}) == "$5 off for you"
    assert render("$name: use ${coupon|the app}", {"name": "Mei"}) == "Mei: use the app"


def test_a_template_that_could_lose_every_line_or_names_unknown_data_is_refused() -> None:
    check_template("ok", "Hi ${name},\nthe sale is on")
    with pytest.raises(ValueError, match=r"every line holds \$\{name\}.*e\.g\. \$\{name\|there\}"):
        check_template("hello", "Hi ${name}, the sale is on")
    with pytest.raises(ValueError, match="unknown placeholder"):
        check_template("leak", "${phone|none}")
    with pytest.raises(ValueError, match=r"bad placeholder syntax at '\$ 5 off'"):
        check_template("money", "$ 5 off")


def test_an_imported_change_triggers_only_a_playbook_that_lists_the_import_source() -> None:
    imported = change().model_copy(update={"source": "import"})
    assert plan(load_playbooks(WINBACK), imported) == []
    assert plan(load_playbooks(WINBACK.replace("on: added}", "on: added, sources: [rule, time]}")), imported) == []
    opted_in = load_playbooks(WINBACK.replace("on: added}", "on: added, sources: [import]}"))
    assert [step.channel for step in plan(opted_in, imported)] == ["push", "coupon", "sms"]
    assert plan(opted_in, change()) == []  # only the sources it lists


def test_check_with_a_rules_file_names_every_trigger_tag_it_lacks(tmp_path, capsys):
    from services.cli import main

    rules = Path(__file__).parents[2] / "examples" / "rules.yaml"
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(
        'templates: {t: "hi"}\nplaybooks:\n'
        " - {id: a, trigger: {group: churn, tag: nope}, steps: [{channel: push, template: t}]}\n"
        " - {id: b, trigger: {group: ghost, tag: x}, steps: [{channel: push, template: t}]}\n"
    )
    assert main(["notifier", "--check", str(playbooks), "--rules", str(rules)]) == 2
    error = capsys.readouterr().err
    assert "playbook 'a' trigger.tag: group 'churn' has no tag 'nope'" in error
    assert "playbook 'b' trigger.group: no tag group 'ghost'" in error
    assert main(["notifier", "--check", str(playbooks)]) == 0  # without rules, only the file itself
