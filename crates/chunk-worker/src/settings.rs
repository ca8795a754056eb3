//! Settings shared by the daemon and the CLI: command-line flags, then environment variables,
//! then an optional TOML file, then the defaults, in that order of precedence.
//!
//! Clap resolves flags and environment variables (each option names its variable); values it
//! leaves unset are taken from the TOML file named by `--config`, and what is still unset gets
//! the default documented in `--help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chunk_manager::{AzureConfig, Config, GcsConfig, S3Config};
use serde::Deserialize;

/// Where the data lives when nothing says otherwise.
pub const DEFAULT_DATA_DIR: &str = "chunk-data";
/// Where the daemon listens when nothing says otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// The largest request body the daemon accepts by default (an assignment of 5,000 chunks of
/// 10 files is about 8 MiB).
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;
/// How long a client may take to send a request's headers by default (an idle keep-alive
/// connection counts as a request not yet sent).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may stall between two reads by default.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful shutdown waits for open requests by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once by default (never more than half the file descriptor limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Options of the chunk manager, shared by every command that opens a data directory.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ManagerArgs {
    /// A TOML file with any of the settings below (same names, with `_` for `-`).
    #[arg(long, env = "CHUNK_WORKER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory: chunks, temporary downloads and the lock [default: chunk-data].
    #[arg(long, env = "CHUNK_WORKER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The disk budget: bytes, or a size such as 500GiB or 1TB [default: 1TiB].
    #[arg(long, env = "CHUNK_WORKER_DISK_BUDGET", value_name = "SIZE", value_parser = parse_size)]
    pub disk_budget: Option<u64>,
    /// Chunks downloaded at once [default: 4].
    #[arg(long, env = "CHUNK_WORKER_MAX_DOWNLOADS", value_name = "N")]
    pub max_downloads: Option<usize>,
    /// Files of one chunk downloaded at once [default: 4].
    #[arg(long, env = "CHUNK_WORKER_MAX_FILES", value_name = "N")]
    pub max_files: Option<usize>,
    /// Retries of a failing file before its chunk fails [default: 5].
    #[arg(long, env = "CHUNK_WORKER_RETRIES", value_name = "N")]
    pub retries: Option<u32>,
    /// How long a connection or a read may stall before the attempt fails, such as 30s
    /// (not a deadline for the whole file) [default: 30s].
    #[arg(long, env = "CHUNK_WORKER_READ_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub read_timeout: Option<Duration>,
    /// Whether to fsync files and directories at commit (turn off only for throwaway data)
    /// [default: true].
    #[arg(long, env = "CHUNK_WORKER_FSYNC", value_name = "BOOL")]
    pub fsync: Option<bool>,
    /// The S3 endpoint for s3:// URLs, for S3-compatible stores such as MinIO [default:
    /// AWS_ENDPOINT_URL, else AWS].
    #[arg(long, env = "CHUNK_WORKER_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The S3 region [default: AWS_REGION, else us-east-1].
    #[arg(long, env = "CHUNK_WORKER_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// The S3 access key id [default: AWS_ACCESS_KEY_ID].
    #[arg(
        long,
        env = "CHUNK_WORKER_S3_ACCESS_KEY_ID",
        value_name = "ID",
        hide_env_values = true
    )]
    pub s3_access_key_id: Option<String>,
    /// The S3 secret access key; prefer the variable or the file, since a flag shows in the
    /// process list [default: AWS_SECRET_ACCESS_KEY].
    #[arg(
        long,
        env = "CHUNK_WORKER_S3_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<String>,
    /// The S3 session token, for temporary credentials; prefer the variable or the file
    /// [default: AWS_SESSION_TOKEN].
    #[arg(
        long,
        env = "CHUNK_WORKER_S3_SESSION_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub s3_session_token: Option<String>,
    /// Path-style S3 requests (endpoint/bucket/key), which most S3-compatible stores need
    /// [default: true with an endpoint, false for AWS].
    #[arg(long, env = "CHUNK_WORKER_S3_PATH_STYLE", value_name = "BOOL")]
    pub s3_path_style: Option<bool>,
    /// Unsigned S3 requests, for public buckets [default: false].
    #[arg(long, env = "CHUNK_WORKER_S3_ANONYMOUS", value_name = "BOOL")]
    pub s3_anonymous: Option<bool>,
    /// The Google Cloud Storage base URL for gs:// URLs, for emulators [default: the
    /// service account's, else https://storage.googleapis.com]. Credentials come from
    /// GOOGLE_SERVICE_ACCOUNT (a key file), GOOGLE_SERVICE_ACCOUNT_KEY (its JSON) or
    /// GOOGLE_APPLICATION_CREDENTIALS, else the machine's metadata server.
    #[arg(long, env = "CHUNK_WORKER_GCS_ENDPOINT", value_name = "URL")]
    pub gcs_endpoint: Option<String>,
    /// Unsigned gs:// requests, for public buckets [default: false].
    #[arg(long, env = "CHUNK_WORKER_GCS_ANONYMOUS", value_name = "BOOL")]
    pub gcs_anonymous: Option<bool>,
    /// The Azure blob endpoint for az:// URLs, for Azurite
    /// (http://127.0.0.1:10000/devstoreaccount1) or other clouds [default:
    /// https://ACCOUNT.blob.core.windows.net].
    #[arg(long, env = "CHUNK_WORKER_AZURE_ENDPOINT", value_name = "URL")]
    pub azure_endpoint: Option<String>,
    /// The Azure storage account [default: AZURE_STORAGE_ACCOUNT_NAME].
    #[arg(long, env = "CHUNK_WORKER_AZURE_ACCOUNT", value_name = "NAME")]
    pub azure_account: Option<String>,
    /// The Azure storage account key; prefer the variable or the file, since a flag shows in
    /// the process list [default: AZURE_STORAGE_ACCOUNT_KEY, else AZURE_STORAGE_SAS_KEY, a
    /// service principal (AZURE_STORAGE_CLIENT_ID, _CLIENT_SECRET, _TENANT_ID) or the
    /// machine's managed identity].
    #[arg(
        long,
        env = "CHUNK_WORKER_AZURE_ACCESS_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub azure_access_key: Option<String>,
    /// Use the Azurite emulator (its well-known account, at AZURITE_BLOB_STORAGE_URL, else
    /// http://127.0.0.1:10000) [default: false].
    #[arg(long, env = "CHUNK_WORKER_AZURE_USE_EMULATOR", value_name = "BOOL")]
    pub azure_use_emulator: Option<bool>,
    /// Unsigned az:// requests, for public containers [default: false].
    #[arg(long, env = "CHUNK_WORKER_AZURE_ANONYMOUS", value_name = "BOOL")]
    pub azure_anonymous: Option<bool>,
    /// Allow file:///path URLs (anyone who can send a chunk description could then copy any
    /// file this process can read into the data directory) [default: false].
    #[arg(long, env = "CHUNK_WORKER_ALLOW_FILE_URLS", value_name = "BOOL")]
    pub allow_file_urls: Option<bool>,
}

/// The daemon's own options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// The manager's options.
    #[command(flatten)]
    pub manager: ManagerArgs,
    /// The address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "CHUNK_WORKER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A bearer token that every request other than GET and HEAD must carry (and those too
    /// with --token-reads); prefer the variable or the file, since a flag shows in the
    /// process list [default: none, no auth].
    #[arg(
        long,
        env = "CHUNK_WORKER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Whether GET and HEAD requests need the token too; /healthz and /readyz never do
    /// [default: false].
    #[arg(long, env = "CHUNK_WORKER_TOKEN_READS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub token_reads: Option<bool>,
    /// The largest request body accepted, in bytes or a size such as 16MiB [default: 16MiB].
    #[arg(long, env = "CHUNK_WORKER_MAX_BODY", value_name = "SIZE", value_parser = parse_size)]
    pub max_body: Option<u64>,
    /// The catalog of the datasets' chunks for POST /query: a JSON file or an http(s) URL;
    /// flag or variable only [default: none; PUT /catalog sets one].
    #[arg(long, env = "CHUNK_WORKER_CATALOG", value_name = "FILE|URL")]
    pub catalog: Option<String>,
    /// How long a client may take to send a request's headers, such as 10s; an idle
    /// keep-alive connection is closed after it too [default: 10s].
    #[arg(long, env = "CHUNK_WORKER_HEADER_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub header_timeout: Option<Duration>,
    /// How long a request body may stall between two reads before the request fails
    /// [default: 30s].
    #[arg(long, env = "CHUNK_WORKER_BODY_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub body_timeout: Option<Duration>,
    /// Connections served at once; never more than half the open-file limit (ulimit -n),
    /// the rest being for downloads and chunk files. Further connections wait in the
    /// listen backlog [default: 1024].
    #[arg(long, env = "CHUNK_WORKER_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// How long a shutdown (SIGTERM, SIGINT) waits for open requests before it drops them
    /// and exits [default: 10s].
    #[arg(long, env = "CHUNK_WORKER_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// The query options (flags or variables only).
    #[command(flatten)]
    pub queries: crate::query::QueryOptions,
    /// The fleet's options (--cluster, --worker-id, ...): see `crate::cluster`.
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
    /// Distributed queries (--flight-listen, --cluster-token): see `crate::distributed`.
    #[command(flatten)]
    pub distributed: crate::distributed::DistributedArgs,
}

/// The TOML file's contents. Every field is optional; unknown fields are an error, so a typo
/// does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    disk_budget: Option<SizeSetting>,
    max_downloads: Option<usize>,
    max_files: Option<usize>,
    retries: Option<u32>,
    read_timeout: Option<String>,
    fsync: Option<bool>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_access_key_id: Option<String>,
    s3_secret_access_key: Option<String>,
    s3_session_token: Option<String>,
    s3_path_style: Option<bool>,
    s3_anonymous: Option<bool>,
    gcs_endpoint: Option<String>,
    gcs_anonymous: Option<bool>,
    azure_endpoint: Option<String>,
    azure_account: Option<String>,
    azure_access_key: Option<String>,
    azure_use_emulator: Option<bool>,
    azure_anonymous: Option<bool>,
    allow_file_urls: Option<bool>,
    listen: Option<SocketAddr>,
    token: Option<String>,
    token_reads: Option<bool>,
    max_body: Option<SizeSetting>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<usize>,
    shutdown_timeout: Option<String>,
}

/// A size in a TOML file: a number of bytes or a string such as "500GiB".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeSetting {
    Bytes(u64),
    Text(String),
}

impl SizeSetting {
    fn bytes(&self) -> anyhow::Result<u64> {
        match self {
            SizeSetting::Bytes(bytes) => Ok(*bytes),
            SizeSetting::Text(text) => parse_size(text).map_err(anyhow::Error::msg),
        }
    }
}

impl FileSettings {
    fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
    }
}

/// Settings of the daemon, resolved.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The manager's configuration.
    pub config: Config,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The bearer token required on mutating requests, if any.
    pub token: Option<String>,
    /// Whether reads (GET, HEAD) need the token too, but for the health checks.
    pub token_reads: bool,
    /// The request body limit in bytes.
    pub max_body: usize,
    /// The deadline for a request's headers.
    pub header_timeout: Duration,
    /// The longest stall allowed while reading a request body.
    pub body_timeout: Duration,
    /// The configured connection limit (the daemon lowers it to half the open-file limit).
    pub max_connections: usize,
    /// How long a shutdown waits for open requests.
    pub shutdown_timeout: Duration,
}

impl ManagerArgs {
    /// Resolves the manager's configuration.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let file = FileSettings::load(self.config.as_deref())?;
        self.merge(&file)
    }

    fn merge(&self, file: &FileSettings) -> anyhow::Result<Config> {
        let data_dir = self
            .data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut config = Config::new(data_dir);
        if let Some(budget) = self.disk_budget {
            config = config.with_disk_budget(budget);
        } else if let Some(budget) = &file.disk_budget {
            config = config.with_disk_budget(budget.bytes().context("disk_budget")?);
        }
        if let Some(n) = self.max_downloads.or(file.max_downloads) {
            config = config.with_max_concurrent_downloads(positive(n, "max_downloads")?);
        }
        if let Some(n) = self.max_files.or(file.max_files) {
            config = config.with_max_concurrent_files(positive(n, "max_files")?);
        }
        if let Some(retries) = self.retries.or(file.retries) {
            config = config.with_retries(retries);
        }
        if let Some(timeout) = self.read_timeout {
            config = config.with_read_timeout(timeout);
        } else if let Some(text) = &file.read_timeout {
            let timeout = parse_duration(text)
                .map_err(anyhow::Error::msg)
                .context("read_timeout")?;
            config = config.with_read_timeout(timeout);
        }
        if let Some(fsync) = self.fsync.or(file.fsync) {
            config = config.with_fsync(fsync);
        }
        let pick = |flag: &Option<String>, file: &Option<String>| flag.clone().or(file.clone());
        let mut s3 = S3Config::default();
        s3.endpoint = pick(&self.s3_endpoint, &file.s3_endpoint);
        s3.region = pick(&self.s3_region, &file.s3_region);
        s3.access_key_id = pick(&self.s3_access_key_id, &file.s3_access_key_id);
        s3.secret_access_key = pick(&self.s3_secret_access_key, &file.s3_secret_access_key);
        s3.session_token = pick(&self.s3_session_token, &file.s3_session_token);
        s3.path_style = self.s3_path_style.or(file.s3_path_style);
        s3.anonymous = self.s3_anonymous.or(file.s3_anonymous).unwrap_or(false);
        config = config.with_s3(s3);
        let mut gcs = GcsConfig::default();
        gcs.endpoint = pick(&self.gcs_endpoint, &file.gcs_endpoint);
        gcs.anonymous = self.gcs_anonymous.or(file.gcs_anonymous).unwrap_or(false);
        config = config.with_gcs(gcs);
        let mut azure = AzureConfig::default();
        azure.endpoint = pick(&self.azure_endpoint, &file.azure_endpoint);
        azure.account = pick(&self.azure_account, &file.azure_account);
        azure.access_key = pick(&self.azure_access_key, &file.azure_access_key);
        azure.use_emulator = self
            .azure_use_emulator
            .or(file.azure_use_emulator)
            .unwrap_or(false);
        azure.anonymous = self
            .azure_anonymous
            .or(file.azure_anonymous)
            .unwrap_or(false);
        config = config.with_azure(azure);
        if let Some(allow) = self.allow_file_urls.or(file.allow_file_urls) {
            config = config.with_file_urls(allow);
        }
        Ok(config)
    }
}

impl ServeArgs {
    /// Resolves the daemon's settings.
    pub fn resolve(&self) -> anyhow::Result<ServeSettings> {
        let file = FileSettings::load(self.manager.config.as_deref())?;
        let config = self.manager.merge(&file)?;
        let listen = match self.listen.or(file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN
                .parse()
                .context("the default listen address")?,
        };
        let token = self
            .token
            .clone()
            .or_else(|| file.token.clone())
            .filter(|token| !token.is_empty());
        let max_body = match (self.max_body, &file.max_body) {
            (Some(bytes), _) => bytes,
            (None, Some(size)) => size.bytes().context("max_body")?,
            (None, None) => DEFAULT_MAX_BODY,
        };
        let duration = |flag: Option<Duration>, file: &Option<String>, name: &str, default| {
            let duration = match (flag, file) {
                (Some(duration), _) => duration,
                (None, Some(text)) => parse_duration(text)
                    .map_err(anyhow::Error::msg)
                    .context(name.to_string())?,
                (None, None) => default,
            };
            if duration.is_zero() {
                bail!("{name} must be more than 0");
            }
            Ok(duration)
        };
        Ok(ServeSettings {
            config,
            listen,
            token,
            token_reads: self.token_reads.or(file.token_reads).unwrap_or(false),
            max_body: usize::try_from(max_body).context("max_body does not fit in memory")?,
            header_timeout: duration(
                self.header_timeout,
                &file.header_timeout,
                "header_timeout",
                DEFAULT_HEADER_TIMEOUT,
            )?,
            body_timeout: duration(
                self.body_timeout,
                &file.body_timeout,
                "body_timeout",
                DEFAULT_BODY_TIMEOUT,
            )?,
            max_connections: positive(
                self.max_connections
                    .or(file.max_connections)
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS),
                "max_connections",
            )?,
            shutdown_timeout: duration(
                self.shutdown_timeout,
                &file.shutdown_timeout,
                "shutdown_timeout",
                DEFAULT_SHUTDOWN_TIMEOUT,
            )?,
        })
    }
}

fn positive(n: usize, name: &str) -> anyhow::Result<usize> {
    if n == 0 {
        bail!("{name} must be at least 1");
    }
    Ok(n)
}

/// Parses a size: a number of bytes, or a number with a unit (B, KB, MB, GB, TB, KiB, MiB,
/// GiB, TiB; case-insensitive, optional space).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a size: {text:?} (try 500GiB or a number of bytes)"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size out of range: {text:?}"));
    }
    Ok(bytes as u64)
}

/// Parses a duration: a number with a unit (ms, s, m, h), or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 30s or 500ms)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(seconds * scale).map_err(|error| format!("{text:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("500GB"), Ok(500_000_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: FileSettings = toml::from_str(
            "data_dir = \"/from/file\"\ndisk_budget = \"2GiB\"\nmax_downloads = 9\nlisten = \"127.0.0.1:9999\"\n",
        )
        .unwrap();
        let args = ManagerArgs {
            disk_budget: Some(1000),
            ..ManagerArgs::default()
        };
        let config = args.merge(&file).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.disk_budget, 1000);
        assert_eq!(config.max_concurrent_downloads, 9);
        assert_eq!(config.retries, Config::new("x").retries);
    }

    #[test]
    fn s3_settings_merge_like_the_others() {
        let file: FileSettings = toml::from_str(
            "s3_endpoint = \"http://127.0.0.1:9000\"\ns3_region = \"eu-west-1\"\ns3_secret_access_key = \"from-file\"\nallow_file_urls = true\n",
        )
        .unwrap();
        let args = ManagerArgs {
            s3_region: Some("us-east-2".into()),
            ..ManagerArgs::default()
        };
        let config = args.merge(&file).unwrap();
        assert_eq!(config.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(config.s3.region.as_deref(), Some("us-east-2"));
        assert_eq!(config.s3.secret_access_key.as_deref(), Some("from-file"));
        assert!(config.allow_file_urls);
        assert!(!config.s3.anonymous);
    }

    #[test]
    fn issue12_gcs_and_azure_settings_merge_like_the_others() {
        let file: FileSettings = toml::from_str(
            "gcs_endpoint = \"http://127.0.0.1:4443\"\nazure_endpoint = \"http://127.0.0.1:10000/devstoreaccount1\"\nazure_account = \"from-file\"\nazure_access_key = \"c2VjcmV0\"\n",
        )
        .unwrap();
        let args = ManagerArgs {
            azure_account: Some("from-flag".into()),
            azure_use_emulator: Some(true),
            ..ManagerArgs::default()
        };
        let config = args.merge(&file).unwrap();
        assert_eq!(
            config.gcs.endpoint.as_deref(),
            Some("http://127.0.0.1:4443")
        );
        assert!(!config.gcs.anonymous);
        assert_eq!(
            config.azure.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert_eq!(config.azure.account.as_deref(), Some("from-flag"));
        assert_eq!(config.azure.access_key.as_deref(), Some("c2VjcmV0"));
        assert!(config.azure.use_emulator);
        assert!(
            !format!("{config:?}").contains("c2VjcmV0"),
            "the key is not printed"
        );
    }

    #[test]
    fn unknown_file_settings_are_refused() {
        let error = toml::from_str::<FileSettings>("disk_budgett = 5").unwrap_err();
        assert!(error.to_string().contains("disk_budgett"), "{error}");
    }
}
