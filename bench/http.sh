#!/usr/bin/env bash
# Load on hamlet serve's /v1/check with wrk (Debian package wrk), on a DB
# trained on the spamassassin corpus, with a mid-size real message; then the
# same load while a learn stream (1 learn/s) runs beside it.
# Last, the console's cost: /v1/check with the history recording off and on
# ([ui] enabled = true, its defaults: 1,000 checks, 64 MiB of messages),
# ROUNDS times (default 3; off then on, then on then off, so a drift of the
# machine falls on both), SECONDS/2 each, one server at a time on the same DB.
# Usage: bench/http.sh [SECONDS] [history]   (default 60; `history`: that
# section only)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
only=${2:-}
command -v wrk >/dev/null || { echo "bench: apt-get install -y wrk" >&2; exit 1; }
# The binary the README deploys (static on glibc Linux, see scripts/build).
H=$(scripts/build -q)
work=$(mktemp -d)
srv=
trap 'kill $srv 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
dir=target/corpora/spamassassin
$H --db "$work/h.redb" db init --empty >/dev/null
$H --db "$work/h.redb" train "$dir/index" >/dev/null
# A mid-size message: the one closest to 6 KB among the first 200 of the index.
msg=$(awk -v d="$dir" 'NR<=200{print d"/"$2}' "$dir/index" | xargs ls -l | awk '{print ($5>6144?$5-6144:6144-$5), $9}' | sort -n | awk 'NR==1{print $2}')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
local f = io.open("$msg", "rb"); wrk.body = f:read("*a"); f:close()
LUA
rss() { awk '/VmRSS/{print $2" kB"}' /proc/$srv/status; }
echo "# $(date -u +%F) $(nproc) cores; message $(basename "$msg") ($(stat -c %s "$msg") bytes); wrk -t2 -c16 -d${secs}s --latency"
if [[ $only != history ]]; then
$H --db "$work/h.redb" serve --http "127.0.0.1:$port" --learn-token bench 2>"$work/serve.log" &
srv=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
echo "RSS before: $(rss)"
wrk -t2 -c16 -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/check" | grep -E "Requests/sec|Non-2xx|Socket errors|50%|99%|requests in"
echo "RSS after check-only run: $(rss)"
# Learn stream: one message a second from the csdmc2010 corpus (new to this DB).
( awk -v d=target/corpora/csdmc2010 '{print d"/"$2}' target/corpora/csdmc2010/index | head -"$secs" | while read -r f; do
    curl -s -o /dev/null -w "%{http_code}\n" -H "Authorization: Bearer bench" --data-binary @"$f" "127.0.0.1:$port/v1/learn/spam"; sleep 1; done > "$work/learns" ) &
learner=$!
wrk -t2 -c16 -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/check" | grep -E "Requests/sec|Non-2xx|Socket errors|50%|99%|requests in"
wait $learner || true
echo "learns during the run (HTTP status: count): $(sort "$work/learns" | uniq -c | awk '{printf "%s%s: %s", sep, $2, $1; sep=", "}')"
echo "RSS after: $(rss)"

kill $srv; wait $srv 2>/dev/null || true; srv=
fi

# The console's history: off against on, alternating, one server at a time.
hsecs=$(( secs / 2 > 5 ? secs / 2 : 5 ))
printf 'http = "127.0.0.1:%s"\nlearn_token = "bench"\n' "$port" > "$work/off.toml"
printf 'http = "127.0.0.1:%s"\nlearn_token = "bench"\n\n[ui]\nenabled = true\n' "$port" > "$work/on.toml"
declare -A sum=([off]=0 [on]=0)
echo "# history off/on: wrk -t2 -c16 -d${hsecs}s each, ${ROUNDS:-3} rounds"
for round in $(seq "${ROUNDS:-3}"); do
  order="off on"; (( round % 2 == 0 )) && order="on off"
  for mode in $order; do
    $H --db "$work/h.redb" serve --config "$work/$mode.toml" 2>>"$work/serve.log" &
    srv=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    rps=$(wrk -t2 -c16 -d"${hsecs}s" -s "$work/post.lua" "http://127.0.0.1:$port/v1/check" | awk '/Requests\/sec/{print $2}')
    kept=$( [ $mode = on ] && curl -s "127.0.0.1:$port/ui/api/session" -o /dev/null -w '%{http_code}' || echo -)
    echo "round $round history $mode: $rps req/s (console answers: $kept)"
    sum[$mode]=$(awk -v a="${sum[$mode]}" -v b="$rps" 'BEGIN{print a+b}')
    kill $srv; wait $srv 2>/dev/null || true; srv=
  done
done
awk -v off="${sum[off]}" -v on="${sum[on]}" -v n="${ROUNDS:-3}" 'BEGIN{printf "mean: off %.0f req/s, on %.0f req/s, on/off %.3f\n", off/n, on/n, on/off}'
