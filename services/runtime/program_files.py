"""Playbooks and campaign files (YAML or JSON) read into their models (schemas/playbooks.py,
schemas/campaigns.py): by the notifier, `tagstream notifier --check` and `tagstream campaigns create -f`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from schemas.campaigns import Campaign
from schemas.excerpt import describe_validation_error, excerpt
from schemas.playbooks import PlaybookError, PlaybookSet, parse_playbooks
from services.runtime.user_yaml import UserYamlError, load_user_yaml


def load_playbooks(text: str, source: str = "<playbooks>") -> PlaybookSet:
    try:
        document = load_user_yaml(text)
    except UserYamlError as error:
        raise PlaybookError(f"{source}: {error}") from None
    return parse_playbooks(document, source)


def load_campaign(text: str, source: str = "<campaign>") -> Campaign:
    """A campaign file (YAML or JSON); PlaybookError naming the source and every problem."""
    try:
        document: Any = load_user_yaml(text)
    except UserYamlError as error:
        raise PlaybookError(f"{source}: {error}") from None
    if not isinstance(document, dict):
        raise PlaybookError(f"{source}: expected a mapping with id, audience and steps, got {excerpt(document)}")
    try:
        return Campaign.model_validate(document)
    except ValidationError as error:
        raise PlaybookError(f"{source}: {describe_validation_error(error)}") from None
