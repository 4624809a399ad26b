#!/usr/bin/env bash
# Cold start, one corpus left out: for each shared corpus X, a starter model
# built by models/build-starter from the other two corpora (MIN_COUNT as
# there), loaded into a new database, scores every message of X with no
# training (bench/cold-start.sh's figures). This is how a starter built
# from several sources does on mail of another source and era.
# Usage: bench/starter-loo.sh   (MIN_COUNT=4 by default)
# Needs: target/corpora (../shared/tools/unpack-corpora target/corpora).
set -euo pipefail
cd "$(dirname "$0")/.."
H=$(scripts/build -q)
corpora=$PWD/target/corpora
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
all=(spamassassin csdmc2010 enron-raw)
echo "# $(date -u +%F) starters built without one corpus, MIN_COUNT=${MIN_COUNT:-4}"
for x in "${all[@]}"; do
  from=() idx=()
  for c in "${all[@]}"; do [ "$c" = "$x" ] || { from+=("$c"); idx+=("$corpora/$c/index"); }; done
  OUT=$work/starter.dump models/build-starter "${idx[@]}" 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
  db=$work/$x.redb
  "$H" --db "$db" db init --empty >/dev/null
  "$H" --db "$db" db load "$work/starter.dump" >/dev/null
  echo "## without $x (built from ${from[*]}; $(tail -1 "$work/build.log" | sed 's/^[^:]*: //'))"
  CORPORA=$x STARTER_FROM="${from[*]}" bench/cold-start.sh "$db" | tail -n +2
done
