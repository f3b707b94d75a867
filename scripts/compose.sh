#!/usr/bin/env bash
# Validate docker-compose.yml without a Docker engine: `docker compose config` equivalent.
#
#   scripts/compose.sh config [FILE...]   load and validate (default: docker-compose.yml), print the
#                                         resolved model as YAML; exit 1 with the loader's error
#   scripts/compose.sh path               build the validator if missing, print its path
#
# The validator is deploy/tools/compose-config: a few lines of Go around compose-go, the library
# `docker compose config` itself loads files with (JSON-schema validation, interpolation,
# normalisation, consistency checks). Built from the Go module proxy on the first run into
# ${TAGSTREAM_CACHE_DIR:-~/.cache/tagstream}/compose-config-<hash of its sources>/; cached after.
# Only validity is checked: nothing is pulled, built or run.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
SOURCE_DIR="${REPO_ROOT}/deploy/tools/compose-config"
CACHE_ROOT="${TAGSTREAM_CACHE_DIR:-${HOME}/.cache/tagstream}"

log() { printf 'compose.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

binary_path() {
    local digest
    digest="$(cat "${SOURCE_DIR}/go.mod" "${SOURCE_DIR}/go.sum" "${SOURCE_DIR}/main.go" | sha256sum | cut -c1-16)"
    printf '%s/compose-config-%s/compose-config\n' "${CACHE_ROOT}" "${digest}"
}

ensure_built() {
    local bin dir
    bin="$(binary_path)"
    dir="$(dirname "${bin}")"
    if [[ -x "${bin}" ]]; then return 0; fi
    command -v go >/dev/null 2>&1 || die "go is required to build ${SOURCE_DIR}"
    mkdir -p "${dir}"
    exec 9>"${dir}.lock"
    flock -w 900 9 || die "could not lock ${dir}.lock"
    if [[ -x "${bin}" ]]; then return 0; fi
    log "building the compose validator (compose-go) from the Go module proxy (first run only)"
    (cd "${SOURCE_DIR}" && CGO_ENABLED=0 GOFLAGS=-trimpath go build -ldflags "-s -w" -o "${bin}.tmp" .) >&2 \
        || die "go build in ${SOURCE_DIR} failed"
    mv "${bin}.tmp" "${bin}"
}

main() {
    [[ $# -ge 1 ]] || { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
    ensure_built
    case "$1" in
        path) binary_path ;;
        config)
            shift
            if [[ $# -eq 0 ]]; then set -- "${REPO_ROOT}/docker-compose.yml"; fi
            exec "$(binary_path)" "$@"
            ;;
        *) die "unknown subcommand '$1' (config | path)" ;;
    esac
}

main "$@"
