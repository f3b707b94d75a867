"""docs/configuration.md is the settings models rendered: it names every variable, and never drifts."""

from __future__ import annotations

from pathlib import Path

from services.runtime.reference import render
from services.runtime.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_reference_matches_the_settings() -> None:
    regenerate = "python -m services.runtime.reference > docs/configuration.md"
    assert DOC.read_text(encoding="utf-8") == render(), f"the reference drifted; run: {regenerate}"


def test_every_setting_is_in_the_reference_with_its_variable_name() -> None:
    text = render()
    for section, field in Settings.model_fields.items():
        assert field.annotation is not None
        for name in field.annotation.model_fields:  # type: ignore[union-attr]
            assert f"`TAGSTREAM_{section.upper()}__{name.upper()}`" in text
