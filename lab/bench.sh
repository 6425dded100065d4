#!/bin/bash
# pvesnap's benchmarks. Each figure is measured against a peer in the same run and reported
# as a ratio; absolute targets are printed with the figures, never asserted in tests.
# Results go to docs/benchmarks.md (and stdout).
#   usage: lab/bench.sh [section…]   sections: proxy inventory (host), copy move (lab guest)
# With no section, all run and docs/benchmarks.md is made from scratch. With some, only
# those run; the others are taken from their last run (lab/work/bench/sections), if any.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
all=(proxy inventory copy move)
sections=("$@")
W=${LAB_WORK:-$root/lab/work}/bench
frag=$W/sections
if [ ${#sections[@]} -eq 0 ]; then
  sections=("${all[@]}")
  rm -rf "$frag"
fi
mkdir -p docs/img "$frag"
machine="$(nproc) cores ($(uname -r)); Go $(go env GOVERSION)"
for s in "${sections[@]}"; do
  out=$frag/$s.md
  case $s in
  inventory)
    echo "[bench] inventory tree: 2000 VMs x 4 disks, 20 array volumes x 200 snapshots"
    res=$(go run ./lab/bench/inventory)
    echo "$res"
    { echo; echo "## Inventory tree"; echo; echo "Measured on $(date -u +%Y-%m-%d), $machine."; echo
      echo "Target: the tree for 2,000 VMs x 4 disks with 200 snapshots per array volume in <= 200 ms warm and <= 200 MiB RSS."
      echo "Peer: the simulated pveproxy's \`GET /cluster/resources?type=vm\` for the same VMs."; echo; echo '```'; echo "$res"; echo '```'; } > "$out"
    ;;
  proxy)
    echo "[bench] pass-through and owned-route cost against pveproxy"
    res=$(go run ./lab/bench/proxy -out docs/img)
    echo "$res"
    { echo; echo "## pvesnap in front of pveproxy"; echo; echo "Measured on $(date -u +%Y-%m-%d), $machine."; echo
      echo "Peer: the same calls to the simulated pveproxy directly, in the same run. The simulated pveproxy is Go and"
      echo "answers far faster than the real (Perl) one, so the ratios here overstate pvesnap's share of a real call."
      echo "Clients, pvesnap and the simulated pveproxy share this machine's $(nproc) cores: with 64 clients every"
      echo "call is CPU-bound, and a call through pvesnap costs a second TLS session and HTTP exchange on the same"
      echo "cores, so the throughput ratio at 64 clients measures that CPU, not waiting (the CPU per call rows show"
      echo "what pvesnap adds). GET /version is the worst case (pveproxy does nothing for it); GET /cluster/resources"
      echo "is a call pveproxy works for."
      echo "Second peer: Go's stock reverse proxy (net/http/httputil) with the same certificate, upstream and pool size,"
      echo "in the same run: the same two TLS sessions per call with none of pvesnap's work. Its ratio to direct is what"
      echo "any TLS-terminating proxy gets on these cores; pvesnap's ratio to it is pvesnap's own efficiency."
      echo "Third case, what users feel: an upstream with pveproxy's shape (the rows \"pveproxy-shaped upstream\"): 3 workers"
      echo "that each serve one call at a time, a call occupying its worker for 2 ms (a Perl worker's few milliseconds"
      echo "per API call, as a wait so that the stand-in's own CPU does not compete), keep-alive of 100 calls per"
      echo "connection and 5 s idle, as pveproxy's; the workers bound the throughput, as on a node. Peers as above,"
      echo "against that upstream, in the same run, 15 s each (a connection moves to another worker after 100 calls;"
      echo "over a few seconds which worker a client's connection landed on decides its median, hence the mean too)."
      echo "Every case interleaves its peers in 3 rounds, so the machine's other work falls on all alike. At 64 clients"
      echo "the latency against that upstream is queueing at its 3 workers (64 calls in flight), so it follows the"
      echo "throughput; the cores being shared with other work, single runs vary by about ±10%."; echo
      echo "$res"; echo; echo "![latency histogram](img/bench-proxy-latency.png)"; } > "$out"
    ;;
  copy)
    echo "[bench] copies in the lab guest (LIO array, real LVM, ZFS)"
    mkdir -p "$W/bin"
    CGO_ENABLED=0 go build -o "$W/bin/copybench" ./lab/bench/copy
    CGO_ENABLED=0 go build -o "$W/bin/pvesnap" ./cmd/pvesnap # the daemon of the zvol copies
    printf 'export PATH=/mnt/host/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root
/mnt/host/bin/copybench -out /mnt/host/bench-copy.json
' > "$W/bench.sh"
    rm -f "$W/bench-copy.json"
    go run ./lab/labrun -work "$W" ${LAB_KV:+-kernel "$LAB_KV"} -script bench.sh -vdisks 2 -vdisk-size 20G -timeout 60m
    rm -f "$W"/*.img # scratch, made afresh at every boot
    res=$(go run ./lab/bench/report -in "$W/bench-copy.json" -img docs/img)
    echo "$res"
    { echo; echo "## Copies"; echo; echo "Measured on $(date -u +%Y-%m-%d), host $machine."; echo
      echo "In the lab guest under TCG (software emulation): a LIO \"array\" with two LUNs on virtio disks; host I/O is"
      echo "what /proc/diskstats counts on the initiator's SCSI devices. Read the EXTENDED COPY rows for their host I/O,"
      echo "not their time: here the array is LIO inside the same emulated CPU, so a copy's time is LIO's copy loop"
      echo "under TCG, whoever sends the commands. On a real array that work happens in the array; what carries over"
      echo "is that the host moves 0 bytes. The zvol copies go through the real daemon (sim/pve in front of a real"
      echo "ZFS pool); every command they run is slowed down by TCG alike."
      echo "pvesnap takes the copy's steps (existence checks, snapshot, clone) through /dev/zfs. Two rows time those"
      echo "steps without the daemon: with the zfs command, as a tool driving the CLI takes them (each command is a"
      echo "process and libzfs's set-up), and with the same ioctls alone, the floor under pvesnap's copy: the"
      echo "difference from it is pvesnap's own time (API, permission check, task worker)."
      echo "Where one I/O in flight ties eight (the layout table), the host copy is bound by the emulated machine, not"
      echo "by how pvesnap issues its I/O: QEMU moves every byte through the host's page cache on two shared cores, and"
      echo "over the lab's iSCSI (the SAN table) the initiator's and the target's TCP run on the same two emulated CPUs."
      echo "Neither path has a device latency to hide, which is what I/Os in flight buy on a real array. Which layout"
      echo "comes out ahead changes from run to run (runs of one case differ by up to 10%): one row under a target is"
      echo "noise, not a layout to prefer."
      echo "$res"; echo; echo "![copy rate](img/bench-copy-rate.png)"; } > "$out"
    ;;
  move)
    echo "[bench] a zvol moved between two nodes in the lab guest"
    mkdir -p "$W/bin"
    CGO_ENABLED=0 go build -o "$W/bin/copybench" ./lab/bench/copy
    CGO_ENABLED=0 go build -o "$W/bin/pvesnap" ./cmd/pvesnap # the two nodes' daemons
    printf 'export PATH=/mnt/host/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root
/mnt/host/bin/copybench -set move -out /mnt/host/bench-move.json
' > "$W/bench.sh"
    rm -f "$W/bench-move.json"
    # The bookworm base (PVE 8), whose kernel lab/setup.sh chose from what the mirror offers.
    kv=${LAB_KV:-$(sed -n 's/^KV_BOOKWORM=//p' "${LAB_DIR:-/var/tmp/pvesnap-lab}/out/kernels.env")}
    go run ./lab/labrun -work "$W" -kernel "$kv" -script bench.sh -vdisks 2 -vdisk-size 20G -timeout 60m
    rm -f "$W"/*.img
    res=$(go run ./lab/bench/report -in "$W/bench-move.json" -img docs/img)
    echo "$res"
    { echo; echo "## Moves between nodes"; echo; echo "Measured on $(date -u +%Y-%m-%d), host $machine."; echo
      echo "In the lab guest under TCG: a second node in the guest, two pvesnap daemons (127.0.0.1 and 127.0.0.2, the"
      echo "addresses .members gives the nodes) and two ZFS pools on one virtio disk. The copy with target_node streams"
      echo "the zvol between the daemons over TLS with the nodes' certificates, send and receive through /dev/zfs; with"
      echo "datacenter.cfg's migration type=insecure it goes over plain TCP from task to task, the kernel writing into and"
      echo "reading from the sockets. The floor is zfs send | zfs recv through a kernel pipe (no network, no encryption,"
      echo "nothing through user space); the ssh row is PVE's own way, zfs send | ssh | zfs recv over loopback. All of it"
      echo "shares the guest's two emulated CPUs, on which TLS's AES-GCM runs at about 70 MiB/s (AES-NI is emulated):"
      echo "it costs the TLS row about as much as ZFS's own work, and ssh's cipher costs PVE's row as much. So the rows"
      echo "that encrypt (TLS, ssh) are compared with each other, and plain TCP with the floor. Before each case both"
      echo "pools finish freeing what the case before destroyed (zpool wait -t free), and each round starts with"
      echo "another case: none pays for another's background work."
      echo "$res"; } > "$out"
    ;;
  *) echo "unknown section $s" >&2; exit 2 ;;
  esac
done
{
  echo "# Benchmarks"
  echo
  echo "Measured by \`make bench\`. Every figure comes with a peer measured in the same run."
  for s in "${all[@]}"; do
    if [ -f "$frag/$s.md" ]; then cat "$frag/$s.md"; else printf '\n## %s\n\nNot measured yet: `lab/bench.sh %s`.\n' "$s" "$s"; fi
  done
} > docs/benchmarks.md
echo "[bench] written to docs/benchmarks.md"
