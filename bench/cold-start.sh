#!/usr/bin/env bash
# Cold start: a fresh install (a new database with the starter model, no
# local training) scoring every message of each shared corpus. For each:
# ham called spam (the goal is at most 0.1%), ham called unsure, spam
# caught, spam called ham, and the ranking's 1-ROCA%. A corpus the starter
# model was built from (see models/README.md) is marked: its figures are
# not a cold start.
#
# Usage: bench/cold-start.sh [DB]   (DB: a database to score with instead of
#        a fresh one, e.g. one from another starter build; CORPORA="a b":
#        those corpora only; STARTER_FROM="a b": the corpora DB's starter
#        was built from, for the mark)
# Needs: target/corpora (../shared/tools/unpack-corpora target/corpora).
set -euo pipefail
cd "$(dirname "$0")/.."
H=$(scripts/build -q)
corpora=$PWD/target/corpora
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
db=${1:-}
if [ -z "$db" ]; then
  db=$work/fresh.redb
  "$H" --db "$db" db init >/dev/null
fi
echo "# $(date -u +%F) cold start: $("$H" --db "$db" db stats 2>/dev/null | head -1)"
printf '%-13s %7s %9s %9s %9s %9s %9s\n' corpus messages ham→spam ham→unsure spam→spam spam→ham 1-ROCA%
# Whether the starter was built from corpus $1.
built_from() {
  if [ -n "${STARTER_FROM:-}" ]; then
    [[ " $STARTER_FROM " == *" $1 "* ]]
  else
    # The shipped starter: its "Provenance" entry in models/README.md.
    awk '/^\* \*\*/ { p = /\*\*Provenance\*\*/ } p' models/README.md | grep -qi "$1"
  fi
}
for c in ${CORPORA:-spamassassin csdmc2010 enron-raw}; do
  idx=$corpora/$c/index
  [ -f "$idx" ] || { echo "bench: unpack the corpora first: ../shared/tools/unpack-corpora target/corpora" >&2; exit 1; }
  awk -v d="$corpora/$c" '{print d "/" $2}' "$idx" > "$work/files"
  xargs -a "$work/files" -d '\n' "$H" --db "$db" check --no-filename > "$work/out" || true
  paste -d' ' <(awk '{print $1}' "$idx") "$work/out" | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
ham = [(v, float(p)) for lab, v, p in rows if lab == "ham"]
spam = [(v, float(p)) for lab, v, p in rows if lab == "spam"]
pct = lambda n, d: f"{100 * n / max(d, 1):.2f}%"
cnt = lambda xs, want: sum(1 for v, _ in xs if v == want)
ranked = sorted([(p, 1) for _, p in spam] + [(p, 0) for _, p in ham])
rank_sum, i = 0.0, 0
while i < len(ranked):
    k = i
    while k < len(ranked) and ranked[k][0] == ranked[i][0]:
        k += 1
    rank_sum += (i + 1 + k) / 2 * sum(s for _, s in ranked[i:k])
    i = k
ns, nh = len(spam), len(ham)
auc = (rank_sum - ns * (ns + 1) / 2) / (ns * nh)
name = sys.argv[1]
cells = [pct(cnt(ham, "spam"), nh), pct(cnt(ham, "unsure"), nh), pct(cnt(spam, "spam"), ns), pct(cnt(spam, "ham"), ns)]
print(f"{name:<13} {len(rows):7d} " + " ".join(f"{c:>9}" for c in cells) + f" {100 * (1 - auc):9.4f}")
' "$c$(built_from "$c" && echo '*' || true)"
done
echo "(* the starter model was built from this corpus)"
