#!/usr/bin/env bash
# The LiteLLM proxy, for `make bench` only (pixelmesh vs LiteLLM on the same upstream).
#
#   deploy/local/litellm.sh install|start|stop|status
#
# `install` creates its own venv, <repo>/.cache/litellm/<version>/venv, with a pinned
# litellm[proxy] from PyPI (never in the project's .venv). `start` writes a config whose
# model_list maps `dall-e-3` to `openai/dall-e-3` on $LITELLM_UPSTREAM (an OpenAI-style
# base URL ending in /v1, e.g. the bench's fake upstream) and runs the proxy with one
# worker; nothing at start reaches the internet (local model cost map, no telemetry).
# Config, pid file and log live in $LITELLM_DATA_DIR.
#
# Environment (defaults):
#   LITELLM_PORT=4000  LITELLM_DATA_DIR=<repo>/.run/litellm  LITELLM_VERSION=1.108.7
#   LITELLM_UPSTREAM=http://127.0.0.1:8001/v1  LITELLM_MASTER_KEY=sk-pixelmesh-bench
#   LITELLM_START_TIMEOUT=180
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
LITELLM_PORT="${LITELLM_PORT:-4000}"
LITELLM_DATA_DIR="$(abspath "${LITELLM_DATA_DIR:-$RUN_DIR/litellm}")"
LITELLM_UPSTREAM="${LITELLM_UPSTREAM:-http://127.0.0.1:8001/v1}"
LITELLM_MASTER_KEY="${LITELLM_MASTER_KEY:-sk-pixelmesh-bench}"
LITELLM_START_TIMEOUT="${LITELLM_START_TIMEOUT:-180}"
LITELLM_PYTHON="${LITELLM_PYTHON:-python3}"

LITELLM_HOME="$CACHE_DIR/litellm/$LITELLM_VERSION"
VENV="$LITELLM_HOME/venv"
PIDFILE="$LITELLM_DATA_DIR/litellm.pid"
LOGFILE="$LITELLM_DATA_DIR/litellm.log"
CONFIG="$LITELLM_DATA_DIR/config.yaml"

cmd_install() {
    [[ -f "$LITELLM_HOME/.complete" ]] && return 0
    mkdir -p "$CACHE_DIR/litellm"
    exec 9>"$CACHE_DIR/litellm/.install.lock"
    flock 9
    if [[ ! -f "$LITELLM_HOME/.complete" ]]; then
        local out
        timer_start
        rm -rf "$VENV"
        if ! out="$("$LITELLM_PYTHON" -m venv "$VENV" 2>&1 &&
            "$VENV/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION" 2>&1)"; then
            printf '%s\n' "$out" >&2
            rm -rf "$VENV"
            die "litellm: pip install litellm[proxy]==$LITELLM_VERSION failed"
        fi
        touch "$LITELLM_HOME/.complete"
        echo "litellm: installed litellm[proxy] $LITELLM_VERSION into ${VENV#"$REPO_ROOT"/} ($(elapsed))"
    fi
    flock -u 9
    exec 9>&-
}

write_config() {
    mkdir -p "$LITELLM_DATA_DIR"
    cat >"$CONFIG.tmp" <<EOF
# written by deploy/local/litellm.sh start
model_list:
  - model_name: dall-e-3
    litellm_params:
      model: openai/dall-e-3
      api_base: $LITELLM_UPSTREAM
      api_key: sk-fake-upstream-key
litellm_settings:
  telemetry: false
  turn_off_message_logging: true
  drop_params: true
general_settings:
  master_key: $LITELLM_MASTER_KEY
  disable_spend_logs: true
  disable_reset_budget: true
EOF
    mv "$CONFIG.tmp" "$CONFIG"
}

litellm_ready() {
    local url="http://127.0.0.1:$LITELLM_PORT/health/liveliness"
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" == 200 ]]
}

cmd_start() {
    if pid_running "$PIDFILE" "$CONFIG"; then
        echo "litellm: already running on 127.0.0.1:$LITELLM_PORT (pid $(<"$PIDFILE"))"
        return 0
    fi
    rm -f "$PIDFILE"
    cmd_install
    require_free_port litellm "$LITELLM_PORT"
    write_config
    timer_start
    # No network at start: the bundled model cost map, no telemetry, no update checks.
    LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False LITELLM_LOG=ERROR \
        LITELLM_MODE=PRODUCTION DISABLE_ADMIN_UI=True \
        HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
        start_bg "$PIDFILE" "$LOGFILE" "$VENV/bin/litellm" --config "$CONFIG" \
        --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 1
    if ! wait_until "$LITELLM_START_TIMEOUT" "$PIDFILE" "$LOGFILE" litellm litellm_ready; then
        cmd_stop >/dev/null 2>&1 || true
        die "litellm: failed to start"
    fi
    echo "litellm: started on 127.0.0.1:$LITELLM_PORT -> $LITELLM_UPSTREAM (pid $(<"$PIDFILE"), $(elapsed))"
}

cmd_stop() {
    stop_pidfile litellm "$PIDFILE" "$CONFIG" 20
}

cmd_status() {
    status_pidfile litellm "$PIDFILE" "$CONFIG" "127.0.0.1:$LITELLM_PORT, data $LITELLM_DATA_DIR"
}

case "${1:-}" in
    install) cmd_install ;;
    start)
        lock_instance "$LITELLM_DATA_DIR"
        cmd_start
        ;;
    stop)
        lock_instance "$LITELLM_DATA_DIR"
        cmd_stop
        ;;
    status) cmd_status ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
