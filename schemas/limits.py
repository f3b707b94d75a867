"""Every bound the contracts hold, in one place (docs/ingest.md "Limits" lists them for people).

The bounds are chosen so that whatever passes validation can be folded, evaluated, scheduled and
stored without overflow: counts and points stay far inside the state codec's 64-bit integers
(orjson refuses wider ones), money inside Decimal's 28 significant digits even summed over a
lifetime of orders, and instants — including an instant plus any bounded duration or day count —
inside what `datetime` and integer epoch microseconds represent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

MAX_ID_LENGTH: Final = 128
"""Ids from the merchant's systems (customers, orders, events, products)."""
MAX_IDENTIFIER_LENGTH: Final = 64
"""Ids of groups, tags, playbooks and templates."""
MAX_TEXT_LENGTH: Final = 256
"""Free text that is not an id (click targets, template texts are longer: MAX_TEMPLATE_LENGTH)."""
MAX_TEMPLATE_LENGTH: Final = 2_000

MAX_COUNT: Final = 10**15
"""Largest whole number a count or points condition compares with (< 2**53: exact in every JSON reader)."""
MAX_POINTS_PER_ORDER: Final = 10**9
"""Points one order earns: a customer would need 9 * 10**9 orders to leave 64 bits."""
MAX_QUANTITY: Final = 10**6
"""Items of one product in one order."""
MAX_ITEMS: Final = 1_000
"""Lines (products) of one order."""
MAX_DAYS: Final = 36_600
"""Largest day count a `days_since_*` condition compares with (about 100 years)."""
MAX_PERIODS: Final = 100
"""Periods a loyalty condition looks back over (cycle x periods must also fit the tagger's horizon)."""

MAX_ATTRIBUTE_LENGTH: Final = 64
"""Characters of one profile attribute value (a region, a family situation, a custom field) and of a
source's sub-channel or code id."""
MAX_CUSTOM_ATTRIBUTES: Final = 20
"""Custom attributes one `profile_updated` sets (and names it clears): what a shop's form holds."""
MAX_AGE: Final = 150
"""Largest age an `age` condition compares with (birth dates lie after 1900-01-01)."""

MONEY_PLACES: Final = 4
"""Decimal places of an amount (CNY has 2; a few currencies have 3; 4 leaves room for unit prices)."""
MAX_MONEY: Final = Decimal(10**12)
"""Amounts are below this, in the shop's currency."""

MIN_INSTANT: Final = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INSTANT: Final = datetime(2100, 1, 1, tzinfo=UTC)
"""Instants (occurred_at, expires_at) lie in [MIN_INSTANT, MAX_INSTANT): epoch microseconds stay
positive and any instant plus MAX_DURATION or MAX_DAYS is still a valid datetime."""
MAX_DURATION: Final = timedelta(days=366)
"""Playbook delays, cap windows and periods: at most a year (and a day, for anniversaries)."""

MAX_RULE_DEPTH: Final = 8
"""Nesting levels of a rule (a rule with conditions only is level 1)."""
MAX_CONDITIONS: Final = 50
"""Conditions and nested rules in one rule."""
MAX_VALUES: Final = 1_000
"""Items in an `in` / `not_in` list."""
MAX_TAGS: Final = 200
"""Tags in one group."""
MAX_GROUPS: Final = 500
"""Tag groups in a rules file or a reorder request."""
MAX_ORDER: Final = 10**6
"""`order` of a group or tag: display positions, not amounts."""
MAX_VERSION: Final = 2**31 - 1
MAX_SEQ: Final = 2**63 - 1
"""A per-customer counter: the codec keeps it as a signed 64-bit integer."""
MAX_NUMBER_TEXT: Final = 40
"""Characters of a number written as text ("199.90", "1e3"): read no further before refusing it."""

MAX_SCORES: Final = 10
"""Scores one tag group defines (docs/tagger.md "Behaviour scores")."""
MAX_SCORE_POINTS: Final = 1_000
"""Points one action is worth, either way: a day's points stay far inside 64 bits even at DAY_CAP."""
MAX_SCORE_TARGETS: Final = 100
"""Products or link prefixes one score gives points of their own."""
MAX_SCORE: Final = 10**9
"""Largest score (either sign) a score condition compares with."""
SCORE_PLACES: Final = 4
"""Decimal places of a score: a decaying score is rounded down to them, thresholds have at most them."""
MIN_HALF_LIFE: Final = timedelta(hours=1)

MAX_PLAYBOOKS: Final = 200
MAX_STEPS: Final = 20
MAX_YAML_DEPTH: Final = 32
"""Nesting of a YAML document (each rule level takes two: the rule and its conditions list)."""
MAX_USER_FILE_BYTES: Final = 1024 * 1024
"""Rules and playbooks files (a Kubernetes ConfigMap holds at most 1 MiB too)."""

EXCERPT_CHARS: Final = 80
"""Errors quote at most this much of an offending value."""

MAX_CAMPAIGNS: Final = 1_000
"""Campaigns kept (any status); a new one past this is refused until old ones are deleted."""
MAX_AUDIENCE_TAGS: Final = 50
"""Tags in each of a campaign audience's all_of / any_of / none_of (as the audience query allows)."""
MAX_CAMPAIGN_CAPS: Final = 20
MAX_CAMPAIGN_TEMPLATES: Final = 50
MAX_SEND_RATE: Final = 100_000
"""Campaign steps fanned out per second and channel (the pacing setting)."""
