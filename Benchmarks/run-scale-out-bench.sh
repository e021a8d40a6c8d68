#!/usr/bin/env bash
# What users run, side by side in one run: `zddm backfill` and `zddm verify` (1, 2 and 4 workers) from SQLite into
# PostgreSQL, against psql's `\copy` of the same rows into the same indexed table; wall time and peak memory.
# Needs POSTGRES_* (run under ../.ci/with-postgres). Usage: run-scale-out-bench.sh [ROWS [ROUNDS [WORKERS...]]];
# ZDDM_BIN=path uses that binary instead of building one; BATCH=n passes --batch n to backfill.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
ROUNDS=${2:-2}
shift $(( $# > 2 ? 2 : $# )) || true
WORKERS=("${@:-1 2 4}")
read -r -a WORKERS <<< "${WORKERS[*]}"
if [ -z "${ZDDM_BIN:-}" ]; then swift build -c release --product zddm >/dev/null; fi
ZDDM=${ZDDM_BIN:-$PWD/.build/release/zddm}
DIR=$(mktemp -d /tmp/zddm-scale.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
URL="postgres://$POSTGRES_USER:$POSTGRES_PASSWORD@$POSTGRES_HOST:$POSTGRES_PORT/$POSTGRES_DB?sslmode=disable"
psql_run() { PGPASSWORD=$POSTGRES_PASSWORD psql -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d "$POSTGRES_DB" -qAt "$@"; }

# Old: ROWS rows of 100-byte values, with change capture (versions); the same rows as a COPY text file.
python3 - "$DIR/old.sqlite" "$DIR/rows.txt" "$ROWS" <<'PY'
import sqlite3, sys, random
path, text, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = sqlite3.connect(path)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE kv (key INTEGER NOT NULL PRIMARY KEY, value BLOB, "
           "tombstone INTEGER NOT NULL DEFAULT 0 CHECK (tombstone IN (0, 1)))")
rng = random.Random(7)
with open(text, "w") as out:
    batch = []
    for key in range(1, rows + 1):
        value = rng.randbytes(100)
        batch.append((key, value))
        out.write(f"{key}\t\\\\x{value.hex()}\tf\t0\n")
        if len(batch) == 50000:
            db.executemany("INSERT INTO kv (key, value) VALUES (?, ?)", batch)
            batch = []
    db.executemany("INSERT INTO kv (key, value) VALUES (?, ?)", batch)
db.commit()
PY
$ZDDM capture install --old "sqlite:$DIR/old.sqlite" --table kv >/dev/null

timed() { # label, then the command: prints "label seconds peak_kb"
    local label=$1
    shift
    /usr/bin/time -f "%e %M" -o "$DIR/time" "$@" >"$DIR/out" 2>&1 || { cat "$DIR/out"; exit 1; }
    read -r seconds peak < "$DIR/time"
    echo "$label $seconds $peak"
}

echo "# rows=$ROWS rounds=$ROUNDS workers=${WORKERS[*]} batch=${BATCH:-default}; label seconds peak_rss_kb"
# The table zddm creates (from a one-row copy of Old), which COPY fills too.
sqlite3 "$DIR/shape.sqlite" "CREATE TABLE kv (key INTEGER NOT NULL PRIMARY KEY, value BLOB, tombstone INTEGER NOT NULL DEFAULT 0 CHECK (tombstone IN (0, 1))); INSERT INTO kv (key, value) VALUES (1, x'00');"
$ZDDM capture install --old "sqlite:$DIR/shape.sqlite" --table kv >/dev/null
psql_run -c "DROP TABLE IF EXISTS bench_shape"
$ZDDM backfill --from "sqlite:$DIR/shape.sqlite" --to "$URL" --table kv --to-table bench_shape --checkpoint "$DIR" >/dev/null
for round in $(seq 1 "$ROUNDS"); do
    psql_run -c "DROP TABLE IF EXISTS bench_copy" -c "CREATE TABLE bench_copy (LIKE bench_shape INCLUDING ALL)"
    timed copy /usr/bin/env PGPASSWORD="$POSTGRES_PASSWORD" psql -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" \
        -U "$POSTGRES_USER" -d "$POSTGRES_DB" -qAt \
        -c "\\copy bench_copy (key, value, tombstone, zddm_version) FROM '$DIR/rows.txt'"
    for workers in "${WORKERS[@]}"; do
        psql_run -c "DROP TABLE IF EXISTS bench_w$workers"
        timed "backfill-$workers" "$ZDDM" backfill --from "sqlite:$DIR/old.sqlite" --to "$URL" --table kv \
            --to-table "bench_w$workers" --run "r$$-$round-w$workers" --workers "$workers" ${BATCH:+--batch "$BATCH"}
    done
    timed verify "$ZDDM" verify --from "sqlite:$DIR/old.sqlite" --to "$URL" --table kv --to-table "bench_w${WORKERS[0]}"
    grep -q " 0 mismatches" "$DIR/out" || { cat "$DIR/out"; exit 1; }
    # The same verify as a run of N workers sharing chunks (coordinated in New's database).
    for workers in "${WORKERS[@]}"; do
        timed "verify-run-$workers" "$ZDDM" verify --from "sqlite:$DIR/old.sqlite" --to "$URL" --table kv \
            --to-table "bench_w${WORKERS[0]}" --run "v$$-$round-w$workers" --workers "$workers"
        grep -q "keys compared (100.0%), 0 mismatches" "$DIR/out" || { cat "$DIR/out"; exit 1; }
    done
done
