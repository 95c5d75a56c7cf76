#!/usr/bin/env bash
# Builds the muster-agent and muster-server Debian packages (cargo-deb), lints them (lintian: no
# errors), installs them into a scratch root with `dpkg --root` (maintainer scripts run
# chrootless with DPKG_ROOT set: nothing on this machine is touched), checks every file, owner
# and mode, verifies the installed units with systemd-analyze, upgrades (reinstalls) with an
# edited configuration, removes (configuration, data and logs stay) and purges (they go).
#
#   packaging/check-debs.sh            # profile deb-check (unoptimised, stripped), for CI
#   MUSTER_DEB_PROFILE=release packaging/check-debs.sh
#
# Needs: cargo-deb, lintian, dpkg, systemd (systemd-analyze, systemd-sysusers). Run as root
# (owners are set in the scratch root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=${MUSTER_DEB_PROFILE:-deb-check}
out=target/debian
failures=0
step() { echo; echo "--- $*"; }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# expect PATH MODE OWNER:GROUP (names resolved in the scratch root's passwd/group)
expect() {
    local path=$1 mode=$2 owner=$3 uid gid got
    uid=$(id_in passwd "${owner%%:*}")
    gid=$(id_in group "${owner#*:}")
    if ! got=$(stat -c '%a %u:%g' "$root$path" 2>/dev/null); then
        fail "$path is missing"
        return
    fi
    if [ "$got" = "$mode $uid:$gid" ]; then
        pass "$path $mode $owner"
    else
        fail "$path is $got, expected $mode $uid:$gid ($owner)"
    fi
}
expect_gone() {
    if [ -e "$root$1" ] || [ -L "$root$1" ]; then fail "$1 should be gone"; else pass "$1 gone"; fi
}
expect_there() {
    if [ -e "$root$1" ]; then pass "$1 kept"; else fail "$1 should still be there"; fi
}
id_in() {
    case $2 in root) echo 0; return ;; esac
    awk -F: -v n="$2" '$1 == n { print $3 }' "$root/etc/$1"
}
in_root() { dpkg --root="$root" --force-script-chrootless --force-depends "$@"; }

step "build the packages (profile $profile)"
mkdir -p "$out"
# One build of both binaries, then cargo-deb packages them without building: `cargo deb -p`
# per package would build each with its own feature set, i.e. most dependencies twice.
nice -n 19 cargo build --locked --profile "$profile" -p muster-agent -p muster-server --bins
agent_deb=$(nice -n 19 cargo deb --no-build -p muster-agent --profile "$profile" --output "$out" \
    | tail -n 1)
server_deb=$(nice -n 19 cargo deb --no-build -p muster-server --profile "$profile" --output "$out" \
    | tail -n 1)
ls -l "$agent_deb" "$server_deb"
dpkg-deb --info "$agent_deb"
dpkg-deb --contents "$agent_deb"
dpkg-deb --contents "$server_deb"

step "lintian (errors fail; warnings are listed)"
for deb in "$agent_deb" "$server_deb"; do
    if nice -n 19 lintian --fail-on error --display-level ">=warning" "$deb"; then
        pass "lintian $(basename "$deb")"
    else
        fail "lintian reports errors for $(basename "$deb")"
    fi
done

step "install into a scratch root (dpkg --root, chrootless maintainer scripts)"
root=$(mktemp -d /tmp/muster-debroot.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
in_root --install "$agent_deb" "$server_deb"
for pkg in muster-agent muster-server; do
    state=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${db:Status-Status}' "$pkg")
    [ "$state" = installed ] && pass "$pkg installed" || fail "$pkg is $state"
done

step "files, owners and modes"
grep -q '^muster:x:[0-9]*:[0-9]*:Muster:/var/lib/muster:/usr/sbin/nologin$' "$root/etc/passwd" \
    && pass "user muster" || fail "user muster missing: $(cat "$root/etc/passwd")"
grep -q '^muster:x:[0-9]*:$' "$root/etc/group" && pass "group muster" || fail "group muster missing"
expect /usr/bin/muster-agent 755 root:root
expect /usr/bin/muster-server 755 root:root
expect /lib/systemd/system/muster-agent.service 644 root:root
expect /lib/systemd/system/muster-server.service 644 root:root
expect /etc/init.d/muster-agent 755 root:root
expect /etc/logrotate.d/muster-agent 644 root:root
expect /usr/lib/sysusers.d/muster-agent.conf 644 root:root
expect /etc/muster 750 root:muster
expect /etc/muster/agent.toml 640 root:muster
expect /etc/muster/server.toml 640 root:muster
expect /var/lib/muster 750 root:muster
expect /var/lib/muster/server 750 muster:muster
expect /var/log/muster 750 root:muster
cmp "$root/lib/systemd/system/muster-agent.service" packaging/systemd/muster-agent.service \
    && pass "agent unit is packaging/systemd/muster-agent.service" || fail "agent unit differs"
cmp "$root/etc/muster/agent.toml" packaging/config/agent.toml \
    && pass "agent.toml is the template" || fail "agent.toml differs"
for unit in muster-agent muster-server; do
    link="$root/etc/systemd/system/multi-user.target.wants/$unit.service"
    [ -L "$link" ] && pass "$unit enabled ($(readlink "$link"))" || fail "$unit not enabled"
done
ls "$root"/etc/rc2.d/S*muster-agent >/dev/null 2>&1 && pass "runlevel 2 start link" \
    || fail "no /etc/rc2.d/S??muster-agent"
ls "$root"/etc/rc0.d/K*muster-agent >/dev/null 2>&1 && pass "runlevel 0 stop link" \
    || fail "no /etc/rc0.d/K??muster-agent"
for conffile in /etc/muster/agent.toml /etc/init.d/muster-agent /etc/logrotate.d/muster-agent; do
    dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Conffiles}\n' muster-agent \
        | grep -q " $conffile " && pass "conffile $conffile" || fail "$conffile is not a conffile"
done
dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Conffiles}\n' muster-server \
    | grep -q " /etc/muster/server.toml " && pass "conffile server.toml" \
    || fail "server.toml is not a conffile"

step "the installed programs and their configuration"
"$root/usr/bin/muster-agent" --version && pass "muster-agent runs" || fail "muster-agent does not run"
"$root/usr/bin/muster-agent" config check --quiet --config "$root/etc/muster/agent.toml" \
    && pass "agent.toml is valid" || fail "agent.toml is invalid"
scratch_db=$(mktemp -d)
"$root/usr/bin/muster-server" admin --config "$root/etc/muster/server.toml" \
    --database-url "sqlite://$scratch_db/check.db" tenant list >/dev/null \
    && pass "server.toml is valid" || fail "server.toml is invalid"
rm -rf "$scratch_db"

step "systemd-analyze verify on the installed units"
mkdir -p "$root/usr/lib/systemd" "$root/bin"
cp -a /lib/systemd/system "$root/usr/lib/systemd/"
cp /bin/kill "$root/bin/kill"
if verify=$(systemd-analyze verify --root="$root" /lib/systemd/system/muster-agent.service \
    /lib/systemd/system/muster-server.service 2>&1) && [ -z "$verify" ]; then
    pass "systemd-analyze verify"
else
    fail "systemd-analyze verify: $verify"
fi
rm -rf "$root/usr/lib/systemd/system" "$root/bin"

step "upgrade (reinstall) keeps an edited configuration and its permissions"
printf '\n[api]\nbase_url = "https://muster.example.com/api"\n' >> "$root/etc/muster/agent.toml"
edited=$(sha256sum < "$root/etc/muster/agent.toml")
in_root --force-confold --install "$agent_deb"
[ "$(sha256sum < "$root/etc/muster/agent.toml")" = "$edited" ] && pass "edited agent.toml kept" \
    || fail "agent.toml was replaced on upgrade"
expect /etc/muster/agent.toml 640 root:muster
[ "$(grep -c '^muster:' "$root/etc/passwd")" = 1 ] && pass "user not added twice" \
    || fail "user muster added twice"

step "remove: programs go; configuration, data and logs stay"
echo key > "$root/var/lib/muster/agent.key"
echo db > "$root/var/lib/muster/server/muster.db"
echo log > "$root/var/log/muster/agent.log"
in_root --remove muster-agent muster-server
expect_gone /usr/bin/muster-agent
expect_gone /usr/bin/muster-server
expect_gone /lib/systemd/system/muster-agent.service
expect_gone /lib/systemd/system/muster-server.service
expect_there /etc/muster/agent.toml
expect_there /etc/muster/server.toml
expect_there /etc/init.d/muster-agent
expect_there /var/lib/muster/agent.key
expect_there /var/lib/muster/server/muster.db
expect_there /var/log/muster/agent.log

step "purge: configuration, data and logs go; the muster user stays"
in_root --purge muster-agent muster-server
expect_gone /etc/muster
expect_gone /etc/init.d/muster-agent
expect_gone /etc/logrotate.d/muster-agent
expect_gone /var/lib/muster
expect_gone /var/log/muster
expect_gone /etc/systemd/system/multi-user.target.wants/muster-agent.service
expect_gone /etc/systemd/system/multi-user.target.wants/muster-server.service
expect_gone /etc/rc2.d/S01muster-agent
grep -q '^muster:' "$root/etc/passwd" && pass "user muster kept" || fail "user muster removed"
left=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${db:Status-Status} ${Package}\n' \
    2>/dev/null | grep -v '^not-installed' || true)
[ -z "$left" ] && pass "dpkg knows nothing of them" || fail "left in dpkg: $left"

echo
if [ "$failures" -gt 0 ]; then
    echo "check-debs: $failures failed"
    exit 1
fi
echo "check-debs: all passed"
