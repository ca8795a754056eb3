#!/usr/bin/env bash
# Distributed queries on fleets of 1, 2 and 4 workers on this machine, with the single-node
# engine as the baseline (issue 13, "Done when"). Prints a markdown table: per query and
# setup, the median and fastest of RUNS timed runs, the bytes moved between workers per query,
# the chunks read locally and downloaded; then the command to reproduce it.
#
#   1. builds chunk-worker (release) unless BIN is given;
#   2. runs `chunk-worker cluster bench`, which for each setup starts, on 127.0.0.1, an
#      in-process origin with CHUNKS generated chunks, a file:// cluster store in a temporary
#      directory, a scheduler and the workers as its children (the single node: one
#      `serve --catalog --whole-chunks` outside any fleet), waits until every chunk is on its
#      holders (R = 2, 1 with one worker), runs each query once to warm up and RUNS times
#      timed through the first worker's POST /query, checks every setup answers as the
#      single node did, and stops everything (children killed, directory removed).
#
# Bytes moved between workers: the sum over the workers of the bytes their Flight services
# wrote to and read from their connections (chunk_distributed_flight_bytes_sent_total +
# _received_total in GET /metrics: Arrow results and plans with their gRPC/HTTP/2 framing,
# the coordinator's calls to its own service included), before and after a query's runs,
# divided by RUNS.
#
# Environment:
#   WORKERS=1,2,4   fleet sizes
#   RUNS=5          timed runs per query and setup (medians)
#   CHUNKS=16       chunks of BLOCKS blocks
#   BLOCKS=1000     blocks per chunk
#   TXS=50          mean transactions per block
#   THREADS=        serve --query-threads of every worker (default: the worker's, the CPUs)
#   BIN=            a chunk-worker binary to use instead of building one
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WORKERS=${WORKERS:-1,2,4}
RUNS=${RUNS:-5}
CHUNKS=${CHUNKS:-16}
BLOCKS=${BLOCKS:-1000}
TXS=${TXS:-50}
THREADS=${THREADS:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

if [ -z "${BIN:-}" ]; then
  cargo build --release -p chunk-worker
  BIN=$CARGO_TARGET_DIR/release/chunk-worker
fi

ARGS=(cluster bench --workers "$WORKERS" --runs "$RUNS" --chunks "$CHUNKS"
  --blocks-per-chunk "$BLOCKS" --transactions-per-block "$TXS")
if [ -n "$THREADS" ]; then ARGS+=(--query-threads "$THREADS"); fi
echo "== $("$BIN" --version 2>/dev/null || echo chunk-worker): ${ARGS[*]}"
"$BIN" "${ARGS[@]}"
echo
echo "reproduce: WORKERS=$WORKERS RUNS=$RUNS CHUNKS=$CHUNKS BLOCKS=$BLOCKS TXS=$TXS${THREADS:+ THREADS=$THREADS} bench/fleet.sh"
