//! Startup and idle memory: `ChunkManager::open` on a data directory of 5,000 committed chunks
//! of 3 files (made by `populate`), timed several times in this fresh process; the memory
//! after the first open, once idle, is the idle footprint.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chunk_manager::{ChunkManager, Config};

use crate::proc;

pub struct Startup<'a> {
    pub dir: &'a Path,
    pub chunks: usize,
    pub repeat: usize,
    /// Drop the kernel's page, dentry and inode caches before the first open (root only;
    /// affects the whole machine for a moment).
    pub cold: bool,
}

pub fn run(startup: Startup<'_>) -> anyhow::Result<serde_json::Value> {
    let rss_start = proc::rss_kib();
    let mut warm = Vec::new();
    let mut cold = None;
    let (mut rss_idle, mut peak_after_open) = (0, 0);
    for round in 0..startup.repeat.max(1) {
        let dropped = round == 0 && startup.cold;
        if dropped {
            drop_caches()?;
        }
        let start = Instant::now();
        let manager = ChunkManager::open(Config::new(startup.dir)).context("open")?;
        let elapsed = start.elapsed();
        let adopted = manager.startup_report().adopted;
        if adopted != startup.chunks {
            bail!("adopted {adopted} chunks, expected {}", startup.chunks);
        }
        if round == 0 {
            manager.wait_idle_blocking();
            peak_after_open = proc::peak_rss_kib();
            std::thread::sleep(Duration::from_millis(300));
            rss_idle = proc::rss_kib();
        }
        manager.shutdown_blocking();
        drop(manager);
        if dropped {
            cold = Some(elapsed);
        } else {
            warm.push(elapsed);
        }
    }
    warm.sort();
    let median = warm.get(warm.len() / 2).copied().unwrap_or_default();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let met = |d: Duration| {
        if d < Duration::from_millis(200) {
            "met"
        } else {
            "NOT met"
        }
    };
    println!(
        "startup: open on {} chunks of 3 files; load average {}",
        startup.chunks,
        proc::load_average()
    );
    println!(
        "  warm cache: median {:.1} ms over {} opens (min {:.1}, max {:.1}) (target 200 ms: {})",
        ms(median),
        warm.len(),
        warm.first().map(|d| ms(*d)).unwrap_or(0.0),
        warm.last().map(|d| ms(*d)).unwrap_or(0.0),
        met(median)
    );
    if let Some(cold) = cold {
        println!(
            "  cold cache (after dropping the kernel's caches): {:.1} ms ({})",
            ms(cold),
            met(cold)
        );
    }
    println!(
        "memory idle with {} chunks: RSS {} (peak so far {}; {} before open) (target 64 MB: {})",
        startup.chunks,
        proc::mib(rss_idle),
        proc::mib(peak_after_open),
        proc::mib(rss_start),
        if rss_idle * 1024 < 64_000_000 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(serde_json::json!({
        "chunks": startup.chunks,
        "warm_ms": warm.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        "cold_ms": cold.map(ms),
        "rss_kib": {"start": rss_start, "idle": rss_idle, "peak": peak_after_open},
    }))
}

fn drop_caches() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .context("run sync")?;
    if !status.success() {
        bail!("sync failed");
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .context("drop the kernel's caches (needs root)")
}
