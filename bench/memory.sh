#!/usr/bin/env bash
# Resident memory of hamlet serve under a long, varied load: wrk on
# /v1/check cycling through 2,000 different real messages (csdmc2010, new
# to the DB, so token lookups miss the caches and auto-learn runs), on a DB
# trained on spamassassin, with a learn stream (1 learn/s) beside it. RSS
# is sampled every 30 s; "flat" means it levels off instead of climbing.
# Usage: bench/memory.sh [SECONDS]   (default 600)
#        LEARN=0 bench/memory.sh ...  checks only: no learn stream, auto-learn
#        off, so the DB does not grow (tells cache warm-up from a leak)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
command -v wrk >/dev/null || { echo "bench: apt-get install -y wrk" >&2; exit 1; }
# The binary the README deploys (static on glibc Linux, see scripts/build).
H=$(scripts/build -q)
work=$(mktemp -d)
srv= learner=
trap 'kill $srv $learner 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
$H --db "$work/h.redb" db init --empty >/dev/null
$H --db "$work/h.redb" train target/corpora/spamassassin/index >/dev/null
awk -v d=target/corpora/csdmc2010 'NR<=2000{print d"/"$2}' target/corpora/csdmc2010/index > "$work/bodies"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
learn=${LEARN:-1}
printf '[autolearn]\nenabled = %s\n' "$([ "$learn" = 1 ] && echo true || echo false)" > "$work/hamlet.toml"
$H --db "$work/h.redb" serve --config "$work/hamlet.toml" --http "127.0.0.1:$port" --learn-token bench 2>"$work/serve.log" &
srv=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
cat > "$work/cycle.lua" <<LUA
local bodies = {}
for path in io.lines("$work/bodies") do
  local f = io.open(path, "rb"); bodies[#bodies + 1] = f:read("*a"); f:close()
end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/check", nil, bodies[i])
end
LUA
rss() { awk '/VmRSS/{print $2}' /proc/$srv/status; }
echo "# $(date -u +%F) $(nproc) cores; 2,000 csdmc2010 messages in turn; wrk -t2 -c16 -d${secs}s; LEARN=$learn"
if [ "$learn" = 1 ]; then
  ( awk -v d=target/corpora/enron-raw '{print d"/"$2}' target/corpora/enron-raw/index | head -"$secs" | while read -r f; do
    curl -s -o /dev/null -H "Authorization: Bearer bench" --data-binary @"$f" "127.0.0.1:$port/v1/learn/ham"; sleep 1; done ) &
  learner=$!
fi
echo "t=0s RSS $(rss) kB"
wrk -t2 -c16 -d"${secs}s" --latency -s "$work/cycle.lua" "http://127.0.0.1:$port" > "$work/wrk.out" &
load=$!
for t in $(seq 30 30 "$secs"); do sleep 30; echo "t=${t}s RSS $(rss) kB"; done
wait $load
grep -E "Requests/sec|Non-2xx|Socket errors|50%|99%|requests in" "$work/wrk.out"
curl -s "127.0.0.1:$port/metrics" | grep -E 'hamlet_learns_total' || true
echo "RSS at the end: $(rss) kB"
