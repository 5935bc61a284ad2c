#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller in one JVM), no Docker.
#
#   deploy/local/kafka.sh install|start|stop|status
#
# Jars come from Maven Central (deploy/local/kafka/pom.xml) and are cached in
# <repo>/.cache/kafka/<version>/libs. Config, data, pid file and log live in
# $KAFKA_DATA_DIR, so a second instance can run with other ports/dir.
#
# Environment (defaults):
#   KAFKA_PORT=9092  KAFKA_CONTROLLER_PORT=9093  KAFKA_DATA_DIR=<repo>/.run/kafka
#   KAFKA_VERSION=4.3.1  KAFKA_HEAP_OPTS="-Xmx512m -Xms256m"  KAFKA_START_TIMEOUT=120
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_DATA_DIR="$(abspath "${KAFKA_DATA_DIR:-$RUN_DIR/kafka}")"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"

KAFKA_HOME="$CACHE_DIR/kafka/$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
POM="$LOCAL_DIR/kafka/pom.xml"
LOG4J_CONFIG="$LOCAL_DIR/kafka/log4j2.properties"
PIDFILE="$KAFKA_DATA_DIR/kafka.pid"
LOGFILE="$KAFKA_DATA_DIR/kafka.log"
CONFIG="$KAFKA_DATA_DIR/server.properties"
LOG_DIRS="$KAFKA_DATA_DIR/data"

java_opts() {
    # shellcheck disable=SC2206
    JAVA_OPTS=(
        $KAFKA_HEAP_OPTS
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$LOG4J_CONFIG" "-Dkafka.logs.dir=$KAFKA_DATA_DIR"
        -cp "$LIBS/*"
    )
}

cmd_install() {
    [[ -f "$KAFKA_HOME/.complete" ]] && return 0
    command -v java >/dev/null || die "kafka: java not found (JDK 17+ needed)"
    command -v mvn >/dev/null || die "kafka: mvn not found (Maven needed to fetch the jars)"
    mkdir -p "$CACHE_DIR/kafka"
    exec 9>"$CACHE_DIR/kafka/.install.lock"
    flock 9
    if [[ ! -f "$KAFKA_HOME/.complete" ]]; then
        local tmp="$KAFKA_HOME/libs.tmp.$$" out
        rm -rf "$tmp" "$LIBS"
        mkdir -p "$tmp"
        if ! out="$(mvn -q -B -f "$POM" dependency:copy-dependencies \
            "-Dkafka.version=$KAFKA_VERSION" "-DoutputDirectory=$tmp" 2>&1)"; then
            rm -rf "$tmp"
            printf '%s\n' "$out" >&2
            die "kafka: resolving kafka_2.13:$KAFKA_VERSION from Maven Central failed"
        fi
        ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka: no kafka_2.13 jar in $tmp"
        mv "$tmp" "$LIBS"
        touch "$KAFKA_HOME/.complete"
        echo "kafka: installed $KAFKA_VERSION into ${KAFKA_HOME#"$REPO_ROOT"/}"
    fi
    flock -u 9
    exec 9>&-
}

write_config() {
    mkdir -p "$KAFKA_DATA_DIR" "$LOG_DIRS"
    sed -e "s#@BROKER_PORT@#$KAFKA_PORT#g" \
        -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
        -e "s#@LOG_DIRS@#$LOG_DIRS#g" \
        "$LOCAL_DIR/kafka/server.properties.template" >"$CONFIG.tmp"
    mv "$CONFIG.tmp" "$CONFIG"
}

new_cluster_id() {
    # Same shape as Kafka's Uuid.randomUuid(): 16 random bytes, url-safe
    # base64 without padding, never starting with '-'.
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$id" != -* ]] && break
    done
    printf '%s\n' "$id"
}

format_storage() {
    [[ -f "$LOG_DIRS/meta.properties" ]] && return 0
    local cluster_id_file="$KAFKA_DATA_DIR/cluster.id" out
    [[ -s "$cluster_id_file" ]] || new_cluster_id >"$cluster_id_file"
    java_opts
    if ! out="$(java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format \
        -t "$(<"$cluster_id_file")" -c "$CONFIG" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "kafka: formatting storage in $LOG_DIRS failed"
    fi
    printf '%s\n' "$out" >>"$LOGFILE"
    echo "kafka: formatted storage in $LOG_DIRS (cluster id $(<"$cluster_id_file"))"
}

broker_ready() {
    port_open "$KAFKA_PORT" || return 1
    if [[ -n "$LOCAL_PYTHON" ]]; then
        "$LOCAL_PYTHON" "$LOCAL_DIR/kafka/ready.py" 127.0.0.1 "$KAFKA_PORT"
    else
        grep -q "Kafka Server started" "$LOGFILE"
    fi
}

cmd_start() {
    if pid_running "$PIDFILE" "$CONFIG"; then
        echo "kafka: already running on 127.0.0.1:$KAFKA_PORT (pid $(<"$PIDFILE"))"
        return 0
    fi
    rm -f "$PIDFILE"
    cmd_install
    require_free_port kafka "$KAFKA_PORT"
    require_free_port kafka "$KAFKA_CONTROLLER_PORT"
    write_config
    format_storage
    java_opts
    timer_start
    start_bg "$PIDFILE" "$LOGFILE" java "${JAVA_OPTS[@]}" kafka.Kafka "$CONFIG"
    if ! wait_until "$KAFKA_START_TIMEOUT" "$PIDFILE" "$LOGFILE" kafka broker_ready; then
        cmd_stop >/dev/null 2>&1 || true
        die "kafka: failed to start"
    fi
    echo "kafka: started on 127.0.0.1:$KAFKA_PORT (pid $(<"$PIDFILE"), $(elapsed))"
}

cmd_stop() {
    stop_pidfile kafka "$PIDFILE" "$CONFIG" 60
}

cmd_status() {
    status_pidfile kafka "$PIDFILE" "$CONFIG" "127.0.0.1:$KAFKA_PORT, data $KAFKA_DATA_DIR"
}

case "${1:-}" in
    install) cmd_install ;;
    start)
        lock_instance "$KAFKA_DATA_DIR"
        cmd_start
        ;;
    stop)
        lock_instance "$KAFKA_DATA_DIR"
        cmd_stop
        ;;
    status) cmd_status ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
