#!/usr/bin/env bash
# /v1/check with antivirus on against off, in one run, on a clean ~6 KB
# message (the spamassassin ham closest to 6 KB, as bench/http.sh), with a
# real clamd (Debian's clamav-daemon) loaded with only a test signature
# (no network for freshclam: the figures are hamlet's and clamd's engine
# overhead, not a full signature set's scan time).
#   1. wrk on hamlet without [antivirus], then with it (throughput, latency);
#   2. clamd's own scan time: the same message by zINSTREAM straight from
#      Python, one at a time;
#   3. hamlet's scan time: the same message checked one at a time over HTTP,
#      the scans' mean read from /metrics (hamlet_request_duration_seconds,
#      endpoint "antivirus scan"); hamlet's own overhead per scan is the
#      difference.
# Usage: bench/antivirus.sh [SECONDS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
for c in wrk clamd sigtool; do command -v $c >/dev/null || { echo "bench: apt-get install -y wrk clamav-daemon clamav" >&2; exit 1; }; done
H=target/release/hamlet
[[ -x $H ]] || cargo build --release --locked -q
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=target/corpora/spamassassin
msg=$(awk -v d="$dir" '$1=="ham" && NR<=400{print d"/"$2}' "$dir/index" | xargs ls -l | awk '{print ($5>6144?$5-6144:6144-$5), $9}' | sort -n | awk 'NR==1{print $2}')

# clamd with one test signature.
mkdir -p "$work/db"
printf 'hamlet antivirus bench payload\n' > "$work/payload.bin"
sigtool --md5 "$work/payload.bin" > "$work/db/test.hdb"
cport=$(free_port)
cat > "$work/clamd.conf" <<EOF
Foreground yes
DatabaseDirectory $work/db
TCPSocket $cport
TCPAddr 127.0.0.1
LogFile $work/clamd.log
PidFile $work/clamd.pid
User root
EOF
clamd -c "$work/clamd.conf" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 300); do
  python3 -c "import socket; s=socket.create_connection(('127.0.0.1',$cport),0.2); s.sendall(b'zPING\0'); assert s.recv(10).startswith(b'PONG')" 2>/dev/null && break
  sleep 0.1
done

$H --db "$work/h.redb" db init --empty >/dev/null
$H --db "$work/h.redb" train "$dir/index" >/dev/null
start_hamlet() { # $1: name (its own copy of the DB), $2: port, $3: extra config
  cp "$work/h.redb" "$work/$1.redb"
  printf 'log = "warn"\nhttp = "127.0.0.1:%s"\nlearn_token = "bench"\n%s\n' "$2" "$3" > "$work/$1.toml"
  $H --db "$work/$1.redb" serve --config "$work/$1.toml" 2>"$work/$1.log" >/dev/null &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "127.0.0.1:$2/healthz" >/dev/null && break; sleep 0.1; done
}
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
local f = io.open("$msg", "rb"); wrk.body = f:read("*a"); f:close()
LUA
echo "# $(date -u +%F) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(clamd --version); message $(basename "$msg") ($(stat -c %s "$msg") bytes); wrk -t2 -c16 -d${secs}s"
off=$(free_port)
on=$(free_port)
start_hamlet off "$off" ""
start_hamlet on "$on" "[antivirus]
clamd = \"tcp:127.0.0.1:$cport\""
curl -s --data-binary @"$msg" "127.0.0.1:$on/v1/check" | python3 -c 'import json,sys; v=json.load(sys.stdin); a=v["stages"]["antivirus"]; assert a["result"]=="clean", a; print("antivirus stage:", a)'
for round in 1 2; do
  for cfg in off on; do
    port=$off; [[ $cfg == on ]] && port=$on
    printf '%-4s round %s: ' "$cfg" "$round"
    wrk -t2 -c16 -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/check" \
      | awk '/Requests\/sec/{rps=$2} / 50%/{p50=$2} / 99%/{p99=$2} /Non-2xx/{bad=$NF} END{printf "%s req/s, p50 %s, p99 %s%s\n", rps, p50, p99, bad?", non-2xx "bad:""}'
  done
done

# Sequential: clamd alone, then through hamlet.
python3 - "$msg" "$cport" "$on" <<'PY'
import http.client, socket, struct, sys, time, re
msg, cport, hport = open(sys.argv[1], 'rb').read(), int(sys.argv[2]), int(sys.argv[3])
n = 1000
def scan():
    s = socket.create_connection(("127.0.0.1", cport))
    s.sendall(b"zINSTREAM\0" + struct.pack(">I", len(msg)) + msg + struct.pack(">I", 0))
    r = b""
    while not r.endswith(b"\0"):
        r += s.recv(100)
    s.close()
    assert r == b"stream: OK\0", r
t = time.perf_counter()
for _ in range(n):
    scan()
direct = (time.perf_counter() - t) / n * 1000
def metrics():
    c = http.client.HTTPConnection("127.0.0.1", hport); c.request("GET", "/metrics"); body = c.getresponse().read().decode()
    s = float(re.search(r'hamlet_request_duration_seconds_sum\{endpoint="antivirus scan"\} (\S+)', body).group(1))
    k = int(re.search(r'hamlet_request_duration_seconds_count\{endpoint="antivirus scan"\} (\S+)', body).group(1))
    return s, k
s0, k0 = metrics()
c = http.client.HTTPConnection("127.0.0.1", hport)
t = time.perf_counter()
for _ in range(n):
    c.request("POST", "/v1/check", body=msg); r = c.getresponse(); r.read(); assert r.status == 200
check = (time.perf_counter() - t) / n * 1000
s1, k1 = metrics()
inside = (s1 - s0) / (k1 - k0) * 1000
print(f"one at a time, {n} each: clamd alone (zINSTREAM from Python) {direct:.3f} ms a scan; "
      f"hamlet's scan (connect, send, answer) {inside:.3f} ms; hamlet's own overhead {inside - direct:+.3f} ms a scan; "
      f"a whole /v1/check with antivirus {check:.3f} ms")
PY
