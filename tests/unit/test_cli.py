"""The `tagstream` command line: what each spelling runs."""

from __future__ import annotations

import pytest

from services.cli import build_parser
from services.embedded.commands import run_embedded


@pytest.mark.parametrize("spelling", [["run"], ["run", "--embedded"]])
def test_run_is_the_one_process_mode_with_or_without_the_old_embedded_flag(spelling: list[str]) -> None:
    args = build_parser().parse_args([*spelling, "--data-dir", "shop-data"])
    assert args.run is run_embedded
    assert args.data_dir == "shop-data"


def test_run_refuses_an_unknown_mode_flag_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "--kafka"])
    assert exit_info.value.code == 2
    assert "--kafka" in capsys.readouterr().err
