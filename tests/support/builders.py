"""Small builders for unit tests: events, commands and rule sets with sensible defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any

from schemas.events import Browse, Click, OrderItem, OrderPaid, OrderRefunded, ProfileUpdated, SourceAttributed
from schemas.tags import TagCommand, TagGroup
from services.engine import Engine, RuleBook
from services.runtime.zone import day_zone

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
_ids = count(1)


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def paid(
    amount: str | int,
    *,
    when: datetime = T0,
    order: str | None = None,
    customer: str = "c1",
    products: tuple[str, ...] = (),
    points: int = 0,
    event_id: str | None = None,
) -> OrderPaid:
    return OrderPaid(
        event_id=event_id or f"e{next(_ids)}",
        customer_id=customer,
        occurred_at=when,
        order_id=order or f"o{next(_ids)}",
        amount=Decimal(str(amount)),
        currency="CNY",
        items=[OrderItem(product_id=product, quantity=1, price=Decimal(1)) for product in products],
        points_earned=points,
    )


def refunded(order: str, amount: str | int, *, when: datetime = T0, customer: str = "c1") -> OrderRefunded:
    return OrderRefunded(
        event_id=f"e{next(_ids)}", customer_id=customer, occurred_at=when, order_id=order, amount=Decimal(str(amount))
    )


def browse(*, when: datetime = T0, customer: str = "c1", product: str = "p1", event_id: str | None = None) -> Browse:
    return Browse(event_id=event_id or f"e{next(_ids)}", customer_id=customer, occurred_at=when, product_id=product)


def click(*, when: datetime = T0, customer: str = "c1", target: str = "banner", event_id: str | None = None) -> Click:
    return Click(event_id=event_id or f"e{next(_ids)}", customer_id=customer, occurred_at=when, target=target)


def profile(
    *, when: datetime = T0, customer: str = "c1", event_id: str | None = None, **attributes: Any
) -> ProfileUpdated:
    """A profile update setting `attributes` (gender, birth_date, region, family, custom, clear)."""
    return ProfileUpdated.model_validate(
        {"event_id": event_id or f"e{next(_ids)}", "customer_id": customer, "occurred_at": when} | attributes
    )


def sourced(
    channel: str,
    sub_channel: str | None = None,
    *,
    when: datetime = T0,
    customer: str = "c1",
    code_id: str | None = None,
    event_id: str | None = None,
) -> SourceAttributed:
    return SourceAttributed.model_validate(
        {
            "event_id": event_id or f"e{next(_ids)}",
            "customer_id": customer,
            "occurred_at": when,
            "channel": channel,
            "sub_channel": sub_channel,
            "code_id": code_id,
        }
    )


def command(
    group: str,
    tag: str,
    action: str = "add",
    *,
    when: datetime = T0,
    customer: str = "c1",
    expires_at: datetime | None = None,
) -> TagCommand:
    return TagCommand(
        command_id=f"cmd{next(_ids)}",
        customer_id=customer,
        group_id=group,
        tag_id=tag,
        action=action,
        actor="operator@shop",
        expires_at=expires_at,
        occurred_at=when,
    )


def cond(metric: str, op: str, value: Any, last: str | None = None, *, name: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"metric": metric, "op": op, "value": value}
    if name is not None:
        found["name"] = name
    if last is not None:
        found["window"] = {"last": last}
    return found


def group(
    group_id: str,
    tags: list[tuple[str, list[dict[str, Any]]]] | list[tuple[str, dict[str, Any] | None]],
    *,
    mode: str = "exclusive",
    tagging: str = "auto",
    auto_remove: bool = True,
    match: str = "all",
    **extra: Any,
) -> TagGroup:
    """Tags as (id, [conditions]) for `match` over them, or (id, rule-dict-or-None)."""
    built = []
    for tag_id, spec in tags:
        if spec is None:
            rule = None
        elif isinstance(spec, list):
            rule = {"match": match, "conditions": spec}
        else:
            rule = spec
        built.append({"id": tag_id, "name": tag_id, "rule": rule})
    return TagGroup.model_validate(
        {"id": group_id, "name": group_id, "mode": mode, "tagging": tagging, "auto_remove": auto_remove, "tags": built}
        | extra
    )


def engine(*groups: TagGroup, incremental: bool = True, horizon_days: int = 400, zone: str = "UTC") -> Engine:
    """An engine for a shop in `zone` (an IANA name)."""
    book = RuleBook.compile(list(groups), horizon_days=horizon_days, zone=day_zone(zone))
    return Engine(book, incremental=incremental)


def value_tiers() -> TagGroup:
    return group(
        "value",
        [
            ("high", [cond("total_spent", "gte", 2000)]),
            ("mid", [cond("total_spent", "gte", 300)]),
            ("low", [cond("total_spent", "lt", 300)]),
        ],
    )


def order_bands() -> TagGroup:
    return group(
        "orders",
        [
            ("o1_3", [cond("order_count", "between", [1, 3])]),
            ("o4_6", [cond("order_count", "between", [4, 6])]),
        ],
    )


def summary(changes: list[Any]) -> list[tuple[str, str, str, str]]:
    return [(change.group_id, change.tag_id, change.change, change.source) for change in changes]
