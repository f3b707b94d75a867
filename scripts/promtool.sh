#!/usr/bin/env bash
# promtool from Debian's `prometheus` package (installed with apt-get when missing).
#
#   scripts/promtool.sh path      install if missing, print promtool's path
#   scripts/promtool.sh ARGS...   install if missing, then run `promtool ARGS...`
#
# The package also ships the Prometheus server (/usr/bin/prometheus); its init script is kept from
# starting a system-wide server on :9090 during the install, as scripts/redis.sh does for Redis.
# Only stdout carries results; progress goes to stderr.
set -euo pipefail

log() { printf 'promtool.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

ensure_installed() {
    if command -v promtool >/dev/null 2>&1; then return 0; fi
    command -v apt-get >/dev/null 2>&1 || die "promtool is missing and apt-get is not available"
    local lock_dir="${TAGSTREAM_CACHE_DIR:-${HOME}/.cache/tagstream}"
    mkdir -p "${lock_dir}"
    exec 9>"${lock_dir}/prometheus-apt.lock"
    flock -w 900 9 || die "could not lock ${lock_dir}/prometheus-apt.lock"
    if command -v promtool >/dev/null 2>&1; then return 0; fi
    log "installing Debian prometheus (for promtool)"
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e "${policy}" ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' >${policy} && chmod 755 ${policy}"
        added_policy=1
    fi
    local rc=0
    {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends prometheus
    } >&2 || rc=$?
    if ((added_policy)); then as_root rm -f "${policy}"; fi
    ((rc == 0)) || die "apt-get install prometheus failed (exit ${rc})"
    command -v promtool >/dev/null 2>&1 || die "promtool still missing after installing prometheus"
}

main() {
    [[ $# -ge 1 ]] || { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
    ensure_installed
    if [[ "$1" == "path" && $# -eq 1 ]]; then
        command -v promtool
        return 0
    fi
    exec promtool "$@"
}

main "$@"
