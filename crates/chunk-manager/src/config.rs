//! The manager's configuration: production defaults, one field per knob.

use std::path::PathBuf;
use std::time::Duration;

/// One tebibyte, the default disk budget.
pub const TIB: u64 = 1 << 40;

/// Configuration of a [`ChunkManager`](crate::ChunkManager).
///
/// [`Config::new`] gives production defaults; every field is public and has a chainable
/// `with_*` setter.
///
/// ```
/// use std::time::Duration;
/// use chunk_manager::Config;
/// let config = Config::new("/var/lib/chunks")
///     .with_disk_budget(500 << 30)
///     .with_max_concurrent_downloads(8)
///     .with_read_timeout(Duration::from_secs(20));
/// assert_eq!(config.disk_budget, 500 << 30);
/// assert!(config.fsync);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The directory that holds the chunks, the lock and temporary data. Created if missing.
    pub data_dir: PathBuf,
    /// The most bytes the committed chunks plus the downloads in flight may take. Default 1 TiB.
    pub disk_budget: u64,
    /// How many chunks download at once. Default 4.
    pub max_concurrent_downloads: usize,
    /// How many files of one chunk download at once. Default 4.
    pub max_concurrent_files: usize,
    /// How many times one file is retried after a retryable failure before its chunk fails.
    /// Default 5.
    pub retries: u32,
    /// The first retry waits up to this long (with full jitter); each retry doubles it.
    /// Default 200 ms.
    pub retry_base_delay: Duration,
    /// The longest wait between retries. Default 10 s.
    pub retry_max_delay: Duration,
    /// How long establishing a connection may take. Default 10 s.
    pub connect_timeout: Duration,
    /// How long the origin may stay silent (no header, no body byte) before the attempt fails.
    /// There is deliberately no total deadline: a large file on a slow link is fine as long as
    /// bytes keep coming. Default 30 s.
    pub read_timeout: Duration,
    /// Whether files, manifests and directories are fsynced before a chunk is committed.
    /// Turning it off is only safe where a power loss may lose data. Default on.
    pub fsync: bool,
    /// How many filesystem operations (removals, tombstones) run at once. Default 16.
    pub max_concurrent_io: usize,
    /// Worker threads of the manager's own runtime. Default 2.
    pub worker_threads: usize,
    /// How many events a slow subscriber may fall behind before it misses some. Default 4096.
    pub event_capacity: usize,
}

impl Config {
    /// Production defaults for a manager keeping its data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            disk_budget: TIB,
            max_concurrent_downloads: 4,
            max_concurrent_files: 4,
            retries: 5,
            retry_base_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            fsync: true,
            max_concurrent_io: 16,
            worker_threads: 2,
            event_capacity: 4096,
        }
    }

    /// Sets [`Config::disk_budget`].
    pub fn with_disk_budget(mut self, bytes: u64) -> Self {
        self.disk_budget = bytes;
        self
    }

    /// Sets [`Config::max_concurrent_downloads`] (at least 1).
    pub fn with_max_concurrent_downloads(mut self, chunks: usize) -> Self {
        self.max_concurrent_downloads = chunks.max(1);
        self
    }

    /// Sets [`Config::max_concurrent_files`] (at least 1).
    pub fn with_max_concurrent_files(mut self, files: usize) -> Self {
        self.max_concurrent_files = files.max(1);
        self
    }

    /// Sets [`Config::retries`].
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets [`Config::retry_base_delay`] and [`Config::retry_max_delay`].
    pub fn with_retry_delays(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base_delay = base;
        self.retry_max_delay = max.max(base);
        self
    }

    /// Sets [`Config::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`Config::read_timeout`].
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets [`Config::fsync`].
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Sets [`Config::max_concurrent_io`] (at least 1).
    pub fn with_max_concurrent_io(mut self, operations: usize) -> Self {
        self.max_concurrent_io = operations.max(1);
        self
    }

    /// Sets [`Config::worker_threads`] (at least 1).
    pub fn with_worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads.max(1);
        self
    }

    /// Sets [`Config::event_capacity`] (at least 16).
    pub fn with_event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events.max(16);
        self
    }
}
