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
    /// How `s3://bucket/key` URLs are reached: endpoint, region, credentials. Default: AWS,
    /// with settings and credentials from the standard `AWS_*` environment variables.
    pub s3: S3Config,
    /// How `gs://bucket/key` URLs are reached. Default: Google Cloud Storage, with
    /// credentials from the standard `GOOGLE_*` environment variables.
    pub gcs: GcsConfig,
    /// How `az://container/key` URLs (also `azure://`, `abfs://`, `abfss://`) are reached.
    /// Default: Azure Blob Storage, with the account and credentials from the standard
    /// `AZURE_*` environment variables.
    pub azure: AzureConfig,
    /// Whether `file:///path` URLs may be downloaded. Off by default: whoever can send a chunk
    /// description could otherwise copy any file the process can read into the data
    /// directory.
    pub allow_file_urls: bool,
    /// Download slots beyond [`Config::max_concurrent_downloads`] that only downloads for
    /// queries ([`ChunkManager::fetch`](crate::ChunkManager::fetch)) may use, so a query never
    /// waits for a slot behind background downloads. Default 2.
    pub fetch_slots: usize,
    /// How fast the background scrub re-reads committed chunks to check them against their
    /// manifests, in bytes per second; 0 turns it off. Default 32 MiB/s (a full pass over
    /// 1 TiB takes about nine hours).
    pub scrub_bytes_per_second: u64,
    /// The pause between two scrub passes. Default 1 hour.
    pub scrub_interval: Duration,
    /// Free space kept on the data directory's filesystem, the second budget (see the
    /// README's Semantics): a download starts writing only if its bytes fit in the free space
    /// minus what running downloads still have to write minus this margin. The margin used is
    /// at most 5% of the filesystem's size, so that a small disk is not blocked entirely.
    /// Default 256 MiB.
    pub min_free_bytes: u64,
    /// While a download waits for free space on the filesystem, how often the free space is
    /// read again (space freed by another process changes nothing the manager sees). No timer
    /// runs while nothing waits. Default 1 s.
    pub disk_space_poll: Duration,
    /// The tokio runtime the manager runs its background work on: its reconciler, jobs and
    /// timers (retry backoffs, the free-space poll, the scrub). `None` (the default): a
    /// multi-threaded runtime of its own, of [`Config::worker_threads`] threads, on a thread of
    /// its own, so that the manager works from plain threads and from any runtime.
    ///
    /// With a runtime given, its clock drives the manager's timers, so a test on a paused
    /// clock (`#[tokio::test(start_paused = true)]`) runs the backoffs without waiting. Stop
    /// such a manager with [`ChunkManager::shutdown`](crate::ChunkManager::shutdown) (awaited):
    /// [`shutdown_blocking`](crate::ChunkManager::shutdown_blocking) and dropping the manager
    /// only ask it to stop (waiting could deadlock the runtime that has to do the stopping),
    /// and the directory's lock is released once its background task has ended.
    pub runtime: Option<tokio::runtime::Handle>,
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
            s3: S3Config::default(),
            gcs: GcsConfig::default(),
            azure: AzureConfig::default(),
            allow_file_urls: false,
            fetch_slots: 2,
            scrub_bytes_per_second: 32 << 20,
            scrub_interval: Duration::from_secs(3600),
            min_free_bytes: 256 << 20,
            disk_space_poll: Duration::from_secs(1),
            runtime: None,
        }
    }

    /// Sets [`Config::runtime`]: the manager runs its background work on `runtime` instead of
    /// a runtime of its own.
    ///
    /// # Example
    ///
    /// ```
    /// use chunk_manager::{ChunkManager, Config};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// // The manager's tasks and timers run on this runtime (in a test, one whose clock may be
    /// // paused): no thread of its own.
    /// let config = Config::new(dir.path()).with_runtime(tokio::runtime::Handle::current());
    /// let manager = ChunkManager::open(config)?;
    /// assert!(manager.list_chunks().is_empty());
    /// // Await the shutdown: the runtime it runs on does the stopping.
    /// manager.shutdown().await;
    /// assert!(manager.health().is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Sets [`Config::scrub_bytes_per_second`] and [`Config::scrub_interval`].
    pub fn with_scrub(mut self, bytes_per_second: u64, interval: Duration) -> Self {
        self.scrub_bytes_per_second = bytes_per_second;
        self.scrub_interval = interval;
        self
    }

    /// Sets [`Config::min_free_bytes`].
    pub fn with_min_free_bytes(mut self, bytes: u64) -> Self {
        self.min_free_bytes = bytes;
        self
    }

    /// Sets [`Config::disk_space_poll`] (at least 1 ms).
    pub fn with_disk_space_poll(mut self, interval: Duration) -> Self {
        self.disk_space_poll = interval.max(Duration::from_millis(1));
        self
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

    /// Sets [`Config::s3`].
    pub fn with_s3(mut self, s3: S3Config) -> Self {
        self.s3 = s3;
        self
    }

    /// Sets [`Config::gcs`].
    pub fn with_gcs(mut self, gcs: GcsConfig) -> Self {
        self.gcs = gcs;
        self
    }

    /// Sets [`Config::azure`].
    pub fn with_azure(mut self, azure: AzureConfig) -> Self {
        self.azure = azure;
        self
    }

    /// Sets [`Config::allow_file_urls`].
    pub fn with_file_urls(mut self, allow: bool) -> Self {
        self.allow_file_urls = allow;
        self
    }

    /// Sets [`Config::fetch_slots`].
    pub fn with_fetch_slots(mut self, slots: usize) -> Self {
        self.fetch_slots = slots;
        self
    }
}

/// How `s3://bucket/key` URLs are reached. Unset fields fall back to the standard `AWS_*`
/// environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...), then to AWS's defaults.
///
/// ```
/// use chunk_manager::{Config, S3Config};
/// let config = Config::new("/var/lib/chunks").with_s3(
///     S3Config::default()
///         .with_endpoint("http://127.0.0.1:9000")
///         .with_region("eu-central-1")
///         .with_credentials("AKIDEXAMPLE", "hunter2")
///         .with_path_style(true),
/// );
/// assert!(!format!("{config:?}").contains("hunter2"), "secrets are not printed");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Config {
    /// The endpoint, for S3-compatible stores (MinIO, Ceph, R2, ...). `http://` endpoints are
    /// allowed. Default: AWS.
    pub endpoint: Option<String>,
    /// The region. Default `us-east-1`.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key. Never printed.
    pub secret_access_key: Option<String>,
    /// A session token, for temporary credentials. Never printed.
    pub session_token: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted ones
    /// (`bucket.endpoint/key`); most S3-compatible stores need this. Default: virtual-hosted
    /// for AWS, path-style when an endpoint is set.
    pub path_style: Option<bool>,
    /// Send unsigned requests, for public buckets. Default off.
    pub anonymous: bool,
}

impl S3Config {
    /// Sets [`S3Config::endpoint`].
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets [`S3Config::region`].
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the access key id and secret access key.
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret_access_key.into());
        self
    }

    /// Sets [`S3Config::session_token`].
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// Sets [`S3Config::path_style`].
    pub fn with_path_style(mut self, path_style: bool) -> Self {
        self.path_style = Some(path_style);
        self
    }

    /// Sets [`S3Config::anonymous`].
    pub fn with_anonymous(mut self, anonymous: bool) -> Self {
        self.anonymous = anonymous;
        self
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("path_style", &self.path_style)
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// How `gs://bucket/key` URLs are reached. Unset fields fall back to the standard `GOOGLE_*`
/// environment variables (`GOOGLE_SERVICE_ACCOUNT` or `GOOGLE_SERVICE_ACCOUNT_PATH`: a service
/// account file; `GOOGLE_SERVICE_ACCOUNT_KEY`: the key's JSON itself;
/// `GOOGLE_APPLICATION_CREDENTIALS`: application default credentials), then to the metadata
/// server of a Google Cloud machine.
///
/// ```
/// use chunk_manager::{Config, GcsConfig};
/// let config = Config::new("/var/lib/chunks").with_gcs(
///     GcsConfig::default()
///         .with_endpoint("http://127.0.0.1:4443")
///         .with_service_account_key(r#"{"private_key": "hunter2"}"#),
/// );
/// assert!(!format!("{config:?}").contains("hunter2"), "secrets are not printed");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcsConfig {
    /// The service's base URL, for emulators (`http://` allowed). Default:
    /// `https://storage.googleapis.com`.
    pub endpoint: Option<String>,
    /// A service account key, as JSON. Never printed.
    pub service_account_key: Option<String>,
    /// Send unsigned requests, for public buckets (and emulators). Default off.
    pub anonymous: bool,
}

impl GcsConfig {
    /// Sets [`GcsConfig::endpoint`].
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets [`GcsConfig::service_account_key`].
    pub fn with_service_account_key(mut self, key: impl Into<String>) -> Self {
        self.service_account_key = Some(key.into());
        self
    }

    /// Sets [`GcsConfig::anonymous`].
    pub fn with_anonymous(mut self, anonymous: bool) -> Self {
        self.anonymous = anonymous;
        self
    }
}

impl std::fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsConfig")
            .field("endpoint", &self.endpoint)
            .field(
                "service_account_key",
                &self.service_account_key.as_ref().map(|_| "<redacted>"),
            )
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// How `az://container/key` URLs are reached. Unset fields fall back to the standard `AZURE_*`
/// environment variables (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
/// `AZURE_STORAGE_SAS_KEY`, `AZURE_STORAGE_CLIENT_ID` with `AZURE_STORAGE_CLIENT_SECRET` and
/// `AZURE_STORAGE_TENANT_ID`, `AZURE_STORAGE_TOKEN`, `AZURE_STORAGE_USE_EMULATOR`, ...), then
/// to the managed identity of an Azure machine.
///
/// ```
/// use chunk_manager::{AzureConfig, Config};
/// let config = Config::new("/var/lib/chunks").with_azure(
///     AzureConfig::default()
///         .with_endpoint("http://127.0.0.1:10000/devstoreaccount1")
///         .with_credentials("devstoreaccount1", "aHVudGVyMg=="),
/// );
/// assert!(!format!("{config:?}").contains("aHVudGVyMg=="), "secrets are not printed");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AzureConfig {
    /// The blob service's URL, for emulators and sovereign clouds (`http://` allowed); for
    /// Azurite, `http://127.0.0.1:10000/devstoreaccount1`. Default:
    /// `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// The storage account.
    pub account: Option<String>,
    /// The account's access key (base64). Never printed.
    pub access_key: Option<String>,
    /// Use the Azurite emulator: its well-known account and key (unless set) at
    /// `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`). Default off.
    pub use_emulator: bool,
    /// Send unsigned requests, for public containers. Default off.
    pub anonymous: bool,
}

impl AzureConfig {
    /// Sets [`AzureConfig::endpoint`].
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets the storage account and its access key.
    pub fn with_credentials(
        mut self,
        account: impl Into<String>,
        access_key: impl Into<String>,
    ) -> Self {
        self.account = Some(account.into());
        self.access_key = Some(access_key.into());
        self
    }

    /// Sets [`AzureConfig::account`].
    pub fn with_account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }

    /// Sets [`AzureConfig::use_emulator`].
    pub fn with_use_emulator(mut self, use_emulator: bool) -> Self {
        self.use_emulator = use_emulator;
        self
    }

    /// Sets [`AzureConfig::anonymous`].
    pub fn with_anonymous(mut self, anonymous: bool) -> Self {
        self.anonymous = anonymous;
        self
    }
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field("endpoint", &self.endpoint)
            .field("account", &self.account)
            .field(
                "access_key",
                &self.access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("use_emulator", &self.use_emulator)
            .field("anonymous", &self.anonymous)
            .finish()
    }
}
