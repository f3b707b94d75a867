"""`tagstream import EVENTS.jsonl`: load history through POST /v1/events:import, resumably.

History goes to the import route, so the tag changes it causes carry source `import` and no playbook
sends anything for them (docs/ingest.md). Works against both modes alike (`tagstream ingest` or
`tagstream run`): it only speaks the HTTP API.

Resumable: after every acknowledged batch the state file (default: next to the input) records the
line reached, the counts so far, a hash of the input up to there, and the lines refused. A new run
resumes after that line, so no line is lost and none is counted twice; a process killed between an
acknowledgement and the state write resends at most that one batch, whose events the tagger ignores
as duplicates (same event_id). The input may not change before the resume point (the hash says so).

Paced on request (`--rate`): a shop loading years of history into a live node keeps the live
traffic's share of ingest and the tagger by capping events sent per second.

Outcomes per line: `accepted`; `duplicate` (an earlier accepted line of the file has its event_id:
not sent again, as a resent line would change nothing); `rejected` (with the server's reason).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

from services.runtime.files import open_private

IMPORT_PATH: Final = "/v1/events:import"
MAX_REASONS: Final = 50
"""Distinct rejection reasons kept (further ones are counted under one 'other reasons' line)."""
OTHER_REASONS: Final = "(other reasons)"
STATE_VERSION: Final = 1


class ImportFailed(Exception):
    """The import cannot go on (bad key, changed input, unusable server answer): nothing to retry."""


class Interrupted(Exception):
    """The server stayed unavailable: the state is saved, and running again resumes."""


@dataclass
class Response:
    status: int
    body: bytes
    retry_after_s: float = 1.0


Send = Callable[[bytes], Response]
"""POSTs one batch (a JSON array) to the import route; raises OSError when the server is unreachable."""


@dataclass
class Progress:
    """What the state file keeps: where the import is, and what happened so far."""

    line: int = 0
    offset: int = 0
    prefix_sha256: str = hashlib.sha256().hexdigest()
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    rejected_lines: list[int] = field(default_factory=list)
    done: bool = False

    def to_json(self, source: Path) -> bytes:
        document = {"version": STATE_VERSION, "input": str(source)} | {
            name: getattr(self, name) for name in self.__dataclass_fields__
        }
        return orjson.dumps(document, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, text: bytes, path: Path) -> Progress:
        try:
            document = orjson.loads(text)
            if document.get("version") != STATE_VERSION:
                raise ValueError(f"unknown state version {document.get('version')!r}")
            fields = {name: document[name] for name in cls.__dataclass_fields__}
        except (orjson.JSONDecodeError, KeyError, ValueError, AttributeError) as error:
            raise ImportFailed(f"{path}: not an import state file ({error}); --restart starts over") from None
        fields["reasons"] = Counter(fields["reasons"])
        return cls(**fields)

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        self.rejected_lines.append(line)
        key = reason[:200]
        if key not in self.reasons and len(self.reasons) >= MAX_REASONS:
            key = OTHER_REASONS
        self.reasons[key] += 1


@dataclass
class _Line:
    number: int
    text: bytes
    event_id: str


class Importer:
    def __init__(
        self,
        source: Path,
        state_path: Path,
        send: Send,
        *,
        batch: int = 500,
        batch_bytes: int = 1 << 20,
        attempts: int = 6,
        progress: IO[str] | None = None,
        rate: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.state_path = state_path
        self._send = send
        self._batch = batch
        self._batch_bytes = batch_bytes
        self._attempts = attempts
        self._out = progress
        self._sleep = sleep
        self._clock = clock
        self._rate = rate
        """Events sent per second at most (None: as fast as the server takes them)."""
        self._paced_since: float | None = None
        self._paced_sent = 0
        self._size = source.stat().st_size
        self._digest = hashlib.sha256()
        self._reported = 0
        self.progress = Progress()

    def run(self, *, restart: bool = False) -> Progress:
        """Import from where the last run stopped; raises Interrupted (resumable) or ImportFailed."""
        if self.state_path.exists() and not restart:
            self.progress = Progress.from_json(self.state_path.read_bytes(), self.state_path)
        if self.progress.done:
            return self.progress
        with self.source.open("rb") as lines:
            seen = self._resume(lines)
            batch: list[_Line] = []
            size = 0
            number = self.progress.line
            for text in iter(lines.readline, b""):
                number += 1
                self._digest.update(text)
                line = self._admit(number, text.rstrip(b"\r\n"), seen)
                if line is not None:
                    batch.append(line)
                    size += len(line.text) + 1
                if len(batch) >= self._batch or size >= self._batch_bytes:
                    self._deliver(batch, seen)
                    self._advance_to(number, lines.tell())
                    batch, size = [], 0
            self._deliver(batch, seen)
            self._advance_to(number, lines.tell())
        self.progress.done = True
        self._save()
        self._report(final=True)
        return self.progress

    def _resume(self, lines: IO[bytes]) -> set[str]:
        """Read up to the resume point: check it is the same input, and recall the accepted ids."""
        progress = self.progress
        digest = hashlib.sha256()
        refused = set(progress.rejected_lines)
        seen: set[str] = set()
        for number in range(1, progress.line + 1):
            text = lines.readline()
            digest.update(text)
            event_id = _event_id(text) if number not in refused else None
            if event_id is not None:
                seen.add(event_id)
        if lines.tell() != progress.offset or digest.hexdigest() != progress.prefix_sha256:
            raise ImportFailed(
                f"{self.source} changed since {self.state_path} was written (its first {progress.line} lines "
                "differ): --restart imports it from the start"
            )
        self._digest = digest
        return seen

    def _admit(self, number: int, text: bytes, seen: set[str]) -> _Line | None:
        if not text.strip():
            return None
        event_id = _event_id(text)
        if event_id is None:
            self.progress.reject(number, "(line): not a JSON object with an event_id")
            return None
        if event_id in seen:
            self.progress.duplicate += 1
            return None
        seen.add(event_id)
        return _Line(number, text, event_id)

    def _deliver(self, batch: list[_Line], seen: set[str]) -> None:
        """Send until the server took every line of the batch it does not refuse."""
        while batch:
            response = self._post(b"[" + b",".join(line.text for line in batch) + b"]", len(batch))
            if response.status == 202:
                self.progress.accepted += len(batch)
                break
            refused = _refusals(response, len(batch))
            for index, reason in sorted(refused.items()):
                self.progress.reject(batch[index].number, reason)
                seen.discard(batch[index].event_id)
            batch = [line for index, line in enumerate(batch) if index not in refused]

    def _pace(self, events: int) -> None:
        """Before sending `events` more: wait until the run's average stays within the rate."""
        if self._rate is None:
            return
        now = self._clock()
        if self._paced_since is None:
            self._paced_since = now
        due = self._paced_since + self._paced_sent / self._rate
        if due > now:
            self._sleep(due - now)
        self._paced_sent += events

    def _post(self, body: bytes, events: int) -> Response:
        self._pace(events)
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._send(body)
            except OSError as error:
                wait, why = min(2.0**attempt, 30.0), f"unreachable ({error})"
            else:
                if response.status not in (429, 502, 503, 504):
                    return response
                wait, why = min(response.retry_after_s, 30.0), f"answered {response.status}"
            if attempt < self._attempts:
                self._sleep(wait)
        raise Interrupted(f"the server {why} {self._attempts} times; run the import again to resume")

    def _advance_to(self, line: int, offset: int) -> None:
        """Every line up to `line` is acknowledged or refused: record it, durably."""
        self.progress.line = line
        self.progress.offset = offset
        self.progress.prefix_sha256 = self._digest.hexdigest()
        self._save()
        self._report()

    def _save(self) -> None:
        partial = self.state_path.with_name(self.state_path.name + ".partial")
        with open_private(partial, truncate=True) as state:  # its reasons quote the shop's own lines
            state.write(self.progress.to_json(self.source))
        os.replace(partial, self.state_path)  # atomic: a crash leaves the old state or the new one

    def _report(self, *, final: bool = False) -> None:
        if self._out is None:
            return
        p = self.progress
        share = 100 * p.offset // self._size if self._size else 100
        text = f"import: line {p.line:,} ({share}%)  accepted {p.accepted:,}  duplicate {p.duplicate:,}  "
        text += f"rejected {p.rejected:,}"
        if self._out.isatty():  # one line, rewritten in place
            self._out.write("\r" + text + ("\n" if final else ""))
        elif final or share // 10 > self._reported // 10:  # a log: a line per tenth of the input
            self._out.write(text + "\n")
            self._reported = share
        self._out.flush()


def _event_id(text: bytes) -> str | None:
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    event_id = document.get("event_id") if isinstance(document, dict) else None
    return event_id if isinstance(event_id, str) and event_id else None


def _refusals(response: Response, size: int) -> dict[int, str]:
    """The batch positions the server refused (a 422 names each), with why; anything else is fatal."""
    excerpt = response.body[:300].decode("utf-8", "replace")
    if response.status == 413:
        raise ImportFailed(f"the server refused a batch as too large (413: {excerpt}); use a smaller --batch")
    if response.status != 422:
        raise ImportFailed(f"the server answered {response.status}: {excerpt}")
    try:
        detail: list[dict[str, Any]] = orjson.loads(response.body)["detail"]
        refused = {int(item["index"]): f"{item['field']}: {item['reason']}" for item in detail}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ImportFailed(f"the server refused the batch as a whole: {excerpt}") from None
    if not refused or any(not 0 <= index < size for index in refused):
        raise ImportFailed(f"the server refused the batch as a whole: {excerpt}")
    return refused


def http_sender(url: str, api_key: str, timeout_s: float = 60.0) -> Send:
    """POSTs to `url` + the import route with the API key (standard library only: one request at a time)."""
    target = url.rstrip("/") + IMPORT_PATH
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}

    def send(body: bytes) -> Response:
        request = urllib.request.Request(target, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                return Response(answer.status, answer.read())
        except urllib.error.HTTPError as error:
            retry = error.headers.get("Retry-After", "1")
            return Response(error.code, error.read(), float(retry) if retry.isdigit() else 1.0)

    return send


def default_state_path(source: Path) -> Path:
    return source.with_name(source.name + ".import-state.json")


def summary(progress: Progress) -> str:
    lines = [f"accepted {progress.accepted}, duplicate {progress.duplicate}, rejected {progress.rejected}"]
    lines += [f"  rejected {count}x  {reason}" for reason, count in progress.reasons.most_common()]
    return "\n".join(lines)


def main(
    source: Path,
    *,
    url: str,
    api_key: str,
    state: Path | None,
    restart: bool,
    batch: int,
    rate: float | None = None,
) -> int:
    """The command: 0 imported, 1 interrupted (run again to resume), 2 unusable."""
    state_path = state or default_state_path(source)
    try:
        send = http_sender(url, api_key)
        importer = Importer(source, state_path, send, batch=batch, progress=sys.stderr, rate=rate)
        progress = importer.run(restart=restart)
    except Interrupted as error:
        print(f"tagstream import: interrupted: {error} (state: {state_path})", file=sys.stderr)
        return 1
    except (ImportFailed, OSError) as error:
        print(f"tagstream import: {error}", file=sys.stderr)
        return 2
    print(summary(progress))
    return 0
