#!/usr/bin/env bash
# One-command setup for building and testing edgefleet on Debian 12 (run as root).
#
# Installs: libclang (bindgen in wasmedge-sys), mosquitto (tests start their own broker),
# openssl + patchelf (tooling), docker-registry (tests start their own OCI registry), chromium
# and fonts-dejavu-core (the fleet page's test renders it headless and keeps a screenshot), clang and
# lld (the C SDK's handlers build for wasm32 with clang and wasm-ld: device-modules/c), podman,
# buildah, runc and debootstrap (scripts/images.sh builds and runs the container images here, from a
# debootstrapped base and without a registry: images/README.md), the
# wasm32-unknown-unknown Rust target, cargo-fuzz (scripts/fuzz.sh), the test control plane (etcd,
# kube-apiserver, kubectl built with Go by scripts/controlplane.sh),
# and the WasmEdge 0.17.1 C library + headers under $EDGEFLEET_WASMEDGE_PREFIX (default
# /opt/edgefleet/wasmedge).
#
# WasmEdge: a system-installed 0.17.x (official installer in /usr/local or ~/.wasmedge, or a distro
# with glibc >= 2.43) is used when present. Otherwise the pinned Debian sid packages are unpacked into a
# private sysroot, because bookworm has no WasmEdge and sid's build needs sid's glibc; programs linked
# against it then run through that sysroot's loader (see scripts/wasmedge-run).
#
# Idempotent: a second run checks what is there and downloads nothing.
set -euo pipefail

WASMEDGE_VERSION=0.17.1
SID_PIN=0.17.1-1+b1
CARGO_FUZZ_VERSION=0.13.2
PREFIX=${EDGEFLEET_WASMEDGE_PREFIX:-/opt/edgefleet/wasmedge}
# The closure of libwasmedge0 in sid (apt-cache depends --recurse), see docs/architecture.md.
SID_PACKAGES=(gcc-16-base libbsd0 libc6 libedit2 libffi8 libfmt11 libgcc-s1 libllvm21 libmd0
  libspdlog1.15 libstdc++6 libtinfo6 libwasmedge-dev libwasmedge0 libxml2-16 libz3-4 libzstd1 zlib1g)

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs Debian packages and writes $PREFIX)"

# --- Debian packages -------------------------------------------------------------------------
need=()
for pkg in libclang-dev mosquitto openssl patchelf pkg-config ca-certificates docker-registry \
  chromium fonts-dejavu-core clang lld podman buildah runc debootstrap; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Tests start their own brokers and registries; the packaged services are not needed.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now mosquitto docker-registry >/dev/null 2>&1 || true
  fi
else
  say "Debian packages present"
fi

# --- Rust target for device modules ------------------------------------------------------------
command -v rustup >/dev/null || die "rustup not found: install Rust (rustup) first"
if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "wasm32-unknown-unknown target present"
else
  say "adding Rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# --- cargo-fuzz for scripts/fuzz.sh (its targets build with the nightly toolchain) -------------
if [ -x "$HOME/.cargo/bin/cargo-fuzz" ] || command -v cargo-fuzz >/dev/null 2>&1; then
  say "cargo-fuzz present"
else
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install)"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
rustup toolchain list | grep -q '^nightly' ||
  say "warning: no nightly Rust toolchain; scripts/fuzz.sh needs one (rustup toolchain install nightly)"

# --- WasmEdge 0.17.1 ---------------------------------------------------------------------------
# Layout used by .cargo/config.toml and scripts/wasmedge-run:
#   $PREFIX/include/wasmedge/*.h   headers
#   $PREFIX/lib/libwasmedge.so*    only the library (wasmedge-sys puts this dir on rustc's LD_LIBRARY_PATH)
#   $PREFIX/sysroot/               sid's closure, only when the system has no usable WasmEdge
have_version() { # $1 = header dir; prints the version found in wasmedge/version.h
  sed -n 's/^#define WASMEDGE_VERSION "\(.*\)"/\1/p' "$1/wasmedge/version.h" 2>/dev/null || true
}
link_system() { # $1 = include dir, $2 = lib dir
  rm -rf "$PREFIX/include" "$PREFIX/lib" "$PREFIX/sysroot"
  mkdir -p "$PREFIX/lib"
  ln -s "$1" "$PREFIX/include"
  ln -s "$2"/libwasmedge.so* "$PREFIX/lib/"
}

if [ -f "$PREFIX/.installed" ] && [ "$(cat "$PREFIX/.installed")" = "$SID_PIN" ] \
   && [ "$(have_version "$PREFIX/include")" = "$WASMEDGE_VERSION" ]; then
  say "WasmEdge $WASMEDGE_VERSION present in $PREFIX"
else
  found=""
  for root in /usr/local /usr "$HOME/.wasmedge"; do
    v=$(have_version "$root/include")
    if [[ "$v" == 0.17.* ]]; then
      for libdir in "$root/lib" "$root/lib64" "$root/lib/x86_64-linux-gnu"; do
        if [ -e "$libdir/libwasmedge.so.0" ] && ldd "$libdir/libwasmedge.so.0" >/dev/null 2>&1 \
           && ! ldd "$libdir/libwasmedge.so.0" 2>&1 | grep -q 'not found\|version .GLIBC'; then
          found="$root/include $libdir"; break 2
        fi
      done
    fi
  done
  if [ -n "$found" ]; then
    say "using system WasmEdge ($found)"
    mkdir -p "$PREFIX"
    # shellcheck disable=SC2086
    link_system $found
    echo "$SID_PIN" >"$PREFIX/.installed"
  else
    say "installing WasmEdge $SID_PIN from Debian sid into $PREFIX (private apt state, system sources untouched)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/sources" "$work/lists/partial" "$work/debs"
    cat >"$work/sources/sid.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt_opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/sources"
      -o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/debs" -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update -qq
    avail=$(apt-cache "${apt_opts[@]}" madison libwasmedge0 | awk -F'|' '{gsub(/ /,"",$2); print $2}' | sort -u | tr '\n' ' ')
    echo " $avail " | grep -q " $SID_PIN " ||
      die "Debian sid no longer serves libwasmedge0 $SID_PIN (it has: ${avail:-nothing}).
Install WasmEdge $WASMEDGE_VERSION system-wide (official installer into /usr/local) and run this again,
or update SID_PIN in scripts/setup.sh after checking the new version builds and passes the tests."
    (cd "$work/debs" && apt-get "${apt_opts[@]}" -t sid download -qq \
      libwasmedge0="$SID_PIN" libwasmedge-dev="$SID_PIN" \
      $(printf '%s\n' "${SID_PACKAGES[@]}" | grep -v '^libwasmedge'))
    rm -rf "$PREFIX"
    mkdir -p "$PREFIX/sysroot" "$PREFIX/lib"
    for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$PREFIX/sysroot"; done
    sysroot_lib="$PREFIX/sysroot/usr/lib/x86_64-linux-gnu"
    [ -e "$sysroot_lib/ld-linux-x86-64.so.2" ] || die "sid sysroot has no loader at $sysroot_lib"
    ln -s "$PREFIX/sysroot/usr/include" "$PREFIX/include"
    ln -s "$sysroot_lib"/libwasmedge.so* "$PREFIX/lib/"
    [ "$(have_version "$PREFIX/include")" = "$WASMEDGE_VERSION" ] || die "unexpected WasmEdge headers in $PREFIX/include"
    echo "$SID_PIN" >"$PREFIX/.installed"
    say "WasmEdge $WASMEDGE_VERSION installed in $PREFIX"
  fi
fi

# --- Test control plane: etcd, kube-apiserver, kubectl for the controller's tests -------------
# Built from source with Go (>= 1.26; only for these test tools, never the product) by
# scripts/controlplane.sh into ~/.cache/edgefleet/controlplane/<version>. Go needs network access
# to its module proxy only on the first build; later runs find the stamp and build nothing.
"$(dirname "${BASH_SOURCE[0]}")/controlplane.sh"

say "done. Test command: scripts/test.sh"
