#!/usr/bin/env bash
# Warm queries of the worker's POST /query against DuckDB over the same Parquet files
# (issue 11, item 8). Prints markdown tables (medians of wall time and of CPU time, the
# daemon's against DuckDB's process's, worker/DuckDB ratios), the concurrency figure (CLIENTS
# clients, queries per second, CPU per query) and the load average, checks that
# both answer the same, and appends the figures as JSON lines to RESULTS.
#
#   1. builds chunk-worker (release) unless BIN is given;
#   2. generates CHUNKS chunks with `chunk-worker synth` (file:// URLs) in a temporary
#      directory;
#   3. starts `chunk-worker serve` on a free port of 127.0.0.1 with that catalog;
#   4. runs bench/duckdb_compare.py (installs the duckdb wheel with pip if it is missing):
#      the worker fetches the chunks in the warm-up, then every query is timed REPS times on
#      the worker, on DuckDB with threads = the CPUs and with threads = 1.
# Everything it writes, but RESULTS, goes under one temporary directory, removed at the end.
#
# Environment:
#   CHUNKS=20           chunks of BLOCKS blocks
#   BLOCKS=1000         blocks per chunk
#   TXS=100             mean transactions per block (20 chunks: about 2M transactions)
#   REPS=5              timed runs per query and side (medians)
#   CLIENTS=8           concurrent clients
#   SECONDS_QPS=20      seconds per side of the concurrency run
#   FORMAT=ndjson       the worker's output format (ndjson or arrow)
#   BIN=                a chunk-worker binary to use instead of building one
#   DATA=               keep the generated chunks in this directory (generated there when it
#                       has no catalog.json, reused as they are when it has one)
#   DUCKDB_VERSION=2.0.1
#   BENCH_TMP=/tmp      where the temporary directory goes
#   RESULTS=$CARGO_TARGET_DIR/duckdb-results.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CHUNKS=${CHUNKS:-20}
BLOCKS=${BLOCKS:-1000}
TXS=${TXS:-100}
REPS=${REPS:-5}
CLIENTS=${CLIENTS:-8}
SECONDS_QPS=${SECONDS_QPS:-20}
FORMAT=${FORMAT:-ndjson}
DUCKDB_VERSION=${DUCKDB_VERSION:-2.0.1}
BENCH_TMP=${BENCH_TMP:-/tmp}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS=${RESULTS:-$CARGO_TARGET_DIR/duckdb-results.jsonl}
DATASET=5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e

if ! python3 -c "import duckdb" 2>/dev/null; then
  echo "installing duckdb==$DUCKDB_VERSION (pip, user site)"
  python3 -m pip install --quiet --user "duckdb==$DUCKDB_VERSION" ||
    python3 -m pip install --quiet --user --break-system-packages "duckdb==$DUCKDB_VERSION"
fi

if [ -z "${BIN:-}" ]; then
  cargo build --release -p chunk-worker
  BIN=$CARGO_TARGET_DIR/release/chunk-worker
fi

WORK=$(mktemp -d "$BENCH_TMP/duckdb-bench.XXXXXX")
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

SYNTH=${DATA:-$WORK/synth}
if [ -f "$SYNTH/catalog.json" ]; then
  echo "== data: reusing $SYNTH (CHUNKS, BLOCKS and TXS must be those it was made with)"
else
  echo "== data: $CHUNKS chunks x $BLOCKS blocks, $TXS transactions per block, in $SYNTH"
  "$BIN" synth --out "$SYNTH" --chunks "$CHUNKS" --blocks-per-chunk "$BLOCKS" \
    --transactions-per-block "$TXS" --dataset "$DATASET" | head -1
fi
SIZE=$(du -sh "$SYNTH" | cut -f1)

# Half a chunk in from each end, so the block filter has work to do on both sides (a
# quarter with one chunk).
if [ "$CHUNKS" -gt 1 ]; then
  START=$((BLOCKS / 2)) END=$((CHUNKS * BLOCKS - BLOCKS / 2))
else
  START=$((BLOCKS / 4)) END=$((BLOCKS - BLOCKS / 4))
fi

mkfifo "$WORK/out"
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --catalog "$SYNTH/catalog.json" \
  --allow-file-urls true >"$WORK/out" 2>"$WORK/serve.log" &
SERVER_PID=$!
ADDRESS=""
exec 3<"$WORK/out"
while read -r -t 60 line <&3; do
  case $line in "listening on http://"*) ADDRESS=${line#listening on }; break ;; esac
done
# Keep draining the daemon's stdout so it never blocks on a full pipe.
cat <&3 >/dev/null &
exec 3<&-
if [ -z "$ADDRESS" ]; then
  echo "the daemon did not start:" >&2
  cat "$WORK/serve.log" >&2
  exit 1
fi
echo "== daemon at $ADDRESS ($("$BIN" --version 2>/dev/null || echo chunk-worker), default query threads and limits)"

COMMAND="CHUNKS=$CHUNKS BLOCKS=$BLOCKS TXS=$TXS REPS=$REPS CLIENTS=$CLIENTS SECONDS_QPS=$SECONDS_QPS FORMAT=$FORMAT bench/duckdb.sh"
python3 "$ROOT/bench/duckdb_compare.py" --url "$ADDRESS" --dataset "$DATASET" \
  --data "$SYNTH" --start "$START" --end "$END" --reps "$REPS" --clients "$CLIENTS" \
  --seconds "$SECONDS_QPS" --format "$FORMAT" --results "$RESULTS" --command "$COMMAND" \
  --server-pid "$SERVER_PID" \
  --describe "synth: $CHUNKS chunks x $BLOCKS blocks, $TXS tx/block, $SIZE on disk"
