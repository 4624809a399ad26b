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
# unbound serves the DNS-list zone of the envelope tests.
[[ -x /usr/sbin/unbound ]] || need_pkgs+=(unbound)
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
