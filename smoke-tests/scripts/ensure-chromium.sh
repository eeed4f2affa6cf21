#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver (chromedriver) for the
# dashboard browser tests, if they are missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium or chromedriver is missing; install Debian's packages 'chromium' and 'chromium-driver' (needs root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Several tests may get here at once: one installs, the others wait for it.
exec 9>/tmp/coordinator-ensure-chromium.lock
flock -w 600 9
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
apt-get update -qq >/dev/null
apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
