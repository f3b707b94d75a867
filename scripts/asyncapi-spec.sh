#!/usr/bin/env bash
# The official AsyncAPI 3.0.0 JSON Schema, from the @asyncapi/specs package on the npm registry.
#
#   scripts/asyncapi-spec.sh path   fetch it if missing, print the schema file's path
#
# Environment:
#   TAGSTREAM_ASYNCAPI_SPECS_VERSION  @asyncapi/specs release (default: the pinned one below)
#   TAGSTREAM_CACHE_DIR               cache root (default: ~/.cache/tagstream)
#
# Needs `npm` and the npm registry on the first run (one small tarball, `npm pack`); cached after.
# Only stdout carries results; progress goes to stderr.
set -euo pipefail

SPECS_VERSION="${TAGSTREAM_ASYNCAPI_SPECS_VERSION:-6.11.1}"
CACHE_ROOT="${TAGSTREAM_CACHE_DIR:-${HOME}/.cache/tagstream}"
TOOL_DIR="${CACHE_ROOT}/asyncapi-specs-${SPECS_VERSION}"
# The variant without $id: validators then resolve its internal references without fetching anything.
SCHEMA="${TOOL_DIR}/schemas/3.0.0-without-\$id.json"

log() { printf 'asyncapi-spec.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_fetched() {
    if [[ -s "${SCHEMA}" ]]; then return 0; fi
    command -v npm >/dev/null 2>&1 || die "npm is required to fetch @asyncapi/specs"
    mkdir -p "${CACHE_ROOT}"
    exec 9>"${TOOL_DIR}.lock"
    flock -w 300 9 || die "could not lock ${TOOL_DIR}.lock"
    if [[ -s "${SCHEMA}" ]]; then return 0; fi
    log "fetching @asyncapi/specs@${SPECS_VERSION} from the npm registry (first run only)"
    local staging
    staging="$(mktemp -d "${CACHE_ROOT}/.asyncapi-specs.XXXXXX")"
    (cd "${staging}" && npm pack --silent "@asyncapi/specs@${SPECS_VERSION}" >/dev/null) 2>&1 | grep -v '^npm warn' >&2 || true
    local tarball="${staging}/asyncapi-specs-${SPECS_VERSION}.tgz"
    [[ -s "${tarball}" ]] || { rm -rf "${staging}"; die "npm pack @asyncapi/specs@${SPECS_VERSION} failed"; }
    tar -xzf "${tarball}" -C "${staging}" package/schemas || { rm -rf "${staging}"; die "unexpected tarball layout"; }
    rm -rf "${TOOL_DIR}"
    mv "${staging}/package" "${TOOL_DIR}"  # last, so a half-fetched copy is never picked up
    rm -rf "${staging}"
    [[ -s "${SCHEMA}" ]] || die "no ${SCHEMA##*/} in @asyncapi/specs@${SPECS_VERSION}"
}

main() {
    [[ $# -eq 1 && "$1" == "path" ]] || { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
    ensure_fetched
    printf '%s\n' "${SCHEMA}"
}

main "$@"
