# Starts a throwaway PostgreSQL for the server's tests and exports MUSTER_TEST_DATABASE_URL.
# Sourced by .ci/run (bash, `set -euo pipefail`); also runs on its own for trying it out:
#   sudo bash -c '. .ci/postgres.sh && psql "$MUSTER_TEST_DATABASE_URL" -c "select 1"'
# Installs Debian's `postgresql` if no server binaries are found, runs the cluster as the
# `postgres` user in a temporary directory (the server refuses to run as root), listens on
# 127.0.0.1 only with trust auth, and stops it and removes the directory on exit. Any failure
# returns non-zero, which fails CI.

# The port; 55432 keeps clear of a system cluster on 5432. Set MUSTER_PG_PORT if it is taken.
pg_port="${MUSTER_PG_PORT:-55432}"

pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

pg_as_postgres() {
  if command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  else
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  fi
}

pg_stop() {
  if [ -n "${pg_dir:-}" ] && [ -d "$pg_dir" ]; then
    pg_as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  fi
}

pg_start() {
  if [ "$(id -u)" != 0 ]; then
    echo "starting postgresql needs root (to run it as the postgres user)" >&2
    return 1
  fi
  pg_bin=$(pg_bindir || true)
  if [ -z "$pg_bin" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    pg_bin=$(pg_bindir)
  fi
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres

  pg_dir=$(mktemp -d /tmp/muster-pg.XXXXXX)
  trap pg_stop EXIT
  chown postgres: "$pg_dir"
  chmod 700 "$pg_dir"
  install -d -o postgres -m 700 "$pg_dir/data" "$pg_dir/run"

  pg_as_postgres "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust \
    --encoding=UTF8 --no-locale >"$pg_dir/initdb.log" 2>&1 \
    || { cat "$pg_dir/initdb.log" >&2; return 1; }
  # Trust, and only over loopback TCP and the private socket directory.
  cat >"$pg_dir/data/pg_hba.conf" <<EOF
local all all trust
host  all all 127.0.0.1/32 trust
EOF
  cat >>"$pg_dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pg_dir/run'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  pg_as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$pg_dir/server.log" >&2; return 1; }
  pg_as_postgres "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE muster LOGIN CREATEDB" -c "CREATE DATABASE muster OWNER muster" >/dev/null
  export MUSTER_TEST_DATABASE_URL="postgres://muster@127.0.0.1:$pg_port/muster"
  echo "postgresql $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port"
}

pg_start
