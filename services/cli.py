"""The `tagstream` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime

from services.embedded import commands as embedded_commands
from services.engine.aggregates import DEFAULT_HORIZON_DAYS
from services.ingest import campaign_commands as campaign_client
from services.ingest import commands as ingest_commands
from services.notifier import commands as notifier_commands
from services.sync import commands as sync_commands
from services.tagger import commands as tagger_commands
from services.tagger import readmodel_commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    code: int = args.run(args)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagstream", description="Real-time customer tagging for e-commerce CRM.")
    commands = parser.add_subparsers(title="commands")

    replay = commands.add_parser(
        "replay",
        help="backtest rules on an event history (no services needed)",
        description="Fold a JSON-lines event history through the engine and write every customer's tags.",
    )
    replay.add_argument("events", help="JSON-lines file of customer events ('-' for standard input)")
    replay.add_argument("--rules", required=True, help="rules file (YAML, `groups: [...]`)")
    replay.add_argument("--now", type=_instant, help="evaluate at this ISO 8601 instant (default: latest event)")
    replay.add_argument("--out", required=True, help="JSON-lines output, one line per customer")
    replay.add_argument("--changes", help="also write every tag change, in order, as JSON lines")
    replay.add_argument("--horizon-days", type=int, default=DEFAULT_HORIZON_DAYS, help="days of history kept")
    replay.add_argument(
        "--timezone",
        type=_zone,
        help="IANA zone whose local days are the shop's days (default: TAGSTREAM_SHOP__TIMEZONE, else UTC)",
    )
    replay.add_argument("--full", action="store_true", help="re-evaluate every group on every event (slower)")
    replay.add_argument(
        "--currency",
        type=_currency,
        help="the shop's currency; orders in another one are rejected (default: TAGSTREAM_SHOP__CURRENCY, else CNY)",
    )
    replay.set_defaults(run=tagger_commands.replay)

    tagger = commands.add_parser(
        "tagger",
        help="run a tagger worker (needs Kafka; settings from TAGSTREAM_* variables)",
        description="Run a tagger worker: creates missing topics, then consumes events until stopped.",
    )
    tagger.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    tagger.set_defaults(run=tagger_commands.tagger)

    projector = commands.add_parser(
        "projector",
        help="keep the Redis read model from tag changes, apart from the taggers (needs Kafka and Redis)",
        description="Run the read model's projection in its own process: tag changes, events and notification "
        "outcomes into Redis. Set TAGSTREAM_TAGGER__PROJECTOR=false on the tagger workers when it runs.",
    )
    projector.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    projector.set_defaults(run=tagger_commands.projector)

    demo = commands.add_parser(
        "demo",
        help="watch tagstream tag a generated shop and follow up, in one process (no services needed)",
        description="A simulated quarter of a generated shop through the engine and the notifier, printed live.",
    )
    demo.add_argument("--customers", type=int, default=400, help="how many customers the shop has")
    demo.add_argument("--days", type=int, default=91, help="simulated days")
    demo.add_argument("--seed", type=int, default=7, help="random seed (the same seed, the same shop)")
    demo.set_defaults(run=embedded_commands.demo)

    notifier = commands.add_parser(
        "notifier",
        help="run a notifier (needs Kafka and Redis; settings from TAGSTREAM_* variables)",
        description="Run a notifier replica: turns tag changes into push, SMS and coupon sends by the playbooks.",
    )
    notifier.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    notifier.add_argument("--check", metavar="PLAYBOOKS", help="only validate a playbooks file and exit")
    notifier.add_argument(
        "--rules", metavar="RULES", help="with --check: also refuse triggers naming tags this rules file lacks"
    )
    notifier.set_defaults(run=notifier_commands.notifier)

    sync = commands.add_parser(
        "sync",
        help="keep an external system's tags in step (needs Kafka and Redis; settings from TAGSTREAM_*)",
        description="Run the tag sync sink: applies tagstream.tag-changes to a signed webhook or to WeCom corp "
        "tags (TAGSTREAM_SYNC__ADAPTER), committing offsets only after the external system acknowledged them.",
    )
    sync.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sync.set_defaults(run=sync_commands.sync)
    sync_subcommands = sync.add_subparsers(title="sync commands")
    resync = sync_subcommands.add_parser(
        "resync",
        help="make the external system hold exactly the read model's tags (exit 0 done, 1 some refused, 2 unusable)",
        description="For every customer in the Redis read model, replace the external tags of the enabled groups "
        "with the ones held. Runs beside `tagstream sync`; the sink then skips the changes the resync covered.",
    )
    resync.set_defaults(run=sync_commands.resync)

    ingest = commands.add_parser(
        "ingest",
        help="run the ingest HTTP API (needs Kafka and Redis; settings from TAGSTREAM_* variables)",
        description="Serve the HTTP API (uvicorn) for events, tag definitions, manual tags and reads.",
    )
    ingest.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ingest.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    ingest.set_defaults(run=ingest_commands.ingest)

    history = commands.add_parser(
        "import",
        help="load an event history without messaging anyone (resumable; through the HTTP API)",
        description="Send a JSON-lines event history to POST /v1/events:import: its tag changes carry source "
        "import, which playbooks ignore. Resumes where the last run stopped (see --state). Exit 0 imported, "
        "1 interrupted (run again to resume), 2 unusable.",
    )
    history.add_argument("events", help="JSON-lines file of customer events")
    history.add_argument("--url", default="http://127.0.0.1:8080", help="the ingest API (or `tagstream run`)")
    history.add_argument("--api-key", help="an operator API key (default: TAGSTREAM_API_KEY)")
    history.add_argument("--state", help="progress file (default: EVENTS.import-state.json beside the input)")
    history.add_argument("--restart", action="store_true", help="ignore the progress file: start from line 1")
    history.add_argument("--batch", type=int, default=500, help="events per request (at most ingest.max_batch)")
    history.add_argument(
        "--rate",
        type=float,
        help="send at most this many events per second (default: as fast as the server takes them)",
    )
    history.set_defaults(run=ingest_commands.import_history)

    tags = commands.add_parser("tags", help="manage tag definitions on Kafka")
    tag_commands = tags.add_subparsers(title="tags commands", required=True)
    apply = tag_commands.add_parser(
        "apply",
        help="publish a rules file's groups (GitOps): validate, print the diff, publish",
        description="Create the file's new groups, replace changed ones (version + 1), leave identical ones; "
        "groups missing from the file are kept unless --prune. Exit 0 applied, 1 invalid, 2 unusable.",
    )
    apply.add_argument("-f", "--file", required=True, help="rules file (YAML, `groups: [...]`)")
    apply.add_argument(
        "--dry-run",
        action="store_true",
        help="print the diff and who would gain and lose each tag (asked of the tagger workers); publish nothing",
    )
    apply.add_argument(
        "--no-impact",
        dest="impact",
        action="store_false",
        help="with --dry-run: the diff only, without asking the workers",
    )
    apply.add_argument("--prune", action="store_true", help="also delete groups that are not in the file")
    apply.set_defaults(run=ingest_commands.tags_apply)

    campaign = commands.add_parser(
        "campaigns",
        help="one-off sends to tag audiences: create, preview, list, get, pause, resume, cancel, report",
        description="Campaigns through the HTTP API (docs/notifier.md). Exit 0 done, 1 refused by the API, 2 unusable.",
    )
    campaign.add_argument("--url", default="http://127.0.0.1:8080", help="the ingest API (or `tagstream run`)")
    campaign.add_argument("--api-key", help="an API key (admin to change; default: TAGSTREAM_API_KEY)")
    campaign_commands = campaign.add_subparsers(title="campaign commands", required=True, dest="action")
    for action, text in (
        ("create", "schedule the campaign in a file"),
        ("preview", "who a campaign file would reach now"),
    ):
        command = campaign_commands.add_parser(action, help=text)
        command.add_argument("-f", "--file", required=True, help="campaign file (YAML or JSON)")
    campaign_commands.add_parser("list", help="every campaign and where it stands")
    for action, text in (
        ("get", "one campaign"),
        ("report", "per step: targeted, held out, sent, suppressed, deferred, cancelled, failed; conversion"),
        ("pause", "stop fanning out and sending until resumed"),
        ("resume", "continue a paused campaign"),
        ("cancel", "stop for good: steps not yet sent are cancelled"),
    ):
        campaign_commands.add_parser(action, help=text).add_argument("id")
    campaign.set_defaults(run=campaign_client.campaigns)

    readmodel = commands.add_parser("readmodel", help="the Redis read model: status, rebuild")
    readmodel_subcommands = readmodel.add_subparsers(title="readmodel commands", required=True)
    readmodel_status = readmodel_subcommands.add_parser(
        "status", help="is the read model whole? (exit 0 ready, 1 missing or rebuilding)"
    )
    readmodel_status.set_defaults(run=readmodel_commands.status)
    rebuild = readmodel_subcommands.add_parser(
        "rebuild",
        help="rebuild the read model from tag-changes and events, with progress (needs Kafka and Redis)",
        description="Delete the projection's keys (consent, profiles and the notifier's keys are kept), then "
        "apply tagstream.tag-changes and the events' activity from their beginning until the read model is whole. "
        "Readers answer 503 meanwhile; running taggers pause, then help. Exit 0 rebuilt, 1 timed out, 2 unusable.",
    )
    rebuild.add_argument(
        "--keep", action="store_true", help="keep the projection's keys: only finish a rebuild (e.g. after Redis loss)"
    )
    rebuild.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    rebuild.set_defaults(run=readmodel_commands.rebuild)

    run = commands.add_parser(
        "run",
        help="run all of tagstream in one process for a small shop (no Kafka, no Redis)",
        description="Serve the ingest HTTP API with the tagger, read model and notifier in this process; state is "
        "journaled in --data-dir, so a restart loses nothing. Settings (API keys, notifier) from TAGSTREAM_*. "
        "The Kafka deployment runs `tagstream ingest`, `tagstream tagger` and `tagstream notifier` instead.",
    )
    # `run --embedded` was the only accepted spelling when `run` required the flag: scripts and
    # service units written then keep working
    run.add_argument(
        "--embedded", action="store_true", help="accepted for compatibility: `run` is the one-process mode"
    )
    run.add_argument("--data-dir", default=".tagstream", help="where the journal is kept (default: .tagstream)")
    run.add_argument(
        "--playbooks",
        help="notifier playbooks file, reloaded when it changes (default: TAGSTREAM_NOTIFIER__PLAYBOOKS_FILE if set); "
        "without one no messages are sent",
    )
    run.add_argument("--host", help="listen address (default: TAGSTREAM_INGEST__HOST)")
    run.add_argument("--port", type=int, help="listen port (default: TAGSTREAM_INGEST__PORT)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--skip-bad-journal-lines",
        action="store_true",
        help="move journal lines that cannot be replayed to <journal>.rejected and start without them "
        "(the writes they hold are lost); without it such a line stops the start, naming file and line",
    )
    run.set_defaults(run=embedded_commands.run_embedded)

    template = commands.add_parser("templates", help="built-in tag group templates")
    template_commands = template.add_subparsers(title="template commands", required=True)
    listing = template_commands.add_parser("list", help="list the templates and their parameters")
    listing.set_defaults(run=tagger_commands.templates_list)
    show = template_commands.add_parser("show", help="print a template as a rules file")
    show.add_argument("name")
    show.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="set a parameter")
    show.set_defaults(run=tagger_commands.templates_show)
    return parser


def _zone(text: str) -> str:
    from pydantic import ValidationError

    from services.runtime.settings import ShopSettings  # pydantic-settings: only when a zone is given

    try:
        return ShopSettings(timezone=text).timezone
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"unknown time zone {text[:64]!r}; use an IANA name such as 'Asia/Shanghai'"
        ) from None


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; write e.g. 2026-11-23T00:00:00Z")
    return moment.astimezone(UTC)


def _currency(text: str) -> str:
    if len(text) != 3 or not text.isascii() or not text.isupper() or not text.isalpha():
        raise argparse.ArgumentTypeError(f"not an ISO 4217 currency code: {text!r}; write e.g. CNY")
    return text


if __name__ == "__main__":
    raise SystemExit(main())
