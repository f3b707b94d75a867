"""Write the JSON Schema of every contract to schemas/json/ (`python -m schemas.generate`).

Consumers in other languages validate against these files; a test fails when they drift from the
models, so regenerate and commit them with any model change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from schemas.campaigns import Campaign
from schemas.events import CustomerEvent
from schemas.notifications import NotificationOutcome
from schemas.queries import TaggerAnswer, TaggerQuery
from schemas.tags import TagChanged, TagCommand, TagGroup, TagGroupSet
from schemas.topics import DeadLetter, SyncPartition, Tick

SCHEMA_DIR = Path(__file__).parent / "json"


def documents() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every contract."""
    found: dict[str, dict[str, Any]] = {
        "customer-event.json": TypeAdapter(CustomerEvent).json_schema(),
        "tag-group.json": TagGroup.model_json_schema(),
        "tag-group-set.json": TagGroupSet.model_json_schema(),
        "tag-changed.json": TagChanged.model_json_schema(mode="serialization"),
        "tag-command.json": TagCommand.model_json_schema(),
        "campaign.json": Campaign.model_json_schema(),
        "notification-outcome.json": NotificationOutcome.model_json_schema(mode="serialization"),
        "dead-letter.json": DeadLetter.model_json_schema(mode="serialization"),
        "tagger-tick.json": TypeAdapter(Annotated[Tick | SyncPartition, Field(discriminator="kind")]).json_schema(),
        "tagger-query.json": TaggerQuery.model_json_schema(),
        "tagger-answer.json": TaggerAnswer.model_json_schema(mode="serialization"),
    }
    for name, document in found.items():
        document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        document["$id"] = f"https://tagstream.dev/schemas/{name}"
    return found


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, document in documents().items():
        (SCHEMA_DIR / name).write_text(render(document), encoding="utf-8")
        print(f"wrote {SCHEMA_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
