"""The replay command's input side: blank lines, the progress bar on a terminal only."""

from __future__ import annotations

import gc
import io
import sys
from collections.abc import Iterator

import pytest

from services.tagger.commands import _progress
from services.tagger.replay import Replay, replay_to
from tests.support.builders import engine, value_tiers


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_the_file_itself_off_a_terminal_and_draws_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [b'{"a": 1}\n'] * 20_001
    source = io.BytesIO(b"".join(lines))
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert _progress(source, "-") is source
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(_progress(io.BytesIO(b"".join(lines)), "-")) == lines
    assert "20,000 lines" in terminal.getvalue()
    assert "20,001 lines" in terminal.getvalue()


def test_blank_lines_are_counted_and_skipped_whatever_their_whitespace() -> None:
    rejected: list[int] = []
    replay = Replay(engine(value_tiers()), on_reject=lambda number, _: rejected.append(number))
    replay.feed([b"\n", b"  \t\r\n", "", " \u3000\n", b"\x0b\x0c\n", b"x\n", "  y "])
    assert replay.summary.lines == 7
    assert rejected == [6, 7]


def test_replay_to_pauses_the_cyclic_collector_and_restores_it() -> None:
    seen: list[bool] = []
    source = io.BytesIO(b"")

    def lines() -> Iterator[bytes]:
        seen.append(gc.isenabled())
        yield from source

    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            replay_to(lines(), engine(value_tiers()), io.BytesIO())
            assert gc.isenabled() is enabled
            assert gc.get_freeze_count() == 0  # moved to the oldest generation, not left frozen
        finally:
            gc.enable()
    assert seen == [False, False]


def test_replay_to_leaves_objects_the_process_froze_itself_frozen() -> None:
    gc.freeze()  # everything tracked so far: modules, functions, classes
    try:
        frozen = gc.get_freeze_count()
        replay_to(iter([]), engine(value_tiers()), io.BytesIO())
        assert gc.get_freeze_count() == frozen > 0
    finally:
        gc.unfreeze()
