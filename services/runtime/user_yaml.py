"""The one YAML reader for files people write (rules, playbooks): plain data, bounded, no aliases.

Aliases and anchors are refused outright rather than expanded with a budget: a 300-byte "billion
laughs" document expands to millions of nodes, and no rules or playbooks file needs them. Nesting
is bounded too, so a deep document is refused before the composer (which recurses) or pydantic
runs out of stack. libyaml parses (it stops at 1000 open brackets by itself); the composer is
PyYAML's Python one, where the hooks are. Without libyaml the pure-Python scanner is used, guarded
against its quadratic look-ahead over open brackets.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import Node
from yaml.resolver import Resolver

from schemas.limits import MAX_USER_FILE_BYTES, MAX_YAML_DEPTH


class UserYamlError(ValueError):
    """A document that is not plain YAML data within the bounds; the message says where."""


def load_user_yaml(text: str) -> Any:
    """The document as plain data (dicts, lists, scalars). Raises UserYamlError."""
    if len(text) > MAX_USER_FILE_BYTES:
        raise UserYamlError(f"the file has {len(text)} characters, over the limit of {MAX_USER_FILE_BYTES}")
    try:
        loader = _Loader(text)  # the reader refuses unprintable characters here already
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise UserYamlError(f"not valid YAML: {error}") from None


try:
    from yaml._yaml import CParser as _Parser
except ImportError:  # PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)

        def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # PyYAML's name
            # the scanner looks ahead over every open `[` / `{` (quadratic in their number), long
            # before the composer sees the depth: a file of brackets would hang it
            if self.flow_level >= MAX_YAML_DEPTH:
                raise UserYamlError(f"the document nests deeper than {MAX_YAML_DEPTH} levels{_at(self.get_mark())}")
            super().fetch_flow_collection_start(TokenClass)


class _Loader(Composer, _Parser, SafeConstructor, Resolver):
    """yaml.CSafeLoader's parts, with PyYAML's composer first so `compose_node` below is used."""

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: Any = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise UserYamlError(f"YAML anchors and aliases (&name, *name) are not allowed{_at(event.start_mark)}")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise UserYamlError(f"the document nests deeper than {MAX_YAML_DEPTH} levels{_at(event.start_mark)}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _at(mark: Any) -> str:  # yaml.Mark, or libyaml's
    return "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
