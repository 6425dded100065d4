#!/bin/bash
# pvesnap's benchmarks. Each figure is measured against a peer in the same run and reported
# as a ratio; absolute targets are printed with the figures, never asserted in tests.
# Results go to docs/benchmarks.md (and stdout).
#   usage: lab/bench.sh [section…]   sections: proxy inventory (host), copy (lab guest)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(proxy inventory copy)
mkdir -p docs/img
out=$(mktemp)
trap 'rm -f "$out"' EXIT
{
  echo "# Benchmarks"
  echo
  echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -r)); Go $(go env GOVERSION)."
  echo "Every figure comes with a peer measured in the same run."
} > "$out"
for s in "${sections[@]}"; do
  case $s in
  inventory)
    echo "[bench] inventory tree: 2000 VMs x 4 disks, 20 array volumes x 200 snapshots"
    res=$(go run ./lab/bench/inventory)
    echo "$res"
    { echo; echo "## Inventory tree"; echo; echo "Target: the tree for 2,000 VMs x 4 disks with 200 snapshots per array volume in <= 200 ms warm and <= 200 MiB RSS."
      echo "Peer: the simulated pveproxy's \`GET /cluster/resources?type=vm\` for the same VMs."; echo; echo '```'; echo "$res"; echo '```'; } >> "$out"
    ;;
  proxy)
    echo "[bench] pass-through and owned-route cost against pveproxy"
    res=$(go run ./lab/bench/proxy -out docs/img)
    echo "$res"
    { echo; echo "## pvesnap in front of pveproxy"; echo
      echo "Peer: the same calls to the simulated pveproxy directly, in the same run. The simulated pveproxy is Go and"
      echo "answers far faster than the real (Perl) one, so the ratios here overstate pvesnap's share of a real call."; echo
      echo "$res"; echo; echo "![latency histogram](img/bench-proxy-latency.png)"; } >> "$out"
    ;;
  copy)
    echo "[bench] copies in the lab guest (LIO array, real LVM, ZFS)"
    W=${LAB_WORK:-$root/lab/work}/bench
    mkdir -p "$W/bin"
    CGO_ENABLED=0 go build -o "$W/bin/copybench" ./lab/bench/copy
    printf 'export PATH=/mnt/host/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root
/mnt/host/bin/copybench -out /mnt/host/bench-copy.json
' > "$W/bench.sh"
    rm -f "$W/bench-copy.json"
    go run ./lab/labrun -work "$W" -kernel "${LAB_KV:-6.12.117+deb12-amd64}" -script bench.sh -vdisks 2 -timeout 30m
    res=$(go run ./lab/bench/report -in "$W/bench-copy.json" -img docs/img)
    echo "$res"
    { echo; echo "## Copies"; echo
      echo "In the lab guest under TCG (software emulation): a LIO \"array\" with two LUNs on virtio disks; host I/O is"
      echo "what /proc/diskstats counts on the initiator's SCSI devices. Read the EXTENDED COPY row for its host I/O, not"
      echo "its time: here the array is LIO inside the same emulated CPU, so the copy's time is LIO's copy loop under"
      echo "TCG. On a real array that work happens in the array; what carries over is that the host moves 0 bytes."; echo
      echo "$res"; echo; echo "![copy rate](img/bench-copy-rate.png)"; } >> "$out"
    ;;
  *) echo "unknown section $s" >&2; exit 2 ;;
  esac
done
cp "$out" docs/benchmarks.md
echo "[bench] written to docs/benchmarks.md"
