//! Fetching a chunk's files: probe, reserve, stream to disk, verify sizes, commit.
//!
//! # Overview
//!
//! A download job probes every file's size (`HEAD`, or a one-byte `GET` where `HEAD` is
//! refused), reserves the total (a checked sum: sizes come from the network) in the disk budget,
//! then streams the files concurrently into `tmp/<chunk>/`. Each file is written by a blocking
//! writer task fed through a small bounded channel, so memory stays at a few buffers per file
//! whatever the file's size, and the network is read while the disk writes. Files, manifest
//! and directory are fsynced, and one durable rename commits the chunk.
//!
//! # Faults
//!
//! Every request is checked: only `200`/`206` is data; a redirect is not followed; 4xx is
//! permanent; 5xx, 408, 429, resets, idle timeouts, short bodies and running out of file
//! descriptors are retried with exponential backoff and jitter, resuming from the bytes already
//! on disk only where the source can pin the version (a strong ETag; see [`crate::source`]),
//! else from the first byte: two versions are never stitched. The read timeout bounds
//! silence, not the whole transfer, so a large file on a slow link is fine as long as bytes
//! keep coming.
//!
//! # A full disk
//!
//! Before writing, the job reads the filesystem's usable free space and reserves its size
//! against it as well as against the budget (see [`crate::table`], "Free space"); a chunk that
//! does not fit waits for space. A write that fails anyway with `ENOSPC` or `EDQUOT` is not
//! retried as an attempt: the job removes its partial files (they hold the space the disk
//! lacks), releases its reservation and the chunk waits for space, then starts again.
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chunk::DataChunk;
use crate::config::Config;
use crate::disk::{FileEntry, MANIFEST, Manifest};
use crate::error::Error;
use crate::event::Event;
use crate::integrity::{Digests, FileCheck, Hashes};
use crate::reconciler::Shared;
use crate::source::{FileContext, Location, Probe};
use crate::table::{DownloadOutcome, Progress, Reservation};

/// Buffers in flight between the network and one file's writer.
const WRITER_QUEUE: usize = 16;

/// Bytes in flight between the network and one file's writer. With the concurrency limits,
/// this bounds a download's memory (`chunks x files x WRITER_BYTES`) whatever sizes of pieces
/// the origin's client hands over; a piece larger than this still passes, alone.
const WRITER_BYTES: usize = 2 << 20;

/// One download job. See the module docs.
pub(crate) struct DownloadJob {
    pub(crate) shared: Arc<Shared>,
    pub(crate) chunk: Arc<DataChunk>,
    pub(crate) cancel: CancellationToken,
    pub(crate) progress: Arc<Progress>,
    /// The blocking work on this job's directory (its creation, the file writers, the
    /// manifest): awaited before the directory is removed, so nothing late recreates it.
    pub(crate) writers: TaskTracker,
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
            Some(Ok(Prepared::NeedsDiskSpace { size, free })) => {
                DownloadOutcome::NeedsDiskSpace { size, free }
            }
            Some(Ok(Prepared::Gone)) => DownloadOutcome::Cancelled,
            Some(Err(Failure { error, .. })) if error.is_disk_full() => {
                self.writers.close();
                self.writers.wait().await;
                self.remove_download_dir(&download_dir).await;
                return self.disk_full(&error).await;
            }
            Some(Err(Failure { error, attempts })) => DownloadOutcome::Failed { error, attempts },
            Some(Ok(Prepared::Complete { size })) if !self.cancel.is_cancelled() => {
                let target = layout.chunk_dir(&self.chunk);
                return match self.commit(&download_dir, &target).await {
                    Ok(()) => DownloadOutcome::Committed { path: target, size },
                    Err(error) => {
                        self.remove_download_dir(&download_dir).await;
                        if error.is_disk_full() {
                            return self.disk_full(&error).await;
                        }
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

    /// The filesystem filled up under the download (its partial files are removed by now):
    /// the chunk waits for space, with the free space read again for its status.
    async fn disk_full(&self, error: &Error) -> DownloadOutcome {
        tracing::info!(
            chunk = %crate::ShortId(self.chunk.id()),
            error = %error.with_causes(),
            "the disk is full; the download waits for free space"
        );
        DownloadOutcome::NeedsDiskSpace {
            size: self
                .progress
                .total
                .load(std::sync::atomic::Ordering::Relaxed),
            free: self.free_space().await.unwrap_or(0),
        }
    }

    /// The usable free space of the data directory's filesystem (see
    /// [`crate::disk::usable_free_space`]); `None`, logged, if it cannot be read.
    async fn free_space(&self) -> Option<u64> {
        let root = self.shared.layout.root.clone();
        let margin = self.shared.config.min_free_bytes;
        match blocking(move || crate::disk::usable_free_space(&root, margin)).await {
            Ok(free) => Some(free),
            Err(error) => {
                tracing::warn!(
                    path = %self.shared.layout.root.display(),
                    %error,
                    "cannot read the free disk space; reserving against the budget only"
                );
                None
            }
        }
    }

    /// Everything before the commit: cancellable at every await.
    async fn prepare(&self, download_dir: &Path) -> Result<Prepared, Failure> {
        let id = self.chunk.id();
        let once = |error| Failure { error, attempts: 1 };
        let dir = download_dir.to_path_buf();
        // Tracked: a cancelled job waits for it before removing the directory, so the
        // directory cannot be created again after the removal.
        let created = self
            .tracked_retrying(move || {
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

        let mut probed = self.probe_files().await?;
        let total = total_size(probed.values().map(|file| file.probe.size))
            .ok_or_else(|| once(Error::SizeOverflow { chunk: *id }))?;
        // Always asked, even when admission reserved the size already: the free space is
        // checked here, just before writing.
        let free = self.free_space().await;
        match self.shared.try_reserve(id, total, free) {
            Reservation::Granted => {}
            Reservation::NoSpace => return Ok(Prepared::NeedsSpace { size: total }),
            Reservation::NoDiskSpace { free } => {
                return Ok(Prepared::NeedsDiskSpace { size: total, free });
            }
            Reservation::Gone => return Ok(Prepared::Gone),
            Reservation::TooLarge { budget } => {
                return Err(once(Error::TooLargeForBudget {
                    chunk: *id,
                    needed: total,
                    budget,
                }));
            }
        }

        let config = &self.shared.config;
        let fetches: Vec<_> = self
            .owned_files()
            .into_iter()
            .filter_map(|(name, url)| {
                let file = probed.remove(&name)?;
                Some(self.fetch_named(name, url, file, download_dir))
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
        self.tracked_retrying(move || shared.layout.write_synced(&path, &text))
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

    /// [`tracked`] work tried again, with backoff, while it fails for want of file
    /// descriptors (`EMFILE`, `ENFILE`), which free up; other errors are returned at once.
    async fn tracked_retrying<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> std::io::Result<T> + Clone + Send + 'static,
    ) -> std::io::Result<T> {
        let config = &self.shared.config;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match tracked(&self.writers, work.clone()).await {
                Err(error)
                    if crate::error::is_out_of_descriptors(&error)
                        && attempts <= config.retries =>
                {
                    tracing::info!(
                        chunk = %crate::ShortId(self.chunk.id()),
                        attempt = attempts,
                        %error,
                        "out of file descriptors; retrying"
                    );
                    tokio::time::sleep(backoff(config, attempts)).await;
                }
                result => return result,
            }
        }
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

    /// Finds every file's source and asks its size and version, retrying like a download.
    async fn probe_files(&self) -> Result<BTreeMap<String, Probed>, Failure> {
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

    async fn probe_named(&self, name: String, url: String) -> Result<(String, Probed), Failure> {
        let context = FileContext {
            chunk: self.chunk.id(),
            file: &name,
            url: &url,
        };
        let location = self
            .shared
            .sources
            .locate(context)
            .map_err(|error| Failure { error, attempts: 1 })?;
        let check = self.chunk.checks().get(&name).copied().unwrap_or_default();
        let mut attempts = 0;
        let probe = loop {
            attempts += 1;
            match self.probe_once(context, &location, &check).await {
                Ok(probe) => break probe,
                Err(error) => tokio::time::sleep(self.retry_after(context, error, attempts)?).await,
            }
        };
        let probed = Probed {
            location,
            probe,
            check,
        };
        Ok((name, probed))
    }

    /// One probe, with the declared size checked against the source's.
    async fn probe_once(
        &self,
        context: FileContext<'_>,
        location: &Location,
        check: &FileCheck,
    ) -> Result<Probe, Error> {
        let probe = self.shared.sources.probe(context, location).await?;
        match check.size {
            Some(declared) if declared != probe.size => {
                Err(context.size_mismatch(declared, probe.size))
            }
            _ => Ok(probe),
        }
    }

    async fn fetch_named(
        &self,
        name: String,
        url: String,
        file: Probed,
        download_dir: &Path,
    ) -> Result<(String, FileEntry), Failure> {
        let context = FileContext {
            chunk: self.chunk.id(),
            file: &name,
            url: &url,
        };
        let entry = self
            .fetch_file(context, file, download_dir.join(&name))
            .await?;
        self.shared.emit(Event::FileDownloaded {
            chunk: *self.chunk.id(),
            file: name.clone(),
            bytes: entry.size,
        });
        Ok((name, entry))
    }

    /// Decides whether a failed attempt is tried again: if so, reports it and returns how long
    /// to wait first (exponential backoff with jitter); if not, the failure to return.
    #[allow(
        clippy::result_large_err,
        reason = "a failure ends the download; it is rare"
    )]
    fn retry_after(
        &self,
        context: FileContext<'_>,
        error: Error,
        attempts: u32,
    ) -> Result<Duration, Failure> {
        let config = &self.shared.config;
        // A full disk is not an attempt: the download ends and waits for space.
        if !error.is_retryable() || error.is_disk_full() || attempts > config.retries {
            return Err(Failure { error, attempts });
        }
        let error = Arc::new(error);
        tracing::info!(
            chunk = %crate::ShortId(context.chunk),
            file = context.file,
            attempt = attempts,
            error = %error.with_causes(),
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

    /// Downloads one file to `path`, resuming after failures, checks it against what is
    /// declared and stated about it, and returns its manifest entry.
    async fn fetch_file(
        &self,
        context: FileContext<'_>,
        file: Probed,
        path: PathBuf,
    ) -> Result<FileEntry, Failure> {
        let Probed {
            location,
            mut probe,
            check,
        } = file;
        let spawn_writer = |probe: &Probe| {
            Writer::spawn(
                &self.writers,
                path.clone(),
                Hashes::new(check.checksum, probe.etag_is_md5),
                self.shared.layout.fsync,
            )
        };
        let mut writer = spawn_writer(&probe);
        let mut attempts = 0;
        let failed = |error, attempts, writer: &Writer| {
            self.progress.sub(writer.written);
            Failure { error, attempts }
        };
        loop {
            attempts += 1;
            if writer.stopped() {
                // A retryable IO error (out of file descriptors) stopped the writer: a new
                // one recreates the file from its first byte.
                self.progress.sub(writer.written);
                writer = spawn_writer(&probe);
            }
            let error = match self
                .fetch_once(context, &location, &mut probe, &mut writer)
                .await
            {
                Ok(()) => {
                    let digests = writer.complete().await.map_err(|source| Failure {
                        error: context.io("write", &path, source),
                        attempts,
                    })?;
                    match verify(context, &check, &probe, &digests) {
                        Ok(checksum) => {
                            writer.close().await;
                            return Ok(FileEntry {
                                size: probe.size,
                                blake3: hex::encode(digests.blake3),
                                checksum,
                                etag: probe.etag.clone(),
                            });
                        }
                        // Bad bytes: the next attempt starts from the first byte.
                        Err(error) => {
                            self.start_over(context, &mut writer)
                                .await
                                .map_err(|error| failed(error, attempts, &writer))?;
                            error
                        }
                    }
                }
                Err(error @ Error::SourceChanged { .. }) => {
                    // The object was replaced: never stitch. Same size: start over on the new
                    // version (as a retry: an object that keeps changing fails in the end);
                    // otherwise the reserved space and any declared size are wrong.
                    if attempts > self.shared.config.retries {
                        return Err(failed(error, attempts, &writer));
                    }
                    let fresh = self
                        .probe_once(context, &location, &check)
                        .await
                        .map_err(|error| failed(error, attempts, &writer))?;
                    if fresh.size != probe.size {
                        let reason =
                            format!("its size went from {} to {} bytes", probe.size, fresh.size);
                        return Err(failed(context.changed(reason), attempts, &writer));
                    }
                    tracing::info!(
                        chunk = %crate::ShortId(context.chunk),
                        file = context.file,
                        "source changed during the download; starting the file over"
                    );
                    probe = fresh;
                    self.start_over(context, &mut writer)
                        .await
                        .map_err(|error| failed(error, attempts, &writer))?;
                    continue;
                }
                Err(error) => error,
            };
            match self.retry_after(context, error, attempts) {
                Ok(wait) => tokio::time::sleep(wait).await,
                Err(Failure { error, attempts }) => return Err(failed(error, attempts, &writer)),
            }
        }
    }

    /// Empties the file for a download from its first byte.
    async fn start_over(&self, context: FileContext<'_>, writer: &mut Writer) -> Result<(), Error> {
        self.progress.sub(writer.written);
        writer
            .restart()
            .await
            .map_err(|source| context.io("truncate", &writer.path, source))
    }

    /// One request for the rest of a file: from `writer.written` to the end. A body from the
    /// first byte replaces what was written, and its version becomes the probe's.
    async fn fetch_once(
        &self,
        context: FileContext<'_>,
        location: &Location,
        probe: &mut Probe,
        writer: &mut Writer,
    ) -> Result<(), Error> {
        let timeout = self.shared.config.read_timeout;
        let mut body = self
            .shared
            .sources
            .open(context, location, probe, writer.written)
            .await?;
        if body.from_start && writer.written > 0 {
            self.start_over(context, writer).await?;
        }
        if writer.written == 0 {
            probe.etag = body.etag.take();
        }
        let start = writer.written;
        loop {
            let piece = tokio::time::timeout(timeout, body.pieces.next())
                .await
                .map_err(|_| context.timeout(timeout))?
                .transpose()
                .map_err(|error| error.into_error(context, timeout))?;
            let Some(piece) = piece else { break };
            let received = (writer.written - start).saturating_add(piece.len() as u64);
            if received > body.length {
                return Err(context.size_mismatch(body.length, received));
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
        if received != body.length {
            return Err(context.size_mismatch(probe.size, start.saturating_add(received)));
        }
        Ok(())
    }
}

/// A file's source, what its probe found, and what its chunk declares about it.
struct Probed {
    location: Location,
    probe: Probe,
    check: FileCheck,
}

/// Checks a complete file's digests against its declared checksum and its S3 ETag. Returns
/// the declared checksum, verified, for the manifest.
fn verify(
    context: FileContext<'_>,
    check: &FileCheck,
    probe: &Probe,
    digests: &Digests,
) -> Result<Option<crate::Checksum>, Error> {
    if let Some(declared) = &check.checksum {
        let actual = digests.actual(declared);
        if actual.as_ref() != Some(declared) {
            return Err(context.checksum(
                declared.algorithm(),
                declared.hex(),
                actual.map(|a| a.hex()).unwrap_or_default(),
            ));
        }
    }
    if probe.etag_is_md5
        && let (Some(stated), Some(actual)) = (
            probe.etag.as_deref().and_then(crate::integrity::etag_md5),
            digests.md5,
        )
        && stated != actual
    {
        return Err(context.checksum(
            crate::ChecksumAlgorithm::EtagMd5,
            hex::encode(stated),
            hex::encode(actual),
        ));
    }
    Ok(check.checksum)
}

/// The sum of a chunk's file sizes, `None` if it overflows: the sizes come from the network.
fn total_size(sizes: impl IntoIterator<Item = u64>) -> Option<u64> {
    sizes
        .into_iter()
        .try_fold(0u64, |total, size| total.checked_add(size))
}

/// The result of the cancellable part of a download.
enum Prepared {
    Complete { size: u64 },
    NeedsSpace { size: u64 },
    NeedsDiskSpace { size: u64, free: u64 },
    Gone,
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

/// Runs blocking filesystem work of a job's download directory off the async threads, tracked
/// with its writers so that the directory's removal waits for it.
async fn tracked<T: Send + 'static>(
    tracker: &TaskTracker,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tracker
        .spawn_blocking(work)
        .await
        .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error)))
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
    /// A piece of the file and its share of the writer's byte budget, returned once written.
    Data(Bytes, OwnedSemaphorePermit),
    Restart,
    /// Flush (and fsync) what is written and report the digests; the file stays open, so a
    /// failed check can still start it over.
    Complete(oneshot::Sender<std::io::Result<Digests>>),
}

/// Writes one file on a blocking thread, hashing as it goes. The bounded channel and the byte
/// budget keep at most [`WRITER_QUEUE`] buffers and [`WRITER_BYTES`] bytes in memory.
struct Writer {
    path: PathBuf,
    written: u64,
    sender: mpsc::Sender<WriterMessage>,
    budget: Arc<Semaphore>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Writer {
    fn spawn(tracker: &TaskTracker, path: PathBuf, mut hashes: Hashes, fsync: bool) -> Self {
        let (sender, mut receiver) = mpsc::channel(WRITER_QUEUE);
        let file_path = path.clone();
        let task = tracker.spawn_blocking(move || {
            use std::io::{Seek, Write};
            let mut file = std::fs::File::create(&file_path)?;
            // Ends when the job drops its sender: done, or abandoned (the directory is
            // about to be removed, so no fsync).
            while let Some(message) = receiver.blocking_recv() {
                match message {
                    WriterMessage::Data(bytes, _budget_returned_when_written) => {
                        file.write_all(&bytes)?;
                        hashes.update(&bytes);
                    }
                    WriterMessage::Restart => {
                        file.set_len(0)?;
                        file.rewind()?;
                        hashes.reset();
                    }
                    WriterMessage::Complete(reply) => {
                        let result = if fsync { file.sync_all() } else { Ok(()) };
                        let _job_gone_is_fine = reply.send(result.map(|()| hashes.digests()));
                    }
                }
            }
            Ok(())
        });
        Self {
            path,
            written: 0,
            sender,
            budget: Arc::new(Semaphore::new(WRITER_BYTES)),
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
            Ok(()) => std::io::Error::other("the file writer stopped early"),
        })
    }

    /// Whether the writer thread has stopped (after an IO error): it takes no more data.
    fn stopped(&self) -> bool {
        self.task.as_ref().is_none_or(|task| task.is_finished())
    }

    async fn join(&mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error))),
            None => Err(std::io::Error::other("the file writer already stopped")),
        }
    }

    async fn write(&mut self, bytes: Bytes) -> std::io::Result<()> {
        let length = bytes.len() as u64;
        let share = u32::try_from(bytes.len().min(WRITER_BYTES)).unwrap_or(u32::MAX);
        let budget = self
            .budget
            .clone()
            .acquire_many_owned(share)
            .await
            .map_err(|_| std::io::Error::other("the file writer's budget is closed"))?;
        self.send(WriterMessage::Data(bytes, budget)).await?;
        self.written += length;
        Ok(())
    }

    async fn restart(&mut self) -> std::io::Result<()> {
        self.send(WriterMessage::Restart).await?;
        self.written = 0;
        Ok(())
    }

    /// Flushes the file and returns the digests of everything written.
    async fn complete(&mut self) -> std::io::Result<Digests> {
        let (reply, digests) = oneshot::channel();
        self.send(WriterMessage::Complete(reply)).await?;
        match digests.await {
            Ok(result) => result,
            Err(_) => Err(match self.join().await {
                Err(error) => error,
                Ok(()) => std::io::Error::other("the file writer stopped early"),
            }),
        }
    }

    /// Closes the file and waits for the writer thread to end.
    async fn close(self) {
        let Writer {
            path, sender, task, ..
        } = self;
        drop(sender);
        let Some(task) = task else { return };
        let result = task
            .await
            .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error)));
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "closing a downloaded file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue10_sizes_from_the_network_do_not_wrap() {
        assert_eq!(total_size([1, 2, 3]), Some(6));
        assert_eq!(total_size([]), Some(0));
        assert_eq!(total_size([u64::MAX, 0]), Some(u64::MAX));
        assert_eq!(total_size([u64::MAX, 1]), None);
        assert_eq!(total_size([u64::MAX / 2 + 1, u64::MAX / 2 + 1]), None);
    }

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
