//! Where files come from: `http(s)://` URLs through the manager's one HTTP client, and
//! `s3://bucket/key`, `gs://bucket/key`, `az://container/key` (also `azure://`, `abfs://`,
//! `abfss://`) and `file:///path` URLs through [`object_store`].
//!
//! # Overview
//!
//! A download asks a source two things: [`Sources::probe`] (the file's size and version, by
//! `HEAD`) and [`Sources::open`] (a body from an offset on, pinned to the probed version).
//! Both return the crate's [`Error`] with the chunk, file and URL named, so the downloader
//! retries, resumes and reports the same way whatever the source.
//!
//! Resuming never stitches two versions of a file. Over HTTP a request from an offset is
//! made only with a strong ETag, as `If-Range`: a changed file answers `200` with its whole
//! new version, which replaces the bytes already received. Without a strong ETag (none, a
//! weak `W/` one, only `Last-Modified`) the file is fetched again from its first byte. An
//! object store's request from an offset carries `If-Match` with the probed ETag (and the
//! probed version id where the store has versions), so a changed object answers `412`
//! ([`Error::SourceChanged`]).
//!
//! An origin that refuses `HEAD` with `403` or `405` (S3 presigned `GET` URLs do) is probed
//! with a one-byte `GET` instead; a `404` stays a permanent failure.
//!
//! # Secrets
//!
//! Errors show URLs through [`redact_url`] (no query, no credentials), and keep the HTTP
//! client's errors as sources without their URL.
//!
//! # Concurrency
//!
//! One object store client per bucket (or Azure container), created on first use and shared by every download
//! (connection pooling), behind a `std::sync::Mutex` held only to look up or insert. Bucket
//! names come from chunk descriptions, so the clients kept are bounded ([`MAX_BUCKETS`], the
//! least recently used is dropped). Their own retries and total request timeout are off: the
//! downloader retries with its backoff and events, and bounds silence, not whole transfers.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LOCATION, RANGE};

use crate::chunk::{ChunkId, redact_url};
use crate::config::{AzureConfig, Config, GcsConfig, S3Config};
use crate::error::Error;

/// Which file of which chunk, for error context.
#[derive(Clone, Copy)]
pub(crate) struct FileContext<'a> {
    pub(crate) chunk: &'a ChunkId,
    pub(crate) file: &'a str,
    pub(crate) url: &'a str,
}

/// The most object store clients kept, one per bucket.
pub(crate) const MAX_BUCKETS: usize = 32;

impl FileContext<'_> {
    /// The URL as errors show it.
    fn shown_url(&self) -> String {
        redact_url(self.url)
    }

    /// An HTTP client error, without its URL (it may carry a signature).
    pub(crate) fn network(&self, error: reqwest::Error, timeout: Duration) -> Error {
        if error.is_timeout() {
            return self.timeout(timeout);
        }
        let message = if error.is_connect() {
            "cannot connect"
        } else if error.is_body() || error.is_decode() {
            "the response body broke off"
        } else if error.is_redirect() {
            "bad redirect"
        } else {
            "the request failed"
        };
        self.network_error(message, Arc::new(error.without_url()))
    }

    fn network_error(
        &self,
        message: &str,
        source: Arc<dyn std::error::Error + Send + Sync>,
    ) -> Error {
        Error::Network {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.shown_url(),
            message: message.to_string(),
            source,
        }
    }

    pub(crate) fn timeout(&self, timeout: Duration) -> Error {
        Error::Timeout {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.shown_url(),
            timeout,
        }
    }

    pub(crate) fn bad_response(&self, reason: String) -> Error {
        Error::BadResponse {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.shown_url(),
            reason,
        }
    }

    fn status(&self, status: StatusCode, location: Option<&str>) -> Error {
        if status.is_redirection() {
            return self.bad_response(format!(
                "HTTP {} redirect to {} not followed",
                status.as_u16(),
                location.map_or_else(|| "nowhere".to_string(), redact_url)
            ));
        }
        self.http_status(status.as_u16())
    }

    pub(crate) fn size_mismatch(&self, expected: u64, actual: u64) -> Error {
        Error::SizeMismatch {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.shown_url(),
            expected,
            actual,
        }
    }

    pub(crate) fn changed(&self, reason: String) -> Error {
        Error::SourceChanged {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.shown_url(),
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
            url: self.shown_url(),
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
            url: self.shown_url(),
            message,
        }
    }

    /// Maps an object store error to the crate's, by what the downloader should do about it:
    /// only failures that may pass (the network, a server error, a throttle) are retryable.
    fn store(&self, error: object_store::Error) -> Error {
        use object_store::Error as Store;
        let access_denied =
            |message: &str, source: Box<dyn std::error::Error + Send + Sync>| Error::AccessDenied {
                chunk: *self.chunk,
                file: self.file.to_string(),
                url: self.shown_url(),
                message: message.to_string(),
                source: Arc::from(source),
            };
        match error {
            Store::NotFound { .. } => self.http_status(404),
            Store::PermissionDenied { source, .. } => access_denied("permission denied", source),
            Store::Unauthenticated { source, .. } => access_denied("not authenticated", source),
            Store::Precondition { .. } => {
                self.changed("its ETag no longer matches the version being downloaded".into())
            }
            Store::NotModified { .. } => self.bad_response(
                "the store answered \"not modified\" to an unconditional read".into(),
            ),
            Store::AlreadyExists { .. } => {
                self.bad_response("the store answered \"conflict\" to a read".into())
            }
            Store::InvalidPath { source } => self.config(format!("bad object path: {source}")),
            Store::NotSupported { source } => {
                self.config(format!("not supported by the store: {source}"))
            }
            error @ (Store::NotImplemented { .. } | Store::UnknownConfigurationKey { .. }) => {
                self.config(error.to_string())
            }
            Store::Generic { source, .. } => self.store_generic(source),
            // A local read's task failed, or a kind added later: may pass.
            other => self.network_error("the object store failed", Arc::new(other)),
        }
    }

    /// A store's generic error: the network (retryable), an HTTP status (by its class), or a
    /// local file's IO error (by its kind).
    fn store_generic(&self, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*source);
        while let Some(error) = cause {
            if error.is::<object_store::client::HttpError>() {
                return self.network_error("the object store request failed", Arc::from(source));
            }
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::NotFound => return self.http_status(404),
                    std::io::ErrorKind::PermissionDenied => {
                        return Error::AccessDenied {
                            chunk: *self.chunk,
                            file: self.file.to_string(),
                            url: self.shown_url(),
                            message: "permission denied".to_string(),
                            source: Arc::from(source),
                        };
                    }
                    _ => {}
                }
            }
            cause = error.source();
        }
        // object_store keeps the status of an unexpected answer private but states it:
        // "Server returned non-2xx status code: 400 Bad Request: ...".
        if let Some(status) = stated_status(&*source) {
            return self.http_status(status);
        }
        self.network_error("the object store failed", Arc::from(source))
    }

    fn http_status(&self, status: u16) -> Error {
        Error::HttpStatus {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.shown_url(),
            status,
        }
    }
}

/// The HTTP status an object store error's chain states, if any.
fn stated_status(error: &(dyn std::error::Error + 'static)) -> Option<u16> {
    const MARKER: &str = "status code: ";
    let mut cause = Some(error);
    while let Some(error) = cause {
        let text = error.to_string();
        if let Some(at) = text.find(MARKER) {
            let digits = text.get(at + MARKER.len()..at + MARKER.len() + 3)?;
            return digits
                .parse()
                .ok()
                .filter(|status| (100..600).contains(status));
        }
        cause = error.source();
    }
    None
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
    /// The source sends the file from its first byte although an offset was asked: it ignored
    /// the range, the file changed, or there is no strong validator to resume with.
    pub(crate) from_start: bool,
    /// The strong ETag of the version the body carries, if the source gives one.
    pub(crate) etag: Option<String>,
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
            BodyError::Http(error) => context.network(error, timeout),
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
    gcs: GcsConfig,
    azure: AzureConfig,
    allow_file_urls: bool,
    buckets: Mutex<Buckets>,
    local: Arc<dyn ObjectStore>,
}

impl Sources {
    pub(crate) fn new(config: &Config) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: http_client(config)?,
            read_timeout: config.read_timeout,
            connect_timeout: config.connect_timeout,
            s3: config.s3.clone(),
            gcs: config.gcs.clone(),
            azure: config.azure.clone(),
            allow_file_urls: config.allow_file_urls,
            buckets: Mutex::new(Buckets::default()),
            local: Arc::new(LocalFileSystem::new()),
        })
    }

    /// Resolves a URL to its source.
    pub(crate) fn locate(&self, context: FileContext<'_>) -> Result<Location, Error> {
        let url = reqwest::Url::parse(context.url)
            .map_err(|error| context.config(format!("not a URL: {error}")))?;
        match url.scheme() {
            "http" | "https" => Ok(Location::Http),
            scheme @ ("s3" | "gs" | "az" | "azure" | "abfs" | "abfss") => {
                let host = url.host_str().unwrap_or_default();
                let key = url.path().trim_start_matches('/');
                let path = StorePath::from_url_path(key)
                    .map_err(|error| context.config(format!("bad object key: {error}")))?;
                let bucket = match scheme {
                    "s3" => Bucket::S3(host),
                    "gs" => Bucket::Gcs(host),
                    // The container, and for `abfss://container@account.host/` the account.
                    _ if url.username().is_empty() => Bucket::Azure(format!("{scheme}://{host}")),
                    _ => Bucket::Azure(format!("{scheme}://{}@{host}", url.username())),
                };
                Ok(Location::Store {
                    store: self.bucket(context, bucket)?,
                    path,
                    s3: scheme == "s3",
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

    /// The client of one bucket (or container), kept among the [`MAX_BUCKETS`] most recently
    /// used.
    fn bucket(
        &self,
        context: FileContext<'_>,
        bucket: Bucket<'_>,
    ) -> Result<Arc<dyn ObjectStore>, Error> {
        let key = bucket.key();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = buckets.get(&key) {
            return Ok(store);
        }
        let built = |error: object_store::Error| context.config(error.to_string());
        let options = client_options(self.connect_timeout);
        let store: Arc<dyn ObjectStore> = match bucket {
            Bucket::S3(name) => Arc::new(
                s3_builder(&self.s3, options)
                    .with_bucket_name(name)
                    .build()
                    .map_err(built)?,
            ),
            Bucket::Gcs(name) => Arc::new(
                gcs_builder(&self.gcs, options)
                    .with_bucket_name(name)
                    .build()
                    .map_err(built)?,
            ),
            Bucket::Azure(url) => Arc::new(
                azure_builder(&self.azure, options)
                    .with_url(url)
                    .build()
                    .map_err(built)?,
            ),
        };
        buckets.insert(&key, Arc::clone(&store));
        Ok(store)
    }

    /// How many object store clients are kept.
    #[cfg(test)]
    fn buckets_kept(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clients
            .len()
    }

    /// The file's size and version.
    pub(crate) async fn probe(
        &self,
        context: FileContext<'_>,
        location: &Location,
    ) -> Result<Probe, Error> {
        let timeout = self.read_timeout;
        match location {
            Location::Http => self.probe_http(context).await,
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

    /// Sends a request, bounding the wait for its answer's head.
    async fn send(
        &self,
        context: FileContext<'_>,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let timeout = self.read_timeout;
        tokio::time::timeout(timeout, request.send())
            .await
            .map_err(|_| context.timeout(timeout))?
            .map_err(|error| context.network(error, timeout))
    }

    /// An http(s) file's size and version, by `HEAD`, or by a one-byte `GET` if `HEAD` is
    /// refused with `403` or `405` (S3 presigned `GET` URLs refuse it).
    async fn probe_http(&self, context: FileContext<'_>) -> Result<Probe, Error> {
        let response = self.send(context, self.http.head(context.url)).await?;
        let status = response.status();
        if status == StatusCode::FORBIDDEN || status == StatusCode::METHOD_NOT_ALLOWED {
            tracing::debug!(
                chunk = %crate::ShortId(context.chunk),
                file = context.file,
                status = status.as_u16(),
                "HEAD refused; probing with a one-byte GET"
            );
            return self.probe_http_by_get(context).await;
        }
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
        Ok(Probe {
            size,
            etag: strong_etag(&response),
            version: None,
            etag_is_md5: false,
        })
    }

    /// The probe from a `GET` of the first byte: the size from `Content-Range` (or from
    /// `Content-Length` if the origin sends the whole file, whose body is then dropped).
    async fn probe_http_by_get(&self, context: FileContext<'_>) -> Result<Probe, Error> {
        let request = self.http.get(context.url).header(RANGE, "bytes=0-0");
        let response = self.send(context, request).await?;
        let status = response.status();
        let no_size = || {
            context.bad_response(format!(
                "HEAD is refused and the GET does not tell the file's size (HTTP {}, \
                 Content-Range {:?}, Content-Length {:?})",
                status.as_u16(),
                header(&response, CONTENT_RANGE).unwrap_or_default(),
                header(&response, CONTENT_LENGTH).unwrap_or_default(),
            ))
        };
        let size = match status {
            // `bytes 0-0/SIZE`, or `bytes */SIZE` for an empty file.
            StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
                header(&response, CONTENT_RANGE)
                    .and_then(|range| range.strip_prefix("bytes "))
                    .and_then(|range| range.rsplit_once('/'))
                    .and_then(|(_, total)| total.parse().ok())
                    .ok_or_else(no_size)?
            }
            StatusCode::OK => header(&response, CONTENT_LENGTH)
                .and_then(|value| value.parse().ok())
                .ok_or_else(no_size)?,
            other => return Err(context.status(other, header(&response, LOCATION))),
        };
        Ok(Probe {
            size,
            etag: strong_etag(&response),
            version: None,
            etag_is_md5: false,
        })
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

    /// An http(s) body from `offset` on. A resume is a `Range` request only with a strong
    /// ETag, sent as `If-Range`: a changed file then comes whole (`200`), never stitched.
    async fn open_http(
        &self,
        context: FileContext<'_>,
        probe: &Probe,
        offset: u64,
    ) -> Result<Body, Error> {
        let size = probe.size;
        let mut request = self.http.get(context.url);
        let resume = match (&probe.etag, offset) {
            (_, 0) => false,
            (Some(etag), _) => {
                request = request
                    .header(RANGE, format!("bytes={offset}-"))
                    .header(IF_RANGE, etag);
                true
            }
            (None, _) => {
                tracing::debug!(
                    chunk = %crate::ShortId(context.chunk),
                    file = context.file,
                    "no strong ETag to resume with; fetching the file from its first byte"
                );
                false
            }
        };
        let response = self.send(context, request).await?;
        let status = response.status();
        let etag = strong_etag(&response);
        let announced = header(&response, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        let (length, from_start) = match status {
            StatusCode::PARTIAL_CONTENT if resume => {
                let range = header(&response, CONTENT_RANGE).unwrap_or_default();
                let expected = format!("bytes {offset}-{}/{size}", size.saturating_sub(1));
                if range != expected {
                    return Err(context.bad_response(format!(
                        "asked for bytes {offset}- of {size}, got Content-Range {range:?}"
                    )));
                }
                // An origin that ignored If-Range but tells the version it sends.
                if let (Some(sent), Some(probed)) = (&etag, &probe.etag)
                    && sent != probed
                {
                    return Err(context.changed(format!(
                        "its ETag went from {probed} to {sent} (If-Range ignored)"
                    )));
                }
                (size - offset, false)
            }
            // The whole file: the first request, an origin that ignores ranges, or a version
            // other than the one resumed. Its length must still be the reserved size.
            StatusCode::OK => {
                if let Some(announced) = announced
                    && announced != size
                {
                    return Err(
                        context.changed(format!("its size went from {size} to {announced} bytes"))
                    );
                }
                (size, offset > 0)
            }
            StatusCode::PRECONDITION_FAILED if resume => {
                return Err(context.changed("its ETag no longer matches".into()));
            }
            other => return Err(context.status(other, header(&response, LOCATION))),
        };
        if let Some(announced) = announced
            && announced != length
        {
            return Err(context.size_mismatch(length, announced));
        }
        Ok(Body {
            length,
            from_start,
            etag,
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
            etag: probe.etag.clone(),
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

/// A bucket of one of the object stores, as a URL names it.
enum Bucket<'a> {
    S3(&'a str),
    Gcs(&'a str),
    /// `scheme://container` or `scheme://container@account.host`, as object_store parses it.
    Azure(String),
}

impl Bucket<'_> {
    /// The client cache's key: one client per store and bucket.
    fn key(&self) -> String {
        match self {
            Bucket::S3(name) => format!("s3://{name}"),
            Bucket::Gcs(name) => format!("gs://{name}"),
            Bucket::Azure(url) => format!("az:{url}"),
        }
    }
}

/// The object store clients' HTTP settings: no total timeout (the downloader bounds silence),
/// the manager's connect timeout, `http://` endpoints allowed (emulators, MinIO).
fn client_options(connect_timeout: Duration) -> ClientOptions {
    ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(connect_timeout)
        .with_allow_http(true)
}

/// No retries inside object_store: the downloader retries, with its backoff and events.
fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

/// A Google Cloud Storage client's builder: the `GOOGLE_*` environment, then `gcs`.
fn gcs_builder(gcs: &GcsConfig, options: ClientOptions) -> GoogleCloudStorageBuilder {
    let mut builder = GoogleCloudStorageBuilder::from_env()
        .with_client_options(options)
        .with_retry(no_retries());
    if let Some(endpoint) = &gcs.endpoint {
        builder = builder.with_base_url(endpoint);
    }
    if let Some(key) = &gcs.service_account_key {
        builder = builder.with_service_account_key(key);
    }
    if gcs.anonymous {
        builder = builder.with_skip_signature(true);
    }
    builder
}

/// An Azure Blob Storage client's builder: the `AZURE_*` environment, then `azure`.
fn azure_builder(azure: &AzureConfig, options: ClientOptions) -> MicrosoftAzureBuilder {
    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_client_options(options)
        .with_retry(no_retries());
    if let Some(endpoint) = &azure.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if let Some(account) = &azure.account {
        builder = builder.with_account(account);
    }
    if let Some(key) = &azure.access_key {
        builder = builder.with_access_key(key);
    }
    if azure.use_emulator {
        builder = builder.with_use_emulator(true);
    }
    if azure.anonymous {
        builder = builder.with_skip_signature(true);
    }
    builder
}

fn s3_builder(s3: &S3Config, options: ClientOptions) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env()
        .with_client_options(options)
        .with_retry(no_retries());
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

/// The response's ETag if it is strong: only a strong one can pin a resume (`If-Range` and
/// `If-Match` compare strongly; a weak `W/` ETag never matches).
fn strong_etag(response: &reqwest::Response) -> Option<String> {
    header(response, ETAG)
        .filter(|etag| !etag.starts_with("W/"))
        .map(str::to_string)
}

/// The object store clients, one per bucket, at most [`MAX_BUCKETS`]: bucket names come from
/// untrusted chunk descriptions, so the least recently used client is dropped to make room.
#[derive(Default)]
struct Buckets {
    clients: HashMap<String, (Arc<dyn ObjectStore>, u64)>,
    /// A counter of uses, to find the least recently used client.
    clock: u64,
}

impl Buckets {
    fn get(&mut self, bucket: &str) -> Option<Arc<dyn ObjectStore>> {
        self.clock += 1;
        let (store, used) = self.clients.get_mut(bucket)?;
        *used = self.clock;
        Some(Arc::clone(store))
    }

    fn insert(&mut self, bucket: &str, store: Arc<dyn ObjectStore>) {
        if self.clients.len() >= MAX_BUCKETS
            && let Some(oldest) = self
                .clients
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(name, _)| name.clone())
        {
            // Downloads still using it keep their Arc; only the cache lets go.
            self.clients.remove(&oldest);
        }
        self.clock += 1;
        self.clients.insert(bucket.to_string(), (store, self.clock));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>(url: &'a str) -> FileContext<'a> {
        FileContext {
            chunk: &[1; 32],
            file: "f",
            url,
        }
    }

    #[test]
    fn issue10_the_bucket_clients_kept_are_bounded_and_lru() {
        let config = Config::new("/nonexistent").with_s3(S3Config {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("us-east-1".into()),
            anonymous: true,
            ..S3Config::default()
        });
        let sources = Sources::new(&config).unwrap();
        let url = |n: usize| format!("s3://bucket-{n}/key");
        let first = url(0);
        let Location::Store { store: kept, .. } = sources.locate(context(&first)).unwrap() else {
            panic!("an s3 URL is a store")
        };
        for n in 1..100 {
            let url = url(n);
            sources.locate(context(&url)).unwrap();
            // Bucket 0 is used all along: never the least recently used.
            let Location::Store { store, .. } = sources.locate(context(&first)).unwrap() else {
                panic!("an s3 URL is a store")
            };
            assert!(Arc::ptr_eq(&store, &kept), "bucket 0 was dropped at {n}");
            assert!(sources.buckets_kept() <= MAX_BUCKETS);
        }
        assert_eq!(sources.buckets_kept(), MAX_BUCKETS);
    }

    #[test]
    fn issue12_gs_and_az_urls_get_one_client_per_store_and_bucket() {
        let config = Config::new("/nonexistent")
            .with_gcs(
                GcsConfig::default()
                    .with_endpoint("http://127.0.0.1:9")
                    .with_anonymous(true),
            )
            .with_azure(
                AzureConfig::default()
                    .with_endpoint("http://127.0.0.1:9/account")
                    .with_credentials("account", "a2V5"),
            )
            .with_s3(S3Config::default().with_endpoint("http://127.0.0.1:9"));
        let sources = Sources::new(&config).unwrap();
        let store = |url: &str| match sources.locate(context(url)) {
            Ok(Location::Store { store, path, s3 }) => (store, path, s3),
            Ok(Location::Http) => panic!("{url} is a store"),
            Err(error) => panic!("{url}: {error}"),
        };
        let (gs, path, s3) = store("gs://b1/dir/k");
        assert_eq!(path.as_ref(), "dir/k");
        assert!(!s3, "only S3 ETags are MD5s");
        assert!(Arc::ptr_eq(&gs, &store("gs://b1/other").0));
        assert!(!Arc::ptr_eq(&gs, &store("gs://b2/k").0));
        assert!(
            !Arc::ptr_eq(&gs, &store("s3://b1/k").0),
            "one client per store"
        );
        let (az, path, _) = store("az://c1/dir/k");
        assert_eq!(path.as_ref(), "dir/k");
        assert!(Arc::ptr_eq(&az, &store("az://c1/k2").0));
        assert!(!Arc::ptr_eq(&az, &store("az://c2/k").0));
        store("abfss://c1@account.dfs.core.windows.net/k");
        assert_eq!(sources.buckets_kept(), 6);
        // An Azure URL that object_store cannot read is a configuration error naming it.
        let error = sources
            .locate(context("az://not.a.container/k"))
            .err()
            .unwrap();
        assert!(matches!(error, Error::SourceConfig { .. }), "{error:?}");
        assert!(!error.is_retryable());
    }

    #[test]
    fn issue10_object_store_errors_are_mapped_by_what_they_mean() {
        let url = "s3://b/k?X-Amz-Signature=secret";
        let context = context(url);
        let source = || -> Box<dyn std::error::Error + Send + Sync> { "cause".into() };
        let path = || "k".to_string();
        let permanent = [
            object_store::Error::NotFound {
                path: path(),
                source: source(),
            },
            object_store::Error::PermissionDenied {
                path: path(),
                source: source(),
            },
            object_store::Error::Unauthenticated {
                path: path(),
                source: source(),
            },
            object_store::Error::NotModified {
                path: path(),
                source: source(),
            },
            object_store::Error::AlreadyExists {
                path: path(),
                source: source(),
            },
            object_store::Error::NotSupported { source: source() },
            object_store::Error::NotImplemented {
                operation: "get".into(),
                implementer: "test".into(),
            },
            object_store::Error::UnknownConfigurationKey {
                store: "S3",
                key: "k".into(),
            },
            object_store::Error::Generic {
                store: "S3",
                source: "Server returned non-2xx status code: 400 Bad Request: no".into(),
            },
            object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
            },
        ];
        for error in permanent {
            let shown = format!("{error}");
            let mapped = context.store(error);
            assert!(!mapped.is_retryable(), "{shown} became {mapped:?}");
            assert!(!mapped.with_causes().contains("secret"), "{mapped}");
        }
        let changed = context.store(object_store::Error::Precondition {
            path: path(),
            source: source(),
        });
        assert!(
            matches!(changed, Error::SourceChanged { .. }),
            "{changed:?}"
        );
        let retryable = [
            object_store::Error::Generic {
                store: "S3",
                source: "Server returned non-2xx status code: 503 Service Unavailable: x".into(),
            },
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(object_store::client::HttpError::new(
                    object_store::client::HttpErrorKind::Connect,
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                )),
            },
            object_store::Error::Generic {
                store: "S3",
                source: "something else".into(),
            },
        ];
        for error in retryable {
            let shown = format!("{error}");
            let mapped = context.store(error);
            assert!(mapped.is_retryable(), "{shown} became {mapped:?}");
            // The cause is kept as a source, not flattened into the message.
            assert!(
                std::error::Error::source(&mapped).is_some()
                    || matches!(mapped, Error::HttpStatus { .. }),
                "{mapped:?}"
            );
        }
        let not_found = context.store(object_store::Error::NotFound {
            path: path(),
            source: source(),
        });
        assert!(matches!(not_found, Error::HttpStatus { status: 404, .. }));
        assert!(!not_found.to_string().contains("secret"), "{not_found}");
    }
}
