"""Cancel conditions of a delayed step, checked against the read model when the step comes due."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from schemas.playbooks import CancelCondition


def cancel_reason(
    conditions: Iterable[CancelCondition],
    *,
    tag_held: bool | None,
    last_activity: datetime | None,
    triggered_at: datetime,
) -> str | None:
    """Why the step no longer applies, or None.

    `tag_held` is None when the read model does not know the customer: that cancels nothing, since
    an unknown state is no evidence that the tag went away.
    """
    for condition in conditions:
        if condition == "tag_removed" and tag_held is False:
            return "the trigger tag was removed"
        if condition == "tag_added" and tag_held is True:
            return "the trigger tag was added again"
        if condition == "customer_returned" and last_activity is not None and last_activity > triggered_at:
            return "the customer ordered or visited since the trigger"
    return None
