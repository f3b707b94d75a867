"""Read the Dockerfile's instructions and the build context .dockerignore admits (helpers for its tests)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [argument for name, argument in self.instructions if name == keyword]


def stages(dockerfile: Path) -> list[Stage]:
    """The build stages in order, each with its (INSTRUCTION, arguments) after continuation lines are joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    found: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, argument = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = argument.split()
            found.append(Stage(base=words[0], name=words[2] if len(words) > 2 else None))
        elif found:
            found[-1].instructions.append((keyword, argument.strip()))
    return found


def copy_sources(argument: str) -> tuple[list[str], str | None]:
    """(sources, --from stage) of a COPY instruction."""
    words = shlex.split(argument)
    origin = next((word.split("=", 1)[1] for word in words if word.startswith("--from=")), None)
    paths = [word for word in words if not word.startswith("--")]
    return paths[:-1], origin


def build_context(root: Path) -> set[str]:
    """Files (relative paths) `docker build` sends from root, honouring root/.dockerignore."""
    patterns = _patterns(root / ".dockerignore")
    included: set[str] = set()

    def walk(directory: Path) -> None:
        for entry in sorted(directory.iterdir()):
            relative = entry.relative_to(root).as_posix()
            if entry.is_dir():
                if _excluded(relative, patterns) and not any(
                    negated and pattern.startswith(relative + "/") for negated, pattern in patterns
                ):
                    continue
                walk(entry)
            elif not _excluded(relative, patterns):
                included.add(relative)

    walk(root)
    return included


def _patterns(dockerignore: Path) -> list[tuple[bool, str]]:
    patterns = []
    for line in dockerignore.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def _excluded(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for negated, pattern in patterns:
        expression = _regex(pattern)
        if any(expression.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def _regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out)
