"""Reading tag definitions: rules files (YAML) and the built-in templates merchants start from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from pydantic import ValidationError

from schemas.excerpt import describe_validation_error, excerpt
from schemas.tags import TagGroup, TagGroupSet
from services.runtime.user_yaml import UserYamlError, load_user_yaml

_PLACEHOLDER = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")


class RulesFileError(ValueError):
    """A rules file or template that cannot be read, with where and why."""


def parse_groups(text: str, source: str = "<rules>") -> list[TagGroup]:
    """Parse a rules document (`groups: [...]`). Errors name the source and the path inside it."""
    try:
        document = load_user_yaml(text)
    except UserYamlError as error:
        raise RulesFileError(f"{source}: {error}") from None
    if isinstance(document, dict):
        document = {key: value for key, value in document.items() if key != "template"}
    try:
        return TagGroupSet.model_validate(document).groups
    except ValidationError as error:
        raise RulesFileError(f"{source}: {describe_validation_error(error)}") from None


@dataclass(frozen=True)
class TemplateParameter:
    name: str
    default: Decimal
    description: str


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    description: str
    parameters: tuple[TemplateParameter, ...]
    text: str

    def render(self, values: dict[str, str] | None = None) -> list[TagGroup]:
        """The template's groups with its parameters set (unset ones take their defaults)."""
        return parse_groups(self.render_text(values), f"template {self.id}")

    def render_text(self, values: dict[str, str] | None = None) -> str:
        chosen = {parameter.name: parameter.default for parameter in self.parameters}
        for name, raw in (values or {}).items():
            if name not in chosen:
                known = ", ".join(sorted(chosen)) or "none"
                raise RulesFileError(f"template {self.id} has no parameter {name!r} (parameters: {known})")
            chosen[name] = _number(self.id, name, raw)
        return _PLACEHOLDER.sub(lambda match: str(chosen[match.group(1)]), self.text)


def templates() -> dict[str, Template]:
    """The built-in templates shipped with the package, by id."""
    found = {}
    folder = resources.files("services.runtime") / "templates"
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".yaml"):
            template = _template(entry.name, entry.read_text(encoding="utf-8"))
            found[template.id] = template
    return found


def _template(filename: str, text: str) -> Template:
    header: dict[str, Any] = (load_user_yaml(text) or {}).get("template") or {}
    declared = header.get("parameters") or {}
    parameters = tuple(
        TemplateParameter(name, _number(filename, name, str(spec["default"])), str(spec.get("description", "")))
        for name, spec in declared.items()
    )
    used = set(_PLACEHOLDER.findall(text))
    missing = used - set(declared)
    if missing:
        raise RulesFileError(f"template {filename} uses undeclared parameters {sorted(missing)}")
    return Template(
        id=str(header.get("id", filename.removesuffix(".yaml"))),
        name=str(header.get("name", filename)),
        description=str(header.get("description", "")),
        parameters=parameters,
        text=text,
    )


def _number(template: str, name: str, raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise RulesFileError(f"template {template}: parameter {name} must be a number, got {excerpt(raw)}") from None
    if not value.is_finite() or value < 0:
        raise RulesFileError(f"template {template}: parameter {name} must be a non-negative number, got {excerpt(raw)}")
    return value
