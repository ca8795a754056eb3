#!/usr/bin/env bash
# The S3 variant of the throughput benchmark: the same kind of file set (3 files of 8-64 MB per
# chunk) in a bucket of moto's S3 server on 127.0.0.1, fetched by chunk-manager through s3://
# URLs (object_store, signed requests, ETag/MD5 checked) and through plain http:// GETs of the
# same objects, with aria2c and curl --parallel on the same server for reference.
#
# moto is a Python server, so the server's speed bounds every tool here; the point is the
# S3 path's cost next to the HTTP path on one server. Installs moto (PyPI) and curl/aria2
# (Debian) when missing. Everything goes under one temporary directory, removed at the end.
#
# Environment:
#   CHUNKS=6        chunks in the set (moto holds the objects in memory)
#   BENCH_TMP=/tmp  where the temporary directory goes (the disk under test)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CHUNKS=${CHUNKS:-6}
BENCH_TMP=${BENCH_TMP:-/tmp}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

section() { printf '\n== %s\n' "$*"; }

command -v moto_server >/dev/null 2>&1 || python3 -m pip install --quiet 'moto[server]'
if ! command -v aria2c >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends aria2 curl
fi

section "build"
cargo build --release --locked -p chunk-bench
BIN=$CARGO_TARGET_DIR/release/chunk-bench

WORK=$(mktemp -d "$BENCH_TMP/chunk-bench-s3.XXXXXX")
MOTO_PID=""
cleanup() {
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
RESULTS=$CARGO_TARGET_DIR/chunk-bench-s3-results.jsonl
: >"$RESULTS"

section "machine"
echo "cpu:    $(nproc) x $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
echo "disk:   $(df -h "$BENCH_TMP" | awk 'NR==2 {print $1 " (" $2 ", " $6 ")"}')"
echo "server: moto $(python3 -c 'import moto; print(moto.__version__)')"
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"

section "files"
"$BIN" files --dir "$WORK/www" --chunks "$CHUNKS" --json "$RESULTS"

PORT=$("$BIN" free-port)
moto_server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && break
  sleep 0.1
done
curl -sf -X PUT -o /dev/null "http://127.0.0.1:$PORT/bench"
# Public-read objects, so that the http:// runs (unsigned GETs) may read what s3:// reads signed.
(cd "$WORK/www" && find . -type f | sed 's|^\./||') | while read -r path; do
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' -H 'x-amz-acl: public-read' --data-binary "@$WORK/www/$path" \
    -o /dev/null "http://127.0.0.1:$PORT/bench/$path"
done
echo "moto serving bucket 'bench' on 127.0.0.1:$PORT ($(du -sh "$WORK/www" | cut -f1))"
rm -rf "$WORK/www"

section "http:// from moto: chunk-manager vs aria2c vs curl (1 round)"
"$BIN" compare --chunks "$CHUNKS" --url "http://127.0.0.1:$PORT/bench" --work-dir "$WORK/run" \
  --rounds 1 --json "$RESULTS"

section "s3:// from moto: chunk-manager (fsync on)"
AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=bench-secret \
  "$BIN" download --chunks "$CHUNKS" --url "s3://bench" --data-dir "$WORK/s3" --fsync on |
  tee -a "$RESULTS" | python3 -c '
import json, sys
run = json.loads(sys.stdin.read().strip().splitlines()[-1])
mb, seconds, peak = run["bytes"] / 1e6, run["seconds"], run["rss_kib"]["peak"] / 1024
print("chunk-manager s3:// (fsync on): %.0f MB in %.2f s = %.0f MB/s, peak RSS %.1f MiB" % (mb, seconds, mb / seconds, peak))'

section "done"
echo "reproduce: bench/s3.sh   (CHUNKS=$CHUNKS; figures as JSON lines in $RESULTS)"
