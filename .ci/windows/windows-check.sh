#!/usr/bin/env bash
# Type-check, lint, build and test Muster's Windows agent (x86_64-pc-windows-gnu) on
# Debian 12 without rustup targets: Debian's rustc-web (its std sources, -Zbuild-std),
# the mingw-w64 linker, and Wine 8 as the test runner. See docs/WINDOWS.md.
#
# Usage (from the workspace root, as root for the package step):
#   bash .ci/windows/windows-check.sh [packages|check|clippy|build|test|msi|all]
#
# Environment: WIN_TARGET_DIR (default target/windows-gnu), WINEPREFIX (default
# /tmp/muster-wine), WIN_PROFILE (build/msi profile; default release).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STEP="${1:-all}"
TARGET=x86_64-pc-windows-gnu
# The crates that make up the Windows agent (the server is Linux-only).
CRATES=(-p muster-proto -p muster-collect -p muster-agent)

# rustc-web, cargo-web, rust-web-src and rust-web-clippy come from bookworm-security and must
# be one version: build-std needs the compiler that matches the std sources exactly.
RUST_PKGS="rustc-web cargo-web rust-web-src rust-web-clippy"
OTHER_PKGS="gcc-mingw-w64-x86-64-win32 wine64 msitools wixl"

packages() {
  if ! dpkg -s $RUST_PKGS $OTHER_PKGS >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    local v
    v=$(apt-cache policy rustc-web | awk '/Candidate:/{print $2}')
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      $(for p in $RUST_PKGS; do printf '%s=%s ' "$p" "$v"; done) $OTHER_PKGS >/dev/null
  fi
  local want
  want=$(dpkg-query -W -f='${Version}' rustc-web)
  for p in cargo-web rust-web-src rust-web-clippy; do
    [ "$(dpkg-query -W -f='${Version}' "$p")" = "$want" ] ||
      { echo "windows-check: $p is not at rustc-web's version $want" >&2; exit 1; }
  done
  [ -f /usr/lib/rustlib/src/rust/library/Cargo.lock ] ||
    { echo "windows-check: rust-web-src's std sources are missing" >&2; exit 1; }
}

export WINEPREFIX="${WINEPREFIX:-/tmp/muster-wine}" WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="mscoree,mshtml="
unset DISPLAY
WINE=/usr/lib/wine/wine64

# Debian's 1.96 toolchain, not rustup's: PATH puts /usr/bin first for this call only, so
# `cargo clippy` finds Debian's clippy-driver and plain `cargo` elsewhere stays rustup's.
win() {
  PATH="/usr/bin:$PATH" \
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
  RUSTC_BOOTSTRAP=1 \
  CARGO_UNSTABLE_BUILD_STD=std,panic_abort \
  CARGO_BUILD_TARGET="$TARGET" \
  CARGO_TARGET_DIR="${WIN_TARGET_DIR:-$ROOT/target/windows-gnu}" \
  CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
  CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$WINE" \
  /usr/bin/cargo "$@"
}

# A 64-bit prefix with the stand-in bcryptprimitives.dll, reporting Windows 10.
wine_prefix() {
  local dll="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
  [ -f "$dll" ] && return 0
  "$WINE" wineboot --init >/dev/null 2>&1 || true
  /usr/lib/wine/wineserver -w
  "$WINE" winecfg -v win10 >/dev/null 2>&1 || true
  /usr/lib/wine/wineserver -w
  x86_64-w64-mingw32-gcc -O2 -shared -s -o "$dll" "$HERE/bcryptprimitives.c" -ladvapi32
}

timed() { local s=$SECONDS; "$@"; echo "[windows-check] $* took $((SECONDS - s)) s" >&2; }

# Benches measure Linux's collectors; everything else is checked.
TARGETS=(--lib --bins --tests)
check()  { timed win check "${CRATES[@]}" "${TARGETS[@]}" --locked; }
clippy() { timed win clippy "${CRATES[@]}" "${TARGETS[@]}" --locked -- -D warnings; }
build()  { timed win build -p muster-agent --profile "${WIN_PROFILE:-release}" --locked; }
# insta finds the workspace with `cargo metadata`, which a test under Wine cannot run: without
# INSTA_WORKSPACE_ROOT every snapshot would look new.
tests()  { timed wine_prefix; INSTA_WORKSPACE_ROOT="$ROOT" timed win test "${CRATES[@]}" --locked; }
# The MSI from the build, then installed and uninstalled under Wine (packaging/windows/).
# In a prefix of its own, removed afterwards: an install left behind by an earlier run (whose
# MSI had another ProductCode, which this one's uninstall does not reach) cannot change the
# outcome.
msi() {
  build
  local out shared=$WINEPREFIX rc=0
  out=$(timed bash "$ROOT/packaging/windows/build-msi.sh")
  WINEPREFIX=$(mktemp -d /tmp/muster-wine-msi.XXXXXX)
  timed wine_prefix
  timed bash "$ROOT/packaging/windows/test-msi.sh" "$out" || rc=$?
  /usr/lib/wine/wineserver -k 2>/dev/null || true
  rm -rf "$WINEPREFIX"
  WINEPREFIX=$shared
  return "$rc"
}

cd "$ROOT"
trap '/usr/lib/wine/wineserver -k 2>/dev/null || true' EXIT  # no Wine process outlives us
case "$STEP" in
  packages) packages ;;
  check) packages; check ;;
  clippy) packages; clippy ;;
  build) packages; build ;;
  test) packages; tests ;;
  msi) packages; msi ;;
  all) packages; check; clippy; tests; msi ;;
  *) echo "usage: $0 [packages|check|clippy|build|test|msi|all]" >&2; exit 2 ;;
esac
