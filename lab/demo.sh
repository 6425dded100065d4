#!/bin/bash
# make demo: boots the lab guest with a Proxmox VE node (simulated pveproxy, real LVM on a
# simulated FlashArray's LIO LUNs) and the real pvesnap on :8009, forwarded to this host with
# :8010 (/verify). The console is streamed here; Ctrl-C stops it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
W=${LAB_WORK:-$root/lab/work}/demo
KV=${LAB_KV:-}   # empty: labrun boots the trixie base's kernel (lab/setup.sh chose it)
ext=${PVESNAP_EXTJS:-/var/tmp/pvesnap-npm/node_modules/extjs-gpl/build}
cd "$root"
mkdir -p "$W/bin"
CGO_ENABLED=0 go build -o "$W/bin/pvesnap" ./cmd/pvesnap
CGO_ENABLED=0 go build -o "$W/bin/demo" ./lab/demo
# The Ext JS subset the page loads (GPL, from npm; copied into the guest's share, not committed).
if [ ! -f "$W/extjs/ext-all.js" ]; then
  mkdir -p "$W/extjs/classic" "$W/extjs/packages"
  cp "$ext/ext-all.js" "$W/extjs/"
  cp -r "$ext/classic/theme-crisp" "$W/extjs/classic/"
  cp -r "$ext/packages/font-awesome" "$W/extjs/packages/"
fi
cat > "$W/demo.sh" <<EOS
export PATH=/mnt/host/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root
exec /mnt/host/bin/demo -extjs /mnt/host/extjs
EOS
echo "[demo] booting the lab guest; pvesnap will be on https://127.0.0.1:8009/ (log: $W/pvesnap.log)"
exec go run ./lab/labrun -work "$W" ${KV:+-kernel "$KV"} -script demo.sh -vdisks 2 -fwd 8009:8009,8010:8010 -timeout 12h -v
