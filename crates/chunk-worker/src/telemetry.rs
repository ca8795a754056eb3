//! The daemon's Prometheus metrics: the library's counters and histograms (recorded through
//! the `metrics` facade as things happen) plus gauges read from the manager at each scrape.

use std::path::Path;

use anyhow::Context;
use chunk_manager::{ChunkManager, metric_names};
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const CHUNKS: &str = "chunk_manager_chunks";
const BYTES_USED: &str = "chunk_manager_bytes_used";
const BYTES_RESERVED: &str = "chunk_manager_bytes_reserved";
const DISK_BUDGET: &str = "chunk_manager_disk_budget_bytes";
const DISK_FREE: &str = "chunk_manager_disk_free_bytes";
const DOWNLOADS_IN_FLIGHT: &str = "chunk_manager_downloads_in_flight";
const DELETIONS_PENDING: &str = "chunk_manager_deletions_pending_refs";

/// Installs the process-wide Prometheus recorder and describes every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(metric_names::DOWNLOAD_DURATION.to_string()),
            &[
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ],
        )
        .context("histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full(metric_names::DELETION_REF_WAIT.to_string()),
            &[0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0],
        )
        .context("histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("install the metrics recorder")?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(
        chunk_distributed::flight::BYTES_SENT,
        Unit::Bytes,
        "Bytes the Flight service wrote to its connections (results of plan fragments)."
    );
    describe_counter!(
        chunk_distributed::flight::BYTES_RECEIVED,
        Unit::Bytes,
        "Bytes the Flight service read from its connections (plans)."
    );
    describe_gauge!(CHUNKS, "Chunks known to the manager, by state.");
    describe_gauge!(
        BYTES_USED,
        Unit::Bytes,
        "Bytes of committed chunks on disk."
    );
    describe_gauge!(
        BYTES_RESERVED,
        Unit::Bytes,
        "Bytes reserved by downloads in flight."
    );
    describe_gauge!(DISK_BUDGET, Unit::Bytes, "The configured disk budget.");
    describe_gauge!(
        DISK_FREE,
        Unit::Bytes,
        "Free space on the data directory's file system, for unprivileged users."
    );
    describe_gauge!(DOWNLOADS_IN_FLIGHT, "Chunks downloading now.");
    describe_gauge!(
        DELETIONS_PENDING,
        "Deleted chunks whose files wait for queries to drop their refs."
    );
    describe_counter!(
        metric_names::DOWNLOAD_BYTES,
        Unit::Bytes,
        "Bytes received from origins."
    );
    describe_counter!(
        metric_names::FILES_DOWNLOADED,
        "Files downloaded completely."
    );
    describe_counter!(
        metric_names::CHUNKS_DOWNLOADED,
        "Chunks downloaded and committed."
    );
    describe_histogram!(
        metric_names::DOWNLOAD_DURATION,
        Unit::Seconds,
        "Time from a chunk's download start to its commit."
    );
    describe_counter!(
        metric_names::DOWNLOAD_FAILURES,
        "Chunk downloads that failed, by error kind."
    );
    describe_counter!(
        metric_names::DOWNLOAD_RETRIES,
        "File attempts that failed and were retried, by error kind."
    );
    describe_counter!(
        metric_names::CHUNKS_DELETED,
        "Chunks whose files were removed."
    );
    describe_histogram!(
        metric_names::DELETION_REF_WAIT,
        Unit::Seconds,
        "Time a deleted chunk waited for its last ref to drop."
    );
    describe_counter!(
        metric_names::DISK_FAILURES,
        "Disk operations (commit, removal) that failed."
    );
    describe_counter!(
        metric_names::REJECTED,
        "Requests refused as invalid, by error kind."
    );
}

/// Sets the gauges from the manager's current totals and the file system.
pub fn update_gauges(manager: &ChunkManager, data_dir: &Path) {
    let totals = manager.totals();
    for (state, count) in [
        ("ready", totals.ready),
        ("queued", totals.queued),
        ("waiting_for_space", totals.waiting_for_space),
        ("downloading", totals.downloading),
        ("failed", totals.failed),
        ("deleting", totals.deleting),
    ] {
        gauge!(CHUNKS, "state" => state).set(count as f64);
    }
    gauge!(BYTES_USED).set(totals.bytes_committed as f64);
    gauge!(BYTES_RESERVED).set(totals.bytes_reserved as f64);
    gauge!(DISK_BUDGET).set(totals.disk_budget as f64);
    gauge!(DOWNLOADS_IN_FLIGHT).set(totals.downloading as f64);
    gauge!(DELETIONS_PENDING).set(totals.pinned as f64);
    match rustix::fs::statvfs(data_dir) {
        Ok(stat) => gauge!(DISK_FREE).set(stat.f_bavail as f64 * stat.f_frsize as f64),
        Err(error) => {
            tracing::warn!(path = %data_dir.display(), %error, "cannot read free disk space");
        }
    }
}
