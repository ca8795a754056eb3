//! Helpers shared by the integration tests that run the `chunk-worker` binary.
// Each test crate includes this module and uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a daemon may take to announce its address.
const ANNOUNCE_PATIENCE: Duration = Duration::from_secs(30);

/// The `chunk-worker` binary: `CHUNK_WORKER_TEST_BIN` if set (for a target directory shared
/// by several checkouts, whose `chunk-worker` another build may replace), else cargo's.
pub fn binary() -> String {
    std::env::var("CHUNK_WORKER_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_chunk-worker").to_string())
}

/// `serve` as a member of the fleet at `store`: an ephemeral port on 127.0.0.1, `data_dir`
/// with the disk budget `budget`, no fsync, heartbeats and polls every 200 ms, warnings only
/// in its log, no API token from the environment.
pub fn fleet_serve(store: &str, id: &str, data_dir: &std::path::Path, budget: &str) -> Command {
    let mut command = Command::new(binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--fsync", "false", "--disk-budget", budget])
        .args(["--cluster", store, "--worker-id", id])
        .args(["--heartbeat-interval", "200ms", "--poll-interval", "200ms"])
        .env("RUST_LOG", "warn")
        .env_remove("CHUNK_WORKER_TOKEN")
        .stderr(Stdio::inherit());
    command
}

/// Spawns a daemon (`command` runs `serve` with `--listen 127.0.0.1:0`) with its stdout piped
/// and waits until it prints `listening on URL`; returns the child and that URL.
pub fn spawn_daemon(command: &mut Command) -> (Child, String) {
    spawn_announcing(command, "listening on ")
}

/// Spawns `command` with its stdout piped and waits until it prints a line starting with
/// `prefix`; returns the child and the rest of that line. Its stdout is drained afterwards,
/// so the process never blocks on a full pipe. Panics if nothing is announced in time (the
/// child is killed first).
pub fn spawn_announcing(command: &mut Command, prefix: &'static str) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the process");
    let stdout = child.stdout.take().expect("its stdout is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = sender.send(rest.to_string());
            }
        }
    });
    match receiver.recv_timeout(ANNOUNCE_PATIENCE) {
        Ok(announced) => (child, announced),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no {prefix:?} line in {ANNOUNCE_PATIENCE:?}");
        }
    }
}
