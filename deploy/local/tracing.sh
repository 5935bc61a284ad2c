#!/usr/bin/env bash
# Local tracing UI that receives OTLP, no Docker: Zipkin + an OTLP->Zipkin bridge.
#
#   deploy/local/tracing.sh install|start|stop|status
#
# Zipkin's executable server jar (UI, query API, in-memory storage) comes from Maven
# Central (deploy/local/tracing/pom.xml) and is cached in <repo>/.cache/tracing. Its
# server has no OTLP receiver, so deploy/local/tracing/otlp_zipkin_bridge.py (the
# project venv's Python and opentelemetry-proto) takes OTLP/HTTP on $TRACING_OTLP_PORT
# and hands the spans to Zipkin. Point the services at it with
#   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$TRACING_OTLP_PORT
# and open http://127.0.0.1:$TRACING_UI_PORT/zipkin/. Pid files and logs live in
# $TRACING_DATA_DIR, so a second instance can run with other ports/dir.
#
# Environment (defaults):
#   TRACING_UI_PORT=9411  TRACING_OTLP_PORT=4318  TRACING_DATA_DIR=<repo>/.run/tracing
#   ZIPKIN_VERSION=3.6.1  TRACING_HEAP_OPTS="-Xms64m -Xmx384m"  TRACING_MAX_SPANS=200000
#   TRACING_START_TIMEOUT=120
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

ZIPKIN_VERSION="${ZIPKIN_VERSION:-3.6.1}"
TRACING_UI_PORT="${TRACING_UI_PORT:-9411}"
TRACING_OTLP_PORT="${TRACING_OTLP_PORT:-4318}"
TRACING_DATA_DIR="$(abspath "${TRACING_DATA_DIR:-$RUN_DIR/tracing}")"
TRACING_HEAP_OPTS="${TRACING_HEAP_OPTS:--Xms64m -Xmx384m}"
TRACING_MAX_SPANS="${TRACING_MAX_SPANS:-200000}"
TRACING_START_TIMEOUT="${TRACING_START_TIMEOUT:-120}"

ZIPKIN_HOME="$CACHE_DIR/tracing/zipkin-$ZIPKIN_VERSION"
ZIPKIN_JAR="$ZIPKIN_HOME/zipkin-server-$ZIPKIN_VERSION-exec.jar"
POM="$LOCAL_DIR/tracing/pom.xml"
BRIDGE="$LOCAL_DIR/tracing/otlp_zipkin_bridge.py"
ZIPKIN_PID="$TRACING_DATA_DIR/zipkin.pid"
ZIPKIN_LOG="$TRACING_DATA_DIR/zipkin.log"
BRIDGE_PID="$TRACING_DATA_DIR/bridge.pid"
BRIDGE_LOG="$TRACING_DATA_DIR/bridge.log"
# Markers on the command lines, so stop/status only ever touch what this instance started.
ZIPKIN_MARKER="-Dpixelmesh.tracing.dir=$TRACING_DATA_DIR"
BRIDGE_MARKER="--listen 127.0.0.1:$TRACING_OTLP_PORT"
UI_URL="http://127.0.0.1:$TRACING_UI_PORT/zipkin/"
OTLP_URL="http://127.0.0.1:$TRACING_OTLP_PORT"

cmd_install() {
    [[ -f "$ZIPKIN_HOME/.complete" ]] && return 0
    command -v java >/dev/null || die "tracing: java not found (JDK 17+ needed for Zipkin)"
    command -v mvn >/dev/null || die "tracing: mvn not found (Maven needed to fetch Zipkin)"
    mkdir -p "$CACHE_DIR/tracing"
    exec 9>"$CACHE_DIR/tracing/.install.lock"
    flock 9
    if [[ ! -f "$ZIPKIN_HOME/.complete" ]]; then
        local tmp="$ZIPKIN_HOME.tmp.$$" out
        rm -rf "$tmp" "$ZIPKIN_HOME"
        mkdir -p "$tmp"
        timer_start
        if ! out="$(mvn -q -B -f "$POM" dependency:copy-dependencies \
            "-Dzipkin.version=$ZIPKIN_VERSION" "-DoutputDirectory=$tmp" 2>&1)"; then
            rm -rf "$tmp"
            printf '%s\n' "$out" >&2
            die "tracing: resolving io.zipkin:zipkin-server:$ZIPKIN_VERSION:exec from Maven Central failed"
        fi
        [[ -f "$tmp/$(basename "$ZIPKIN_JAR")" ]] || die "tracing: no $(basename "$ZIPKIN_JAR") in $tmp"
        mv "$tmp" "$ZIPKIN_HOME"
        touch "$ZIPKIN_HOME/.complete"
        echo "tracing: installed Zipkin $ZIPKIN_VERSION into ${ZIPKIN_HOME#"$REPO_ROOT"/} ($(elapsed))"
    fi
    flock -u 9
    exec 9>&-
}

http_ok() {
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true)" == 200 ]]
}

zipkin_ready() { http_ok "http://127.0.0.1:$TRACING_UI_PORT/health"; }
bridge_ready() { http_ok "$OTLP_URL/health"; }

start_zipkin() {
    if pid_running "$ZIPKIN_PID" "$ZIPKIN_MARKER"; then
        return 0
    fi
    rm -f "$ZIPKIN_PID"
    require_free_port tracing "$TRACING_UI_PORT"
    # shellcheck disable=SC2086 # TRACING_HEAP_OPTS is a list of JVM flags
    MEM_MAX_SPANS="$TRACING_MAX_SPANS" start_bg "$ZIPKIN_PID" "$ZIPKIN_LOG" \
        java $TRACING_HEAP_OPTS -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "$ZIPKIN_MARKER" \
        -jar "$ZIPKIN_JAR" \
        "--armeria.ports[0].ip=127.0.0.1" "--armeria.ports[0].port=$TRACING_UI_PORT" \
        "--armeria.ports[0].protocols=http" --logging.level.root=WARN
    if ! wait_until "$TRACING_START_TIMEOUT" "$ZIPKIN_PID" "$ZIPKIN_LOG" zipkin zipkin_ready; then
        cmd_stop >/dev/null 2>&1 || true
        die "tracing: Zipkin failed to start"
    fi
}

start_bridge() {
    if pid_running "$BRIDGE_PID" "$BRIDGE_MARKER"; then
        return 0
    fi
    rm -f "$BRIDGE_PID"
    require_free_port tracing "$TRACING_OTLP_PORT"
    "$LOCAL_PYTHON" -c 'import opentelemetry.proto.trace.v1.trace_pb2' 2>/dev/null ||
        die "tracing: $LOCAL_PYTHON lacks opentelemetry-proto (run 'make install' for the project venv)"
    start_bg "$BRIDGE_PID" "$BRIDGE_LOG" "$LOCAL_PYTHON" "$BRIDGE" \
        --listen "127.0.0.1:$TRACING_OTLP_PORT" --zipkin "http://127.0.0.1:$TRACING_UI_PORT"
    if ! wait_until 30 "$BRIDGE_PID" "$BRIDGE_LOG" otlp-bridge bridge_ready; then
        cmd_stop >/dev/null 2>&1 || true
        die "tracing: the OTLP bridge failed to start"
    fi
}

cmd_start() {
    cmd_install
    timer_start
    mkdir -p "$TRACING_DATA_DIR"
    start_zipkin
    start_bridge
    echo "tracing: Zipkin UI $UI_URL, OTLP/HTTP $OTLP_URL (pids $(<"$ZIPKIN_PID")/$(<"$BRIDGE_PID"), $(elapsed))"
}

cmd_stop() {
    stop_pidfile otlp-bridge "$BRIDGE_PID" "$BRIDGE_MARKER" 10 >/dev/null
    stop_pidfile zipkin "$ZIPKIN_PID" "$ZIPKIN_MARKER" 30 >/dev/null
    echo "tracing: stopped"
}

cmd_status() {
    local rc=0
    status_pidfile zipkin "$ZIPKIN_PID" "$ZIPKIN_MARKER" "$UI_URL" || rc=$?
    status_pidfile otlp-bridge "$BRIDGE_PID" "$BRIDGE_MARKER" "$OTLP_URL" || rc=$?
    return "$rc"
}

case "${1:-}" in
    install) cmd_install ;;
    start)
        lock_instance "$TRACING_DATA_DIR"
        cmd_start
        ;;
    stop)
        lock_instance "$TRACING_DATA_DIR"
        cmd_stop
        ;;
    status) cmd_status ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
