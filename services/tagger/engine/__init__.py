"""The pure tagging core: aggregates, conditions, rule books and the engine. No I/O."""

from services.tagger.engine.aggregates import Aggregates, apply, initial
from services.tagger.engine.clock import Clock, ManualClock, SystemClock
from services.tagger.engine.errors import CommandRefused, DefinitionError
from services.tagger.engine.evaluator import Engine
from services.tagger.engine.fingerprint import DefinitionChange, definition_change
from services.tagger.engine.rulebook import RuleBook
from services.tagger.engine.state import CustomerState

__all__ = [
    "Aggregates",
    "Clock",
    "CommandRefused",
    "CustomerState",
    "DefinitionChange",
    "DefinitionError",
    "Engine",
    "ManualClock",
    "RuleBook",
    "SystemClock",
    "apply",
    "definition_change",
    "initial",
]
