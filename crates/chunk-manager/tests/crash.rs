//! Crash consistency (SPEC §5): a child process runs the manager under a random workload and
//! is killed with SIGKILL at random moments, many times. After each kill the directory is
//! reopened and checked: no partial chunk is visible, every committed chunk is intact,
//! temporary data is gone, and what the child last saw settled (a checkpoint printed when the
//! manager was idle) still holds for every chunk it did not touch afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chunk_manager::{ChunkManager, DataChunk, id_from_hex, id_to_hex};
use common::{Catalog, config, temporary_entries};

const ITERATIONS: usize = 25;
const CHUNKS: u8 = 10;

/// Child mode: run a random workload on `CHUNK_MANAGER_CRASH_DIR` until killed.
#[test]
#[ignore = "run as a child process by sigkill_at_random_moments_keeps_every_promise"]
fn crash_child() {
    let dir = std::env::var("CHUNK_MANAGER_CRASH_DIR").expect("run by the parent test");
    let chunks: Vec<DataChunk> =
        serde_json::from_str(&std::env::var("CHUNK_MANAGER_CRASH_CHUNKS").unwrap()).unwrap();
    let seed: u64 = std::env::var("CHUNK_MANAGER_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let manager = ChunkManager::open(config(dir.as_ref())).unwrap();
    let checkpoint = |manager: &ChunkManager, wanted: &HashMap<[u8; 32], bool>| {
        manager.wait_idle_blocking();
        let visible: Vec<String> = manager.list_chunks().iter().map(id_to_hex).collect();
        let deleted: Vec<String> = wanted
            .iter()
            .filter(|(_, w)| !**w)
            .map(|(id, _)| id_to_hex(id))
            .collect();
        println!(
            "checkpoint visible={} deleted={} end",
            visible.join(","),
            deleted.join(",")
        );
    };
    let mut wanted = HashMap::new();
    let mut refs = Vec::new();
    checkpoint(&manager, &wanted);
    loop {
        for _ in 0..rng.usize(1..6) {
            let chunk = &chunks[rng.usize(..chunks.len())];
            let id = *chunk.id();
            if rng.bool() {
                println!("download {}", id_to_hex(&id));
                manager.download_chunk(chunk.clone());
                wanted.insert(id, true);
            } else {
                println!("delete {}", id_to_hex(&id));
                manager.delete_chunk(id);
                wanted.insert(id, false);
            }
        }
        if rng.u8(..4) == 0 {
            refs.extend(manager.get_chunk(chunks[rng.usize(..chunks.len())].id()));
        }
        if !refs.is_empty() && rng.u8(..3) == 0 {
            refs.swap_remove(rng.usize(..refs.len()));
        }
        if rng.u8(..3) == 0 {
            checkpoint(&manager, &wanted);
        }
        std::thread::sleep(Duration::from_millis(rng.u64(0..15)));
    }
}

#[derive(Default)]
struct Claims {
    visible: BTreeSet<[u8; 32]>,
    deleted: BTreeSet<[u8; 32]>,
    /// Chunks requested after the last checkpoint: only the general invariants apply.
    touched: BTreeSet<[u8; 32]>,
}

fn parse_ids(list: &str) -> BTreeSet<[u8; 32]> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| id_from_hex(s).unwrap())
        .collect()
}

/// What the child's output promises: the last complete checkpoint, minus later requests.
fn claims(lines: &[String]) -> Option<Claims> {
    let last = lines
        .iter()
        .rposition(|l| l.starts_with("checkpoint ") && l.ends_with(" end"))?;
    let fields: HashMap<&str, &str> = lines[last]
        .trim_end_matches(" end")
        .split(' ')
        .skip(1)
        .filter_map(|field| field.split_once('='))
        .collect();
    let mut claims = Claims {
        visible: parse_ids(fields["visible"]),
        deleted: parse_ids(fields["deleted"]),
        touched: BTreeSet::new(),
    };
    for line in &lines[last + 1..] {
        let mut words = line.split(' ');
        if let (Some("download" | "delete"), Some(hex)) = (words.next(), words.next())
            && let Ok(id) = id_from_hex(hex)
        {
            claims.touched.insert(id);
        }
    }
    Some(claims)
}

#[test]
fn sigkill_at_random_moments_keeps_every_promise() {
    let catalog = Catalog::new();
    let chunks: Vec<DataChunk> = (1..=CHUNKS)
        .map(|id| {
            let size = 20_000 + usize::from(id) * 37_000;
            catalog.chunk(
                id,
                0,
                u64::from(id) * 100..u64::from(id) * 100 + 100,
                &[("a", size), ("b", size / 3)],
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut checked = 0;
    for iteration in 0..ITERATIONS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CHUNK_MANAGER_CRASH_DIR", dir.path())
            .env(
                "CHUNK_MANAGER_CRASH_CHUNKS",
                serde_json::to_string(&chunks).unwrap(),
            )
            .env(
                "CHUNK_MANAGER_CRASH_SEED",
                (iteration as u64 * 7919).to_string(),
            )
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = lines.clone();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    // The child's test harness prints "test crash_child ... " before our
                    // first line.
                    let line = match line.split_once("crash_child ... ") {
                        Some((_, ours)) => ours.to_string(),
                        None => line,
                    };
                    lines.lock().unwrap().push(line);
                }
            })
        };
        // A random moment: anywhere from startup to deep into the workload.
        std::thread::sleep(Duration::from_millis(rng.u64(20..700)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let lines = std::mem::take(&mut *lines.lock().unwrap());

        let manager = ChunkManager::open(config(dir.path())).unwrap();
        let report = manager.startup_report();
        assert!(
            report.problems.is_empty(),
            "iteration {iteration}: {:?}",
            report.problems
        );
        assert!(
            temporary_entries(dir.path()).is_empty(),
            "iteration {iteration}: temporary data left"
        );
        let listed: BTreeSet<[u8; 32]> = manager.list_chunks().into_iter().collect();
        for id in &listed {
            let chunk = manager.get_chunk(id).unwrap();
            catalog.assert_intact(&chunk);
        }
        if let Some(claims) = claims(&lines) {
            checked += 1;
            for id in claims.visible.difference(&claims.touched) {
                assert!(
                    listed.contains(id),
                    "iteration {iteration}: committed chunk {} lost",
                    id[0]
                );
            }
            for id in claims.deleted.difference(&claims.touched) {
                assert!(
                    !listed.contains(id),
                    "iteration {iteration}: deleted chunk {} came back",
                    id[0]
                );
            }
        }
        manager.shutdown_blocking();
    }
    assert!(
        checked >= ITERATIONS / 2,
        "only {checked} iterations reached a checkpoint"
    );
}
