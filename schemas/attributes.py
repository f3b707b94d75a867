"""The values of conditions on profile attributes and sources: texts, checked against what events carry.

`attribute` compares the attribute's text (`{metric: attribute, name: region, op: in, value: [上海,
杭州]}`); `first_source` / `last_source` a channel, or `channel/sub_channel` for one store, article
or live room; `sources_any` channels only (what the tagger keeps of every touch: docs/tagger.md).
"""

from __future__ import annotations

from typing import Any, Final

from schemas.common import check_safe
from schemas.events import CHANNELS
from schemas.excerpt import excerpt
from schemas.limits import MAX_ATTRIBUTE_LENGTH

PROFILE_TEXT_METRICS: Final = frozenset({"attribute", "first_source", "last_source", "sources_any"})
"""Metrics (by value) whose conditions compare texts from profile and source events (eq/ne/in/not_in)."""
TOUCH_METRICS: Final = frozenset({"first_source", "last_source"})


def profile_text(metric: str, item: Any) -> str:
    """One listed value of a condition on `metric`, as the text the engine compares, or a ValueError
    saying what the metric takes."""
    if isinstance(item, int) and not isinstance(item, bool) and metric == "attribute":
        item = str(item)  # YAML reads `value: [1, 2]` (children) as numbers; attributes are texts
    if not isinstance(item, str) or not item or len(item) > 2 * MAX_ATTRIBUTE_LENGTH + 1:
        raise ValueError(
            f"metric {metric!r} compares texts of at most {MAX_ATTRIBUTE_LENGTH} characters, got {excerpt(item)}"
        )
    text = check_safe(item)
    if metric == "attribute":
        if len(text) > MAX_ATTRIBUTE_LENGTH:
            raise ValueError(f"attribute values have at most {MAX_ATTRIBUTE_LENGTH} characters, got {excerpt(text)}")
        return text
    channel, slash, sub_channel = text.partition("/")
    if channel not in CHANNELS:
        raise ValueError(f"metric {metric!r}: unknown channel {excerpt(channel)}; channels are {', '.join(CHANNELS)}")
    if slash and metric not in TOUCH_METRICS:
        raise ValueError(f"metric {metric!r} compares channels, not sub-channels: got {excerpt(text)}")
    if slash and not 0 < len(sub_channel) <= MAX_ATTRIBUTE_LENGTH:
        raise ValueError(f"a sub-channel has 1 to {MAX_ATTRIBUTE_LENGTH} characters, got {excerpt(text)}")
    return text
