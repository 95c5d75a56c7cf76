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
LOGS="$(mktemp -d)"
# msiexec's verbose log of the step that failed is the only account of why it did.
fail() {
  echo "test-msi: FAIL: $*" >&2
  if [ -n "${LAST_LOG:-}" ] && [ -s "$LAST_LOG" ]; then
    echo "--- the end of msiexec's log ($LAST_LOG):" >&2
    tail -n 60 "$LAST_LOG" >&2
  fi
  exit 1
}
# msi STEP ARGS...: msiexec ARGS with a verbose log kept as $LOGS/STEP.log.
msi() {
  local step=$1; shift
  LAST_LOG="$LOGS/$step.log"
  "$WINE" msiexec "$@" /l*v "$(winpath "$LAST_LOG")"
}
winpath() { printf 'Z:%s' "${1//\//\\}"; }
service_status() {
  # The SCM's answer through a copy of the agent outside Program Files (the installed one
  # goes away on uninstall).
  set +e; "$WINE" "$PROBE" service status >/tmp/test-msi.status 2>&1; local rc=$?; set -e
  cat /tmp/test-msi.status >&2; return $rc
}
# The MSI starts the service; without a base_url the agent exits 78 at once. Wait for that,
# and for its process to be gone, before the next msiexec: a process still exiting may hold
# the binary while RemoveFiles runs (Windows then replaces it at the next reboot; Wine leaves
# it), and Wine's StartService fails while it is still there (seen as StartServices failing
# in a repair under load).
wait_stopped() {
  for _ in $(seq 1 50); do
    service_status >/dev/null 2>&1 || true
    if grep -q 'state: Stopped' /tmp/test-msi.status && ! pgrep -f 'Muster.muster-agent\.exe run --service' >/dev/null; then
      return 0
    fi
    sleep 0.4
  done
  fail "the service did not stop: $(cat /tmp/test-msi.status)"
}
PROFILE="${WIN_PROFILE:-release}"
[ "$PROFILE" = dev ] && PROFILE=debug
PROBE="$(mktemp -d)/probe.exe"
cp "$(dirname "$MSI")/x86_64-pc-windows-gnu/$PROFILE/muster-agent.exe" "$PROBE"

# A leftover install from an interrupted run would make this test meaningless.
msi leftover /x "$(winpath "$MSI")" /qn >/dev/null 2>&1 || true
rm -rf "$DATA"

msi install /i "$(winpath "$MSI")" /qn || fail "msiexec /i exited $?"
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
msi repair /i "$(winpath "$MSI")" /qn REINSTALL=ALL REINSTALLMODE=vomus || fail "repair exited $?"
grep -q '^# edited' "$DATA/agent.toml" || fail "the repair replaced agent.toml"
wait_stopped

msi uninstall /x "$(winpath "$MSI")" /qn || fail "msiexec /x exited $?"
[ ! -e "$EXE" ] || fail "$EXE still there after uninstall"
rc=0; service_status || rc=$?
[ "$rc" = 4 ] || fail "service status exited $rc after uninstall, not 4 (not installed)"
[ "$(cat "$DATA/state/agent.key")" = "keep me" ] || fail "state not kept by uninstall"
[ -f "$DATA/agent.toml" ] || fail "agent.toml not kept by uninstall"

msi install-again /i "$(winpath "$MSI")" /qn || fail "second msiexec /i exited $?"
wait_stopped
msi purge /x "$(winpath "$MSI")" /qn PURGE=1 || fail "msiexec /x PURGE=1 exited $?"
[ ! -e "$DATA" ] || fail "$DATA still there after uninstall with PURGE=1"
[ ! -e "$EXE" ] || fail "$EXE still there after uninstall with PURGE=1"
echo "test-msi: ok (install, repair, uninstall keeping state, uninstall with PURGE=1)"
rm -rf "$LOGS"
