//! Queries through the binary: `chunk-worker query` and `synth` as commands, and the daemon's
//! `POST /query` (JSON and Arrow IPC) and `PUT /catalog`, against generated chunks served by
//! an in-process origin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chunk_manager::{DataChunk, DatasetId, id_to_hex};
use chunk_origin::Origin;
use chunk_query::arrow::ipc::reader::StreamReader;
use chunk_query::synth::{Synth, SynthConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);
const DATASET: DatasetId = [0x3c; 32];
/// The dataset id `synth` uses by default.
const SYNTH: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// Three chunks of 100 blocks (0..300) served by an origin, and their catalog file.
struct Served {
    origin: Origin,
    synth: Synth,
    chunks: Vec<DataChunk>,
    dir: tempfile::TempDir,
}

impl Served {
    fn new() -> Self {
        let origin = Origin::start().unwrap();
        let synth = Synth::new(SynthConfig::small());
        let mut chunks = Vec::new();
        for start in [0, 100, 200] {
            let chunk = synth.chunk(&DATASET, start..start + 100).unwrap();
            for (name, bytes) in &chunk.files {
                origin.insert(&chunk.path(name), bytes.clone());
            }
            chunks.push(chunk.describe(&DATASET, |path| origin.url(path)));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("catalog.json"),
            serde_json::to_vec(&chunks).unwrap(),
        )
        .unwrap();
        Self {
            origin,
            synth,
            chunks,
            dir,
        }
    }

    fn catalog(&self) -> String {
        self.dir.path().join("catalog.json").display().to_string()
    }

    /// Transactions generated for `blocks`, counted without any file.
    fn transactions(&self, blocks: std::ops::Range<u64>) -> usize {
        self.synth.tables(blocks).unwrap().transactions.num_rows()
    }
}

fn worker(args: &[&str]) -> Output {
    Command::new(common::binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CHUNK_WORKER_CATALOG")
        .output()
        .expect("run chunk-worker")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_query_command_downloads_what_it_needs_and_keeps_it_for_the_next() {
    let served = Served::new();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let catalog = served.catalog();
    let sql = "SELECT count(*) AS n FROM transactions";
    let run = |format: &str| {
        worker(&[
            "query",
            "--data-dir",
            &data_dir,
            "--catalog",
            &catalog,
            "--blocks",
            "50..150",
            "--format",
            format,
            "--whole-chunks",
            sql,
        ])
    };
    let first = run("json");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let rows: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(rows, json!([{"n": served.transactions(50..150)}]));
    assert!(
        text(&first.stderr).contains("2 chunk(s) read, 2 downloaded"),
        "{}",
        text(&first.stderr)
    );
    assert_eq!(
        served
            .origin
            .get_count(&format!("{}/blocks.parquet", dir_of(&served.chunks[2]))),
        0
    );

    let second = run("table");
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(
        text(&second.stdout).contains("| n "),
        "{}",
        text(&second.stdout)
    );
    assert!(
        text(&second.stderr).contains("0 downloaded"),
        "cached in the data directory: {}",
        text(&second.stderr)
    );

    let bad = worker(&[
        "query",
        "--data-dir",
        &data_dir,
        "--catalog",
        &catalog,
        "--blocks",
        "0..10",
        "SELECT nope FROM blocks",
    ]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("invalid query"),
        "{}",
        text(&bad.stderr)
    );
}

/// The origin path of a chunk's directory, from one of its URLs.
fn dir_of(chunk: &DataChunk) -> String {
    let url = chunk.files().values().next().unwrap();
    let path = url.split('/').skip(3).collect::<Vec<_>>();
    path[..path.len() - 1].join("/")
}

#[test]
fn the_synth_command_writes_chunks_and_a_catalog() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let run = worker(&[
        "synth",
        "--out",
        &dir,
        "--chunks",
        "2",
        "--blocks-per-chunk",
        "50",
        "--transactions-per-block",
        "3",
        "--base-url",
        "http://127.0.0.1:9/data",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let document: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("catalog.json")).unwrap()).unwrap();
    let catalog: Vec<DataChunk> = serde_json::from_value(document["chunks"].clone()).unwrap();
    // The tables' schemas come with it, so queries plan before downloading.
    let transactions = &document["schemas"][SYNTH]["transactions"];
    assert!(
        transactions
            .as_array()
            .unwrap()
            .contains(&json!({"name": "value", "type": "Decimal128(38, 0)", "nullable": false})),
        "{transactions}"
    );
    assert_eq!(catalog.len(), 2);
    assert_eq!(catalog[1].block_range(), 50..100);
    for chunk in &catalog {
        for (name, url) in chunk.files() {
            let path = url.strip_prefix("http://127.0.0.1:9/data/").unwrap();
            assert!(
                Path::new(&out.path().join(path)).is_file(),
                "{name}: {path}"
            );
        }
    }
}

#[test]
fn the_demo_query_needs_nothing_else() {
    let run = worker(&[
        "query",
        "--demo",
        "--blocks",
        "100..1100",
        "--format",
        "ndjson",
        "SELECT count(*) AS blocks FROM blocks",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout).trim(), r#"{"blocks":1000}"#);
}

/// A daemon process on 127.0.0.1 port 0. Killed on drop.
struct Daemon {
    child: Child,
    url: String,
    client: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let data = tempfile::tempdir().unwrap();
        let mut command = Command::new(common::binary());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--fsync", "false"])
            .arg("--data-dir")
            .arg(data.path())
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("CHUNK_WORKER_TOKEN")
            .env_remove("CHUNK_WORKER_CATALOG")
            .stderr(Stdio::inherit());
        let (child, url) = common::spawn_daemon(&mut command);
        Daemon {
            child,
            url,
            client: reqwest::Client::new(),
            _data: data,
        }
    }

    async fn query(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/query", self.url))
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_answers_queries_in_json_and_arrow() {
    let served = Served::new();
    let daemon = Daemon::start(&["--catalog", &served.catalog()]);
    let dataset = id_to_hex(&DATASET);
    let request = json!({
        "dataset": dataset,
        "blocks": {"start": 150, "end": 250},
        "sql": "SELECT count(*) AS n, min(block_number) AS first FROM transactions",
    });

    let response = daemon.query(&request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-chunks-read"], "2");
    // Not held: read remotely (issue 11), nothing downloaded.
    assert_eq!(response.headers()["x-chunks-downloaded"], "0");
    assert_eq!(response.headers()["x-chunks-remote"], "2");
    let rows: Value = response.json().await.unwrap();
    assert_eq!(rows[0]["n"], served.transactions(150..250));

    let response = daemon
        .client
        .post(format!("{}/query", daemon.url))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-chunks-downloaded"], "0");
    let body = response.bytes().await.unwrap();
    let batches: Vec<_> = StreamReader::try_new(std::io::Cursor::new(body), None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(batches[0].schema().field(0).name(), "n");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    // Bad requests are 4xx with a code; an unknown dataset is 404.
    let mut bad = request.clone();
    bad["sql"] = json!("SELECT nope FROM blocks");
    let response = daemon.query(&bad).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_sql");
    let mut unknown = request.clone();
    unknown["dataset"] = json!(id_to_hex(&[1; 32]));
    assert_eq!(daemon.query(&unknown).await.status(), StatusCode::NOT_FOUND);
    let mut ddl = request.clone();
    ddl["sql"] = json!("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'");
    assert_eq!(daemon.query(&ddl).await.status(), StatusCode::BAD_REQUEST);
    let response = daemon.query(&json!({"dataset": dataset})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_can_be_replaced_over_http() {
    let served = Served::new();
    let daemon = Daemon::start(&[]);
    let request = json!({
        "dataset": id_to_hex(&DATASET),
        "blocks": {"start": 0, "end": 100},
        "sql": "SELECT count(*) AS n FROM blocks",
        "format": "ndjson",
    });
    assert_eq!(daemon.query(&request).await.status(), StatusCode::NOT_FOUND);

    let response = daemon
        .client
        .put(format!("{}/catalog", daemon.url))
        .json(&json!({"chunks": served.chunks}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let summary: Value = response.json().await.unwrap();
    assert_eq!(summary, json!({"chunks": 3, "datasets": 1}));

    let response = daemon.query(&request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap().trim(), r#"{"n":100}"#);

    let response = daemon
        .client
        .put(format!("{}/catalog", daemon.url))
        .body("[{\"id\": 1}]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// A query that fails on block 250 (a division by zero), after the rows of the blocks before
/// it: with one query thread, the chunks are read in block order.
const FAILS_AT_250: &str =
    "SELECT block_number, 1000 / (CAST(block_number AS BIGINT) - 250) AS x FROM blocks";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_failure_after_the_first_rows_is_unmistakable_in_every_format() {
    let served = Served::new();
    let daemon = Daemon::start(&["--catalog", &served.catalog(), "--query-threads", "1"]);
    let request = |format: &str, sql: &str| {
        json!({
            "dataset": id_to_hex(&DATASET),
            "blocks": {"start": 0, "end": 300},
            "sql": sql,
            "format": format,
        })
    };

    // Failing before the first batch: an error status and a JSON error.
    let early = "SELECT 1000 / (CAST(block_number AS BIGINT) - 5) AS x FROM blocks";
    for format in ["json", "ndjson", "arrow"] {
        let response = daemon.query(&request(format, early)).await;
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{format}"
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "execution", "{format}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Divide by zero"),
            "{error}"
        );
    }

    // JSON: the rows, the array left open, then the error object: the body does not parse.
    let response = daemon.query(&request("json", FAILS_AT_250)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    assert!(body.starts_with("[{\"block_number\":0,"), "{}", &body[..50]);
    assert!(serde_json::from_str::<Value>(&body).is_err());
    let last: Value = serde_json::from_str(body.trim_end().lines().last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "execution", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Divide by zero")
    );

    // NDJSON: rows, then a last line that is the error.
    let response = daemon.query(&request("ndjson", FAILS_AT_250)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(lines.len() > 1);
    assert_eq!(lines[0]["block_number"], 0);
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|row| row["error"].is_null())
    );
    assert_eq!(lines.last().unwrap()["error"]["code"], "execution");

    // Arrow IPC: the schema and some batches, then the connection is cut: no end-of-stream
    // marker.
    let mut response = daemon.query(&request("arrow", FAILS_AT_250)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = Vec::new();
    let cut = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut, "the body must not end cleanly");
    assert!(!received.ends_with(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
    assert!(!received.is_empty());

    // The CLI exits non-zero, whichever batch fails.
    let data = tempfile::tempdir().unwrap();
    let run = worker(&[
        "query",
        "--data-dir",
        &data.path().display().to_string(),
        "--catalog",
        &served.catalog(),
        "--blocks",
        "0..300",
        "--format",
        "ndjson",
        FAILS_AT_250,
    ]);
    assert!(!run.status.success());
    assert!(
        text(&run.stderr).contains("Divide by zero"),
        "{}",
        text(&run.stderr)
    );
}

/// The value of a metric in a Prometheus text exposition.
async fn metric(daemon: &Daemon, name: &str) -> Option<f64> {
    let text = daemon
        .client
        .get(format!("{}/metrics", daemon.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls until `running` queries are counted, or panics after the patience.
async fn until_running(daemon: &Daemon, running: f64) {
    let deadline = Instant::now() + PATIENCE;
    while metric(daemon, "chunk_worker_queries_running").await != Some(running) {
        assert!(Instant::now() < deadline, "never {running} running queries");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Queries cancelled because their client went away, in `/metrics`.
const CANCELLED: &str = "chunk_worker_queries_total{result=\"cancelled\"}";

/// A query whose client reads the whole answer is not cancelled, even when the client is gone
/// before the worker's supervisor sees the query end (it was counted as cancelled, and logged
/// "its client went away", after most successful queries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_query_read_to_the_end_is_not_counted_as_cancelled() {
    let served = Served::new();
    let daemon = Daemon::start(&["--catalog", &served.catalog()]);
    for _ in 0..20 {
        let response = daemon
            .query(&json!({
                "dataset": id_to_hex(&DATASET),
                "blocks": {"start": 0, "end": 300},
                "sql": "SELECT count(*) AS n FROM blocks",
                "format": "ndjson",
            }))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap();
    }
    let started = "chunk_worker_queries_total{result=\"started\"}";
    assert_eq!(metric(&daemon, started).await, Some(20.0));
    assert_eq!(metric(&daemon, CANCELLED).await, None);
}

/// A cross join of about 2·10^12 rows: hours of work.
const HEAVY: &str = "SELECT count(*) AS n \
                     FROM transactions a, transactions b, transactions c, transactions d \
                     WHERE a.nonce + b.nonce + c.nonce + d.nonce > 5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_heavy_query_stalls_nothing_and_stops_with_its_client_or_timeout() {
    let served = Served::new();
    // Whole chunks: their arrival tells that the query is past fetching, into its join.
    let daemon = Daemon::start(&["--catalog", &served.catalog(), "--whole-chunks"]);
    let request = json!({
        "dataset": id_to_hex(&DATASET),
        "blocks": {"start": 0, "end": 300},
        "sql": HEAVY,
    });
    until_running(&daemon, 0.0).await;
    let client = daemon.client.clone();
    let url = format!("{}/query", daemon.url);
    let heavy = tokio::spawn(async move { client.post(url).json(&request).send().await });
    until_running(&daemon, 1.0).await;
    // Its three chunks downloaded, it plans in milliseconds and then joins for hours.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let chunks: Value = daemon
            .client
            .get(format!("{}/chunks", daemon.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if chunks.as_array().map_or(0, Vec::len) == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the chunks never came: {chunks}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The HTTP server answers at once: queries run on their own threads.
    for _ in 0..5 {
        let started = Instant::now();
        let response = daemon
            .client
            .get(format!("{}/healthz", daemon.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    }
    assert!(!heavy.is_finished(), "the heavy query is still running");

    // The client goes away: the query stops, counted as cancelled.
    heavy.abort();
    let started = Instant::now();
    until_running(&daemon, 0.0).await;
    eprintln!("stopped {:?} after the client left", started.elapsed());
    let deadline = Instant::now() + PATIENCE;
    while metric(&daemon, CANCELLED).await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the cancelled query is not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A timeout stops a query too, with its own error.
    let daemon = Daemon::start(&["--catalog", &served.catalog(), "--query-timeout", "1s"]);
    let started = Instant::now();
    let response = daemon
        .query(&json!({
            "dataset": id_to_hex(&DATASET),
            "blocks": {"start": 0, "end": 300},
            "sql": HEAVY,
        }))
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "query_timeout", "{error}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    until_running(&daemon, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_the_schema_is_served_and_printed() {
    let served = Served::new();
    let daemon = Daemon::start(&["--catalog", &served.catalog()]);
    // By a unique prefix; the catalog has no schemas, so they are read from one chunk.
    let prefix = &id_to_hex(&DATASET)[..8];
    let response = daemon
        .client
        .get(format!("{}/datasets/{prefix}/schema", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let schema: Value = response.json().await.unwrap();
    let tables = schema["tables"].as_object().unwrap();
    assert_eq!(
        tables.keys().collect::<Vec<_>>(),
        ["blocks", "logs", "transactions"]
    );
    assert!(
        tables["blocks"].as_array().unwrap().contains(
            &json!({"name": "timestamp", "type": "Timestamp(µs, \"UTC\")", "nullable": false})
        ),
        "{schema}"
    );
    let response = daemon
        .client
        .get(format!("{}/datasets/ffffffff/schema", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // The CLI, from a directory written by `synth`: its catalog.json names the dataset (a
    // prefix is enough) and has the schemas.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let run = worker(&[
        "synth",
        "--out",
        &dir,
        "--chunks",
        "2",
        "--blocks-per-chunk",
        "20",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let run = worker(&["schema", "--catalog", &dir, "--dataset", "5e5e5e5e"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let printed = text(&run.stdout);
    assert!(printed.contains("transactions\n"), "{printed}");
    assert!(printed.contains("gas_price"), "{printed}");
    assert!(printed.contains("Decimal128(38, 0) NOT NULL"), "{printed}");

    // Querying that directory: file:// URLs need a flag, and the error names it.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let query = |extra: &[&str]| {
        let mut args = vec![
            "query",
            "--data-dir",
            &data_dir,
            "--catalog",
            &dir,
            "--dataset",
            "5e5e5e5e",
            "--blocks",
            "0..40",
            "--format",
            "ndjson",
        ];
        args.extend_from_slice(extra);
        args.push("SELECT count(*) AS n, sum(value) > 0 AS paid FROM transactions");
        worker(&args)
    };
    let refused = query(&[]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("--allow-file-urls"),
        "{}",
        text(&refused.stderr)
    );
    let allowed = query(&["--allow-file-urls", "true"]);
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    let row: Value = serde_json::from_str(text(&allowed.stdout).trim()).unwrap();
    assert_eq!(row["paid"], true, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_queries_beyond_the_limit_wait_their_turn() {
    let served = Served::new();
    let daemon = Daemon::start(&["--catalog", &served.catalog(), "--max-queries", "1"]);
    let body = |sql: &str| {
        json!({
            "dataset": id_to_hex(&DATASET),
            "blocks": {"start": 0, "end": 300},
            "sql": sql,
            "format": "ndjson",
        })
    };
    let post = |sql: &str| {
        let client = daemon.client.clone();
        let url = format!("{}/query", daemon.url);
        let body = body(sql);
        tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await?;
            response.text().await
        })
    };
    until_running(&daemon, 0.0).await;
    let heavy = post(HEAVY);
    until_running(&daemon, 1.0).await;
    let small = post("SELECT count(*) AS n FROM blocks");
    let deadline = Instant::now() + PATIENCE;
    while metric(&daemon, "chunk_worker_queries_queued").await != Some(1.0) {
        assert!(Instant::now() < deadline, "the second query never queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!small.is_finished(), "it waits for the heavy one");
    // The heavy one's client leaves: the small one runs.
    heavy.abort();
    let answer = small.await.unwrap().unwrap();
    assert_eq!(answer.trim(), r#"{"n":300}"#);
    assert_eq!(
        metric(&daemon, "chunk_worker_queries_queued").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue10_a_chunk_file_that_is_not_parquet_is_a_502_naming_it() {
    let served = Served::new();
    // The origin serves garbage for the first chunk's blocks file (no checksum declared).
    let garbage = vec![b'x'; 4096];
    let url = &served.chunks[0].files()["blocks.parquet"];
    let base = served.origin.url("");
    let path = url.strip_prefix(base.as_str()).unwrap().to_string();
    served.origin.insert(&path, garbage.into());
    let daemon = Daemon::start(&["--catalog", &served.catalog()]);
    let response = daemon
        .query(&json!({
            "dataset": id_to_hex(&DATASET),
            "blocks": {"start": 0, "end": 100},
            "sql": "SELECT count(*) AS n FROM blocks",
            "format": "ndjson",
        }))
        .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "bad_chunk_data", "{body}");
}
