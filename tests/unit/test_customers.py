"""Customer profiles: validation and keeping personal data out of logs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.runtime.customers import Profile


def test_a_profile_never_shows_personal_data_in_its_repr() -> None:
    profile = Profile(phone="+86 138 0000 0000", email="li@example.com")
    assert "138" not in repr(profile)
    assert "example" not in str(profile)
    assert "phone" in repr(profile)


def test_an_unknown_time_zone_is_rejected_with_the_value() -> None:
    with pytest.raises(ValidationError, match="Mars/Olympus"):
        Profile(timezone="Mars/Olympus")
