"""Frequency caps over sliding windows: at most `limit` sends per customer and channel in any window.

The notifier decides with them; the campaign preview (ingest) counts them the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.playbooks import CapRule


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One message that reached a provider: what the caps count."""

    channel: str
    playbook_id: str
    at: datetime


def count_within(history: Iterable[SendRecord], now: datetime, window: timedelta, *, playbook_id: str | None) -> int:
    """Sends in (now - window, now], optionally only those of one playbook."""
    since = now - window
    return sum(
        1
        for record in history
        if since < record.at <= now and (playbook_id is None or record.playbook_id == playbook_id)
    )


def exceeded_cap(
    channel: str,
    playbook_id: str,
    history: Sequence[SendRecord],
    now: datetime,
    *,
    global_caps: Iterable[CapRule],
    playbook_caps: Iterable[CapRule],
) -> tuple[CapRule, str] | None:
    """The first cap one more send on `channel` would break, with its scope ("global" or "playbook")."""
    on_channel = [record for record in history if record.channel == channel]
    for scope, rules, only in (("global", global_caps, None), ("playbook", playbook_caps, playbook_id)):
        for rule in rules:
            if rule.channel == channel and count_within(on_channel, now, rule.window, playbook_id=only) >= rule.limit:
                return rule, scope
    return None


def longest_window(rules: Iterable[CapRule]) -> timedelta:
    """How much send history the caps need to see."""
    return max((rule.window for rule in rules), default=timedelta(0))
