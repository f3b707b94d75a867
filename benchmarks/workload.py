"""A generated shop for benchmarks: an event history and a 20-group / 100-tag rule set.

Deterministic for a seed, so runs are comparable. Customers' activity is skewed (a few heavy users,
many light ones); about 1% of events arrive out of order and 2% are re-sent duplicates.

`arrivals` stamps each event with the instant it reaches the shop: what a Kafka benchmark puts in the
record timestamp (the tagger's clock), so that windows and time rules see the workload's own time.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import orjson

from services.runtime.definitions import templates

START = datetime(2026, 5, 1, tzinfo=UTC)
PRODUCTS = [f"p{number:04d}" for number in range(2000)]
CATEGORIES = {f"cat{number}": PRODUCTS[number * 100 : number * 100 + 100] for number in range(5)}


def events(count: int, customers: int, *, days: float = 180, seed: int = 7) -> Iterator[dict[str, Any]]:
    """`count` events for about `customers` customers over `days` days.

    Events come in sessions, as clickstreams do: a customer browses and clicks a few pages within
    minutes and sometimes orders at the end; refunds come days later. Sessions start in time order;
    about 1% of events arrive hours late and 2% are re-sent duplicates.
    """
    rng = random.Random(seed)
    population = [f"c{number:07d}" for number in range(customers)]
    weights = [1.0 / (rank + 10) for rank in range(customers)]
    sessions = count // 5
    owners = population + rng.choices(population, weights=weights, k=max(0, sessions - customers))
    rng.shuffle(owners)
    orders: dict[str, list[tuple[str, str]]] = {}
    recent: list[dict[str, Any]] = []
    late: list[tuple[int, dict[str, Any]]] = []
    span = days * 86_400
    produced = 0
    for number, customer in enumerate(owners):
        start = START + timedelta(seconds=span * number // len(owners))
        length = 1 + min(int(rng.expovariate(1 / 5)), 60)
        for step in range(length):
            if produced >= count:
                return
            while late and late[0][0] <= produced:
                yield late.pop(0)[1]
                produced += 1
            at = start + timedelta(seconds=40 * step + rng.randint(0, 30))
            if recent and rng.random() < 0.02:
                event = rng.choice(recent)  # re-sent duplicate
            else:
                roll = rng.random() * 0.82 if step < length - 1 else rng.random()
                event = _event(rng, produced, customer, at, roll, orders)
                recent.append(event)
                if len(recent) > 50:
                    recent.pop(0)
            if rng.random() < 0.01:
                late.append((produced + rng.randint(100, 5000), event))  # arrives later than its time
                continue
            yield event
            produced += 1
    for _, event in late:
        if produced >= count:
            return
        yield event
        produced += 1


def arrivals(stream: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], int]]:
    """Each event with its arrival instant (epoch milliseconds): the latest `occurred_at` so far.

    A shop's clock never runs backwards, so a late event arrives at the time it was sent, not at its
    own date; that is also the clock `tagstream replay` evaluates each line at, which keeps a worker fed
    these timestamps comparable with the replay, change for change."""
    latest = 0
    for event in stream:
        occurred = datetime.fromisoformat(event["occurred_at"])
        latest = max(latest, int(occurred.timestamp() * 1000))
        yield event, latest


def _event(
    rng: random.Random, index: int, customer: str, at: datetime, roll: float, orders: dict[str, list[tuple[str, str]]]
) -> dict[str, Any]:
    base = {"event_id": f"e{index}", "customer_id": customer, "occurred_at": at.isoformat().replace("+00:00", "Z")}
    if roll < 0.60:
        return {"type": "browse", **base, "product_id": rng.choice(PRODUCTS)}
    if roll < 0.82:
        return {"type": "click", **base, "target": rng.choice(("banner", "coupon", "search", "recommendation"))}
    placed = orders.setdefault(customer, [])
    if roll < 0.84 and placed:
        order_id, paid = rng.choice(placed)
        refund = paid if rng.random() < 0.5 else str((Decimal(paid) / 3).quantize(Decimal("0.01")))
        return {"type": "order_refunded", **base, "order_id": order_id, "amount": refund}
    lines = [
        (rng.choice(PRODUCTS), rng.randint(1, 3), Decimal(f"{rng.randint(5, 400)}.{rng.randint(0, 99):02d}"))
        for _ in range(rng.randint(1, 3))
    ]
    items = [{"product_id": product, "quantity": quantity, "price": str(price)} for product, quantity, price in lines]
    amount = sum((price * quantity for _, quantity, price in lines), Decimal(0))
    order_id = f"o{index}"
    total = str(amount)
    placed.append((order_id, total))
    return {
        "type": "order_paid",
        **base,
        "order_id": order_id,
        "amount": total,
        "currency": "CNY",
        "items": items,
        "points_earned": int(amount // 10),
    }


def auto_group(
    group_id: str, mode: str, tags: list[tuple[str, dict[str, Any]]], scores: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A group of automatic, auto-removed tags, each tag's id its name; `scores`: the group's own."""
    found: dict[str, Any] = {
        "id": group_id,
        "name": group_id.replace("_", " "),
        "mode": mode,
        "tagging": "auto",
        "auto_remove": True,
    }
    if scores is not None:
        found["scores"] = scores
    found["tags"] = [{"id": tag_id, "name": tag_id, "rule": rule} for tag_id, rule in tags]
    return found


def score_rules() -> list[dict[str, Any]]:
    """Three groups, ten tags on behaviour scores, as a shop sets them: the intent template (three tiers
    of a decaying score) with tiers a few sessions apart, and windowed scores read over 7 to 90 days,
    one beside an order condition; one score counts only clicks on a tracked link.

    The tiers are set so the score tags change about as often as the workload's other tags (docs/
    performance.md): a workload whose score tiers flip every day for every visitor measures tag changes
    and wake-ups, not what scores cost."""
    groups = [
        group.model_dump(mode="json", exclude_none=True)
        for group in templates()["intent"].render({"low": "5", "medium": "15", "high": "40"})
    ]
    interest = {
        "id": "interest",
        "points": {"click": 1, "browse": 1, "order": 10, "refund": -10},
        "links": {"recommendation": 3},
    }
    radar = {"id": "radar", "links": {"recommendation": 3}}

    def score(name: str, op: str, value: int, last: str) -> dict[str, Any]:
        return {"metric": "score", "name": name, "op": op, "value": value, "window": {"last": last}}

    def group(group_id: str, mode: str, scores: list[dict[str, Any]], tags: list[tuple[str, list[Any]]]) -> None:
        rules = [(tag_id, {"match": "all", "conditions": conditions}) for tag_id, conditions in tags]
        groups.append(auto_group(group_id, mode, rules, scores))

    group(
        "leads",
        "multi",
        [interest, radar],
        [
            (
                "hot_lead",
                [
                    score("interest", "gte", 20, "7d"),
                    {"metric": "order_count", "op": "eq", "value": 0, "window": {"last": "30d"}},
                ],
            ),
            ("engaged_month", [score("interest", "gte", 40, "30d")]),
            ("engaged_quarter", [score("interest", "gte", 100, "90d")]),
            ("radar_fan", [score("radar", "gte", 9, "30d")]),
        ],
    )
    group(
        "interest_tiers",
        "exclusive",
        [interest],
        [
            ("keen", [score("interest", "gte", 60, "30d")]),
            ("warm", [score("interest", "gte", 25, "30d")]),
            ("mild", [score("interest", "gte", 8, "30d")]),
        ],
    )
    return groups


def score_shaped_count_rules(*, keep_scores: bool = False) -> list[dict[str, Any]]:
    """`score_rules`' three groups and ten tags with each condition on a score replaced by one on a
    windowed browse or click count, its level set so the ten tags change as often as the score tags
    (docs/performance.md): what ten more ordinary tags cost. `keep_scores`: the groups still define
    their scores, which no rule reads: what the fold of points costs alone."""

    def count(metric: str, value: int, last: str) -> dict[str, Any]:
        return {"metric": metric, "op": "gte", "value": value, "window": {"last": last}}

    def all_of(*conditions: dict[str, Any]) -> dict[str, Any]:
        return {"match": "all", "conditions": list(conditions)}

    no_order = {"metric": "order_count", "op": "eq", "value": 0, "window": {"last": "30d"}}
    replaced = {
        "intent_tiers": [
            ("high", all_of(count("browse_count", 25, "14d"))),
            ("medium", all_of(count("browse_count", 10, "14d"))),
            ("low", all_of(count("browse_count", 4, "14d"))),
        ],
        "leads": [
            ("hot_lead", all_of(count("browse_count", 6, "7d"), no_order)),
            ("engaged_month", all_of(count("browse_count", 12, "30d"))),
            ("engaged_quarter", all_of(count("browse_count", 30, "90d"))),
            ("radar_fan", all_of(count("click_count", 2, "30d"))),
        ],
        "interest_tiers": [
            ("keen", all_of(count("click_count", 10, "30d"))),
            ("warm", all_of(count("click_count", 6, "30d"))),
            ("mild", all_of(count("click_count", 3, "30d"))),
        ],
    }
    groups = score_rules()
    for group in groups:
        group["tags"] = [{"id": tag_id, "name": tag_id, "rule": rule} for tag_id, rule in replaced[group["id"]]]
        if not keep_scores:
            del group["scores"]
    return groups


def write_events(path: str, count: int, customers: int, seed: int = 7) -> None:
    with open(path, "wb") as out:
        for event in events(count, customers, seed=seed):
            out.write(orjson.dumps(event) + b"\n")


WORKLOAD_TEMPLATES: Final = frozenset({"rfm", "lifecycle", "value_tiers", "churn"})
"""The built-in templates the workload renders: those on orders and activity (the templates on
profiles and sources read events the workload does not have; the score ones are `score_rules`)."""


def rules(*, scores: bool = False, counts_for_scores: bool = False, unread_scores: bool = False) -> dict[str, Any]:
    """20 groups, 100 tags: the four built-in templates on orders and activity plus typical merchant
    groups. `scores`: 23 groups, 110 tags, one rule in eleven on a behaviour score (`score_rules`).
    `counts_for_scores`: the same 110 tags with window counts where those rules read scores, and
    `unread_scores` the scores still defined (`score_shaped_count_rules`)."""
    groups: list[dict[str, Any]] = []
    for template in templates().values():
        if template.id not in WORKLOAD_TEMPLATES:
            continue
        groups.extend(group.model_dump(mode="json", exclude_none=True) for group in template.render())

    def group(group_id: str, mode: str, tags: list[tuple[str, dict[str, Any]]]) -> None:
        groups.append(auto_group(group_id, mode, tags))

    def all_of(*conditions: dict[str, Any]) -> dict[str, Any]:
        return {"match": "all", "conditions": list(conditions)}

    def cond(metric: str, op: str, value: Any, last: str | None = None) -> dict[str, Any]:
        found = {"metric": metric, "op": op, "value": value}
        if last:
            found["window"] = {"last": last}
        return found

    group(
        "frequency",
        "exclusive",
        [
            ("f1_3", all_of(cond("order_count", "between", [1, 3]))),
            ("f4_6", all_of(cond("order_count", "between", [4, 6]))),
            ("f7_10", all_of(cond("order_count", "between", [7, 10]))),
            ("f11_plus", all_of(cond("order_count", "gte", 11))),
        ],
    )
    group(
        "aov",
        "exclusive",
        [
            (f"aov_{low}", all_of(cond("avg_order_value", "between", [low, high])))
            for low, high in ((1, 100), (100, 200), (200, 400), (400, 800), (800, 100000))
        ],
    )
    group(
        "points",
        "exclusive",
        [(f"points_{low}", all_of(cond("points_total", "gte", low))) for low in (1000, 500, 200, 100, 1)],
    )
    for category, products in CATEGORIES.items():
        group(
            f"interest_{category}",
            "multi",
            [
                ("bought", all_of(cond("bought_any", "in", products[:20]))),
                ("browsed_7d", all_of(cond("browse_count", "gte", 3, "7d"))),
                ("browsed_30d", all_of(cond("browse_count", "gte", 10, "30d"))),
                ("clicked_7d", all_of(cond("click_count", "gte", 2, "7d"))),
                ("loyal", all_of(cond("bought_any", "in", products[20:40]), cond("order_count", "gte", 3))),
            ],
        )
    group(
        "activity",
        "multi",
        [
            ("browsed_today", all_of(cond("browse_count", "gte", 1, "1d"))),
            ("browsed_week", all_of(cond("browse_count", "gte", 5, "7d"))),
            ("clicked_week", all_of(cond("click_count", "gte", 3, "7d"))),
            ("ordered_month", all_of(cond("order_count", "gte", 1, "30d"))),
            ("ordered_quarter", all_of(cond("order_count", "gte", 2, "90d"))),
            ("window_shopper", all_of(cond("browse_count", "gte", 10, "30d"), cond("order_count", "eq", 0, "30d"))),
        ],
    )
    group(
        "recency",
        "exclusive",
        [(f"r{high}", all_of(cond("days_since_last_order", "lte", high))) for high in (3, 7, 14, 30, 60, 120, 365)],
    )
    group(
        "tenure",
        "exclusive",
        [(f"t{low}", all_of(cond("days_since_first_order", "gte", low))) for low in (365, 180, 90, 30, 0)],
    )
    group(
        "vip",
        "multi",
        [
            (
                "important",
                all_of(cond("has_tag", "eq", "value/high"), cond("has_tag", "in", ["recency/r7", "recency/r14"])),
            ),
            ("rising", all_of(cond("has_tag", "eq", "lifecycle/repeat_buyer"), cond("has_tag", "eq", "value/mid"))),
            ("at_risk", all_of(cond("has_tag", "eq", "value/high"), cond("has_tag", "eq", "churn/likely_to_churn"))),
        ],
    )
    group(
        "engagement",
        "exclusive",
        [(f"clicks_{low}", all_of(cond("click_count", "gte", low, "30d"))) for low in (20, 10, 5, 2, 1)],
    )
    group(
        "seasonal",
        "multi",
        [
            (
                f"bought_{month}",
                {
                    "match": "all",
                    "conditions": [
                        {
                            "metric": "order_count",
                            "op": "gte",
                            "value": 1,
                            "window": {"from": f"2026-{month:02d}-01", "to": f"2026-{month + 1:02d}-01"},
                        }
                    ],
                },
            )
            for month in (5, 6, 7, 8, 9, 10)
        ],
    )
    group(
        "spend_milestones",
        "multi",
        [
            (f"spent_{low}", all_of(cond("total_spent", "gte", low)))
            for low in (100, 500, 1000, 2000, 5000, 10000, 20000)
        ],
    )
    group(
        "category_mix",
        "multi",
        [
            *(
                (f"any_{category}", all_of(cond("bought_any", "in", products)))
                for category, products in CATEGORIES.items()
            ),
            (
                "explorer",
                {
                    "match": "any",
                    "conditions": [
                        all_of(
                            cond("bought_any", "in", CATEGORIES["cat0"]), cond("bought_any", "in", CATEGORIES["cat1"])
                        ),
                        all_of(
                            cond("bought_any", "in", CATEGORIES["cat2"]), cond("bought_any", "in", CATEGORIES["cat3"])
                        ),
                    ],
                },
            ),
            ("browser_no_buy", all_of(cond("browse_count", "gte", 20, "30d"), cond("order_count", "eq", 0))),
        ],
    )
    total = sum(len(entry["tags"]) for entry in groups)
    assert len(groups) == 20, len(groups)
    assert total == 100, total
    if scores:
        groups.extend(score_rules())
    elif counts_for_scores:
        groups.extend(score_shaped_count_rules(keep_scores=unread_scores))
    # plain data with no object shared between two places: yaml.safe_dump writes a shared object as
    # an anchor and aliases, which a rules file may not contain (services/runtime/user_yaml.py)
    plain: dict[str, Any] = orjson.loads(orjson.dumps({"groups": groups}))
    return plain
