"""The Dockerfile builds one slim, non-root image from a minimal context (no Docker engine here:
its build context is checked by building the project wheel from exactly that context)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile

from services.runtime.settings import IngestSettings, NotifierSettings, TaggerSettings
from tests.deploy.dockerfile import build_context, copy_sources, stages
from tests.support.tools import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


def test_the_image_is_built_in_one_stage_and_runs_from_a_slim_one_as_a_fixed_non_root_user():
    build, runtime = stages(DOCKERFILE)
    assert build.name == "build"
    assert runtime.base == build.base == "${PYTHON_IMAGE}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in DOCKERFILE.read_text(encoding="utf-8")
    [user] = runtime.all("USER")
    assert user == "${UID}:${UID}"
    assert "UID=10001" in runtime.all("ARG")
    assert [copy_sources(argument) for argument in runtime.all("COPY")] == [(["/opt/tagstream"], "build")]
    # nothing is installed in the runtime stage: no compiler, no package manager runs, no dev tools
    runtime_commands = " ".join(runtime.all("RUN"))
    for tool in ("pip", "apt-get", "gcc", "pytest", "ruff", "mypy"):
        assert tool not in runtime_commands
    assert runtime.all("ENTRYPOINT") == ['["tagstream"]']


def test_the_image_runs_with_a_read_only_root_filesystem():
    runtime = stages(DOCKERFILE)[-1]
    [volumes] = runtime.all("VOLUME")
    assert volumes == '["/tmp", "/var/lib/tagstream"]'
    env = " ".join(runtime.all("ENV"))
    assert f"TAGSTREAM_TAGGER__DATADIR={TaggerSettings().datadir}" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # bytecode is compiled at build time instead
    assert "compileall" in " ".join(stages(DOCKERFILE)[0].all("RUN"))


def test_the_image_exposes_the_ports_the_services_listen_on():
    [exposed] = stages(DOCKERFILE)[-1].all("EXPOSE")
    assert str(TaggerSettings().web_port) in exposed.split()
    assert {"8080", "8081"} <= set(exposed.split())


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else():
    context = build_context(REPO_ROOT)
    build = stages(DOCKERFILE)[0]
    for argument in build.all("COPY"):
        sources, origin = copy_sources(argument)
        assert origin is None
        for source in sources:
            assert source in context or any(path.startswith(source + "/") for path in context), source
    tops = {path.split("/")[0] for path in context}
    assert tops == {"pyproject.toml", "setup.py", "README.md", "LICENSE", "NOTICE", "schemas", "services"}
    assert not [path for path in context if "__pycache__" in path or path.endswith((".pyc", ".so"))]


def test_the_image_ships_the_engine_compiled_with_mypyc():
    build = stages(DOCKERFILE)[0]
    assert "TAGSTREAM_USE_MYPYC=1" in " ".join(build.all("ENV")).split()
    assert "gcc" in " ".join(build.all("RUN"))  # the compiler stays in the build stage (see above)


def test_the_wheel_built_from_the_docker_context_carries_the_templates_schemas_and_the_command(tmp_path):
    context = tmp_path / "context"
    for path in build_context(REPO_ROOT):
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / path, context / path)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp_path / "wheels", context],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [wheel] = (tmp_path / "wheels").glob("tagstream-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(name).decode() for name in names if name.endswith("entry_points.txt"))
    assert "services/runtime/templates/rfm.yaml" in names
    assert "schemas/json/tag-changed.json" in names
    assert "services/cli.py" in names
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert f"tagstream = {scripts['tagstream']}" in entry_points


def test_the_cli_listens_on_loopback_by_default_and_the_image_on_every_interface():
    assert IngestSettings().host == TaggerSettings().web_host == NotifierSettings().web_host == "127.0.0.1"
    env = " ".join(stages(DOCKERFILE)[-1].all("ENV"))
    for variable in ("TAGSTREAM_INGEST__HOST", "TAGSTREAM_TAGGER__WEB_HOST", "TAGSTREAM_NOTIFIER__WEB_HOST"):
        assert f"{variable}=0.0.0.0" in env
