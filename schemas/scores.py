"""Behaviour scores: points per action, defined in a tag group and read by its rules (`metric: score`).

A score adds points for each action a customer takes (a click, a browse, an order, a refund), with
points of their own for listed products (browses) and link prefixes (clicks: a tracked "radar" link is
a click whose target starts with `radar:`). Without `decay` a rule reads the points summed over its
window (`window: {last: 14d}`); with `decay` a rule reads every point ever earned, each halving every
`half_life` from the end of the shop's local day it was earned on (docs/tagger.md "Behaviour scores").
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from schemas.common import Contract, ExternalId, Identifier, check_safe
from schemas.durations import parse_duration
from schemas.excerpt import excerpt
from schemas.limits import MAX_SCORE_POINTS, MAX_SCORE_TARGETS, MAX_TEXT_LENGTH, MIN_HALF_LIFE

Points = Annotated[int, Field(ge=-MAX_SCORE_POINTS, le=MAX_SCORE_POINTS, strict=True)]


class ActionPoints(Contract):
    """Points per action; an action not listed is worth 0."""

    click: Points = 0
    browse: Points = 0
    order: Points = Field(default=0, description="a paid order (a re-sent payment of one order counts once)")
    refund: Points = Field(default=0, description="each refund of an order; usually negative")


class Decay(Contract):
    """Points halve every `half_life` (`7d`, `36h`; at least 1h, at most a tenth of the tagger's
    retained horizon, checked where the horizon is known), counted from the end of the shop's local
    day they were earned on."""

    half_life: str = Field(examples=["7d"])

    @field_validator("half_life")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) < MIN_HALF_LIFE:
            raise ValueError(f"half_life must be at least {MIN_HALF_LIFE}, got {excerpt(value)}")
        return value

    @property
    def half_life_us(self) -> int:
        return parse_duration(self.half_life) // timedelta(microseconds=1)


class Score(Contract):
    """One score: `points` per action, `products` and `links` worth points of their own (a browse of
    a listed product, a click whose target starts with a listed prefix: the longest prefix wins), and
    optionally `decay`."""

    id: Identifier
    points: ActionPoints = Field(default_factory=ActionPoints)
    products: dict[ExternalId, Points] = Field(
        default_factory=dict, max_length=MAX_SCORE_TARGETS, description="product id -> points of a browse of it"
    )
    links: dict[Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LENGTH)], Points] = Field(
        default_factory=dict,
        max_length=MAX_SCORE_TARGETS,
        description="click target prefix -> points of a click on a target starting with it (longest prefix wins)",
    )
    decay: Decay | None = None

    @field_validator("links")
    @classmethod
    def _safe_prefixes(cls, value: dict[str, int]) -> dict[str, int]:
        for prefix in value:
            check_safe(prefix)
        return value

    @model_validator(mode="after")
    def _scores_something(self) -> Score:
        points = self.points
        if not (points.click or points.browse or points.order or points.refund or self.products or self.links):
            raise ValueError(f"score {self.id!r} gives no points for any action")
        return self
