//! Distributed queries across a fleet on 127.0.0.1 (issue 13): worker daemons as processes
//! joined through a `file://` cluster store, each serving Arrow Flight with a cluster token,
//! placed by `schedule --once`, synthetic chunks from the in-process origin. Answers through
//! one worker's `POST /query` must equal a single-node `QueryEngine`'s, with no chunk
//! downloaded for them (each scan ran where its chunk is held).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use chunk_fleet::store::ClusterStore;
use chunk_manager::{ChunkManager, Config, DataChunk, FileCheck, id_to_hex};
use chunk_origin::Origin;
use chunk_query::arrow::json::writer::JsonArray;
use chunk_query::arrow::record_batch::RecordBatch;
use chunk_query::{Catalog, QueryEngine, synth};
use serde_json::Value;

/// How long a test waits for a condition that should take a second or two.
const PATIENCE: Duration = Duration::from_secs(20);

const BINARY: &str = env!("CARGO_BIN_EXE_chunk-worker");

/// The daemon binary: `CHUNK_WORKER_TEST_BIN` if set (for a target directory shared by
/// several checkouts, whose `chunk-worker` another build may replace), else cargo's.
fn binary() -> String {
    std::env::var("CHUNK_WORKER_TEST_BIN").unwrap_or_else(|_| BINARY.to_string())
}

const TOKEN: &str = "fleet-secret";

const DATASET: [u8; 32] = [7; 32];

/// A worker daemon. Killed on drop.
struct Worker {
    id: String,
    child: Option<Child>,
    url: String,
}

impl Worker {
    fn start(store: &str, id: &str, data_dir: &Path, catalog: &Path) -> Worker {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--fsync", "false", "--disk-budget", "256MiB"])
            .arg("--catalog")
            .arg(catalog)
            .args(["--cluster", store, "--worker-id", id])
            .args(["--heartbeat-interval", "200ms", "--poll-interval", "200ms"])
            .args(["--member-timeout", "5s", "--query-threads", "1"])
            .args(["--flight-listen", "127.0.0.1:0", "--cluster-token", TOKEN])
            .env("RUST_LOG", "warn")
            .env_remove("CHUNK_WORKER_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the daemon");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = sender.send(url.to_string());
                }
            }
        });
        let url = receiver
            .recv_timeout(PATIENCE)
            .expect("the daemon announces its address");
        Worker {
            id: id.to_string(),
            child: Some(child),
            url,
        }
    }

    /// How many chunks it holds (ready on its disk), as `GET /cluster` reports.
    async fn held(&self) -> u64 {
        let cluster: Value = reqwest::get(format!("{}/cluster", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        cluster["chunks"]["held"].as_u64().unwrap()
    }

    /// `POST /query` as JSON rows, with the response's headers.
    async fn query(
        &self,
        blocks: std::ops::Range<u64>,
        sql: &str,
    ) -> (Value, reqwest::header::HeaderMap) {
        let response = reqwest::Client::new()
            .post(format!("{}/query", self.url))
            .json(&serde_json::json!({
                "dataset": id_to_hex(&DATASET),
                "blocks": {"start": blocks.start, "end": blocks.end},
                "sql": sql,
            }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "{sql}: {status} {body}");
        (serde_json::from_str(&body).unwrap(), headers)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Batches as JSON rows, as `POST /query` writes them.
fn rows(batches: &[RecordBatch]) -> Value {
    let mut writer = chunk_query::arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).unwrap();
    writer.finish().unwrap();
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Value::Array(Vec::new());
    }
    serde_json::from_slice(&bytes).unwrap()
}

/// Synthetic chunks of `DATASET`, 100 blocks each, on the origin; the catalog (with sizes and
/// table schemas) written to `dir/catalog.json`.
fn catalog(origin: &Origin, count: u64, dir: &Path) -> (Vec<DataChunk>, std::path::PathBuf) {
    let generator = synth::Synth::new(synth::SynthConfig::small());
    let mut chunks = Vec::new();
    for index in 0..count {
        let chunk = generator
            .chunk(&DATASET, index * 100..(index + 1) * 100)
            .unwrap();
        for (name, bytes) in &chunk.files {
            origin.insert(&chunk.path(name), bytes.clone());
        }
        let mut described = chunk.describe(&DATASET, |path| origin.url(path));
        for (name, bytes) in &chunk.files {
            let mut check = FileCheck::new();
            check.size = Some(bytes.len() as u64);
            described = described.with_check(name, check);
        }
        chunks.push(described);
    }
    let catalog = Catalog::new(chunks.clone())
        .unwrap()
        .with_schemas(DATASET, synth::schemas());
    let path = dir.join("catalog.json");
    std::fs::write(&path, catalog.to_json().unwrap()).unwrap();
    (chunks, path)
}

/// GET requests the origin has served for these chunks' files.
fn origin_gets(origin: &Origin, chunks: &[DataChunk]) -> usize {
    chunks
        .iter()
        .flat_map(|chunk| chunk.files().values())
        .map(|url| {
            let path = url.split_once("://").unwrap().1.split_once('/').unwrap().1;
            origin
                .requests(path)
                .iter()
                .filter(|request| request.method == "GET")
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_distributed_queries_equal_single_node_and_read_where_held() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().unwrap();
    let (chunks, catalog_path) = catalog(&origin, 6, dir.path());
    let store_dir = dir.path().join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store_url = format!("file://{}", store_dir.display());
    let store = ClusterStore::open(&store_url).unwrap();

    // The single-node answers first (its downloads are its own).
    let single_dir = dir.path().join("single");
    let manager = Arc::new(ChunkManager::open(Config::new(&single_dir)).unwrap());
    let engine = QueryEngine::new(
        manager,
        Catalog::new(chunks.clone())
            .unwrap()
            .with_schemas(DATASET, synth::schemas()),
    )
    .unwrap();
    let queries: &[(std::ops::Range<u64>, &str)] = &[
        (0..600, "SELECT count(*) AS n FROM blocks"),
        (
            50..550,
            "SELECT count(*) AS n, min(block_number) AS lo, max(block_number) AS hi FROM transactions",
        ),
        (0..600, "SELECT sum(gas_used) AS gas FROM blocks"),
        (
            120..480,
            "SELECT block_number % 7 AS k, count(*) AS n FROM transactions GROUP BY block_number % 7 ORDER BY k",
        ),
        (
            0..600,
            "SELECT b.block_number, count(*) AS txs, sum(t.gas) AS gas FROM blocks b JOIN transactions t ON t.block_number = b.block_number GROUP BY b.block_number ORDER BY txs DESC, b.block_number LIMIT 5",
        ),
        (
            0..600,
            "SELECT block_number, hash FROM blocks ORDER BY block_number DESC LIMIT 3",
        ),
    ];
    let mut expected = Vec::new();
    for (blocks, sql) in queries {
        let batches = engine
            .query(&DATASET, blocks.clone(), sql)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
            .collect()
            .await
            .unwrap();
        expected.push(rows(&batches));
    }

    let workers: Vec<Worker> = (0..3)
        .map(|index| {
            let id = format!("w{index}");
            Worker::start(&store_url, &id, &dir.path().join(&id), &catalog_path)
        })
        .collect();
    // Every member heartbeats with its Flight URL.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let members = store.list_members().await.unwrap().members;
        let flights = members.iter().filter(|m| m.flight_url.is_some()).count();
        if flights == workers.len() {
            break;
        }
        assert!(Instant::now() < deadline, "members: {members:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scheduled = Command::new(binary())
        .args(["schedule", "--once", "--cluster", &store_url, "--catalog"])
        .arg(&catalog_path)
        .args(["--member-timeout", "5s"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        scheduled.status.success(),
        "{}",
        String::from_utf8_lossy(&scheduled.stderr)
    );
    // R = 2: twelve copies of six chunks, all ready.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut ready = 0;
        for worker in &workers {
            ready += worker.held().await;
        }
        if ready == chunks.len() as u64 * 2 {
            break;
        }
        if Instant::now() > deadline {
            let cluster = reqwest::get(format!("{}/cluster", workers[0].url))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!("{ready} copies ready; {cluster}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let gets_before = origin_gets(&origin, &chunks);
    for ((blocks, sql), expected) in queries.iter().zip(&expected) {
        let (answer, headers) = workers[0].query(blocks.clone(), sql).await;
        assert_eq!(&answer, expected, "{sql} on {}", workers[0].id);
        assert_eq!(headers["x-chunks-downloaded"], "0", "{sql}");
    }
    // Every scan ran on a holder: nothing more was downloaded from the origin.
    assert_eq!(origin_gets(&origin, &chunks), gets_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_flight_request_without_the_token_is_refused() {
    use chunk_distributed::flight::FlightService;

    let dir = tempfile::tempdir().unwrap();
    let manager = Arc::new(ChunkManager::open(Config::new(dir.path())).unwrap());
    let engine = Arc::new(QueryEngine::new(manager, Catalog::default()).unwrap());
    let service = FlightService::start(
        "127.0.0.1:0".parse().unwrap(),
        engine,
        Some(TOKEN.to_string()),
    )
    .await
    .unwrap();
    // Any gRPC call of the worker service: refused before it is decoded.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let call = |token: Option<&str>| {
        let mut request = client
            .post(format!(
                "{}/worker.WorkerService/GetWorkerInfo",
                service.url()
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8, 0, 0, 0, 0]);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send()
    };
    let refused = call(None).await.unwrap();
    // tonic answers errors with grpc-status in the headers of a trailers-only response.
    assert_eq!(refused.headers()["grpc-status"], "16"); // UNAUTHENTICATED
    let wrong = call(Some("not-the-token")).await.unwrap();
    assert_eq!(wrong.headers()["grpc-status"], "16");
    let allowed = call(Some(TOKEN)).await.unwrap();
    assert_ne!(
        allowed
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap()),
        Some("16")
    );
    service.shutdown().await;
}
