//! One chunk-manager run of the throughput benchmark, in its own process (so its peak memory
//! is its own): download the file set from the origin into a fresh data directory, with the
//! latency probe calling the API meanwhile. Prints one JSON line.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chunk_manager::{ChunkManager, ChunkState, Config};

use crate::files::{MB, PlannedChunk};
use crate::{fixture, probe, proc};

/// What to download and how.
pub struct Run<'a> {
    pub chunks: &'a [PlannedChunk],
    pub base_url: &'a str,
    pub data_dir: &'a Path,
    pub fsync: bool,
    /// Call the API from another thread meanwhile, every `pace`.
    pub probe: Option<Duration>,
}

pub fn run(run: Run<'_>) -> anyhow::Result<serde_json::Value> {
    let descriptions: Vec<_> = run
        .chunks
        .iter()
        .map(|chunk| chunk.describe(run.base_url))
        .collect();
    let bytes: u64 = run.chunks.iter().map(PlannedChunk::size).sum();
    // Lookups spread over both datasets and the whole block span: misses until chunks land.
    let mut rng = fastrand::Rng::with_seed(11);
    let span = (run.chunks.len() as u64).div_ceil(2) * fixture::BLOCKS;
    let queries: Vec<_> = (0..1024)
        .map(|_| (fixture::dataset_id(rng.usize(..2)), rng.u64(..span.max(1))))
        .collect();

    let rss_start = proc::rss_kib();
    let config = Config::new(run.data_dir).with_fsync(run.fsync);
    let downloads = config.max_concurrent_downloads;
    let files = config.max_concurrent_files;
    let opened = Instant::now();
    let manager = ChunkManager::open(config).context("open the chunk manager")?;
    let open_time = opened.elapsed();
    let rss_open = proc::rss_kib();

    let stop = AtomicBool::new(false);
    let (elapsed, report) = std::thread::scope(|scope| {
        let prober = run.probe.map(|pace| {
            let (manager, queries, requests, stop) = (&manager, &queries, &descriptions, &stop);
            std::thread::Builder::new()
                .name("probe".to_string())
                .spawn_scoped(scope, move || {
                    probe::run(manager, queries, requests, pace, stop)
                })
        });
        let start = Instant::now();
        for description in &descriptions {
            manager.download_chunk(description.clone());
        }
        manager.wait_idle_blocking();
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let report = match prober {
            Some(Ok(handle)) => handle.join().ok(),
            _ => None,
        };
        (elapsed, report)
    });
    let peak_rss = proc::peak_rss_kib();
    let rss_end = proc::rss_kib();

    let ready = manager.list_chunks().len();
    let failed: Vec<String> = manager
        .statuses()
        .into_iter()
        .filter_map(|status| match status.state {
            ChunkState::Failed { error, .. } => Some(error.to_string()),
            _ => None,
        })
        .collect();
    manager.shutdown_blocking();
    if ready != descriptions.len() || !failed.is_empty() {
        bail!(
            "only {ready} of {} chunks ready; failures: {failed:?}",
            descriptions.len()
        );
    }
    let seconds = elapsed.as_secs_f64();
    Ok(serde_json::json!({
        "tool": if run.fsync { "chunk-manager" } else { "chunk-manager-nofsync" },
        "chunks": descriptions.len(),
        "bytes": bytes,
        "seconds": seconds,
        "mb_per_s": bytes as f64 / MB as f64 / seconds,
        "open_ms": open_time.as_secs_f64() * 1e3,
        "concurrency": {"chunks": downloads, "files_per_chunk": files},
        "rss_kib": {"start": rss_start, "open": rss_open, "end": rss_end, "peak": peak_rss},
        "latency": report.map(|report| report.to_json()),
    }))
}
