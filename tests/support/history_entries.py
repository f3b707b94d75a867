"""Tag changes shaped like a shop's and hostile ones, for the history entry tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.limits import MAX_ID_LENGTH, MAX_IDENTIFIER_LENGTH, MAX_SEQ, MAX_VERSION
from schemas.tags import TagChanged


def shop_change(**overrides: Any) -> TagChanged:
    """A Shanghai shop's time change: a free order's zero spend, a window, an absent observation."""
    document = {
        "customer_id": "顾客-上海-001",
        "group_id": "lifecycle",
        "tag_id": "churn_risk",
        "change": "removed",
        "source": "time",
        "reason": {
            "summary": "可能流失: 60 天未下单",
            "conditions": [
                {"metric": "total_spent", "op": "gte", "value": "0", "observed": "0.00", "matched": True},
                {
                    "metric": "order_count",
                    "op": "gte",
                    "value": 2,
                    "window": {"last": "30d"},
                    "observed": None,
                    "matched": False,
                },
            ],
        },
        "group_version": 12,
        "caused_by": None,
        "occurred_at": datetime(2026, 12, 31, 16, 0, 0, 1, tzinfo=UTC),
        "seq": 99_999,
    }
    return TagChanged.model_validate(document | overrides)


def hostile_changes() -> list[TagChanged]:
    """Ids at their longest, reasons in other scripts and holding the codec's own markers, every kind
    of observed value, the largest seq and group version, instants at the edges."""
    longest = "长" * (MAX_ID_LENGTH - 2) + "}{"
    markers = 'x,"observed":1,"matched":true}\u0000\\"'
    conditions = [
        {"metric": "order_count", "op": "gte", "value": 1, "observed": 125, "matched": True},
        {"metric": "order_count", "op": "gte", "value": 1, "observed": 126, "matched": False},
        {"metric": "order_count", "op": "lt", "value": 1, "observed": -1, "matched": False},
        {"metric": "avg_order_value", "op": "between", "value": ["0", "99.99"], "observed": "0", "matched": True},
        {"metric": "bought_any", "op": "in", "value": ["p-1", markers], "observed": [markers, "p-2"], "matched": True},
    ]
    return [
        shop_change(customer_id=longest, caused_by=longest, seq=MAX_SEQ, group_version=MAX_VERSION),
        shop_change(
            customer_id="顾客-北京-002",
            group_id="g" * MAX_IDENTIFIER_LENGTH,
            tag_id="t." * (MAX_IDENTIFIER_LENGTH // 2),
            source="manual",
            reason={"summary": "removed by 王小明 " + markers + "🙂" * 200, "conditions": conditions},
            caused_by="cmd-" + "😀" * 60,
            occurred_at=datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            seq=1,
        ),
        shop_change(
            reason={
                "summary": "",
                "conditions": [
                    {"metric": "score", "name": "intent", "op": "gte", "value": 5, "observed": 4.75, "matched": False},
                    {"metric": "total_spent", "op": "gte", "value": "1", "observed": {"matched": 1}, "matched": True},
                ],
            },
            customer_id="c-0003",
            occurred_at=datetime(1970, 1, 1, tzinfo=UTC),
            change="added",
            source="import",
        ),
    ]


FORMAT_1_ENTRIES = (
    bytes.fromhex(
        "01ab468ec89cccb4d4e4ca64708cc0633439a3b4282fbe28b3389b405442a30e5bf83fed5fffa279efb3ad8d4f976cb45230"
        "335078ba64e5b339ab9eece87eda3b154fe494e49724e6c41717a422822a1d3972940c94d0e307110f4a20cf2a91181328c6"
        "1be1886e1da5b4a2fc5c988d25f91016be4480334a0d8db0442af65834360c3134438e4543782c5a82402d00"
    ),
    bytes.fromhex(
        "01ab468ec89cccb4d4e4ca64708cc0633439a3b4282fbe28b3389b405442a30e5bf83fed5fffa279efb3ad8d4f976cb45230"
        "335078ba64e5b339ab9eece87eda3b154fe494e49724e6c41717a422822a1d3972940c94d0e307110f4a20cf2a91181328c6"
        "1be1886e1da5b4a2fc5c988d25f91016be4480334a8d0c4dcc4d2c8ccd4ccc51e3f2e5d4fda36840506d35ce7c646c186268"
        "869c8f0ce1f9c8d2c8c8d8d8dcc8c0d8ccc2d4c4dcdcd4c2c0bc1600"
    ),
    bytes.fromhex(
        "01ab468ec8740a01724228d1a30c124837f004802dbaa1ea15922a159ef7753fddd0ff6c469f42854e0c3c926294ac0c815c"
        "6888c7402329a61414343131314a1fe6cf6c1ac5a3781463c778ca532ca55b3a72796a885ea0220a4e43235312cb4de24d36"
        "c3285f09189d534294c9ba86780d4e2c4b8f87180e310a6a78526a49796a6a1ec28668250320c7d252cfd2522916b76d6055"
        "b8432829bf343da3243e31af126651268a1d05ba86402e2905213ec7449366920ed07a239079a8eec752cd191aa1d66bc9b9"
        "29ba1fe6cf681849184b5d6e6909aacb8d0d438c8cad4c2d8108985840005e971bd60200"
    ),
    bytes.fromhex(
        "01ab468ec89cccb4d4e4ca64708cc0633439a3b4282fbe28b3381b5bdc521cfec5c9f94520fbf21273c1c6e495a422c2251d"
        "39264cd1a30211e4267ae6a61801881ce625f9258939f1c505b8cc563254c26d7a35c264c35af498c5124d864658220a3566"
        "0c2dcd0d80d1821c33f028b104815a00"
    ),
)
"""`shop_change()` and `hostile_changes()` as format 1 kept them: written by the code before format 2
(`history_codec.pack_change` at ecc38a4), so the reader is held to entries already in shops' Redis."""
