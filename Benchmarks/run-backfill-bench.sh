#!/usr/bin/env bash
# Backfill SQLite → PostgreSQL against PostgreSQL's own COPY of the same rows and a row-by-row copy, and peak
# memory of backfill and verify at 100 000 and 1 000 000 rows. Needs POSTGRES_* (run under ../.ci/with-postgres).
set -euo pipefail
cd "$(dirname "$0")"
swift build -c release --product BackfillBench >/dev/null
BIN=.build/release/BackfillBench
DIR=$(mktemp -d /tmp/zddm-bench.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
psql_run() { PGPASSWORD=$POSTGRES_PASSWORD psql -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d "$POSTGRES_DB" -qAt "$@"; }
for rows in 100000 1000000; do
    $BIN prepare "$rows" "$DIR/old.sqlite"
    $BIN backfill "$DIR/old.sqlite"
    $BIN verify "$DIR/old.sqlite" bench_backfill
    $BIN csv "$DIR/old.sqlite" "$DIR/rows.csv"
    psql_run -c 'DROP TABLE IF EXISTS bench_copy' -c 'CREATE TABLE bench_copy (LIKE bench_backfill INCLUDING ALL)'
    start=$(date +%s.%N)
    psql_run -c "\\copy bench_copy FROM '$DIR/rows.csv' WITH (FORMAT csv)"
    end=$(date +%s.%N)
    echo "{\"mode\":\"copy\",\"rows\":$rows,\"seconds\":$(echo "$end - $start" | bc -l)}"
done
$BIN rowbyrow "$DIR/old.sqlite" 50000
