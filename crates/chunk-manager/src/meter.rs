//! Metrics through the [`metrics`] facade: counters and histograms recorded as events happen.
//!
//! # Overview
//!
//! The library records; the embedding program chooses the exporter (the daemon installs a
//! Prometheus recorder). With no recorder installed every call is a no-op. Gauges that
//! describe the current state (chunks by state, bytes used) are not kept here: they are read
//! from [`crate::ChunkManager::totals`] when scraped, so they can never drift.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `chunk_manager_download_bytes_total` | counter | |
//! | `chunk_manager_files_downloaded_total` | counter | |
//! | `chunk_manager_chunks_downloaded_total` | counter | |
//! | `chunk_manager_download_duration_seconds` | histogram | |
//! | `chunk_manager_download_failures_total` | counter | `kind` |
//! | `chunk_manager_download_retries_total` | counter | `kind` |
//! | `chunk_manager_chunks_deleted_total` | counter | |
//! | `chunk_manager_deletion_ref_wait_seconds` | histogram | |
//! | `chunk_manager_disk_failures_total` | counter | |
//! | `chunk_manager_rejected_total` | counter | `kind` |
//! | `chunk_manager_chunks_evicted_total` | counter | |
//! | `chunk_manager_scrub_bytes_total` | counter | |
//! | `chunk_manager_scrub_chunks_total` | counter | |
//! | `chunk_manager_scrub_mismatches_total` | counter | |
//! | `chunk_manager_scrub_passes_total` | counter | |
//!
//! # Concurrency
//!
//! Start times live in two small maps behind a `std::sync::Mutex`, touched for O(1) steps
//! only (events are emitted under the table lock; no IO happens under either).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use metrics::{counter, histogram};

use crate::chunk::ChunkId;
use crate::event::Event;

/// Names of the metrics, for exporters that describe them.
pub mod names {
    /// Bytes received from origins, counted as they arrive (including bytes of attempts that
    /// were later thrown away).
    pub const DOWNLOAD_BYTES: &str = "chunk_manager_download_bytes_total";
    /// Files downloaded completely.
    pub const FILES_DOWNLOADED: &str = "chunk_manager_files_downloaded_total";
    /// Chunks downloaded and committed.
    pub const CHUNKS_DOWNLOADED: &str = "chunk_manager_chunks_downloaded_total";
    /// Seconds from a chunk's download start to its commit.
    pub const DOWNLOAD_DURATION: &str = "chunk_manager_download_duration_seconds";
    /// Chunks whose download failed, by error kind.
    pub const DOWNLOAD_FAILURES: &str = "chunk_manager_download_failures_total";
    /// File attempts that failed and were tried again, by error kind.
    pub const DOWNLOAD_RETRIES: &str = "chunk_manager_download_retries_total";
    /// Chunks whose files were removed from disk.
    pub const CHUNKS_DELETED: &str = "chunk_manager_chunks_deleted_total";
    /// Seconds a deleted chunk waited for its last ref to drop before its files went.
    pub const DELETION_REF_WAIT: &str = "chunk_manager_deletion_ref_wait_seconds";
    /// Disk operations (commit, removal) that failed.
    pub const DISK_FAILURES: &str = "chunk_manager_disk_failures_total";
    /// Requests refused as invalid, by error kind.
    pub const REJECTED: &str = "chunk_manager_rejected_total";
    /// Cached chunks evicted to make room in the disk budget.
    pub const CHUNKS_EVICTED: &str = "chunk_manager_chunks_evicted_total";
    /// Bytes of committed files the scrub has read and hashed.
    pub const SCRUB_BYTES: &str = "chunk_manager_scrub_bytes_total";
    /// Chunks the scrub has checked completely.
    pub const SCRUB_CHUNKS: &str = "chunk_manager_scrub_chunks_total";
    /// Chunks the scrub found not matching their manifests (then hidden and downloaded again).
    pub const SCRUB_MISMATCHES: &str = "chunk_manager_scrub_mismatches_total";
    /// Passes of the scrub over every ready chunk.
    pub const SCRUB_PASSES: &str = "chunk_manager_scrub_passes_total";
}

/// Turns events into metrics. One per manager.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    download_started: Mutex<HashMap<ChunkId, Instant>>,
    waiting_for_refs: Mutex<HashMap<ChunkId, Instant>>,
}

impl Meter {
    pub(crate) fn record(&self, event: &Event) {
        match event {
            Event::DownloadStarted { chunk } => {
                lock(&self.download_started).insert(*chunk, Instant::now());
            }
            Event::FileDownloaded { .. } => counter!(names::FILES_DOWNLOADED).increment(1),
            Event::Retrying { error, .. } => {
                counter!(names::DOWNLOAD_RETRIES, "kind" => error.kind()).increment(1);
            }
            Event::ChunkReady { chunk, .. } => {
                counter!(names::CHUNKS_DOWNLOADED).increment(1);
                if let Some(started) = lock(&self.download_started).remove(chunk) {
                    histogram!(names::DOWNLOAD_DURATION).record(started.elapsed());
                }
            }
            Event::DownloadFailed { chunk, error, .. } => {
                counter!(names::DOWNLOAD_FAILURES, "kind" => error.kind()).increment(1);
                lock(&self.download_started).remove(chunk);
            }
            Event::WaitingForRefs { chunk } => {
                // A chunk revived while waiting and deleted again later restarts the clock.
                lock(&self.waiting_for_refs).insert(*chunk, Instant::now());
            }
            Event::ChunkDeleted { chunk } => {
                counter!(names::CHUNKS_DELETED).increment(1);
                lock(&self.download_started).remove(chunk);
                if let Some(since) = lock(&self.waiting_for_refs).remove(chunk) {
                    histogram!(names::DELETION_REF_WAIT).record(since.elapsed());
                }
            }
            Event::Rejected { error, .. } => {
                counter!(names::REJECTED, "kind" => error.kind()).increment(1);
            }
            Event::IoFailed { .. } => counter!(names::DISK_FAILURES).increment(1),
            Event::BudgetExceeded { chunk, .. } => {
                // The download did not start after all; it starts again when space is free.
                lock(&self.download_started).remove(chunk);
            }
            Event::Evicted { .. } => counter!(names::CHUNKS_EVICTED).increment(1),
            Event::StorageUsed { .. } | Event::Shutdown | Event::Corrupt { .. } => {}
        }
    }

    /// Counts bytes as they arrive from an origin.
    pub(crate) fn downloaded(bytes: u64) {
        counter!(names::DOWNLOAD_BYTES).increment(bytes);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
