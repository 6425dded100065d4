#!/bin/bash
# pvesnap's benchmarks. Each figure is measured against a peer in the same run and reported
# as a ratio; absolute targets are printed with the figures, never asserted in tests.
# Results go to docs/benchmarks.md (and stdout).
#   usage: lab/bench.sh [section…]   sections: inventory (host)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(inventory)
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
  *) echo "unknown section $s" >&2; exit 2 ;;
  esac
done
cp "$out" docs/benchmarks.md
echo "[bench] written to docs/benchmarks.md"
