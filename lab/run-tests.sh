#!/bin/bash
# Run pvesnap's in-guest test suites in the lab: every package under lab/tests is compiled on
# the host as a static test binary (build tag "lab") and run inside the guest on a real
# kernel (LIO, NVMe, device-mapper, LVM, ZFS). Suites are grouped so that few boots run:
#   boot 1, kernel 6.12.117 (current): every suite
#   boot 2, kernel 6.12.107 (last one that lets user space enable NVMe CDFE): the NVMe ones
# usage: lab/run-tests.sh [go test -run regexp]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
W=${LAB_WORK:-$root/lab/work}
KV_NEW=${LAB_KV:-6.12.117+deb12-amd64}
KV_OLD=${LAB_KV_OLD:-6.12.107+deb12-amd64}
RUN=${1:-}
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
echo "[lab] test binaries built in $((SECONDS - t0)) s: $(ls "$W/run/bin" | tr '\n' ' ')"

# The guest script: each suite in turn, from /tmp, output kept in the work directory.
write_script() { # name run-regexp
  cat > "$W/run/$1" <<EOS
export PATH=/mnt/host/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root PVESNAP_LAB=1 ${FAULT_FROM:+FAULT_FROM=$FAULT_FROM}
rc=0
for t in /mnt/host/bin/*.test; do
  name=\$(basename \$t .test)
  echo "=== SUITE \$name"
  (cd /tmp && \$t -test.v -test.timeout 40m ${2:+-test.run '$2'}) > /mnt/host/\$name.\$(uname -r).out 2>&1
  r=\$?
  cat /mnt/host/\$name.\$(uname -r).out
  echo "=== SUITE \$name rc=\$r"
  [ \$r = 0 ] || rc=1
done
exit \$rc
EOS
}
write_script suite-all.sh "$RUN"
write_script suite-nvme.sh "${RUN:-NVMe|Nvme|CDFE}"
status=0
# Disks the engine's safety suite finds by serial or NSID: write-logged ones (QEMU
# blklogwrites, write cache on) for the flush checks, 4096-byte ones, a namespace with
# protection information, LIO backing for moving extents and multipath. Sparse, made per run.
EXTRA=(-disk name=dlog,size=256M,log -disk name=xlog,size=512M,log -disk name=d4k,size=1G,bs=4096
  -disk name=pm1,size=3G -disk name=pm2,size=3G -disk name=mp,size=2G
  -nvme-extra nsid=4,size=512M,bs=4096 -nvme-extra nsid=5,size=256M,ms=8,pi=1
  -nvme-extra nsid=6,size=256M,log -nvme-extra nsid=7,size=256M)
boot() { # kernel script
  local t=$SECONDS
  if go run ./lab/labrun -work "$W/run" -kernel "$1" -script "$2" -vdisks 2 "${EXTRA[@]}" -timeout 45m; then
    echo "[lab] $2 on $1: passed in $((SECONDS - t)) s"
  else
    echo "[lab] $2 on $1: FAILED after $((SECONDS - t)) s"; status=1
  fi
}
boot "$KV_NEW" suite-all.sh
boot "$KV_OLD" suite-nvme.sh
pass=$(cat "$W"/run/*.out | grep -c '^--- PASS' || true)
fail=$(cat "$W"/run/*.out | grep -c '^--- FAIL' || true)
skip=$(cat "$W"/run/*.out | grep -c '^--- SKIP' || true)
echo "[lab] $pass passed, $fail failed, $skip skipped in $((SECONDS - t0)) s"
grep -h -E '^(--- FAIL|--- SKIP)' "$W"/run/*.out || true
[ "$fail" = 0 ] || status=1
exit $status
