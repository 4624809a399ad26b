#!/usr/bin/env bash
# The Redis store under a steady stream with expiry: every simulated day a
# new slice of enron-raw (messages never seen before) is learned, then
# `db expire` runs as the nightly job would; the token count, Redis's key
# count and used_memory are printed each day. A model whose expiry keeps up
# levels off once tokens start to age out (--days, --hapax-days).
# The days are simulated with faketime (libfaketime) on hamlet's clock.
# Usage: bench/redis-soak.sh [DAYS] [PER_DAY] [MAX_AGE] [HAPAX_AGE]
#        (default 24 days of 1,200 messages, max age 10, hapax age 3)
set -euo pipefail
cd "$(dirname "$0")/.."
days=${1:-24}
per_day=${2:-1200}
max_age=${3:-10}
hapax_age=${4:-3}
for p in faketime redis-server redis-cli; do command -v $p >/dev/null || { echo "bench: apt-get install -y faketime redis-server redis-tools" >&2; exit 1; }; done
# The dynamically linked build: libfaketime cannot reach into the static
# one scripts/build makes.
cargo build -q --release --locked
H=$PWD/target/release/hamlet
dir=$PWD/target/corpora/enron-raw
[ -f "$dir/index" ] || { echo "bench: unpack the corpora first: ../shared/tools/unpack-corpora target/corpora" >&2; exit 1; }
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
R="redis://127.0.0.1:$port"
used() { redis-cli -p "$port" info memory | awk -F: '/^used_memory:/{print $2+0}'; }
echo "# $(date -u +%F) redis-server $(redis-server --version | awk '{print $3}'), $per_day new enron-raw messages a day, expire --days $max_age --hapax-days $hapax_age"
$H --db "$R" db init --empty >/dev/null
# Shuffled once, so each day's slice mixes ham and spam as mail does.
awk -v d="$dir" '{print $1, d "/" $2}' "$dir/index" | shuf --random-source=<(yes) > "$work/all"
total=$(wc -l < "$work/all")
printf '%4s %9s %9s %9s %7s %12s %9s %9s\n' day learned tokens journal keys used_memory removed j-removed
for day in $(seq 0 $((days - 1))); do
  start=$(( (day * per_day) % total ))
  sed -n "$((start + 1)),$((start + per_day))p" "$work/all" > "$work/slice"
  clock="@$(date -u -d "2027-01-01 + $day days" '+%F 12:00:00')"
  faketime -f "$clock" "$H" --db "$R" train "$work/slice" >/dev/null 2>&1
  # "examined N tokens, removed M; removed J journal entries older than D days"
  read -r removed jremoved < <(faketime -f "$clock" "$H" --db "$R" db expire --days "$max_age" --hapax-days "$hapax_age" | tr -d ';' | awk '{print $5, $7}')
  nt=$(redis-cli -p "$port" hget 'hamlet:{main}:state' nt)
  nj=$(redis-cli -p "$port" hget 'hamlet:{main}:state' nj)
  printf '%4d %9d %9d %9d %7d %12d %9d %9d\n' "$day" $(((day + 1) * per_day)) "$nt" "$nj" "$(redis-cli -p "$port" dbsize)" "$(used)" "$removed" "$jremoved"
done
