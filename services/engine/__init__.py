"""The pure tagging core shared by the tagger, ingest (validation) and replay: aggregates, conditions,
rule books and the engine. No I/O (tests/unit/test_dependencies.py holds it)."""

from services.engine.aggregates import Aggregates, apply, initial
from services.engine.errors import CommandRefused, DefinitionError
from services.engine.evaluator import Engine
from services.engine.fingerprint import DefinitionChange, definition_change
from services.engine.rulebook import RuleBook
from services.engine.state import CustomerState

__all__ = [
    "Aggregates",
    "CommandRefused",
    "CustomerState",
    "DefinitionChange",
    "DefinitionError",
    "Engine",
    "RuleBook",
    "apply",
    "definition_change",
    "initial",
]
