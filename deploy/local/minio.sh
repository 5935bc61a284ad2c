#!/usr/bin/env bash
# Local MinIO (S3-compatible object store), no Docker.
#
#   deploy/local/minio.sh install|start|stop|status
#
# MinIO ships source only: the binary is built once with `go install` into
# <repo>/.cache/bin/minio (not rebuilt while it exists). Data, pid file and log
# live in $MINIO_DATA_DIR, so a second instance can run with other ports/dir.
#
# Environment (defaults):
#   MINIO_PORT=9000  MINIO_CONSOLE_PORT=9001  MINIO_DATA_DIR=<repo>/.run/minio
#   MINIO_ROOT_USER=pixelmesh  MINIO_ROOT_PASSWORD=pixelmesh-dev-secret
#   MINIO_VERSION=<pinned pseudo-version, see README>  MINIO_START_TIMEOUT=60
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

# What `go install github.com/minio/minio@latest` resolved to (and built with
# Go 1.26) when this was written; MINIO_VERSION=latest follows upstream instead.
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
MINIO_PORT="${MINIO_PORT:-9000}"
MINIO_CONSOLE_PORT="${MINIO_CONSOLE_PORT:-9001}"
MINIO_DATA_DIR="$(abspath "${MINIO_DATA_DIR:-$RUN_DIR/minio}")"
MINIO_ROOT_USER="${MINIO_ROOT_USER:-pixelmesh}"
MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-pixelmesh-dev-secret}"
MINIO_START_TIMEOUT="${MINIO_START_TIMEOUT:-60}"

MINIO_BIN="$CACHE_DIR/bin/minio"
PIDFILE="$MINIO_DATA_DIR/minio.pid"
LOGFILE="$MINIO_DATA_DIR/minio.log"
DRIVE="$MINIO_DATA_DIR/data"

cmd_install() {
    [[ -x "$MINIO_BIN" ]] && return 0
    command -v go >/dev/null || die "minio: go not found (needed to build MinIO from source)"
    mkdir -p "$CACHE_DIR/bin"
    exec 9>"$CACHE_DIR/bin/.minio-install.lock"
    flock 9
    if [[ ! -x "$MINIO_BIN" ]]; then
        local out
        timer_start
        # -buildvcs=false: building from the module cache, there is no VCS info.
        if ! out="$(GOBIN="$CACHE_DIR/bin" GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
            go install "github.com/minio/minio@$MINIO_VERSION" 2>&1)"; then
            printf '%s\n' "$out" >&2
            die "minio: go install github.com/minio/minio@$MINIO_VERSION failed"
        fi
        echo "minio: built github.com/minio/minio@$MINIO_VERSION into ${MINIO_BIN#"$REPO_ROOT"/} ($(elapsed))"
    fi
    flock -u 9
    exec 9>&-
}

minio_ready() {
    local url="http://127.0.0.1:$MINIO_PORT/minio/health/ready"
    if command -v curl >/dev/null; then
        [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" == 200 ]]
    else
        "$LOCAL_PYTHON" -c 'import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)' "$url" 2>/dev/null
    fi
}

cmd_start() {
    if pid_running "$PIDFILE" "$DRIVE"; then
        echo "minio: already running on 127.0.0.1:$MINIO_PORT (pid $(<"$PIDFILE"))"
        return 0
    fi
    rm -f "$PIDFILE"
    cmd_install
    require_free_port minio "$MINIO_PORT"
    require_free_port minio "$MINIO_CONSOLE_PORT"
    mkdir -p "$DRIVE"
    timer_start
    MINIO_ROOT_USER="$MINIO_ROOT_USER" MINIO_ROOT_PASSWORD="$MINIO_ROOT_PASSWORD" \
        MINIO_UPDATE=off MINIO_BROWSER_REDIRECT=off \
        start_bg "$PIDFILE" "$LOGFILE" "$MINIO_BIN" server --quiet \
        --address "127.0.0.1:$MINIO_PORT" \
        --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" \
        "$DRIVE"
    if ! wait_until "$MINIO_START_TIMEOUT" "$PIDFILE" "$LOGFILE" minio minio_ready; then
        cmd_stop >/dev/null 2>&1 || true
        die "minio: failed to start"
    fi
    echo "minio: started on 127.0.0.1:$MINIO_PORT, console 127.0.0.1:$MINIO_CONSOLE_PORT (pid $(<"$PIDFILE"), $(elapsed))"
}

cmd_stop() {
    stop_pidfile minio "$PIDFILE" "$DRIVE" 30
}

cmd_status() {
    status_pidfile minio "$PIDFILE" "$DRIVE" "127.0.0.1:$MINIO_PORT, data $MINIO_DATA_DIR"
}

case "${1:-}" in
    install) cmd_install ;;
    start)
        lock_instance "$MINIO_DATA_DIR"
        cmd_start
        ;;
    stop)
        lock_instance "$MINIO_DATA_DIR"
        cmd_stop
        ;;
    status) cmd_status ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
