"""docs/asyncapi.yaml is a valid AsyncAPI 3.0 document describing every topic, its key and its payload."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from schemas.generate import SCHEMA_DIR
from schemas.topics import TopicNames
from tests.support.tools import REPO_ROOT, tool

ASYNCAPI = REPO_ROOT / "docs" / "asyncapi.yaml"
# Payload schemas referenced before their contract exists: none now; every reference must exist.
PENDING_SCHEMAS: set[Path] = set()


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    return loaded


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def resolve(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_it_is_valid_against_the_official_asyncapi_3_schema(document):
    assert document["asyncapi"] == "3.0.0"
    assert document["servers"]["kafka"]["protocol"] == "kafka"
    validator = jsonschema.Draft7Validator(json.loads(tool("asyncapi-spec.sh").read_text(encoding="utf-8")))
    assert [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(document)] == []

    broken = copy.deepcopy(document)
    broken["channels"]["events"]["messages"]["customerEvent"] = {"payload": {"type": "object"}, "bindings": []}
    assert not validator.is_valid(broken)


def test_every_topic_tagstream_uses_is_a_channel(document):
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == set(TopicNames().model_dump().values())
    for channel in document["channels"].values():
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]
        assert channel["description"]


def test_every_message_names_its_key_and_a_json_schema_payload(document):
    for name, message in document["components"]["messages"].items():
        assert "key" in message["bindings"]["kafka"], name
        payload = message["payload"]
        refs = [choice["$ref"] for choice in payload["oneOf"]] if "oneOf" in payload else [payload["$ref"]]
        assert all(ref.startswith("../schemas/json/") for ref in refs), name


def test_every_reference_resolves_and_every_schema_file_exists_but_the_notifiers(document):
    external = set()
    for reference in references(document):
        if reference.startswith("#/"):
            resolve(document, reference)
        else:
            external.add((ASYNCAPI.parent / reference).resolve())
    missing = {path for path in external if not path.is_file()}
    assert missing == {path for path in PENDING_SCHEMAS if not path.is_file()}
    generated = {path.resolve() for path in Path(SCHEMA_DIR).glob("*.json")}
    files_and_http = {(SCHEMA_DIR / name).resolve() for name in ("tag-group-set.json", "campaign.json")}
    assert generated - files_and_http <= external  # every other contract is on a topic
    assert external - generated <= PENDING_SCHEMAS


def test_every_operation_refers_to_a_channel(document):
    for name, operation in document["operations"].items():
        assert operation["action"] in {"send", "receive"}, name
        assert resolve(document, operation["channel"]["$ref"]) in document["channels"].values()
