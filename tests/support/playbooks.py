"""The issue's win-back playbook, as the notifier tests at every layer load it.

A high-value customer who churns gets a push and a coupon at once, and an SMS three days later
unless they came back (ordered or visited) or lost the tag in between."""

from __future__ import annotations

TEMPLATES = """
templates:
  brand-sale: "Hi ${name|there}, the brand sale is on"
  miss-you: "We miss you, ${name|friend}"
"""

WINBACK_HIGH_VALUE = """
  - id: winback-high-value
    trigger: {group: value, tag: high_churned, on: added}
    steps:
      - {channel: push,   template: brand-sale, delay: 0}
      - {channel: coupon, coupon: HV-50,        delay: 0}
      - {channel: sms,    template: miss-you,   delay: 3d, cancel_if: [tag_removed, customer_returned]}
"""


def playbooks_file(*playbooks: str) -> str:
    """A playbooks document: the shared templates and these playbooks (YAML list items)."""
    return TEMPLATES + "playbooks:" + "".join(playbooks)
