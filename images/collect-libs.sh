#!/bin/sh
# Copies the shared libraries that ELF files load, as the dynamic loader resolves them, into a root
# filesystem under construction. Runs inside the images' build stage (images/Containerfile).
#
#   collect-libs.sh OUT [--sysroot DIR] FILE...
#
# Every library FILE needs (its whole closure, from `ld.so --list`, which is what ldd runs) is
# copied, symlinks resolved, to OUT/usr/lib/x86_64-linux-gnu/<the name it is loaded by>; the loader
# goes to the same folder, with OUT/usr/lib64/ld-linux-x86-64.so.2 pointing at it (the programs'
# PT_INTERP is /lib64/ld-linux-x86-64.so.2; the image links /lib64 to usr/lib64).
#
# With --sysroot, libraries are resolved with that tree's own loader and must all come from it: one
# that is missing there and would be found in the build stage's own /usr/lib instead is an error,
# not a silent mix of two glibcs. Without --sysroot, the Debian package that installed each file
# (FILE itself and every library) is looked up with dpkg and its copyright file copied to
# OUT/usr/share/doc/<package>/: the licences of what the image redistributes travel with it.
set -eu

die() { echo "collect-libs: $*" >&2; exit 1; }

copyright() { # $1 = a file installed by a Debian package
  # dpkg knows each file by the path its package ships, which merged /usr may alias (/bin/sed is
  # /usr/bin/sed): try the path, its target, and both without /usr.
  real=$(readlink -f "$1")
  pkg=""
  for candidate in "$1" "$real" "${1#/usr}" "${real#/usr}"; do
    pkg=$(dpkg -S "$candidate" 2>/dev/null) && break
  done
  [ -n "$pkg" ] || die "$1: no Debian package owns it (its licence could not be shipped)"
  pkg=${pkg%%:*}
  mkdir -p "$out/usr/share/doc/$pkg"
  cp "/usr/share/doc/$pkg/copyright" "$out/usr/share/doc/$pkg/copyright"
}

[ $# -ge 2 ] || die "usage: collect-libs.sh OUT [--sysroot DIR] FILE..."
out=$1; shift
sysroot=""
if [ "$1" = --sysroot ]; then sysroot=$2; shift 2; fi
[ $# -ge 1 ] || die "no files given"

libdir=$sysroot/usr/lib/x86_64-linux-gnu
loader=$libdir/ld-linux-x86-64.so.2
[ -x "$loader" ] || die "no loader at $loader"
mkdir -p "$out/usr/lib/x86_64-linux-gnu" "$out/usr/lib64"

for file in "$@"; do
  [ -f "$file" ] || die "$file: no such file"
  [ -n "$sysroot" ] || copyright "$file"
  if [ -n "$sysroot" ]; then
    listing=$("$loader" --library-path "$libdir" --list "$file") || die "$file: the loader cannot list it"
  else
    listing=$("$loader" --list "$file") || die "$file: the loader cannot list it"
  fi
  echo "$listing" | grep -q 'not found' && die "$file: unresolved libraries:
$listing"
  # Lines are `name => /path (0x...)`, the loader itself as `/path (0x...)`, and the vDSO (no file).
  echo "$listing" | while read -r name arrow path _; do
    case "$name" in linux-vdso.so.*) continue ;; esac
    # The loader may also appear as `/lib64/ld-linux-x86-64.so.2 => ...` (libc needs it).
    if [ "$arrow" != "=>" ]; then path=$name; fi
    name=$(basename "$name")
    case "$path" in /*) ;; *) path=$libdir/$(basename "$path") ;; esac
    if [ -n "$sysroot" ]; then
      case "$(readlink -f "$path")" in "$sysroot"/*) ;; *) die "$file: $name resolved outside $sysroot ($path)" ;; esac
    fi
    cp -L "$path" "$out/usr/lib/x86_64-linux-gnu/$name"
    [ -n "$sysroot" ] || copyright "$path"
  done
done
ln -sf ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$out/usr/lib64/ld-linux-x86-64.so.2"
