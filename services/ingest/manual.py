"""Manual tags: the tagger's own refusal rules applied before publishing, and the CSV import. Pure.

Whether a manual command is allowed is decided by running it through the engine on a scratch
customer, so the API refuses exactly what the tagger would dead-letter.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from schemas.common import ExternalId
from schemas.excerpt import excerpt, problems
from schemas.tags import TagCommand, TagGroup
from services.engine import CommandRefused, Engine, RuleBook

TAG_SEPARATORS = (";", "；")
"""Between several tags in one CSV cell (the ASCII or the full-width semicolon)."""
NAME_SEPARATOR = "-"
"""Between the group name and the tag name: `组名-标签名`."""
_CUSTOMER_ID: TypeAdapter[str] = TypeAdapter(ExternalId)
MAX_CELL = 4096
"""Characters in one cell: a customer id is at most 128, a cell of tags far below this."""
MAX_REPORTED_ERRORS = 100
"""Bad rows listed in a report; the rest are counted. A file of bad rows then answers in a few KB."""


class ManualTagging:
    """The manual-tagging rules of one set of definitions."""

    def __init__(self, groups: Mapping[str, TagGroup], horizon_days: int) -> None:
        self._engine = Engine(RuleBook.compile(groups.values(), horizon_days=horizon_days))
        self._groups = groups
        self._by_name = _names(groups)
        self._refusals: dict[tuple[str, str, str], str | None] = {}

    def refusal(self, command: TagCommand) -> str | None:
        """Why the tagger would refuse this command, or None when it would apply it."""
        if command.expires_at is not None:
            return self._run(command)
        # without an expiry the answer depends on the group and tag only: one engine run per tag
        key = (command.group_id, command.tag_id, command.action)
        if key not in self._refusals:
            self._refusals[key] = self._run(command)
        return self._refusals[key]

    def _run(self, command: TagCommand) -> str | None:
        state = self._engine.new_state(command.customer_id)
        try:
            self._engine.on_command(state, command, command.occurred_at)
        except CommandRefused as refused:
            return str(refused)
        return None

    def resolve(self, written: str) -> tuple[str, str] | str:
        """(group id, tag id) of `组名-标签名`, or why it names no tag."""
        found = self._by_name.get(written.strip())
        if found is None:
            return f"{excerpt(written.strip())} names no tag: write 组名-标签名 (group name, '-', tag name)"
        if len(found) > 1:
            ids = ", ".join(f"{group}/{tag}" for group, tag in found)
            return f"{excerpt(written.strip())} is ambiguous: it could be {ids}"
        return found[0]


def command_id(source: Literal["manual", "import"], customer_id: str, group_id: str, tag_id: str, action: str) -> str:
    """Deterministic: the same row imported twice yields the same command (idempotent re-runs)."""
    digest = hashlib.sha256("\0".join((source, customer_id, group_id, tag_id, action)).encode()).hexdigest()
    return f"{source}-{digest[:40]}"


@dataclass(frozen=True)
class RowError:
    row: int
    """The line number in the file (the header is line 1)."""
    customer_id: str | None
    reason: str


@dataclass
class ImportPlan:
    rows: int = 0
    commands: list[TagCommand] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    """The first MAX_REPORTED_ERRORS bad rows (one error each)."""
    rows_failed: int = 0

    @property
    def rows_ok(self) -> int:
        return self.rows - self.rows_failed

    @property
    def errors_omitted(self) -> int:
        return self.rows_failed - len(self.errors)

    def reject(self, error: RowError) -> None:
        self.rows_failed += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)


class ImportFileError(ValueError):
    """The file as a whole cannot be read (not UTF-8, no header, a malformed or oversized cell)."""


def plan_import(data: bytes, tagging: ManualTagging, *, actor: str, now: datetime) -> ImportPlan:
    """Read `customer_id,tags` rows into add commands; a row with any bad tag is rejected whole."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImportFileError(f"the file is not UTF-8 (byte {error.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [cell.strip().lower() for cell in next(reader, [])]
        if header[:2] != ["customer_id", "tags"]:
            raise ImportFileError(
                f"the first line must be the header 'customer_id,tags', got {excerpt(','.join(header))}"
            )
        plan = ImportPlan()
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            plan.rows += 1
            commands, reason = _row(cells, tagging, actor, now)
            if reason is not None:
                plan.reject(RowError(line, cells[0].strip()[:128] if cells else None, reason))
            else:
                plan.commands.extend(commands)
    except csv.Error as error:
        # the reader cannot resync after a malformed line (a cell over csv's own 128 KiB field limit,
        # a NUL byte): the file is refused whole, naming where it broke
        raise ImportFileError(f"line {reader.line_num}: not readable as CSV: {error}") from None
    return plan


def _row(cells: list[str], tagging: ManualTagging, actor: str, now: datetime) -> tuple[list[TagCommand], str | None]:
    if len(cells) != 2:
        return [], f"expected 2 columns (customer_id,tags), got {len(cells)}; quote a cell that holds a comma"
    oversized = next((cell for cell in cells if len(cell) > MAX_CELL), None)
    if oversized is not None:
        return [], f"a cell of {len(oversized)} characters is over the limit of {MAX_CELL}"
    customer_id, written = cells[0].strip(), cells[1]
    try:
        _CUSTOMER_ID.validate_python(customer_id)
    except ValidationError as error:
        problem = problems(error)[0]
        return [], f"customer_id: {problem['msg']} (got {problem['input']})"
    names = [name for name in _split(written) if name.strip()]
    if not names:
        return [], "tags: no tag given"
    commands = []
    for name in names:
        resolved = tagging.resolve(name)
        if isinstance(resolved, str):
            return [], f"tags: {resolved}"
        group_id, tag_id = resolved
        command = TagCommand(
            command_id=command_id("import", customer_id, group_id, tag_id, "add"),
            customer_id=customer_id,
            group_id=group_id,
            tag_id=tag_id,
            action="add",
            actor=actor,
            source="import",
            occurred_at=now,
        )
        refusal = tagging.refusal(command)
        if refusal is not None:
            return [], f"tags: {excerpt(name.strip())}: {refusal}"
        commands.append(command)
    return commands, None


def _split(cell: str) -> list[str]:
    for separator in TAG_SEPARATORS[1:]:
        cell = cell.replace(separator, TAG_SEPARATORS[0])
    return cell.split(TAG_SEPARATORS[0])


def _names(groups: Mapping[str, TagGroup]) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for group in groups.values():
        for tag in group.tags:
            found.setdefault(f"{group.name}{NAME_SEPARATOR}{tag.name}", []).append((group.id, tag.id))
    return found
