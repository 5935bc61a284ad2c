#!/usr/bin/env bash
# buf (protobuf lint/breaking/generate) from the npm registry, no global install.
#
#   deploy/local/buf.sh install      install if missing; silent when already there
#   deploy/local/buf.sh ARGS...      install if missing, then run `buf ARGS...`
#
# Installs @bufbuild/buf@$BUF_VERSION into <repo>/.cache/node; the binary is
# <repo>/.cache/node/node_modules/.bin/buf.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

BUF_VERSION="${BUF_VERSION:-1.75.0}"
NODE_PREFIX="$CACHE_DIR/node"
BUF_BIN="$NODE_PREFIX/node_modules/.bin/buf"
BUF_PKG_JSON="$NODE_PREFIX/node_modules/@bufbuild/buf/package.json"

installed() {
    [[ -x "$BUF_BIN" && -f "$BUF_PKG_JSON" ]] &&
        grep -q "\"version\": \"$BUF_VERSION\"" "$BUF_PKG_JSON"
}

cmd_install() {
    installed && return 0
    command -v npm >/dev/null || die "buf: npm not found (Node.js needed)"
    mkdir -p "$NODE_PREFIX"
    exec 9>"$NODE_PREFIX/.install.lock"
    flock 9
    if ! installed; then
        local out
        if ! out="$(npm install --prefix "$NODE_PREFIX" --no-audit --no-fund \
            --loglevel=error "@bufbuild/buf@$BUF_VERSION" 2>&1)"; then
            printf '%s\n' "$out" >&2
            die "buf: npm install @bufbuild/buf@$BUF_VERSION failed"
        fi
        "$BUF_BIN" --version >/dev/null 2>&1 || die "buf: installed, but '$BUF_BIN --version' fails"
        echo "buf: installed @bufbuild/buf@$BUF_VERSION into ${NODE_PREFIX#"$REPO_ROOT"/}"
    fi
    flock -u 9
    exec 9>&-
}

case "${1:-}" in
    install) cmd_install ;;
    "") die "usage: $0 install | $0 BUF-ARGS..." ;;
    *)
        cmd_install
        exec "$BUF_BIN" "$@"
        ;;
esac
