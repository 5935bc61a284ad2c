#!/usr/bin/env bash
# Local PostgreSQL (pricing's database when it runs as several replicas), no Docker.
#
#   deploy/local/postgres.sh install|start|stop|status|url
#
# The server comes from Debian's `postgresql` package (installed with apt-get only when
# no initdb is found). Each instance is a private cluster: data, pid file and log live in
# $PG_DATA_DIR, it listens on 127.0.0.1:$PG_PORT only (no Unix socket), and it runs as the
# current user, or as the `postgres` system user when that is root (PostgreSQL refuses to
# run as root; $PG_DATA_DIR's parents must then be readable by that user, e.g. under /tmp).
# `url` prints the SQLAlchemy URL of the instance's database.
#
# Environment (defaults):
#   PG_PORT=5433  PG_DATA_DIR=<repo>/.run/postgres  PG_USER=pixelmesh
#   PG_PASSWORD=pixelmesh-dev-secret  PG_DATABASE=pixelmesh  PG_START_TIMEOUT=60
#   PG_FSYNC=on   (off for throwaway test clusters: faster, not crash-safe)
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

PG_PORT="${PG_PORT:-5433}"
PG_DATA_DIR="$(abspath "${PG_DATA_DIR:-$RUN_DIR/postgres}")"
PG_USER="${PG_USER:-pixelmesh}"
PG_PASSWORD="${PG_PASSWORD:-pixelmesh-dev-secret}"
PG_DATABASE="${PG_DATABASE:-pixelmesh}"
PG_START_TIMEOUT="${PG_START_TIMEOUT:-60}"
PG_FSYNC="${PG_FSYNC:-on}"

CLUSTER="$PG_DATA_DIR/data"
PIDFILE="$PG_DATA_DIR/postgres.pid"
LOGFILE="$PG_DATA_DIR/postgres.log"

# The directory of initdb/postgres/pg_isready/psql: PATH first, then Debian's layout.
pg_bindir() {
    local found
    if found="$(command -v initdb 2>/dev/null)"; then
        dirname "$(readlink -f "$found")"
        return 0
    fi
    found="$(find /usr/lib/postgresql -maxdepth 3 -name initdb -path '*/bin/*' 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$found" ]] || return 1
    dirname "$found"
}

cmd_install() {
    pg_bindir >/dev/null && return 0
    local sudo=""
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null || die "postgres: not installed, and installing it needs root (apt-get install postgresql)"
        sudo="sudo"
    fi
    timer_start
    if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1; then
        $sudo apt-get update -q >/dev/null
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
    fi
    pg_bindir >/dev/null || die "postgres: apt-get installed postgresql but no initdb was found"
    echo "postgres: installed from apt ($(elapsed))"
}

# as_db_user CMD...: run CMD as the user that owns the cluster (exec'd in place, so a
# background start records the server's own pid).
as_db_user() {
    if [[ $EUID -eq 0 ]]; then
        exec setpriv --reuid=postgres --regid=postgres --init-groups --reset-env "$@"
    fi
    exec "$@"
}

pg_ready() {
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres
}

psql_admin() {
    PGPASSWORD="$PG_PASSWORD" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres "$@"
}

init_cluster() {
    [[ -s "$CLUSTER/PG_VERSION" ]] && return 0
    mkdir -p "$CLUSTER"
    local pwfile="$PG_DATA_DIR/.pwfile"
    printf '%s\n' "$PG_PASSWORD" >"$pwfile"
    chmod 600 "$pwfile"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "postgres: running as root needs the 'postgres' system user (from the postgresql package)"
        chown -R postgres:postgres "$PG_DATA_DIR"
        setpriv --reuid=postgres --regid=postgres --init-groups test -x "$PG_DATA_DIR" ||
            die "postgres: user 'postgres' cannot reach $PG_DATA_DIR; put PG_DATA_DIR where it can (e.g. under /tmp)"
    fi
    local out
    if ! out="$( (as_db_user "$BIN/initdb" -D "$CLUSTER" --username="$PG_USER" --pwfile="$pwfile" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 --encoding=UTF8 --no-locale) 2>&1)"; then
        rm -f "$pwfile"
        printf '%s\n' "$out" >&2
        die "postgres: initdb failed"
    fi
    rm -f "$pwfile"
}

cmd_start() {
    if pid_running "$PIDFILE" "$CLUSTER"; then
        echo "postgres: already running on 127.0.0.1:$PG_PORT (pid $(<"$PIDFILE"))"
        return 0
    fi
    rm -f "$PIDFILE"
    cmd_install
    BIN="$(pg_bindir)"
    require_free_port postgres "$PG_PORT"
    timer_start
    init_cluster
    rm -f "$CLUSTER/postmaster.pid"  # left by a killed server; we checked it is not running
    start_bg "$PIDFILE" "$LOGFILE" bash -c "$(declare -f as_db_user); as_db_user \"\$@\"" _ \
        "$BIN/postgres" -D "$CLUSTER" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
        -c unix_socket_directories= -c fsync="$PG_FSYNC" -c synchronous_commit="$PG_FSYNC" \
        -c full_page_writes="$PG_FSYNC" -c max_connections=200
    if ! wait_until "$PG_START_TIMEOUT" "$PIDFILE" "$LOGFILE" postgres pg_ready; then
        cmd_stop >/dev/null 2>&1 || true
        die "postgres: failed to start"
    fi
    if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'")" != 1 ]]; then
        psql_admin -c "CREATE DATABASE \"$PG_DATABASE\""
    fi
    echo "postgres: started on 127.0.0.1:$PG_PORT, database $PG_DATABASE (pid $(<"$PIDFILE"), $(elapsed))"
}

cmd_stop() {
    # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to disconnect.
    if ! pid_running "$PIDFILE" "$CLUSTER"; then
        rm -f "$PIDFILE"
        echo "postgres: not running"
        return 0
    fi
    local pid deadline
    pid="$(<"$PIDFILE")"
    kill -INT "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            echo "postgres: killed (pid $pid) after 30s"
            break
        fi
        sleep 0.2
    done
    rm -f "$PIDFILE"
    echo "postgres: stopped (pid $pid)"
}

cmd_status() {
    status_pidfile postgres "$PIDFILE" "$CLUSTER" "127.0.0.1:$PG_PORT, data $PG_DATA_DIR"
}

cmd_url() {
    echo "postgresql+asyncpg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DATABASE"
}

case "${1:-}" in
    install) cmd_install ;;
    start)
        lock_instance "$PG_DATA_DIR"
        cmd_start
        ;;
    stop)
        lock_instance "$PG_DATA_DIR"
        cmd_stop
        ;;
    status) cmd_status ;;
    url) cmd_url ;;
    *) die "usage: $0 install|start|stop|status|url" ;;
esac
