//! Distributed queries across a fleet on 127.0.0.1 (issue 13): worker daemons as processes
//! joined through a `file://` cluster store, each serving Arrow Flight with a cluster token,
//! placed by `schedule --once`, synthetic chunks from the in-process origin. Answers through
//! one worker's `POST /query` must equal a single-node `QueryEngine`'s, with no chunk
//! downloaded for them (each scan ran where its chunk is held). The failover tests kill
//! workers with SIGKILL (one; both holders of a chunk; one mid-query, stalled by the origin on
//! a chunk it downloads; one after the first batch) and check the rows, the origin's request
//! counts and `x-workers-lost`; others check `EXPLAIN`, `chunk-worker query --cluster` and
//! exact integer arithmetic (checked `+ - *`, widened sums) in stages run on workers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunk_fleet::placement::{Ranker, WorkerCapacity};
use chunk_fleet::store::ClusterStore;
use chunk_manager::{ChunkId, ChunkManager, Config, DataChunk, FileCheck, id_to_hex};
use chunk_origin::{Fault, Gate, Origin};
use chunk_query::arrow::json::writer::JsonArray;
use chunk_query::arrow::record_batch::RecordBatch;
use chunk_query::{Catalog, QueryEngine, synth};
use serde_json::Value;

/// How long a test waits for a condition that should take a second or two.
const PATIENCE: Duration = Duration::from_secs(20);

use common::binary;

const TOKEN: &str = "fleet-secret";

const DATASET: [u8; 32] = [7; 32];

/// A worker daemon. Killed on drop.
struct Worker {
    id: String,
    child: Option<Child>,
    url: String,
}

impl Worker {
    /// A worker with its own `catalog`, or (`None`) querying with the fleet's.
    fn start(store: &str, id: &str, data_dir: &Path, catalog: Option<&Path>) -> Worker {
        let mut command = common::fleet_serve(store, id, data_dir, "256MiB");
        if let Some(catalog) = catalog {
            command.arg("--catalog").arg(catalog);
        }
        command
            .args(["--member-timeout", "5s", "--query-threads", "1"])
            .args(["--flight-listen", "127.0.0.1:0", "--cluster-token", TOKEN]);
        let (child, url) = common::spawn_daemon(&mut command);
        Worker {
            id: id.to_string(),
            child: Some(child),
            url,
        }
    }

    /// Kills it with SIGKILL and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
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

    /// Sends `POST /query` in `format`.
    async fn send(
        &self,
        blocks: std::ops::Range<u64>,
        sql: &str,
        format: &str,
    ) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/query", self.url))
            .json(&serde_json::json!({
                "dataset": id_to_hex(&DATASET),
                "blocks": {"start": blocks.start, "end": blocks.end},
                "sql": sql,
                "format": format,
            }))
            .send()
            .await
            .unwrap()
    }

    /// `POST /query` as JSON rows, with the response's headers.
    async fn query(
        &self,
        blocks: std::ops::Range<u64>,
        sql: &str,
    ) -> (Value, reqwest::header::HeaderMap) {
        let response = self.send(blocks, sql, "json").await;
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
    // The single-node answers first (its downloads are its own).
    let expected = single_node(&dir.path().join("single"), &chunks, queries).await;

    let workers: Vec<Worker> = (0..3)
        .map(|index| {
            let id = format!("w{index}");
            Worker::start(&store_url, &id, &dir.path().join(&id), Some(&catalog_path))
        })
        .collect();
    // R = 2: twelve copies of six chunks, all ready.
    place(
        &store,
        &store_url,
        &catalog_path,
        &workers,
        chunks.len() as u64 * 2,
    )
    .await;

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

/// The answers of a single-node `QueryEngine` over `chunks` (downloaded into `dir`), the
/// independent reference the fleet's answers are compared with.
async fn single_node(
    dir: &std::path::Path,
    chunks: &[DataChunk],
    queries: &[(std::ops::Range<u64>, &str)],
) -> Vec<Value> {
    let manager = Arc::new(ChunkManager::open(Config::new(dir)).unwrap());
    let engine = QueryEngine::new(
        manager,
        Catalog::new(chunks.to_vec())
            .unwrap()
            .with_schemas(DATASET, synth::schemas()),
    )
    .unwrap();
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
    expected
}

/// Once every worker heartbeats with its Flight URL, runs one scheduler round placing
/// `catalog`, then waits until the workers hold `copies` chunk copies, ready.
async fn place(
    store: &ClusterStore,
    store_url: &str,
    catalog: &std::path::Path,
    workers: &[Worker],
    copies: u64,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let members = store.list_members().await.unwrap().members;
        if members.iter().filter(|m| m.flight_url.is_some()).count() == workers.len() {
            break;
        }
        assert!(Instant::now() < deadline, "members: {members:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scheduled = Command::new(binary())
        .args(["schedule", "--once", "--cluster", store_url, "--catalog"])
        .arg(catalog)
        .args(["--member-timeout", "5s"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        scheduled.status.success(),
        "{}",
        String::from_utf8_lossy(&scheduled.stderr)
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut ready = 0;
        for worker in workers {
            ready += worker.held().await;
        }
        if ready == copies {
            return;
        }
        if Instant::now() > deadline {
            let cluster = reqwest::get(format!("{}/cluster", workers[0].url))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!("{ready} of {copies} copies ready; {cluster}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fleet of worker processes on 127.0.0.1 over a `file://` cluster store, its chunks placed
/// with R = 2 and ready on their holders.
struct Fleet {
    dir: tempfile::TempDir,
    origin: Origin,
    /// Every chunk of the workers' catalog.
    chunks: Vec<DataChunk>,
    store: ClusterStore,
    workers: Vec<Worker>,
}

impl Fleet {
    /// `workers` workers over `chunks` chunks; the scheduler places only the first `placed`
    /// of them. With `own_catalog` each worker is given the catalog of all the chunks (so
    /// those not placed are in it, held by none); else they query with the one the
    /// scheduler stored.
    async fn start(workers: usize, chunks: u64, placed: usize, own_catalog: bool) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let origin = Origin::start().unwrap();
        let (chunks, catalog_path) = catalog(&origin, chunks, dir.path());
        let scheduled = dir.path().join("scheduled.json");
        std::fs::write(
            &scheduled,
            Catalog::new(chunks[..placed].to_vec())
                .unwrap()
                .with_schemas(DATASET, synth::schemas())
                .to_json()
                .unwrap(),
        )
        .unwrap();
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(&store_dir).unwrap();
        let store_url = format!("file://{}", store_dir.display());
        let store = ClusterStore::open(&store_url).unwrap();
        let workers: Vec<Worker> = (0..workers)
            .map(|index| {
                let id = format!("w{index}");
                let catalog = own_catalog.then_some(catalog_path.as_path());
                Worker::start(&store_url, &id, &dir.path().join(&id), catalog)
            })
            .collect();
        place(&store, &store_url, &scheduled, &workers, placed as u64 * 2).await;
        Fleet {
            dir,
            origin,
            chunks,
            store,
            workers,
        }
    }

    /// The answers of a single-node `QueryEngine` with every chunk (downloaded to a directory
    /// of its own).
    async fn expected(&self, queries: &[(std::ops::Range<u64>, &str)]) -> Vec<Value> {
        single_node(&self.dir.path().join("single"), &self.chunks, queries).await
    }

    /// The live workers in `chunk`'s rank order (as the coordinator ranks them), and those
    /// of them the assignment makes its holders.
    async fn rank(&self, chunk: &ChunkId) -> (Vec<String>, Vec<String>) {
        let members = self.store.list_members().await.unwrap().members;
        let capacities: Vec<WorkerCapacity> = members
            .iter()
            .map(|m| WorkerCapacity::new(m.worker_id.clone(), m.capacity_bytes.max(1)))
            .collect();
        let ranker = Ranker::new(&capacities).unwrap();
        let state = self.store.read_state().await.unwrap().unwrap();
        let assignment = self.store.read_assignment(&state.assignment).await.unwrap();
        let rank: Vec<String> = ranker.rank(chunk).into_iter().map(String::from).collect();
        let holders = rank
            .iter()
            .filter(|id| {
                assignment
                    .workers
                    .get(id.as_str())
                    .is_some_and(|chunks| chunks.contains(chunk))
            })
            .cloned()
            .collect();
        (rank, holders)
    }

    fn worker(&mut self, id: &str) -> &mut Worker {
        self.workers.iter_mut().find(|w| w.id == id).unwrap()
    }

    /// GET requests the origin has served for each chunk's files.
    fn gets(&self) -> Vec<usize> {
        self.chunks
            .iter()
            .map(|chunk| origin_gets(&self.origin, std::slice::from_ref(chunk)))
            .collect()
    }
}

/// Queries for the failover tests: an aggregate, GROUP BY, a join across tables, ORDER BY
/// LIMIT, a range starting and ending mid-chunk.
const FAILOVER_QUERIES: &[(std::ops::Range<u64>, &str)] = &[
    (
        0..600,
        "SELECT count(*) AS n, sum(gas_used) AS gas FROM blocks",
    ),
    (
        50..550,
        "SELECT block_number % 5 AS k, count(*) AS n FROM transactions GROUP BY block_number % 5 ORDER BY k",
    ),
    (
        0..600,
        "SELECT b.block_number, count(*) AS txs FROM blocks b JOIN transactions t ON t.block_number = b.block_number GROUP BY b.block_number ORDER BY txs DESC, b.block_number LIMIT 4",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_kill_one_worker_and_query_at_once_same_rows_no_download() {
    let mut fleet = Fleet::start(4, 6, 6, false).await;
    let expected = fleet.expected(FAILOVER_QUERIES).await;
    // The first holder of chunk 0 dies; the coordinator still sees its fresh heartbeat.
    let (_, holders) = fleet.rank(fleet.chunks[0].id()).await;
    let victim = holders[0].clone();
    fleet.worker(&victim).kill();
    let coordinator = fleet.workers.iter().find(|w| w.id != victim).unwrap();
    let gets_before = fleet.gets();
    for (index, ((blocks, sql), expected)) in FAILOVER_QUERIES.iter().zip(&expected).enumerate() {
        let (answer, headers) = coordinator.query(blocks.clone(), sql).await;
        assert_eq!(&answer, expected, "{sql}");
        assert_eq!(headers["x-chunks-downloaded"], "0", "{sql}");
        if index == 0 {
            // The first query found the worker down and planned again without it; the next
            // ones leave it out from the start (its cooldown).
            assert_eq!(headers["x-workers-lost"], victim.as_str(), "{sql}");
        } else {
            assert!(headers.get("x-workers-lost").is_none(), "{sql}");
        }
    }
    // Every chunk was read on its other holder: nothing was downloaded.
    assert_eq!(fleet.gets(), gets_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_kill_both_holders_of_a_chunk_same_rows_one_download() {
    let mut fleet = Fleet::start(4, 6, 6, false).await;
    let expected = fleet.expected(FAILOVER_QUERIES).await;
    let (_, victims) = fleet.rank(fleet.chunks[2].id()).await;
    assert_eq!(victims.len(), 2);
    // Every chunk both of whose holders die (chunk 2, maybe others).
    let mut orphans = Vec::new();
    for (index, chunk) in fleet.chunks.iter().enumerate() {
        let (_, holders) = fleet.rank(chunk.id()).await;
        if holders.iter().all(|holder| victims.contains(holder)) {
            orphans.push(index);
        }
    }
    assert!(orphans.contains(&2));
    for victim in &victims {
        fleet.worker(victim).kill();
    }
    let coordinator = fleet
        .workers
        .iter()
        .find(|w| !victims.contains(&w.id))
        .unwrap();
    let gets_before = fleet.gets();
    for (index, ((blocks, sql), expected)) in FAILOVER_QUERIES.iter().zip(&expected).enumerate() {
        let (answer, headers) = coordinator.query(blocks.clone(), sql).await;
        assert_eq!(&answer, expected, "{sql}");
        // Chunks no live worker holds are read where they are downloaded.
        assert_eq!(
            headers["x-chunks-downloaded"],
            orphans.len().to_string().as_str(),
            "{sql}"
        );
        if index == 0 {
            let mut lost: Vec<&str> = headers["x-workers-lost"]
                .to_str()
                .unwrap()
                .split(',')
                .collect();
            lost.sort_unstable();
            let mut victims: Vec<&str> = victims.iter().map(String::as_str).collect();
            victims.sort_unstable();
            assert_eq!(lost, victims, "{sql}");
        }
    }
    // Exactly one download of each orphaned chunk (one GET per file: it stays cached on the
    // worker that fetched it for the later queries), none of the others.
    let gets_after = fleet.gets();
    for (index, chunk) in fleet.chunks.iter().enumerate() {
        let fetched = gets_after[index] - gets_before[index];
        if orphans.contains(&index) {
            assert_eq!(fetched, chunk.files().len(), "chunk {index}");
        } else {
            assert_eq!(fetched, 0, "chunk {index}");
        }
    }
}

/// Stalls the next GET of each file of `chunk` until `gate` opens.
fn stall(origin: &Origin, chunk: &DataChunk, gate: &Gate) {
    for url in chunk.files().values() {
        let path = url.split_once("://").unwrap().1.split_once('/').unwrap().1;
        origin.push_fault(
            path,
            Fault::Stall {
                after: 0,
                gate: gate.clone(),
            },
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_kill_a_worker_mid_query_same_rows_after_the_retry() {
    // Chunk 6 is in the catalog but placed on no worker: the query downloads it on the first
    // live worker of its rank, where the origin stalls it, so that worker is mid-query when
    // it is killed.
    let mut fleet = Fleet::start(4, 7, 6, true).await;
    let queries: &[(std::ops::Range<u64>, &str)] = &[(
        0..700,
        "SELECT count(*) AS n, sum(gas_used) AS gas, max(block_number) AS hi FROM blocks",
    )];
    let expected = fleet.expected(queries).await;
    let (rank, holders) = fleet.rank(fleet.chunks[6].id()).await;
    assert!(holders.is_empty());
    let victim = rank[0].clone();
    let gate = Gate::new();
    stall(&fleet.origin, &fleet.chunks[6], &gate);
    let coordinator = fleet.workers.iter().find(|w| w.id != victim).unwrap();
    let (blocks, sql) = (queries[0].0.clone(), queries[0].1.to_string());
    let url = coordinator.url.clone();
    let query = tokio::spawn(async move {
        let coordinator = Worker {
            id: String::new(),
            child: None,
            url,
        };
        coordinator.query(blocks, &sql).await
    });
    tokio::time::timeout(PATIENCE, gate.reached())
        .await
        .expect("the victim starts downloading chunk 6");
    fleet.worker(&victim).kill();
    // The retry's download goes through.
    gate.open();
    let (answer, headers) = tokio::time::timeout(PATIENCE, query)
        .await
        .expect("the query ends")
        .unwrap();
    assert_eq!(answer, expected[0]);
    assert_eq!(headers["x-workers-lost"], victim.as_str());
    assert_eq!(headers["x-chunks-downloaded"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_worker_lost_after_the_first_batch_ends_the_body_with_a_retryable_error() {
    let mut fleet = Fleet::start(4, 7, 6, true).await;
    let (rank, _) = fleet.rank(fleet.chunks[6].id()).await;
    let victim = rank[0].clone();
    let gate = Gate::new();
    stall(&fleet.origin, &fleet.chunks[6], &gate);
    let coordinator = fleet.workers.iter().find(|w| w.id != victim).unwrap();
    // Rows stream as the chunks are read: the held chunks' rows come first, chunk 6's wait
    // for the stalled download.
    let response = coordinator
        .send(0..700, "SELECT block_number FROM blocks", "ndjson")
        .await;
    // The status and headers are sent with the first batch.
    assert!(response.status().is_success());
    tokio::time::timeout(PATIENCE, gate.reached())
        .await
        .expect("the victim starts downloading chunk 6");
    fleet.worker(&victim).kill();
    gate.open();
    let body = tokio::time::timeout(PATIENCE, response.text())
        .await
        .expect("the body ends")
        .unwrap();
    let last: Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "worker_lost", "{body}");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&victim) && message.contains("safe"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_explain_shows_the_stages_and_which_worker_reads_which_chunks() {
    let fleet = Fleet::start(4, 6, 6, false).await;
    let (answer, _) = fleet.workers[0]
        .query(0..600, "EXPLAIN SELECT count(*) AS n FROM blocks")
        .await;
    let plan: String = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|row| format!("{}\n{}\n", row["plan_type"], row["plan"].as_str().unwrap()))
        .collect();
    // The stages, and each chunk scan variant with its chunks and the worker reading them.
    assert!(plan.contains("Stage 1"), "{plan}");
    assert!(plan.contains("DistributedLeafExec"), "{plan}");
    for chunk in &fleet.chunks {
        let (_, holders) = fleet.rank(chunk.id()).await;
        let hex = &id_to_hex(chunk.id())[..8];
        let blocks = chunk.block_range();
        assert!(
            plan.contains(&format!(
                "{hex}:{}..{}@{}",
                blocks.start, blocks.end, holders[0]
            )),
            "chunk {hex} read on {}: {plan}",
            holders[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_query_command_sends_the_query_to_the_fleet() {
    let fleet = Fleet::start(4, 6, 6, false).await;
    let queries: &[(std::ops::Range<u64>, &str)] = &[(
        50..550,
        "SELECT count(*) AS n, min(block_number) AS lo, max(block_number) AS hi FROM transactions",
    )];
    let expected = fleet.expected(queries).await;
    let gets_before = fleet.gets();
    let store_url = format!("file://{}", fleet.dir.path().join("store").display());
    let worker_url = fleet.workers[1].url.clone();
    // Through the cluster store (the dataset is the fleet catalog's only one), and through
    // one worker's URL (the dataset in full).
    let runs: [Vec<String>; 2] = [
        vec!["--cluster".into(), store_url],
        vec![
            "--cluster".into(),
            worker_url,
            "--dataset".into(),
            id_to_hex(&DATASET),
        ],
    ];
    for run in runs {
        let output = tokio::task::spawn_blocking(move || {
            Command::new(binary())
                .arg("query")
                .args(&run)
                .args(["--blocks", "50..550", "--format", "json"])
                .arg(queries[0].1)
                .env("RUST_LOG", "warn")
                .env_remove("CHUNK_WORKER_TOKEN")
                .env_remove("CHUNK_WORKER_CATALOG")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(answer, expected[0], "{stderr}");
        assert!(stderr.contains("6 chunk(s) read, 0 downloaded"), "{stderr}");
    }
    // As a table (the worker sends Arrow).
    let output = Command::new(binary())
        .args(["query", "--cluster", &fleet.workers[2].url, "--dataset"])
        .arg(id_to_hex(&DATASET))
        .args(["--blocks", "50..550", "--format", "table"])
        .arg(queries[0].1)
        .env_remove("CHUNK_WORKER_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let table = String::from_utf8_lossy(&output.stdout);
    let n = expected[0][0]["n"].to_string();
    assert!(table.contains("| n ") && table.contains(&n), "{table}");
    assert!(stderr.contains("1 row(s)"), "{stderr}");
    assert_eq!(fleet.gets(), gets_before);
    // A refused query: its error, and a non-zero exit.
    let output = Command::new(binary())
        .args(["query", "--cluster", &fleet.workers[0].url, "--dataset"])
        .arg(id_to_hex(&DATASET))
        .args(["--blocks", "0..100", "SELECT nope FROM blocks"])
        .env_remove("CHUNK_WORKER_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("400"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_checked_arithmetic_in_worker_stages_stays_exact() {
    let fleet = Fleet::start(3, 6, 6, false).await;
    // Integer `* +` of one type (UInt64), so checked, evaluated below the partial aggregates,
    // on the workers: a sum past 2^64 exact (widened), a product and a GROUP BY key; and
    // decimal sums.
    let queries: &[(std::ops::Range<u64>, &str)] = &[
        (
            0..600,
            "SELECT CAST(sum(block_number * CAST(1000000000000007 AS BIGINT UNSIGNED)) AS VARCHAR) AS big, count(*) AS n FROM blocks",
        ),
        (
            30..570,
            "SELECT (block_number % 3) + CAST(1 AS BIGINT UNSIGNED) AS k, sum(gas_used * CAST(3 AS BIGINT UNSIGNED)) AS gas FROM blocks GROUP BY (block_number % 3) + CAST(1 AS BIGINT UNSIGNED) ORDER BY k",
        ),
        // Decimal sums: checked `i128` additions (`exact_sum`), found by name on the workers.
        (
            0..600,
            "SELECT block_number % 4 AS k, CAST(sum(base_fee_per_gas) AS VARCHAR) AS fees, count(*) AS n FROM blocks GROUP BY block_number % 4 ORDER BY k",
        ),
    ];
    let expected = fleet.expected(queries).await;
    // The exact sum (as text: JSON numbers would round it) really is past u64.
    let big = expected[0][0]["big"].to_string();
    let big: u128 = big
        .trim_matches('"')
        .parse()
        .unwrap_or_else(|_| panic!("{}", expected[0]));
    assert!(big > u128::from(u64::MAX), "{}", expected[0]);
    for ((blocks, sql), expected) in queries.iter().zip(&expected) {
        let (answer, headers) = fleet.workers[0].query(blocks.clone(), sql).await;
        assert_eq!(&answer, expected, "{sql}");
        assert_eq!(headers["x-chunks-downloaded"], "0", "{sql}");
    }
    // An overflow in a worker's stage is an error, as on a single node: `+`, `-`, `*`.
    let manager =
        Arc::new(ChunkManager::open(Config::new(fleet.dir.path().join("single"))).unwrap());
    let engine = QueryEngine::new(
        manager,
        Catalog::new(fleet.chunks.clone())
            .unwrap()
            .with_schemas(DATASET, synth::schemas()),
    )
    .unwrap();
    let overflows = [
        "SELECT max(block_number + CAST(18446744073709551615 AS BIGINT UNSIGNED)) AS m FROM blocks",
        "SELECT min(block_number - CAST(1 AS BIGINT UNSIGNED)) AS m FROM blocks",
        "SELECT max(block_number * CAST(9223372036854775807 AS BIGINT UNSIGNED)) AS m FROM blocks",
    ];
    for sql in overflows {
        let single = match engine.query(&DATASET, 0..600, sql).await {
            Ok(stream) => stream.collect().await.map(drop).unwrap_err().to_string(),
            Err(error) => error.to_string(),
        };
        assert!(single.contains("integer overflow"), "{sql}: {single}");
        let response = fleet.workers[0].send(0..600, sql, "json").await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(!status.is_success(), "{sql}: {status} {body}");
        assert!(body.contains("integer overflow"), "{sql}: {status} {body}");
    }
}
