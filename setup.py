"""Build hook for the optional compiled engine (everything else is declared in pyproject.toml).

With TAGSTREAM_USE_MYPYC=1 the pure tagging engine is compiled with mypyc (the mypy project's
compiler: the same type-checked Python source, built into C extensions); without it the build is
pure Python, as a development checkout is. This follows black and mypy, which ship mypyc-compiled
wheels from the same sources. The container image builds with it (Dockerfile); in a checkout,
`scripts/compile-engine.sh` builds the extensions in place and `--clean` removes them.
`services.runtime.engine_build.engine_build()` tells at run time which one is loaded.
"""

import os

from setuptools import setup

COMPILED_MODULES = [
    # The per-event hot path: fold, conditions, window counts, routes, evaluation, schedule, change
    # JSON, state codec. Compiled together (one group), calls between them are direct C calls.
    "services/engine/aggregates.py",
    "services/engine/changes.py",
    "services/engine/codec.py",
    "services/engine/comparisons.py",
    "services/engine/conditions.py",
    "services/engine/decay.py",
    "services/engine/decay_mass.py",
    "services/engine/evaluator.py",
    "services/engine/loyalty.py",
    "services/engine/manual.py",
    "services/engine/profile.py",
    "services/engine/profile_codec.py",
    "services/engine/profile_rules.py",
    "services/engine/routing.py",
    "services/engine/rulebook.py",
    "services/engine/schedule.py",
    "services/engine/score_plan.py",
    "services/engine/score_state.py",
    "services/engine/scores.py",
    "services/engine/state.py",
    "services/engine/tagging.py",
    "services/engine/timeutil.py",
    "services/engine/windows.py",
    "services/engine/zone.py",
    # The replay loop (`tagstream replay`, the embedded mode's journal replay).
    "services/tagger/replay.py",
    # The projector's per-change path: records validated in pieces, history entries cut.
    "services/runtime/change_records.py",
    "services/runtime/history_codec.py",
]


def _ext_modules() -> list:
    if os.environ.get("TAGSTREAM_USE_MYPYC", "0") != "1":
        return []
    from mypyc.build import mypycify  # only needed (and only a build requirement) for this build

    # The project's [tool.mypy] settings apply (strict on the engine); sections for modules outside
    # this compile set are expected, not a mistake.
    # group_name: the runtime library all compiled modules share goes inside the package
    # (services/engine/_compiled__mypyc*.so) instead of beside the top-level packages, where an
    # editable install's import path (the packages, not the checkout) would not find it.
    return mypycify(
        ["--no-warn-unused-configs", *COMPILED_MODULES], opt_level="3", group_name="services.engine._compiled"
    )


setup(ext_modules=_ext_modules())
