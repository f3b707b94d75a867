"""The notifier's pure policy: playbooks, keys, caps, quiet hours, holdout, cancel conditions, the decision.

No I/O here (stdlib, pydantic and schemas only): the notifier gathers the facts and acts on the
`Decision`, so every rule is tested in milliseconds.
"""

from services.notifier.policy.campaigns import Audience, Campaign, Pacer, campaign_jobs, load_campaign
from services.notifier.policy.caps import SendRecord, count_within, exceeded_cap, longest_window
from services.notifier.policy.decision import Decision, Facts, Policy, decide, in_holdout
from services.notifier.policy.jobs import ScheduledStep, plan
from services.notifier.policy.keys import campaign_step_key, holdout_draw, step_key
from services.notifier.policy.playbooks import (
    CapRule,
    Channel,
    Playbook,
    PlaybookError,
    PlaybookSet,
    Step,
    Trigger,
    load_playbooks,
)
from services.notifier.policy.quiet import QuietHours
from services.notifier.policy.templates import render

__all__ = [
    "Audience",
    "Campaign",
    "CapRule",
    "Channel",
    "Decision",
    "Facts",
    "Pacer",
    "Playbook",
    "PlaybookError",
    "PlaybookSet",
    "Policy",
    "QuietHours",
    "ScheduledStep",
    "SendRecord",
    "Step",
    "Trigger",
    "campaign_jobs",
    "campaign_step_key",
    "count_within",
    "decide",
    "exceeded_cap",
    "holdout_draw",
    "in_holdout",
    "load_campaign",
    "load_playbooks",
    "longest_window",
    "plan",
    "render",
    "step_key",
]
