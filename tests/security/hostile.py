"""Hypothesis strategies for hostile input: valid shapes of every write, with parts swapped for the
values that broke nodes before (huge numbers and exponents, calendar edges, control characters,
deep nesting, long text, alias bombs)."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import strategies as st

UNSAFE_TEXT = st.text(
    alphabet=st.sampled_from("c1李\n\r\x00\x1b\x7f\x85\u2028\u202e\u2066\ufeff,;；\"'-/\\"), min_size=1, max_size=12
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, 2**64, 10**40, 10**4000, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e999999999", "1e5000", "-1e-999999", "NaN", "Infinity", "0.00001", "1e12", "١٢٣"]),
)
INSTANTS = st.sampled_from(
    [
        "9999-12-31T23:59:59-12:00",
        "0001-01-01T00:00:00+14:00",
        "2099-12-31T23:59:59-12:00",
        "1969-12-31T23:59:59Z",
        "2026-11-23T08:30:00",
        "2026-02-30T00:00:00Z",
    ]
)
DURATIONS = st.sampled_from(["999999999d", "99999999999999999999d", "367d", "-1d", "1e9s", "366d"])


def _deep(depth: int) -> Any:
    value: Any = "x"
    for level in range(depth):
        value = [value] if level % 2 else {"match": "all", "conditions": [value]}
    return value


HOSTILE = st.one_of(
    NUMBERS,
    INSTANTS,
    DURATIONS,
    UNSAFE_TEXT,
    st.text(max_size=30),
    st.sampled_from(["x" * 100_000, "名" * 20_000]),
    st.integers(min_value=9, max_value=120).map(_deep),
    st.lists(st.integers(min_value=0, max_value=9), min_size=1001, max_size=1100),
    st.sampled_from([None, True, [], {}]),
)


@st.composite
def mutated(draw: st.DrawFn, template: Any) -> Any:
    """`template` with one to three of its parts (a field, an item, the whole) replaced by hostile values."""
    value = copy.deepcopy(template)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        value = _replace_somewhere(draw, value)
    return value


def _replace_somewhere(draw: st.DrawFn, value: Any) -> Any:
    if isinstance(value, dict) and value and draw(st.integers(min_value=0, max_value=5)):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _replace_somewhere(draw, value[key])}
    if isinstance(value, list) and value and draw(st.integers(min_value=0, max_value=5)):
        index = draw(st.integers(min_value=0, max_value=len(value) - 1))
        return [*value[:index], _replace_somewhere(draw, value[index]), *value[index + 1 :]]
    return draw(HOSTILE)


def order(event_id: str = "e1", customer_id: str = "c1") -> dict[str, Any]:
    return {
        "type": "order_paid",
        "event_id": event_id,
        "customer_id": customer_id,
        "occurred_at": "2026-11-23T16:20:00+08:00",
        "order_id": f"o-{event_id}",
        "amount": "0",
        "currency": "CNY",
        "items": [{"product_id": "p1", "quantity": 1, "price": "0"}],
        "points_earned": 10,
    }


EVENTS = [
    order(),
    {
        "type": "order_refunded",
        "event_id": "e2",
        "customer_id": "c1",
        "occurred_at": "2026-11-23T08:00:00Z",
        "order_id": "o-e1",
        "amount": "1.50",
    },
    {
        "type": "browse",
        "event_id": "e3",
        "customer_id": "c2",
        "occurred_at": "2026-11-23T08:00:00Z",
        "product_id": "p1",
    },
    {"type": "click", "event_id": "e4", "customer_id": "c2", "occurred_at": "2026-11-23T08:00:00Z", "target": "banner"},
]

GROUP: dict[str, Any] = {
    "id": "vip",
    "name": "会员",
    "order": 1,
    "mode": "exclusive",
    "tagging": "both",
    "auto_remove": True,
    "tags": [
        {
            "id": "gold",
            "name": "金卡",
            "rule": {
                "match": "all",
                "conditions": [
                    {"metric": "total_spent", "op": "gte", "value": "1000.00"},
                    {"metric": "order_count", "op": "between", "value": [1, 5], "window": {"last": "30d"}},
                    {
                        "metric": "browse_count",
                        "op": "gt",
                        "value": 1,
                        "window": {"from": "2026-11-01", "to": "2026-11-30"},
                    },
                    {
                        "match": "any",
                        "conditions": [
                            {"metric": "days_since_last_order", "op": "lte", "value": 7},
                            {"metric": "bought_any", "op": "in", "value": ["p1", "p2"]},
                            {"metric": "points_total", "op": "gte", "value": 100},
                        ],
                    },
                ],
            },
        },
        {
            "id": "silver",
            "name": "银卡",
            "rule": {"conditions": [{"metric": "click_count", "op": "gte", "value": 3, "window": {"last": "7d"}}]},
        },
    ],
}

MANUAL = {
    "group_id": "vip",
    "tag_id": "gold",
    "action": "add",
    "customer_ids": ["c1", "c3"],
    "expires_at": "2027-01-01T00:00:00+08:00",
    "request_id": "r1",
}
PROFILE = {
    "name": "李雷",
    "phone": "+86 138 0000 0000",
    "email": "li@example.com",
    "timezone": "Asia/Shanghai",
    "locale": "zh-CN",
}
AUDIENCE = {"all_of": ["vip/gold"], "any_of": [], "none_of": ["vip/silver"], "limit": 10}
REORDER = {"group_ids": ["vip"]}

PLAYBOOKS: dict[str, Any] = {
    "templates": {"hello": "您好 ${name}"},
    "playbooks": [
        {
            "id": "welcome",
            "trigger": {"group": "vip", "tag": "gold", "on": "added", "sources": ["rule"]},
            "holdout": "5%",
            "caps": [{"channel": "sms", "limit": 1, "window": "7d"}],
            "steps": [
                {"channel": "push", "template": "hello"},
                {"channel": "sms", "template": "hello", "delay": "3d", "cancel_if": ["tag_removed"]},
                {"channel": "coupon", "coupon": "HV-50", "delay": "1w"},
            ],
        }
    ],
}

RAW_YAML = st.sampled_from(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
        "c: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
        "groups: " + "[" * 500 + "]" * 500,
        "groups: !!python/object/apply:os.system [echo]\n",
        "groups:\n  - <<: *missing\n",
        "groups: [\n",
        "\x00\x01",
        "playbooks: {}\ntemplates: []\n",
    ]
)


def yaml_documents(root: str, template: Any) -> st.SearchStrategy[str]:
    """Rules or playbooks files: mutated valid documents (dumped by PyYAML) and raw hostile YAML."""
    dumped = mutated(template).map(
        lambda value: yaml.dump({root: value} if root else value, Dumper=yaml.CSafeDumper, allow_unicode=True)
    )
    return st.one_of(dumped, RAW_YAML)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """`customer_id,tags` files with hostile cells (quoted newlines, control characters, long ids)."""
    header = draw(st.sampled_from(["customer_id,tags", "\ufeffcustomer_id,tags", "tags,customer_id", ""]))
    cells = st.one_of(UNSAFE_TEXT, st.sampled_from(["c1", "会员-金卡", "会员-金卡;会员-银卡", "x" * 500, "=1+1"]))
    rows = draw(st.lists(st.tuples(cells, cells), max_size=8))
    lines = [header] + ['"{}","{}"'.format(a.replace('"', '""'), b.replace('"', '""')) for a, b in rows]
    encoded = "\r\n".join(lines).encode()
    return draw(st.sampled_from([encoded, encoded + b"\xff\xfe", b'customer_id,tags\n"unterminated']))
