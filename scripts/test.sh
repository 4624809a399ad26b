#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need,
# unpacks the shared corpora, runs the whole test suite in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v zstd >/dev/null || need_pkgs+=(zstd)
command -v bogofilter >/dev/null || need_pkgs+=(bogofilter)
command -v python3 >/dev/null || need_pkgs+=(python3)
# The HTTP tests signal the server with the kill program (not the shell builtin).
[[ -x /bin/kill || -x /usr/bin/kill ]] || need_pkgs+=(procps)
# rspamc (from Debian's rspamd) is a real client of the rspamd-compatible API.
command -v rspamc >/dev/null || need_pkgs+=(rspamd)
# spamc (Debian's spamc) is the real client of the SPAMD listener.
command -v spamc >/dev/null || need_pkgs+=(spamc)
# Dovecot is the real IMAP server of the imap-train tests.
[[ -x /usr/sbin/dovecot ]] || need_pkgs+=(dovecot-imapd)
# openssl makes the private CA of the IMAP TLS tests and the DKIM test key.
command -v openssl >/dev/null || need_pkgs+=(openssl)
# Postfix and swaks: the end-to-end test of the policy service.
[[ -x /usr/sbin/postfix ]] || need_pkgs+=(postfix)
command -v swaks >/dev/null || need_pkgs+=(swaks)
# miltertest (OpenDKIM's milter test driver): a second real MTA side for the milter.
command -v miltertest >/dev/null || need_pkgs+=(miltertest)
# clamd and sigtool: the antivirus tests run a real clamd with their own signatures.
[[ -x /usr/sbin/clamd ]] || need_pkgs+=(clamav-daemon)
command -v sigtool >/dev/null || need_pkgs+=(clamav)
# unbound serves the DNS-list zone of the envelope tests.
[[ -x /usr/sbin/unbound ]] || need_pkgs+=(unbound)
# redis-server: the Redis store's tests (each starts its own on loopback).
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v redis-cli >/dev/null || need_pkgs+=(redis-tools)
# The web console's browser test: Chromium driven by chromedriver from
# Debian's python3 (python3-selenium installs into /usr/bin/python3 only).
command -v chromium >/dev/null || need_pkgs+=(chromium)
command -v chromedriver >/dev/null || need_pkgs+=(chromium-driver)
/usr/bin/python3 -c 'import selenium.webdriver' 2>/dev/null || need_pkgs+=(python3-selenium)
if ((${#need_pkgs[@]})); then
  echo "test.sh: installing ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Postfix installs without a system configuration (the tests run their own).
  echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# Dovecot runs mail processes as an unprivileged user (uid >= 500).
if ! id -u vmail >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin vmail
fi

# The shared corpora sit beside the project (../shared); the corpus tests read
# them from target/corpora and fail, saying so, if they are missing.
shared=${HAMLET_SHARED:-../shared}
if [[ -x $shared/tools/unpack-corpora ]]; then
  "$shared/tools/unpack-corpora" target/corpora >/dev/null
fi
export HAMLET_SHARED=$(cd "$shared" 2>/dev/null && pwd || echo "$shared")
export HAMLET_CORPORA=${HAMLET_CORPORA:-$PWD/target/corpora}
export HAMLET_TREC_RUN=${HAMLET_TREC_RUN:-$(cd "$shared" 2>/dev/null && pwd)/tools/trec-run}

cargo test --release --locked "$@"

# The binary the README deploys (scripts/build: static-pie on glibc Linux)
# runs the README's first command on a new database with the starter
# model, and resolves a host name through NSS (client -d localhost against
# its own SPAMD listener; -x: an unreachable service is an error here).
bin=$(scripts/build -q)
smoke=$(mktemp -d)
server=
cleanup() { [[ -n $server ]] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$smoke"; }
trap cleanup EXIT
out=$("$bin" --db "$smoke/h.redb" check --clues < corpus/messages/01-plain.eml) && rc=0 || rc=$?
[[ $rc -le 2 && $out =~ ^(ham|spam|unsure)\ [0-9] ]] || { echo "test.sh: $bin check: exit $rc, output: $out" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
"$bin" --db "$smoke/h.redb" serve --spamd "127.0.0.1:$port" --http "127.0.0.1:$(free_port)" 2> "$smoke/serve.log" &
server=$!
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
out=$("$bin" client -x -d localhost -p "$port" -c < corpus/messages/01-plain.eml) && rc=0 || rc=$?
[[ $rc -le 1 && $out =~ ^-?[0-9.]+/5\.0$ ]] || { echo "test.sh: $bin client -d localhost: exit $rc, output: $out" >&2; cat "$smoke/serve.log" >&2; exit 1; }
echo "test.sh: deployed binary $bin: check and client -d localhost work"
