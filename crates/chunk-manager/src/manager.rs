//! [`ChunkManager`]: the public face of the library.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{broadcast, watch};

use crate::chunk::{ChunkId, DataChunk, DatasetId};
use crate::config::Config;
use crate::disk::{self, DirLock, Layout, StartupReport};
use crate::error::Error;
use crate::event::{Emitter, Event};
use crate::handle::{ChunkRef, Releases};
use crate::index::Index;
use crate::reconciler::{self, Shared};
use crate::source::Sources;
use crate::status::{ChunkStatus, Totals};
use crate::table::{
    Deletion, Fetch, FetchState, FetchTicket, IndexChange, Settled, Table, index_key,
};
use crate::{DataManager, ShortId};

/// The worker's data layer: keeps on local disk exactly the chunks it is told to keep.
///
/// Calls say what the caller wants for one chunk ([`download_chunk`](Self::download_chunk),
/// [`delete_chunk`](Self::delete_chunk)); the last call for an id wins, and the manager
/// converges to it in the background. Only fully downloaded, committed chunks are visible
/// ([`find_chunk`](Self::find_chunk), [`list_chunks`](Self::list_chunks)), and a chunk held by
/// a [`ChunkRef`] keeps its files until the ref is dropped.
///
/// Every call returns at once: none does IO or waits. The manager runs its work on its own
/// background thread, so it is usable from plain threads and from inside any tokio runtime;
/// or, with [`Config::runtime`], on a runtime the caller gives (whose clock then drives its
/// timers, which tests can pause).
///
/// # Example
///
/// ```
/// use chunk_manager::{ChunkManager, Config, DataChunk};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let origin = chunk_origin::Origin::start()?;
/// # origin.insert("c1/blocks", chunk_origin::content(1, 1000));
/// # let url = origin.url("c1/blocks");
/// let dir = tempfile::tempdir()?;
/// let manager = ChunkManager::open(Config::new(dir.path()))?;
///
/// let chunk = DataChunk::new([1; 32], [9; 32], 100..200, [("blocks".to_string(), url)].into());
/// manager.download_chunk(chunk);
/// let ready = manager.wait_ready_blocking([1; 32])?;
/// assert_eq!(std::fs::metadata(ready.path().join("blocks"))?.len(), 1000);
///
/// let found = manager.find_chunk([9; 32], 150).expect("block 150 is in the chunk");
/// assert_eq!(found.id(), &[1; 32]);
/// assert!(manager.find_chunk([9; 32], 200).is_none(), "ranges are half-open");
///
/// manager.delete_chunk([1; 32]);
/// assert!(manager.find_chunk([9; 32], 150).is_none(), "hidden at once");
/// assert!(found.path().join("blocks").exists(), "kept while a ref lives");
/// drop((found, ready));
/// manager.wait_idle_blocking();
/// manager.shutdown_blocking();
/// # Ok(())
/// # }
/// ```
pub struct ChunkManager {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stopped: watch::Receiver<bool>,
    report: StartupReport,
}

impl ChunkManager {
    /// Opens (creating if needed) the data directory and starts the manager.
    ///
    /// Takes the directory's lock, removes temporary data left by a crash, removes chunks
    /// whose deletion was recorded, and adopts every committed chunk as ready. Directories that
    /// are not valid chunks are reported in [`startup_report`](Self::startup_report) and never
    /// served.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if a live manager holds the directory; [`Error::DataDir`] if it
    /// cannot be created, read or written (or is a file); [`Error::Runtime`] if the background
    /// thread cannot start.
    pub fn open(config: Config) -> Result<Self, Error> {
        let root = config.data_dir.clone();
        std::fs::create_dir_all(&root).map_err(|source| Error::DataDir {
            path: root.clone(),
            action: "create the directory",
            source,
        })?;
        let lock = DirLock::acquire(&root)?;
        let layout = Layout::new(root, config.fsync);
        let (found, report) = disk::scan(&layout)?;
        for problem in &report.problems {
            tracing::warn!(%problem, "not serving a directory that is not a valid chunk");
        }

        let events = Emitter::new(config.event_capacity);
        let (released_sender, released) = Releases::channel();
        let mut table = Table::new(
            config.disk_budget,
            config.max_concurrent_downloads,
            config.fetch_slots,
            released_sender,
        );
        for found in found {
            table.adopt(found.chunk, found.path, found.size, found.cached);
        }
        let mut visible = BTreeMap::new();
        let (changes, version) = table.take_index_changes();
        for change in changes {
            if let IndexChange::Show(resident) = change {
                visible.insert(index_key(&resident.chunk), resident);
            }
        }
        let (retire, retired) = tokio::sync::mpsc::unbounded_channel();
        let index = Index::build(&visible, version, Some(retire.clone()));
        let sources = Sources::new(&config).map_err(|error| Error::Runtime {
            source: std::io::Error::other(format!("cannot build the HTTP client: {error}")),
        })?;
        tracing::info!(
            data_dir = %layout.root.display(),
            chunks = report.adopted,
            bytes = report.adopted_bytes,
            cleaned = report.cleaned_temporary,
            removed_deleted = report.removed_deleted,
            problems = report.problems.len(),
            "chunk manager opened"
        );
        let threads = config.worker_threads;
        let shared = Arc::new(Shared::new(
            config, layout, sources, table, index, retire, events,
        ));

        let (stopped_sender, stopped) = watch::channel(false);
        let background = shared.clone();
        if let Some(runtime) = background.config.runtime.clone() {
            // On the caller's runtime: its clock drives the timers (see `Config::runtime`).
            runtime.spawn(async move {
                let run = reconciler::run(background.clone(), released, visible, retired);
                reconciler::supervise_loop(background, run).await;
                drop(lock);
                stopped_sender.send_replace(true);
            });
            return Ok(Self {
                shared,
                thread: Mutex::new(None),
                stopped,
                report,
            });
        }
        let (started_sender, started) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("chunk-manager".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("chunk-manager-worker")
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _opener_waits = started_sender.send(Ok(()));
                        let run = reconciler::run(background.clone(), released, visible, retired);
                        runtime.block_on(reconciler::supervise_loop(background, run));
                        // Blocking work (file writers) ends before the lock is released.
                        drop(runtime);
                    }
                    Err(error) => {
                        let _opener_waits = started_sender.send(Err(error));
                    }
                }
                drop(lock);
                stopped_sender.send_replace(true);
            })
            .map_err(|source| Error::Runtime { source })?;
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                let _stopped = thread.join();
                return Err(Error::Runtime { source });
            }
            Err(_) => {
                let _stopped = thread.join();
                return Err(Error::Runtime {
                    source: std::io::Error::other("the background thread exited at start"),
                });
            }
        }
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
            stopped,
            report,
        })
    }

    /// Asks for the chunk to be on disk. The last call for an id wins: a queued or running
    /// download continues, a deleted chunk still held by refs is shown again without a
    /// download, a failed one is tried again now.
    ///
    /// An invalid description, or an id sent again with a different description while the
    /// first is in use, is refused: the error is in the chunk's [status](Self::status), an
    /// [`Event::Rejected`] or [`Event::DownloadFailed`], and the log.
    pub fn download_chunk(&self, chunk: DataChunk) {
        if self.shared.table().download_is_noop(&chunk) {
            // Nothing to do (a refreshed assignment): no validation, no wake-up of the
            // reconciler or of waiters, so the call stays cheap while downloads load the CPU.
            return;
        }
        let invalid = chunk.validate().err();
        let refused = self
            .shared
            .table()
            .request_download(Arc::new(chunk), invalid);
        self.shared.changed();
        if let Some(error) = refused {
            tracing::warn!(%error, "download request refused");
        }
        if self.shared.shutdown.is_cancelled() {
            tracing::warn!("download requested after shutdown; nothing will happen");
        }
    }

    /// Asks for the chunk to be gone. A queued download is unqueued, a running one cancelled
    /// (its partial files removed); a ready chunk is hidden at once and its files removed as
    /// soon as no [`ChunkRef`] holds it.
    pub fn delete_chunk(&self, chunk_id: ChunkId) {
        self.shared.table().request_delete(chunk_id);
        self.shared.changed();
    }

    /// Replaces the whole desired set in one step, as a scheduler's assignment does: every
    /// chunk not in `chunks` is deleted, every chunk in it is downloaded (or kept).
    ///
    /// Equivalent to calling [`delete_chunk`](Self::delete_chunk) and
    /// [`download_chunk`](Self::download_chunk) for each id, but atomic: no lookup sees a
    /// half-applied assignment. O(n) in the known chunks.
    pub fn assign(&self, chunks: impl IntoIterator<Item = DataChunk>) {
        let requests: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let invalid = chunk.validate().err();
                (Arc::new(chunk), invalid)
            })
            .collect();
        let refused = self.shared.table().request_assignment(requests);
        self.shared.changed();
        for error in refused {
            tracing::warn!(%error, "download request refused");
        }
    }

    /// Removes the directories that [`open`](Self::open) reported as not valid chunks
    /// ([`StartupReport::problems`]): they are never served, and only take space. Returns
    /// what could not be removed.
    pub fn remove_unusable(&self) -> Vec<Error> {
        let mut failures = Vec::new();
        for problem in &self.report.problems {
            let Error::Corrupt { path, .. } = problem else {
                continue;
            };
            // A chunk known again (re-requested after startup) owns its directory name: its
            // download replaces the corrupt copy itself.
            let named_id = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.rsplit('-').next())
                .and_then(|hex| crate::id_from_hex(hex).ok());
            if named_id.is_some_and(|id| self.shared.table().status(&id).is_some()) {
                continue;
            }
            let removed = if path.is_dir() {
                self.shared.layout.remove_dir(path)
            } else {
                std::fs::remove_file(path)
            };
            match removed {
                Ok(()) => tracing::info!(path = %path.display(), "removed an unusable directory"),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => failures.push(Error::DataDir {
                    path: path.clone(),
                    action: "remove an unusable directory",
                    source,
                }),
            }
        }
        failures
    }

    /// The ids of every ready chunk.
    pub fn list_chunks(&self) -> Vec<ChunkId> {
        // In this order: a hide the version shows is in the list read after it.
        let index = self.shared.index.load();
        let current = self
            .shared
            .visible_version
            .load(std::sync::atomic::Ordering::Acquire);
        index.ids(current, &self.shared.hides.load())
    }

    /// A ready chunk of `dataset_id` whose range contains `block_number`, pinned.
    ///
    /// O(log n), lock-free. Where ranges overlap, the covering chunk with the greatest
    /// `(start, id)` is returned, the same one each time.
    pub fn find_chunk(&self, dataset_id: DatasetId, block_number: u64) -> Option<ChunkRef> {
        self.shared
            .index
            .load()
            .find(&dataset_id, block_number)
            .map(|resident| ChunkRef::new(resident.clone()))
    }

    /// The ready chunk `chunk_id`, pinned.
    pub fn get_chunk(&self, chunk_id: &ChunkId) -> Option<ChunkRef> {
        self.shared.table().shown(chunk_id).map(ChunkRef::new)
    }

    /// Where one chunk stands, or `None` if the manager does not know it (never requested, or
    /// deleted and gone).
    pub fn status(&self, chunk_id: &ChunkId) -> Option<ChunkStatus> {
        self.shared.table().status(chunk_id)
    }

    /// The status of every chunk the manager knows. O(n).
    pub fn statuses(&self) -> Vec<ChunkStatus> {
        self.shared.table().statuses()
    }

    /// Counts by state and bytes. O(n).
    pub fn totals(&self) -> Totals {
        self.shared.table().totals()
    }

    /// A stream of [`Event`]s from now on. A subscriber that falls more than
    /// [`Config::event_capacity`] events behind misses the oldest ones (and is told so by
    /// `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.subscribe()
    }

    /// What [`open`](Self::open) found in the data directory.
    pub fn startup_report(&self) -> &StartupReport {
        &self.report
    }

    /// The configuration the manager runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Waits until the chunk is ready and visible to lookups, and returns it pinned.
    ///
    /// # Errors
    ///
    /// The chunk's error if its download failed, [`Error::NotWanted`] if it is not (or no
    /// longer) requested, [`Error::Shutdown`] if the manager stops first.
    pub async fn wait_ready(&self, chunk_id: ChunkId) -> Result<ChunkRef, Arc<Error>> {
        let mut changes = self.shared.watch();
        loop {
            changes.borrow_and_update();
            if let Some(failure) = self.shared.failure() {
                return Err(failure);
            }
            {
                let table = self.shared.table();
                match table.settled(&chunk_id) {
                    Settled::Ready(resident) if self.shared.index_current(&table) => {
                        return Ok(ChunkRef::new(resident));
                    }
                    Settled::Failed(error) => return Err(error),
                    Settled::NotWanted => {
                        return Err(Arc::new(Error::NotWanted { chunk: chunk_id }));
                    }
                    Settled::Ready(_) | Settled::Pending => {}
                }
            }
            if changes.changed().await.is_err() {
                return Err(Arc::new(Error::Shutdown));
            }
        }
    }

    /// [`wait_ready`](Self::wait_ready) for plain threads. Do not call it on an async task.
    pub fn wait_ready_blocking(&self, chunk_id: ChunkId) -> Result<ChunkRef, Arc<Error>> {
        futures::executor::block_on(self.wait_ready(chunk_id))
    }

    /// Gets a chunk for a query: pinned at once if it is ready, otherwise downloaded ahead of
    /// the background downloads and pinned when it is committed.
    ///
    /// This is the query path's "get or fetch and pin":
    ///
    /// - A chunk the manager does not hold is downloaded as **cached**: it is not assigned,
    ///   and once no ref pins it, it may be evicted (least recently fetched first) when the
    ///   disk budget needs room for another download. An assigned chunk is never evicted, and
    ///   a cached chunk that [`download_chunk`](Self::download_chunk) or
    ///   [`assign`](Self::assign) names becomes assigned. A cached chunk is ready and visible
    ///   to [`find_chunk`](Self::find_chunk) and [`list_chunks`](Self::list_chunks) like any
    ///   other; its status says `cached`.
    /// - Downloads for queries have their own queue, admitted before the background queue,
    ///   and [`Config::fetch_slots`] slots beyond [`Config::max_concurrent_downloads`]; a
    ///   fetch of a chunk queued in the background moves it ahead.
    /// - Concurrent fetches of one chunk share one download. A deleted chunk whose files are
    ///   still on disk is shown again without a download; a failed one is tried again now.
    /// - When it returns, lookups see the chunk too.
    /// - The returned [`ChunkRef`] pins the chunk: it is neither evicted nor removed while the
    ///   ref lives, even if [`delete_chunk`](Self::delete_chunk) is called meanwhile (the files
    ///   go after the last ref drops). Dropping the future gives up waiting; a cached chunk
    ///   nobody waits for any more whose download has not started is forgotten.
    ///
    /// Whether a chunk is cached is recorded on disk (a mark in `cached/`), so a cached chunk
    /// stays evictable after a restart.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidChunk`] or [`Error::Conflict`] (a different description than the one
    /// in use) at once, without changing anything; the download's error if it failed;
    /// [`Error::NotWanted`] if the chunk was deleted while the fetch waited;
    /// [`Error::Shutdown`] if the manager stops first.
    ///
    /// # Example
    ///
    /// ```
    /// use chunk_manager::{ChunkManager, Config, DataChunk};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let origin = chunk_origin::Origin::start()?;
    /// # origin.insert("c1/blocks", chunk_origin::content(1, 1000));
    /// # let url = origin.url("c1/blocks");
    /// let dir = tempfile::tempdir()?;
    /// let manager = ChunkManager::open(Config::new(dir.path()))?;
    /// let chunk = DataChunk::new([1; 32], [9; 32], 100..200, [("blocks".to_string(), url)].into());
    ///
    /// // Two queries want the chunk at once: one download, two pins.
    /// let (a, b) = tokio::join!(manager.fetch(chunk.clone()), manager.fetch(chunk));
    /// let (a, b) = (a?, b?);
    /// assert_eq!(std::fs::read(a.path().join("blocks"))?.len(), 1000);
    /// # assert_eq!(origin.get_count("c1/blocks"), 1);
    /// let status = manager.status(&[1; 32]).expect("known");
    /// assert!(status.cached && !status.wanted, "fetched for queries, not assigned");
    ///
    /// // Deleted while pinned: hidden at once, the files stay until the last ref drops.
    /// manager.delete_chunk([1; 32]);
    /// assert!(b.path().join("blocks").exists());
    /// drop((a, b));
    /// manager.wait_idle().await;
    /// assert!(manager.status(&[1; 32]).is_none());
    /// manager.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn fetch(&self, chunk: DataChunk) -> Result<ChunkRef, Arc<Error>> {
        let invalid = chunk.validate().err();
        let requested = {
            let mut table = self.shared.table();
            match table.request_fetch(Arc::new(chunk), invalid) {
                // Pinned under the lock: no eviction can come between.
                Fetch::Ready(resident) => Ok(ChunkRef::new(resident)),
                Fetch::Refused(error) => Err(Err(error)),
                Fetch::Pending(ticket) => Err(Ok(ticket)),
            }
        };
        self.shared.changed();
        let ticket = match requested {
            Ok(pinned) => {
                self.until_published().await;
                return Ok(pinned);
            }
            Err(Err(error)) => {
                tracing::warn!(%error, "fetch refused");
                return Err(error);
            }
            Err(Ok(ticket)) => ticket,
        };
        let mut waiting = FetchWait {
            shared: &self.shared,
            ticket,
            settled: false,
        };
        let mut changes = self.shared.watch();
        loop {
            changes.borrow_and_update();
            if let Some(failure) = self.shared.failure() {
                return Err(failure);
            }
            let settled = {
                let mut table = self.shared.table();
                match table.fetch_settled(&waiting.ticket) {
                    FetchState::Pending => None,
                    // Pinned under the lock: no eviction can come between.
                    FetchState::Ready(resident) => Some(Ok(ChunkRef::new(resident))),
                    FetchState::Failed(error) => Some(Err(error)),
                    FetchState::Gone => Some(Err(Arc::new(Error::NotWanted {
                        chunk: waiting.ticket.chunk,
                    }))),
                }
            };
            if let Some(result) = settled {
                waiting.settled = true;
                // The fetch no longer protects the chunk: the reconciler may have room to make.
                self.shared.changed();
                if result.is_ok() {
                    self.until_published().await;
                }
                return result;
            }
            if changes.changed().await.is_err() {
                return Err(Arc::new(Error::Shutdown));
            }
        }
    }

    /// The chunk's size in bytes, as a download would reserve it: each file's size declared in
    /// its [`FileCheck`](crate::FileCheck), else asked of its origin (`HEAD`, or a one-byte
    /// `GET` where `HEAD` is refused; S3 and other object stores by their metadata). Nothing
    /// is downloaded. For a caller that must know whether a set of chunks fits the budget
    /// before fetching them (a query), so it can fail at once rather than wait.
    ///
    /// # Errors
    ///
    /// The chunk's description is invalid, a file's origin is refused or cannot be reached,
    /// or a declared size disagrees with the origin's (one attempt, no retries).
    ///
    /// ```
    /// use chunk_manager::{ChunkManager, Config, DataChunk};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let origin = chunk_origin::Origin::start()?;
    /// # origin.insert("c1/blocks", chunk_origin::content(1, 1000));
    /// # origin.insert("c1/logs", chunk_origin::content(2, 24));
    /// let dir = tempfile::tempdir()?;
    /// let manager = ChunkManager::open(Config::new(dir.path()))?;
    /// let files = [
    ///     ("blocks".to_string(), origin.url("c1/blocks")),
    ///     ("logs".to_string(), origin.url("c1/logs")),
    /// ];
    /// let chunk = DataChunk::new([1; 32], [9; 32], 100..200, files.into());
    /// assert_eq!(manager.probe_size(&chunk).await?, 1024);
    /// # assert_eq!(origin.get_count("c1/blocks"), 0);
    /// # manager.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn probe_size(&self, chunk: &DataChunk) -> Result<u64, Error> {
        chunk.validate().map_err(|source| Error::InvalidChunk {
            chunk: *chunk.id(),
            source,
        })?;
        let probes = chunk.files().iter().map(|(name, url)| async move {
            if let Some(size) = chunk.checks().get(name).and_then(|check| check.size) {
                return Ok(size);
            }
            let context = crate::source::FileContext {
                chunk: chunk.id(),
                file: name,
                url,
            };
            let location = self.shared.sources.locate(context)?;
            let probe = self.shared.sources.probe(context, &location).await?;
            Ok(probe.size)
        });
        let sizes = futures::future::try_join_all(probes).await?;
        sizes
            .into_iter()
            .try_fold(0u64, u64::checked_add)
            .ok_or(Error::SizeOverflow { chunk: *chunk.id() })
    }

    /// Waits until lookups see every visibility change made so far (or the manager stops).
    async fn until_published(&self) {
        let mut changes = self.shared.watch();
        loop {
            changes.borrow_and_update();
            if self.shared.failure().is_some() || self.shared.index_current(&self.shared.table()) {
                return;
            }
            if self.shared.shutdown.is_cancelled() || changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// [`fetch`](Self::fetch) for plain threads. Do not call it on an async task.
    pub fn fetch_blocking(&self, chunk: DataChunk) -> Result<ChunkRef, Arc<Error>> {
        futures::executor::block_on(self.fetch(chunk))
    }

    /// Waits until the manager is idle: no job runs, nothing can start until something
    /// changes, and lookups see every change. Chunks waiting for refs to drop or for room in
    /// the budget do not keep the manager busy.
    pub async fn wait_idle(&self) {
        let mut changes = self.shared.watch();
        loop {
            changes.borrow_and_update();
            if self.shared.failure().is_some() {
                return;
            }
            {
                let table = self.shared.table();
                if table.is_idle() && self.shared.index_current(&table) {
                    return;
                }
            }
            if self.shared.shutdown.is_cancelled() || changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until the deletion of `chunk_id` is durable: its files are removed, or (while refs
    /// still pin it) a tombstone records the deletion, so neither a crash nor a restart brings
    /// it back. Returns at once for a chunk the manager does not hold.
    ///
    /// [`delete_chunk`](Self::delete_chunk) returns before anything touches the disk; call this
    /// after it when the caller acknowledges the deletion to someone else (the daemon answers
    /// `DELETE` only after it). A graceful [`shutdown`](Self::shutdown) also records every
    /// deletion requested before it.
    ///
    /// # Errors
    ///
    /// [`Error::Superseded`] if a later call asked for the chunk again before the deletion was
    /// recorded; [`Error::Shutdown`] or [`Error::Crashed`] if the manager stopped first (a
    /// graceful shutdown still records the deletion).
    pub async fn wait_deleted(&self, chunk_id: ChunkId) -> Result<(), Arc<Error>> {
        let mut changes = self.shared.watch();
        loop {
            changes.borrow_and_update();
            if let Some(failure) = self.shared.failure() {
                return Err(failure);
            }
            match self.shared.table().deletion(&chunk_id) {
                Deletion::Durable => return Ok(()),
                Deletion::Wanted => {
                    return Err(Arc::new(Error::Superseded { chunk: chunk_id }));
                }
                Deletion::Pending => {}
            }
            if changes.changed().await.is_err() {
                return Err(Arc::new(Error::Shutdown));
            }
        }
    }

    /// [`wait_deleted`](Self::wait_deleted) for plain threads. Do not call it on an async task.
    pub fn wait_deleted_blocking(&self, chunk_id: ChunkId) -> Result<(), Arc<Error>> {
        futures::executor::block_on(self.wait_deleted(chunk_id))
    }

    /// Whether the manager is running: `Ok` until it is shut down, the failure if its
    /// background loop failed (a bug), [`Error::Shutdown`] after a shutdown. A readiness check
    /// should report not ready on an error.
    pub fn health(&self) -> Result<(), Arc<Error>> {
        if let Some(failure) = self.shared.failure() {
            return Err(failure);
        }
        if self.shared.shutdown.is_cancelled() {
            return Err(Arc::new(Error::Shutdown));
        }
        Ok(())
    }

    /// [`wait_idle`](Self::wait_idle) for plain threads. Do not call it on an async task.
    pub fn wait_idle_blocking(&self) {
        futures::executor::block_on(self.wait_idle());
    }

    /// Stops gracefully: running downloads are cancelled, jobs end, the lock is released.
    /// Refs stay valid. Calling it again, or dropping the manager after it, is fine. With
    /// [`Config::runtime`], this is the way to wait for the stop.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let mut stopped = self.stopped.clone();
        let _background_thread_gone = stopped.wait_for(|stopped| *stopped).await;
        self.join();
    }

    /// [`shutdown`](Self::shutdown) for plain threads. With [`Config::runtime`], it only asks
    /// the manager to stop (waiting could deadlock the runtime that does the stopping).
    pub fn shutdown_blocking(&self) {
        self.shared.shutdown.cancel();
        self.join();
    }

    fn join(&self) {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the chunk manager's background thread panicked");
        }
    }

    /// Re-reads every ready chunk's files and checks sizes and hashes against the manifests.
    /// Returns the chunks that do not match. Blocking and slow (it reads every byte): meant for
    /// operators' checks, not for the query path.
    pub fn verify(&self) -> Vec<(ChunkId, Error)> {
        let ready = self.shared.index.load();
        let mut bad = Vec::new();
        for id in ready.visible_ids() {
            let Some(chunk) = self.get_chunk(&id) else {
                continue;
            };
            if let Err(reason) = disk::verify_chunk_dir(chunk.path()) {
                tracing::warn!(chunk = %ShortId(&id), %reason, "chunk does not match its manifest");
                bad.push((
                    id,
                    Error::Corrupt {
                        path: chunk.path().to_path_buf(),
                        reason,
                    },
                ));
            }
        }
        bad
    }
}

/// A fetch waiting for its chunk. Dropped before it settled (the caller gave up), it tells the
/// table, so that the chunk is no longer protected from eviction for it.
struct FetchWait<'a> {
    shared: &'a Shared,
    ticket: FetchTicket,
    settled: bool,
}

impl Drop for FetchWait<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.table().fetch_abandoned(&self.ticket);
            self.shared.changed();
        }
    }
}

impl Drop for ChunkManager {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.join();
    }
}

impl std::fmt::Debug for ChunkManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkManager")
            .field("data_dir", &self.shared.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl DataManager for ChunkManager {
    /// Opens the manager with [`Config::new`].
    ///
    /// # Panics
    ///
    /// If [`ChunkManager::open`] fails (the directory is locked by a live manager, or cannot
    /// be used), with the error's message. Use [`ChunkManager::open`] to handle the error.
    fn new(data_dir: PathBuf) -> Self {
        match ChunkManager::open(Config::new(data_dir)) {
            Ok(manager) => manager,
            Err(error) => panic!("cannot open the chunk manager: {error}"),
        }
    }

    fn download_chunk(&self, chunk: DataChunk) {
        ChunkManager::download_chunk(self, chunk);
    }

    fn list_chunks(&self) -> Vec<ChunkId> {
        ChunkManager::list_chunks(self)
    }

    #[allow(refining_impl_trait)]
    fn find_chunk(&self, dataset_id: [u8; 32], block_number: u64) -> Option<ChunkRef> {
        ChunkManager::find_chunk(self, dataset_id, block_number)
    }

    fn delete_chunk(&self, chunk_id: [u8; 32]) {
        ChunkManager::delete_chunk(self, chunk_id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::Ordering;

    use super::*;

    /// A URL on 127.0.0.1 that accepts connections and never answers, so a download stays
    /// in flight.
    fn silent_origin() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/never", listener.local_addr().unwrap());
        (listener, url)
    }

    #[tokio::test]
    async fn issue10_a_reconciler_failure_fails_waiters_and_health() {
        let dir = tempfile::tempdir().unwrap();
        let manager = ChunkManager::open(Config::new(dir.path())).unwrap();
        let (_listener, url) = silent_origin();
        let chunk = DataChunk::new([1; 32], [2; 32], 0..10, [("f".to_string(), url)].into());
        manager.download_chunk(chunk.clone());
        assert!(manager.health().is_ok());

        let waiting = manager.wait_ready([1; 32]);
        let fetching = manager.fetch(chunk);
        let idle = manager.wait_idle();
        manager
            .shared
            .panic_next_turn
            .store(true, Ordering::Relaxed);
        manager.shared.changed();
        let (waited, fetched, ()) = tokio::join!(waiting, fetching, idle);

        for result in [waited.map(drop), fetched.map(drop)] {
            let error = result.unwrap_err();
            assert!(matches!(*error, Error::Crashed { .. }), "{error}");
            assert!(error.to_string().contains("injected"), "{error}");
        }
        let error = manager.health().unwrap_err();
        assert!(matches!(*error, Error::Crashed { .. }), "{error}");
        let error = manager.wait_deleted([1; 32]).await.unwrap_err();
        assert!(matches!(*error, Error::Crashed { .. }), "{error}");
        manager.shutdown().await;
    }
}
