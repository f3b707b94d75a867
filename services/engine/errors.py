"""What the engine refuses, with messages an operator can act on."""

from __future__ import annotations


class DefinitionError(ValueError):
    """Tag definitions that cannot be compiled: every problem found, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid tag definitions:\n  - " + "\n  - ".join(problems))


class CommandRefused(ValueError):
    """A manual tag command that the group's settings do not allow."""
