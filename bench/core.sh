#!/usr/bin/env bash
# Speed of the core engine against bogofilter 1.2.5, in one run, same files:
#   1. bulk training of a whole corpus (hamlet on one thread and on all cores),
#   2. bulk scoring of the trained corpus on one core
#      (bogofilter -T -B FILES vs hamlet check --threads 1 FILES),
#   3. one process per message (bogofilter -T < msg vs hamlet check < msg).
# This machine is shared and noisy (bursts of seconds), so the two programs
# take turns: each phase runs ROUNDS times, bogofilter then hamlet, and the
# ratio of each round is printed with their median and the ratio of their
# best times; per message, the two alternate message by message.
# Usage: bench/core.sh [CORPUS...]   (default: spamassassin enron-raw)
#        ROUNDS=5 bench/core.sh ...  (default 3)
# Needs: target/corpora (../shared/tools/unpack-corpora target/corpora), bogofilter.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v bogofilter >/dev/null || { echo "bench: apt-get install -y bogofilter" >&2; exit 1; }
# The binary the README deploys (static on glibc Linux, see scripts/build).
H=$(scripts/build -q)
rounds=${ROUNDS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
# ratios "a/b" of "a b" time lines on stdin: each round's, their median, and
# the ratio of the two programs' best times (interference only ever adds
# time, so the minimum is the steadiest figure here)
ratios() {
  python3 -c '
import sys, statistics
t = [(float(a), float(b)) for a, b in (l.split() for l in sys.stdin if l.strip())]
r = [a / b for a, b in t]
best = min(a for a, _ in t) / min(b for _, b in t)
print(" ".join(f"x{v:.2f}" for v in r), f"median x{statistics.median(r):.2f}", f"best x{best:.2f}")'
}
echo "# $(date -u +%F) $(nproc) cores, $(bogofilter -V 2>&1 | head -1), $rounds rounds"
for corpus in "${@:-spamassassin enron-raw}"; do
  for c in $corpus; do
    dir=target/corpora/$c
    awk -v d="$dir" '$1=="spam"{print d"/"$2}' "$dir/index" > "$work/spam"
    awk -v d="$dir" '$1=="ham"{print d"/"$2}' "$dir/index" > "$work/ham"
    n=$(wc -l < "$dir/index")
    # 1. training: per round, bogofilter, hamlet on one thread, hamlet on all cores
    : > "$work/t1"; : > "$work/tn"
    for r in $(seq "$rounds"); do
      rm -rf "$work/bogo-$c" "$work"/h*-"$c".redb*; mkdir -p "$work/bogo-$c"
      t0=$(now)
      xargs -a "$work/spam" bogofilter -d "$work/bogo-$c" -s -B
      xargs -a "$work/ham" bogofilter -d "$work/bogo-$c" -n -B
      t1=$(now); bt=$(python3 -c "print($t1-$t0)")
      $H --db "$work/h1-$c.redb" db init --empty >/dev/null
      t0=$(now); $H --db "$work/h1-$c.redb" train --threads 1 "$dir/index" >/dev/null; t1=$(now)
      ht1=$(python3 -c "print($t1-$t0)")
      $H --db "$work/h-$c.redb" db init --empty >/dev/null
      t0=$(now); $H --db "$work/h-$c.redb" train "$dir/index" >/dev/null; t1=$(now)
      ht=$(python3 -c "print($t1-$t0)")
      echo "$bt $ht1" >> "$work/t1"; echo "$bt $ht" >> "$work/tn"
      echo "$c train round $r ($n msgs): bogofilter $(python3 -c "print(f'{$n/$bt:.0f}')")/s; hamlet 1 thread $(python3 -c "print(f'{$n/$ht1:.0f}')")/s; hamlet $(nproc) threads $(python3 -c "print(f'{$n/$ht:.0f}')")/s"
    done
    echo "$c train, hamlet 1 thread / bogofilter: $(ratios < "$work/t1")"
    echo "$c train, hamlet $(nproc) threads / bogofilter: $(ratios < "$work/tn")"
    # 2. bulk scoring, one core
    cat "$work/spam" "$work/ham" > "$work/all"
    : > "$work/s"
    for r in $(seq "$rounds"); do
      t0=$(now); { xargs -a "$work/all" taskset -c 0 bogofilter -d "$work/bogo-$c" -T -B > /dev/null || true; }; t1=$(now)
      bs=$(python3 -c "print($t1-$t0)")
      t0=$(now); xargs -a "$work/all" taskset -c 0 $H --db "$work/h-$c.redb" check --threads 1 --no-filename > /dev/null; t1=$(now)
      hs=$(python3 -c "print($t1-$t0)")
      echo "$bs $hs" >> "$work/s"
      echo "$c bulk score round $r, 1 core: bogofilter $(python3 -c "print(f'{$n/$bs:.0f}')")/s; hamlet $(python3 -c "print(f'{$n/$hs:.0f}')")/s"
    done
    echo "$c bulk score, hamlet / bogofilter: $(ratios < "$work/s")"
    # 3. one process per message, first 300 messages, the two alternating
    head -300 "$work/all" > "$work/some"
    : > "$work/p"
    for r in $(seq "$rounds"); do
      python3 - "$work/some" "$work/bogo-$c" "$H" "$work/h-$c.redb" >> "$work/p" <<'PY'
import subprocess, sys, time
files, bogo, h, db = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
tb = th = 0.0
for f in open(files).read().split("\n"):
    if not f:
        continue
    for cmd, acc in ((["bogofilter", "-d", bogo, "-T"], "b"), ([h, "--db", db, "check"], "h")):
        with open(f, "rb") as inp:
            t0 = time.perf_counter()
            subprocess.run(cmd, stdin=inp, stdout=subprocess.DEVNULL)
            dt = time.perf_counter() - t0
        if acc == "b":
            tb += dt
        else:
            th += dt
print(tb, th)
PY
      read -r bp hp < <(tail -1 "$work/p")
      echo "$c per message round $r (process each): bogofilter $(python3 -c "print(f'{$bp/300*1000:.2f}')") ms; hamlet $(python3 -c "print(f'{$hp/300*1000:.2f}')") ms"
    done
    echo "$c per message, hamlet / bogofilter (speed): $(ratios < "$work/p")"
  done
done
