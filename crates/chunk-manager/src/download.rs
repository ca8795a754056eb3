//! Fetching a chunk's files: probe, reserve, stream to disk, verify sizes, commit.
//!
//! # Overview
//!
//! A download job probes every file's size (`HEAD`), reserves the total in the disk budget,
//! then streams the files concurrently into `tmp/<chunk>/`. Each file is written by a blocking
//! writer task fed through a small bounded channel, so memory stays at a few buffers per file
//! whatever the file's size, and the network is read while the disk writes. Files, manifest
//! and directory are fsynced, and one durable rename commits the chunk.
//!
//! # Faults
//!
//! Every request is checked: only `200`/`206` is data; a redirect is not followed; 4xx is
//! permanent; 5xx, 408, 429, resets, idle timeouts and short bodies are retried with
//! exponential backoff and jitter, resuming with a `Range` request from the bytes already on
//! disk. The read timeout bounds silence, not the whole transfer, so a large file on a slow
//! link is fine as long as bytes keep coming.
//!
//! # Cancellation
//!
//! A cancelled job stops at its next await, removes its temporary directory and reports
//! `Cancelled`. The commit itself is not cancellable: once the files are complete the rename
//! runs, and a delete that arrived meanwhile removes the committed chunk instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chunk::{ChunkId, DataChunk};
use crate::config::Config;
use crate::disk::{FileEntry, MANIFEST, Manifest};
use crate::error::Error;
use crate::event::Event;
use crate::reconciler::Shared;
use crate::table::{DownloadOutcome, Progress, Reservation};

/// Buffers in flight between the network and one file's writer.
const WRITER_QUEUE: usize = 16;

/// Builds the one HTTP client the manager uses for every file: pooled connections, no
/// redirects, a connect timeout and no total deadline.
pub(crate) fn http_client(config: &Config) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(config.max_concurrent_downloads * config.max_concurrent_files)
        .user_agent(concat!("chunk-manager/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One download job. See the module docs.
pub(crate) struct DownloadJob {
    pub(crate) shared: Arc<Shared>,
    pub(crate) chunk: Arc<DataChunk>,
    pub(crate) cancel: CancellationToken,
    pub(crate) progress: Arc<Progress>,
    pub(crate) reserved: Option<u64>,
    /// The blocking writer threads of this job: awaited before its directory is removed, so
    /// no late write recreates a file in it.
    pub(crate) writers: TaskTracker,
}

/// Which file of which chunk, for error context.
#[derive(Clone, Copy)]
struct FileContext<'a> {
    chunk: &'a ChunkId,
    file: &'a str,
    url: &'a str,
}

impl FileContext<'_> {
    fn network(&self, error: &reqwest::Error, timeout: Duration) -> Error {
        if error.is_timeout() {
            return self.timeout(timeout);
        }
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::Network {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            message,
        }
    }

    fn timeout(&self, timeout: Duration) -> Error {
        Error::Timeout {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            timeout,
        }
    }

    fn bad_response(&self, reason: String) -> Error {
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

    fn size_mismatch(&self, expected: u64, actual: u64) -> Error {
        Error::SizeMismatch {
            chunk: *self.chunk,
            file: self.file.to_string(),
            url: self.url.to_string(),
            expected,
            actual,
        }
    }

    fn io(&self, action: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            chunk: *self.chunk,
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A failure together with the attempts it took.
struct Failure {
    error: Error,
    attempts: u32,
}

impl DownloadJob {
    pub(crate) async fn run(self) -> DownloadOutcome {
        let layout = &self.shared.layout;
        let download_dir = layout.download_dir(self.chunk.id());
        let prepared = tokio::select! {
            biased;
            () = self.cancel.cancelled() => None,
            result = self.prepare(&download_dir) => Some(result),
        };
        let outcome = match prepared {
            None => DownloadOutcome::Cancelled,
            Some(Ok(Prepared::NeedsSpace { size })) => DownloadOutcome::NeedsSpace { size },
            Some(Ok(Prepared::Gone)) => DownloadOutcome::Cancelled,
            Some(Err(Failure { error, attempts })) => DownloadOutcome::Failed { error, attempts },
            Some(Ok(Prepared::Complete { size })) if !self.cancel.is_cancelled() => {
                let target = layout.chunk_dir(&self.chunk);
                return match self.commit(&download_dir, &target).await {
                    Ok(()) => DownloadOutcome::Committed { path: target, size },
                    Err(error) => {
                        self.remove_download_dir(&download_dir).await;
                        DownloadOutcome::Failed { error, attempts: 1 }
                    }
                };
            }
            Some(Ok(Prepared::Complete { .. })) => DownloadOutcome::Cancelled,
        };
        // The writers of abandoned files see their channels closed and stop.
        self.writers.close();
        self.writers.wait().await;
        self.remove_download_dir(&download_dir).await;
        outcome
    }

    /// Everything before the commit: cancellable at every await.
    async fn prepare(&self, download_dir: &Path) -> Result<Prepared, Failure> {
        let id = self.chunk.id();
        let once = |error| Failure { error, attempts: 1 };
        let dir = download_dir.to_path_buf();
        let created = blocking(move || {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            std::fs::create_dir_all(&dir)
        })
        .await;
        created.map_err(|source| {
            once(Error::Io {
                chunk: *id,
                action: "create the download directory",
                path: download_dir.to_path_buf(),
                source,
            })
        })?;

        let sizes = self.probe_sizes().await?;
        let total: u64 = sizes.values().sum();
        if self.reserved != Some(total) {
            let reservation = self.shared.try_reserve(id, total);
            match reservation {
                Reservation::Granted => {}
                Reservation::NoSpace => return Ok(Prepared::NeedsSpace { size: total }),
                Reservation::Gone => return Ok(Prepared::Gone),
                Reservation::TooLarge { budget } => {
                    return Err(once(Error::TooLargeForBudget {
                        chunk: *id,
                        needed: total,
                        budget,
                    }));
                }
            }
        }

        let config = &self.shared.config;
        let fetches: Vec<_> = self
            .owned_files()
            .into_iter()
            .map(|(name, url)| {
                let size = sizes.get(&name).copied().unwrap_or(0);
                self.fetch_named(name, url, size, download_dir)
            })
            .collect();
        let entries: BTreeMap<String, FileEntry> = futures::stream::iter(fetches)
            .buffer_unordered(config.max_concurrent_files)
            .try_collect()
            .await?;

        let manifest = Manifest::new((*self.chunk).clone(), entries);
        let text = serde_json::to_vec_pretty(&manifest).map_err(|error| {
            once(Error::Io {
                chunk: *id,
                action: "encode the manifest",
                path: download_dir.join(MANIFEST),
                source: std::io::Error::other(error),
            })
        })?;
        let manifest_path = download_dir.join(MANIFEST);
        let shared = self.shared.clone();
        let path = manifest_path.clone();
        blocking(move || shared.layout.write_synced(&path, &text))
            .await
            .map_err(|source| {
                once(Error::Io {
                    chunk: *id,
                    action: "write the manifest",
                    path: manifest_path,
                    source,
                })
            })?;
        Ok(Prepared::Complete { size: total })
    }

    async fn commit(&self, download_dir: &Path, target: &Path) -> Result<(), Error> {
        let shared = self.shared.clone();
        let (from, to) = (download_dir.to_path_buf(), target.to_path_buf());
        blocking(move || shared.layout.commit(&from, &to))
            .await
            .map_err(|source| Error::Io {
                chunk: *self.chunk.id(),
                action: "commit the chunk to",
                path: target.to_path_buf(),
                source,
            })
    }

    async fn remove_download_dir(&self, download_dir: &Path) {
        let dir = download_dir.to_path_buf();
        let result = blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        })
        .await;
        if let Err(error) = result {
            tracing::warn!(
                chunk = %crate::ShortId(self.chunk.id()),
                path = %download_dir.display(),
                %error,
                "cannot remove partial download; it is removed at the next start"
            );
        }
    }

    /// The chunk's (name, url) pairs, owned, so per-file futures borrow nothing per item.
    fn owned_files(&self) -> Vec<(String, String)> {
        self.chunk
            .files()
            .iter()
            .map(|(name, url)| (name.clone(), url.clone()))
            .collect()
    }

    /// Asks every file's size with `HEAD`, retrying like a download.
    async fn probe_sizes(&self) -> Result<BTreeMap<String, u64>, Failure> {
        let probes: Vec<_> = self
            .owned_files()
            .into_iter()
            .map(|(name, url)| self.probe_named(name, url))
            .collect();
        futures::stream::iter(probes)
            .buffer_unordered(self.shared.config.max_concurrent_files)
            .try_collect()
            .await
    }

    async fn probe_named(&self, name: String, url: String) -> Result<(String, u64), Failure> {
        let context = FileContext {
            chunk: self.chunk.id(),
            file: &name,
            url: &url,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.probe_once(context).await {
                Ok(size) => return Ok((name, size)),
                Err(error) => tokio::time::sleep(self.retry_after(context, error, attempts)?).await,
            }
        }
    }

    async fn fetch_named(
        &self,
        name: String,
        url: String,
        size: u64,
        download_dir: &Path,
    ) -> Result<(String, FileEntry), Failure> {
        let context = FileContext {
            chunk: self.chunk.id(),
            file: &name,
            url: &url,
        };
        let entry = self
            .fetch_file(context, size, download_dir.join(&name))
            .await?;
        self.shared.emit(Event::FileDownloaded {
            chunk: *self.chunk.id(),
            file: name.clone(),
            bytes: entry.size,
        });
        Ok((name, entry))
    }

    async fn probe_once(&self, context: FileContext<'_>) -> Result<u64, Error> {
        let timeout = self.shared.config.read_timeout;
        let request = self.shared.http.head(context.url).send();
        let response = tokio::time::timeout(timeout, request)
            .await
            .map_err(|_| context.timeout(timeout))?
            .map_err(|error| context.network(&error, timeout))?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(context.status(status, header(&response, LOCATION)));
        }
        // Read the header itself: the body of a HEAD reply is empty whatever its length.
        header(&response, CONTENT_LENGTH)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| {
                context.bad_response(
                    "the origin does not tell the file's size (no Content-Length)".into(),
                )
            })
    }

    /// Decides whether a failed attempt is tried again: if so, reports it and returns how long
    /// to wait first (exponential backoff with jitter); if not, the failure to return.
    fn retry_after(
        &self,
        context: FileContext<'_>,
        error: Error,
        attempts: u32,
    ) -> Result<Duration, Failure> {
        let config = &self.shared.config;
        if !error.is_retryable() || attempts > config.retries {
            return Err(Failure { error, attempts });
        }
        let error = Arc::new(error);
        tracing::info!(
            chunk = %crate::ShortId(context.chunk),
            file = context.file,
            attempt = attempts,
            %error,
            "retrying"
        );
        self.shared.emit(Event::Retrying {
            chunk: *context.chunk,
            file: context.file.to_string(),
            attempt: attempts,
            error,
        });
        Ok(backoff(config, attempts))
    }

    /// Downloads one file to `path`, resuming after failures, and returns its size and hash.
    async fn fetch_file(
        &self,
        context: FileContext<'_>,
        size: u64,
        path: PathBuf,
    ) -> Result<FileEntry, Failure> {
        let mut writer = Writer::spawn(&self.writers, path.clone(), self.shared.layout.fsync);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Err(error) = self.fetch_once(context, size, &mut writer).await else {
                break;
            };
            match self.retry_after(context, error, attempts) {
                Ok(wait) => tokio::time::sleep(wait).await,
                Err(failure) => {
                    self.progress.sub(writer.written);
                    return Err(failure);
                }
            }
        }
        writer.finish().await.map_err(|source| Failure {
            error: context.io("write", &path, source),
            attempts,
        })
    }

    /// One request for the rest of a file: from `writer.written` to `size`.
    async fn fetch_once(
        &self,
        context: FileContext<'_>,
        size: u64,
        writer: &mut Writer,
    ) -> Result<(), Error> {
        let timeout = self.shared.config.read_timeout;
        let offset = writer.written;
        let mut request = self.shared.http.get(context.url);
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let mut response = tokio::time::timeout(timeout, request.send())
            .await
            .map_err(|_| context.timeout(timeout))?
            .map_err(|error| context.network(&error, timeout))?;
        let status = response.status();
        let announced = match status {
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let range = header(&response, CONTENT_RANGE).unwrap_or_default();
                let expected = format!("bytes {offset}-{}/{size}", size.saturating_sub(1));
                if range != expected {
                    return Err(context.bad_response(format!(
                        "asked for bytes {offset}- of {size}, got Content-Range {range:?}"
                    )));
                }
                size - offset
            }
            StatusCode::OK => {
                if offset > 0 {
                    // The origin ignored the range: start the file over.
                    self.progress.sub(offset);
                    writer
                        .restart()
                        .await
                        .map_err(|source| context.io("truncate", &writer.path, source))?;
                }
                size
            }
            other => return Err(context.status(other, header(&response, LOCATION))),
        };
        if let Some(length) = header(&response, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
            && length != announced
        {
            return Err(context.size_mismatch(announced, length));
        }
        let start = writer.written;
        loop {
            let piece = tokio::time::timeout(timeout, response.chunk())
                .await
                .map_err(|_| context.timeout(timeout))?
                .map_err(|error| context.network(&error, timeout))?;
            let Some(piece) = piece else { break };
            let received = writer.written - start + piece.len() as u64;
            if received > announced {
                return Err(context.size_mismatch(announced, received));
            }
            let length = piece.len() as u64;
            writer
                .write(piece)
                .await
                .map_err(|source| context.io("write", &writer.path, source))?;
            self.progress.add(length);
            crate::meter::Meter::downloaded(length);
        }
        let received = writer.written - start;
        if received != announced {
            return Err(context.size_mismatch(size, offset + received));
        }
        Ok(())
    }
}

/// The result of the cancellable part of a download.
enum Prepared {
    Complete { size: u64 },
    NeedsSpace { size: u64 },
    Gone,
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<&str> {
    response.headers().get(name)?.to_str().ok()
}

/// The wait before retry `attempt` (1-based): exponential, capped, with jitter in its upper
/// half so that retries of many files spread out.
fn backoff(config: &Config, attempt: u32) -> Duration {
    let exponential = config
        .retry_base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(config.retry_max_delay);
    let half = exponential / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error)))
}

enum WriterMessage {
    Data(Bytes),
    Restart,
    Finish,
}

/// Writes one file on a blocking thread, hashing as it goes. The bounded channel keeps at
/// most [`WRITER_QUEUE`] buffers in memory.
struct Writer {
    path: PathBuf,
    written: u64,
    sender: mpsc::Sender<WriterMessage>,
    task: Option<tokio::task::JoinHandle<std::io::Result<FileEntry>>>,
}

impl Writer {
    fn spawn(tracker: &TaskTracker, path: PathBuf, fsync: bool) -> Self {
        let (sender, mut receiver) = mpsc::channel(WRITER_QUEUE);
        let file_path = path.clone();
        let task = tracker.spawn_blocking(move || {
            use std::io::{Seek, Write};
            let mut file = std::fs::File::create(&file_path)?;
            let mut hasher = blake3::Hasher::new();
            let mut size = 0u64;
            while let Some(message) = receiver.blocking_recv() {
                match message {
                    WriterMessage::Data(bytes) => {
                        file.write_all(&bytes)?;
                        hasher.update(&bytes);
                        size += bytes.len() as u64;
                    }
                    WriterMessage::Restart => {
                        file.set_len(0)?;
                        file.rewind()?;
                        hasher.reset();
                        size = 0;
                    }
                    WriterMessage::Finish => {
                        if fsync {
                            file.sync_all()?;
                        }
                        return Ok(FileEntry {
                            size,
                            blake3: hasher.finalize().to_hex().to_string(),
                        });
                    }
                }
            }
            // The download was abandoned: no fsync, the directory is about to be removed.
            Err(std::io::Error::other("download abandoned"))
        });
        Self {
            path,
            written: 0,
            sender,
            task: Some(task),
        }
    }

    async fn send(&mut self, message: WriterMessage) -> std::io::Result<()> {
        if self.sender.send(message).await.is_ok() {
            return Ok(());
        }
        // The writer stopped early, which only an IO error does: return it.
        Err(match self.join().await {
            Err(error) => error,
            Ok(_) => std::io::Error::other("the file writer stopped early"),
        })
    }

    async fn join(&mut self) -> std::io::Result<FileEntry> {
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error))),
            None => Err(std::io::Error::other("the file writer already stopped")),
        }
    }

    async fn write(&mut self, bytes: Bytes) -> std::io::Result<()> {
        let length = bytes.len() as u64;
        self.send(WriterMessage::Data(bytes)).await?;
        self.written += length;
        Ok(())
    }

    async fn restart(&mut self) -> std::io::Result<()> {
        self.send(WriterMessage::Restart).await?;
        self.written = 0;
        Ok(())
    }

    async fn finish(mut self) -> std::io::Result<FileEntry> {
        self.send(WriterMessage::Finish).await?;
        self.join().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let config =
            Config::new("/x").with_retry_delays(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..20 {
            let delay = backoff(&config, attempt);
            let ceiling = (Duration::from_millis(100) * 2u32.pow(attempt.min(10) - 1))
                .min(Duration::from_secs(1));
            assert!(
                delay <= ceiling,
                "attempt {attempt}: {delay:?} > {ceiling:?}"
            );
            assert!(
                delay >= ceiling / 2,
                "attempt {attempt}: {delay:?} < half of {ceiling:?}"
            );
        }
    }
}
