#!/usr/bin/env bash
# Builds edgefleet's container images on this machine, without a container registry, and runs them.
# See images/README.md. Run as root on Debian 12 after scripts/setup.sh (podman, buildah, runc,
# debootstrap).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/images.sh [build] [--refresh-base]
       scripts/images.sh check [--refresh-base]
       scripts/images.sh save DIR

  build    (the default) release-build edge-agent, edgefleet-sandbox-worker and
           edgefleet-controller, make the Debian 12 base (debootstrap --variant=minbase bookworm,
           cached), build the images from images/Containerfile, check that each one starts
           read-only as uid 65532, and print their sizes:
             localhost/edgefleet-controller:<version>
             localhost/edgefleet-agent:<version>
             localhost/edgefleet-mosquitto:<version>
           <version> is the workspace version in Cargo.toml.
  check    build, then run the image test (controller/tests/image.rs): the controller, a device
           broker and the agent from their images serve a device against a real broker.
  save DIR write `podman save` archives of the three images into DIR, with SHA256SUMS
           (on a K3s node: k3s ctr images import DIR/edgefleet-agent-<version>.tar).

  --refresh-base  debootstrap the base again (otherwise the cached root filesystem is reused)

Environment: EDGEFLEET_IMAGE_CACHE (default /var/cache/edgefleet/images) holds the base root
filesystem; DEBIAN_MIRROR (default http://deb.debian.org/debian); CONTAINERS_CONF (default
images/containers.conf: no default ulimits, runc).
EOF
}

cd "$(dirname "$0")/.."
repo=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
# The settings containers need here (see images/containers.conf).
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/images/containers.conf}

say() { printf '[images] %s\n' "$*"; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

command=build
refresh_base=false
save_dir=""
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  build | check) command=$1; shift ;;
  save)
    command=save
    [ $# -ge 2 ] || die "save needs a folder: scripts/images.sh save DIR"
    save_dir=$2; shift 2 ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    --refresh-base) refresh_base=true ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

[ "$(id -u)" = 0 ] || die "run as root (rootful podman; debootstrap)"
for tool in podman debootstrap cargo; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup.sh"
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || die "no version in Cargo.toml's [workspace.package]"
images=(controller agent mosquitto)
image_name() { echo "localhost/edgefleet-$1:$version"; }

# --- save --------------------------------------------------------------------------------------
if [ "$command" = save ]; then
  mkdir -p "$save_dir"
  for image in "${images[@]}"; do
    podman image exists "$(image_name "$image")" ||
      die "$(image_name "$image") is not built: run scripts/images.sh first"
  done
  for image in "${images[@]}"; do
    file="$save_dir/edgefleet-$image-$version.tar"
    rm -f "$file"
    # docker-archive keeps the image's name in the archive, so `k3s ctr images import` tags it
    # exactly as the manifests reference it.
    podman save --quiet --format docker-archive -o "$file" "$(image_name "$image")"
    say "wrote $file ($(du -h "$file" | cut -f1))"
  done
  (cd "$save_dir" && sha256sum edgefleet-*-"$version".tar >SHA256SUMS)
  say "wrote $save_dir/SHA256SUMS"
  exit 0
fi

started=$SECONDS
elapsed() { echo "$((SECONDS - started)) s"; }

# --- binaries ----------------------------------------------------------------------------------
say "release build: edge-agent, edgefleet-sandbox-worker, edgefleet-controller"
cargo build --release --locked -p edge-agent -p edgefleet-sandbox-worker -p edgefleet-controller
target=${CARGO_TARGET_DIR:-$repo/target}
release=$target/release
say "binaries built ($(elapsed))"

# --- base: Debian 12 minbase, imported as a local image ----------------------------------------
# Only the build stages start from it (apt, dpkg, the loader to list libraries); the images start
# FROM scratch. Cached as a tarball, and imported only when the image is missing: a fresh import
# gets a new id, which would invalidate every cached layer built on it.
base=localhost/edgefleet-debian:bookworm
cache=${EDGEFLEET_IMAGE_CACHE:-/var/cache/edgefleet/images}
base_tar=$cache/debian-bookworm-minbase.tar
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if $refresh_base; then
  rm -f "$base_tar"
  podman image exists "$base" && podman rmi "$base" >/dev/null
fi
if podman image exists "$base"; then
  say "base $base present"
else
  if [ -f "$base_tar" ]; then
    say "base root filesystem cached: $base_tar"
  else
    say "debootstrap --variant=minbase bookworm from $mirror (about a minute)"
    mkdir -p "$cache"
    rootfs=$cache/rootfs.tmp
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
      die "debootstrap failed; see $cache/debootstrap.log"
    tar --numeric-owner -C "$rootfs" -cf "$base_tar.tmp" .
    mv "$base_tar.tmp" "$base_tar"
    rm -rf "$rootfs"
  fi
  podman import --quiet "$base_tar" "$base" >/dev/null
  say "imported $base ($(elapsed))"
fi

# --- build context -----------------------------------------------------------------------------
# Only what the Containerfile copies, not the repository and its multi-GiB target folder.
context=$target/images/context
rm -rf "$context"
mkdir -p "$context/bin" "$context/brokers"
# The binaries without their line tables (debug = "line-tables-only" in the release profile;
# measured: the agent 82 -> 16 MB, the controller 151 -> 29 MB, the worker 28 -> 1.7 MB). Symbols
# stay, so a backtrace still names functions; the line tables are kept in target/images/debug/
# (found by build id or debuglink) for whoever symbolizes a crash of these exact binaries.
debug=$target/images/debug
mkdir -p "$debug"
for bin in edge-agent edgefleet-sandbox-worker edgefleet-controller; do
  objcopy --only-keep-debug "$release/$bin" "$debug/$bin.debug"
  objcopy --strip-debug --add-gnu-debuglink="$debug/$bin.debug" "$release/$bin" "$context/bin/$bin"
  chmod 0755 "$context/bin/$bin"
done
cp -r brokers/device brokers/cloud "$context/brokers/"
install -m 0755 images/collect-libs.sh "$context/collect-libs.sh"

# The WasmEdge packages: the same pin and closure as scripts/setup.sh (one source of truth).
eval "$(sed -n -e '/^SID_PIN=/p' -e '/^SID_PACKAGES=(/,/)$/p' scripts/setup.sh)"
if [ -z "${SID_PIN:-}" ] || [ -z "${SID_PACKAGES[*]:-}" ]; then
  die "no SID_PIN/SID_PACKAGES in scripts/setup.sh"
fi
runtime_packages=()
for pkg in "${SID_PACKAGES[@]}"; do
  [[ "$pkg" == *-dev ]] || runtime_packages+=("$pkg")
done

# The build stage fetches sid's packages with the host's policy on expired Release files (see the
# Containerfile's wasmedge stage).
check_valid_until=true
eval "$(apt-config shell check_valid_until Acquire::Check-Valid-Until)"

# --- images ------------------------------------------------------------------------------------
for image in mosquitto agent controller; do
  say "building $(image_name "$image")"
  podman build --runtime runc --network host --pull=never -q \
    -f images/Containerfile --target "$image" \
    --build-arg BASE="$base" --build-arg VERSION="$version" \
    --build-arg SID_PIN="$SID_PIN" --build-arg SID_PACKAGES="${runtime_packages[*]}" \
    --build-arg APT_CHECK_VALID_UNTIL="$check_valid_until" \
    -t "$(image_name "$image")" "$context" >/dev/null
done
say "images built ($(elapsed))"

# --- every binary starts in its image: read-only, its user, no capabilities, no network ------
run() { # image, entrypoint, args...
  local image=$1 entrypoint=$2; shift 2
  podman run --rm --runtime runc --read-only --read-only-tmpfs=false \
    --cap-drop all --security-opt no-new-privileges --network none \
    --entrypoint "$entrypoint" "$(image_name "$image")" "$@" 2>&1
}
expect() { # what, pattern, output
  grep -q -- "$2" <<<"$3" || die "$1: expected '$2', got: $3"
  say "  $1: $(head -1 <<<"$3")"
}
say "starting each binary in its image"
expect "agent" "edge-agent $version" "$(run agent /usr/local/bin/edge-agent --version)"
expect "agent's sandbox worker" "0\.17\.1" "$(run agent /usr/local/bin/edgefleet-sandbox-worker version)"
expect "controller" "edgefleet-controller $version" "$(run controller /usr/local/bin/edgefleet-controller --version)"
expect "controller's sandbox worker" "0\.17\.1" "$(run controller /usr/local/bin/edgefleet-sandbox-worker version)"
# mosquitto has no --version: -h prints it (and exits non-zero).
expect "mosquitto" "mosquitto version 2\.0\.11" "$(run mosquitto /usr/sbin/mosquitto -h || true)"
for image in "${images[@]}"; do
  user=$(podman image inspect --format '{{.Config.User}}' "$(image_name "$image")")
  [ "$user" = 65532:65532 ] || die "$(image_name "$image") runs as '$user', not 65532:65532"
done

# --- sizes -------------------------------------------------------------------------------------
echo
printf '%-42s %10s %7s\n' IMAGE SIZE LAYERS
for image in "${images[@]}"; do
  name=$(image_name "$image")
  bytes=$(podman image inspect --format '{{.Size}}' "$name")
  layers=$(podman image inspect --format '{{len .RootFS.Layers}}' "$name")
  printf '%-42s %7s MB %7s\n' "$name" "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')" "$layers"
done
echo
say "done ($(elapsed)); scripts/images.sh save DIR writes archives for k3s ctr images import"

# --- check -------------------------------------------------------------------------------------
if [ "$command" = check ]; then
  say "image test: cargo test -p edgefleet-controller --test image -- --ignored"
  cargo test --locked -p edgefleet-controller --test image -- --ignored
fi
