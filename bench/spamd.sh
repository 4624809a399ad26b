#!/usr/bin/env bash
# Per-message latency of `hamlet client -c` against real `spamc -c` (Debian's
# spamc), both talking to hamlet serve's SPAMD listener, over the same 1,000
# messages in one run. Each message is one process run, as in an MTA pipe;
# the two clients alternate message by message (and which goes first
# alternates too), so machine noise falls on both alike. `/bin/true` with the
# same stdin is timed too: the harness's own cost of starting a process.
# Usage: bench/spamd.sh [N]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
command -v spamc >/dev/null || { echo "bench: apt-get install -y spamc" >&2; exit 1; }
# The binary the README deploys (static on glibc Linux, see scripts/build).
H=$(scripts/build -q)
work=$(mktemp -d)
trap 'kill $srv 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
$H --db "$work/h.redb" db init --empty >/dev/null
$H --db "$work/h.redb" train target/corpora/spamassassin/index >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
hport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$H --db "$work/h.redb" serve --http "127.0.0.1:$hport" --spamd "127.0.0.1:$port" 2>"$work/serve.log" &
srv=$!
for _ in $(seq 100); do spamc -K -p "$port" >/dev/null 2>&1 && break; sleep 0.1; done
awk -v d=target/corpora/csdmc2010 -v n="$n" 'NR<=n{print d"/"$2}' target/corpora/csdmc2010/index > "$work/list"
echo "# $(date -u +%F) $(nproc) cores; $(wc -l < "$work/list") csdmc2010 messages; server trained on spamassassin"
python3 - "$work/list" "$H" "$port" <<'PY'
import statistics, subprocess, sys, time
files = open(sys.argv[1]).read().split()
hamlet, port = sys.argv[2], sys.argv[3]
cmds = {
    "spamc -c": ["spamc", "-c", "-p", port],
    "hamlet client -c": [hamlet, "client", "-c", "-p", port],
    "/bin/true": ["/bin/true"],
}
times = {k: [] for k in cmds}
outs = {"spamc -c": [], "hamlet client -c": []}
for i, f in enumerate(files):
    order = list(cmds) if i % 2 == 0 else list(reversed(cmds))
    for name in order:
        with open(f, "rb") as stdin:
            t = time.perf_counter()
            r = subprocess.run(cmds[name], stdin=stdin, stdout=subprocess.PIPE)
            times[name].append(time.perf_counter() - t)
        if name in outs:
            outs[name].append(r.stdout)
agree = sum(a == b for a, b in zip(outs["spamc -c"], outs["hamlet client -c"]))
def row(name):
    v = sorted(times[name])
    q = lambda p: v[min(len(v) - 1, int(p * len(v)))] * 1000
    return f"| {name} | {statistics.mean(v)*1000:.2f} | {q(0.5):.2f} | {q(0.99):.2f} |"
print("| client | mean ms | median ms | p99 ms |\n|---|---|---|---|")
for k in cmds:
    print(row(k))
m = {k: statistics.mean(times[k]) for k in cmds}
md = {k: statistics.median(times[k]) for k in cmds}
print(f"hamlet client / spamc: mean {m['hamlet client -c']/m['spamc -c']:.2f}x, median {md['hamlet client -c']/md['spamc -c']:.2f}x")
print(f"identical score/threshold output on {agree} of {len(files)} messages")
PY
