//! A fleet on 127.0.0.1 (issue 12): worker daemons as real processes joined through a
//! `file://` cluster store, the scheduler as a process, chunks from the in-process origin.
//! Every wait polls the daemons' HTTP API (or the store) with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chunk_fleet::placement::diff;
use chunk_fleet::store::{Assignment, AssignmentId, ClusterStore, State};
use chunk_manager::{DataChunk, FileCheck, id_to_hex};
use chunk_origin::{Fault, Gate, Origin, content};
use serde_json::Value;

/// How long a test waits for a condition that should take a second or two.
const PATIENCE: Duration = Duration::from_secs(20);

use common::binary;

/// A worker daemon in the fleet. Killed on drop.
struct Worker {
    id: String,
    child: Option<Child>,
    url: String,
}

impl Worker {
    fn start(store: &str, id: &str, data_dir: &Path) -> Worker {
        Worker::start_with(store, id, data_dir, &["--cluster-grace", "60s"])
    }

    fn start_with(store: &str, id: &str, data_dir: &Path, extra: &[&str]) -> Worker {
        let mut command = common::fleet_serve(store, id, data_dir, "64MiB");
        command
            .args(["--retries", "2", "--member-timeout", "2s"])
            .args(extra);
        let (child, url) = common::spawn_daemon(&mut command);
        Worker {
            id: id.to_string(),
            child: Some(child),
            url,
        }
    }

    /// kill -9.
    fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    async fn json(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The ids of the chunks ready on its disk.
    async fn held(&self) -> BTreeSet<String> {
        let chunks = self.json("/chunks").await;
        chunks
            .as_array()
            .unwrap()
            .iter()
            .map(|chunk| chunk["id"].as_str().unwrap().to_string())
            .collect()
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

/// A long-running scheduler. Killed on drop.
struct Scheduler(Child);

impl Scheduler {
    fn start(store: &str, catalog: &Path) -> Scheduler {
        let child = Command::new(binary())
            .args(["schedule", "--cluster", store, "--catalog"])
            .arg(catalog)
            .args(["--interval", "200ms", "--member-timeout", "2s"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the scheduler");
        Scheduler(child)
    }

    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `chunk-worker schedule --once`: its exit status and stdout.
fn schedule_once(store: &str, catalog: &Path) -> (bool, String) {
    let output = Command::new(binary())
        .args(["schedule", "--once", "--cluster", store, "--catalog"])
        .arg(catalog)
        .args(["--member-timeout", "2s"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// Chunks of dataset 7 served by the origin, and the catalog file describing them (with
/// declared sizes, which the scheduler places by).
fn chunks(origin: &Origin, count: u8, dir: &Path) -> (Vec<String>, PathBuf) {
    let mut described = Vec::new();
    for id in 0..count {
        let mut urls = std::collections::HashMap::new();
        let mut sizes = Vec::new();
        for (name, size) in [("blocks", 8_000 + usize::from(id) * 100), ("logs", 2_000)] {
            let path = format!("{id}/{name}");
            origin.insert(&path, content(u64::from(id) * 31 + size as u64, size));
            urls.insert(name.to_string(), origin.url(&path));
            sizes.push((name, size));
        }
        let start = u64::from(id) * 100;
        let mut chunk = DataChunk::new([id; 32], [7; 32], start..start + 100, urls);
        for (name, size) in sizes {
            let mut check = FileCheck::new();
            check.size = Some(size as u64);
            chunk = chunk.with_check(name, check);
        }
        described.push(chunk);
    }
    let path = dir.join("catalog.json");
    std::fs::write(&path, serde_json::to_vec(&described).unwrap()).unwrap();
    let ids = (0..count).map(|id| id_to_hex(&[id; 32])).collect();
    (ids, path)
}

/// Waits until the workers agree on one applied assignment whose live workers are exactly
/// them, every chunk is held by `replicas` of them, and each holds exactly its part. Returns
/// the assignment and what each holds.
async fn converged(
    store: &ClusterStore,
    workers: &[&Worker],
    chunk_ids: &[String],
    replicas: usize,
) -> (AssignmentId, Assignment, BTreeMap<String, BTreeSet<String>>) {
    let deadline = Instant::now() + PATIENCE;
    let expected: BTreeSet<String> = workers.iter().map(|w| w.id.clone()).collect();
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "the fleet did not converge: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // polling interval, not a sync
        let Ok(Some(state)) = store.read_state().await else {
            last = "no state".into();
            continue;
        };
        let live: BTreeSet<String> = state.live_workers.iter().cloned().collect();
        if live != expected {
            last = format!("state's live workers {live:?}");
            continue;
        }
        let mut ok = true;
        for worker in workers {
            let view = worker.json("/cluster").await;
            if view["applied_assignment"].as_str() != Some(&state.assignment.to_string())
                || view["chunks"]["kept"] != 0
            {
                last = format!("{} not applied yet: {view}", worker.id);
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        let assignment = store.read_assignment(&state.assignment).await.unwrap();
        let mut held = BTreeMap::new();
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for worker in workers {
            let chunks = worker.held().await;
            for id in &chunks {
                *count.entry(id.clone()).or_default() += 1;
            }
            held.insert(worker.id.clone(), chunks);
        }
        let all_r = chunk_ids
            .iter()
            .all(|id| count.get(id).copied() == Some(replicas))
            && count.len() == chunk_ids.len();
        let parts_held = workers.iter().all(|worker| {
            let part: BTreeSet<String> = assignment
                .workers
                .get(&worker.id)
                .map(|ids| ids.iter().map(id_to_hex).collect())
                .unwrap_or_default();
            held[&worker.id] == part
        });
        if all_r && parts_held {
            return (state.assignment, assignment, held);
        }
        last = format!("replica counts {count:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_fleet_converges_survives_a_kill_takes_a_joiner_and_a_scheduler_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    std::fs::create_dir(&store_dir).unwrap();
    let url = format!("file://{}", store_dir.display());
    let store = ClusterStore::open(&url).unwrap();
    let origin = Origin::start().unwrap();
    let (chunk_ids, catalog) = chunks(&origin, 24, dir.path());

    let mut workers: Vec<Worker> = (1..=4)
        .map(|n| Worker::start(&url, &format!("w{n}"), &dir.path().join(format!("w{n}"))))
        .collect();
    // Two schedulers at once: one publishes each generation, the other loses the race.
    let scheduler = Scheduler::start(&url, &catalog);
    let rival = Scheduler::start(&url, &catalog);

    // Converged: every chunk on R = 2 workers, each worker holding exactly its part.
    let refs: Vec<&Worker> = workers.iter().collect();
    let (_, first, held_first) = converged(&store, &refs, &chunk_ids, 2).await;
    assert_eq!(first.workers.len(), 4);

    // kill -9 one worker: after the member timeout its chunks are placed on the others, and
    // held twice again; the others lose nothing.
    let dead = workers.pop().unwrap();
    let dead_part = first.workers[&dead.id].len();
    assert!(dead_part > 0);
    dead.kill();
    let refs: Vec<&Worker> = workers.iter().collect();
    let (_, second, held_second) = converged(&store, &refs, &chunk_ids, 2).await;
    let moves = diff(&first.workers, &second.workers);
    assert_eq!(
        moves.added, dead_part,
        "exactly the dead worker's replicas move"
    );
    assert_eq!(moves.removed, dead_part);
    for worker in &workers {
        assert_eq!(moves.per_worker.get(&worker.id).map_or(0, |m| m.removed), 0);
        assert!(held_second[&worker.id].is_superset(&held_first[&worker.id]));
    }

    // A new worker joins: it takes its share, and nothing else moves. Its downloads stall
    // first: meanwhile the old holders keep the chunks moving to it (the grace period).
    let gate = Gate::new();
    for id in 0..chunk_ids.len() {
        let stall = Fault::Stall {
            after: 100,
            gate: gate.clone(),
        };
        origin.set_fault(&format!("{id}/blocks"), Some(stall));
    }
    workers.push(Worker::start(&url, "w5", &dir.path().join("w5")));
    let mut kept = 0;
    for worker in &workers[..3] {
        let view = wait_view(
            worker,
            "the old workers switch to the new assignment",
            |view| {
                view["live_workers"]
                    .as_array()
                    .is_some_and(|live| live.iter().any(|w| w == "w5"))
            },
        )
        .await;
        kept += view["chunks"]["kept"].as_u64().unwrap();
        assert_eq!(
            worker.held().await,
            held_second[&worker.id],
            "nothing dropped yet"
        );
    }
    let w5_view = workers[3].json("/cluster").await;
    assert_eq!(w5_view["applied"], false, "{w5_view}");
    assert!(kept > 0);
    assert_eq!(kept, w5_view["chunks"]["assigned"].as_u64().unwrap());
    gate.open();
    for id in 0..chunk_ids.len() {
        origin.set_fault(&format!("{id}/blocks"), None);
    }
    let refs: Vec<&Worker> = workers.iter().collect();
    let (third_id, third, held_third) = converged(&store, &refs, &chunk_ids, 2).await;
    let moves = diff(&second.workers, &third.workers);
    let taken = held_third["w5"].len();
    assert!(taken > 0, "the new worker takes a share");
    assert_eq!(moves.per_worker.get("w5").map_or(0, |m| m.added), taken);
    assert_eq!(moves.added, taken, "only the new worker gains replicas");
    let dropped: usize = workers[..3]
        .iter()
        .map(|w| held_second[&w.id].difference(&held_third[&w.id]).count())
        .sum();
    assert_eq!(
        dropped, taken,
        "old workers drop exactly what the new one took"
    );
    for worker in &workers[..3] {
        assert!(held_third[&worker.id].is_subset(&held_second[&worker.id]));
    }

    // The schedulers killed and one restarted change nothing.
    let before = store.read_state().await.unwrap().unwrap();
    scheduler.kill();
    rival.kill();
    let chain = std::fs::read_dir(store_dir.join("states")).unwrap().count() as u64;
    assert_eq!(
        chain, before.generation,
        "one state per generation, none lost"
    );
    let (ok, output) = schedule_once(&url, &catalog);
    assert!(ok, "{output}");
    assert!(output.starts_with("unchanged"), "{output}");
    let after = store.read_state().await.unwrap().unwrap();
    assert_eq!(after, before);
    assert_eq!(after.assignment, third_id);

    // The operator's view agrees.
    let status = Command::new(binary())
        .args([
            "cluster",
            "status",
            "--json",
            "--member-timeout",
            "2s",
            "--cluster",
            &url,
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["assignment"], third_id.to_string());
    assert_eq!(status["under_replicated"], 0);
    assert_eq!(status["chunks"], chunk_ids.len());
    let live: Vec<&str> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["live"] == true)
        .map(|w| w["worker_id"].as_str().unwrap())
        .collect();
    assert_eq!(live, ["w1", "w2", "w3", "w5"]);
    let w5 = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker_id"] == "w5")
        .unwrap();
    assert_eq!(w5["held_chunks"], taken);
    assert!(w5["assigned_bytes"].as_u64().unwrap() > 0);
}

/// Waits until `/cluster` of `worker` satisfies `check`.
async fn wait_view(worker: &Worker, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let view = worker.json("/cluster").await;
        if check(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "{what}: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await; // polling interval, not a sync
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_bad_store_input_is_logged_and_never_drops_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let url = format!("file://{}", store_dir.display());
    let store = ClusterStore::open(&url).unwrap();
    let origin = Origin::start().unwrap();
    let (chunk_ids, catalog) = chunks(&origin, 6, dir.path());

    // A store directory that does not exist yet: the heartbeat creates it.
    let worker = Worker::start(&url, "w1", &dir.path().join("w1"));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (ok, output) = schedule_once(&url, &catalog);
        assert!(ok, "{output}");
        if output.starts_with("published") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never showed up: {output}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // polling interval, not a sync
    }
    let (applied, _, _) = converged(&store, &[&worker], &chunk_ids, 1).await;
    let all: BTreeSet<String> = chunk_ids.iter().cloned().collect();

    // A member file with garbage: skipped by the scheduler and the status, with a reason.
    std::fs::write(store_dir.join("members/zz.json"), b"garbage{").unwrap();
    let (ok, output) = schedule_once(&url, &catalog);
    assert!(ok && output.starts_with("unchanged"), "{output}");
    let status = Command::new(binary())
        .args(["cluster", "status", "--json", "--cluster", &url])
        .output()
        .unwrap();
    assert!(status.status.success());
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status["skipped_members"][0]
            .as_str()
            .unwrap()
            .contains("zz.json"),
        "{status}"
    );

    // A state pointing at a corrupt assignment file: the worker logs it and keeps its chunks.
    let state = store.read_state().await.unwrap().unwrap();
    let corrupt: AssignmentId = format!("{:020}_{}", 1, "ab".repeat(32)).parse().unwrap();
    std::fs::write(store_dir.join(corrupt.relative_path()), b"not gzip at all").unwrap();
    let bad = State::new(state.generation + 1, corrupt, 0, vec!["w1".into()], 1);
    store.write_state(&bad).await.unwrap();
    let view = wait_view(&worker, "the corrupt assignment is reported", |view| {
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("corrupt"))
    })
    .await;
    assert_eq!(view["assignment"], applied.to_string(), "{view}");
    assert_eq!(worker.held().await, all);

    // The scheduler repairs it: the same placement, the same assignment file.
    let (ok, output) = schedule_once(&url, &catalog);
    assert!(ok && output.starts_with("published"), "{output}");
    assert_eq!(
        store.read_state().await.unwrap().unwrap().assignment,
        applied
    );
    wait_view(&worker, "the repaired state is read", |view| {
        view["last_error"].is_null()
    })
    .await;

    // A state file from a newer format: reported as such; nothing dropped.
    std::fs::write(store_dir.join("state.json"), br#"{"format": 99}"#).unwrap();
    wait_view(&worker, "the newer format is reported", |view| {
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("newer"))
    })
    .await;
    assert_eq!(worker.held().await, all);

    // Garbage in state.json: the same.
    std::fs::write(store_dir.join("state.json"), b"\x00\x01garbage").unwrap();
    wait_view(&worker, "the garbage state is reported", |view| {
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("corrupt"))
    })
    .await;
    assert_eq!(worker.held().await, all);

    // Two processes claiming one id: both see the clash.
    let twin = Worker::start(&url, "w1", &dir.path().join("twin"));
    wait_view(&twin, "the twin sees the clash", |view| {
        view["id_clash"].as_str().is_some_and(|c| c.contains("w1"))
    })
    .await;
    wait_view(&worker, "the first sees the clash", |view| {
        view["id_clash"].as_str().is_some_and(|c| c.contains("w1"))
    })
    .await;
    assert_eq!(worker.held().await, all);

    // A store that cannot be used at all (a file where its directory should be): a clear
    // error in the view, the daemon serving.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"a file").unwrap();
    let broken = format!("file://{}/store", blocker.display());
    let lonely = Worker::start(&broken, "w7", &dir.path().join("w7"));
    wait_view(&lonely, "the unusable store is reported", |view| {
        view["heartbeat_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    })
    .await;
    let health = reqwest::get(format!("{}/healthz", lonely.url))
        .await
        .unwrap();
    assert!(health.status().is_success());
    let (ok, output) = schedule_once(&broken, &catalog);
    assert!(
        !ok,
        "the scheduler fails clearly on an unusable store: {output}"
    );
    assert!(output.contains("error"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_grace_is_bounded_and_a_restarted_worker_keeps_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    let store = ClusterStore::open(&url).unwrap();
    let origin = Origin::start().unwrap();
    let (chunk_ids, catalog) = chunks(&origin, 12, dir.path());
    let short_grace = ["--cluster-grace", "1s"];
    let mut workers = vec![
        Worker::start_with(&url, "w1", &dir.path().join("w1"), &short_grace),
        Worker::start_with(&url, "w2", &dir.path().join("w2"), &short_grace),
    ];
    let scheduler = Scheduler::start(&url, &catalog);
    let refs: Vec<&Worker> = workers.iter().collect();
    converged(&store, &refs, &chunk_ids, 2).await;

    // A joiner that never gets its chunks: the old holders keep theirs for the grace period
    // only, then apply the new assignment alone.
    let gate = Gate::new();
    for id in 0..chunk_ids.len() {
        let stall = Fault::Stall {
            after: 100,
            gate: gate.clone(),
        };
        origin.set_fault(&format!("{id}/blocks"), Some(stall));
    }
    let joiner = Worker::start(&url, "w3", &dir.path().join("w3"));
    for worker in &workers {
        wait_view(worker, "the grace period ends", |view| {
            view["live_workers"]
                .as_array()
                .is_some_and(|live| live.iter().any(|w| w == "w3"))
                && view["chunks"]["kept"] == 0
                && view["applied"] == true
        })
        .await;
    }
    let view = joiner.json("/cluster").await;
    assert_eq!(
        view["applied"], false,
        "the joiner is still stalled: {view}"
    );
    let state = store.read_state().await.unwrap().unwrap();
    let assignment = store.read_assignment(&state.assignment).await.unwrap();
    for worker in &workers {
        let part: BTreeSet<String> = assignment.workers[&worker.id]
            .iter()
            .map(id_to_hex)
            .collect();
        assert_eq!(worker.held().await, part);
    }
    gate.open();
    for id in 0..chunk_ids.len() {
        origin.set_fault(&format!("{id}/blocks"), None);
    }
    workers.push(joiner);
    let refs: Vec<&Worker> = workers.iter().collect();
    let (applied, _, held) = converged(&store, &refs, &chunk_ids, 2).await;

    // kill -9 and restart (the scheduler stopped first, so that a slow restart cannot
    // count as a departure): the same assignment, applied again from the chunks on disk,
    // nothing downloaded again.
    scheduler.kill();
    let requests = origin.total_requests();
    workers.remove(0).kill();
    let restarted = Worker::start(&url, "w1", &dir.path().join("w1"));
    let view = wait_view(&restarted, "the restarted worker applies", |view| {
        view["applied"] == true
    })
    .await;
    assert_eq!(view["assignment"], applied.to_string());
    assert_eq!(restarted.held().await, held["w1"]);
    assert_eq!(
        origin.total_requests(),
        requests,
        "nothing downloaded again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_the_scheduler_exposes_what_moved_as_metrics() {
    let origin = Origin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let (_ids, catalog) = chunks(&origin, 6, dir.path());
    let worker = Worker::start(&store, "w1", &dir.path().join("w1"));
    let mut command = Command::new(binary());
    command
        .args(["schedule", "--cluster", &store, "--catalog"])
        .arg(&catalog)
        .args(["--interval", "200ms", "--member-timeout", "2s"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn");
    let (mut scheduler, url) = common::spawn_announcing(&mut command, "metrics on ");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    let text = loop {
        let text = client.get(&url).send().await.unwrap().text().await.unwrap();
        // Published once the worker's heartbeat is seen: six chunks, one live worker.
        if text.contains("chunk_fleet_replicas_added_total 6") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = scheduler.kill();
    let _ = scheduler.wait();
    drop(worker);
    assert!(text.contains("chunk_fleet_rounds_total"), "{text}");
    assert!(text.contains("chunk_fleet_publications_total"), "{text}");
    assert!(
        text.contains("chunk_fleet_replicas_added_total 6"),
        "{text}"
    );
}
