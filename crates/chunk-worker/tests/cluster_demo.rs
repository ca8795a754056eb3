//! `chunk-worker cluster demo` (issue 13 item 6) run to completion as a user would: it starts
//! a fleet of three workers and a scheduler as its own children, queries, kills a worker,
//! queries again, and stops everything by itself. And the fleet benchmark's harness
//! (`bench/fleet.sh`, `cluster bench`) at a small scale.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::binary;

/// Whether a live process's command line mentions `text`.
fn process_mentioning(text: &str) -> Option<String> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(text) {
                return Some(cmdline);
            }
        }
    }
    None
}

#[test]
fn issue13_cluster_demo_runs_to_completion_and_answers_alike_after_a_kill() {
    let child = Command::new(binary())
        .args([
            "cluster",
            "demo",
            "--chunks",
            "6",
            "--blocks-per-chunk",
            "100",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = finish_within(child, Duration::from_secs(60), "cluster demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    // Three workers, each named as reading chunks before the kill.
    let before = stdout.split("kill -9 ").next().unwrap();
    for id in ["w1", "w2", "w3"] {
        assert!(
            stdout.contains(&format!("worker {id}: http://127.0.0.1:")),
            "{stdout}"
        );
        assert!(before.contains(&format!("  {id} reads blocks")), "{stdout}");
    }
    // The answers after the kill equal those before, and the first one names the lost worker.
    let victim = stdout
        .lines()
        .find_map(|line| line.strip_prefix("kill -9 "))
        .and_then(|rest| rest.split(';').next())
        .expect("a worker is killed");
    let rows: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("  rows: "))
        .collect();
    assert_eq!(rows.len(), 8, "{stdout}");
    assert_eq!(rows[..4], rows[4..], "{stdout}");
    assert!(rows[0].contains("\"blocks\":600"), "{stdout}");
    let after = stdout.split("kill -9 ").nth(1).unwrap();
    assert!(
        after.contains(&format!("x-workers-lost: {victim}")),
        "{stdout}"
    );
    assert!(!after.contains(&format!("  {victim} reads")), "{stdout}");
    assert_eq!(
        after.matches("same rows as before the kill: yes").count(),
        4
    );
    // Every chunk had a live holder: nothing downloaded, before or after.
    assert_eq!(stdout.matches(" 0 downloaded").count(), 8, "{stdout}");

    // Everything stopped and removed.
    let dir = stdout
        .lines()
        .find_map(|line| line.strip_prefix("data and cluster store: "))
        .expect("the demo names its directory");
    assert!(!std::path::Path::new(dir).exists(), "{dir} is left");
    assert_eq!(process_mentioning(dir), None, "a child is left running");
}

#[test]
fn issue13_fleet_benchmark_harness_measures_every_setup() {
    // bench/fleet.sh with this binary, at a small scale.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/fleet.sh");
    let child = Command::new("bash")
        .arg(script)
        .env("BIN", binary())
        .env("WORKERS", "1,2")
        .env("RUNS", "2")
        .env("CHUNKS", "4")
        .env("BLOCKS", "100")
        .env("TXS", "4")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = finish_within(child, Duration::from_secs(60), "bench/fleet.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("reproduce: WORKERS=1,2 RUNS=2 CHUNKS=4 BLOCKS=100 TXS=4 bench/fleet.sh"),
        "{stdout}"
    );
    // | q1 | 2 workers (R = 2) | 12.3 | 11.0 | 10581 | 4 | 0 |
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|line| line.starts_with("| q") && !line.starts_with("| query"))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 4 * 3, "four queries on three setups: {stdout}");
    for row in &rows {
        let median: f64 = row[2].parse().unwrap();
        assert!(median > 0.0, "{row:?}");
        assert_eq!(row[5], "4", "every chunk read locally: {row:?}");
        assert_eq!(row[6], "0", "nothing downloaded in the timed runs: {row:?}");
        match row[1] {
            "single node" => assert_eq!(row[4], "-"),
            "2 workers (R = 2)" => {
                let bytes: f64 = row[4].parse().unwrap();
                assert!(bytes > 0.0, "partial results move between workers: {row:?}");
            }
            "1 worker (R = 1)" => {}
            other => panic!("unexpected setup {other}"),
        }
    }
}

/// The output of `child` once it has ended by itself, or a panic (the child killed) if it
/// has not within `patience`.
fn finish_within(child: std::process::Child, patience: Duration, what: &str) -> Output {
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let Ok(output) = receiver.recv_timeout(patience) else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("{what} did not end by itself in {patience:?}");
    };
    output.unwrap()
}
