"""The campaign model, keys, pacing and report figures: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from schemas.campaigns import Audience
from schemas.tags import TagGroup
from services.notifier.policy import Campaign, Facts, Pacer, PlaybookError, Policy, campaign_jobs, decide, load_campaign
from services.runtime.reports import step_reports
from tests.support.campaign_data import CAMPAIGN

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def _campaign(**changes: Any) -> Campaign:
    return Campaign.model_validate(CAMPAIGN | changes)


def test_a_customer_in_several_selected_audiences_gets_one_key_per_step() -> None:
    campaign = _campaign()
    jobs = campaign_jobs(campaign, 0, ["沪-1", "沪-2"], T0, T0)
    again = campaign_jobs(campaign, 0, ["沪-1"], T0, T0 + timedelta(hours=1))
    assert jobs[0].key == again[0].key
    assert len({job.key for job in jobs}) == 2
    assert {job.key for job in campaign_jobs(campaign, 1, ["沪-1"], T0, T0)}.isdisjoint({jobs[0].key})
    assert (jobs[0].campaign, jobs[0].playbook_id, jobs[0].coupon) == (True, CAMPAIGN["id"], "WB-30")


def test_a_delayed_step_fanned_out_late_is_due_when_fanned_out_not_in_the_past() -> None:
    [job] = campaign_jobs(_campaign(), 2, ["沪-1"], T0, T0 + timedelta(days=5))
    assert job.due_at == T0 + timedelta(days=5)
    [early] = campaign_jobs(_campaign(), 2, ["沪-1"], T0, T0)
    assert early.due_at == T0 + timedelta(days=3)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"audience": {"none_of": ["segment/staff"]}}, "select at least one tag"),
        ({"audience": {"any_of": ["no-slash"]}}, "audience.any_of.0"),
        (
            {"steps": [{"channel": "sms", "template": "miss-you", "cancel_if": ["tag_removed"]}]},
            "only customer_returned",
        ),
        ({"steps": [{"channel": "push", "template": "nope"}]}, "no template 'nope'"),
        ({"templates": {"miss-you": "Hi ${group_id}", "last-call": "x"}}, "no ${group_id}"),
        ({"holdout": "150%"}, "between 0% and 100%"),
        ({"conversion_window": "0"}, "conversion_window must be positive"),
        ({"steps": [{"channel": "push", "template": "miss-you", "delay": "400d"}]}, "at most 366d"),
        ({"audience": {"any_of": [f"g/t{n}" for n in range(51)]}}, "at most 50 items"),
    ],
)
def test_a_bad_campaign_file_is_refused_naming_the_field(changes: dict[str, Any], problem: str) -> None:
    import json

    with pytest.raises(PlaybookError) as refused:
        load_campaign(json.dumps(CAMPAIGN | changes), "campaign.yaml")
    assert problem in str(refused.value)
    assert str(refused.value).startswith("campaign.yaml: ")


def test_a_campaign_reads_back_from_its_own_json() -> None:
    campaign = _campaign(start_at=T0.isoformat())
    assert Campaign.model_validate_json(campaign.model_dump_json()) == campaign
    assert campaign.holdout == Decimal("0.1")


def test_a_disabled_groups_tags_select_nobody_and_an_unknown_group_still_counts() -> None:
    groups = {
        "segment": TagGroup.model_validate(
            {
                "id": "segment",
                "name": "s",
                "mode": "multi",
                "tagging": "manual",
                "disabled": True,
                "tags": [{"id": "lapsed", "name": "l"}],
            }
        )
    }
    assert Audience(any_of=("segment/lapsed",)).effective(groups) is None
    assert Audience(any_of=("segment/lapsed", "other/x")).effective(groups) == Audience(any_of=("other/x",))
    assert Audience(all_of=("other/x",), none_of=("segment/lapsed",)).effective(groups) == Audience(all_of=("other/x",))
    assert Audience(any_of=("segment/lapsed",)).unknown(groups) == []
    assert Audience(any_of=("segment/nope", "ghost/x")).unknown(groups) == ["segment/nope", "ghost/x"]


def test_the_pacer_allows_one_second_of_sends_at_most_however_long_it_waited() -> None:
    pacer = Pacer({"sms": 50, "push": 200})
    pacer.refill(T0)
    assert (pacer.allowance("sms"), pacer.allowance("push")) == (50, 200)
    pacer.spend("sms", 50)
    pacer.refill(T0 + timedelta(milliseconds=100))
    assert pacer.allowance("sms") == 5
    pacer.refill(T0 + timedelta(hours=1))
    assert pacer.allowance("sms") == 50
    assert pacer.allowance("coupon") == 0  # a channel without a rate is not fanned out


def test_a_cancelled_campaigns_step_is_cancelled_and_its_holdout_suppressed() -> None:
    campaign = _campaign(holdout="100%")
    [job] = campaign_jobs(campaign, 1, ["沪-1"], T0, T0)
    assert decide(job, None, Facts(now=T0), Policy()).detail == f"campaign {CAMPAIGN['id']!r} was cancelled"
    assert decide(job, campaign, Facts(now=T0), Policy()).reason == "holdout"


def test_the_report_splits_the_tallies_by_step_outcome_and_reason() -> None:
    counts = {
        "0|sent|": 90,
        "0|suppressed|holdout": 10,
        "0|suppressed|consent": 3,
        "1|deferred|quiet_hours": 4,
        "1|sent|": 80,
        "1|cancelled|cancelled": 2,
        "1|failed|provider_error": 1,
    }
    coupon, push = step_reports(counts, ["coupon", "push"], [103, 103])
    assert (coupon.sent, coupon.held_out, coupon.suppressed, coupon.targeted) == (90, 10, {"consent": 3}, 103)
    assert (push.deferred, push.cancelled, push.failed) == ({"quiet_hours": 4}, 2, 1)


def test_the_openapi_document_has_every_campaign_and_playbook_route_with_its_errors() -> None:
    from services.ingest.app import create_app
    from services.runtime.settings import Settings

    paths = create_app(Settings()).openapi()["paths"]
    routes = {
        ("/v1/campaigns", "post"),
        ("/v1/campaigns", "get"),
        ("/v1/campaigns:preview", "post"),
        ("/v1/campaigns/{campaign_id}", "get"),
        ("/v1/campaigns/{campaign_id}", "delete"),
        ("/v1/campaigns/{campaign_id}/{action}", "post"),
        ("/v1/campaigns/{campaign_id}/report", "get"),
        ("/v1/playbooks/{playbook_id}/report", "get"),
        ("/v1/playbooks", "get"),
        ("/v1/playbooks", "put"),
        ("/v1/playbooks/{playbook_id}", "get"),
        ("/v1/playbooks:validate", "post"),
    }
    assert {(path, method) for path, operations in paths.items() for method in operations} >= routes
    for path, method in routes:
        answers = paths[path][method]["responses"]
        assert {"401", "403", "422", "503"} <= set(answers), (path, method)
    assert {"Campaign-Input", "CampaignRecord"} <= set(create_app(Settings()).openapi()["components"]["schemas"])
