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
# shellcheck source=lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

ensure_installed() {
    if command -v promtool >/dev/null 2>&1; then return 0; fi
    local lock_dir="${TAGSTREAM_CACHE_DIR:-${HOME}/.cache/tagstream}"
    mkdir -p "${lock_dir}"
    exec 9>"${lock_dir}/prometheus-apt.lock"
    flock -w 900 9 || die "could not lock ${lock_dir}/prometheus-apt.lock"
    if command -v promtool >/dev/null 2>&1; then return 0; fi
    log "installing Debian prometheus (for promtool)"
    apt_install prometheus
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
