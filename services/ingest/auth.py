"""API keys with hierarchical roles (admin ⊇ operator ⊇ viewer), compared in constant time."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from services.runtime.settings import ApiKey, IngestSettings

Role = Literal["viewer", "operator", "admin"]
_RANK: dict[str, int] = {"viewer": 0, "operator": 1, "admin": 2}


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


class KeyFileError(ValueError):
    """The mounted key file cannot be read, with the path and why (never the keys)."""


class ApiKeys:
    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = [(key.key.get_secret_value().encode(), Caller(key.name, key.role)) for key in keys]

    def __len__(self) -> int:
        return len(self._keys)

    def identify(self, presented: str) -> Caller | None:
        """The caller a key belongs to. Every key is compared, so timing does not reveal which matched."""
        candidate = presented.encode()
        found: Caller | None = None
        for key, caller in self._keys:
            if hmac.compare_digest(key, candidate):
                found = caller
        return found


def load_keys(settings: IngestSettings) -> ApiKeys:
    """Keys from the settings plus the mounted file (a Kubernetes Secret), if one is configured."""
    keys = list(settings.api_keys)
    if settings.api_keys_file is not None:
        keys.extend(_read_key_file(settings.api_keys_file))
    return ApiKeys(keys)


def _read_key_file(path: Path) -> list[ApiKey]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return TypeAdapter(list[ApiKey]).validate_python(document)
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read the API key file: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise KeyFileError(f"{path}: not JSON (line {error.lineno}): expected [{{key, role, name}}, ...]") from None
    except ValidationError as error:
        problems = "; ".join(
            ".".join(str(part) for part in problem["loc"]) + ": " + problem["msg"] for problem in error.errors()
        )
        raise KeyFileError(f"{path}: {problems}") from None
