# shellcheck shell=bash
# Shared helpers for deploy/local/*.sh. Source it, do not run it.
#
# Conventions:
#   - everything installed goes under $CACHE_DIR (<repo>/.cache, git-ignored)
#   - runtime state (data, pid file, log) of one instance lives in its data dir
#     (default <repo>/.run/<name>), so several instances can run side by side
#   - quiet on success: one line per action

LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LOCAL_DIR/../.." && pwd)"
# shellcheck disable=SC2034 # used by the scripts that source this file
CACHE_DIR="$REPO_ROOT/.cache"
# shellcheck disable=SC2034
RUN_DIR="$REPO_ROOT/.run"

# Python used for small stdlib-only probes: the project venv if present.
if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
    LOCAL_PYTHON="$REPO_ROOT/.venv/bin/python"
else
    # shellcheck disable=SC2034
    LOCAL_PYTHON="$(command -v python3 || true)"
fi

die() {
    echo "$*" >&2
    exit 1
}

# Make a path absolute without requiring it to exist.
abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}

# port_open PORT [HOST] -> 0 if something accepts TCP connections there.
port_open() {
    local port=$1 host=${2:-127.0.0.1}
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# pid_running PIDFILE [MARKER] -> 0 if the pid in PIDFILE is alive and (when
# MARKER is given) its command line contains MARKER. The marker guards
# against a recycled pid: we only ever touch the process we started.
pid_running() {
    local pidfile=$1 marker=${2:-} pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -n "$marker" ]]; then
        [[ -r "/proc/$pid/cmdline" ]] || return 1
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker" || return 1
    fi
    return 0
}

# start_bg PIDFILE LOGFILE CMD... : start CMD detached (own session, stdin
# from /dev/null, stdout+stderr appended to LOGFILE) and write its pid.
start_bg() {
    local pidfile=$1 logfile=$2
    shift 2
    mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
    # keep one previous log once it grows past 20 MiB
    if [[ -f "$logfile" ]] && (($(stat -c %s "$logfile") > 20971520)); then
        mv -f "$logfile" "$logfile.1"
    fi
    # setsid execs in place (the child of a non-interactive shell is not a
    # process-group leader), so $! is the pid of CMD itself. fds 8/9 (our
    # flock locks) are closed so the daemon does not hold them.
    setsid "$@" </dev/null >>"$logfile" 2>&1 8>&- 9>&- &
    echo $! >"$pidfile"
}

# lock_instance DIR: serialise start/stop of one instance (its data dir)
# across concurrent callers; released when the calling script exits.
lock_instance() {
    mkdir -p "$1"
    exec 8>"$1/.lock"
    flock 8
}

# wait_until TIMEOUT_S PIDFILE LOGFILE NAME CHECK... : poll CHECK every 0.2s
# until it succeeds; fail (showing the log tail) if the process dies or the
# timeout passes.
wait_until() {
    local timeout=$1 pidfile=$2 logfile=$3 name=$4
    shift 4
    local deadline=$((SECONDS + timeout))
    while ! "$@"; do
        if ! pid_running "$pidfile"; then
            echo "$name: process exited during startup; last log lines ($logfile):" >&2
            tail -n 30 "$logfile" >&2 || true
            rm -f "$pidfile"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "$name: not ready after ${timeout}s; last log lines ($logfile):" >&2
            tail -n 30 "$logfile" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# stop_pidfile NAME PIDFILE MARKER [TIMEOUT_S]: SIGTERM the pid we started,
# wait, SIGKILL after the timeout. Succeeds if nothing is running.
stop_pidfile() {
    local name=$1 pidfile=$2 marker=$3 timeout=${4:-30} pid
    if ! pid_running "$pidfile" "$marker"; then
        rm -f "$pidfile"
        echo "$name: not running"
        return 0
    fi
    pid="$(<"$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            echo "$name: killed (pid $pid) after ${timeout}s"
            rm -f "$pidfile"
            return 0
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
    echo "$name: stopped (pid $pid)"
}

# status_pidfile NAME PIDFILE MARKER DESCRIPTION -> exit 0 if running, 3 if not.
status_pidfile() {
    local name=$1 pidfile=$2 marker=$3 desc=$4
    if pid_running "$pidfile" "$marker"; then
        echo "$name: running on $desc (pid $(<"$pidfile"))"
        return 0
    fi
    echo "$name: not running"
    return 3
}

# require_free_port NAME PORT: fail if another process already listens there.
require_free_port() {
    local name=$1 port=$2
    if port_open "$port"; then
        die "$name: port 127.0.0.1:$port is already in use by another process"
    fi
}

# timer_start; ...; elapsed -> "3.4s" since timer_start.
timer_start() {
    _TIMER_T0="${EPOCHREALTIME//[!0-9]/}"
}
elapsed() {
    local now="${EPOCHREALTIME//[!0-9]/}"
    local us=$((10#$now - 10#$_TIMER_T0))
    printf '%d.%ds' $((us / 1000000)) $(((us / 100000) % 10))
}
