#!/usr/bin/env bash
# Speed of the core engine against bogofilter 1.2.5, in one run, same files:
#   1. bulk training of a whole corpus (hamlet on one thread and on all cores),
#   2. bulk scoring of the trained corpus on one core
#      (bogofilter -T -B FILES vs hamlet check --threads 1 FILES),
#   3. one process per message (bogofilter -T < msg vs hamlet check < msg).
# Usage: bench/core.sh [CORPUS...]   (default: spamassassin enron-raw)
# Needs: target/corpora (../shared/tools/unpack-corpora target/corpora), bogofilter.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v bogofilter >/dev/null || { echo "bench: apt-get install -y bogofilter" >&2; exit 1; }
cargo build --release --locked -q
H=$PWD/target/release/hamlet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo "# $(date -u +%F) $(nproc) cores, $(bogofilter -V 2>&1 | head -1)"
for corpus in "${@:-spamassassin enron-raw}"; do
  for c in $corpus; do
    dir=target/corpora/$c
    awk -v d="$dir" '$1=="spam"{print d"/"$2}' "$dir/index" > "$work/spam"
    awk -v d="$dir" '$1=="ham"{print d"/"$2}' "$dir/index" > "$work/ham"
    n=$(wc -l < "$dir/index")
    # 1. training
    mkdir -p "$work/bogo-$c"
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
    echo "$c train ($n msgs): bogofilter ${bt%.*}s $(python3 -c "print(f'{$n/$bt:.0f}')")/s; hamlet 1 thread $(python3 -c "print(f'{$n/$ht1:.0f}')")/s (x$(ratio $bt $ht1)); hamlet $(nproc) threads $(python3 -c "print(f'{$n/$ht:.0f}')")/s (x$(ratio $bt $ht))"
    # 2. bulk scoring, one core
    cat "$work/spam" "$work/ham" > "$work/all"
    t0=$(now); { xargs -a "$work/all" taskset -c 0 bogofilter -d "$work/bogo-$c" -T -B > /dev/null || true; }; t1=$(now)
    bs=$(python3 -c "print($t1-$t0)")
    t0=$(now); xargs -a "$work/all" taskset -c 0 $H --db "$work/h-$c.redb" check --threads 1 --no-filename > /dev/null; t1=$(now)
    hs=$(python3 -c "print($t1-$t0)")
    echo "$c bulk score, 1 core: bogofilter $(python3 -c "print(f'{$n/$bs:.0f}')")/s; hamlet $(python3 -c "print(f'{$n/$hs:.0f}')")/s (x$(ratio $bs $hs))"
    # 3. one process per message, first 300 messages
    head -300 "$work/all" > "$work/some"
    t0=$(now); while read -r f; do bogofilter -d "$work/bogo-$c" -T < "$f" > /dev/null || true; done < "$work/some"; t1=$(now)
    bp=$(python3 -c "print(($t1-$t0)/300*1000)")
    t0=$(now); while read -r f; do $H --db "$work/h-$c.redb" check < "$f" > /dev/null || true; done < "$work/some"; t1=$(now)
    hp=$(python3 -c "print(($t1-$t0)/300*1000)")
    echo "$c per message (process each): bogofilter $(python3 -c "print(f'{$bp:.2f}')") ms; hamlet $(python3 -c "print(f'{$hp:.2f}')") ms (x$(ratio $bp $hp))"
  done
done
