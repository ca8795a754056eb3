#!/usr/bin/env bash
# Bytes a cold query fetches from the origin: the worker's remote reads against DuckDB's
# httpfs over the same files (issue 11, item 4). Prints a markdown table (bytes and requests
# per query and side, the worker/DuckDB ratio), checks that both answer the same, and
# appends the figures as JSON lines to RESULTS.
#
#   1. builds chunk-worker (release) unless BIN is given;
#   2. installs DuckDB and its httpfs extension (PyPI: duckdb, duckdb-extension-httpfs, the
#      same version) in a virtual environment under the target directory, unless there;
#   3. generates CHUNKS chunks with `chunk-worker synth` in a temporary directory;
#   4. runs bench/remote_bytes.py: an origin on 127.0.0.1 serves and counts; each query runs
#      cold on a fresh worker (remote reads) and on a fresh DuckDB connection.
#
# Environment: CHUNKS=8 BLOCKS=1000 TXS=100 BIN= DATA= BENCH_TMP=/tmp
#   DUCKDB_HTTPFS_VERSION=1.5.2 (the newest DuckDB with its httpfs extension on PyPI)
#   RESULTS=$CARGO_TARGET_DIR/remote-bytes-results.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CHUNKS=${CHUNKS:-8}
BLOCKS=${BLOCKS:-1000}
TXS=${TXS:-100}
BENCH_TMP=${BENCH_TMP:-/tmp}
VERSION=${DUCKDB_HTTPFS_VERSION:-1.5.2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS=${RESULTS:-$CARGO_TARGET_DIR/remote-bytes-results.jsonl}
DATASET=5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e

VENV=$CARGO_TARGET_DIR/duckdb-httpfs-$VERSION
if [ ! -x "$VENV/bin/python" ]; then
  echo "== installing duckdb==$VERSION and duckdb-extension-httpfs==$VERSION in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "duckdb==$VERSION" "duckdb-extension-httpfs==$VERSION"
fi
EXTENSION=$(find "$VENV" -name httpfs.duckdb_extension | head -1)
if [ -z "$EXTENSION" ]; then
  echo "no httpfs extension in $VENV" >&2
  exit 1
fi

if [ -z "${BIN:-}" ]; then
  cargo build --release -p chunk-worker
  BIN=$CARGO_TARGET_DIR/release/chunk-worker
fi

WORK=$(mktemp -d "$BENCH_TMP/remote-bytes.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SYNTH=${DATA:-$WORK/synth}
if [ ! -f "$SYNTH/catalog.json" ]; then
  "$BIN" synth --out "$SYNTH" --chunks "$CHUNKS" --blocks-per-chunk "$BLOCKS" \
    --transactions-per-block "$TXS" --dataset "$DATASET" | head -1
fi
SIZE=$(du -sh "$SYNTH" | cut -f1)
# Half a chunk in from each end, as bench/duckdb.sh.
START=$((BLOCKS / 2)) END=$((CHUNKS * BLOCKS - BLOCKS / 2))
COMMAND="CHUNKS=$CHUNKS BLOCKS=$BLOCKS TXS=$TXS bench/remote_bytes.sh"
"$VENV/bin/python" "$ROOT/bench/remote_bytes.py" --bin "$BIN" --data "$SYNTH" \
  --extension "$EXTENSION" --dataset "$DATASET" --start "$START" --end "$END" \
  --results "$RESULTS" --command "$COMMAND" \
  --describe "synth: $CHUNKS chunks x $BLOCKS blocks, $TXS tx/block, $SIZE on disk"
