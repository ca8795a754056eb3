//! Where files come from: `http(s)://` URLs through the manager's one HTTP client, and
//! `s3://bucket/key` and `file:///path` URLs through [`object_store`].
//!
//! # Overview
//!
//! A download asks a source two things: [`Sources::probe`] (the file's size and version, by
//! `HEAD`) and [`Sources::open`] (a body from an offset on, pinned to the probed version).
//! Both return the crate's [`Error`] with the chunk, file and URL named, so the downloader
//! retries, resumes and reports the same way whatever the source.
//!
//! Resuming is pinned: a request from an offset carries `If-Match` with the probed ETag (and
//! the probed version id where the store has versions), so a changed object answers `412`
//! ([`Error::SourceChanged`]) instead of its new bytes being stitched to the old ones.
//!
//! # Concurrency
//!
//! One object store client per bucket, created on first use and shared by every download
//! (connection pooling), behind a `std::sync::Mutex` held only to look up or insert. Their
//! own retries and total request timeout are off: the downloader retries with its backoff and
//! events, and bounds silence, not whole transfers.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MATCH, LOCATION, RANGE};

use crate::chunk::ChunkId;
use crate::config::{Config, S3Config};
use crate::error::Error;

/// Which file of which chunk, for error context.
#[derive(Clone, Copy)]
pub(crate) struct FileContext<'a> {
    pub(crate) chunk: &'a ChunkId,
    pub(crate) file: &'a str,
    pub(crate) url: &'a str,
}

impl FileContext<'_> {
    pub(crate) fn network(&self, error: &reqwest::Error, timeout: Duration) -> Error {
        if error.is_timeout() {
            return self.timeout(timeout);
        }
        self.network_message(flatten(error))
    }

    fn network_message(&self, message: String) -> Error {
        Error::Network {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            message,
        }
    }

    pub(crate) fn timeout(&self, timeout: Duration) -> Error {
        Error::Timeout {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            timeout,
        }
    }

    pub(crate) fn bad_response(&self, reason: String) -> Error {
        Error::BadResponse {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            reason,
        }
    }

    fn status(&self, status: StatusCode, location: Option<&str>) -> Error {
        if status.is_redirection() {
            return self.bad_response(format!(
                "HTTP {} redirect to {} not followed",
                status.as_u16(),
                location.unwrap_or("nowhere")
            ));
        }
        Error::HttpStatus {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            status: status.as_u16(),
        }
    }

    pub(crate) fn size_mismatch(&self, expected: u64, actual: u64) -> Error {
        Error::SizeMismatch {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            expected,
            actual,
        }
    }

    pub(crate) fn changed(&self, reason: String) -> Error {
        Error::SourceChanged {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            reason,
        }
    }

    pub(crate) fn checksum(
        &self,
        algorithm: crate::ChecksumAlgorithm,
        expected: String,
        actual: String,
    ) -> Error {
        Error::ChecksumMismatch {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            algorithm,
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    pub(crate) fn io(
        &self,
        action: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            chunk: *self.chunk,
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    fn config(&self, message: String) -> Error {
        Error::SourceConfig {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            message,
        }
    }

    /// Maps an object store error to the crate's, by what the downloader should do about it.
    fn store(&self, error: object_store::Error) -> Error {
        match error {
            object_store::Error::NotFound { .. } => Error::HttpStatus {
                chunk: *self.chunk,
                file: self.file.to_string(),
                url: self.url.to_string(),
                status: 404,
            },
            object_store::Error::PermissionDenied { source, .. }
            | object_store::Error::Unauthenticated { source, .. } => Error::AccessDenied {
                chunk: *self.chunk,
                file: self.file.to_string(),
                url: self.url.to_string(),
                message: flatten(&*source),
            },
            object_store::Error::Precondition { .. } => {
                self.changed("its ETag no longer matches the version being downloaded".into())
            }
            object_store::Error::InvalidPath { source } => self.config(source.to_string()),
            other => self.network_message(flatten(&other)),
        }
    }
}

/// An error's message with its source chain, `a: b: c`.
fn flatten(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// What a probe learned about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) size: u64,
    /// The version's ETag, if the source gives one.
    pub(crate) etag: Option<String>,
    /// The object's version id, for versioned buckets.
    pub(crate) version: Option<String>,
    /// Whether the ETag is a single-part S3 upload's, i.e. the content's MD5.
    pub(crate) etag_is_md5: bool,
}

/// A response body from `offset` on.
pub(crate) struct Body {
    /// Bytes the body will carry.
    pub(crate) length: u64,
    /// The source ignored the offset and sends the file from its first byte.
    pub(crate) from_start: bool,
    pub(crate) pieces: BoxStream<'static, Result<Bytes, BodyError>>,
}

/// A failure while reading a body, mapped to [`Error`] by [`Body::error`].
pub(crate) enum BodyError {
    Http(reqwest::Error),
    Store(object_store::Error),
}

impl BodyError {
    pub(crate) fn into_error(self, context: FileContext<'_>, timeout: Duration) -> Error {
        match self {
            BodyError::Http(error) => context.network(&error, timeout),
            BodyError::Store(error) => context.store(error),
        }
    }
}

/// Where one URL is read from.
pub(crate) enum Location {
    Http,
    Store {
        store: Arc<dyn ObjectStore>,
        path: StorePath,
        /// S3 ETags of single-part uploads are MD5s; a local file's are not.
        s3: bool,
    },
}

/// Every source the manager reads from. One per manager.
pub(crate) struct Sources {
    http: reqwest::Client,
    read_timeout: Duration,
    connect_timeout: Duration,
    s3: S3Config,
    allow_file_urls: bool,
    buckets: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    local: Arc<dyn ObjectStore>,
}

impl Sources {
    pub(crate) fn new(config: &Config) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: http_client(config)?,
            read_timeout: config.read_timeout,
            connect_timeout: config.connect_timeout,
            s3: config.s3.clone(),
            allow_file_urls: config.allow_file_urls,
            buckets: Mutex::new(HashMap::new()),
            local: Arc::new(LocalFileSystem::new()),
        })
    }

    /// Resolves a URL to its source.
    pub(crate) fn locate(&self, context: FileContext<'_>) -> Result<Location, Error> {
        let url = reqwest::Url::parse(context.url)
            .map_err(|error| context.config(format!("not a URL: {error}")))?;
        match url.scheme() {
            "http" | "https" => Ok(Location::Http),
            "s3" => {
                let bucket = url.host_str().unwrap_or_default();
                let key = url.path().trim_start_matches('/');
                let path = StorePath::from_url_path(key)
                    .map_err(|error| context.config(format!("bad object key: {error}")))?;
                Ok(Location::Store {
                    store: self.bucket(context, bucket)?,
                    path,
                    s3: true,
                })
            }
            "file" if !self.allow_file_urls => {
                Err(context.config("file URLs are disabled (see Config::allow_file_urls)".into()))
            }
            "file" => {
                let file = url
                    .to_file_path()
                    .map_err(|()| context.config("not an absolute local path".into()))?;
                let path = StorePath::from_absolute_path(&file)
                    .map_err(|error| context.config(error.to_string()))?;
                Ok(Location::Store {
                    store: Arc::clone(&self.local),
                    path,
                    s3: false,
                })
            }
            other => Err(context.config(format!("unsupported scheme {other:?}"))),
        }
    }

    fn bucket(
        &self,
        context: FileContext<'_>,
        bucket: &str,
    ) -> Result<Arc<dyn ObjectStore>, Error> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = buckets.get(bucket) {
            return Ok(Arc::clone(store));
        }
        let store: Arc<dyn ObjectStore> = Arc::new(
            s3_builder(&self.s3, self.connect_timeout)
                .with_bucket_name(bucket)
                .build()
                .map_err(|error| context.config(flatten(&error)))?,
        );
        buckets.insert(bucket.to_string(), Arc::clone(&store));
        Ok(store)
    }

    /// The file's size and version.
    pub(crate) async fn probe(
        &self,
        context: FileContext<'_>,
        location: &Location,
    ) -> Result<Probe, Error> {
        let timeout = self.read_timeout;
        match location {
            Location::Http => {
                let request = self.http.head(context.url).send();
                let response = tokio::time::timeout(timeout, request)
                    .await
                    .map_err(|_| context.timeout(timeout))?
                    .map_err(|error| context.network(&error, timeout))?;
                let status = response.status();
                if status != StatusCode::OK {
                    return Err(context.status(status, header(&response, LOCATION)));
                }
                // Read the header itself: the body of a HEAD reply is empty whatever its length.
                let size = header(&response, CONTENT_LENGTH)
                    .and_then(|value| value.parse().ok())
                    .ok_or_else(|| {
                        context.bad_response(
                            "the origin does not tell the file's size (no Content-Length)".into(),
                        )
                    })?;
                // Only a strong ETag can pin a range request (If-Match compares strongly).
                let etag = header(&response, ETAG)
                    .filter(|etag| !etag.starts_with("W/"))
                    .map(str::to_string);
                Ok(Probe {
                    size,
                    etag,
                    version: None,
                    etag_is_md5: false,
                })
            }
            Location::Store { store, path, s3 } => {
                let meta = tokio::time::timeout(timeout, store.head(path))
                    .await
                    .map_err(|_| context.timeout(timeout))?
                    .map_err(|error| context.store(error))?;
                let etag_is_md5 = *s3
                    && meta
                        .e_tag
                        .as_deref()
                        .is_some_and(|etag| crate::integrity::etag_md5(etag).is_some());
                Ok(Probe {
                    size: meta.size,
                    etag: meta.e_tag,
                    version: meta.version,
                    etag_is_md5,
                })
            }
        }
    }

    /// A body with the file's bytes from `offset` on, of the probed version.
    pub(crate) async fn open(
        &self,
        context: FileContext<'_>,
        location: &Location,
        probe: &Probe,
        offset: u64,
    ) -> Result<Body, Error> {
        match location {
            Location::Http => self.open_http(context, probe, offset).await,
            Location::Store { store, path, .. } => {
                self.open_store(context, store, path, probe, offset).await
            }
        }
    }

    async fn open_http(
        &self,
        context: FileContext<'_>,
        probe: &Probe,
        offset: u64,
    ) -> Result<Body, Error> {
        let timeout = self.read_timeout;
        let size = probe.size;
        let mut request = self.http.get(context.url);
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
            if let Some(etag) = &probe.etag {
                request = request.header(IF_MATCH, etag);
            }
        }
        let response = tokio::time::timeout(timeout, request.send())
            .await
            .map_err(|_| context.timeout(timeout))?
            .map_err(|error| context.network(&error, timeout))?;
        let status = response.status();
        let (length, from_start) = match status {
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let range = header(&response, CONTENT_RANGE).unwrap_or_default();
                let expected = format!("bytes {offset}-{}/{size}", size.saturating_sub(1));
                if range != expected {
                    return Err(context.bad_response(format!(
                        "asked for bytes {offset}- of {size}, got Content-Range {range:?}"
                    )));
                }
                (size - offset, false)
            }
            // An origin that ignores ranges sends the whole file: start over.
            StatusCode::OK => (size, offset > 0),
            StatusCode::PRECONDITION_FAILED if offset > 0 => {
                return Err(context.changed("its ETag no longer matches".into()));
            }
            other => return Err(context.status(other, header(&response, LOCATION))),
        };
        if let Some(announced) =
            header(&response, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
            && announced != length
        {
            return Err(context.size_mismatch(length, announced));
        }
        Ok(Body {
            length,
            from_start,
            pieces: response.bytes_stream().map_err(BodyError::Http).boxed(),
        })
    }

    async fn open_store(
        &self,
        context: FileContext<'_>,
        store: &Arc<dyn ObjectStore>,
        path: &StorePath,
        probe: &Probe,
        offset: u64,
    ) -> Result<Body, Error> {
        let timeout = self.read_timeout;
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            if_match: probe.etag.clone(),
            version: probe.version.clone(),
            ..GetOptions::default()
        };
        let result = tokio::time::timeout(timeout, store.get_opts(path, options))
            .await
            .map_err(|_| context.timeout(timeout))?
            .map_err(|error| context.store(error))?;
        if result.meta.size != probe.size {
            return Err(context.changed(format!(
                "its size went from {} to {} bytes",
                probe.size, result.meta.size
            )));
        }
        let Range { start, end } = result.range.clone();
        if start != offset || end != probe.size {
            return Err(context.bad_response(format!(
                "asked for bytes {offset}- of {}, got {start}..{end}",
                probe.size
            )));
        }
        Ok(Body {
            length: end - start,
            from_start: false,
            pieces: result.into_stream().map_err(BodyError::Store).boxed(),
        })
    }
}

/// Builds the one HTTP client the manager uses for every http(s) file: pooled connections, no
/// redirects, a connect timeout and no total deadline.
fn http_client(config: &Config) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(config.max_concurrent_downloads * config.max_concurrent_files)
        .user_agent(concat!("chunk-manager/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn s3_builder(s3: &S3Config, connect_timeout: Duration) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env()
        .with_client_options(
            ClientOptions::new()
                .with_timeout_disabled()
                .with_connect_timeout(connect_timeout)
                .with_allow_http(true),
        )
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &s3.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(!s3.path_style.unwrap_or(true));
    } else if let Some(path_style) = s3.path_style {
        builder = builder.with_virtual_hosted_style_request(!path_style);
    }
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &s3.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &s3.session_token {
        builder = builder.with_token(token);
    }
    if s3.anonymous {
        builder = builder.with_skip_signature(true);
    }
    builder
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<&str> {
    response.headers().get(name)?.to_str().ok()
}
