//! Admission with an assignment far larger than the budget, and lookups under load.
//!
//! The budget holds `budget_chunks` chunks, all fetched for queries (cached) and pinned, so no
//! eviction can make room; then `queued` more chunks are assigned. Every one of them waits for
//! room. A churn thread re-requests queued chunks (each call makes the manager run admission
//! again) while a probe thread times API calls, which take the same lock admission holds.
//! Before the fix, every admission pass walked the whole queue and searched the cached chunks
//! for victims once per waiting chunk: O(queue x cached) under the lock, felt by every call.
//!
//! A second phase times `list_chunks` and `find_chunk` from a thread while another thread
//! downloads and deletes chunks, so the lookup snapshot is replaced all the time (the reader
//! that drops the last reference to a replaced snapshot used to free it inside its call).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chunk_manager::{ChunkManager, ChunkRef, Config, DataChunk};
use chunk_origin::{Origin, content};

use crate::latency::{Histogram, human};

pub struct Admission<'a> {
    pub dir: &'a Path,
    pub budget_chunks: usize,
    pub queued: usize,
    pub seconds: u64,
}

const FILE_BYTES: usize = 4096;

fn chunk(origin: &Origin, index: usize) -> DataChunk {
    let path = format!("c{index}/data");
    origin.insert(&path, content(index as u64, FILE_BYTES));
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(index as u64).to_be_bytes());
    let start = index as u64 * 100;
    DataChunk::new(
        id,
        [1; 32],
        start..start + 100,
        [("data".to_string(), origin.url(&path))].into(),
    )
}

pub fn run(options: Admission<'_>) -> anyhow::Result<serde_json::Value> {
    let origin = Origin::start().context("start the origin")?;
    let chunks: Vec<DataChunk> = (0..options.budget_chunks + options.queued)
        .map(|index| chunk(&origin, index))
        .collect();
    let data_dir = tempfile::tempdir_in(options.dir)?;
    let manager = ChunkManager::open(
        Config::new(data_dir.path())
            .with_disk_budget((options.budget_chunks * FILE_BYTES) as u64)
            .with_fsync(false)
            .with_scrub(0, Duration::from_secs(3600)),
    )?;
    // The budget full of pinned cached chunks: candidates for eviction that never qualify.
    let pins: Vec<ChunkRef> = chunks[..options.budget_chunks]
        .iter()
        .map(|chunk| manager.fetch_blocking(chunk.clone()))
        .collect::<Result<_, _>>()
        .map_err(|error| anyhow::anyhow!("fetch: {error}"))?;
    let waiting = &chunks[options.budget_chunks..];
    manager.assign(waiting.iter().cloned());
    // Let every waiting chunk learn its size (one probe each, where admission lets it).
    manager.wait_idle_blocking();
    let totals = manager.totals();
    println!(
        "admission: {} cached chunks pinned (the whole budget), {} assigned chunks waiting ({} waiting for room, {} queued)",
        pins.len(),
        waiting.len(),
        totals.waiting_for_space,
        totals.queued
    );

    let stop = AtomicBool::new(false);
    let mut status = Histogram::default();
    let mut noop = Histogram::default();
    let churn_calls = std::thread::scope(|scope| {
        let churn = scope.spawn(|| {
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let chunk = &waiting[fastrand::usize(..waiting.len())];
                manager.delete_chunk(*chunk.id());
                manager.download_chunk(chunk.clone());
                calls += 2;
                std::thread::sleep(Duration::from_micros(200));
            }
            calls
        });
        let deadline = Instant::now() + Duration::from_secs(options.seconds);
        while Instant::now() < deadline {
            let chunk = &waiting[fastrand::usize(..waiting.len())];
            let start = Instant::now();
            std::hint::black_box(manager.status(chunk.id()));
            status.record(start.elapsed().as_nanos() as u64);
            let start = Instant::now();
            manager.download_chunk(pins[0].chunk().clone());
            noop.record(start.elapsed().as_nanos() as u64);
            std::thread::sleep(Duration::from_micros(100));
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap_or(0)
    });
    drop(pins);
    manager.shutdown_blocking();
    print_table(
        &format!(
            "API latency while admission re-runs ({churn_calls} churn calls, {} s)",
            options.seconds
        ),
        &[("status", &status), ("download_chunk (no-op)", &noop)],
    );

    let lookups = lookups_under_churn(&origin, options.dir, options.seconds)?;
    Ok(serde_json::json!({
        "admission": {
            "cached_pinned": options.budget_chunks,
            "waiting": options.queued,
            "churn_calls": churn_calls,
            "status": status.summary(),
            "download_chunk_noop": noop.summary(),
        },
        "lookups_under_churn": lookups,
    }))
}

/// 5,000 ready chunks; one thread downloads and deletes 200 others in a loop (each change
/// replaces the lookup snapshot) while this one times `list_chunks` and `find_chunk`.
fn lookups_under_churn(
    origin: &Origin,
    dir: &Path,
    seconds: u64,
) -> anyhow::Result<serde_json::Value> {
    const READY: usize = 5000;
    const CHURN: usize = 200;
    let chunks: Vec<DataChunk> = (100_000..100_000 + READY + CHURN)
        .map(|index| chunk(origin, index))
        .collect();
    let data_dir = tempfile::tempdir_in(dir)?;
    let manager = ChunkManager::open(
        Config::new(data_dir.path())
            .with_fsync(false)
            .with_scrub(0, Duration::from_secs(3600)),
    )?;
    manager.assign(chunks[..READY].iter().cloned());
    manager.wait_idle_blocking();
    let churning = &chunks[READY..];
    let stop = AtomicBool::new(false);
    let mut list = Histogram::default();
    let mut find = Histogram::default();
    let changes = std::thread::scope(|scope| {
        let churn = scope.spawn(|| {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for chunk in churning {
                    manager.download_chunk(chunk.clone());
                }
                manager.wait_idle_blocking();
                for chunk in churning {
                    manager.delete_chunk(*chunk.id());
                }
                manager.wait_idle_blocking();
                rounds += 1;
            }
            rounds * 2 * CHURN as u64
        });
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            let start = Instant::now();
            std::hint::black_box(manager.list_chunks());
            list.record(start.elapsed().as_nanos() as u64);
            let block = 100_000 * 100 + fastrand::u64(..READY as u64 * 100);
            let start = Instant::now();
            std::hint::black_box(manager.find_chunk([1; 32], block));
            find.record(start.elapsed().as_nanos() as u64);
            std::thread::sleep(Duration::from_micros(50));
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap_or(0)
    });
    manager.shutdown_blocking();
    print_table(
        &format!(
            "lookups with {READY} ready chunks while {CHURN} others are downloaded and deleted ({changes} changes, {seconds} s)"
        ),
        &[("list_chunks", &list), ("find_chunk", &find)],
    );
    Ok(serde_json::json!({
        "changes": changes,
        "list_chunks": list.summary(),
        "find_chunk": find.summary(),
    }))
}

fn print_table(title: &str, rows: &[(&str, &Histogram)]) {
    println!("\n{title}:");
    println!("| call | calls | p50 | p99 | p99.9 | max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, histogram) in rows {
        println!(
            "| `{name}` | {} | {} | {} | {} | {} |",
            histogram.count(),
            human(histogram.quantile(0.5)),
            human(histogram.quantile(0.99)),
            human(histogram.quantile(0.999)),
            human(histogram.max()),
        );
    }
    println!(
        "reproduce: cargo run --release -p chunk-bench -- admission --dir /tmp (a release build)"
    );
}
