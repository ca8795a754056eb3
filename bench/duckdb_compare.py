#!/usr/bin/env python3
"""Times the worker's POST /query against DuckDB over the same Parquet files (issue 11, item 8).

Run by bench/duckdb.sh, which generates the data, starts the daemon and passes its address.
Standard library plus the `duckdb` wheel.

For every query of QUERIES: one warm-up run each side (the worker fetches its chunks, the
page cache fills), then REPS rounds, each running the query on the worker (HTTP, the whole
body read), on DuckDB with threads=N (N = the CPUs) and on DuckDB with threads=1, the one
that goes first turning from round to round; the medians are compared. The worker's answer
is checked against DuckDB's: numbers equal (sums of decimals exactly, as Python Decimals),
strings equal, rows in the same order.
Then CLIENTS concurrent clients run the query set in a loop for SECONDS, on the worker and
on DuckDB (one cursor per client thread), and the queries per second are compared.

With --server-pid, CPU time is compared too: the daemon's (Linux's CPU-time clock of that
process: all its threads, those that ended included) around each worker run, and this
process's around each DuckDB run (DuckDB runs in it); per query in the timed runs, and per
query over the concurrency run. CPU time is steadier than wall time on a shared machine, and
it is what bounds the queries per second.
"""

import argparse
import concurrent.futures
import datetime
import decimal
import http.client
import json
import os
import re
import statistics
import sys
import threading
import time

import duckdb

# The query set: the same SQL runs on both sides. Every ORDER BY has a tie-breaker, so the
# rows can be compared in order.
QUERIES = [
    (
        "sums of value and gas*gas_price",
        "SELECT count(*) AS n, sum(value) AS value_wei, sum(gas * gas_price) AS fees_wei "
        "FROM transactions",
    ),
    (
        "top receivers by value",
        'SELECT "to", count(*) AS n, sum(value) AS value_wei FROM transactions '
        'WHERE "to" IS NOT NULL GROUP BY "to" ORDER BY value_wei DESC, "to" LIMIT 10',
    ),
    (
        "logs: count by topic0",
        "SELECT topic0, count(*) AS n FROM logs GROUP BY topic0 ORDER BY n DESC, topic0 LIMIT 20",
    ),
    (
        "join transactions-logs",
        "SELECT count(*) AS n, sum(t.gas) AS gas, count(DISTINCT l.address) AS contracts "
        "FROM transactions t JOIN logs l "
        "ON t.block_number = l.block_number AND t.transaction_index = l.transaction_index "
        "WHERE t.status = 1",
    ),
    (
        "blocks-only aggregate",
        "SELECT count(*) AS blocks, sum(transaction_count) AS txs, sum(gas_used) AS gas, "
        "max(size) AS max_size, sum(base_fee_per_gas) AS base_fee_wei FROM blocks",
    ),
    (
        "ORDER BY value LIMIT 10",
        "SELECT block_number, transaction_index, hash, value FROM transactions "
        "ORDER BY value DESC, block_number, transaction_index LIMIT 10",
    ),
]

TABLES = ("blocks", "transactions", "logs")

NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the daemon, http://HOST:PORT")
    parser.add_argument("--dataset", required=True, help="the dataset id (64 hex digits)")
    parser.add_argument("--data", required=True, help="the synth directory (chunk dirs)")
    parser.add_argument("--start", type=int, required=True, help="first block of the range")
    parser.add_argument("--end", type=int, required=True, help="end of the range (excluded)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--format", default="ndjson", choices=["ndjson", "arrow"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="DuckDB's multi-threaded setting (default: the CPUs)")
    parser.add_argument("--server-pid", type=int,
                        help="the daemon's process id: compare CPU time too")
    parser.add_argument("--results", help="append the figures to this JSON lines file")
    parser.add_argument("--command", default="", help="the command line to print")
    parser.add_argument("--describe", default="", help="the dataset, in words")
    return parser.parse_args()


class Worker:
    """POST /query over one keep-alive connection per thread."""

    def __init__(self, url, dataset, start, end, fmt):
        match = re.match(r"^http://([^/:]+):(\d+)/?$", url)
        if not match:
            raise SystemExit(f"--url {url}: expected http://HOST:PORT")
        self.host, self.port = match.group(1), int(match.group(2))
        self.dataset, self.start, self.end, self.format = dataset, start, end, fmt
        self.local = threading.local()

    def _connection(self):
        if getattr(self.local, "connection", None) is None:
            self.local.connection = http.client.HTTPConnection(self.host, self.port, timeout=600)
        return self.local.connection

    def raw(self, sql, fmt=None):
        """The body of POST /query, read to the end; raises on any non-200 answer."""
        body = json.dumps({
            "dataset": self.dataset,
            "blocks": {"start": self.start, "end": self.end},
            "sql": sql,
            "format": fmt or self.format,
        })
        for attempt in range(2):
            connection = self._connection()
            try:
                connection.request("POST", "/query", body=body,
                                   headers={"content-type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                connection.close()
                self.local.connection = None
                if attempt:
                    raise
        if response.status != 200:
            raise RuntimeError(f"worker: HTTP {response.status}: {data[:500]!r}")
        return data

    def rows(self, sql):
        """The answer as lists of values (NDJSON, numbers exact)."""
        text = self.raw(sql, "ndjson").decode()
        rows = []
        for line in text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line, parse_float=decimal.Decimal)
            if set(row) == {"error"}:
                raise RuntimeError(f"worker: the query failed while streaming: {row['error']}")
            rows.append(list(row.values()))
        return rows


def duck_connection(data, start, end, threads):
    connection = duckdb.connect(":memory:")
    connection.execute(f"SET threads = {threads}")
    for table in TABLES:
        pattern = os.path.join(data, "*", f"{table}.parquet").replace("'", "''")
        connection.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}') "
            f"WHERE block_number >= {start} AND block_number < {end}"
        )
    return connection


def normalize(value):
    """Comparable form: every number as an exact Decimal, floats rounded to 9 digits."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return decimal.Decimal(repr(value)).quantize(decimal.Decimal("1e-9")) \
            if abs(value) < 1e18 else decimal.Decimal(f"{value:.9e}")
    if isinstance(value, (int, decimal.Decimal)):
        return decimal.Decimal(value).normalize()
    if isinstance(value, str) and NUMBER.match(value):
        return decimal.Decimal(value).normalize()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def compare(worker_rows, duck_rows):
    """The differences between two answers, as lines of text (empty when they agree)."""
    problems = []
    if len(worker_rows) != len(duck_rows):
        problems.append(f"{len(worker_rows)} rows from the worker, {len(duck_rows)} from DuckDB")
    for index, (ours, theirs) in enumerate(zip(worker_rows, duck_rows)):
        a = [normalize(value) for value in ours]
        b = [normalize(value) for value in theirs]
        if a != b:
            problems.append(f"row {index}: worker {a} vs DuckDB {b}")
        if len(problems) >= 5:
            break
    return problems


def timed(function):
    began = time.perf_counter()
    function()
    return time.perf_counter() - began


def process_cpu(pid):
    """A function giving the CPU seconds used so far by process `pid` (Linux's process CPU
    clock: ((~pid) << 3) | CPUCLOCK_SCHED), or by this process if `pid` is None."""
    if pid is None:
        return time.process_time
    clock = ((~pid) << 3) | 2
    return lambda: time.clock_gettime(clock)


def cpu_timed(function, clock):
    """(wall seconds, CPU seconds of `clock`) of one call."""
    cpu = clock()
    wall = timed(function)
    return wall, clock() - cpu


def fmt_ms(seconds):
    milliseconds = seconds * 1000
    return f"{milliseconds:,.0f} ms" if milliseconds >= 100 else f"{milliseconds:.1f} ms"


def throughput(run_one, clients, seconds):
    """Queries per second of `clients` threads, each running the query set in a loop."""
    deadline = time.perf_counter() + seconds
    counts = [0] * clients
    errors = []

    def client(number):
        index = number  # each client starts at another query
        while time.perf_counter() < deadline:
            try:
                run_one(number, QUERIES[index % len(QUERIES)][1])
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(str(error))
                return
            counts[number] += 1
            index += 1

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - began
    return sum(counts) / elapsed, sum(counts), elapsed, errors


def main():
    args = parse_args()
    load = open("/proc/loadavg").read().split()[:3]
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    worker = Worker(args.url, args.dataset, args.start, args.end, args.format)
    duck_n = duck_connection(args.data, args.start, args.end, args.threads)
    duck_1 = duck_connection(args.data, args.start, args.end, 1)

    print(f"started {started}; load average at the start: {' '.join(load)} (1, 5, 15 min) "
          f"on {os.cpu_count()} CPUs; the machine is shared with other builds, so the "
          "figures carry their load", flush=True)
    print(f"duckdb {duckdb.__version__}, python {sys.version.split()[0]}; worker over HTTP "
          f"({args.format}, body read to the end); DuckDB threads={args.threads} and threads=1 "
          f"(fetchall); blocks {args.start}..{args.end}; {args.describe}", flush=True)

    # Warm-up: the worker fetches the covering chunks (they stay local), the page cache fills.
    began = time.perf_counter()
    for _, sql in QUERIES:
        worker.raw(sql)
        duck_n.execute(sql).fetchall()
    print(f"warm-up (worker fetches its chunks): {time.perf_counter() - began:.1f} s", flush=True)

    # Correctness.
    mismatches = 0
    for name, sql in QUERIES:
        try:
            ours = worker.rows(sql)
        except Exception as error:  # noqa: BLE001 - reported, the others still run
            print(f"MISMATCH {name}: the worker failed: {error}")
            mismatches += 1
            continue
        theirs = duck_n.execute(sql).fetchall()
        problems = compare(ours, theirs)
        if problems:
            mismatches += 1
            print(f"MISMATCH {name}:")
            for problem in problems:
                print(f"  {problem}")
    print(f"answers: {len(QUERIES) - mismatches} of {len(QUERIES)} queries agree with DuckDB "
          "(numbers exactly, rows in order)", flush=True)

    # Medians; the three runs of a query are interleaved so load changes hit them alike, and
    # their order turns from round to round: the first run of a query follows the last (the
    # heaviest, DuckDB on one thread) of the query before, with the caches full of that.
    server_cpu = process_cpu(args.server_pid) if args.server_pid else None
    own_cpu = process_cpu(None)
    sides = ("worker", "duck_n", "duck_1")
    times = {name: {side: [] for side in sides} for name, _ in QUERIES}
    cpus = {name: {side: [] for side in sides} for name, _ in QUERIES}
    for round_number in range(args.reps):
        for name, sql in QUERIES:
            runs = (
                ("worker", lambda: worker.raw(sql), server_cpu),
                ("duck_n", lambda: duck_n.execute(sql).fetchall(), own_cpu),
                ("duck_1", lambda: duck_1.execute(sql).fetchall(), own_cpu),
            )
            turn = round_number % len(runs)
            for side, run, clock in runs[turn:] + runs[:turn]:
                if clock is None:
                    times[name][side].append(timed(run))
                else:
                    wall, cpu = cpu_timed(run, clock)
                    times[name][side].append(wall)
                    cpus[name][side].append(cpu)

    # Concurrency: CLIENTS threads, the worker over HTTP, DuckDB one cursor per thread.
    before = server_cpu() if server_cpu else None
    worker_qps = throughput(lambda number, sql: worker.raw(sql), args.clients, args.seconds)
    worker_load_cpu = server_cpu() - before if server_cpu else None
    cursors = [duck_n.cursor() for _ in range(args.clients)]
    before = own_cpu()
    duck_qps = throughput(lambda number, sql: cursors[number].execute(sql).fetchall(),
                          args.clients, args.seconds)
    duck_load_cpu = own_cpu() - before
    load_end = open("/proc/loadavg").read().split()[:3]

    print()
    print(f"| query | worker | DuckDB {args.threads} threads | ratio | DuckDB 1 thread | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    records = []
    ratios = []
    for name, sql in QUERIES:
        w = statistics.median(times[name]["worker"])
        d = statistics.median(times[name]["duck_n"])
        d1 = statistics.median(times[name]["duck_1"])
        ratios.append(w / d)
        print(f"| {name} | {fmt_ms(w)} | {fmt_ms(d)} | {w / d:.2f}x | {fmt_ms(d1)} | {w / d1:.2f}x |")
        records.append({"query": name, "sql": sql, "worker_s": w, "duckdb_s": d,
                        "duckdb_1thread_s": d1, "ratio": w / d, "ratio_1thread": w / d1,
                        "worker_runs": times[name]["worker"],
                        "duckdb_runs": times[name]["duck_n"]})
    geo = statistics.geometric_mean(ratios)
    print(f"| geometric mean of the ratios | | | {geo:.2f}x | | |")
    cpu_geo = None
    if server_cpu:
        print()
        print(f"CPU time per query (medians of {args.reps}; the worker's daemon, DuckDB's process):")
        print()
        print(f"| query | worker | DuckDB {args.threads} threads | ratio | DuckDB 1 thread | ratio |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        cpu_ratios = []
        for (name, _), record in zip(QUERIES, records):
            w = statistics.median(cpus[name]["worker"])
            d = statistics.median(cpus[name]["duck_n"])
            d1 = statistics.median(cpus[name]["duck_1"])
            ratio = w / d if d else float("nan")
            ratio1 = w / d1 if d1 else float("nan")
            cpu_ratios.append(ratio)
            print(f"| {name} | {fmt_ms(w)} | {fmt_ms(d)} | {ratio:.2f}x | {fmt_ms(d1)} | "
                  f"{ratio1:.2f}x |")
            record.update({"worker_cpu_s": w, "duckdb_cpu_s": d, "duckdb_1thread_cpu_s": d1})
        cpu_geo = statistics.geometric_mean(cpu_ratios)
        print(f"| geometric mean of the ratios | | | {cpu_geo:.2f}x | | |")
    print()
    print(f"concurrency: {args.clients} clients for {args.seconds:.0f} s over the query set: "
          f"worker {worker_qps[0]:.1f} qps ({worker_qps[1]} queries), DuckDB "
          f"{duck_qps[0]:.1f} qps ({duck_qps[1]} queries, threads={args.threads}, one cursor per "
          f"client): ratio {worker_qps[0] / duck_qps[0] if duck_qps[0] else float('nan'):.2f}x "
          "(worker/DuckDB, higher is better)")
    if worker_load_cpu is not None and worker_qps[1] and duck_qps[1]:
        print(f"  CPU per query under that load: worker {fmt_ms(worker_load_cpu / worker_qps[1])}, "
              f"DuckDB {fmt_ms(duck_load_cpu / duck_qps[1])}")
    for side, result in (("worker", worker_qps), ("DuckDB", duck_qps)):
        if result[3]:
            print(f"  {side}: {len(result[3])} client(s) failed, first: {result[3][0][:300]}")
    print(f"load average: {' '.join(load)} at the start, {' '.join(load_end)} at the end")
    print(f"medians of {args.reps}; ratio = worker / DuckDB (below 1.00x: the worker is faster)")
    if args.command:
        print(f"reproduce: {args.command}")

    if args.results:
        stamp = {"started": started, "load": load, "load_end": load_end,
                 "duckdb": duckdb.__version__, "threads": args.threads,
                 "blocks": [args.start, args.end], "data": args.describe,
                 "format": args.format}
        with open(args.results, "a") as out:
            for record in records:
                out.write(json.dumps({"bench": "duckdb", **stamp, **record}) + "\n")
            out.write(json.dumps({"bench": "duckdb_qps", **stamp, "clients": args.clients,
                                  "seconds": args.seconds, "worker_qps": worker_qps[0],
                                  "duckdb_qps": duck_qps[0], "geomean_ratio": geo,
                                  "cpu_geomean_ratio": cpu_geo,
                                  "worker_cpu_s_per_query_under_load":
                                      worker_load_cpu / worker_qps[1]
                                      if worker_load_cpu is not None and worker_qps[1] else None,
                                  "duckdb_cpu_s_per_query_under_load":
                                      duck_load_cpu / duck_qps[1] if duck_qps[1] else None,
                                  "mismatches": mismatches}) + "\n")
        print(f"figures appended to {args.results}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
