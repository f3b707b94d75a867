#!/usr/bin/env bash
# Helm, built from the Go module proxy into a cache folder (no other download, no root needed).
#
#   scripts/helm.sh path        build helm if missing, print the binary's path
#   scripts/helm.sh ARGS...     build helm if missing, then run `helm ARGS...`
#
# Environment:
#   TAGSTREAM_HELM_VERSION  helm release to build (default: the pinned one below)
#   TAGSTREAM_CACHE_DIR     cache root (default: ~/.cache/tagstream)
#
# Needs `go` (1.22+) and the Go module proxy on the first run (a few minutes on 2 cores); cached after.
# Only stdout carries results; progress goes to stderr.
set -euo pipefail

HELM_VERSION="${TAGSTREAM_HELM_VERSION:-v3.21.4}"
CACHE_ROOT="${TAGSTREAM_CACHE_DIR:-${HOME}/.cache/tagstream}"
TOOL_DIR="${CACHE_ROOT}/helm-${HELM_VERSION}"
HELM_BIN="${TOOL_DIR}/bin/helm"

log() { printf 'helm.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_built() {
    if [[ -x "${HELM_BIN}" ]]; then return 0; fi
    command -v go >/dev/null 2>&1 || die "go is required to build helm (or put a helm ${HELM_VERSION} at ${HELM_BIN})"
    mkdir -p "${TOOL_DIR}"
    exec 9>"${TOOL_DIR}.lock"
    flock -w 1800 9 || die "could not lock ${TOOL_DIR}.lock"
    if [[ -x "${HELM_BIN}" ]]; then return 0; fi  # built by a concurrent caller meanwhile
    log "building helm ${HELM_VERSION} from the Go module proxy (first run only)"
    local staging="${TOOL_DIR}/.staging"
    rm -rf "${staging}"
    mkdir -p "${staging}"
    # Link flags as helm's own release build (its Makefile) sets them: the version, and the Kubernetes
    # version of its client-go as the default for `helm template`/`lint` (1.20 otherwise).
    local gomod client_go kube_minor
    gomod="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "${gomod}" ]] || die "could not download helm.sh/helm/v3@${HELM_VERSION} from the Go module proxy"
    client_go="$(awk '$1 == "k8s.io/client-go" { print $2 }' "${gomod}")"
    kube_minor="$(printf '%s' "${client_go}" | cut -d. -f2)"
    [[ "${kube_minor}" =~ ^[0-9]+$ ]] || die "no k8s.io/client-go version in ${gomod}"
    local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
    local package
    for package in pkg/lint/rules pkg/chartutil; do
        ldflags+=" -X helm.sh/helm/v3/${package}.k8sVersionMajor=1 -X helm.sh/helm/v3/${package}.k8sVersionMinor=${kube_minor}"
    done
    CGO_ENABLED=0 GOBIN="${staging}" GOFLAGS=-trimpath go install -ldflags "${ldflags}" \
        "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2 || die "go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION} failed"
    mkdir -p "${TOOL_DIR}/bin"
    mv "${staging}/helm" "${HELM_BIN}"  # last, so a half-built binary is never picked up
    rm -rf "${staging}"
    log "built ${HELM_BIN}"
}

main() {
    [[ $# -ge 1 ]] || { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
    ensure_built
    if [[ "$1" == "path" && $# -eq 1 ]]; then
        printf '%s\n' "${HELM_BIN}"
        return 0
    fi
    exec "${HELM_BIN}" "$@"
}

main "$@"
