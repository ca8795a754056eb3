//! The chunk table: the pure state machine behind the manager, with the disk budget.
//!
//! # Overview
//!
//! The table holds, for every chunk the manager knows, what the caller wants (`wanted`, the
//! last call wins) and what is true (on disk or not, which job runs). API calls change the
//! wanted side under the manager's lock in O(1); the reconciler asks [`Table::next_work`] for
//! the jobs that move the facts towards the wish, runs them without the lock, and reports
//! their outcomes back. The table does no IO and never awaits, so every transition is a plain
//! function call that tests can drive directly.
//!
//! # States
//!
//! ```text
//!                 download                 admitted                 committed
//!   (unknown) ──────────────▶ Queued ───────────────▶ Downloading ─────────────▶ Ready
//!       ▲                      │  ▲ budget full            │  │ failed             │ delete
//!       │ delete/removed       │  └── WaitingForSpace      │  └────▶ Failed        ▼
//!       └──────────────────────┴───────────────────────────┘ delete: cancel    Deleting
//!                                                                    (hidden at once; tombstone
//!                                                                     while refs hold it; files
//!                                                                     removed after the last ref)
//! ```
//!
//! A download of a chunk in `Deleting` shows it again without downloading, unless its files are
//! already being removed, in which case it is downloaded again once they are gone.
//!
//! # Concurrency
//!
//! At most one job runs per chunk, so the filesystem operations on one chunk never race. The
//! table is owned by [`Shared`](crate::reconciler::Shared) behind a `std::sync::Mutex`; no
//! method holds it for more than an O(1) map step, except [`Table::next_work`] (bounded by the
//! chunks touched since the last turn) and the O(n) listings.
//!
//! # Disk budget
//!
//! `committed + reserved <= limit` at all times: a download reserves its chunk's size before it
//! writes a byte, and the reservation becomes committed bytes when the chunk is committed.

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

use crate::chunk::{ChunkId, DataChunk, DatasetId, InvalidChunk};
use crate::error::Error;
use crate::event::{Emitter, Event};
use crate::handle::{Released, Releases, Resident};
use crate::status::{ChunkState, ChunkStatus, Totals};

/// Bytes done and total of one running download, written by the job, read by status calls.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) done: AtomicU64,
    /// Zero until the origin has told the size.
    pub(crate) total: AtomicU64,
}

impl Progress {
    pub(crate) fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, bytes: u64) {
        self.done.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A job the reconciler must run. At most one runs per chunk.
#[derive(Debug)]
pub(crate) enum Work {
    /// Download the chunk into temporary space and commit it.
    Download {
        chunk: Arc<DataChunk>,
        cancel: CancellationToken,
        progress: Arc<Progress>,
        /// The bytes already reserved, when the size is known from an earlier attempt.
        reserved: Option<u64>,
    },
    /// Remove a committed chunk's files, then its tombstone if it has one.
    Remove {
        chunk: ChunkId,
        path: PathBuf,
        tombstone: bool,
    },
    /// Record durably that a pinned chunk is deleted, so a crash does not bring it back.
    WriteTombstone { chunk: ChunkId },
    /// Remove the record after the chunk was wanted again.
    RemoveTombstone { chunk: ChunkId },
}

/// How a download job ended.
#[derive(Debug)]
pub(crate) enum DownloadOutcome {
    /// Committed at `path`.
    Committed { path: PathBuf, size: u64 },
    /// Cancelled; its temporary files are removed.
    Cancelled,
    /// The chunk (of `size` bytes) does not fit in the budget now.
    NeedsSpace { size: u64 },
    /// Failed for good (retries exhausted or a permanent error).
    Failed { error: Error, attempts: u32 },
}

/// How a job ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Download(DownloadOutcome),
    Removed(Result<(), Error>),
    TombstoneWritten(Result<(), Error>),
    TombstoneRemoved(Result<(), Error>),
}

/// The answer to a running download that asks to reserve its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reservation {
    Granted,
    NoSpace,
    TooLarge {
        budget: u64,
    },
    /// The download is no longer running (cancelled meanwhile).
    Gone,
}

/// A change to the set of visible chunks, applied by the reconciler to its lookup index.
#[derive(Debug)]
pub(crate) enum IndexChange {
    Show(Arc<Resident>),
    Hide(IndexKey),
}

/// Orders visible chunks for lookups: by dataset, then range start, then id.
pub(crate) type IndexKey = (DatasetId, u64, ChunkId);

pub(crate) fn index_key(chunk: &DataChunk) -> IndexKey {
    (*chunk.dataset_id(), chunk.block_range().start, *chunk.id())
}

/// What a waiter sees of one chunk.
#[derive(Debug)]
pub(crate) enum Settled {
    Ready(Arc<Resident>),
    Failed(Arc<Error>),
    NotWanted,
    Pending,
}

#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    limit: u64,
    committed: u64,
    reserved: u64,
}

impl Budget {
    fn available(&self) -> u64 {
        self.limit.saturating_sub(self.committed + self.reserved)
    }
}

#[derive(Debug)]
enum Residency {
    /// Wanted and visible.
    Shown(Arc<Resident>),
    /// Deleted: hidden, files kept until every strong reference is gone.
    Hidden(Weak<Resident>),
}

#[derive(Debug)]
enum Disk {
    Absent,
    Committed {
        path: PathBuf,
        size: u64,
        residency: Residency,
    },
}

#[derive(Debug)]
enum Running {
    Download {
        cancel: CancellationToken,
        progress: Arc<Progress>,
        reserved: u64,
    },
    Remove,
    Tombstone,
}

#[derive(Debug)]
struct Entry {
    chunk: Arc<DataChunk>,
    /// The last request: download (true) or delete (false).
    wanted: bool,
    disk: Disk,
    job: Option<Running>,
    /// Whether a durable deletion record exists for the chunk.
    tombstone: bool,
    /// In the download queue.
    queued: bool,
    /// The chunk's size, once an origin has told it.
    size: Option<u64>,
    waiting_for_space: bool,
    failure: Option<(Arc<Error>, u32)>,
    /// A removal or tombstone write failed; not retried until the chunk is requested again.
    io_failed: bool,
    rejected: Option<Arc<Error>>,
}

impl Entry {
    fn new(chunk: Arc<DataChunk>) -> Self {
        Self {
            chunk,
            wanted: true,
            disk: Disk::Absent,
            job: None,
            tombstone: false,
            queued: false,
            size: None,
            waiting_for_space: false,
            failure: None,
            io_failed: false,
            rejected: None,
        }
    }

    /// Whether a different description may replace this one: nothing of the old one is on
    /// disk or in flight.
    fn replaceable(&self) -> bool {
        matches!(self.disk, Disk::Absent) && self.job.is_none()
    }
}

/// The table. See the module docs.
#[derive(Debug)]
pub(crate) struct Table {
    entries: HashMap<ChunkId, Entry>,
    /// Chunks waiting to download, oldest first. May hold stale ids; admission skips them.
    queue: VecDeque<ChunkId>,
    /// Chunks whose facts may lag their wish; examined by the next `next_work`.
    dirty: Vec<ChunkId>,
    /// Whether admission may have something to start (new queue entries, a freed slot or
    /// freed bytes).
    admission_dirty: bool,
    budget: Budget,
    max_downloads: usize,
    downloads_running: usize,
    jobs_running: usize,
    next_generation: u64,
    index_changes: Vec<IndexChange>,
    /// Counts index changes; the reconciler publishes up to a version.
    index_version: u64,
    shutting_down: bool,
    events: Emitter,
    released: Releases,
}

impl Table {
    pub(crate) fn new(
        budget: u64,
        max_downloads: usize,
        events: Emitter,
        released: Releases,
    ) -> Self {
        Self {
            entries: HashMap::new(),
            queue: VecDeque::new(),
            dirty: Vec::new(),
            admission_dirty: false,
            budget: Budget {
                limit: budget,
                ..Budget::default()
            },
            max_downloads: max_downloads.max(1),
            downloads_running: 0,
            jobs_running: 0,
            next_generation: 0,
            index_changes: Vec::new(),
            index_version: 0,
            shutting_down: false,
            events,
            released,
        }
    }

    /// Adds a chunk found committed on disk at startup: ready and wanted.
    pub(crate) fn adopt(&mut self, chunk: Arc<DataChunk>, path: PathBuf, size: u64) {
        let id = *chunk.id();
        let resident = self.new_resident(chunk.clone(), path.clone(), size);
        self.show(&resident);
        self.budget.committed += size;
        let mut entry = Entry::new(chunk);
        entry.size = Some(size);
        entry.disk = Disk::Committed {
            path,
            size,
            residency: Residency::Shown(resident),
        };
        self.entries.insert(id, entry);
    }

    /// Whether a download call for `chunk` would change nothing: the same description is
    /// already wanted and queued, downloading or ready, with nothing to retry. Such calls
    /// (an assignment refreshed) are answered without marking work or waking anyone.
    pub(crate) fn download_is_noop(&self, chunk: &DataChunk) -> bool {
        self.entries.get(chunk.id()).is_some_and(|entry| {
            entry.wanted
                && *entry.chunk == *chunk
                && entry.failure.is_none()
                && entry.rejected.is_none()
                && !entry.io_failed
                && (entry.queued
                    || entry.job.is_some()
                    || matches!(
                        entry.disk,
                        Disk::Committed {
                            residency: Residency::Shown(_),
                            ..
                        }
                    ))
        })
    }

    /// A call to download `chunk`. `invalid` is the result of validating it, done by the
    /// caller outside the lock. Returns the error when the request is refused or the chunk is
    /// invalid, for the caller to log.
    pub(crate) fn request_download(
        &mut self,
        chunk: Arc<DataChunk>,
        invalid: Option<InvalidChunk>,
    ) -> Option<Arc<Error>> {
        let id = *chunk.id();
        let entry = self
            .entries
            .entry(id)
            .or_insert_with(|| Entry::new(chunk.clone()));
        if entry.chunk != chunk {
            if !entry.replaceable() {
                let error = Arc::new(match invalid {
                    Some(source) => Error::InvalidChunk { chunk: id, source },
                    None => Error::Conflict { chunk: id },
                });
                entry.rejected = Some(error.clone());
                emit(
                    &self.events,
                    Event::Rejected {
                        chunk: id,
                        error: error.clone(),
                    },
                );
                return Some(error);
            }
            entry.chunk = chunk;
            entry.size = None;
        }
        entry.rejected = None;
        entry.io_failed = false;
        entry.wanted = true;
        if let Some(source) = invalid {
            let error = Arc::new(Error::InvalidChunk { chunk: id, source });
            entry.failure = Some((error.clone(), 0));
            emit(
                &self.events,
                Event::DownloadFailed {
                    chunk: id,
                    error: error.clone(),
                    attempts: 0,
                },
            );
            return Some(error);
        }
        let mut show = None;
        match (&mut entry.disk, &entry.job) {
            // Its files are going; download again once they are gone (see `removal_finished`).
            (_, Some(Running::Remove)) => {}
            (
                Disk::Committed {
                    path,
                    size,
                    residency,
                },
                _,
            ) => {
                if let Residency::Hidden(weak) = residency {
                    let resident = match weak.upgrade() {
                        Some(resident) => resident,
                        None => {
                            // Every ref is gone but the files are intact: a new resident over
                            // them; the stale release of the old one is harmless.
                            self.next_generation += 1;
                            Arc::new(Resident::new(
                                entry.chunk.clone(),
                                path.clone(),
                                *size,
                                self.next_generation,
                                self.released.clone(),
                            ))
                        }
                    };
                    resident.set_hidden(false);
                    show = Some(resident.clone());
                    *residency = Residency::Shown(resident);
                }
            }
            // A cancelled download still running: `download_finished` queues it again.
            (Disk::Absent, Some(_)) => {}
            (Disk::Absent, None) => {
                if !entry.queued {
                    entry.queued = true;
                    // A retry after a failure goes first ("try again now"); a new chunk waits
                    // its turn.
                    if entry.failure.take().is_some() {
                        self.queue.push_front(id);
                    } else {
                        self.queue.push_back(id);
                    }
                    self.admission_dirty = true;
                }
            }
        }
        if let Some(resident) = show {
            self.show(&resident);
        }
        self.dirty.push(id);
        None
    }

    /// Replaces the whole desired set: every wanted chunk not in `chunks` is deleted, every
    /// chunk in it is requested, as one step under one lock. Returns the refused requests.
    pub(crate) fn request_assignment(
        &mut self,
        chunks: Vec<(Arc<DataChunk>, Option<InvalidChunk>)>,
    ) -> Vec<Arc<Error>> {
        let assigned: std::collections::HashSet<ChunkId> =
            chunks.iter().map(|(chunk, _)| *chunk.id()).collect();
        let unassigned: Vec<ChunkId> = self
            .entries
            .iter()
            .filter(|(id, entry)| entry.wanted && !assigned.contains(*id))
            .map(|(id, _)| *id)
            .collect();
        for id in unassigned {
            self.request_delete(id);
        }
        chunks
            .into_iter()
            .filter_map(|(chunk, invalid)| self.request_download(chunk, invalid))
            .collect()
    }

    /// A call to delete the chunk `id`.
    pub(crate) fn request_delete(&mut self, id: ChunkId) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.wanted = false;
        entry.rejected = None;
        entry.io_failed = false;
        if let Some(Running::Download { cancel, .. }) = &entry.job {
            cancel.cancel();
        }
        let mut hide = None;
        if let Disk::Committed { residency, .. } = &mut entry.disk
            && let Residency::Shown(resident) = residency
        {
            resident.set_hidden(true);
            hide = Some(index_key(&resident.chunk));
            *residency = Residency::Hidden(Arc::downgrade(resident));
        }
        let nothing_on_disk = entry.replaceable();
        if let Some(key) = hide {
            self.hide(key);
        }
        if nothing_on_disk {
            // Queued or failed: unqueued and forgotten at once (admission skips the stale id).
            self.forget(id);
        } else {
            self.dirty.push(id);
        }
    }

    /// The last strong reference to a resident chunk is gone.
    pub(crate) fn released(&mut self, released: Released) {
        self.released.folded();
        if self.entries.contains_key(&released.id) {
            self.dirty.push(released.id);
        }
    }

    /// A running download asks to reserve `size` bytes (its total, now known).
    pub(crate) fn try_reserve(&mut self, id: &ChunkId, size: u64) -> Reservation {
        let Some(entry) = self.entries.get_mut(id) else {
            return Reservation::Gone;
        };
        let Some(Running::Download {
            reserved,
            cancel,
            progress,
        }) = &mut entry.job
        else {
            return Reservation::Gone;
        };
        if cancel.is_cancelled() {
            return Reservation::Gone;
        }
        entry.size = Some(size);
        if size > self.budget.limit {
            return Reservation::TooLarge {
                budget: self.budget.limit,
            };
        }
        let others = self.budget.committed + self.budget.reserved - *reserved;
        if others + size > self.budget.limit {
            return Reservation::NoSpace;
        }
        self.budget.reserved = self.budget.reserved - *reserved + size;
        *reserved = size;
        progress.total.store(size, Ordering::Relaxed);
        Reservation::Granted
    }

    /// The jobs to start now. Marks them running.
    pub(crate) fn next_work(&mut self) -> Vec<Work> {
        let mut work = Vec::new();
        if self.shutting_down {
            self.dirty.clear();
            return work;
        }
        for id in mem::take(&mut self.dirty) {
            self.settle(id, &mut work);
        }
        self.admit(&mut work);
        work
    }

    /// Moves one chunk's facts a step towards its wish, if no job runs for it.
    fn settle(&mut self, id: ChunkId, work: &mut Vec<Work>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.job.is_some() || entry.io_failed {
            return;
        }
        match &entry.disk {
            Disk::Committed {
                residency: Residency::Shown(_),
                ..
            } => {
                if entry.tombstone {
                    entry.job = Some(Running::Tombstone);
                    self.jobs_running += 1;
                    work.push(Work::RemoveTombstone { chunk: id });
                }
            }
            Disk::Committed {
                residency: Residency::Hidden(weak),
                path,
                ..
            } => {
                if weak.strong_count() == 0 {
                    entry.job = Some(Running::Remove);
                    self.jobs_running += 1;
                    work.push(Work::Remove {
                        chunk: id,
                        path: path.clone(),
                        tombstone: entry.tombstone,
                    });
                } else if !entry.tombstone {
                    entry.job = Some(Running::Tombstone);
                    self.jobs_running += 1;
                    work.push(Work::WriteTombstone { chunk: id });
                }
            }
            Disk::Absent => {
                if !entry.wanted {
                    self.forget(id);
                } else if !entry.queued && entry.failure.is_none() {
                    entry.queued = true;
                    self.queue.push_back(id);
                    self.admission_dirty = true;
                }
            }
        }
    }

    /// Starts queued downloads while there are slots and room in the budget.
    fn admit(&mut self, work: &mut Vec<Work>) {
        if !self.admission_dirty {
            return;
        }
        self.admission_dirty = false;
        let mut position = 0;
        while position < self.queue.len() && self.downloads_running < self.max_downloads {
            let id = self.queue[position];
            let Some(entry) = self.entries.get_mut(&id) else {
                self.queue.remove(position);
                continue;
            };
            if !entry.queued || entry.job.is_some() || !entry.wanted {
                entry.queued = entry.queued && entry.job.is_none() && entry.wanted;
                self.queue.remove(position);
                continue;
            }
            let reserved = match entry.size {
                Some(size) if size > self.budget.limit => {
                    let error = Arc::new(Error::TooLargeForBudget {
                        chunk: id,
                        needed: size,
                        budget: self.budget.limit,
                    });
                    entry.queued = false;
                    entry.waiting_for_space = false;
                    entry.failure = Some((error.clone(), 0));
                    emit(
                        &self.events,
                        Event::DownloadFailed {
                            chunk: id,
                            error,
                            attempts: 0,
                        },
                    );
                    self.queue.remove(position);
                    continue;
                }
                Some(size) if size > self.budget.available() => {
                    if !entry.waiting_for_space {
                        entry.waiting_for_space = true;
                        emit(
                            &self.events,
                            Event::BudgetExceeded {
                                chunk: id,
                                needed: size,
                                available: self.budget.available(),
                            },
                        );
                    }
                    position += 1;
                    continue;
                }
                Some(size) => size,
                None => 0,
            };
            self.queue.remove(position);
            entry.queued = false;
            entry.waiting_for_space = false;
            let cancel = CancellationToken::new();
            let progress = Arc::new(Progress::default());
            progress.total.store(reserved, Ordering::Relaxed);
            entry.job = Some(Running::Download {
                cancel: cancel.clone(),
                progress: progress.clone(),
                reserved,
            });
            self.budget.reserved += reserved;
            self.downloads_running += 1;
            self.jobs_running += 1;
            emit(&self.events, Event::DownloadStarted { chunk: id });
            work.push(Work::Download {
                chunk: entry.chunk.clone(),
                cancel,
                progress,
                reserved: (reserved > 0).then_some(reserved),
            });
        }
    }

    /// A job ended.
    pub(crate) fn job_finished(&mut self, id: ChunkId, outcome: Outcome) {
        let Some(entry) = self.entries.get_mut(&id) else {
            debug_assert!(false, "a job finished for an unknown chunk");
            return;
        };
        let Some(job) = entry.job.take() else {
            debug_assert!(false, "a job finished for a chunk without a job");
            return;
        };
        self.jobs_running -= 1;
        self.dirty.push(id);
        match (job, outcome) {
            (Running::Download { reserved, .. }, Outcome::Download(outcome)) => {
                self.downloads_running -= 1;
                self.budget.reserved -= reserved;
                self.admission_dirty = true;
                self.download_finished(id, outcome);
            }
            (Running::Remove, Outcome::Removed(result)) => self.removal_finished(id, result),
            (Running::Tombstone, Outcome::TombstoneWritten(result)) => {
                if let Some(entry) = self.entries.get_mut(&id) {
                    match result {
                        Ok(()) => {
                            entry.tombstone = true;
                            if let Disk::Committed {
                                residency: Residency::Hidden(weak),
                                ..
                            } = &entry.disk
                                && weak.strong_count() > 0
                            {
                                emit(&self.events, Event::WaitingForRefs { chunk: id });
                            }
                        }
                        Err(error) => self.io_failed(id, error),
                    }
                }
            }
            (Running::Tombstone, Outcome::TombstoneRemoved(result)) => match result {
                Ok(()) => {
                    if let Some(entry) = self.entries.get_mut(&id) {
                        entry.tombstone = false;
                    }
                }
                Err(error) => self.io_failed(id, error),
            },
            (job, outcome) => {
                debug_assert!(false, "job {job:?} ended with {outcome:?}");
            }
        }
    }

    fn download_finished(&mut self, id: ChunkId, outcome: DownloadOutcome) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        match outcome {
            DownloadOutcome::Committed { path, size } => {
                self.budget.committed += size;
                entry.size = Some(size);
                entry.failure = None;
                self.next_generation += 1;
                let resident = Arc::new(Resident::new(
                    entry.chunk.clone(),
                    path.clone(),
                    size,
                    self.next_generation,
                    self.released.clone(),
                ));
                let wanted = entry.wanted;
                resident.set_hidden(!wanted);
                entry.disk = Disk::Committed {
                    path,
                    size,
                    residency: if wanted {
                        Residency::Shown(resident.clone())
                    } else {
                        // Deleted while committing: removed as soon as `settle` runs.
                        Residency::Hidden(Arc::downgrade(&resident))
                    },
                };
                if wanted {
                    self.show(&resident);
                    emit(
                        &self.events,
                        Event::ChunkReady {
                            chunk: id,
                            bytes: size,
                        },
                    );
                }
                self.storage_used();
            }
            DownloadOutcome::Cancelled => {
                if entry.wanted {
                    entry.queued = true;
                    self.queue.push_front(id);
                }
            }
            DownloadOutcome::NeedsSpace { size } => {
                entry.size = Some(size);
                if entry.wanted {
                    entry.queued = true;
                    entry.waiting_for_space = true;
                    self.queue.push_front(id);
                    emit(
                        &self.events,
                        Event::BudgetExceeded {
                            chunk: id,
                            needed: size,
                            available: self.budget.available(),
                        },
                    );
                }
            }
            DownloadOutcome::Failed { error, attempts } => {
                if entry.wanted {
                    let error = Arc::new(error);
                    entry.failure = Some((error.clone(), attempts));
                    emit(
                        &self.events,
                        Event::DownloadFailed {
                            chunk: id,
                            error,
                            attempts,
                        },
                    );
                }
            }
        }
    }

    fn removal_finished(&mut self, id: ChunkId, result: Result<(), Error>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if let Err(error) = result {
            self.io_failed(id, error);
            return;
        }
        if let Disk::Committed { size, .. } = entry.disk {
            self.budget.committed -= size;
        }
        entry.disk = Disk::Absent;
        entry.tombstone = false;
        self.admission_dirty = true;
        if entry.wanted {
            entry.queued = true;
            self.queue.push_front(id);
        } else {
            self.forget(id);
        }
        self.storage_used();
    }

    fn io_failed(&mut self, id: ChunkId, error: Error) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.io_failed = true;
        }
        emit(
            &self.events,
            Event::IoFailed {
                chunk: id,
                error: Arc::new(error),
            },
        );
    }

    /// Drops a chunk that is neither wanted nor on disk.
    fn forget(&mut self, id: ChunkId) {
        self.entries.remove(&id);
        emit(&self.events, Event::ChunkDeleted { chunk: id });
    }

    fn new_resident(&mut self, chunk: Arc<DataChunk>, path: PathBuf, size: u64) -> Arc<Resident> {
        self.next_generation += 1;
        Arc::new(Resident::new(
            chunk,
            path,
            size,
            self.next_generation,
            self.released.clone(),
        ))
    }

    fn show(&mut self, resident: &Arc<Resident>) {
        self.index_changes.push(IndexChange::Show(resident.clone()));
        self.index_version += 1;
    }

    fn hide(&mut self, key: IndexKey) {
        self.index_changes.push(IndexChange::Hide(key));
        self.index_version += 1;
    }

    fn storage_used(&self) {
        emit(
            &self.events,
            Event::StorageUsed {
                used: self.budget.committed,
                reserved: self.budget.reserved,
                budget: self.budget.limit,
            },
        );
    }

    /// The visibility changes since the last call, and the version they bring the index to.
    pub(crate) fn take_index_changes(&mut self) -> (Vec<IndexChange>, u64) {
        (mem::take(&mut self.index_changes), self.index_version)
    }

    /// The version of the visible set; the index is current once it has published it.
    pub(crate) fn index_version(&self) -> u64 {
        self.index_version
    }

    /// Stops starting jobs and cancels the running downloads.
    pub(crate) fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for entry in self.entries.values() {
            if let Some(Running::Download { cancel, .. }) = &entry.job {
                cancel.cancel();
            }
        }
    }

    /// Whether nothing can happen until a call, a job's end or a ref's drop: no job runs and
    /// nothing is waiting to start.
    pub(crate) fn is_idle(&self) -> bool {
        self.jobs_running == 0
            && self.released.in_flight() == 0
            && self.dirty.is_empty()
            && !self.admission_dirty
            && self.index_changes.is_empty()
    }

    /// The visible chunk `id`, if it is ready.
    pub(crate) fn shown(&self, id: &ChunkId) -> Option<Arc<Resident>> {
        match &self.entries.get(id)?.disk {
            Disk::Committed {
                residency: Residency::Shown(resident),
                ..
            } => Some(resident.clone()),
            _ => None,
        }
    }

    /// Where a chunk stands, for waiters.
    pub(crate) fn settled(&self, id: &ChunkId) -> Settled {
        let Some(entry) = self.entries.get(id) else {
            return Settled::NotWanted;
        };
        if !entry.wanted {
            return Settled::NotWanted;
        }
        if let Disk::Committed {
            residency: Residency::Shown(resident),
            ..
        } = &entry.disk
        {
            return Settled::Ready(resident.clone());
        }
        if entry.job.is_none()
            && let Some((error, _)) = &entry.failure
        {
            return Settled::Failed(error.clone());
        }
        if self.shutting_down {
            return Settled::Failed(Arc::new(Error::Shutdown));
        }
        Settled::Pending
    }

    pub(crate) fn status(&self, id: &ChunkId) -> Option<ChunkStatus> {
        self.entries.get(id).map(|entry| self.status_of(entry))
    }

    pub(crate) fn statuses(&self) -> Vec<ChunkStatus> {
        self.entries
            .values()
            .map(|entry| self.status_of(entry))
            .collect()
    }

    fn status_of(&self, entry: &Entry) -> ChunkStatus {
        ChunkStatus {
            chunk: entry.chunk.clone(),
            state: self.state_of(entry),
            wanted: entry.wanted,
            rejected: entry.rejected.clone(),
        }
    }

    fn state_of(&self, entry: &Entry) -> ChunkState {
        if let Some(Running::Download { progress, .. }) = &entry.job {
            let total = progress.total.load(Ordering::Relaxed);
            return ChunkState::Downloading {
                bytes_done: progress.done.load(Ordering::Relaxed),
                bytes_total: (total > 0).then_some(total),
            };
        }
        match &entry.disk {
            Disk::Committed {
                residency: Residency::Shown(_),
                ..
            } => ChunkState::Ready,
            Disk::Committed {
                residency: Residency::Hidden(weak),
                ..
            } => ChunkState::Deleting {
                pinned: weak.strong_count() > 0,
            },
            Disk::Absent => {
                if let Some((error, attempts)) = &entry.failure {
                    ChunkState::Failed {
                        error: error.clone(),
                        attempts: *attempts,
                    }
                } else if entry.waiting_for_space {
                    ChunkState::WaitingForSpace {
                        needed: entry.size.unwrap_or(0),
                        available: self.budget.available(),
                    }
                } else {
                    ChunkState::Queued
                }
            }
        }
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut totals = Totals {
            bytes_committed: self.budget.committed,
            bytes_reserved: self.budget.reserved,
            disk_budget: self.budget.limit,
            ..Totals::default()
        };
        for entry in self.entries.values() {
            match self.state_of(entry) {
                ChunkState::Queued => totals.queued += 1,
                ChunkState::WaitingForSpace { .. } => totals.waiting_for_space += 1,
                ChunkState::Downloading { .. } => totals.downloading += 1,
                ChunkState::Ready => totals.ready += 1,
                ChunkState::Deleting { pinned } => {
                    totals.deleting += 1;
                    totals.pinned += usize::from(pinned);
                }
                ChunkState::Failed { .. } => totals.failed += 1,
            }
        }
        totals
    }
}

fn emit(events: &Emitter, event: Event) {
    events.emit(event);
}

#[cfg(test)]
mod tests;
