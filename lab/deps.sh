#!/bin/bash
# Debian packages the test suite needs besides Go: an independent Proxmox client, the Debian
# packaging tools, a headless browser. Idempotent: installs only what is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
want=(python3-proxmoxer python3-requests lintian debhelper devscripts fakeroot dpkg-dev chromium chromium-driver
  fonts-liberation curl jq bc systemd-container)
missing=()
for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[deps] installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
