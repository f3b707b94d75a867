"""The one settings loader: typed, frozen, from TAGSTREAM_* environment variables.

Nested sections use a double underscore: TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092,
TAGSTREAM_TAGGER__STORE=memory. Invalid values fail at start-up with the variable named
(`load_settings`), never with the value: a value may be a secret.

Each section is a model of its own in services/runtime/sections/; import them from here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from schemas.topics import TopicNames
from services.runtime.sections.common import duration
from services.runtime.sections.ingest import ApiKey, IngestSettings
from services.runtime.sections.kafka import KafkaSettings
from services.runtime.sections.notifier import NotifierSettings
from services.runtime.sections.redis import RedisSettings
from services.runtime.sections.shop import ShopSettings
from services.runtime.sections.sync import SyncSettings
from services.runtime.sections.tagger import TaggerSettings

__all__ = [
    "ApiKey",
    "IngestSettings",
    "KafkaSettings",
    "NotifierSettings",
    "RedisSettings",
    "Settings",
    "SettingsError",
    "ShopSettings",
    "SyncSettings",
    "TaggerSettings",
    "duration",
    "load_settings",
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAGSTREAM_", env_nested_delimiter="__", frozen=True, extra="forbid")

    shop: ShopSettings = ShopSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    topics: TopicNames = TopicNames()
    tagger: TaggerSettings = TaggerSettings()
    notifier: NotifierSettings = NotifierSettings()
    ingest: IngestSettings = IngestSettings()
    sync: SyncSettings = SyncSettings()

    @property
    def history_age(self) -> timedelta:
        """tagger.history_age, or the notifier's max_trigger_age: a change older than that sends nothing
        anyway, so an event that old is history whichever service looks at it."""
        return duration(self.tagger.history_age or self.notifier.max_trigger_age)


class SettingsError(ValueError):
    """Invalid settings: each problem with its TAGSTREAM_* variable and what is wrong, never the value."""


def load_settings() -> Settings:
    """The settings from the environment; raises SettingsError.

    pydantic's own message quotes every rejected input (`input_value=...`), which for an API key that
    is too short, or for a whole section whose model check failed, is the secret itself: this one
    names the variable and the rule only."""
    try:
        return Settings()
    except ValidationError as error:
        problems = [_problem(problem) for problem in error.errors(include_input=False)]
        raise SettingsError("invalid settings:\n" + "\n".join(problems)) from None
    except _SourceError as error:  # a variable that should hold JSON does not: its name, not its text
        found = re.search(r'field "(\w+)"', str(error))
        section = found.group(1).upper() if found else "?"
        raise SettingsError(
            f"invalid settings:\n  TAGSTREAM_{section} or one of its TAGSTREAM_{section}__* variables: not valid JSON"
        ) from None


def _problem(problem: Any) -> str:
    loc = [str(part) for part in problem["loc"]]
    fields = [part for part in loc if not part.isdigit()]
    variable = "TAGSTREAM_" + "__".join(fields[:2]).upper()
    inner = ".".join(f"[{part}]" if part.isdigit() else part for part in loc[2:] if part)
    where = variable + (f" {inner}" if inner else "")
    return f"  {where}: {problem['msg'].removeprefix('Value error, ')}"
