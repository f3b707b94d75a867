# What the local-infrastructure scripts (kafka.sh, kafka-cluster.sh, redis.sh) share: messages, a
# lock on the run directory, the pid file of a daemon they started, usage from the header comment,
# and the network checks of tests/support/netprobe.py. Sourced, not run; the caller sets
# SERVICE_NAME (the prefix of its messages) and REPO_ROOT first, and PID_FILE before the pid
# functions are used (kafka-cluster.sh points it at one node after another).

log() { printf '%s: %s\n' "${SERVICE_NAME}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# usage_from_header SCRIPT FIRST LAST: print the script's header comment lines as help; exit 2.
usage_from_header() {
    sed -n "$2,$3p" "$1" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# lock_run_dir DIR SECONDS: hold DIR/.lock (descriptor 9) until the script exits, so two starts or a
# start and a stop of the same service never interleave. Daemons must be started with 9>&-.
lock_run_dir() {
    mkdir -p "$1"
    exec 9>"$1/.lock"
    flock -w "$2" 9 || die "could not lock $1/.lock within $2s"
}

python_bin() {
    if [[ -x "${REPO_ROOT}/.venv/bin/python" ]]; then
        printf '%s\n' "${REPO_ROOT}/.venv/bin/python"
    elif command -v python3 >/dev/null 2>&1; then
        command -v python3
    else
        die "python3 is required (free ports and readiness checks: tests/support/netprobe.py)"
    fi
}

# Run as a file, not a module: it needs nothing but the standard library, not even the virtualenv.
netprobe() { "$(python_bin)" "${REPO_ROOT}/tests/support/netprobe.py" "$@"; }
free_port() { netprobe free-port; }
port_in_use() { netprobe port-in-use "$1"; }

read_pid() {
    [[ -f "${PID_FILE}" ]] || return 1
    local pid
    pid="$(<"${PID_FILE}")"
    [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "${pid}"
}

# pid_alive NEEDLE: the pid file names a live process whose command line contains NEEDLE (a pid
# recycled by some other program does not count).
pid_alive() {
    local pid
    pid="$(read_pid)" || return 1
    kill -0 "${pid}" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF -- "$1"
}

# kill_now PID: SIGKILL and wait until the process is gone.
kill_now() {
    kill -KILL "$1" 2>/dev/null || true
    while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
}

# end_process PID SIGNAL GRACE WHAT: send SIGNAL, wait up to GRACE seconds, then SIGKILL.
end_process() {
    local pid="$1" signal="$2" grace="$3" what="$4"
    log "${what}: SIG${signal} to pid ${pid}"
    kill "-${signal}" "${pid}" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while kill -0 "${pid}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "${pid}" 2>/dev/null; then
        log "${what} did not stop within ${grace}s; sending SIGKILL"
        kill_now "${pid}"
    fi
}
