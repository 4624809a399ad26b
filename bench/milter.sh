#!/usr/bin/env bash
# The milter through a real Postfix (issue 19's bar): smtp-source (Debian's
# postfix package) sends N messages to one private Postfix on loopback, in
# three configurations measured in one run against the same Postfix:
#   none    no milter
#   hamlet  smtpd_milters = hamlet serve --milter (starter model, default
#           config: headers only)
#   rspamd  smtpd_milters = rspamd 3.4's proxy worker in milter mode
#           (self_scan, Bayes on, every module that does DNS or other
#           network lookups off, DNS pointed at a dead loopback port)
# in alternating order (none hamlet rspamd none hamlet rspamd ...), ROUNDS
# times. Each run's figure is smtp-source's wall time: it returns when its
# last session ends, after the milter answered the last DATA. The queue is
# drained (discard transport) before the next run starts.
# Reported: seconds, messages/s and ms per message for each run and each
# configuration (mean of its runs), the time each milter adds per message
# over no milter, hamlet_added / rspamd_added, and the bar (<= 1/3).
# Every run also counts what Postfix did with its messages (status=sent,
# rejects) and what the milter saw (hamlet's /metrics, rspamd's task log),
# and the CPU per message of the milter's own processes and of the whole
# machine.
#
# Usage: bench/milter.sh [N]   (default 2000)
# Environment: SESSIONS (smtp-source -s, default 10), ROUNDS (default 2),
#   RSPAMD_BAYES=redis|sqlite3 (default redis, rspamd's own default: a
#   private redis-server on loopback, given to the classifier alone; 3.4
#   still has the in-process SQLite backend, but with two proxy processes
#   and the controller on one file it logs "database is locked" and, in one
#   of two tries here, refused most learns as "already learned", so it is
#   there only for reference),
#   RSPAMD_COUNT (proxy processes, default nproc), RSPAMD_LEARN (messages of
#   each class taught to rspamd's Bayes before the runs, default 250, over
#   its min_learns of 200 so that Bayes classifies), HAMLET (the binary,
#   default target/release/hamlet; copied first so a rebuild cannot swap it
#   mid-run), BUSY_WAIT_S (how long to wait, over the whole script, for
#   cargo/rustc/fuzzers to go before each run, default 2400),
#   MILTER_SOCKET=inet|unix (default inet: both milters on 127.0.0.1 ports;
#   unix: both on UNIX sockets, which takes TCP's delayed-ACK stall out, see
#   bench/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
sessions=${SESSIONS:-10}
rounds=${ROUNDS:-2}
bayes=${RSPAMD_BAYES:-redis}
rcount=${RSPAMD_COUNT:-$(nproc)}
learn=${RSPAMD_LEARN:-250}
busy_wait=${BUSY_WAIT_S:-2400}
transport=${MILTER_SOCKET:-inet}
src_bin=${HAMLET:-target/release/hamlet}
for p in postfix postconf postqueue postsuper postcat smtp-source swaks rspamd rspamc python3 curl; do
  command -v $p >/dev/null || { echo "bench: $p missing: apt-get install -y postfix swaks rspamd curl" >&2; exit 1; }
done
[ "$bayes" = redis ] && { command -v redis-server >/dev/null || { echo "bench: apt-get install -y redis-server" >&2; exit 1; }; }
[ -x "$src_bin" ] || { echo "bench: $src_bin missing (build it first)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench: run as root (a private Postfix instance needs it)" >&2; exit 1; }
shared=${HAMLET_SHARED:-../shared}
corpus=target/corpora/spamassassin
[ -f "$corpus/index" ] || { echo "bench: $corpus missing: scripts/test.sh unpacks the corpora" >&2; exit 1; }

work=$(mktemp -d /tmp/hamlet-milter-bench.XXXXXX)
chmod 755 "$work"
pids=()
sleeper=
hamlet_pid=
rspamd_pid=
redis_pid=
conf=$work/conf
cleanup() {
  postfix -c "$conf" stop >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # host port seconds
  python3 - "$@" <<'PY'
import socket, sys, time
end = time.time() + float(sys.argv[3])
while time.time() < end:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}
now() { date +%s.%N; }
# Where each milter listens: 127.0.0.1:PORT, or with MILTER_SOCKET=unix a
# UNIX socket in $work (Postfix's smtpd here is not chrooted).
listen() { # hamlet | rspamd
  if [ "$transport" = unix ]; then echo "$work/sock/$1.sock"
  elif [ "$1" = hamlet ]; then echo "127.0.0.1:$hport"
  else echo "127.0.0.1:$rport"; fi
}
wait_listen() { # hamlet|rspamd seconds
  local a; a=$(listen "$1")
  if [ "$transport" = inet ]; then wait_port 127.0.0.1 "${a##*:}" "$2"; return; fi
  python3 - "$a" "$2" <<'PY' && chmod 666 "$a"
import socket, sys, time
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}
H=$work/hamlet
cp "$src_bin" "$H"

# The message: the spamassassin ham closest to 6 KB among the index's first
# 200 (the one bench/http.sh uses), without its mbox From_ line; read from
# the unpacked corpora at run time, never copied into the repository.
msg=$(awk -v d="$corpus" 'NR<=200{print d"/"$2}' "$corpus/index" | xargs ls -l | awk '{print ($5>6144?$5-6144:6144-$5), $9}' | sort -n | awk 'NR==1{print $2}')
sed '1{/^From /d}' "$msg" > "$work/msg.eml"

# --- Postfix: the shared harness, its policy service line gone, the queue
# in $work, delivery to discard. smtp-source greets as client.example.test,
# which passes the harness's HELO checks (kept on). in_flow_delay off: the
# figure is the SMTP dialogue and the milter, not Postfix's inflow throttle.
smtp=$(free_port); hport=$(free_port); hhttp=$(free_port); rport=$(free_port); rctl=$(free_port); deadns=$(free_port)
mkdir -p "$conf" "$work/spool" "$work/data" "$work/sock"
chown postfix "$work/data"
sed -e "s|@DIR@|$work|g" \
    -e 's|^smtpd_recipient_restrictions.*|smtpd_recipient_restrictions = reject_non_fqdn_recipient|' \
    "$shared/reference/harness/postfix-main.cf" > "$conf/main.cf"
grep -q check_policy_service "$conf/main.cf" && { echo "bench: policy service still configured" >&2; exit 1; }
cat >> "$conf/main.cf" <<EOF
in_flow_delay = 0s
smtpd_milters =
# A milter that fails shows as a 4xx in smtp-source's errors, not as mail
# that silently went through unscored.
milter_default_action = tempfail
EOF
sed -e "s|@SMTP_PORT@|$smtp|g" "$shared/reference/harness/postfix-master.cf" > "$conf/master.cf"
postfix -c "$conf" start 2>"$work/postfix-start.log" || { cat "$work/postfix-start.log" >&2; exit 1; }
wait_port 127.0.0.1 "$smtp" 20 || { echo "bench: postfix never listened" >&2; exit 1; }

# --- hamlet: a fresh database with the starter model, default config.
"$H" --db "$work/h.redb" db init >/dev/null
"$H" --db "$work/h.redb" serve --milter "$(listen hamlet)" --http "127.0.0.1:$hhttp" 2>"$work/hamlet.log" &
hamlet_pid=$!
pids+=($!)
wait_listen hamlet 30 || { echo "bench: hamlet never listened" >&2; cat "$work/hamlet.log" >&2; exit 1; }

# --- rspamd 3.4: Debian's stock rules and modules, its own top-level
# config (only the proxy, in milter mode with self_scan, and a controller
# to teach Bayes), every directory in $work.
R=$work/rspamd
mkdir -p "$R/local.d" "$R/db" "$R/run" "$R/log"
chown -R _rspamd:_rspamd "$R" 2>/dev/null || true
if [ "$bayes" = redis ]; then
  redisport=$(free_port)
  redis-server --port "$redisport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >/dev/null &
  redis_pid=$!
  pids+=($!)
  wait_port 127.0.0.1 "$redisport" 20 || { echo "bench: redis-server never listened" >&2; exit 1; }
  backend="backend = \"redis\"; servers = \"127.0.0.1:$redisport\"; new_schema = true;"
  paths=('' '')
else
  backend='backend = "sqlite3";'
  paths=('path = "$DBDIR/bayes.ham.sqlite";' 'path = "$DBDIR/bayes.spam.sqlite";')
fi
cat > "$R/rspamd.conf" <<EOF
lua = "\$RULESDIR/rspamd.lua"
.include "\$CONFDIR/metrics.conf"
.include "\$CONFDIR/actions.conf"
.include "\$CONFDIR/groups.conf"
.include "\$CONFDIR/composites.conf"
.include "\$CONFDIR/modules.conf"
.include "\$CONFDIR/settings.conf"
modules {
  path = "\${PLUGINSDIR}";
  fallback_path = "\${SHAREDIR}/lua";
}
classifier "bayes" {
  tokenizer { name = "osb"; }
  $backend
  min_tokens = 11;
  min_learns = 200;
  statfile { symbol = "BAYES_HAM"; spam = false; ${paths[0]} }
  statfile { symbol = "BAYES_SPAM"; spam = true; ${paths[1]} }
  learn_condition = 'return require("lua_bayes_learn").can_learn';
}
options {
  pidfile = "\$RUNDIR/rspamd.pid";
  .include "\$CONFDIR/options.inc"
  .include(priority=1,duplicate=merge) "\$LOCAL_CONFDIR/local.d/options.inc"
}
logging {
  type = "file";
  filename = "\$LOGDIR/rspamd.log";
  .include "\$CONFDIR/logging.inc"
}
worker "rspamd_proxy" {
  bind_socket = "$(listen rspamd)$([ "$transport" = unix ] && echo ' mode=0666')";
  milter = yes;
  timeout = 120s;
  upstream "local" { default = yes; self_scan = yes; }
  count = $rcount;
  discard_on_reject = false;
  quarantine_on_reject = false;
  spam_header = "X-Spam";
  reject_message = "Spam message rejected";
}
worker "controller" {
  bind_socket = "127.0.0.1:$rctl";
  count = 1;
  secure_ip = "127.0.0.1";
  static_dir = "\${WWWDIR}";
}
EOF
# DNS: a loopback port nobody listens on (answers nothing, fails at once);
# nothing leaves the machine even if a lookup slips through (the per-task
# log's "dns req" says whether one did).
cat > "$R/local.d/options.inc" <<EOF
dns { nameserver = ["127.0.0.1:$deadns"]; timeout = 1s; retransmits = 1; }
EOF
# Network modules off: DNS lists and URL lists (rbl covers SURBL/URIBL in
# 3.x), emails (DNS), asn (DNS), dcc, fuzzy_check (UDP to rspamd.com),
# spf, dkim, dmarc, arc (DNS), mx_check, bimi (DNS, HTTP), rspamd_update
# (HTTP), and the external scanners and exporters; the Redis modules have no
# Redis (Redis is given to the classifier alone) and would stay off anyway.
net_off="rbl surbl emails asn dcc fuzzy_check spf dkim dmarc arc mx_check bimi rspamd_update url_redirector
  external_services antivirus p0f spamassassin clickhouse elastic metadata_exporter metric_exporter aws_s3
  reputation neural ratelimit greylist history_redis replies dkim_signing"
for m in $net_off; do echo "enabled = false;" > "$R/local.d/$m.conf"; done
# phishing stays (its URL checks are local) without its feeds: Debian turns
# on phishtank, a DNS lookup per URL.
echo "phishtank_enabled = false; openphish_enabled = false;" > "$R/local.d/phishing.conf"
# The verdict as headers on every message, as hamlet adds its own (by
# default rspamd skips them for local clients, and smtp-source is one).
echo "extended_spam_headers = true; skip_local = false; skip_authenticated = false;" > "$R/local.d/milter_headers.conf"
chown -R _rspamd:_rspamd "$R" 2>/dev/null || true
rspamd -f -u _rspamd -g _rspamd -c "$R/rspamd.conf" --var="LOCAL_CONFDIR=$R" --var="DBDIR=$R/db" \
  --var="RUNDIR=$R/run" --var="LOGDIR=$R/log" >"$work/rspamd.out" 2>&1 &
rspamd_pid=$!
pids+=($!)
wait_listen rspamd 60 || { echo "bench: rspamd never listened" >&2; tail -30 "$work/rspamd.out" "$R/log/rspamd.log" >&2; exit 1; }
wait_port 127.0.0.1 "$rctl" 30 || { echo "bench: rspamd controller never listened" >&2; exit 1; }
# Hyperscan: the regexps compile once into $DBDIR (hs_helper); until the
# workers load them they run on PCRE. Wait until every proxy process says
# it loaded the compiled database.
t=$(now)
hs_ready() { grep -E '\(rspamd_proxy\).*rspamd_worker_hyperscan_ready' "$R/log/rspamd.log" 2>/dev/null | grep -c . || true; }
for _ in $(seq 240); do [ "$(hs_ready)" -ge "$rcount" ] && break; sleep 0.5; done
echo "# rspamd up; $(hs_ready) of $rcount proxy processes loaded hyperscan after $(awk -v a="$t" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s" >&2

# Teach rspamd's Bayes (the controller), past min_learns: the first
# RSPAMD_LEARN ham and spam of the spamassassin index.
awk -v d="$corpus" -v k="$learn" '$1=="ham" && h<k {print d"/"$2; h++}' "$corpus/index" > "$work/learn.ham"
awk -v d="$corpus" -v k="$learn" '$1=="spam" && s<k {print d"/"$2; s++}' "$corpus/index" > "$work/learn.spam"
for c in ham spam; do
  xargs rspamc -h "127.0.0.1:$rctl" -n 4 -t 60 "learn_$c" < "$work/learn.$c" > "$work/learn.$c.out" 2>&1 || true
done
echo "# rspamd Bayes ($bayes) taught: ham $(grep -c 'success = true' "$work/learn.ham.out" || true) of $learn, spam $(grep -c 'success = true' "$work/learn.spam.out" || true) of $learn (the rest refused: already known to Bayes, or too few tokens)"

set_milter() { # none | hamlet | rspamd
  case $1 in
    none) m= ;;
    hamlet|rspamd) [ "$transport" = unix ] && m="unix:$(listen "$1")" || m="inet:$(listen "$1")" ;;
  esac
  postconf -c "$conf" -e "smtpd_milters = $m"
  postfix -c "$conf" reload >/dev/null 2>&1
  sleep 1
}
queue_len() { postqueue -c "$conf" -p 2>/dev/null | awk '/^[0-9A-F]/{n++} END{print n+0}'; }
wait_empty() { # seconds
  local end=$(( $(date +%s) + $1 ))
  while [ "$(queue_len)" -gt 0 ]; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.2; done
}

# --- Each milter really sees the mail: one message through each, held, its
# headers read back from the queue file.
for cfg in hamlet rspamd; do
  set_milter "$cfg"
  postconf -c "$conf" -e 'smtpd_end_of_data_restrictions = check_client_access static:HOLD'
  postfix -c "$conf" reload >/dev/null 2>&1; sleep 1
  out=$(swaks --server "127.0.0.1:$smtp" --helo client.example.test --from sender@example.test --to erin@corp.example --data "$work/msg.eml" --timeout 60 2>&1 || true)
  id=$(printf '%s\n' "$out" | sed -n 's/.*queued as \([0-9A-Za-z]*\).*/\1/p' | head -1)
  [ -n "$id" ] || { echo "bench: $cfg: probe not queued:" >&2; printf '%s\n' "$out" | tail -5 >&2; exit 1; }
  hdrs=$(postcat -c "$conf" -h -q "$id" | grep -E '^X-Spam|^X-Rspamd' | cut -c1-150)
  [ -n "$hdrs" ] || { echo "bench: $cfg: the held probe has no milter headers" >&2; exit 1; }
  echo "# probe through $cfg (queued as $id):"; printf '%s\n' "$hdrs" | sed 's/^/#   /'
  postsuper -c "$conf" -d ALL hold >/dev/null 2>&1
  postconf -c "$conf" -e 'smtpd_end_of_data_restrictions ='
done
last=$(grep '(rspamd_proxy).*rspamd_task_write_log' "$R/log/rspamd.log" | tail -1)
echo "# rspamd probe task: $(printf '%s' "$last" | grep -o 'BAYES_[A-Z]*([^)]*)'), $(printf '%s' "$last" | grep -o 'len: [0-9]*, time: [^,]*, dns req: [0-9]*')"
printf '%s' "$last" | grep -q 'BAYES_' || { echo "bench: rspamd's Bayes did not classify the probe" >&2; exit 1; }

# --- The runs.
# Before each run, wait for the machine (no cargo, rustc or fuzzer running),
# polling every 60 s, up to BUSY_WAIT_S over the whole script; past that the
# run goes ahead and its row says "busy".
busy_deadline=$(( $(date +%s) + busy_wait ))
quiet() {
  state=quiet
  while pgrep -f 'cargo fuzz|fuzz/target|libfuzzer|/work/fuzz-target' >/dev/null || pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null; do
    [ "$(date +%s)" -ge "$busy_deadline" ] && { state=busy; return; }
    sleep 60 & sleeper=$!
    wait $sleeper || true
    sleeper=
  done
}
hamlet_milter_msgs() { curl -sf "127.0.0.1:$hhttp/metrics" | awk '/^hamlet_verdicts_total/{s+=$NF} END{print s+0}'; }
rspamd_tasks() { grep -c '(rspamd_proxy).*rspamd_task_write_log' "$R/log/rspamd.log" || true; }
rspamd_bayes() { grep '(rspamd_proxy).*rspamd_task_write_log' "$R/log/rspamd.log" | grep -c 'BAYES_' || true; }
rspamd_dns() { grep -o 'dns req: [0-9]*' "$R/log/rspamd.log" | awk '{s+=$3} END{print s+0}'; }
# CPU: the milter's own processes (hamlet; rspamd's main, workers and its
# redis-server), and the whole machine (/proc/stat, every process, ours or
# not), in ms.
tck=$(getconf CLK_TCK)
proc_cpu() { for p in "$@"; do [ -r "/proc/$p/stat" ] && sed 's/.*) //' "/proc/$p/stat"; done | awk -v t="$tck" '{s+=$12+$13} END{print s*1000/t}'; }
milter_cpu() {
  case $1 in
    hamlet) proc_cpu "$hamlet_pid" ;;
    rspamd) proc_cpu "$rspamd_pid" $(pgrep -P "$rspamd_pid") $redis_pid ;;
    *) echo 0 ;;
  esac
}
machine_cpu() { awk -v t="$tck" '/^cpu /{print ($2+$3+$4+$7+$8+$9)*1000/t}' /proc/stat; }
results=$work/results
: > "$results"
echo "# $(date -u +%F) $(nproc) cores; postfix $(postconf -d -h mail_version); $(rspamd --version | head -1); $($H --version 2>/dev/null | head -1)"
echo "# smtp-source -A -s $sessions -m $n -M client.example.test -f sender@example.test -t erin@corp.example -F msg.eml 127.0.0.1:PORT"
echo "# message: $(basename "$msg") ($(stat -c %s "$work/msg.eml") bytes); milters on $transport sockets; rspamd proxy count=$rcount self_scan, Bayes $bayes"
echo "| run | config | machine | load (1m) | seconds | msgs/s | ms/msg | milter CPU ms/msg | all CPU ms/msg | sent | rejected | smtp-source errors | milter saw | drain s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
run=0
for r in $(seq "$rounds"); do
  for cfg in none hamlet rspamd; do
    run=$((run + 1))
    set_milter "$cfg"
    wait_empty 120 || { echo "bench: queue not empty before run $run" >&2; exit 1; }
    quiet
    load=$(awk '{print $1}' /proc/loadavg)
    l0=$(wc -l < "$work/maillog" 2>/dev/null || echo 0)
    h0=$(hamlet_milter_msgs); r0=$(rspamd_tasks); b0=$(rspamd_bayes)
    c0=$(milter_cpu "$cfg"); m0=$(machine_cpu)
    t0=$(now)
    timeout 600 smtp-source -A -s "$sessions" -m "$n" -M client.example.test -f sender@example.test -t erin@corp.example \
      -F "$work/msg.eml" "127.0.0.1:$smtp" > "$work/ss.$run.out" 2> "$work/ss.$run.err" || echo "smtp-source exit $? (run $run)" >> "$work/ss.$run.err"
    t1=$(now)
    c1=$(milter_cpu "$cfg"); m1=$(machine_cpu)
    wait_empty 180 || echo "bench: queue still not empty 180 s after run $run" >&2
    t2=$(now)
    sleep 1
    tail -n +"$((l0 + 1))" "$work/maillog" > "$work/log.$run"
    sent=$(grep -c 'status=sent' "$work/log.$run" || true)
    rej=$(grep -cE 'milter-reject|: reject:' "$work/log.$run" || true)
    errs=$(grep -c . "$work/ss.$run.err" || true)
    case $cfg in
      hamlet) saw=$(( $(hamlet_milter_msgs) - h0 )) ;;
      rspamd) saw="$(( $(rspamd_tasks) - r0 )) (Bayes $(( $(rspamd_bayes) - b0 )))" ;;
      *) saw=- ;;
    esac
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
    drain=$(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')
    mcpu=$(awk -v a="$c0" -v b="$c1" -v n="$n" -v c="$cfg" 'BEGIN{if (c == "none") print "-"; else printf "%.2f", (b-a)/n}')
    acpu=$(awk -v a="$m0" -v b="$m1" -v n="$n" 'BEGIN{printf "%.2f", (b-a)/n}')
    echo "$cfg $secs $mcpu $acpu" >> "$results"
    awk -v r="$run" -v c="$cfg" -v st="$state" -v l="$load" -v s="$secs" -v n="$n" -v se="$sent" -v rj="$rej" -v e="$errs" -v w="$saw" -v d="$drain" -v mc="$mcpu" -v ac="$acpu" \
      'BEGIN{printf "| %d | %s | %s | %s | %.2f | %.0f | %.2f | %s | %s | %s | %s | %s | %s | %s |\n", r, c, st, l, s, n/s, s*1000/n, mc, ac, se, rj, e, w, d}'
  done
done
echo "# rspamd DNS requests over the whole run (per-task log): $(rspamd_dns); its mean scan time per task: $(grep -o '(rspamd_proxy).*time: [0-9.]*ms' "$R/log/rspamd.log" | grep -o 'time: [0-9.]*' | awk '{s+=$2; k++} END{printf "%.2f ms over %d tasks", s/k, k}')"
echo
awk -v n="$n" '
  { t[$1] += $2; k[$1]++; mc[$1] += $3; ac[$1] += $4 }
  END {
    print "| config | runs | mean seconds | msgs/s | ms/msg | added ms/msg over none | milter CPU ms/msg | all CPU ms/msg |"
    print "|---|---|---|---|---|---|---|---|"
    split("none hamlet rspamd", order, " ")
    for (i = 1; i <= 3; i++) { c = order[i]; m[c] = t[c] / k[c]; ms[c] = m[c] * 1000 / n }
    for (i = 1; i <= 3; i++) { c = order[i]
      printf "| %s | %d | %.2f | %.0f | %.3f | %s | %s | %.2f |\n", c, k[c], m[c], n / m[c], ms[c], (c == "none" ? "-" : sprintf("%.3f", ms[c] - ms["none"])), (c == "none" ? "-" : sprintf("%.2f", mc[c] / k[c])), ac[c] / k[c] }
    ha = ms["hamlet"] - ms["none"]; ra = ms["rspamd"] - ms["none"]
    if (ra <= 0) { print "rspamd added nothing measurable: no ratio"; exit }
    printf "hamlet_added / rspamd_added = %.3f / %.3f = %.3f; bar (<= 0.333): %s\n", ha, ra, ha / ra, (ha / ra <= 1 / 3 ? "met" : "NOT met")
  }' "$results"
