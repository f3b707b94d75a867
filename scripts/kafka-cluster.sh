#!/usr/bin/env bash
# A local replicated Apache Kafka cluster (KRaft) on loopback, for fault tests: N combined
# controller+broker nodes (default 3), replication factor 3 and min.insync.replicas 2 by default.
# Reached through scripts/kafka.sh (`--nodes N` or TAGSTREAM_KAFKA_NODES=N); run directly it
# behaves the same:
#
#   scripts/kafka.sh --nodes 3 start         start (or resume) every node, print the bootstrap list
#   scripts/kafka.sh --nodes 3 stop          stop every node, keeping the data (start resumes it)
#   scripts/kafka.sh --nodes 3 reset         stop every node and delete the cluster's data
#   scripts/kafka.sh --nodes 3 status        exit 0 when every node answers metadata requests
#   scripts/kafka.sh --nodes 3 bootstrap     print the bootstrap list of the running cluster
#   scripts/kafka.sh kill-node ID            SIGKILL node ID (a crash; its data stays)
#   scripts/kafka.sh stop-node ID            stop node ID gracefully (SIGTERM)
#   scripts/kafka.sh start-node ID           start node ID again with its data and ports
#   scripts/kafka.sh node-pid ID             print the pid of node ID (fails when it is down)
#
# Each node lives in <run dir>/kafka-cluster/node-ID (its own ports, data, logs, pid file); the
# ports are picked once and kept, so a restarted node has the address clients knew. The single
# broker of scripts/kafka.sh (<run dir>/kafka) is separate: both can run at once.
#
# Environment: as scripts/kafka.sh, plus
#   TAGSTREAM_KAFKA_NODES          number of nodes (default 3)
#   TAGSTREAM_KAFKA_CLUSTER_HEAP   JVM heap per node (default: -Xms128m -Xmx384m)
set -euo pipefail

CLUSTER_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/kafka.sh
source "${CLUSTER_SCRIPT_DIR}/kafka.sh"

NODES="${TAGSTREAM_KAFKA_NODES:-3}"
[[ "${NODES}" =~ ^[1-9]$ ]] || die "TAGSTREAM_KAFKA_NODES must be 1-9, got '${NODES}'"
HEAP_OPTS="${TAGSTREAM_KAFKA_CLUSTER_HEAP:--Xms128m -Xmx384m}"
CLUSTER_DIR="${RUN_ROOT}/kafka-cluster"
PORTS_FILE="${CLUSTER_DIR}/ports"       # one line per node: id broker_port controller_port
CLUSTER_ID_FILE="${CLUSTER_DIR}/cluster.id"
CLUSTER_BOOTSTRAP_FILE="${CLUSTER_DIR}/bootstrap"

# Point kafka.sh's per-broker paths (pid file, configs, logs, data) at one node's folder.
use_node() {
    local id="$1"
    RUN_DIR="${CLUSTER_DIR}/node-${id}"
    DATA_DIR="${RUN_DIR}/data"
    LOG_DIR="${RUN_DIR}/logs"
    PROPS_FILE="${RUN_DIR}/server.properties"
    LOG4J_FILE="${RUN_DIR}/log4j.properties"
    LOG4J2_FILE="${RUN_DIR}/log4j2.properties"
    PID_FILE="${RUN_DIR}/kafka.pid"
    CONSOLE_LOG="${RUN_DIR}/kafka.out"
}

lock_cluster() { lock_run_dir "${CLUSTER_DIR}" 300; }

node_ids() {
    [[ -s "${PORTS_FILE}" ]] || die "no cluster in ${CLUSTER_DIR}: scripts/kafka.sh --nodes ${NODES} start"
    cut -d' ' -f1 "${PORTS_FILE}"
}

node_port() { awk -v id="$1" -v field="$2" '$1 == id { print $field }' "${PORTS_FILE}"; }

bootstrap_list() {
    awk '{ printf "%s127.0.0.1:%s", (NR > 1 ? "," : ""), $2 } END { print "" }' "${PORTS_FILE}"
}

check_node_id() {
    [[ "$1" =~ ^[0-9]+$ ]] && [[ -n "$(node_port "$1" 2)" ]] \
        || die "no node '$1' in ${PORTS_FILE} (ids: $(node_ids | tr '\n' ' '))"
}

pick_ports() {
    local id used=" " port
    : >"${PORTS_FILE}.tmp"
    for ((id = 1; id <= NODES; id++)); do
        local pair=()
        while ((${#pair[@]} < 2)); do
            port="$(free_port)"
            [[ "${used}" == *" ${port} "* ]] && continue
            used+="${port} "
            pair+=("${port}")
        done
        printf '%s %s %s\n' "${id}" "${pair[0]}" "${pair[1]}" >>"${PORTS_FILE}.tmp"
    done
    mv "${PORTS_FILE}.tmp" "${PORTS_FILE}"
}

# kafka.sh's single-node configuration, then the cluster's keys (a later key wins in a Java
# properties file): one voter per node, every topic replicated to 3 with 2 in sync.
write_node_configs() {
    local id="$1" voters replication min_isr
    voters="$(awk '{ printf "%s%s@127.0.0.1:%s", (NR > 1 ? "," : ""), $1, $3 } END { print "" }' "${PORTS_FILE}")"
    replication=$((NODES < 3 ? NODES : 3))
    min_isr=$((replication > 2 ? 2 : 1))
    write_configs "$(node_port "${id}" 2)" "$(node_port "${id}" 3)"
    cat >>"${PROPS_FILE}" <<EOF

# --- cluster node ${id} of ${NODES} (scripts/kafka-cluster.sh); these keys override the ones above
node.id=${id}
controller.quorum.voters=${voters}
default.replication.factor=${replication}
min.insync.replicas=${min_isr}
offsets.topic.replication.factor=${replication}
transaction.state.log.replication.factor=${replication}
transaction.state.log.min.isr=${min_isr}
# A killed node's replicas leave the in-sync set after this (the default is 30 s).
replica.lag.time.max.ms=10000
EOF
}

format_node() {
    local id="$1"
    use_node "${id}"
    rm -rf "${RUN_DIR}"
    mkdir -p "${DATA_DIR}" "${LOG_DIR}"
    write_node_configs "${id}"
    java_cmd
    "${JAVA_ARGS[@]}" kafka.tools.StorageTool format \
        -t "$(<"${CLUSTER_ID_FILE}")" -c "${PROPS_FILE}" --ignore-formatted >>"${CONSOLE_LOG}" 2>&1 \
        || { tail -n 20 "${CONSOLE_LOG}" >&2; die "formatting node ${id} failed"; }
}

# Launch one node's JVM (data already formatted); does not wait for it.
launch_node() {
    local id="$1" port
    use_node "${id}"
    if broker_alive; then return 0; fi
    for port in "$(node_port "${id}" 2)" "$(node_port "${id}" 3)"; do
        if port_in_use "${port}"; then
            die "port ${port} of node ${id} is taken by another process; free it or reset the cluster"
        fi
    done
    mkdir -p "${LOG_DIR}"
    write_node_configs "${id}"
    java_cmd
    log "starting node ${id} on 127.0.0.1:$(node_port "${id}" 2) (controller $(node_port "${id}" 3))"
    # setsid / 8>&- 9>&-: as kafka.sh's single broker (own session, no inherited lock).
    setsid nohup "${JAVA_ARGS[@]}" kafka.Kafka "${PROPS_FILE}" \
        </dev/null >>"${CONSOLE_LOG}" 2>&1 8>&- 9>&- &
    printf '%s\n' "$!" >"${PID_FILE}"
}

wait_node() {
    local id="$1"
    use_node "${id}"
    wait_ready "127.0.0.1:$(node_port "${id}" 2)" "$(read_pid)" \
        || die "node ${id} did not start (logs: ${LOG_DIR}/server.log, ${CONSOLE_LOG})"
}

stop_node() {
    local id="$1" signal="$2" pid
    use_node "${id}"
    if pid="$(read_pid)" && broker_alive; then
        end_process "${pid}" "${signal}" 30 "node ${id}"
    fi
    rm -f "${PID_FILE}"
}

cluster_up() {
    local id
    [[ -s "${PORTS_FILE}" ]] || return 1
    for id in $(node_ids); do
        use_node "${id}"
        broker_alive || return 1
        probe "127.0.0.1:$(node_port "${id}" 2)" || return 1
    done
}

cmd_cluster_start() {
    lock_cluster
    if cluster_up && [[ "$(wc -l <"${PORTS_FILE}")" -eq "${NODES}" ]]; then
        bootstrap_list
        return 0
    fi
    cmd_fetch
    command -v java >/dev/null 2>&1 || die "java (17+) is required to run Kafka"
    local id
    if [[ -s "${PORTS_FILE}" && -s "${CLUSTER_ID_FILE}" ]] \
        && [[ "$(wc -l <"${PORTS_FILE}")" -eq "${NODES}" ]] \
        && [[ -f "${CLUSTER_DIR}/node-1/data/meta.properties" ]]; then
        log "resuming the ${NODES}-node cluster with its data"
    else
        [[ ! -s "${PORTS_FILE}" ]] || for id in $(node_ids); do stop_node "${id}" KILL; done
        rm -rf "${CLUSTER_DIR:?}"/node-* "${CLUSTER_BOOTSTRAP_FILE}"
        pick_ports
        use_node 1
        mkdir -p "${LOG_DIR}"
        java_cmd
        "${JAVA_ARGS[@]}" kafka.tools.StorageTool random-uuid >"${CLUSTER_ID_FILE}" 2>>"${CLUSTER_DIR}/format.out" \
            || die "kafka.tools.StorageTool random-uuid failed (see ${CLUSTER_DIR}/format.out)"
        for ((id = 1; id <= NODES; id++)); do format_node "${id}"; done
    fi
    # All at once: a controller quorum needs a majority of its voters before any node is ready.
    for id in $(node_ids); do launch_node "${id}"; done
    for id in $(node_ids); do wait_node "${id}"; done
    bootstrap_list >"${CLUSTER_BOOTSTRAP_FILE}"
    log "${NODES}-node cluster is up"
    bootstrap_list
}

cmd_cluster_stop() {
    lock_cluster
    [[ -s "${PORTS_FILE}" ]] || return 0
    local id
    for id in $(node_ids); do stop_node "${id}" TERM; done
    rm -f "${CLUSTER_BOOTSTRAP_FILE}"
}

cmd_cluster_reset() {
    lock_cluster
    local id
    if [[ -s "${PORTS_FILE}" ]]; then
        for id in $(node_ids); do stop_node "${id}" KILL; done
    fi
    rm -rf "${CLUSTER_DIR:?}"/node-* "${PORTS_FILE}" "${CLUSTER_ID_FILE}" "${CLUSTER_BOOTSTRAP_FILE}"
    log "deleted the cluster's data; the next start formats a fresh one"
}

cmd_cluster_status() {
    if cluster_up; then
        log "running: $(bootstrap_list)"
        return 0
    fi
    log "not running (or not every node is up)"
    return 1
}

cmd_cluster_bootstrap() {
    [[ -s "${CLUSTER_BOOTSTRAP_FILE}" ]] || die "the cluster is not running (scripts/kafka.sh --nodes ${NODES} start)"
    head -n1 "${CLUSTER_BOOTSTRAP_FILE}"
}

cmd_node() {
    local what="$1" id="$2"
    lock_cluster
    check_node_id "${id}"
    case "${what}" in
        kill-node) stop_node "${id}" KILL ;;
        stop-node) stop_node "${id}" TERM ;;
        start-node)
            launch_node "${id}"
            wait_node "${id}"
            log "node ${id} is up"
            ;;
        node-pid)
            use_node "${id}"
            broker_alive || die "node ${id} is not running"
            read_pid
            ;;
    esac
}

cluster_main() {
    case "${1:-}" in
        start) cmd_cluster_start ;;
        stop) cmd_cluster_stop ;;
        reset) cmd_cluster_reset ;;
        status) cmd_cluster_status ;;
        bootstrap) cmd_cluster_bootstrap ;;
        fetch) cmd_fetch ;;
        kill-node | stop-node | start-node | node-pid)
            [[ $# -eq 2 ]] || die "usage: scripts/kafka.sh $1 NODE_ID"
            cmd_node "$1" "$2"
            ;;
        *) usage_from_header "${CLUSTER_SCRIPT_DIR}/kafka-cluster.sh" 2 25 ;;
    esac
}

cluster_main "$@"
