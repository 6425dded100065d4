#!/bin/bash
# Debian packages the test suite needs besides Go: an independent Proxmox client, the Debian
# packaging tools, a headless browser, perl's JSON for the storage plugin. Idempotent: installs
# only what is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
want=(python3-proxmoxer python3-requests lintian debhelper devscripts fakeroot dpkg-dev chromium chromium-driver
  fonts-liberation curl jq bc systemd-container libjson-perl)
missing=()
for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[deps] installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Ext JS GPL for the panel's browser tests (npm; not committed: GPL code, 567 MB).
npm_dir=${PVESNAP_NPM_DIR:-/var/tmp/pvesnap-npm}
if [ ! -f "$npm_dir/node_modules/extjs-gpl/build/ext-all.js" ]; then
  command -v npm >/dev/null || { apt-get install -y -q --no-install-recommends nodejs npm; }
  echo "[deps] npm install extjs-gpl@6.2.0 into $npm_dir"
  mkdir -p "$npm_dir"
  [ -f "$npm_dir/package.json" ] || echo '{"name":"pvesnap-test-deps","private":true}' > "$npm_dir/package.json"
  (cd "$npm_dir" && npm install --no-audit --no-fund --loglevel=error extjs-gpl@6.2.0)
fi
