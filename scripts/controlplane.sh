#!/usr/bin/env bash
# Builds the test control plane: etcd, kube-apiserver and kubectl, from the pinned Go module in
# testenv/ (go.mod + go.sum), into ${EDGEFLEET_CONTROLPLANE_DIR:-~/.cache/edgefleet/controlplane/v1.36.3}.
# The edgefleet-testenv crate starts them for the controller's integration tests. Go is used only to
# build these test tools, never for the product.
#
# Network: Go fetches the modules from the module proxy on the first build only (into
# ~/go/pkg/mod); later builds use the module and build caches and need no network.
# First build: several minutes and a few GB of memory on 2 cores; a rebuild from the caches: seconds
# to a minute (linking).
#
# Idempotent: a stamp file records the hash of go.mod + go.sum; when it matches and the three
# binaries are there, nothing is built.
set -euo pipefail

KUBE_VERSION=v1.36.3
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODULE="$ROOT/testenv"
OUT=${EDGEFLEET_CONTROLPLANE_DIR:-$HOME/.cache/edgefleet/controlplane/$KUBE_VERSION}
STAMP="$OUT/.stamp"

say() { printf '[controlplane] %s\n' "$*"; }
die() { printf '[controlplane] error: %s\n' "$*" >&2; exit 1; }

# The official tarball's place, when it is not on PATH (e.g. a root shell without a login profile).
command -v go >/dev/null 2>&1 || [ ! -x /usr/local/go/bin/go ] || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null 2>&1 ||
  die "go not found: install Go >= 1.26 (https://go.dev/dl/); it is needed only to build the test control plane"
[ -f "$MODULE/go.mod" ] && [ -f "$MODULE/go.sum" ] || die "no go.mod/go.sum in $MODULE"

want=$(cat "$MODULE/go.mod" "$MODULE/go.sum" | sha256sum | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$have" = "$want" ] && [ -x "$OUT/etcd" ] && [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kubectl" ]; then
  say "etcd, kube-apiserver, kubectl ($KUBE_VERSION) up to date in $OUT; nothing to build"
  exit 0
fi

mkdir -p "$OUT"
build="$OUT/.build"
rm -rf "$build"
mkdir -p "$build"
trap 'rm -rf "$build"' EXIT

# The version the release build stamps (hack/lib/version.sh); otherwise kube-apiserver and kubectl
# report v0.0.0-master. -s -w: no symbol table or DWARF (panics still print symbolised stacks).
# No -trimpath: it would change every package's build-cache key and recompile everything.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# name:package. The etcd server's main package is the module root; `go build -o DIR/` would name
# it after its last path element without the major version suffix ("server"), hence -o per tool.
tools=(etcd:go.etcd.io/etcd/server/v3 kube-apiserver:k8s.io/kubernetes/cmd/kube-apiserver
  kubectl:k8s.io/kubernetes/cmd/kubectl)
for tool in "${tools[@]}"; do
  name=${tool%%:*}
  pkg=${tool#*:}
  say "building $name ($pkg)"
  start=$SECONDS
  (cd "$MODULE" && go build -ldflags "$ldflags" -o "$build/$name" "$pkg") ||
    die "go build of $pkg failed (the first build needs the Go module proxy: check the network or GOPROXY)"
  say "built $name in $((SECONDS - start)) s ($(du -h "$build/$name" | cut -f1))"
done

"$build/etcd" --version >/dev/null || die "the built etcd does not run"
"$build/kube-apiserver" --version >/dev/null || die "the built kube-apiserver does not run"
"$build/kubectl" version --client >/dev/null || die "the built kubectl does not run"

for tool in "${tools[@]}"; do
  name=${tool%%:*}
  mv -f "$build/$name" "$OUT/$name"
done
echo "$want" >"$STAMP"
say "installed etcd $("$OUT/etcd" --version | sed -n 's/^etcd Version: //p'), $("$OUT/kube-apiserver" --version), kubectl in $OUT"
