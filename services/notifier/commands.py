"""`tagstream notifier`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def notifier(args: argparse.Namespace) -> int:
    import logging

    from services.notifier.app import build_app
    from services.notifier.durability import VolatileRedis
    from services.notifier.policy import PlaybookError
    from services.runtime.consumers import run_until_signalled
    from services.runtime.logs import hold_back_repeats
    from services.runtime.settings import SettingsError, load_settings
    from services.runtime.webhooks import ProviderConfigError

    if args.check is not None:
        return _check(args.check, args.rules)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hold_back_repeats()
    try:
        app = build_app(load_settings())
    except (SettingsError, PlaybookError, ProviderConfigError) as error:
        print(f"tagstream notifier: {error}", file=sys.stderr)
        return 2

    try:
        run_until_signalled(app)
    except VolatileRedis as error:
        print(f"tagstream notifier: {error}", file=sys.stderr)
        return 2
    return 0


def _check(playbooks: str, rules: str | None) -> int:
    """Validate a playbooks file; with a rules file, also refuse triggers naming tags it does not define
    (as PUT /v1/playbooks does against the live definitions)."""
    from schemas.playbooks import unknown_triggers
    from services.notifier.policy import PlaybookError, load_playbooks
    from services.runtime.definitions import RulesFileError, parse_groups

    try:
        found = load_playbooks(Path(playbooks).read_text(encoding="utf-8"), playbooks)
        groups = parse_groups(Path(rules).read_text(encoding="utf-8"), rules) if rules else None
    except (OSError, PlaybookError, RulesFileError) as error:
        print(f"tagstream notifier: {error}", file=sys.stderr)
        return 2
    problems = unknown_triggers(found, {group.id: group for group in groups}) if groups is not None else []
    if problems:
        print(f"tagstream notifier: {playbooks}: {'; '.join(problems)}", file=sys.stderr)
        return 2
    print(f"{playbooks}: {len(found.playbooks)} playbooks, {len(found.templates)} templates: valid")
    return 0
