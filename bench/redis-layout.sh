#!/usr/bin/env bash
# Redis memory per token of rspamd's Bayes layout, for comparison with
# hamlet's own Redis layout in the same run.
#
# Usage: bench/redis-layout.sh N [PORT]
#   Loads N tokens the way rspamd stores them and prints
#     rspamd-layout tokens=N bytes_per_token=X used_memory_delta=Y
#     rspamd-layout sample=100 memory_usage_avg=Z   (MEMORY USAGE, averaged)
#   By default starts its own redis-server on a free 127.0.0.1 port
#   (--save '' --appendonly no, in a temp dir) and stops it at exit. With
#   PORT it uses an already running server on 127.0.0.1:PORT instead, in
#   DB ${DB:-9}, which must be empty; that DB is flushed again at exit.
# Environment:
#   EXPIRE=8640000  bayes_expiry `expire` to emulate (seconds); 0 = no TTLs
#                   (rspamd's stock config: bayes_expiry inactive)
#   PREFIX=RS       token key prefix (per-user: RS<rcpt>, e.g. RSbob@x.org)
#   SEED=1          RNG seed for the generated tokens
#
# rspamd's layout (read from rspamd/rspamd on GitHub, master snapshot of
# 2026-08, commit eaac8e914ef0; the files below last changed 2026-05):
#
# * One Redis HASH per token. Key = "<prefix>_<token>", where <token> is the
#   64-bit token hash printed as an UNSIGNED DECIMAL (0..18446744073709551615,
#   so mostly 19-20 digits): src/libstat/backends/redis_backend.cxx,
#   rspamd_redis_serialize_tokens(): rspamd_snprintf(numbuf, ..., "%s_%uL",
#   prefix, tok->data). The full key strings are sent to the Lua scripts.
# * <prefix> is the expanded `redis_object`: REDIS_DEFAULT_OBJECT "%s%l", or
#   "%s%l%r" with per_user (same file), where %s = "RS", %l = statfile label
#   (unset in the stock conf/statistic.conf), %r = principal recipient. So
#   stock keys are "RS_<u64>", per-user keys "RS<user>_<u64>".
# * Hash fields = class label, value = count (integer via HINCRBY):
#   lualib/redis_scripts/bayes_learn.lua does
#   HINCRBY <token key> <label> 1 per token, label "S" (spam) or "H" (ham)
#   (get_class_label() in redis_backend.cxx maps spam/ham to the legacy
#   "S"/"H"; true multi-class setups use the class name). A token seen in
#   both classes has both fields. lualib/redis_scripts/bayes_classify.lua
#   reads them with HMGET <token key> H S. With store_tokens = true (off in
#   the stock config) a "tokens" text field and a <prefix>_z ZSET are added;
#   not modelled here.
# * Per learn, besides tokens: HSET <prefix> version 2, HINCRBY <prefix>
#   learns_spam|learns_ham, SADD <symbol>_keys <prefix> (bayes_learn.lua).
#   Constant size, loaded here once.
# * TTL: learning sets NO expire (the current bayes_learn.lua and
#   redis_backend.cxx issue no EXPIRE; only the old C backend,
#   src/libstat/backends/redis_backend.c, sent EXPIRE after each HINCRBY).
#   TTLs come from the bayes_expiry plugin (src/plugins/lua/bayes_expiry.lua),
#   active only if the classifier sets `expire` (the docs example is
#   expire = 8640000, https://rspamd.com/doc/modules/bayes_expiry.html). It
#   SCANs the token keys and, against the mean total count of the scanned
#   batch: "common" tokens (no class above 99% of the total,
#   epsilon_common = 0.01) get EXPIRE common_ttl = 10 days if their TTL is
#   longer; frequent tokens (total >= mean) with one class above 75%
#   (significant_factor) are PERSISTed; all others (infrequent, i.e. the
#   count-1 majority, and insignificant ones) get EXPIRE <expire>. This
#   script applies those rules once over all tokens (with EXPIRE=0: none).
#
# The count distribution is our assumption, not rspamd's: a token's total
# count is Zipf-like, P(k) ~ k^-2.2 for k = 1..1000 (about 2/3 are 1); a
# token with total >= 2 is in both classes with probability 0.5, else in one.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: bench/redis-layout.sh N [PORT]}
port=${2:-}
case $n in '' | *[!0-9]*) echo "N must be a number" >&2; exit 2 ;; esac
expire=${EXPIRE:-8640000}
prefix=${PREFIX:-RS}
seed=${SEED:-1}
db=0

work=$(mktemp -d)
srv=
own=1
cleanup() {
  if [ -n "$srv" ]; then
    kill "$srv" 2>/dev/null || true
    wait "$srv" 2>/dev/null || true
  elif [ "$own" = 0 ] && [ -n "${port:-}" ]; then
    redis-cli -h 127.0.0.1 -p "$port" -n "$db" FLUSHDB >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "$port" ]; then
  own=0
  db=${DB:-9}
  [ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" = PONG ] ||
    { echo "no redis-server answering on 127.0.0.1:$port" >&2; own=1; port=; exit 1; }
  size=$(redis-cli -h 127.0.0.1 -p "$port" -n "$db" DBSIZE)
  [ "$size" = 0 ] || { echo "DB $db on port $port is not empty ($size keys); set DB=" >&2; own=1; port=; exit 1; }
else
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --dir "$work" --logfile "$work/redis.log" --daemonize no &
  srv=$!
  for _ in $(seq 100); do
    [ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" = PONG ] && break
    sleep 0.05
  done
fi
rc() { redis-cli -h 127.0.0.1 -p "$port" -n "$db" "$@"; }
info() { rc INFO "$1" | tr -d '\r' | awk -F: -v k="$2" '$1==k{print $2}'; }

# RESP for redis-cli --pipe, plus 100 sample keys for MEMORY USAGE.
python3 - "$n" "$expire" "$prefix" "$seed" "$work/load.resp" "$work/sample" <<'PY'
import itertools, random, sys
n, expire, prefix, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rnd = random.Random(seed)
COMMON_TTL = 10 * 86400  # bayes_expiry settings.common_ttl

def b(s):
    return s if isinstance(s, bytes) else str(s).encode()

def cmd(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = b(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)

ks = range(1, 1001)
cum = list(itertools.accumulate(k ** -2.2 for k in ks))
totals = rnd.choices(ks, cum_weights=cum, k=n)
mean = sum(totals) / n if n else 0

keys = set()
while len(keys) < n:  # distinct random 64-bit hashes, as %uL prints them
    keys.add(b"%s_%d" % (prefix.encode(), rnd.getrandbits(64)))
keys = list(keys)
rnd.shuffle(keys)

HSET, EXP = b"*4\r\n$4\r\nHSET\r\n", b"*3\r\n$6\r\nEXPIRE\r\n"
def bulk(x):
    return b"$%d\r\n%s\r\n" % (len(x), x)

f = open(sys.argv[5], "wb")
out = [cmd("HSET", prefix, "version", "2", "learns_spam", max(1, n // 300),
           "learns_ham", max(1, n // 300)),
       cmd("SADD", "BAYES_SPAM_keys", prefix), cmd("SADD", "BAYES_HAM_keys", prefix)]
ttl_exp, ttl_common = b(expire), b(COMMON_TTL)
nboth = nttl = 0
for key, total in zip(keys, totals):
    kb = bulk(key)
    if total >= 2 and rnd.random() < 0.5:
        s = rnd.randint(1, total - 1)
        h = total - s
        nboth += 1
        out.append(b"*6\r\n$4\r\nHSET\r\n" + kb + b"$1\r\nS\r\n" + bulk(b(s)) + b"$1\r\nH\r\n" + bulk(b(h)))
        counts = (s, h)
    else:
        out.append(HSET + kb + (b"$1\r\nS\r\n" if rnd.random() < 0.5 else b"$1\r\nH\r\n") + bulk(b(total)))
        counts = (total,)
    if expire > 0:
        top = max(counts)
        if len(counts) == 2 and top / total <= 0.99:
            ttl = ttl_common            # common
        elif total >= mean and top / total > 0.75:
            ttl = None                  # significant: persisted
        else:
            ttl = ttl_exp               # infrequent / insignificant
        if ttl is not None:
            nttl += 1
            out.append(EXP + kb + bulk(ttl))
    if len(out) >= 65536:
        f.write(b"".join(out))
        out.clear()
f.write(b"".join(out))
f.close()
with open(sys.argv[6], "wb") as f:
    f.write(b"\n".join(keys[:100]) + b"\n")
print("# generated: both-classes=%.3f ttl=%.3f mean-total=%.2f count1=%.3f" % (
    nboth / max(n, 1), nttl / max(n, 1), mean, totals.count(1) / max(n, 1)))
PY

before=$(info memory used_memory)
t0=$(date +%s.%N)
pipe_out=$(redis-cli -h 127.0.0.1 -p "$port" -n "$db" --pipe <"$work/load.resp")
t1=$(date +%s.%N)
grep -q 'errors: 0,' <<<"$pipe_out" || { echo "load failed: $pipe_out" >&2; exit 1; }
# Let incremental rehashing of the key/expire dicts finish (serverCron).
prev=
for _ in $(seq 50); do
  cur=$(info memory used_memory)
  [ "$cur" = "$prev" ] && break
  prev=$cur
  sleep 0.2
done
after=$(info memory used_memory)
delta=$((after - before))

echo "# redis $(rc INFO server | tr -d '\r' | awk -F: '$1=="redis_version"{print $2}'); $(rc CONFIG GET hash-max-listpack-entries | paste -sd= -) $(rc CONFIG GET hash-max-listpack-value | paste -sd= -); encoding $(rc OBJECT ENCODING "$(head -1 "$work/sample")")"
echo "# loaded in $(python3 -c "print(round($t1-$t0,2))") s; keyspace $(rc INFO keyspace | tr -d '\r' | grep "^db$db:" || true); used_memory before=$before after=$after; EXPIRE=$expire PREFIX=$prefix"
echo "rspamd-layout tokens=$n bytes_per_token=$(python3 -c "print(round($delta/max($n,1),1))") used_memory_delta=$delta"
sed 's/^/MEMORY USAGE /; s/$/ SAMPLES 0/' "$work/sample" | rc | awk '
  {s+=$1; c++} END {printf "rspamd-layout sample=%d memory_usage_avg=%.1f\n", c, (c ? s/c : 0)}'
