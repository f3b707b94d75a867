#!/usr/bin/env bash
# Local Redis for development and integration tests.
#
#   scripts/redis.sh start   install redis-server if missing, start it, print the URL
#   scripts/redis.sh stop    stop it and delete its data (the append-only file)
#   scripts/redis.sh status  exit 0 when it is running and answers PING
#   scripts/redis.sh url     print the URL of the running server
#
# Environment:
#   TAGSTREAM_RUN_DIR     run-time state root (default: <repo>/.run)
#   TAGSTREAM_REDIS_PORT  port (default: a free port picked at start)
#   TAGSTREAM_REDIS_START_TIMEOUT  seconds to wait for PING (default: 30)
#
# Only stdout carries the result (the URL); progress goes to stderr.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"

RUN_ROOT="${TAGSTREAM_RUN_DIR:-${REPO_ROOT}/.run}"
RUN_DIR="${RUN_ROOT}/redis"
PID_FILE="${RUN_DIR}/redis.pid"
LOG_FILE="${RUN_DIR}/redis.log"
URL_FILE="${RUN_DIR}/url"
PORT_FILE="${RUN_DIR}/port"
START_TIMEOUT="${TAGSTREAM_REDIS_START_TIMEOUT:-30}"

SERVICE_NAME=redis.sh
# shellcheck source=lib/service.sh
source "${SCRIPT_DIR}/lib/service.sh"
# shellcheck source=lib/apt.sh
source "${SCRIPT_DIR}/lib/apt.sh"

ensure_installed() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    log "installing Debian redis-server"
    apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after install"
}

server_alive() { pid_alive redis-server; }

ping() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == "PONG" ]]
}

cmd_start() {
    lock_run_dir "${RUN_DIR}" 120
    if server_alive && [[ -s "${PORT_FILE}" ]] && ping "$(<"${PORT_FILE}")"; then
        cat "${URL_FILE}"
        return 0
    fi
    stop_server
    ensure_installed

    local port
    if [[ -n "${TAGSTREAM_REDIS_PORT:-}" ]]; then
        port="${TAGSTREAM_REDIS_PORT}"
        [[ "${port}" =~ ^[0-9]+$ ]] || die "TAGSTREAM_REDIS_PORT must be a number, got '${port}'"
        if ping "${port}"; then die "port ${port} (TAGSTREAM_REDIS_PORT) is already served by another redis"; fi
    else
        port="$(free_port)"
    fi

    rm -f "${LOG_FILE}"
    log "starting redis-server on 127.0.0.1:${port}"
    # Durable like production (docs/notifier.md): an append-only file fsynced every second, so a crash
    # loses at most the last second; no RDB snapshots. Daemonized with a pid file.
    # 9>&-: the daemon must not inherit the lock descriptor.
    redis-server \
        --bind 127.0.0.1 \
        --port "${port}" \
        --protected-mode yes \
        --save '' \
        --appendonly yes \
        --appendfsync everysec \
        --dir "${RUN_DIR}" \
        --daemonize yes \
        --pidfile "${PID_FILE}" \
        --logfile "${LOG_FILE}" \
        --databases 16 9>&- \
        || die "redis-server failed to start (log: ${LOG_FILE})"

    local deadline=$((SECONDS + START_TIMEOUT))
    until ping "${port}"; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "${LOG_FILE}" >&2 2>/dev/null || true
            stop_server
            die "redis did not answer PING within ${START_TIMEOUT}s"
        fi
        sleep 0.1
    done
    # The pid file is written right after daemonizing; make sure it is there.
    until server_alive; do
        ((SECONDS < deadline)) || die "redis pid file ${PID_FILE} missing"
        sleep 0.1
    done
    printf '%s\n' "${port}" >"${PORT_FILE}"
    printf 'redis://127.0.0.1:%s/0\n' "${port}" >"${URL_FILE}"
    log "redis is up (pid $(read_pid))"
    cat "${URL_FILE}"
}

stop_server() {
    local pid
    if pid="$(read_pid)" && server_alive; then
        end_process "${pid}" TERM 15 "redis"
    fi
    rm -f "${PID_FILE}" "${URL_FILE}" "${PORT_FILE}"
}

cmd_stop() {
    lock_run_dir "${RUN_DIR}" 120
    stop_server
    # A start after a crash keeps the append-only file (that is its point); a deliberate stop does not.
    rm -rf "${RUN_DIR}/appendonlydir" "${RUN_DIR}/dump.rdb"
}

cmd_status() {
    if server_alive && [[ -s "${PORT_FILE}" ]] && ping "$(<"${PORT_FILE}")"; then
        log "running (pid $(read_pid)) at $(<"${URL_FILE}")"
        return 0
    fi
    log "not running"
    return 1
}

cmd_url() {
    if server_alive && [[ -s "${URL_FILE}" ]]; then
        cat "${URL_FILE}"
        return 0
    fi
    die "redis is not running (start it with scripts/redis.sh start)"
}

usage() { usage_from_header "${BASH_SOURCE[0]}" 2 14; }

main() {
    [[ $# -eq 1 ]] || usage
    case "$1" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        url) cmd_url ;;
        *) usage ;;
    esac
}

main "$@"
