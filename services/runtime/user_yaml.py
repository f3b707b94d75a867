"""The one YAML reader for files people write (rules, playbooks): plain data, bounded, no aliases.

Aliases and anchors are refused outright rather than expanded with a budget: a 300-byte "billion
laughs" document expands to millions of nodes, and no rules or playbooks file needs them. Nesting
is bounded too, so a deep document is refused before the composer (which recurses) or pydantic
runs out of stack. The pure-Python loader is used because these hooks do not exist in libyaml's;
user files are small, and the size is bounded before parsing.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import Node

from schemas.limits import MAX_YAML_DEPTH

MAX_USER_FILE_BYTES = 4 * 1024 * 1024
"""Larger rules or playbooks files are refused unread (a ConfigMap holds at most 1 MiB)."""


class UserYamlError(ValueError):
    """A document that is not plain YAML data within the bounds; the message says where."""


def load_user_yaml(text: str) -> Any:
    """The document as plain data (dicts, lists, scalars). Raises UserYamlError."""
    if len(text) > MAX_USER_FILE_BYTES:
        raise UserYamlError(f"the file has {len(text)} characters, over the limit of {MAX_USER_FILE_BYTES}")
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise UserYamlError(f"not valid YAML: {error}") from None
    finally:
        loader.dispose()


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML ships no annotations
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise UserYamlError(f"YAML anchors and aliases (&name, *name) are not allowed{_where(event)}")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise UserYamlError(f"the document nests deeper than {MAX_YAML_DEPTH} levels{_where(event)}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _where(event: yaml.Event) -> str:
    mark = event.start_mark
    return "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
