#!/usr/bin/env bash
# Accuracy on the five streams of the tuning protocol (docs/tuning.md,
# "The protocol"): the three shared corpora, the merged stream and its
# spam-heavy cut, each by the TREC on-line protocol on an empty model
# (`hamlet eval`), the whole stream and its second half. Extra arguments go
# to every `hamlet eval` (e.g. `--mix-grams 0.3`), so a candidate change is
# measured on all five at once.
#
# The merged stream (target/corpora/merged/index, ~40,000 messages) stands
# in for a mailbox over months: the three corpora interleaved in one fixed
# order, each spread evenly over the whole stream (message i of a corpus of
# n sits at (i + 0.5) / n; ties by corpus name), each keeping its own order.
# The spam-heavy stream (target/corpora/spam-heavy/index, 24,207 messages)
# is the merged stream with only its 3rd, 6th, 9th, ... ham: 67% spam, the
# held-out corpus's share (the shared corpora have 31-43%). There hamlet
# learns from a third of the ham and ranks new ham against more spam.
#
# With BOGOFILTER=1 bogofilter 1.2.5 (train on everything) runs the same
# streams through ../shared/tools/trec-run, for the same-run comparison
# (slow: two processes a message).
#
# INDEX=FILE runs one other TREC index instead (a corpus of your own, e.g.
# one kept out of the project), in the same format.
#
# Each row also gives the 4-gram weight the stream ended with (g_end;
# it starts at 0.1 and the pairwise step moves it).
#
# Usage: [INDEX=FILE] bench/accuracy.sh [HAMLET EVAL ARGS...]
# Needs: target/corpora (../shared/tools/unpack-corpora target/corpora),
# unless INDEX is given.
set -euo pipefail
[ -z "${INDEX:-}" ] || INDEX=$(realpath "$INDEX")
cd "$(dirname "$0")/.."
H=$(scripts/build -q)
corpora=$PWD/target/corpora
# Writes the merged and spam-heavy indexes from the three corpora's.
make_streams() {
  for c in spamassassin csdmc2010 enron-raw; do
    [ -f "$corpora/$c/index" ] || { echo "bench: unpack the corpora first: ../shared/tools/unpack-corpora target/corpora" >&2; exit 1; }
  done
  mkdir -p "$corpora/merged" "$corpora/spam-heavy"
  python3 - "$corpora" <<'PY'
import os, sys
root = sys.argv[1]
rows = []
for name in ("csdmc2010", "enron-raw", "spamassassin"):
    lines = [l.split() for l in open(os.path.join(root, name, "index")) if l.strip()]
    n = len(lines)
    for i, (label, path) in enumerate(lines):
        rows.append(((i + 0.5) / n, name, label, os.path.join("..", name, path)))
rows.sort(key=lambda r: (r[0], r[1]))
with open(os.path.join(root, "merged", "index.tmp"), "w") as f:
    for _, _, label, path in rows:
        f.write(f"{label} {path}\n")
os.replace(os.path.join(root, "merged", "index.tmp"), os.path.join(root, "merged", "index"))
hams = 0
with open(os.path.join(root, "spam-heavy", "index.tmp"), "w") as f:
    for _, _, label, path in rows:
        hams += label == "ham"
        if label == "spam" or hams % 3 == 0:
            f.write(f"{label} {path}\n")
os.replace(os.path.join(root, "spam-heavy", "index.tmp"), os.path.join(root, "spam-heavy", "index"))
PY
}
if [ -n "${INDEX:-}" ]; then
  [ -f "$INDEX" ] || { echo "bench: no such index: $INDEX" >&2; exit 1; }
  streams=("$INDEX")
else
  make_streams
  streams=()
  for c in spamassassin csdmc2010 enron-raw merged spam-heavy; do streams+=("$corpora/$c/index"); done
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# 1-ROCA% and lam% of the second half of a results file (`<path> judge=<label>
# score=<s> [logit=<z>]`), ranked by the logit where there is one, as
# `hamlet eval` ranks (bogofilter's have none).
half() {
  python3 - "$1" <<'PY'
import math, sys
rows = []
for line in open(sys.argv[1]):
    parts = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
    rows.append((parts["judge"] == "spam", float(parts["score"]), float(parts.get("logit", parts["score"]))))
rows = rows[len(rows) // 2:]
ranked = sorted(rows, key=lambda r: r[2])
ns = sum(1 for s, _, _ in rows if s); nh = len(rows) - ns
rank_sum, i = 0.0, 0
while i < len(ranked):
    k = i
    while k < len(ranked) and ranked[k][2] == ranked[i][2]:
        k += 1
    rank_sum += (i + 1 + k) / 2 * sum(1 for s, _, _ in ranked[i:k] if s)
    i = k
auc = (rank_sum - ns * (ns + 1) / 2) / (ns * nh)
lg = lambda p: math.log(min(max(p, 1e-7), 1 - 1e-7) / (1 - min(max(p, 1e-7), 1 - 1e-7)))
hm = sum(1 for s, x, _ in rows if not s and x > 0.5) / nh
sm = sum(1 for s, x, _ in rows if s and x <= 0.5) / ns
lam = 1 / (1 + math.exp(-(lg(hm) + lg(sm)) / 2))
print(f"{100 * (1 - auc):.4f} {100 * lam:.3f}")
PY
}
echo "# $(date -u +%F) hamlet eval $*"
printf '%-13s %7s %9s %7s %11s %9s %9s %6s\n' stream messages 1-ROCA% lam% half:1-ROCA% half:lam% msg/s g_end
for idx in "${streams[@]}"; do
  c=$(basename "$(dirname "$idx")")
  out=$("$H" eval "$idx" --results "$work/$c.results" "$@" 2>"$work/$c.err") || { cat "$work/$c.err" >&2; exit 1; }
  roca=$(sed -n 's/^1-ROCA%=//p' <<<"$out")
  lam=$(sed -n 's/.*lam%=\([0-9.]*\).*/\1/p' <<<"$out")
  n=$(sed -n 's/^messages=\([0-9]*\).*/\1/p' <<<"$out")
  rate=$(sed -n 's/^messages\/s=\([0-9]*\).*/\1/p' <<<"$out")
  g=$(sed -n 's/^4-gram weight at the end: \([0-9.]*\).*/\1/p' "$work/$c.err")
  read -r hroca hlam < <(half "$work/$c.results")
  printf '%-13s %7d %9s %7s %11s %9s %9s %6s\n' "$c" "$n" "$roca" "$lam" "$hroca" "$hlam" "$rate" "${g:--}"
done
if [ "${BOGOFILTER:-0}" = 1 ]; then
  command -v bogofilter >/dev/null || { echo "bench: apt-get install -y bogofilter" >&2; exit 1; }
  for idx in "${streams[@]}"; do
    c=$(basename "$(dirname "$idx")")
    db=$work/bogo-$c
    mkdir -p "$db"
    out=$(../shared/tools/trec-run --quiet --index "$idx" --results "$work/bogo-$c.results" \
      --classify "bogofilter -d $db -T -I {}" --train-spam "bogofilter -d $db -s -I {}" --train-ham "bogofilter -d $db -n -I {}")
    read -r hroca hlam < <(half "$work/bogo-$c.results")
    echo "bogofilter $c: $(tr '\n' ' ' <<<"$out") half: 1-ROCA%=$hroca lam%=$hlam"
  done
fi
