//! The daemon, as a real process on 127.0.0.1 port 0, driven over HTTP against an in-process
//! origin: downloads, the assignment endpoint, lookups, auth, malformed requests, server-sent
//! events, metrics, and a SIGTERM during downloads followed by a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use chunk_manager::{DataChunk, id_to_hex};
use chunk_origin::{Fault, Gate, Origin, content};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long a test waits for something that should take milliseconds before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A daemon process. Killed on drop if still running.
struct Daemon {
    child: Option<Child>,
    url: String,
    client: reqwest::Client,
}

impl Daemon {
    fn start(data_dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(data_dir, extra, &[])
    }

    fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chunk-worker"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--retries", "2", "--fsync", "false"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("CHUNK_WORKER_TOKEN")
            .envs(env.iter().copied())
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
        Daemon {
            child: Some(child),
            url,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.get(path).await.json().await.unwrap()
    }

    async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    async fn put_json(&self, path: &str, body: &impl serde::Serialize) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || sender.send(child.wait().unwrap()));
        receiver
            .recv_timeout(PATIENCE)
            .expect("the daemon exits after SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Chunks served by an in-process origin.
struct Catalog {
    origin: Origin,
    bodies: HashMap<(u8, String), Bytes>,
}

impl Catalog {
    fn new() -> Self {
        Self {
            origin: Origin::start().unwrap(),
            bodies: HashMap::new(),
        }
    }

    /// Chunk `id` of dataset 7, blocks `id*100 .. id*100+100`, two files.
    fn chunk(&mut self, id: u8) -> DataChunk {
        let mut urls = HashMap::new();
        for (name, size) in [("blocks", 20_000 + usize::from(id) * 100), ("logs", 5_000)] {
            let path = format!("{id}/{name}");
            let body = content(u64::from(id) * 31 + size as u64, size);
            self.origin.insert(&path, body.clone());
            self.bodies.insert((id, name.to_string()), body);
            urls.insert(name.to_string(), self.origin.url(&path));
        }
        let start = u64::from(id) * 100;
        DataChunk::new([id; 32], [7; 32], start..start + 100, urls)
    }

    fn assert_intact(&self, id: u8, dir: &Path) {
        for ((chunk, name), body) in &self.bodies {
            if *chunk == id {
                let on_disk = std::fs::read(dir.join(name)).unwrap();
                assert!(on_disk == body[..], "chunk {id} file {name} differs");
            }
        }
    }
}

fn hex(id: u8) -> String {
    id_to_hex(&[id; 32])
}

/// The daemon's event stream.
struct Events {
    stream: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buffer: String,
}

impl Events {
    async fn open(daemon: &Daemon) -> Events {
        let response = reqwest::get(daemon.url("/events")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            stream: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event: its name and JSON data.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                match name {
                    Some(name) => return Some((name, serde_json::from_str(&data).unwrap())),
                    None => continue, // a keep-alive comment
                }
            }
            let chunk = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("an event arrives")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk.ok()?).unwrap());
        }
    }

    /// Waits for `kind` events naming each of `chunks`; returns every event seen meanwhile.
    async fn wait_for(&mut self, kind: &str, chunks: &[u8]) -> Vec<(String, Value)> {
        let mut missing: BTreeSet<String> = chunks.iter().map(|id| hex(*id)).collect();
        let mut seen = Vec::new();
        while !missing.is_empty() {
            let (name, data) = self.next().await.expect("the stream stays open");
            if name == kind {
                missing.remove(data["chunk"].as_str().unwrap_or_default());
            }
            assert_ne!(name, "download_failed", "unexpected failure: {data}");
            seen.push((name, data));
        }
        seen
    }
}

impl Daemon {
    async fn ready_ids(&self) -> BTreeSet<String> {
        let list: Vec<Value> = self.get_json("/chunks").await;
        list.iter()
            .map(|chunk| chunk["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Asserts a JSON error response with this status and code.
async fn assert_error(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_string();
    assert!(!message.is_empty());
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_downloads_and_lookups_find_the_chunk() {
    let mut catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut events = Events::open(&daemon).await;

    let chunk = catalog.chunk(3);
    let response = daemon
        .put_json(&format!("/chunks/{}", hex(3)), &chunk)
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let seen = events.wait_for("chunk_ready", &[3]).await;
    let kinds: Vec<&str> = seen.iter().map(|(kind, _)| kind.as_str()).collect();
    assert!(kinds.contains(&"download_started"), "{kinds:?}");
    assert!(kinds.contains(&"file_downloaded"), "{kinds:?}");
    assert!(seen.iter().any(|(_, data)| {
        data["message"]
            .as_str()
            .unwrap()
            .starts_with("✅ chunk ready")
    }));

    let status: Value = daemon.get_json(&format!("/chunks/{}", hex(3))).await;
    assert_eq!(status["state"], "ready");
    assert_eq!(status["block_range"], json!({"start": 300, "end": 400}));

    let found = daemon
        .get(&format!("/datasets/{}/blocks/399", hex(7)))
        .await;
    assert_eq!(found.status(), StatusCode::OK);
    let found: Value = found.json().await.unwrap();
    assert_eq!(found["id"], hex(3));
    catalog.assert_intact(3, &PathBuf::from(found["path"].as_str().unwrap()));

    let miss = daemon
        .get(&format!("/datasets/{}/blocks/400", hex(7)))
        .await;
    assert_error(miss, StatusCode::NOT_FOUND, "not_found").await;

    let response = daemon.delete(&format!("/chunks/{}", hex(3))).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    events.wait_for("chunk_deleted", &[3]).await;
    assert!(daemon.ready_ids().await.is_empty());
    let gone = daemon.get(&format!("/chunks/{}", hex(3))).await;
    assert_error(gone, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_replaces_the_desired_set() {
    let mut catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut events = Events::open(&daemon).await;
    let (a, b, c) = (catalog.chunk(1), catalog.chunk(2), catalog.chunk(3));

    let response = daemon.put_json("/assignment", &vec![&a, &b]).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["chunks"], 2);
    events.wait_for("chunk_ready", &[1, 2]).await;
    assert_eq!(daemon.ready_ids().await, BTreeSet::from([hex(1), hex(2)]));

    let response = daemon
        .put_json("/assignment", &json!({ "chunks": [&b, &c] }))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mut seen = events.wait_for("chunk_ready", &[3]).await;
    if !seen
        .iter()
        .any(|(kind, data)| kind == "chunk_deleted" && data["chunk"] == hex(1))
    {
        seen = events.wait_for("chunk_deleted", &[1]).await;
    }
    assert!(
        !seen
            .iter()
            .any(|(kind, data)| kind == "download_started" && data["chunk"] == hex(2)),
        "a chunk kept by the new assignment is not downloaded again"
    );
    assert_eq!(daemon.ready_ids().await, BTreeSet::from([hex(2), hex(3)]));
    assert_eq!(catalog.origin.get_count("2/blocks"), 1);

    let all: Vec<Value> = daemon.get_json("/chunks?status=all").await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|chunk| chunk["state"] == "ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_mutating_request() {
    let mut catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--token", "s3cret"]);
    let client = reqwest::Client::new();
    let chunk = catalog.chunk(1);
    let path = daemon.url(&format!("/chunks/{}", hex(1)));

    let anonymous = client.put(&path).json(&chunk).send().await.unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong = client
        .put(&path)
        .bearer_auth("guess")
        .json(&chunk)
        .send()
        .await
        .unwrap();
    assert_error(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for request in [
        client.delete(&path),
        client.put(daemon.url("/assignment")).json(&json!([])),
    ] {
        let response = request.send().await.unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // Nothing was scheduled by the refused requests.
    let all: Vec<Value> = daemon.get_json("/chunks?status=all").await;
    assert!(all.is_empty(), "{all:?}");

    let mut events = Events::open(&daemon).await;
    let allowed = client
        .put(&path)
        .bearer_auth("s3cret")
        .json(&chunk)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::ACCEPTED);
    events.wait_for("chunk_ready", &[1]).await;
    let read = daemon.get("/chunks").await;
    assert_eq!(read.status(), StatusCode::OK, "reads need no token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_json_4xx_naming_the_problem() {
    let mut catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--max-body", "4KiB"]);
    let client = reqwest::Client::new();
    let chunk = catalog.chunk(1);
    let put = |id: &str| client.put(daemon.url(&format!("/chunks/{id}")));

    let response = put(&hex(1))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;

    let response = put(&hex(1))
        .json(&json!({"id": hex(1)}))
        .send()
        .await
        .unwrap();
    let message = assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
    assert!(message.contains("dataset_id"), "{message}");

    let response = put(&hex(1)).body("{}").send().await.unwrap();
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let response = put(&hex(2)).json(&chunk).send().await.unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "id_mismatch").await;

    let response = put("xyz").json(&chunk).send().await.unwrap();
    let message = assert_error(response, StatusCode::BAD_REQUEST, "invalid_id").await;
    assert!(message.contains("xyz"), "{message}");

    let mut evil = serde_json::to_value(&chunk).unwrap();
    evil["files"] = json!({"../../etc/passwd": catalog.origin.url("1/blocks")});
    let response = put(&hex(1)).json(&evil).send().await.unwrap();
    let message = assert_error(response, StatusCode::BAD_REQUEST, "invalid_chunk").await;
    assert!(message.contains("etc/passwd"), "{message}");

    let mut empty = serde_json::to_value(&chunk).unwrap();
    empty["block_range"] = json!({"start": 5, "end": 5});
    let response = put(&hex(1)).json(&empty).send().await.unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_chunk").await;

    let huge = json!({"padding": "x".repeat(10_000)});
    let response = put(&hex(1)).json(&huge).send().await.unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;

    let response = daemon.put_json("/assignment", &vec![&chunk, &chunk]).await;
    assert_error(response, StatusCode::BAD_REQUEST, "duplicate_chunk").await;

    let response = daemon.put_json("/assignment", &json!({"chunk": []})).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;

    let response = daemon.get(&format!("/datasets/{}/blocks/-1", hex(7))).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_block").await;

    let response = daemon.get("/chunks?status=bogus").await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;

    let response = daemon.get("/nowhere").await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;

    let response = client.post(daemon.url("/chunks")).send().await.unwrap();
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    // None of it scheduled anything, and the daemon is still well.
    let all: Vec<Value> = daemon.get_json("/chunks?status=all").await;
    assert!(all.is_empty(), "{all:?}");
    let health = daemon.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_the_state_and_the_work_done() {
    let mut catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--disk-budget", "1MiB"]);
    let mut events = Events::open(&daemon).await;
    let chunk = catalog.chunk(1);
    catalog
        .origin
        .push_fault("1/logs", chunk_origin::Fault::Status(503));
    daemon
        .put_json(&format!("/chunks/{}", hex(1)), &chunk)
        .await;
    events.wait_for("chunk_ready", &[1]).await;

    let response = daemon.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    let size = 20_100.0 + 5_000.0;
    assert_eq!(value("chunk_manager_chunks{state=\"ready\"}"), 1.0);
    assert_eq!(value("chunk_manager_chunks{state=\"downloading\"}"), 0.0);
    assert_eq!(value("chunk_manager_bytes_used"), size);
    assert_eq!(value("chunk_manager_bytes_reserved"), 0.0);
    assert_eq!(value("chunk_manager_disk_budget_bytes"), 1_048_576.0);
    assert!(value("chunk_manager_disk_free_bytes") > 0.0);
    assert_eq!(value("chunk_manager_downloads_in_flight"), 0.0);
    assert_eq!(value("chunk_manager_deletions_pending_refs"), 0.0);
    assert!(value("chunk_manager_download_bytes_total") >= size);
    assert_eq!(value("chunk_manager_chunks_downloaded_total"), 1.0);
    assert_eq!(value("chunk_manager_files_downloaded_total"), 2.0);
    assert_eq!(
        value("chunk_manager_download_retries_total{kind=\"http_status\"}"),
        1.0
    );
    assert_eq!(value("chunk_manager_download_duration_seconds_count"), 1.0);
    assert!(text.contains("chunk_manager_download_duration_seconds_bucket{le=\"0.1\"}"));
    assert!(text.contains("# HELP chunk_manager_bytes_used"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_downloads_exits_cleanly_and_a_restart_finishes_the_work() {
    let mut catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut events = Events::open(&daemon).await;
    let (done, stalled) = (catalog.chunk(1), catalog.chunk(2));
    let gate = Gate::new();
    catalog.origin.push_fault(
        "2/blocks",
        Fault::Stall {
            after: 1000,
            gate: gate.clone(),
        },
    );
    daemon.put_json("/assignment", &vec![&done, &stalled]).await;
    events.wait_for("chunk_ready", &[1]).await;
    let reached = tokio::task::spawn_blocking({
        let gate = gate.clone();
        move || gate.wait_reached(PATIENCE)
    })
    .await
    .unwrap();
    assert!(reached, "the download reached the stall");

    let status = tokio::task::spawn_blocking(move || daemon.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let mut last = None;
    while let Some((name, _)) = events.next().await {
        last = Some(name);
    }
    assert_eq!(
        last.as_deref(),
        Some("shutdown"),
        "the stream ends with the shutdown event"
    );
    let temporary = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(temporary, 0, "no temporary data is left behind");

    // The lock is free: a new daemon opens the directory and adopts the committed chunk.
    gate.open();
    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.ready_ids().await, BTreeSet::from([hex(1)]));
    let mut events = Events::open(&daemon).await;
    daemon.put_json("/assignment", &vec![&done, &stalled]).await;
    events.wait_for("chunk_ready", &[2]).await;
    assert_eq!(daemon.ready_ids().await, BTreeSet::from([hex(1), hex(2)]));
    let found: Value = daemon
        .get_json(&format!("/datasets/{}/blocks/250", hex(7)))
        .await;
    catalog.assert_intact(2, &PathBuf::from(found["path"].as_str().unwrap()));
    assert_eq!(
        catalog.origin.get_count("1/blocks"),
        1,
        "the committed chunk is not downloaded again"
    );
    let ready = daemon.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_flags_then_environment_then_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        "token = \"from-file\"\ndisk_budget = \"2MiB\"\nmax_body = 100\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let daemon = Daemon::start_with_env(
        &data,
        &["--config", config.to_str().unwrap(), "--max-body", "1KiB"],
        &[("CHUNK_WORKER_DISK_BUDGET", "3MiB")],
    );
    let client = reqwest::Client::new();
    let metrics = daemon.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line == "chunk_manager_disk_budget_bytes 3145728"),
        "the variable wins over the file:\n{metrics}"
    );
    let refused = daemon.put_json("/assignment", &json!([])).await;
    assert_error(refused, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let body = json!({ "chunks": [], "padding": "x".repeat(500) });
    let accepted = client
        .put(daemon.url("/assignment"))
        .bearer_auth("from-file")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        accepted.status(),
        StatusCode::ACCEPTED,
        "the token comes from the file; the flag's body limit wins over the file's"
    );

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "disk_budgte = 5\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_chunk-worker"))
        .args(["serve", "--config", typo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("disk_budgte"), "{stderr}");
}
