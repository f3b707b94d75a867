"""Questions ingest asks the tagger workers about the state only they hold, and their answers.

`tagstream.tagger-queries` carries a `TaggerQuery` to every worker (each reads the whole topic, from
its end at start); each worker answers on `tagstream.tagger-answers` for the partitions it holds
(`TaggerAnswer.partitions`), and the asker gathers answers until every partition it needs is
covered. Both topics are short-lived (an unanswered question is worth nothing a minute later).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import Field, PlainSerializer

from schemas.common import SCHEMA_VERSION, Contract, ExternalId, Identifier, UtcDatetime
from schemas.limits import MAX_GROUPS
from schemas.tags import Metric, Reason, TagGroup, Window

MAX_SAMPLE: Final = 20
"""Customer ids shown per tag and direction in a preview."""
MAX_PARTITIONS: Final = 10_000

Exact = Annotated[Decimal, PlainSerializer(lambda v: str(v), return_type=str, when_used="json")]
"""Money as decimal text ("1299.50"), never a float."""


class WindowCount(Contract):
    """A windowed count a rule reads, as the rules see it now."""

    metric: Metric
    window: Window
    count: int = Field(ge=0)


class CustomerAggregates(Contract):
    """What the tagger keeps for one customer, as the rules read it at `as_of`."""

    order_count: int = Field(ge=0, description="paid orders not fully refunded (free ones included)")
    total_spent: Exact = Field(description="paid minus refunded, exact")
    avg_order_value: Exact = Field(description="total_spent / order_count (0 without orders)")
    points_total: int = Field(ge=0)
    first_order_at: UtcDatetime | None
    last_order_at: UtcDatetime | None
    last_seen_at: UtcDatetime | None
    windows: list[WindowCount] = Field(description="every windowed count the current rules read, once each")
    as_of: UtcDatetime


class Sample(Contract):
    customer_id: ExternalId
    reason: Reason = Field(description="the conditions and the customer's values that decide it")


class TagImpact(Contract):
    group_id: Identifier
    tag_id: Identifier
    gained: int = Field(ge=0, description="customers who would get the tag")
    lost: int = Field(ge=0, description="customers who would lose it")
    gained_sample: list[Sample] = Field(max_length=MAX_SAMPLE, description="the lowest customer ids, in order")
    lost_sample: list[Sample] = Field(max_length=MAX_SAMPLE)


class PreviewTally(Contract):
    customers: int = Field(ge=0, description="customers evaluated")
    impacts: list[TagImpact] = Field(description="per tag that anyone would gain or lose, by group and tag id")


class TaggerQuery(Contract):
    schema_version: Literal[1] = SCHEMA_VERSION
    query_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    kind: Literal["customer", "preview"]
    customer_id: ExternalId | None = None
    groups: list[TagGroup] | None = Field(
        default=None, max_length=MAX_GROUPS, description="preview: the whole draft set of definitions"
    )
    sample: int = Field(default=5, ge=0, le=MAX_SAMPLE)
    asked_at: UtcDatetime


class TaggerAnswer(Contract):
    schema_version: Literal[1] = SCHEMA_VERSION
    query_id: str
    worker: str = Field(max_length=200)
    partitions: list[int] = Field(max_length=MAX_PARTITIONS, description="the partitions this answer covers")
    customer: CustomerAggregates | None = None
    preview: PreviewTally | None = None
    error: str = Field(default="", max_length=500)
