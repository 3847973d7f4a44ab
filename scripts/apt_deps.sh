#!/usr/bin/env bash
# Debian's chromium for the browser tests (driven by pip playwright; never `playwright install`).
# Installed only when /usr/bin/chromium is missing; needs root (as on these machines and in CI). ~1 min.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "apt_deps: /usr/bin/chromium is missing and we are not root: run" >&2
    echo "  sudo apt-get update && sudo apt-get install -y chromium" >&2
    echo "or set NBMODEL_SKIP_BROWSER=1 to skip the browser tests" >&2
    exit 1
fi
echo "apt_deps: installing Debian chromium (about a minute)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
echo "apt_deps: $(/usr/bin/chromium --version 2>/dev/null | tail -n 1)"
