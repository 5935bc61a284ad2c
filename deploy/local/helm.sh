#!/usr/bin/env bash
# Helm (the Kubernetes package manager) built from source, no release download.
#
#   deploy/local/helm.sh install      build if missing; silent when already there
#   deploy/local/helm.sh ARGS...      build if missing, then run `helm ARGS...`
#
# `go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION` into <repo>/.cache/bin/helm.
# Versions are stamped with -ldflags as Helm's own Makefile does: Helm's, so `helm
# version` reports it and a cached binary of another version is rebuilt; and the
# Kubernetes version of its client-go, which `helm template`/`lint` assume for
# .Capabilities.KubeVersion (unstamped, Helm says v1.20 and refuses charts needing more).
#
# Environment (defaults):
#   HELM_VERSION=v3.22.0  (the latest v3 on the Go module proxy when this was written;
#                          it needs Go >= 1.26)
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
HELM_BIN="$CACHE_DIR/bin/helm"
HELM_MODULE="helm.sh/helm/v3"
# Written after a build: "<helm version> kube=1.<minor>".
HELM_STAMP="$CACHE_DIR/bin/.helm.build"

installed() {
    [[ -x "$HELM_BIN" && -f "$HELM_STAMP" ]] &&
        [[ "$(<"$HELM_STAMP")" == "$HELM_VERSION kube="* ]] &&
        [[ "$("$HELM_BIN" version --template '{{.Version}}' 2>/dev/null || true)" == "$HELM_VERSION" ]]
}

cmd_install() {
    installed && return 0
    command -v go >/dev/null || die "helm: go not found (needed to build Helm from source)"
    mkdir -p "$CACHE_DIR/bin"
    exec 9>"$CACHE_DIR/bin/.helm-install.lock"
    flock 9
    if ! installed; then
        local out ldflags gomod k8s_minor pkg
        timer_start
        # Helm's go.mod names the client-go it builds with (v0.N.x = Kubernetes 1.N).
        if ! out="$(go mod download -json "$HELM_MODULE@$HELM_VERSION" 2>&1)"; then
            printf '%s\n' "$out" >&2
            die "helm: go mod download $HELM_MODULE@$HELM_VERSION failed"
        fi
        gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p' <<<"$out")"
        k8s_minor="$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" 2>/dev/null | head -n 1)"
        [[ -n "$k8s_minor" ]] || die "helm: cannot find the client-go version in $HELM_MODULE@$HELM_VERSION's go.mod"
        ldflags="-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION"
        ldflags+=" -X $HELM_MODULE/internal/version.gitTreeState=clean"
        for pkg in pkg/chartutil pkg/lint/rules; do
            ldflags+=" -X $HELM_MODULE/$pkg.k8sVersionMajor=1 -X $HELM_MODULE/$pkg.k8sVersionMinor=$k8s_minor"
        done
        # -buildvcs=false: building from the module cache, there is no VCS info.
        if ! out="$(GOBIN="$CACHE_DIR/bin" GOFLAGS="${GOFLAGS:-} -buildvcs=false" CGO_ENABLED=0 \
            go install -ldflags "$ldflags" "$HELM_MODULE/cmd/helm@$HELM_VERSION" 2>&1)"; then
            printf '%s\n' "$out" >&2
            die "helm: go install $HELM_MODULE/cmd/helm@$HELM_VERSION failed"
        fi
        echo "$HELM_VERSION kube=1.$k8s_minor" >"$HELM_STAMP"
        installed || die "helm: built, but '$HELM_BIN version' does not report $HELM_VERSION"
        echo "helm: built $HELM_MODULE/cmd/helm@$HELM_VERSION (Kubernetes 1.$k8s_minor) into ${HELM_BIN#"$REPO_ROOT"/} ($(elapsed))"
    fi
    flock -u 9
    exec 9>&-
}

case "${1:-}" in
    install) cmd_install ;;
    "") die "usage: $0 install | $0 HELM-ARGS..." ;;
    *)
        cmd_install
        exec "$HELM_BIN" "$@"
        ;;
esac
