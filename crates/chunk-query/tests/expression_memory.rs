//! Issue 11, item 6: `SELECT length(repeat('x', 1500000000))` pushed the process to 6.3 GB
//! while planning (constant folding). Alone in its test binary, so the process's peak RSS
//! (`VmHWM`) is this test's.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::single_range_in_vec_init
)]

mod common;

use std::time::{Duration, Instant};

use common::{DATASET, Fixture, Worker};

/// The peak resident set size of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_huge_repeat_is_refused_fast_with_small_rss() {
    let fixture = Fixture::new(&[0..100]);
    let worker = Worker::new(fixture.catalog());
    let started = Instant::now();
    let error = worker
        .engine
        .query(&DATASET, 0..100, "SELECT length(repeat('x', 1500000000))")
        .await
        .unwrap_err();
    assert!(error.is_bad_request(), "{error}");
    assert!(error.to_string().contains("repeat"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let peak = peak_rss();
    assert!(peak < 512 << 20, "peak RSS {} MiB", peak >> 20);
    assert_eq!(fixture.all_gets(), [0], "nothing downloaded");
}
