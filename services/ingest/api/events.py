"""POST /v1/events and /v1/events:import: one event or a batch, answered only after Kafka
acknowledged every one. The import route loads history: its events carry `source: import`, so the
tag changes they cause trigger no playbook (docs/ingest.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from schemas.events import EVENT_TYPES, CustomerEvent
from schemas.excerpt import problems
from services.engine.admission import wrong_currency
from services.engine.arrival import Arrival
from services.engine.timeutil import to_us
from services.ingest.auth import Caller
from services.ingest.context import Context, Ctx, require
from services.ingest.ports import Throttled, Unavailable

router = APIRouter(tags=["events"])

_ONE: TypeAdapter[CustomerEvent] = TypeAdapter(CustomerEvent)
_EVENT_TYPE_NAMES = {event_type.model_fields["type"].default for event_type in EVENT_TYPES}


class Accepted(BaseModel):
    accepted: int = Field(description="events acknowledged by Kafka")


class ItemError(BaseModel):
    index: int | None = Field(description="position in the batch; null for a single event or the whole body")
    field: str
    reason: str


class Rejected(BaseModel):
    detail: list[ItemError]


_BODY_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [
                    {"$ref": "#/components/schemas/CustomerEvent"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/CustomerEvent"}, "minItems": 1},
                ]
            }
        }
    },
}


_EVENT_ROUTE: dict[str, Any] = {
    "status_code": 202,
    "response_model": Accepted,
    "openapi_extra": {"requestBody": _BODY_SCHEMA},
    "responses": {
        413: {"description": "body over max_body_bytes or batch over max_batch"},
        422: {
            "model": Rejected,
            "description": "nothing accepted: each bad item's index, field and reason (occurred_at: dated past "
            "shop.max_future_skew)",
        },
        429: {"description": "the producer buffer is full: retry after Retry-After seconds"},
        503: {
            "description": "Kafka unreachable or it did not acknowledge within send_timeout_s: some events of the "
            "batch may have been written. Send the same batch again (after Retry-After): the tagger drops "
            "repeated event_ids, so a retry is safe"
        },
    },
}


@router.post("/v1/events", **_EVENT_ROUTE)
async def post_events(
    request: Request, ctx: Ctx, caller: Annotated[Caller, require("operator")]
) -> Accepted | JSONResponse:
    """Validate every event, then publish all of them keyed by customer_id; all or nothing is accepted."""
    return await _accept(request, ctx, history=False)


@router.post("/v1/events:import", **_EVENT_ROUTE)
async def import_events(
    request: Request, ctx: Ctx, caller: Annotated[Caller, require("operator")]
) -> Accepted | JSONResponse:
    """History: as POST /v1/events, every event published with `source: import`, so the tag changes
    it causes carry source `import` and trigger no playbook unless the playbook opts in."""
    return await _accept(request, ctx, history=True)


async def _accept(request: Request, ctx: Context, *, history: bool) -> Accepted | JSONResponse:
    if ctx.publisher.saturated:  # overloaded: answer before spending time on the body
        return _throttled(ctx, Throttled(retry_after_s=1), 1)
    body = await request.body()  # at most max_body_bytes: services/ingest/limits.py
    events, errors = parse_events(body)
    if not errors:
        batch = body.lstrip().startswith(b"[")
        errors = _ahead_of_clock(events, ctx, batch=batch) + shop_refusals(
            events, ctx.settings.shop.currency, batch=batch
        )
    if errors:
        ctx.metrics.events.labels("rejected").inc(len({error.index for error in errors}))  # the bad items
        return JSONResponse({"detail": [error.model_dump() for error in errors]}, status_code=422)
    limit = ctx.settings.ingest.max_batch
    if len(events) > limit:
        ctx.metrics.events.labels("rejected").inc(len(events))
        raise HTTPException(413, f"a batch of {len(events)} events is over the limit of {limit}")
    if history:
        events = [event.model_copy(update={"source": "import"}) for event in events]
    return await _publish(ctx, events)


def _ahead_of_clock(events: list[CustomerEvent], ctx: Context, *, batch: bool) -> list[ItemError]:
    """Events dated past the allowed skew: folded now, they would count for a day not yet begun."""
    arrival = Arrival.of(ctx.settings.shop.future_skew, ctx.settings.history_age)
    now_us = to_us(ctx.now())
    errors = []
    for index, event in enumerate(events):
        reason = arrival.too_far_ahead(to_us(event.occurred_at), now_us)
        if reason:
            errors.append(ItemError(index=index if batch else None, field="occurred_at", reason=reason))
    return errors


async def _publish(ctx: Context, events: list[CustomerEvent]) -> Accepted | JSONResponse:
    records = [(event.customer_id.encode(), _ONE.dump_json(event)) for event in events]
    try:
        await ctx.publisher.send(ctx.settings.topics.events, records)
    except Throttled as throttled:
        return _throttled(ctx, throttled, len(events))
    except Unavailable as unavailable:
        ctx.metrics.events.labels("unavailable").inc(len(events))
        return JSONResponse({"detail": str(unavailable)}, status_code=503, headers={"Retry-After": "5"})
    ctx.metrics.events.labels("accepted").inc(len(events))
    return Accepted(accepted=len(events))


def _throttled(ctx: Context, throttled: Throttled, events: int) -> JSONResponse:
    ctx.metrics.events.labels("throttled").inc(events)
    return JSONResponse(
        {"detail": str(throttled)}, status_code=429, headers={"Retry-After": str(throttled.retry_after_s)}
    )


def parse_events(body: bytes) -> tuple[list[CustomerEvent], list[ItemError]]:
    """A JSON object (one event) or a JSON array of events; errors name each bad item and field.

    Parsed straight from the JSON text, so amounts become exact decimals (never floats)."""
    stripped = body.lstrip()
    if not stripped:
        return [], [ItemError(index=None, field="body", reason="empty body: send an event or a list of events")]
    batch = stripped.startswith(b"[")
    try:
        if not batch:
            return [_ONE.validate_json(stripped)], []
        events = _MANY.validate_json(stripped)
    except ValidationError as error:
        return [], [_item_error(problem, batch=batch) for problem in problems(error)]
    if not events:
        return [], [ItemError(index=None, field="body", reason="the batch is empty")]
    return events, []


_MANY: TypeAdapter[list[CustomerEvent]] = TypeAdapter(list[CustomerEvent])


def shop_refusals(events: list[CustomerEvent], currency: str, *, batch: bool) -> list[ItemError]:
    """Valid events the shop cannot take: an order in another currency than the shop's."""
    errors = []
    for index, event in enumerate(events):
        reason = wrong_currency(event, currency)
        if reason is not None:
            errors.append(ItemError(index=index if batch else None, field="currency", reason=reason))
    return errors


def _item_error(problem: Any, *, batch: bool) -> ItemError:
    loc = list(problem["loc"])
    index = loc.pop(0) if batch and loc and isinstance(loc[0], int) else None
    if loc and loc[0] in _EVENT_TYPE_NAMES:
        loc = loc[1:]  # the union's tag: the event type is already known from `type`
    field = ".".join(str(part) for part in loc) or ("type" if problem["type"].startswith("union_tag") else "(event)")
    reason = problem["msg"]
    if "input" in problem and not problem["input"].startswith("a dict "):
        reason = f"{reason} (got {problem['input']})"
    return ItemError(index=index, field=field, reason=reason)


def add_event_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """The body of POST /v1/events is read by hand (for exact decimals and per-item errors), so its
    schema, the event contracts, is added to the OpenAPI components here."""
    schema = _ONE.json_schema(ref_template="#/components/schemas/{model}")
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components["CustomerEvent"] = schema
    return openapi
