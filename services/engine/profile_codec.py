"""The stored form of a customer's profile and sources: the state's optional trailing section
(codec.py), [attributes, channels, first touch, last touch] with attributes a flat
[name, value, at_us, event_id, ...] list (value null: cleared) and a touch
[at_us, event_id, channel, sub_channel, code_id] or null."""

from __future__ import annotations

from typing import Any

from services.engine.profile import ProfileState, Touch


def pack_profile(profile: ProfileState) -> list[Any]:
    attributes = profile.attributes
    return [
        [item for name in sorted(attributes) for item in (name, *attributes[name])],
        sorted(profile.channels),
        _pack_touch(profile.first),
        _pack_touch(profile.last),
    ]


def unpack_profile(packed: list[Any]) -> ProfileState:
    flat, channels, first, last = packed
    profile = ProfileState()
    for index in range(0, len(flat), 4):
        profile.attributes[flat[index]] = (flat[index + 1], flat[index + 2], flat[index + 3])
    profile.channels = set(channels)
    profile.first = _unpack_touch(first)
    profile.last = _unpack_touch(last)
    return profile


def _pack_touch(touch: Touch | None) -> list[Any] | None:
    if touch is None:
        return None
    return [touch.at_us, touch.event_id, touch.channel, touch.sub_channel, touch.code_id]


def _unpack_touch(packed: list[Any] | None) -> Touch | None:
    if packed is None:
        return None
    at_us, event_id, channel, sub_channel, code_id = packed
    return Touch(at_us, event_id, channel, sub_channel, code_id)
