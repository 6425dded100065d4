#!/bin/bash
# make fuzz: every fuzz target for a while (default 30s each; make fuzz FUZZTIME=5m). A
# failure leaves its input in the package's testdata/fuzz/, where it stays as a regression
# test once committed. The table of executions goes to lab/work/fuzz.md.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
t=${1:-30s}
out=lab/work/fuzz.md
mkdir -p lab/work
echo "| Target | Package | Time | Executions | Result |" > "$out"
echo "|---|---|---|---|---|" >> "$out"
status=0
while read -r file fn; do
  pkg=./$(dirname "$file")
  log=$(go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$t" "$pkg" 2>&1)
  rc=$?
  execs=$(echo "$log" | grep -o 'execs: [0-9]*' | tail -1 | cut -d' ' -f2)
  result=ok
  if [ $rc != 0 ]; then result=FAILED; status=1; echo "$log" | tail -20; fi
  echo "| $fn | ${pkg#./} | $t | ${execs:-?} | $result |" | tee -a "$out"
done < <(grep -rn --include='*_test.go' '^func Fuzz' . | sed -E 's/^\.\/([^:]+):[0-9]+:func (Fuzz[A-Za-z0-9_]+).*/\1 \2/' | sort)
echo "[fuzz] results in $out"
exit $status
