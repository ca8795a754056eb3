//! The daemon, as a real process on 127.0.0.1 port 0, driven over HTTP against an in-process
//! origin: downloads, the assignment endpoint, lookups, auth, malformed requests, server-sent
//! events, metrics, a SIGTERM during downloads followed by a restart, and the server's limits
//! (slow clients, a shutdown deadline, reads behind the token, what errors tell).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chunk_manager::{DataChunk, id_to_hex};
use chunk_origin::{Fault, Gate, Origin, content};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
        Daemon::start_under(&[], data_dir, extra, env)
    }

    /// Starts the daemon through `wrapper` (a command that runs its arguments in its own
    /// process, such as `prlimit --nofile=256 --`), if any.
    fn start_under(
        wrapper: &[&str],
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let binary = common::binary();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--retries", "2", "--fsync", "false"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("CHUNK_WORKER_TOKEN")
            .envs(env.iter().copied())
            .stderr(Stdio::inherit());
        let (child, url) = common::spawn_daemon(&mut command);
        Daemon {
            child: Some(child),
            url,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The address it listens on, for raw TCP clients.
    fn address(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    fn signal_term(&self) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
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
        Events::open_with(daemon, None).await
    }

    /// Opens the stream with this bearer token, or none.
    async fn open_with(daemon: &Daemon, token: Option<&str>) -> Events {
        let mut request = daemon.client.get(daemon.url("/events"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
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

    /// Waits for a `download_failed` event; returns its message.
    async fn failure(&mut self) -> String {
        loop {
            let (name, data) = self.next().await.expect("the stream stays open");
            if name == "download_failed" {
                return data["message"].as_str().unwrap().to_string();
            }
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
    let head = client.head(daemon.url("/chunks")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK, "HEAD is a read too");
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
    // The query engine's spill directory stays, empty, for the next start.
    let temporary: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            !(path.ends_with("query-spill") && std::fs::read_dir(path).unwrap().next().is_none())
        })
        .collect();
    assert!(
        temporary.is_empty(),
        "temporary data left behind: {temporary:?}"
    );

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
    let output = Command::new(common::binary())
        .args(["serve", "--config", typo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("disk_budgte"), "{stderr}");
}

/// Reads what the server sends until it closes the connection; panics if it keeps it open.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection");
    if let Err(error) = read {
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    }
    received
}

/// Reads until `needle` arrives.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut received = Vec::new();
    let mut buffer = [0; 1024];
    while !String::from_utf8_lossy(&received).contains(needle) {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
            .await
            .expect("the server answers")
            .unwrap();
        assert!(read > 0, "closed before {needle:?}: {received:?}");
        received.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue10_slow_clients_are_timed_out_and_cannot_take_every_descriptor() {
    let mut catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    // 256 descriptors: at most 128 connections are served; more stalled clients than the
    // daemon has descriptors.
    let daemon = Daemon::start_under(
        &["prlimit", "--nofile=256", "--"],
        dir.path(),
        &["--header-timeout", "1s"],
        &[],
    );
    // An event stream is a request being answered: the header timeout does not cut it.
    let mut events = Events::open(&daemon).await;
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(daemon.address()).await.unwrap();
        stream
            .write_all(b"GET /chunks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Unfinished: ")
            .await
            .unwrap();
        stalled.push(stream);
    }

    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let health = client
        .get(daemon.url("/healthz"))
        .send()
        .await
        .expect("/healthz answers while slow clients wait");
    assert_eq!(health.status(), StatusCode::OK);
    // Three rounds of 128 stalled connections, each cut after 1 s.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "/healthz took {:?}",
        started.elapsed()
    );
    for stream in &mut stalled {
        let received = read_until_closed(stream).await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            received.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    // The daemon is well: it serves requests and downloads, and the event stream opened
    // before the stalled clients (seconds ago) is still open.
    let chunk = catalog.chunk(1);
    let response = daemon
        .put_json(&format!("/chunks/{}", hex(1)), &chunk)
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    events.wait_for("chunk_ready", &[1]).await;
    assert_eq!(daemon.ready_ids().await, BTreeSet::from([hex(1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue10_a_stalled_request_body_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--body-timeout", "1s"]);
    let mut stream = TcpStream::connect(daemon.address()).await.unwrap();
    stream
        .write_all(
            b"PUT /assignment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n[",
        )
        .await
        .unwrap();
    let answer = read_until(&mut stream, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let all: Vec<Value> = daemon.get_json("/chunks?status=all").await;
    assert!(all.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue10_sigterm_with_a_stalled_client_exits_by_the_deadline_holding_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &["--shutdown-timeout", "3s"]);
    // A request whose body never comes: the handler waits for it (the 100 Continue says it
    // asked), longer than the shutdown deadline.
    let mut stalled = TcpStream::connect(daemon.address()).await.unwrap();
    let head = format!(
        "PUT /chunks/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
        hex(1)
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    read_until(&mut stalled, "100 Continue").await;
    stalled.write_all(b"{\"id\": ").await.unwrap();

    let ls = |dir: &Path| {
        Command::new(common::binary())
            .args(["ls", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "off")
            .output()
            .unwrap()
    };
    let second = ls(dir.path());
    assert!(!second.status.success(), "the directory is locked");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("HTTP API"), "{stderr}");

    daemon.signal_term();
    let signalled = Instant::now();
    let mut child = daemon.child.take().unwrap();
    // Until the daemon has exited, nothing else may open the directory.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if ls(dir.path()).status.success() {
            // The lock is free: the daemon must be gone, or about to be (it exits right
            // after releasing the lock), not serving for seconds more.
            let exited = Instant::now();
            while child.try_wait().unwrap().is_none() {
                assert!(
                    exited.elapsed() < Duration::from_secs(1),
                    "the lock was released while the daemon still ran"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(3 + 7),
            "the daemon did not exit by the shutdown deadline"
        );
    };
    assert!(status.success(), "exit status {status}");
    let waited = signalled.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "left before the deadline: {waited:?}"
    );
    // The stalled client's connection was dropped.
    read_until_closed(&mut stalled).await;
    assert!(
        ls(dir.path()).status.success(),
        "the lock is free after the exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue10_token_reads_need_the_token_but_health_checks_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--token", "s3cret", "--token-reads"]);
    let client = reqwest::Client::new();
    for path in [
        "/chunks".to_string(),
        "/chunks?status=all".to_string(),
        format!("/chunks/{}", hex(1)),
        format!("/datasets/{}/blocks/1", hex(7)),
        "/events".to_string(),
        "/metrics".to_string(),
        "/catalog".to_string(),
    ] {
        let response = client.get(daemon.url(&path)).send().await.unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = client.head(daemon.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "HEAD {path}");
    }
    let allowed = client
        .get(daemon.url("/chunks"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    for path in ["/healthz", "/readyz"] {
        let response = client.get(daemon.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path} needs no token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue10_errors_hide_details_from_anonymous_readers_and_query_strings_from_all() {
    let mut catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--token", "s3cret"]);
    let mut anonymous = Events::open_with(&daemon, None).await;
    let mut trusted = Events::open_with(&daemon, Some("s3cret")).await;
    let chunk = catalog.chunk(1);
    let mut description = serde_json::to_value(&chunk).unwrap();
    let presigned = format!(
        "{}?X-Amz-Signature=topsecret",
        catalog.origin.url("nowhere/blocks")
    );
    description["files"]["blocks"] = json!(presigned);
    let put = daemon
        .client
        .put(daemon.url(&format!("/chunks/{}", hex(1))))
        .bearer_auth("s3cret")
        .json(&description)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::ACCEPTED);

    let origin = catalog.origin.addr().to_string();
    let hidden = anonymous.failure().await;
    let shown = trusted.failure().await;
    for text in [&hidden, &shown] {
        assert!(!text.contains("topsecret"), "{text}");
    }
    for secret in ["404", "nowhere", &origin] {
        assert!(!hidden.contains(secret), "{hidden}");
    }
    assert!(
        shown.contains("404") && shown.contains("nowhere"),
        "{shown}"
    );

    let path = format!("/chunks/{}", hex(1));
    let status: Value = daemon.get_json(&path).await;
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("details need the token"), "{error}");
    for secret in ["404", "nowhere", "topsecret", &origin] {
        assert!(!error.contains(secret), "{error}");
    }
    let all: Vec<Value> = daemon.get_json("/chunks?status=all").await;
    assert_eq!(all[0]["error"], status["error"]);
    let status: Value = daemon
        .client
        .get(daemon.url(&path))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("404") && error.contains("nowhere"),
        "{error}"
    );
    assert!(!error.contains("topsecret"), "{error}");
}

#[test]
fn issue10_help_does_not_print_secrets_from_the_environment() {
    let secrets = [
        ("CHUNK_WORKER_S3_ACCESS_KEY_ID", "AKIDFROMENV1"),
        ("CHUNK_WORKER_S3_SECRET_ACCESS_KEY", "SECRETFROMENV2"),
        ("CHUNK_WORKER_S3_SESSION_TOKEN", "SESSIONFROMENV3"),
        ("CHUNK_WORKER_TOKEN", "APITOKENFROMENV4"),
    ];
    for command in ["serve", "download"] {
        let output = Command::new(common::binary())
            .args([command, "--help"])
            .envs(secrets)
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        for (variable, value) in secrets {
            if command == "serve" || variable != "CHUNK_WORKER_TOKEN" {
                assert!(help.contains(variable), "{command} --help names {variable}");
            }
            assert!(
                !help.contains(value),
                "{command} --help shows {variable}:\n{help}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_an_assignment_with_a_conflict_changes_nothing() {
    let mut catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut events = Events::open(&daemon).await;
    let (a, b) = (catalog.chunk(1), catalog.chunk(2));
    daemon.put_json(&format!("/chunks/{}", hex(1)), &a).await;
    events.wait_for("chunk_ready", &[1]).await;

    let mut changed = serde_json::to_value(&a).unwrap();
    changed["block_range"] = json!({"start": 100, "end": 150});
    let response = daemon.put_json("/assignment", &json!([&b, changed])).await;
    let message = assert_error(response, StatusCode::CONFLICT, "conflict").await;
    assert!(message.contains(&hex(1)), "{message}");

    let all: Vec<Value> = daemon.get_json("/chunks?status=all").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["id"], hex(1));
    assert_eq!(all[0]["state"], "ready");
    assert_eq!(all[0]["block_range"], json!({"start": 100, "end": 200}));
    assert_eq!(catalog.origin.get_count("2/blocks"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_oversized_bodies_get_a_json_413_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--max-body", "1KiB"]);
    let client = reqwest::Client::new();
    let query = json!({
        "dataset": hex(7),
        "blocks": {"start": 0, "end": 1},
        "sql": format!("SELECT '{}'", "x".repeat(2000)),
    });
    let response = client
        .post(daemon.url("/query"))
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;

    let padding = json!([{"padding": "x".repeat(2000)}]);
    let response = client
        .put(daemon.url("/catalog"))
        .json(&padding)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;

    // Without a declared length, the limit is found while reading.
    let body = serde_json::to_vec(&padding).unwrap();
    for (method, path) in [
        (reqwest::Method::PUT, "/catalog"),
        (reqwest::Method::PUT, "/assignment"),
        (reqwest::Method::POST, "/query"),
    ] {
        let chunks = futures::stream::iter(
            body.chunks(100)
                .map(|part| Ok::<_, std::io::Error>(Bytes::copy_from_slice(part)))
                .collect::<Vec<_>>(),
        );
        let response = client
            .request(method, daemon.url(path))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue10_an_acknowledged_deletion_survives_a_kill_9_right_after() {
    let mut catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut events = Events::open(&daemon).await;
    let ids: Vec<u8> = (1..=12).collect();
    let chunks: Vec<DataChunk> = ids.iter().map(|&id| catalog.chunk(id)).collect();
    let response = daemon.put_json("/assignment", &chunks).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    events.wait_for("chunk_ready", &ids).await;

    // Deleted one by one, then dropped by an assignment: each acknowledged...
    for id in 1..=6 {
        let response = daemon.delete(&format!("/chunks/{}", hex(id))).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let response = daemon.put_json("/assignment", &chunks[6..9].to_vec()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // ...then the process dies at once (SIGKILL).
    drop(daemon);

    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(
        daemon.ready_ids().await,
        BTreeSet::from([hex(7), hex(8), hex(9)]),
        "every acknowledged deletion is durable"
    );
}
