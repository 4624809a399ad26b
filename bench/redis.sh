#!/usr/bin/env bash
# The Redis store against redb and against rspamd's Redis layout, in one run:
# - training the spamassassin corpus into Redis (messages/s), and into redb;
# - bytes per token in Redis (INFO used_memory delta of the token buckets'
#   load, and MEMORY USAGE of the token buckets), against rspamd's
#   one-hash-per-token layout loaded with the same number of tokens
#   (bench/redis-layout.sh, stock rspamd: no TTLs);
# - /v1/check throughput with wrk -t2 -c16 on the 6 KB message bench/http.sh
#   uses, on redb and on Redis (redis-server on this same machine).
# Usage: bench/redis.sh [SECONDS]   (default 20 per wrk run)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
for p in wrk redis-server redis-cli; do command -v $p >/dev/null || { echo "bench: apt-get install -y wrk redis-server redis-tools" >&2; exit 1; }; done
H=$(scripts/build -q)
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >/dev/null &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
R="redis://127.0.0.1:$rport"
used() { redis-cli -p "$rport" info memory | awk -F: '/^used_memory:/{print $2+0}'; }
dir=target/corpora/spamassassin
echo "# $(date -u +%F) $(nproc) cores; $(redis-server --version | awk '{print $3}')"
$H --db "$R" db init --empty >/dev/null
$H --db "$work/h.redb" db init --empty >/dev/null
m0=$(used)
echo "train into redis: $($H --db "$R" train "$dir/index" 2>&1 | tail -1)"
echo "train into redb:  $($H --db "$work/h.redb" train "$dir/index" 2>&1 | tail -1)"
m1=$(used)
nt=$(redis-cli -p "$rport" hget 'hamlet:{main}:state' nt)
gram=$(redis-cli -p "$rport" memory usage 'hamlet:{main}:g' samples 0)
buckets=$(redis-cli -p "$rport" --scan --pattern 'hamlet:{main}:t:*' | awk '{print "MEMORY USAGE " $0 " SAMPLES 0"}' | redis-cli -p "$rport" | awk '{s+=$1} END{print s}')
jour=$(redis-cli -p "$rport" --scan --pattern 'hamlet:{main}:j:*' | awk '{print "MEMORY USAGE " $0 " SAMPLES 0"}' | redis-cli -p "$rport" | awk '{s+=$1} END{print s}')
echo "hamlet-layout tokens=$nt used_memory_delta=$((m1 - m0)) less grams and journal: bytes_per_token=$(awk -v d=$((m1 - m0 - gram - jour)) -v n="$nt" 'BEGIN{printf "%.1f", d/n}') memory_usage_of_token_buckets_per_token=$(awk -v d="$buckets" -v n="$nt" 'BEGIN{printf "%.1f", d/n}')"
EXPIRE=0 bench/redis-layout.sh "$nt" | grep rspamd-layout
# /v1/check on both.
msg=$(awk -v d="$dir" 'NR<=200{print d"/"$2}' "$dir/index" | xargs ls -l | awk '{print ($5>6144?$5-6144:6144-$5), $9}' | sort -n | awk 'NR==1{print $2}')
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
local f = io.open("$msg", "rb"); wrk.body = f:read("*a"); f:close()
LUA
for db in "$work/h.redb" "$R"; do
  port=$(free_port)
  $H --db "$db" serve --http "127.0.0.1:$port" --learn-token bench 2>"$work/serve.log" &
  srv=$!
  pids+=($srv)
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  case $db in redis*) label=redis ;; *) label=redb ;; esac
  echo "/v1/check on $label ($(basename "$msg"), $(stat -c %s "$msg") bytes), wrk -t2 -c16 -d${secs}s:"
  wrk -t2 -c16 -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/check" | grep -E "Requests/sec|Non-2xx|Socket errors|50%|99%"
  kill $srv; wait $srv 2>/dev/null || true
done
