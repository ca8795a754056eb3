#!/usr/bin/env python3
"""Bytes a cold query fetches from the origin: the worker's remote reads against DuckDB's
httpfs over the same files (issue 11, item 4).

Run by bench/remote_bytes.sh, which generates the data and installs DuckDB with its httpfs
extension in a virtual environment. Standard library plus `duckdb`.

An HTTP origin in this process serves the synth directory (GET with Range, HEAD, strong ETags)
and counts the requests and body bytes it sends. For every query of the set:
- worker: a fresh `chunk-worker serve` (empty data directory, so nothing is held or cached)
  with the catalog's URLs pointing at the origin answers POST /query; its remote reads fetch
  only the footers, page indexes and column chunks the query needs;
- DuckDB: a fresh connection, one view per table over `read_parquet([the covering chunks'
  URLs])` restricted to the range, as a user of DuckDB would write it.
Both answers are checked equal; the table gives each side's bytes and requests and the ratio.
"""

import argparse
import datetime
import decimal
import email.utils
import http.client
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading

import duckdb

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from duckdb_compare import QUERIES, TABLES, compare  # noqa: E402


class Counting(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root):
        super().__init__(("127.0.0.1", 0), Origin)
        self.root = os.path.realpath(root)
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.requests = 0
            self.bytes = 0

    def count(self, sent):
        with self.lock:
            self.requests += 1
            self.bytes += sent

    def figures(self):
        with self.lock:
            return self.requests, self.bytes


RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _file(self):
        path = os.path.realpath(os.path.join(self.server.root, self.path.lstrip("/")))
        if not path.startswith(self.server.root + os.sep) or not os.path.isfile(path):
            return None
        return path

    def _headers(self, path, size):
        stat = os.stat(path)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{stat.st_size}-{int(stat.st_mtime_ns)}"')
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))

    def do_HEAD(self):
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        self.send_response(200)
        self._headers(path, os.path.getsize(path))
        self.end_headers()
        self.server.count(0)

    def do_GET(self):
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        size = os.path.getsize(path)
        first, last = 0, size - 1
        wanted = self.headers.get("Range")
        if wanted:
            match = RANGE.match(wanted.strip())
            if not match or (not match.group(1) and not match.group(2)):
                self.send_error(416)
                return
            if match.group(1):
                first = int(match.group(1))
                if match.group(2):
                    last = min(int(match.group(2)), size - 1)
            else:
                first = max(0, size - int(match.group(2)))
            if first > last:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        else:
            self.send_response(200)
        length = last - first + 1
        self._headers(path, length)
        self.end_headers()
        with open(path, "rb") as file:
            file.seek(first)
            self.wfile.write(file.read(length))
        self.server.count(length)


def rewrite(catalog, data, base):
    """The catalog with every file:// URL under `data` pointing at the origin instead."""
    prefix = "file://" + os.path.realpath(data)

    def walk(value):
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, str) and value.startswith(prefix):
            return base + value[len(prefix):]
        return value

    return walk(catalog)


def covering_urls(catalog, start, end):
    """Per table, the URLs of the chunks whose blocks meet [start, end)."""
    urls = {table: [] for table in TABLES}
    chunks = catalog["chunks"] if isinstance(catalog, dict) else catalog
    for chunk in sorted(chunks, key=lambda chunk: chunk["block_range"]["start"]):
        blocks = chunk["block_range"]
        if blocks["start"] < end and start < blocks["end"]:
            for name, url in chunk["files"].items():
                table = name.removesuffix(".parquet")
                if table in urls:
                    urls[table].append(url)
    return urls


def start_worker(binary, catalog_path, work):
    data_dir = tempfile.mkdtemp(dir=work, prefix="worker-")
    process = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
         "--catalog", catalog_path],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if line.startswith("listening on http://"):
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, line.removeprefix("listening on http://").strip()
    process.kill()
    raise SystemExit("the worker did not start")


def worker_rows(address, dataset, start, end, sql):
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=600)
    body = json.dumps({"dataset": dataset, "blocks": {"start": start, "end": end},
                       "sql": sql, "format": "ndjson"})
    connection.request("POST", "/query", body=body, headers={"content-type": "application/json"})
    response = connection.getresponse()
    text = response.read().decode()
    if response.status != 200:
        raise RuntimeError(f"worker: HTTP {response.status}: {text[:500]}")
    rows = []
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line, parse_float=decimal.Decimal)
            if set(row) == {"error"}:
                raise RuntimeError(f"worker: {row['error']}")
            rows.append(list(row.values()))
    return rows, response.getheader("x-chunks-remote")


def duck_rows(extension, urls, start, end, threads, sql):
    connection = duckdb.connect(":memory:")
    connection.execute(f"LOAD '{extension}'")
    connection.execute(f"SET threads = {threads}")
    for table, files in urls.items():
        listed = ", ".join("'" + url.replace("'", "''") + "'" for url in files)
        connection.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listed}]) "
            f"WHERE block_number >= {start} AND block_number < {end}")
    rows = [list(row) for row in connection.execute(sql).fetchall()]
    connection.close()
    return rows


def mib(count):
    return f"{count / (1 << 20):.2f} MiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="the chunk-worker binary")
    parser.add_argument("--data", required=True, help="the synth directory (with catalog.json)")
    parser.add_argument("--extension", required=True, help="DuckDB's httpfs extension file")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--end", type=int, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--results", help="append the figures to this JSON lines file")
    parser.add_argument("--command", default="")
    parser.add_argument("--describe", default="")
    args = parser.parse_args()

    origin = Counting(args.data)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{origin.server_address[1]}"
    with open(os.path.join(args.data, "catalog.json")) as file:
        catalog = rewrite(json.load(file), args.data, base)
    work = tempfile.mkdtemp(prefix="remote-bytes-")
    catalog_path = os.path.join(work, "catalog.json")
    with open(catalog_path, "w") as file:
        json.dump(catalog, file)
    urls = covering_urls(catalog, args.start, args.end)

    print(f"{args.describe}; blocks {args.start}..{args.end}; DuckDB {duckdb.__version__} "
          f"with httpfs, threads={args.threads}; every query cold on both sides")
    print()
    print("| query | worker bytes | requests | DuckDB bytes | requests | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    figures = []
    failed = False
    for name, sql in QUERIES:
        process, address = start_worker(args.bin, catalog_path, work)
        try:
            origin.reset()
            worker, remote = worker_rows(address, args.dataset, args.start, args.end, sql)
            worker_requests, worker_bytes = origin.figures()
        finally:
            process.kill()
            process.wait()
        origin.reset()
        duck = duck_rows(args.extension, urls, args.start, args.end, args.threads, sql)
        duck_requests, duck_bytes = origin.figures()
        problem = compare(worker, duck)
        if problem:
            failed = True
            print(f"MISMATCH {name}: {problem}", file=sys.stderr)
        if remote is not None and remote == "0":
            print(f"note: {name}: the worker read no chunk remotely", file=sys.stderr)
        ratio = worker_bytes / duck_bytes if duck_bytes else float("inf")
        print(f"| {name} | {mib(worker_bytes)} | {worker_requests} | {mib(duck_bytes)} | "
              f"{duck_requests} | {ratio:.2f}x |")
        figures.append({"query": name, "worker_bytes": worker_bytes,
                        "worker_requests": worker_requests, "duckdb_bytes": duck_bytes,
                        "duckdb_requests": duck_requests, "ratio": ratio})
    print()
    print(f"reproduce: {args.command}")
    if args.results:
        with open(args.results, "a") as file:
            file.write(json.dumps({
                "when": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "describe": args.describe, "duckdb": duckdb.__version__,
                "queries": figures}) + "\n")
    origin.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
