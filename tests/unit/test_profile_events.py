"""profile_updated and source_attributed as contracts, and the conditions on them: bounds, and
errors that name the field without quoting a personal value."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from schemas.events import STANDARD_ATTRIBUTES, event_adapter
from schemas.excerpt import PERSONAL_FIELDS, WITHHELD, describe_validation_error, problems
from schemas.limits import MAX_ATTRIBUTE_LENGTH, MAX_CUSTOM_ATTRIBUTES
from schemas.tags import Condition
from services.ingest.api.events import parse_events
from services.ingest.app import create_app
from services.runtime.settings import Settings

BASE = {"event_id": "e1", "customer_id": "c1", "occurred_at": "2026-03-01T04:00:00+08:00"}


def profile_event(**fields):
    return {"type": "profile_updated", **BASE, **fields}


def test_every_attribute_is_a_personal_field_whose_value_errors_withhold():
    assert {*STANDARD_ATTRIBUTES, "custom"} == PERSONAL_FIELDS


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"region": "上海" * MAX_ATTRIBUTE_LENGTH}, "region"),
        ({"gender": "secret-value"}, "gender"),
        ({"birth_date": "1990-02-30"}, "birth_date"),
        ({"birth_date": "1899-12-31"}, "birth_date"),
        ({"family": "married\u202ekids"}, "family"),
        ({"custom": {"vip_card": "x" * (MAX_ATTRIBUTE_LENGTH + 1)}}, "custom.vip_card"),
    ],
)
def test_a_bad_attribute_is_refused_naming_the_field_and_withholding_the_value(fields, field):
    events, errors = parse_events(_json(profile_event(**fields)))
    assert events == []
    [error] = errors
    assert error.field == field
    assert WITHHELD in error.reason
    value = str(next(iter(fields.values())))
    assert value[:8] not in error.reason


def test_a_dead_letter_reason_names_the_personal_field_but_not_its_value():
    with pytest.raises(ValidationError) as refused:
        event_adapter().validate_python(profile_event(region="x" * 200))
    reason = describe_validation_error(refused.value)
    assert reason.startswith("profile_updated.region: ")
    assert "xxxx" not in reason
    assert all(problem["input"] == WITHHELD for problem in problems(refused.value))


def test_an_update_that_sets_nothing_is_refused():
    [error] = parse_events(_json(profile_event()))[1]
    assert "sets or clears at least one attribute" in error.reason


def test_a_birth_date_after_the_event_is_refused_without_quoting_it():
    [error] = parse_events(_json(profile_event(birth_date="2026-03-05")))[1]
    assert error.reason.endswith("birth_date: after the day the event occurred")
    assert "2026-03-05" not in error.reason


def test_custom_attributes_are_bounded_in_number_and_may_not_shadow_a_standard_one():
    many = {f"field_{index}": "v" for index in range(MAX_CUSTOM_ATTRIBUTES + 1)}
    [error] = parse_events(_json(profile_event(custom=many)))[1]
    assert error.field == "custom"
    [error] = parse_events(_json(profile_event(custom={"region": "上海"})))[1]
    assert "region is a standard attribute" in error.reason
    [error] = parse_events(_json(profile_event(custom={"Bad-Name": "v"})))[1]
    assert error.field.startswith("custom")


def test_a_source_names_a_known_channel():
    event = {"type": "source_attributed", **BASE, "channel": "tiktok"}
    [error] = parse_events(_json(event))[1]
    assert error.field == "channel"
    assert "douyin" in error.reason  # the channels it could be
    ok = {"type": "source_attributed", **BASE, "channel": "own_store", "sub_channel": "静安店", "code_id": "qr-9"}
    [parsed], errors = parse_events(_json(ok))
    assert errors == []
    assert parsed.sub_channel == "静安店"


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"metric": "attribute", "op": "eq", "value": "上海"}, "needs a name"),
        ({"metric": "order_count", "name": "region", "op": "eq", "value": 1}, "takes no name"),
        ({"metric": "attribute", "name": "region", "op": "gt", "value": "a"}, "supports ops"),
        ({"metric": "attribute", "name": "region", "op": "eq", "value": "x" * 65}, "at most 64 characters"),
        ({"metric": "first_source", "op": "eq", "value": "tiktok"}, "unknown channel"),
        ({"metric": "sources_any", "op": "in", "value": ["douyin/live"]}, "channels, not sub-channels"),
        ({"metric": "age", "op": "gte", "value": 151}, "within ±150"),
        ({"metric": "age", "op": "gte", "value": 18, "window": {"last": "7d"}}, "takes no window"),
    ],
)
def test_a_bad_condition_on_profile_or_source_says_what_would_be_right(condition, message):
    with pytest.raises(ValidationError, match=message):
        Condition.model_validate(condition)


def test_attribute_values_in_rules_are_texts_even_when_written_as_numbers():
    condition = Condition.model_validate({"metric": "attribute", "name": "children", "op": "in", "value": [1, 2]})
    assert condition.value == ["1", "2"]


def _json(document) -> bytes:
    return orjson.dumps(document)


def test_the_openapi_document_describes_profile_and_source_events() -> None:
    schemas = create_app(Settings()).openapi()["components"]["schemas"]
    event_types = {ref["$ref"].rsplit("/", 1)[1] for ref in schemas["CustomerEvent"]["oneOf"]}
    assert {"ProfileUpdated", "SourceAttributed"} <= event_types
    assert schemas["SourceAttributed"]["properties"]["channel"]["enum"][:3] == ["taobao", "tmall", "jd"]
    assert schemas["ProfileUpdated"]["properties"]["custom"]["maxProperties"] == MAX_CUSTOM_ATTRIBUTES
