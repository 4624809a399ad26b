#!/usr/bin/env bash
# The cold-start gate at work: a fresh install (the shipped starter on the
# corpora it was not built from, and starters built without the corpus
# scored, as bench/starter-loo.sh builds them) learns the first S messages
# of the corpus with their labels, then scores all the rest with no more
# training (`hamlet eval --start-from DUMP --seed S`). For each gate k:
# ham called spam / spam caught (verdicts at the default cutoffs), after
# S = 0, 10, 20, 50, 100, 200 local messages.
# Usage: bench/cold-gate.sh   (K="0 3 10 30" by default; 0: no gate)
# Needs: target/corpora (../shared/tools/unpack-corpora target/corpora).
set -euo pipefail
cd "$(dirname "$0")/.."
H=$(scripts/build -q)
corpora=$PWD/target/corpora
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
all=(spamassassin csdmc2010 enron-raw)
for c in "${all[@]}"; do
  [ -f "$corpora/$c/index" ] || { echo "bench: unpack the corpora first: ../shared/tools/unpack-corpora target/corpora" >&2; exit 1; }
done
runs=("starter csdmc2010" "starter enron-raw")
for x in "${all[@]}"; do
  idx=()
  for c in "${all[@]}"; do [ "$c" = "$x" ] || idx+=("$corpora/$c/index"); done
  OUT=$work/without-$x.dump models/build-starter "${idx[@]}" 2>/dev/null
  runs+=("$work/without-$x.dump $x")
done
cell() { # dump corpus k seed -> "ham→spam%/spam caught%"
  "$H" eval "$corpora/$2/index" --start-from "$1" --cold-start "$3" --seed "$4" --results "$work/r" >/dev/null 2>&1
  python3 -c '
import sys
rows = [(l.split()[1][6:], float(l.split()[2][6:])) for l in open(sys.argv[1])]
ham = [p for j, p in rows if j == "ham"]; spam = [p for j, p in rows if j == "spam"]
print(f"{100 * sum(p >= 0.9 for p in ham) / len(ham):.2f}/{100 * sum(p >= 0.9 for p in spam) / len(spam):.1f}")' "$work/r"
}
seeds=(0 10 20 50 100 200)
echo "# $(date -u +%F) cold-start gate: ham→spam% / spam caught% after S local messages"
printf '%-34s %-4s' starter k; printf ' %12s' "${seeds[@]/#/S=}"; echo
for r in "${runs[@]}"; do
  set -- $r
  name=$([ "$1" = starter ] && echo "shipped on $2" || echo "without $2 on $2")
  for k in ${K:-0 3 10 30}; do
    printf '%-34s %-4s' "$name" "$k"
    for s in "${seeds[@]}"; do printf ' %12s' "$(cell "$1" "$2" "$k" "$s")"; done
    echo
  done
done
