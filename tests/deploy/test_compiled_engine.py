"""The compiled engine is the same engine. The wheel is built the way the container image builds it
(`TAGSTREAM_USE_MYPYC=1 pip wheel` of the Docker build context): it carries a C extension for every
module setup.py lists, the unit tests pass against it, and `tagstream replay` writes byte-identical
tags and changes, incremental and `--full`, to the pure-Python engine from the same wheel's sources.

The first run builds the wheel (about a minute on 2 cores: mypyc + gcc); it is cached under
.run/compiled-engine/ by the digest of the build context, so an edit always rebuilds.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.workload import rules, write_events
from services.runtime.engine_build import engine_build
from tests.deploy.dockerfile import build_context
from tests.support.tools import REPO_ROOT

BUILD_TIMEOUT_S = 900


def _compiled_modules() -> list[str]:
    """setup.py's COMPILED_MODULES, read without running setup.py."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMPILED_MODULES" for target in node.targets
        ):
            paths: list[str] = ast.literal_eval(node.value)
            return [path.removesuffix(".py").replace("/", ".") for path in paths]
    raise AssertionError("setup.py has no COMPILED_MODULES")


NOT_COMPILED = {
    # used once per definition change or refused event or command, never per event: nothing to gain
    "services.engine.admission",
    "services.engine.errors",
    "services.engine.fingerprint",
}


def test_every_engine_module_the_compiled_ones_import_is_compiled_too():
    # one left out would run as Python under compiled callers: every call into it a generic one
    compiled = set(_compiled_modules())
    imported = set()
    for module in compiled:
        tree = ast.parse((REPO_ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
        imported |= {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("services.engine.")
        }
    missing = imported - compiled - NOT_COMPILED
    assert not missing, f"imported by compiled engine modules but not compiled (add them to setup.py): {missing}"


@pytest.fixture(scope="module")
def compiled_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled wheel, installed (without dependencies) into a folder put first on PYTHONPATH."""
    files = sorted(build_context(REPO_ROOT))
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (REPO_ROOT / name).read_bytes() + b"\0")
    site = REPO_ROOT / ".run" / "compiled-engine" / digest.hexdigest()[:16]
    if (site / "services").is_dir():
        return site
    work = tmp_path_factory.mktemp("compiled")
    for name in files:
        (work / "context" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, work / "context" / name)
    _pip("wheel", "--no-deps", "--wheel-dir", work / "wheels", work / "context")
    [wheel] = (work / "wheels").glob("tagstream-*.whl")
    _pip("install", "--no-deps", "--no-compile", "--target", work / "site", wheel)
    site.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(site, ignore_errors=True)
    shutil.move(work / "site", site)
    return site


def _pip(*args: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env={**os.environ, "TAGSTREAM_USE_MYPYC": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def pure_site(compiled_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same wheel's Python sources without its extensions: the pure-Python engine."""
    pure = tmp_path_factory.mktemp("pure") / "site"
    shutil.copytree(compiled_site, pure, ignore=shutil.ignore_patterns("*.so"))
    return pure


def test_the_wheel_compiles_every_module_setup_lists(compiled_site: Path, pure_site: Path):
    build = engine_build(compiled_site)
    assert build.kind == "mypyc"
    assert list(build.compiled) == sorted(_compiled_modules())
    assert build.stale == ()
    for module in build.compiled:  # the sources ship too (tracebacks, inspection)
        assert (compiled_site / (module.replace(".", "/") + ".py")).is_file()
    assert engine_build(pure_site).kind == "python"
    # mypyc's runtime library lives inside the package too: at the top level, beside `services`, an
    # editable install (which maps the packages, not the checkout, onto the import path) misses it
    assert not list(compiled_site.glob("*.so"))
    assert list((compiled_site / "services" / "engine").glob("_compiled__mypyc.*.so"))


def test_the_unit_tests_pass_against_the_compiled_engine(compiled_site: Path, tmp_path: Path):
    # A copy of the tests beside nothing else, so that `services` comes from the compiled wheel
    # (pytest puts the tests' root first on sys.path). Two files that read the repository's
    # docs and examples are left out: they test neither the engine nor anything it compiles.
    for folder in ("unit", "support"):
        shutil.copytree(REPO_ROOT / "tests" / folder, tmp_path / "tests" / folder)
    for name in ("__init__.py", "conftest.py"):
        shutil.copy2(REPO_ROOT / "tests" / name, tmp_path / "tests" / name)
    shutil.copy2(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")  # pytest's settings
    done = _pytest(tmp_path, compiled_site, "mypyc", "tests/unit")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]
    # the guard that makes this run the compiled engine can fail: it refuses the wrong build
    wrong = _pytest(tmp_path, compiled_site, "python", "--collect-only", "tests/unit")
    assert wrong.returncode != 0
    assert "TAGSTREAM_EXPECT_ENGINE=python, but the engine is compiled with mypyc" in wrong.stderr


def _pytest(cwd: Path, site: Path, expect: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--ignore=tests/unit/test_configuration_reference.py",
            "--ignore=tests/unit/test_notifier_playbooks.py",
            *args,
        ],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(site), "TAGSTREAM_EXPECT_ENGINE": expect},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("mode", ["incremental", "full"])
def test_replay_writes_byte_identical_output_compiled_and_pure(
    compiled_site: Path, pure_site: Path, tmp_path: Path, mode: str
):
    events = tmp_path / "events.jsonl"
    write_events(str(events), 30_000, 3_000, seed=11)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules(), allow_unicode=True, sort_keys=False), encoding="utf-8")
    outputs = {}
    for name, site in (("compiled", compiled_site), ("pure", pure_site)):
        out, changes = tmp_path / f"{name}-tags.jsonl", tmp_path / f"{name}-changes.jsonl"
        command = [sys.executable, "-m", "services.cli", "replay", str(events), "--rules", str(rules_file)]
        command += ["--out", str(out), "--changes", str(changes), *(["--full"] if mode == "full" else [])]
        done = subprocess.run(
            command,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[name] = (out.read_bytes(), changes.read_bytes())
    assert outputs["compiled"][0].count(b"\n") > 2_500  # one line per customer (most of the 3,000 appear)
    assert outputs["compiled"][1].count(b"\n") > 30_000  # tag changes: several per event
    assert outputs["compiled"] == outputs["pure"]
