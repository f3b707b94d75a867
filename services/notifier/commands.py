"""`tagstream notifier`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def notifier(args: argparse.Namespace) -> int:
    import logging

    from services.notifier.app import build_app
    from services.notifier.durability import VolatileRedis
    from services.notifier.policy import PlaybookError, load_playbooks
    from services.runtime.consumers import run_until_signalled
    from services.runtime.logs import hold_back_repeats
    from services.runtime.settings import SettingsError, load_settings
    from services.runtime.webhooks import ProviderConfigError

    if args.check is not None:
        try:
            found = load_playbooks(Path(args.check).read_text(encoding="utf-8"), args.check)
        except (OSError, PlaybookError) as error:
            print(f"tagstream notifier: {error}", file=sys.stderr)
            return 2
        print(f"{args.check}: {len(found.playbooks)} playbooks, {len(found.templates)} templates: valid")
        return 0
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
