//! Reconcile under churn: a random sequence of download and delete calls over a few hundred
//! chunks, paced so that deletes find chunks queued, downloading and on disk. Measures the time
//! to quiescence after the last call, how fast a cancelled download stops (its partial files
//! removed and the chunk forgotten), and the bytes downloaded that ended up deleted (wasted).
//!
//! The origin is the in-process one: it counts the bytes it serves and the requests per file,
//! which the wasted-bytes accounting needs. It can be throttled (pieces with pauses between
//! them, like a remote origin), so that downloads last long enough for deletes to find them
//! running.
//!
//! Bytes are accounted so: every byte served belongs either to a download that ended with its
//! chunk committed and wanted (counted by the ✅ events), or to one that did not (wasted:
//! cancelled, or completed after its delete arrived). Bytes of chunks that were committed,
//! then deleted by a later call, are the caller's churn, reported apart.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chunk_manager::{ChunkManager, ChunkState, Config, DataChunk, Event};
use tokio::sync::broadcast::error::RecvError;

use crate::files::MB;
use crate::latency::{Histogram, human};
use crate::{fixture, proc};

pub struct Reconcile<'a> {
    pub dir: &'a Path,
    pub chunks: usize,
    pub calls: usize,
    pub file_kib: usize,
    pub max_gap: Duration,
    pub seed: u64,
    /// Serve files in pieces of this many bytes with `origin_delay` between them (0: at once).
    pub origin_piece: usize,
    pub origin_delay: Duration,
}

/// What a delete found, read from the chunk's status right after the call (both under the
/// manager's lock, so nothing happens in between that matters).
#[derive(Debug, Clone, Copy, PartialEq)]
enum DeleteHit {
    /// Not requested since the last delete (or ever): nothing to do.
    Unknown,
    /// Queued: forgotten at once, nothing to cancel.
    Queued,
    /// A download was running; it had written this many bytes.
    Running { bytes_done: u64 },
    /// Committed (or being removed): hidden at once.
    OnDisk,
}

#[derive(Default)]
struct EventCounts {
    started: HashMap<usize, u64>,
    ready_bytes: u64,
    ready: u64,
    lagged: u64,
}

pub fn run(reconcile: Reconcile<'_>) -> anyhow::Result<serde_json::Value> {
    let origin = chunk_origin::Origin::start().context("start the origin")?;
    let file_size = reconcile.file_kib * 1024;
    let bodies: Vec<_> = (0..fixture::FILE_NAMES.len())
        .map(|n| chunk_origin::content(n as u64, file_size))
        .collect();
    let path_of = |chunk: usize, name: &str| format!("r{chunk}/{name}");
    let descriptions: Vec<DataChunk> = (0..reconcile.chunks)
        .map(|chunk| {
            let files = fixture::FILE_NAMES
                .iter()
                .zip(&bodies)
                .map(|(name, body)| {
                    let path = path_of(chunk, name);
                    origin.insert(&path, body.clone());
                    if !reconcile.origin_delay.is_zero() {
                        let slow = chunk_origin::Fault::Slow {
                            piece: reconcile.origin_piece.max(1),
                            delay: reconcile.origin_delay,
                        };
                        origin.set_fault(&path, Some(slow));
                    }
                    (name.to_string(), origin.url(&path))
                })
                .collect();
            let position = (chunk / 10) as u64;
            DataChunk::new(
                fixture::chunk_id(chunk),
                fixture::dataset_id(chunk % 10),
                position * fixture::BLOCKS..(position + 1) * fixture::BLOCKS,
                files,
            )
        })
        .collect();
    let index_of: HashMap<[u8; 32], usize> = descriptions
        .iter()
        .enumerate()
        .map(|(n, d)| (*d.id(), n))
        .collect();
    let chunk_bytes = (file_size * fixture::FILE_NAMES.len()) as u64;

    let data = tempfile::tempdir_in(reconcile.dir).context("create the data directory")?;
    let manager = ChunkManager::open(Config::new(data.path()).with_event_capacity(1 << 17))
        .context("open the chunk manager")?;
    let mut events = manager.subscribe();
    let pending: Mutex<HashMap<usize, Instant>> = Mutex::new(HashMap::new());
    let lock = |m: &Mutex<HashMap<usize, Instant>>| {
        m.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .into_iter()
            .collect::<Vec<_>>()
    };
    let calls_done = AtomicBool::new(false);
    let mut rng = fastrand::Rng::with_seed(reconcile.seed);
    let mut wanted = vec![false; reconcile.chunks];
    let mut hits: Vec<Vec<DeleteHit>> = vec![Vec::new(); reconcile.chunks];
    let (mut downloads, mut deletes) = (0, 0);

    let started = Instant::now();
    let (calls_time, quiescence, stops, counts, ready) = std::thread::scope(|scope| {
        let counter = scope.spawn(|| {
            let mut counts = EventCounts::default();
            loop {
                match events.blocking_recv() {
                    Ok(Event::DownloadStarted { chunk }) => {
                        if let Some(&n) = index_of.get(&chunk) {
                            *counts.started.entry(n).or_default() += 1;
                        }
                    }
                    Ok(Event::ChunkReady { bytes, .. }) => {
                        counts.ready += 1;
                        counts.ready_bytes += bytes;
                    }
                    Ok(Event::Shutdown) | Err(RecvError::Closed) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => counts.lagged += missed,
                }
            }
            counts
        });
        // Watches cancelled downloads until their chunk is forgotten (stopped, partial files
        // removed), every millisecond.
        let watcher = scope.spawn(|| {
            let mut stops = Histogram::default();
            loop {
                let finished = calls_done.load(Ordering::Acquire);
                let watched = lock(&pending);
                if finished && watched.is_empty() {
                    break;
                }
                for (chunk, since) in watched {
                    let gone = manager.status(descriptions[chunk].id()).is_none();
                    if gone {
                        let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
                        if pending.get(&chunk) == Some(&since) {
                            pending.remove(&chunk);
                            stops.record(since.elapsed().as_nanos() as u64);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            stops
        });

        for _ in 0..reconcile.calls {
            let chunk = rng.usize(..reconcile.chunks);
            if rng.bool() {
                // Re-requested: no longer a cancellation to time.
                pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&chunk);
                manager.download_chunk(descriptions[chunk].clone());
                wanted[chunk] = true;
                downloads += 1;
            } else {
                let id = *descriptions[chunk].id();
                let at = Instant::now();
                manager.delete_chunk(id);
                let hit = match manager.status(&id).map(|status| status.state) {
                    None if wanted[chunk] => DeleteHit::Queued,
                    None => DeleteHit::Unknown,
                    Some(ChunkState::Downloading { bytes_done, .. }) => {
                        DeleteHit::Running { bytes_done }
                    }
                    Some(_) => DeleteHit::OnDisk,
                };
                if matches!(hit, DeleteHit::Running { .. }) {
                    pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(chunk, at);
                }
                hits[chunk].push(hit);
                wanted[chunk] = false;
                deletes += 1;
            }
            std::thread::sleep(reconcile.max_gap.mul_f64(rng.f64()));
        }
        let calls_time = started.elapsed();
        let last_call = Instant::now();
        manager.wait_idle_blocking();
        let quiescence = last_call.elapsed();
        let ready: HashSet<[u8; 32]> = manager.list_chunks().into_iter().collect();
        calls_done.store(true, Ordering::Release);
        let stops = watcher.join().unwrap_or_default();
        manager.shutdown_blocking();
        let counts = counter.join().unwrap_or_default();
        (calls_time, quiescence, stops, counts, ready)
    });
    let total_time = started.elapsed();

    // The final state: exactly the chunks whose last call was a download are ready.
    let expected: HashSet<[u8; 32]> = (0..reconcile.chunks)
        .filter(|&n| wanted[n])
        .map(|n| *descriptions[n].id())
        .collect();
    if ready != expected {
        bail!(
            "final state differs: {} ready, {} wanted",
            ready.len(),
            expected.len()
        );
    }
    let all_hits = hits.iter().flatten();
    let hit_unknown = all_hits
        .clone()
        .filter(|h| **h == DeleteHit::Unknown)
        .count();
    let hit_queued = all_hits
        .clone()
        .filter(|h| **h == DeleteHit::Queued)
        .count();
    let hit_on_disk = all_hits
        .clone()
        .filter(|h| **h == DeleteHit::OnDisk)
        .count();
    let running: Vec<u64> = all_hits
        .filter_map(|h| match h {
            DeleteHit::Running { bytes_done } => Some(*bytes_done),
            _ => None,
        })
        .collect();
    let done_at_delete: u64 = running.iter().sum();

    let served = origin.bytes_served();
    let needed = expected.len() as u64 * chunk_bytes;
    let wasted = served.saturating_sub(counts.ready_bytes);
    let churn = counts.ready_bytes.saturating_sub(needed);
    // At most every running download that was deleted, whole.
    let waste_bound = running.len() as u64 * chunk_bytes;
    // Chunks that ended deleted and that no delete found downloading or on disk: nothing of
    // theirs may have been fetched.
    let only_queued: Vec<usize> = (0..reconcile.chunks)
        .filter(|&n| !wanted[n] && hits[n].contains(&DeleteHit::Queued))
        .filter(|&n| {
            hits[n]
                .iter()
                .all(|h| matches!(h, DeleteHit::Queued | DeleteHit::Unknown))
        })
        .collect();
    let only_queued_gets: usize = only_queued
        .iter()
        .map(|&n| {
            fixture::FILE_NAMES
                .iter()
                .map(|name| origin.get_count(&path_of(n, name)))
                .sum::<usize>()
        })
        .sum();
    let downloads_started: u64 = counts.started.values().sum();
    let mb = |bytes: u64| bytes as f64 / MB as f64;

    let origin_speed = if reconcile.origin_delay.is_zero() {
        "unthrottled".to_string()
    } else {
        format!(
            "throttled to {} KiB every {:?} per file",
            reconcile.origin_piece / 1024,
            reconcile.origin_delay
        )
    };
    let pace = if reconcile.max_gap.is_zero() {
        "all at once".to_string()
    } else {
        format!("a call every 0-{:?}", reconcile.max_gap)
    };
    println!(
        "reconcile: {} calls ({downloads} downloads, {deletes} deletes) over {} chunks of 3 x {} KiB, {pace} ({:.1?} of calls); in-process origin, {origin_speed}; load average {}",
        reconcile.calls,
        reconcile.chunks,
        reconcile.file_kib,
        calls_time,
        proc::load_average(),
    );
    println!(
        "  deletes found the chunk: {hit_unknown} not requested, {hit_queued} queued, {} downloading, {hit_on_disk} on disk",
        running.len()
    );
    println!(
        "  quiescence after the last call: {:.1?} (whole run {:.1?}); {downloads_started} downloads started, {} committed wanted",
        quiescence, total_time, counts.ready
    );
    if stops.count() == 0 {
        println!("  cancelled downloads: none (no delete found a download running)");
    } else {
        println!(
            "  cancelled downloads stopped and cleaned up (chunk forgotten): {} timed, p50 {}, p99 {}, max {} (target 50 ms: {})",
            stops.count(),
            human(stops.quantile(0.5)),
            human(stops.quantile(0.99)),
            human(stops.max()),
            if stops.max() <= 50_000_000 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    println!(
        "  bytes served {:.1} MB = {:.1} MB committed for wanted chunks + {:.1} MB wasted; at the end {:.1} MB are needed ({} chunks), {:.1} MB were committed then deleted by later calls (churn)",
        mb(served),
        mb(counts.ready_bytes),
        mb(wasted),
        mb(needed),
        expected.len(),
        mb(churn),
    );
    println!(
        "  wasted {:.1} MB, {:.0} KB per download running when its delete arrived ({}; {:.1} MB of theirs written by then); bound if only those wasted: {:.1} MB ({})",
        mb(wasted),
        if running.is_empty() {
            0.0
        } else {
            wasted as f64 / running.len() as f64 / 1e3
        },
        running.len(),
        mb(done_at_delete),
        mb(waste_bound),
        if wasted <= waste_bound {
            "met"
        } else {
            "NOT met"
        },
    );
    println!(
        "  chunks deleted while queued (never downloading or on disk): {}, files fetched for them: {only_queued_gets} ({})",
        only_queued.len(),
        if only_queued_gets == 0 {
            "none: met"
        } else {
            "NOT met"
        }
    );
    if counts.lagged > 0 {
        println!(
            "  warning: the event counter missed {} events",
            counts.lagged
        );
    }
    Ok(serde_json::json!({
        "calls": reconcile.calls, "downloads": downloads, "deletes": deletes,
        "chunks": reconcile.chunks, "file_kib": reconcile.file_kib,
        "calls_s": calls_time.as_secs_f64(), "quiescence_ms": quiescence.as_secs_f64() * 1e3,
        "origin": {"piece": reconcile.origin_piece, "delay_ms": reconcile.origin_delay.as_secs_f64() * 1e3},
        "max_gap_us": reconcile.max_gap.as_micros() as u64,
        "hits": {"unknown": hit_unknown, "queued": hit_queued, "running": running.len(), "on_disk": hit_on_disk},
        "downloads_started": downloads_started, "committed": counts.ready,
        "cancel_stop": stops.summary(),
        "bytes": {"served": served, "committed_wanted": counts.ready_bytes, "needed": needed,
            "wasted": wasted, "churn": churn, "done_at_delete": done_at_delete,
            "waste_bound": waste_bound},
        "only_queued": {"chunks": only_queued.len(), "gets": only_queued_gets},
    }))
}

pub struct Cancel<'a> {
    pub dir: &'a Path,
    pub count: usize,
    pub file_kib: usize,
    pub origin_piece: usize,
    pub origin_delay: Duration,
    /// Keep the disk busy meanwhile: another thread writes and fsyncs a large file.
    pub disk_load: bool,
}

/// Cancellation latency, one download at a time: start a download from a throttled origin,
/// delete it once it has written bytes, and time until the chunk is forgotten (the download
/// stopped, its partial files removed), while another thread keeps the disk busy.
pub fn cancel(cancel: Cancel<'_>) -> anyhow::Result<serde_json::Value> {
    let origin = chunk_origin::Origin::start().context("start the origin")?;
    let file_size = cancel.file_kib * 1024;
    let bodies: Vec<_> = (0..fixture::FILE_NAMES.len())
        .map(|n| chunk_origin::content(n as u64 + 7, file_size))
        .collect();
    let slow = chunk_origin::Fault::Slow {
        piece: cancel.origin_piece.max(1),
        delay: cancel.origin_delay,
    };
    let descriptions: Vec<DataChunk> = (0..cancel.count)
        .map(|chunk| {
            let files = fixture::FILE_NAMES
                .iter()
                .zip(&bodies)
                .map(|(name, body)| {
                    let path = format!("k{chunk}/{name}");
                    origin.insert(&path, body.clone());
                    origin.set_fault(&path, Some(slow.clone()));
                    (name.to_string(), origin.url(&path))
                })
                .collect();
            DataChunk::new(
                fixture::chunk_id(chunk),
                fixture::dataset_id(0),
                chunk as u64 * fixture::BLOCKS..(chunk as u64 + 1) * fixture::BLOCKS,
                files,
            )
        })
        .collect();
    let data = tempfile::tempdir_in(cancel.dir).context("create the data directory")?;
    let manager = ChunkManager::open(Config::new(data.path())).context("open the chunk manager")?;
    let stop = AtomicBool::new(false);
    let ballast_dir = tempfile::tempdir_in(cancel.dir).context("create the ballast directory")?;

    let (stops, after_delete, ballast) = std::thread::scope(|scope| {
        let loader = cancel.disk_load.then(|| {
            scope.spawn(|| {
                load_disk(&ballast_dir.path().join("ballast"), &stop).unwrap_or_else(|error| {
                    eprintln!("disk load: {error:#}");
                    (0, Duration::ZERO)
                })
            })
        });
        let result = (|| -> anyhow::Result<(Histogram, u64)> {
            let mut stops = Histogram::default();
            let mut after_delete = 0;
            for description in &descriptions {
                let id = *description.id();
                manager.download_chunk(description.clone());
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match manager.status(&id).map(|status| status.state) {
                        Some(ChunkState::Downloading { bytes_done, .. }) if bytes_done > 0 => break,
                        Some(ChunkState::Ready) => bail!("the download ended before its delete"),
                        _ if Instant::now() > deadline => bail!("the download did not start"),
                        _ => std::thread::sleep(Duration::from_micros(200)),
                    }
                }
                let served = origin.bytes_served();
                let start = Instant::now();
                manager.delete_chunk(id);
                while manager.status(&id).is_some() {
                    if start.elapsed() > Duration::from_secs(30) {
                        bail!("the cancelled download did not stop");
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                stops.record(start.elapsed().as_nanos() as u64);
                after_delete += origin.bytes_served().saturating_sub(served);
            }
            Ok((stops, after_delete))
        })();
        stop.store(true, Ordering::Relaxed);
        let ballast = loader
            .and_then(|loader| loader.join().ok())
            .unwrap_or((0, Duration::ZERO));
        result.map(|(stops, after)| (stops, after, ballast))
    })?;
    manager.wait_idle_blocking();
    let leftovers = std::fs::read_dir(data.path().join("tmp"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    manager.shutdown_blocking();

    let (ballast_bytes, ballast_time) = ballast;
    let load = if cancel.disk_load {
        format!(
            "while another thread wrote {:.0} MB/s with an fsync every 32 MiB",
            ballast_bytes as f64 / MB as f64 / ballast_time.as_secs_f64().max(1e-9)
        )
    } else {
        "disk idle".to_string()
    };
    let met = stops.max() <= 50_000_000;
    println!(
        "cancellation: {} downloads (3 x {} KiB, origin throttled to {} KiB every {:?} per file) deleted mid-transfer, {load}; load average {}",
        cancel.count,
        cancel.file_kib,
        cancel.origin_piece / 1024,
        cancel.origin_delay,
        proc::load_average()
    );
    println!(
        "  delete to chunk forgotten (stopped, partial files removed): p50 {}, p90 {}, p99 {}, max {} (target 50 ms: {}); {:.0} KB served after each delete on average; {leftovers} temporary entries left",
        human(stops.quantile(0.5)),
        human(stops.quantile(0.9)),
        human(stops.quantile(0.99)),
        human(stops.max()),
        if met { "met" } else { "NOT met" },
        after_delete as f64 / cancel.count.max(1) as f64 / 1e3,
    );
    Ok(serde_json::json!({
        "count": cancel.count,
        "disk_load_mb_per_s": ballast_bytes as f64 / MB as f64 / ballast_time.as_secs_f64().max(1e-9),
        "stop": stops.summary(),
        "served_after_delete_bytes": after_delete,
        "temporary_leftovers": leftovers,
    }))
}

/// Writes a file in 1 MiB blocks with an fsync every 32 MiB, starting over at 1 GiB, until
/// `stop`. Returns the bytes written and the time taken.
fn load_disk(path: &Path, stop: &AtomicBool) -> anyhow::Result<(u64, Duration)> {
    use std::io::{Seek, Write};
    let block = chunk_origin::content(99, 1 << 20);
    let mut file =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let start = Instant::now();
    let (mut total, mut in_file) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        file.write_all(&block)?;
        total += block.len() as u64;
        in_file += block.len() as u64;
        if in_file % (32 << 20) == 0 {
            file.sync_data()?;
        }
        if in_file >= 1 << 30 {
            file.set_len(0)?;
            file.rewind()?;
            in_file = 0;
        }
    }
    Ok((total, start.elapsed()))
}
