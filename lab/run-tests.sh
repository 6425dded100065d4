#!/bin/bash
# Run pvesnap's in-guest test suites in the lab: every package under lab/tests is compiled on
# the host as a static test binary (build tag "lab") and run inside the guest on a real
# kernel (LIO, NVMe, device-mapper, LVM, ZFS). Boots, with the kernels lab/setup.sh chose
# (LAB_DIR/out/kernels.env):
#   1. trixie (Debian 13, PVE 9): every suite
#   2. bookworm (Debian 12, PVE 8): what differs there — LVM 2.03.16 and ZFS 2.3.2 under the
#      CSI copies, the ZFS ioctls, restores (vgimportclone, renames, LVM's errors), LV mapping
#      and EXTENDED COPY, and the SIGKILL fault injection
#   3. the newest kernel older than 6.12.110 (lets user space enable NVMe CDFE): the NVMe ones
# usage: lab/run-tests.sh [go test -run regexp]   (the regexp applies to every boot)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
L=${LAB_DIR:-/var/tmp/pvesnap-lab}
W=${LAB_WORK:-$root/lab/work}
RUN=${1:-}
[ -f "$L/out/kernels.env" ] || { echo "[lab] $L/out/kernels.env missing: run 'make lab' (lab/setup.sh) first" >&2; exit 3; }
# shellcheck disable=SC1091
. "$L/out/kernels.env"
mkdir -p "$W"
# One run at a time per work directory: a second one would delete the first one's binaries
# and console logs under its running guest.
exec 9>"$W/.run-tests.lock"
if ! flock -n 9; then
  echo "[lab] another lab/run-tests.sh is using $W; wait for it or set LAB_WORK" >&2
  exit 1
fi
rm -rf "$W/run"
mkdir -p "$W/run/bin"
cd "$root"
t0=$SECONDS
for pkg in $(go list -tags lab -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./lab/tests/...); do
  CGO_ENABLED=0 go test -c -tags lab -o "$W/run/bin/$(basename "$pkg").test" "$pkg"
done
CGO_ENABLED=0 go build -o "$W/run/bin/pvesnap" ./cmd/pvesnap
cp daemon/itest/testdata/pvesnap_client.py "$W/run/bin/" # the independent client (python3-proxmoxer)
cp -r perl "$W/run/perl" # the storage plugin's suite runs it with the guest's perl
echo "[lab] test binaries built in $((SECONDS - t0)) s: $(ls "$W/run/bin" | tr '\n' ' ')"

# The guest script: each suite in turn, from /tmp, output kept in the work directory.
write_script() { # name run-regexp skip-regexp
  cat > "$W/run/$1" <<EOS
export PATH=/mnt/host/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root PVESNAP_LAB=1 ${FAULT_FROM:+FAULT_FROM=$FAULT_FROM}
rc=0
for t in /mnt/host/bin/*.test; do
  name=\$(basename \$t .test)
  echo "=== SUITE \$name"
  (cd /tmp && \$t -test.v -test.timeout 40m ${2:+-test.run '$2'} ${3:+-test.skip '$3'}) > /mnt/host/\$name.\$(uname -r).out 2>&1
  r=\$?
  cat /mnt/host/\$name.\$(uname -r).out
  echo "=== SUITE \$name rc=\$r"
  [ \$r = 0 ] || rc=1
done
exit \$rc
EOS
}
BOOKWORM_RUN='TestCSI|TestZFSIoctls|TestRestore$|TestRestoreLVMFailure|TestRestoreFaultInjection|TestXCOPYLVToLVOnLIO|TestDMResolution|TestRestoreVolumeAppearsBySerial|TestMovingExtents'
write_script suite-trixie.sh "$RUN" "${LAB_TRIXIE_SKIP:-TestRestoreFaultInjection}"
write_script suite-bookworm.sh "${RUN:-$BOOKWORM_RUN}" ""
write_script suite-cdfe.sh "${RUN:-NVMe|Nvme|CDFE}" ""
status=0
# Disks the engine's safety suite finds by serial or NSID: write-logged ones (QEMU
# blklogwrites, write cache on) for the flush checks, 4096-byte ones, a namespace with
# protection information, LIO backing for moving extents and multipath. Sparse, made per run.
EXTRA=(-disk name=dlog,size=256M,log -disk name=xlog,size=512M,log -disk name=d4k,size=1G,bs=4096
  -disk name=pm1,size=3G -disk name=pm2,size=3G -disk name=mp,size=2G
  -nvme-extra nsid=4,size=512M,bs=4096 -nvme-extra nsid=5,size=256M,ms=8,pi=1
  -nvme-extra nsid=6,size=256M,log -nvme-extra nsid=7,size=256M)
boot() { # kernel script label
  local t=$SECONDS
  if go run ./lab/labrun -work "$W/run" -kernel "$1" -script "$2" -vdisks 2 "${EXTRA[@]}" -timeout 45m; then
    echo "[lab] $3 ($1): passed in $((SECONDS - t)) s"
  else
    echo "[lab] $3 ($1): FAILED after $((SECONDS - t)) s"; status=1
  fi
}
boot "$KV_TRIXIE" suite-trixie.sh "trixie, every suite"
boot "$KV_BOOKWORM" suite-bookworm.sh "bookworm, what differs"
if [ -n "${KV_CDFE:-}" ]; then
  boot "$KV_CDFE" suite-cdfe.sh "CDFE kernel, NVMe suites"
else
  echo "[lab] SKIP: the mirror offers no 6.12 kernel older than 6.12.110: the NVMe CDFE suite needs one (newer kernels refuse user-space Set Features 0x16; pvesnap falls back, tested on the trixie boot)"
fi
# The disk images are scratch, made afresh at every boot: none is kept taking space.
rm -f "$W"/run/*.img
pass=$(cat "$W"/run/*.out | grep -c '^--- PASS' || true)
fail=$(cat "$W"/run/*.out | grep -c '^--- FAIL' || true)
skip=$(cat "$W"/run/*.out | grep -c '^--- SKIP' || true)
echo "[lab] $pass passed, $fail failed, $skip skipped in $((SECONDS - t0)) s"
grep -h -E '^(--- FAIL|--- SKIP)' "$W"/run/*.out || true
grep -h '^RESULT' "$W"/run/*.out || true
[ "$fail" = 0 ] || status=1
exit $status
