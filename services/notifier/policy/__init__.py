"""The notifier's pure policy: playbooks, keys, caps, quiet hours, holdout, cancel conditions, the decision.

No I/O here (stdlib, pydantic, schemas and the pure pieces of services.runtime only): the notifier
gathers the facts and acts on the `Decision`, so every rule is tested in milliseconds. The models
(playbooks, campaigns, the scheduled step) are contracts in schemas/; the caps, the keys and the file
loaders are in services/runtime, where the ingest API's campaign preview and commands use them too.
"""

from schemas.campaigns import Audience, Campaign
from schemas.playbooks import CapRule, Channel, Playbook, PlaybookError, PlaybookSet, ScheduledStep, Step, Trigger
from services.notifier.policy.campaigns import Pacer, campaign_jobs
from services.notifier.policy.decision import Decision, Facts, Policy, decide
from services.notifier.policy.jobs import plan
from services.notifier.policy.quiet import QuietHours
from services.notifier.policy.templates import render
from services.runtime.caps import SendRecord, count_within, exceeded_cap, longest_window
from services.runtime.program_files import load_campaign, load_playbooks
from services.runtime.step_keys import campaign_step_key, holdout_draw, in_holdout, step_key

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
