#!/usr/bin/env bash
# Runs every benchmark of chunk-manager and prints the figures BENCHMARKS.md records:
#   1. lookups (criterion): find_chunk / list_chunks with 5,000 ready chunks, allocation check
#   2. throughput: 20 chunks x 3 files (8-64 MB) from nginx on 127.0.0.1, chunk-manager
#      (fsync on) vs aria2c vs curl --parallel, same files, same disk
#   3. API latency from another thread while (2) downloads
#   4. startup: open on 5,000 chunks of 3 files
#   5. reconcile: 2,000 random download/delete calls over 500 chunks; cancellation latency
#   6. memory: peak RSS during (2), idle RSS with 5,000 chunks
# Installs nginx, aria2 and curl from Debian's packages when missing (needs root or sudo).
# Everything it writes goes under one temporary directory on local disk, removed at the end.
#
# Environment:
#   ROUNDS=3        throughput rounds (each runs every tool once, order rotating)
#   COLD=0          1: also time one startup with the kernel's caches dropped (root; the
#                   whole machine's caches are dropped once)
#   SKIP_LOOKUP=0   1: skip the criterion lookup benchmark
#   BENCH_TMP=/tmp  where the temporary directory goes (must be on the disk under test)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROUNDS=${ROUNDS:-3}
COLD=${COLD:-0}
SKIP_LOOKUP=${SKIP_LOOKUP:-0}
BENCH_TMP=${BENCH_TMP:-/tmp}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

section() { printf '\n== %s\n' "$*"; }

install_tools() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v aria2c >/dev/null 2>&1 || missing+=(aria2)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  ((${#missing[@]})) || return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing ${missing[*]} from Debian's packages"
  # Keep the package's own nginx service from starting: the benchmark starts its own.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    created_policy=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ "$created_policy" = 1 ]; then $sudo rm -f "$policy"; fi
}

describe_machine() {
  echo "cpu:    $(nproc) x $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
  echo "disk:   $(df -h "$BENCH_TMP" | awk 'NR==2 {print $1 " (" $2 ", " $6 ")"}'), $(findmnt -n -o FSTYPE --target "$BENCH_TMP" 2>/dev/null || echo '?')"
  echo "kernel: $(uname -r)"
  echo "tools:  $(nginx -v 2>&1 | sed 's/.*: //'), $(aria2c --version | head -1), $(curl --version | head -1 | cut -d' ' -f1-2)"
  echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
}

install_tools
section "machine"
describe_machine

section "build"
cargo build --release --locked -p chunk-bench
BIN=$CARGO_TARGET_DIR/release/chunk-bench

WORK=$(mktemp -d "$BENCH_TMP/chunk-bench.XXXXXX")
chmod 755 "$WORK" # nginx's workers read the files as an unprivileged user
NGINX_PID=""
cleanup() {
  if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
RESULTS=$CARGO_TARGET_DIR/chunk-bench-results.jsonl
: >"$RESULTS"
echo "temporary directory: $WORK; figures as JSON lines: $RESULTS"

if [ "$SKIP_LOOKUP" != 1 ]; then
  section "1. lookups (criterion)"
  cargo bench --locked -p chunk-manager --bench lookup 2>&1 |
    grep -v -E '^(Benchmarking|Warning: Unable|Found [0-9]+ outliers|  [0-9]+ \([0-9.]+%\) (high|low))'
fi

section "files"
"$BIN" files --dir "$WORK/www" --json "$RESULTS"

PORT=$("$BIN" free-port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$PORT;
    root $WORK/www;
  }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
for _ in $(seq 50); do
  curl -sf -o /dev/null -I "http://127.0.0.1:$PORT/c00/blocks.parquet" && break
  sleep 0.1
done
curl -sf -o /dev/null -I "http://127.0.0.1:$PORT/c00/blocks.parquet" ||
  { echo "nginx did not start:"; cat "$WORK/nginx/error.log"; exit 1; }
echo "nginx serving $WORK/www on 127.0.0.1:$PORT"

section "2, 3, 6. throughput, API latency under load, memory during downloads"
"$BIN" compare --url "http://127.0.0.1:$PORT" --work-dir "$WORK/run" --rounds "$ROUNDS" --json "$RESULTS"
kill "$NGINX_PID" 2>/dev/null || true
wait "$NGINX_PID" 2>/dev/null || true
NGINX_PID=""
rm -rf "$WORK/www"

section "4, 6. startup and idle memory with 5,000 chunks"
"$BIN" populate --dir "$WORK/startup" --json "$RESULTS"
sync # the populated chunks' write-back must not run during the timed opens
cold=()
[ "$COLD" = 1 ] && cold=(--cold)
"$BIN" startup --dir "$WORK/startup" "${cold[@]}" --json "$RESULTS"
rm -rf "$WORK/startup"

section "5. reconcile"
# All 2,000 calls at once, then paced over a few seconds against a throttled origin (so deletes
# find downloads running), then cancellations one by one while the disk is kept busy.
"$BIN" reconcile --dir "$WORK" --max-gap-us 0 --json "$RESULTS"
"$BIN" reconcile --dir "$WORK" --max-gap-us 2000 --origin-delay-ms 2 --json "$RESULTS"
"$BIN" cancel --dir "$WORK" --json "$RESULTS"

section "done"
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "reproduce: ROUNDS=$ROUNDS COLD=$COLD SKIP_LOOKUP=$SKIP_LOOKUP bench/run.sh   (from $ROOT)"
