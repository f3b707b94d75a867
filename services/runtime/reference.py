"""The configuration reference (docs/configuration.md), rendered from the settings models themselves.

    python -m services.runtime.reference > docs/configuration.md

A test fails when the document and the settings drift apart.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from services.runtime.settings import Settings

_SECTIONS = {
    "shop": "The shop: its time zone, currency and clock tolerance (every service, `replay` and embedded mode).",
    "kafka": "Kafka connection and the topics tagstream creates (every service).",
    "redis": "Redis: the read model, consent and profiles, the notifier's scheduler (every service but the tagger "
    "without its projector).",
    "topics": "Topic names (docs/asyncapi.yaml describes each); rename them for a second shop on the same cluster.",
    "tagger": "`tagstream tagger`.",
    "ingest": "`tagstream ingest` and `tagstream run`.",
    "notifier": "`tagstream notifier` (and the notifier inside `tagstream run`).",
}


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Every setting is an environment variable: `TAGSTREAM_<SECTION>__<NAME>` (a double underscore between",
        "section and name). Lists and objects are JSON, e.g.",
        '`TAGSTREAM_INGEST__API_KEYS=\'[{"key": "…", "role": "admin", "name": "ops"}]\'`. Invalid values stop the',
        "service at start with the variable named. Generated from `services/runtime/settings.py` by",
        "`python -m services.runtime.reference`; secrets (marked) never appear in logs.",
        "",
    ]
    for name, field in Settings.model_fields.items():
        section = field.annotation
        assert isinstance(section, type)
        assert issubclass(section, BaseModel)
        lines += [
            f"## `{name}`",
            "",
            _SECTIONS.get(name, ""),
            "",
            "| variable | default | meaning |",
            "| --- | --- | --- |",
        ]
        for key, inner in section.model_fields.items():
            variable = f"TAGSTREAM_{name.upper()}__{key.upper()}"
            lines.append(f"| `{variable}` | {_default(inner)} | {_meaning(inner)} |")
        lines.append("")
    return "\n".join(lines)


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None:
        return "—"
    if isinstance(value, tuple | list):
        return "`" + ", ".join(str(item) for item in value) + "`" if value else "(none)"
    return f"`{value}`"


def _meaning(field: FieldInfo) -> str:
    text = field.description or ""
    annotation = str(field.annotation)
    if "SecretStr" in annotation:
        text = (text + " (secret)").strip()
    if "Literal[" in annotation:
        choices = annotation[annotation.index("Literal[") + 8 : annotation.index("]", annotation.index("Literal["))]
        text = (text + f" One of {choices.replace(chr(39), '')}.").strip()
    return text.replace("|", "\\|")


if __name__ == "__main__":
    sys.stdout.write(render())
