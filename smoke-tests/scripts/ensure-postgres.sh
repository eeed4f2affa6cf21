#!/usr/bin/env bash
# Installs Debian's PostgreSQL server (initdb, pg_ctl, postgres under
# /usr/lib/postgresql/<version>/bin) for the tests of the PostgreSQL store, if
# it is missing.
set -euo pipefail
have_server() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null
}
if have_server; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "the PostgreSQL server binaries are missing (no /usr/lib/postgresql/*/bin/initdb); install Debian's package 'postgresql' (needs root), or set COORDINATOR_TEST_PG_URL to a server the tests may create databases on" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Several test binaries may get here at once: one installs, the others wait for it.
exec 9>/tmp/coordinator-ensure-postgres.lock
flock -w 600 9
if have_server; then
  exit 0
fi
apt-get update -qq >/dev/null
apt-get install -y -qq postgresql >/dev/null
if ! have_server; then
  echo "installing Debian's 'postgresql' package did not provide /usr/lib/postgresql/*/bin/initdb" >&2
  exit 1
fi
