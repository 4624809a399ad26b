#!/usr/bin/env bash
# Learning throughput of `hamlet imap-train` from a local Dovecot (Debian's
# dovecot-imapd, plaintext on loopback): N messages (default 2,000: half
# spamassassin spam in Junk, half its ham in Archive), first run on an empty
# DB, then a second run over the same folders (nothing new to learn).
# Usage: bench/imap.sh [N]   (needs root: Dovecot's mail user is vmail)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
[[ -x /usr/sbin/dovecot ]] || { echo "bench: apt-get install -y dovecot-imapd" >&2; exit 1; }
id -u vmail >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin vmail
# The binary the README deploys (static on glibc Linux, see scripts/build).
H=$(scripts/build -q)
work=$(mktemp -d)
chmod 755 "$work"   # Dovecot's processes (vmail, dovecot) must reach the maildirs
trap '[[ -f $work/run/master.pid ]] && kill "$(cat "$work/run/master.pid")"; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/run"
for f in "" .Junk .Archive; do mkdir -p "$work/mail/tester/$f"/{cur,new,tmp}; done
sed -e "s|@DIR@|$work|g" -e "s|@PORT@|$port|g" ../shared/reference/harness/dovecot.conf > "$work/dovecot.conf"
echo 'tester:{PLAIN}secret::::::' > "$work/users"
echo secret > "$work/password"
corpus=target/corpora/spamassassin
i=0
seed() { # class folder count
  awk -v c="$1" -v n="$3" '$1 == c && k < n { k++; print $2 }' "$corpus/index" | while read -r path; do
    i=$((i + 1)); cp "$corpus/$path" "$work/mail/tester/$2/cur/$((1700000000 + i)).M${i}P$1.bench:2,S"
  done
}
seed spam .Junk $((n / 2))
seed ham .Archive $((n - n / 2))
chown -R vmail:vmail "$work/mail"
dovecot -c "$work/dovecot.conf"
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
cat > "$work/hamlet.toml" <<TOML
[imap]
batch = 200
state = "$work/imap-state.redb"
[[imap.account]]
name = "tester"
host = "127.0.0.1"
port = $port
tls = "plain"
user = "tester"
password_file = "$work/password"
spam_folders = ["Junk"]
ham_folders = ["Archive"]
TOML
$H --db "$work/h.redb" db init --empty >/dev/null
echo "# $(date -u +%F) $(nproc) cores; Dovecot $(dovecot --version | cut -d' ' -f1); $n spamassassin messages ($(du -sh "$work/mail" | cut -f1))"
for run in first second; do
  t0=$(date +%s.%N)
  out=$($H --db "$work/h.redb" imap-train --config "$work/hamlet.toml")
  t1=$(date +%s.%N)
  echo "$run run: $(python3 -c "print(f'{$t1 - $t0:.2f}')") s"
  echo "$out" | sed 's/^/  /'
done
