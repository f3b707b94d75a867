"""State directories: created with their missing parents, private to the owner."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.runtime.files import private_directory


def test_missing_parents_are_created_owner_only_and_an_existing_parent_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    target = tmp_path / "srv" / "tagstream" / "data"
    assert private_directory(target) == target
    for directory in (tmp_path / "srv", tmp_path / "srv" / "tagstream", target):
        assert directory.stat().st_mode & 0o777 == 0o700
    assert tmp_path.stat().st_mode & 0o777 == 0o755


def test_an_existing_directory_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o750)
    (tmp_path / "data").chmod(0o750)
    private_directory(tmp_path / "data")
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o750


def test_a_file_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory", encoding="utf-8")
    with pytest.raises(NotADirectoryError, match="data exists and is not a directory"):
        private_directory(tmp_path / "data")
