"""`tagstream campaigns create|preview|list|get|pause|resume|cancel|report`: the campaign routes over HTTP.

The file is checked here first (the same model the API validates with), so a typo is reported with
the field named before anything is sent. Exit 0 done, 1 refused by the API (its answer printed), 2 unusable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

_TIMEOUT_S = 120.0


def campaigns(args: argparse.Namespace) -> int:
    from schemas.playbooks import PlaybookError
    from services.runtime.program_files import load_campaign

    api_key = args.api_key or os.environ.get("TAGSTREAM_API_KEY")
    if not api_key:
        print("tagstream campaigns: no API key: pass --api-key or set TAGSTREAM_API_KEY", file=sys.stderr)
        return 2
    body: dict[str, Any] | None = None
    if args.action in ("create", "preview"):
        try:
            campaign = load_campaign(Path(args.file).read_text(encoding="utf-8"), args.file)
        except OSError as error:
            print(f"tagstream campaigns: {args.file}: cannot read: {error.strerror}", file=sys.stderr)
            return 2
        except PlaybookError as error:
            print(f"tagstream campaigns: {error}", file=sys.stderr)
            return 2
        body = campaign.model_dump(mode="json", exclude_none=True)
    method, path = _route(args)
    status, answer = _call(args.url, api_key, method, path, body)
    print(json.dumps(answer, ensure_ascii=False, indent=2))
    if status == 0:
        return 2
    return 0 if status < 300 else 1


def _route(args: argparse.Namespace) -> tuple[str, str]:
    action = args.action
    if action == "create":
        return "POST", "/v1/campaigns"
    if action == "preview":
        return "POST", "/v1/campaigns:preview"
    if action == "list":
        return "GET", "/v1/campaigns"
    if action == "get":
        return "GET", f"/v1/campaigns/{args.id}"
    if action == "report":
        return "GET", f"/v1/campaigns/{args.id}/report"
    return "POST", f"/v1/campaigns/{args.id}/{action}"


def _call(url: str, api_key: str, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
    """(HTTP status, parsed answer); status 0 when the API cannot be reached."""
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url.rstrip("/") + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")[:2000]
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, {"detail": text}
    except (urllib.error.URLError, OSError) as error:
        return 0, {"detail": f"cannot reach {url}: {getattr(error, 'reason', error)}"}
