#!/usr/bin/env bash
# Builds target/windows-gnu/muster-agent-<version>-x64.msi from the Windows build of the agent
# with wixl (Debian's wixl package, from msitools). Run from anywhere after
#   bash .ci/windows/windows-check.sh build
# (which builds target/windows-gnu/x86_64-pc-windows-gnu/<profile>/muster-agent.exe).
# Environment: WIN_TARGET_DIR (default target/windows-gnu), WIN_PROFILE (default release).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT_DIR="${WIN_TARGET_DIR:-target/windows-gnu}"
PROFILE="${WIN_PROFILE:-release}"
[ "$PROFILE" = dev ] && PROFILE=debug
# The workspace's version, `version = "..."` under [workspace.package].
VERSION=$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version *=/{print $2; exit}' Cargo.toml)
BINARY="$OUT_DIR/x86_64-pc-windows-gnu/$PROFILE/muster-agent.exe"
MSI="$OUT_DIR/muster-agent-$VERSION-x64.msi"
[ -f "$BINARY" ] || { echo "build-msi: $BINARY is missing (windows-check.sh build)" >&2; exit 1; }
command -v wixl >/dev/null || { echo "build-msi: wixl is missing (apt-get install wixl)" >&2; exit 1; }
# wixl wants paths relative to the working directory. Its GLib warnings about WiX attributes
# it does not know are dropped; the .wxs uses none it needs.
wixl -a x64 -D Version="$VERSION" -D Binary="${BINARY#"$ROOT"/}" -o "$MSI" \
  packaging/windows/muster-agent.wxs 2> >(grep -v -e 'GLib-GObject-WARNING' -e '^$' >&2)
echo "$MSI"
