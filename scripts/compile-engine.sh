#!/usr/bin/env bash
# Compile the tagging engine with mypyc, in place: C extensions beside the .py files they come from
# (which Python then imports instead of the .py). The module list and options are setup.py's, so
# this is the same build a wheel gets with TAGSTREAM_USE_MYPYC=1 (the container image's).
#
#   scripts/compile-engine.sh          build (about 30 s; needs a C compiler and Python headers)
#   scripts/compile-engine.sh --clean  remove the extensions: back to pure Python
#
# An extension does not follow later edits of its .py: rebuild after changing the engine (the
# benchmarks and the test suite refuse stale extensions; services.runtime.engine_build says why).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-.venv/bin/python}"

manifest=.compiled-engine.sha256  # services/runtime/engine_build.py reads it

clean() {
    find schemas services -name '*.so' -delete
    rm -f ./*__mypyc*.so "${manifest}"
    rm -rf build
}

case "${1:-}" in
    --clean) clean; echo "compiled engine removed: pure Python" >&2; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--clean]" >&2; exit 2 ;;
esac

clean
log="$(mktemp)"
trap 'rm -f "${log}"' EXIT
if ! TAGSTREAM_USE_MYPYC=1 "${python}" setup.py --quiet build_ext --inplace >"${log}" 2>&1; then
    cat "${log}" >&2
    clean
    echo "compiling the engine failed (above); the pure-Python engine is in use" >&2
    exit 1
fi
# the sources each extension was built from, to tell a stale build (an edit since) at run time
find schemas services -name '*.so' ! -name '*__mypyc*' | sed -E 's/\.[^/]*\.so$/.py/' | sort | xargs sha256sum >"${manifest}"
"${python}" -c 'from services.runtime.engine_build import engine_build; print("engine:", engine_build().describe())'
