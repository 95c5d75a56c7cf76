#!/usr/bin/env bash
# Installs and uninstalls the MSI under Wine and checks what each leaves behind:
#   msiexec /i → muster-agent.exe in Program Files, agent.toml in ProgramData (written by the
#                Configure action), the service registered with the SCM (`service status`
#                says installed: exit 0 running or 3 stopped, not 4);
#   msiexec /x → the service deleted (exit 4), the binary gone, ProgramData\Muster\state kept;
#   msiexec /x PURGE=1 after a second install → ProgramData\Muster gone.
# The installed agent has no [api] base_url, so the service it starts stops again (exit 78):
# the test checks registration, not that it runs (the service tests do that with a server).
# Run by `windows-check.sh msi` after build-msi.sh, with its WINEPREFIX.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MSI="${1:?usage: test-msi.sh path/to.msi}"
MSI="$(cd "$(dirname "$MSI")" && pwd)/$(basename "$MSI")"
WINE=/usr/lib/wine/wine64
export WINEDEBUG="${WINEDEBUG:--all}"
C="$WINEPREFIX/drive_c"
EXE="$C/Program Files/Muster/muster-agent.exe"
DATA="$C/ProgramData/Muster"
fail() { echo "test-msi: FAIL: $*" >&2; exit 1; }
winpath() { printf 'Z:%s' "${1//\//\\}"; }
service_status() {
  # The SCM's answer through a copy of the agent outside Program Files (the installed one
  # goes away on uninstall).
  set +e; "$WINE" "$PROBE" service status >/tmp/test-msi.status 2>&1; local rc=$?; set -e
  cat /tmp/test-msi.status >&2; return $rc
}
# The MSI starts the service; without a base_url the agent exits 78 at once. Wait for that
# before the next msiexec, or the exiting process may still hold the binary while RemoveFiles
# runs (Windows then replaces it at the next reboot; Wine leaves it).
wait_stopped() {
  for _ in $(seq 1 50); do
    service_status >/dev/null 2>&1 || true
    grep -q 'state: Stopped' /tmp/test-msi.status && return 0
    sleep 0.4
  done
  fail "the service did not stop: $(cat /tmp/test-msi.status)"
}
PROFILE="${WIN_PROFILE:-release}"
[ "$PROFILE" = dev ] && PROFILE=debug
PROBE="$(mktemp -d)/probe.exe"
cp "$(dirname "$MSI")/x86_64-pc-windows-gnu/$PROFILE/muster-agent.exe" "$PROBE"

# A leftover install from an interrupted run would make this test meaningless.
"$WINE" msiexec /x "$(winpath "$MSI")" /qn >/dev/null 2>&1 || true
rm -rf "$DATA"

"$WINE" msiexec /i "$(winpath "$MSI")" /qn || fail "msiexec /i exited $?"
[ -f "$EXE" ] || fail "no $EXE after install"
[ -f "$DATA/agent.toml" ] || fail "no $DATA/agent.toml after install (Configure action)"
[ -d "$DATA/state" ] && [ -d "$DATA/logs" ] || fail "no state/ or logs/ under $DATA"
rc=0; service_status || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 3 ] || fail "service status exited $rc after install (4 = not installed)"
grep -q 'muster-agent.exe' /tmp/test-msi.status || fail "service binary path not shown"
wait_stopped
echo "keep me" >"$DATA/state/agent.key"
echo "# edited" >>"$DATA/agent.toml"

# A reinstall (repair) keeps an edited configuration.
"$WINE" msiexec /i "$(winpath "$MSI")" /qn REINSTALL=ALL REINSTALLMODE=vomus || fail "repair exited $?"
grep -q '^# edited' "$DATA/agent.toml" || fail "the repair replaced agent.toml"
wait_stopped

"$WINE" msiexec /x "$(winpath "$MSI")" /qn || fail "msiexec /x exited $?"
[ ! -e "$EXE" ] || fail "$EXE still there after uninstall"
rc=0; service_status || rc=$?
[ "$rc" = 4 ] || fail "service status exited $rc after uninstall, not 4 (not installed)"
[ "$(cat "$DATA/state/agent.key")" = "keep me" ] || fail "state not kept by uninstall"
[ -f "$DATA/agent.toml" ] || fail "agent.toml not kept by uninstall"

"$WINE" msiexec /i "$(winpath "$MSI")" /qn || fail "second msiexec /i exited $?"
wait_stopped
"$WINE" msiexec /x "$(winpath "$MSI")" /qn PURGE=1 || fail "msiexec /x PURGE=1 exited $?"
[ ! -e "$DATA" ] || fail "$DATA still there after uninstall with PURGE=1"
[ ! -e "$EXE" ] || fail "$EXE still there after uninstall with PURGE=1"
echo "test-msi: ok (install, repair, uninstall keeping state, uninstall with PURGE=1)"
