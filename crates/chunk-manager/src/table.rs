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
//! The table is pure: it touches no channel, no atomic shared with other threads and no job.
//! Its transitions record what is to be done as [`Effect`]s (send an event, cancel a download,
//! hide or show a resident, publish the visible version, count a release as folded), in
//! order, and hand out the jobs to start ([`Table::next_work`]), the index changes to publish
//! and the disk jobs to retry; the reconciler carries them all out (the effects through
//! [`crate::reconciler::apply`], when the holder of the lock releases it).
//!
//! # States
//!
//! Each entry is in one `Phase` (what is on disk, which job runs) and has one `Desire` (what
//! the last call asked for), kept apart because most phases can be wanted or not.
//!
//! ```text
//!  Absent ──▶ Queued ──▶ Downloading ──▶ Ready ──▶ Deleting ──▶ Removing ──▶ (forgotten)
//!               ▲  ▲        │  │  │                  │  ▲          │
//!               │  └────────┘  │  └─▶ Failed         │  └─ failed ─┘
//!               │   cancelled, │        │            └─▶ Ready (requested again)
//!               │   no room    └─▶ WaitingForDisk
//!               └── Failed (requested again), WaitingForDisk (fits), Removing (wanted)
//! ```
//!
//! | from | on | to |
//! | --- | --- | --- |
//! | `Absent` | next turn | `Queued` if wanted, forgotten otherwise |
//! | `Queued` | admitted (slot and room) | `Downloading` |
//! | `Queued` | no room, nothing to evict (🚫) | `Queued { waiting_for_space }`, at the front |
//! | `Queued` | larger than the whole budget | `Failed` |
//! | `Downloading` | committed | `Ready` (or `Deleting` if deleted meanwhile) |
//! | `Downloading` | cancelled, or no room in the budget | `Queued`, at the front |
//! | `Downloading` | no room on the filesystem | `WaitingForDisk` |
//! | `Downloading` | failed | `Failed` |
//! | `WaitingForDisk` | [`Table::disk_space`] finds it fits | `Queued`, at the front |
//! | `Failed` | requested again | `Queued`, at the front |
//! | `Ready` | deleted, evicted, or found corrupt | `Deleting { why }`, hidden at once |
//! | `Deleting` | requested again (not corrupt) | `Ready`, without a download |
//! | `Deleting` | no ref left | `Removing` |
//! | `Removing` | removed | `Queued` (first) if wanted, forgotten otherwise |
//! | `Removing` | failed | `Deleting`, retried after a backoff |
//!
//! A delete of an `Absent`, `Queued`, `WaitingForDisk` or `Failed` chunk forgets it at once;
//! of a `Downloading` one cancels the job (the entry stays `Downloading` until it ends). A
//! request while `Downloading`, `WaitingForDisk` or `Removing` changes only the queue it will
//! use. `Ready` and `Deleting` also run bookkeeping jobs on their files (`Stored::job`):
//! writing the tombstone of a pinned deleted chunk, removing it when the chunk is shown again,
//! writing the cached mark; a failed one waits for its retry (`Stored::io_failed`).
//! `Deleting { why }`: `Deleted` by a call, `Evicted` for room (its bytes counted as coming
//! room until removed), or `Corrupt` (found by the scrub: never shown again, downloaded again
//! after its removal if still wanted).
//!
//! # Desire: assigned, cached, deleted
//!
//! What the caller wants for a chunk is one of three [`Desire`]s, and the last call wins:
//!
//! | call | desire | kept |
//! | --- | --- | --- |
//! | `download_chunk`, `assign` | assigned | always; never evicted |
//! | `fetch` (a query) of a chunk that is not assigned | cached | while the budget has room |
//! | `delete_chunk`, or eviction | deleted | until the last ref drops |
//!
//! A `fetch` of an assigned chunk leaves it assigned; a `download_chunk` of a cached chunk makes
//! it assigned; a `delete_chunk` of a cached chunk deletes it like any other. A `fetch` of a
//! deleted chunk still on disk shows it again, cached, without a download. Cached chunks are
//! ready and visible like assigned ones.
//!
//! # Priority
//!
//! Downloads asked for by `fetch` wait in their own queue, admitted before the background
//! queue, and may use `fetch_slots` slots beyond `max_downloads`; a `fetch` of a chunk already
//! queued in the background moves it to that queue. Every `fetch` of one chunk waits for the
//! same download.
//!
//! # Eviction
//!
//! When a queued download does not fit in the budget, the table evicts cached chunks, least
//! recently fetched first, until the bytes being evicted cover the shortfall. It never evicts
//! an assigned chunk, a chunk pinned by a [`ChunkRef`](crate::ChunkRef), a chunk a `fetch` is
//! waiting for, or a chunk a job is working on; if the candidates cannot cover the shortfall it
//! evicts nothing and the download waits (🚫). An evicted chunk is deleted: hidden at once,
//! removed by the usual removal job, its bytes counted as `evicting` until then. Downloads for
//! queries claim the room they wait for, so background downloads queued behind them do not take
//! it.
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
//!
//! # Free space: the second budget
//!
//! The filesystem may hold less than the budget promises (other files, a budget larger than
//! the disk). So a running download, once it knows its size, also reads the filesystem's
//! usable free space (`statvfs`'s `f_bavail * f_frsize` minus the margin
//! [`Config::min_free_bytes`](crate::Config::min_free_bytes), see
//! [`crate::disk::usable_free_space`]) and [`Table::try_reserve_within`] grants it only if
//!
//! ```text
//! size <= free - (what the other downloads granted so far still have to write)
//! ```
//!
//! where a granted download still has to write its reservation minus the bytes it has written
//! (its [`Progress`]; bytes count as written once handed to the file's writer, so the margin
//! also absorbs the writers' buffers, at most 2 MiB per file in flight). Otherwise the
//! download ends and the chunk waits for disk space (🚫, `WaitingForDisk`) out of the
//! queues; cached chunks are evicted for it as for the budget. A download that meets a full disk anyway (`ENOSPC`, `EDQUOT`: another process wrote
//! meanwhile) ends the same way, its partial files removed (they hold the space the disk
//! lacks). Neither counts as a failed attempt. While chunks wait for disk space the reconciler
//! reads the free space every [`Config::disk_space_poll`](crate::Config::disk_space_poll) and
//! [`Table::disk_space`] queues again, oldest first, the waiting chunks that now fit; the
//! download then checks again with a fresh reading, so a wrong guess only waits once more.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::mem;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

use crate::chunk::{ChunkId, DataChunk, DatasetId, InvalidChunk};
use crate::error::Error;
use crate::event::Event;
use crate::handle::{ReleaseKind, Released, Releases, Resident};
use crate::status::{ChunkState, ChunkStatus, Totals};

/// Bytes done and total of one running download, written by the job, read by status calls.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) done: AtomicU64,
    /// Zero until the origin has told the size.
    pub(crate) total: AtomicU64,
}

impl Progress {
    /// A new download's progress, its total known (0: not yet).
    fn with_total(total: u64) -> Self {
        Self {
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
        }
    }

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
        /// The bytes already reserved, when the size is known from an earlier attempt. The
        /// job reserves again all the same, to check the free space just before writing.
        #[cfg_attr(
            not(test),
            allow(
                dead_code,
                reason = "the job reserves again with the free space it reads"
            )
        )]
        reserved: Option<u64>,
    },
    /// Remove a committed chunk's files, then its tombstone and its cached mark if it has
    /// them.
    Remove {
        chunk: ChunkId,
        path: PathBuf,
        tombstone: bool,
        cached_mark: bool,
    },
    /// Record durably that a pinned chunk is deleted, so a crash does not bring it back.
    WriteTombstone { chunk: ChunkId },
    /// Remove the record after the chunk was wanted again.
    RemoveTombstone { chunk: ChunkId },
    /// Record on disk whether a ready chunk is cached (fetched for queries, evictable), so
    /// that it stays so after a restart.
    SetCachedMark { chunk: ChunkId, cached: bool },
}

/// Something a transition asks its caller to carry out. The table touches no channel, no
/// atomic shared with other threads and no job: its methods record these, in order, and the
/// holder of the lock carries them out with [`crate::reconciler::apply`] before releasing it.
/// (The jobs to start, the index changes to publish, the events to send after publishing and
/// the disk jobs to retry after a backoff are taken apart by the reconciler, which alone
/// executes them: [`Table::next_work`], [`Table::take_index_changes`],
/// [`Table::take_after_publish`], [`Table::take_io_retries`].)
#[derive(Debug)]
pub(crate) enum Effect {
    /// Send the event to subscribers.
    Emit(Event),
    /// Cancel a running download.
    Cancel(CancellationToken),
    /// Mark a resident hidden (deleted: lookups skip it) or visible again.
    SetHidden {
        resident: Arc<Resident>,
        hidden: bool,
    },
    /// Tell a resident whether it is cached (its last unpin then wakes the reconciler).
    SetCached {
        resident: Arc<Resident>,
        cached: bool,
    },
    /// A running download's size is granted: its progress shows the total.
    SetTotal { progress: Arc<Progress>, total: u64 },
    /// The visible set changed: this is its version, for lock-free readers (a lookup snapshot
    /// built at this version has no chunk hidden since, see `Index::ids`).
    VisibleVersion(u64),
    /// A chunk was hidden, bringing the visible set to `version`: list it among the hides
    /// lock-free readers skip until a snapshot without it is published (see `Index::ids`).
    Hidden { version: u64, key: IndexKey },
    /// A snapshot reflecting every change up to this version is published: the hides up to
    /// it need no longer be listed.
    HidesPublished(u64),
    /// A release was folded into the table: it no longer counts as in flight.
    ReleaseFolded,
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
    /// The chunk (of `size` bytes, 0 if not known yet) does not fit in the filesystem's free
    /// space now, or the filesystem filled up while it was written (its partial files are
    /// removed). `free`: the usable free space last seen.
    NeedsDiskSpace { size: u64, free: u64 },
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
    CachedMarked {
        cached: bool,
        result: Result<(), Error>,
    },
}

/// The answer to a running download that asks to reserve its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reservation {
    Granted,
    NoSpace,
    /// The budget has room but the filesystem has not: `free` bytes are usable after what the
    /// other downloads still have to write.
    NoDiskSpace {
        free: u64,
    },
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

/// The answer to a `fetch`: the chunk at once, or a ticket to wait with.
#[derive(Debug)]
pub(crate) enum Fetch {
    /// Ready: pin it now, under the lock, so it cannot be evicted first.
    Ready(Arc<Resident>),
    /// Downloading or queued; ask [`Table::fetch_settled`] after each change. The fetch is
    /// counted until it settles or is abandoned, and a counted chunk is never evicted.
    Pending(FetchTicket),
    /// Invalid, or sent with a different description than the one in use.
    Refused(Arc<Error>),
}

/// Names one waiting fetch: the chunk and the entry's incarnation, so that a fetch of an entry
/// forgotten meanwhile never touches a later entry of the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchTicket {
    pub(crate) chunk: ChunkId,
    incarnation: u64,
}

/// Where a waiting fetch stands.
#[derive(Debug)]
pub(crate) enum FetchState {
    Ready(Arc<Resident>),
    Failed(Arc<Error>),
    /// Deleted while the fetch waited.
    Gone,
    Pending,
}

/// What the caller wants for a chunk; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Desire {
    Assigned,
    Cached,
    Deleted,
}

#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    limit: u64,
    committed: u64,
    reserved: u64,
    /// Committed bytes of evicted chunks whose removal is pending: room that is coming.
    evicting: u64,
}

impl Budget {
    fn available(&self) -> u64 {
        self.limit.saturating_sub(self.committed + self.reserved)
    }
}

/// Why a committed chunk is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hidden {
    /// Deleted by a call (or committed after its deletion).
    Deleted,
    /// Evicted for room: its size is counted in `Budget::evicting` until its removal ends.
    Evicted,
    /// The scrub found its files damaged: never shown again; removed once no ref holds it,
    /// then downloaded again if still wanted.
    Corrupt,
}

/// A bookkeeping job on a committed chunk's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkJob {
    /// Writes (hidden) or removes (shown) the tombstone.
    Tombstone,
    /// Writes the cached mark.
    CachedMark,
}

/// What is durable about a committed chunk, and the bookkeeping job on it.
#[derive(Debug)]
struct Stored {
    path: PathBuf,
    size: u64,
    /// Whether a durable deletion record exists for the chunk.
    tombstone: bool,
    /// Whether a durable mark says the chunk is cached (see [`Work::SetCachedMark`]).
    cached_mark: bool,
    /// The bookkeeping job running on it, if any.
    job: Option<MarkJob>,
    /// A removal or bookkeeping job failed; it is retried after a backoff (see
    /// [`Table::take_io_retries`]) or when the chunk is requested again.
    io_failed: bool,
}

impl Stored {
    fn new(path: PathBuf, size: u64) -> Self {
        Self {
            path,
            size,
            tombstone: false,
            cached_mark: false,
            job: None,
            io_failed: false,
        }
    }
}

/// A running download.
#[derive(Debug)]
struct Download {
    cancel: CancellationToken,
    /// Its cancellation was asked for ([`Effect::Cancel`]): it ends without committing, or
    /// commits hidden if it was too late.
    cancelled: bool,
    progress: Arc<Progress>,
    /// Bytes reserved in the budget for it.
    reserved: u64,
}

/// Where one chunk stands: what is on disk and which job works on it. One value per chunk, so
/// that impossible combinations (a queued chunk with a job, a failed chunk on disk, an
/// evicting chunk that is visible) cannot be represented. See the module docs' diagram.
#[derive(Debug)]
enum Phase {
    /// Nothing on disk, no job, in no queue: the next turn queues it if wanted, forgets it
    /// otherwise.
    Absent,
    /// In a download queue (see `Entry::urgent` for which). `waiting_for_space`: it found no
    /// room in the budget (or waited for disk space) and the wait was announced (🚫).
    Queued { waiting_for_space: bool },
    /// Out of the queues until the filesystem has room: in `Table::disk_waiters`, queued
    /// again by [`Table::disk_space`] once it fits.
    WaitingForDisk,
    /// A download job runs (cancelled if the chunk was deleted meanwhile).
    Downloading(Download),
    /// The last download failed; tried again (first) at the next request.
    Failed { error: Arc<Error>, attempts: u32 },
    /// Committed and visible.
    Ready {
        stored: Stored,
        resident: Arc<Resident>,
    },
    /// Committed and hidden: its files are kept until every strong reference is gone, then
    /// removed (a tombstone records the deletion meanwhile).
    Deleting {
        stored: Stored,
        resident: Weak<Resident>,
        why: Hidden,
    },
    /// Hidden, no ref left: the removal job runs.
    Removing { stored: Stored, why: Hidden },
}

#[derive(Debug)]
struct Entry {
    chunk: Arc<DataChunk>,
    /// What the last call asked for.
    desire: Desire,
    phase: Phase,
    /// The chunk's size, once an origin has told it.
    size: Option<u64>,
    /// Disk jobs that failed in a row, for the retry's backoff.
    io_failures: u32,
    /// The last request was refused (kept for its status until a request is taken).
    rejected: Option<Arc<Error>>,
    /// Its download is for a query: queued and admitted from the urgent queue. Kept while it
    /// waits, downloads or its old files are removed (a failed removal keeps it for the next
    /// one), so not a field of one phase; cleared once shown or deleted.
    urgent: bool,
    /// Fetches waiting for the chunk to be ready.
    fetchers: usize,
    /// Tells this entry from an earlier or later one of the same id.
    incarnation: u64,
    /// The LRU tick of a ready cached chunk, which is then in `Table::lru` under it.
    lru_tick: Option<u64>,
    /// A wait for disk space was announced (🚫) and the chunk has not been committed or
    /// failed since: a wait that lasts over several checks is announced once.
    disk_wait_announced: bool,
}

impl Entry {
    fn new(chunk: Arc<DataChunk>, desire: Desire, incarnation: u64) -> Self {
        Self {
            chunk,
            desire,
            phase: Phase::Absent,
            size: None,
            io_failures: 0,
            rejected: None,
            urgent: false,
            fetchers: 0,
            incarnation,
            lru_tick: None,
            disk_wait_announced: false,
        }
    }

    /// Whether a different description may replace this one: nothing of the old one is on
    /// disk or in flight.
    fn replaceable(&self) -> bool {
        matches!(
            self.phase,
            Phase::Absent | Phase::Queued { .. } | Phase::WaitingForDisk | Phase::Failed { .. }
        )
    }

    /// What is committed of the chunk, if anything.
    fn stored(&self) -> Option<&Stored> {
        match &self.phase {
            Phase::Ready { stored, .. }
            | Phase::Deleting { stored, .. }
            | Phase::Removing { stored, .. } => Some(stored),
            _ => None,
        }
    }

    fn stored_mut(&mut self) -> Option<&mut Stored> {
        match &mut self.phase {
            Phase::Ready { stored, .. }
            | Phase::Deleting { stored, .. }
            | Phase::Removing { stored, .. } => Some(stored),
            _ => None,
        }
    }

    /// Whether a job runs for the chunk.
    fn busy(&self) -> bool {
        match &self.phase {
            Phase::Downloading(_) | Phase::Removing { .. } => true,
            Phase::Ready { stored, .. } | Phase::Deleting { stored, .. } => stored.job.is_some(),
            _ => false,
        }
    }

    /// A disk job failed and waits for its retry.
    fn io_failed(&self) -> bool {
        self.stored().is_some_and(|stored| stored.io_failed)
    }

    fn clear_io_failed(&mut self) {
        if let Some(stored) = self.stored_mut() {
            stored.io_failed = false;
        }
    }

    /// Assigned or cached: to be on disk.
    fn wanted(&self) -> bool {
        self.desire != Desire::Deleted
    }

    /// The visible resident, if the chunk is ready.
    fn shown(&self) -> Option<&Arc<Resident>> {
        match &self.phase {
            Phase::Ready { resident, .. } => Some(resident),
            _ => None,
        }
    }

    fn committed_size(&self) -> u64 {
        self.stored().map_or(0, |stored| stored.size)
    }

    /// Takes a ready chunk out of sight: `Deleting { why }`, its resident flagged hidden and
    /// not cached (as effects). Returns its index key, for the caller to hide, and its size;
    /// `None`, changing nothing, if the chunk is not ready.
    fn take_out_of_sight(
        &mut self,
        why: Hidden,
        effects: &mut Vec<Effect>,
    ) -> Option<(IndexKey, u64)> {
        if !matches!(self.phase, Phase::Ready { .. }) {
            return None;
        }
        let Phase::Ready { stored, resident } = mem::replace(&mut self.phase, Phase::Absent) else {
            unreachable!("matched above");
        };
        effects.push(Effect::SetHidden {
            resident: resident.clone(),
            hidden: true,
        });
        effects.push(Effect::SetCached {
            resident: resident.clone(),
            cached: false,
        });
        let found = (index_key(&resident.chunk), stored.size);
        self.phase = Phase::Deleting {
            stored,
            resident: Arc::downgrade(&resident),
            why,
        };
        Some(found)
    }

    /// Changes the desire and tells a visible resident whether it is cached (its last unpin
    /// then wakes the reconciler, which may evict it for a waiting download).
    fn set_desire(&mut self, desire: Desire, effects: &mut Vec<Effect>) {
        self.desire = desire;
        if let Some(resident) = self.shown() {
            effects.push(Effect::SetCached {
                resident: resident.clone(),
                cached: desire == Desire::Cached,
            });
        }
    }
}

/// The job that ended, as `Table::job_finished` finds it.
#[derive(Debug)]
enum Ended {
    Download { reserved: u64 },
    Remove,
    Tombstone,
    CachedMark,
}

/// The two download queues: downloads for queries first, then the background ones.
#[derive(Debug, Default)]
struct Queues {
    /// Background downloads, oldest first. May hold stale ids; admission skips them.
    background: VecDeque<ChunkId>,
    /// Downloads a `fetch` waits for, oldest first. May hold stale ids.
    urgent: VecDeque<ChunkId>,
}

impl Queues {
    fn push(&mut self, id: ChunkId, urgent: bool, front: bool) {
        let queue = if urgent {
            &mut self.urgent
        } else {
            &mut self.background
        };
        if front {
            queue.push_front(id);
        } else {
            queue.push_back(id);
        }
    }
}

/// The table. See the module docs.
#[derive(Debug)]
pub(crate) struct Table {
    entries: HashMap<ChunkId, Entry>,
    /// Chunks waiting to download.
    queues: Queues,
    /// Ready cached chunks by `(tick, id)`: the least recently fetched first.
    lru: BTreeSet<(u64, ChunkId)>,
    /// The LRU clock, bumped on every fetch of a ready chunk and every commit.
    clock: u64,
    /// Chunks whose facts may lag their wish; examined by the next `next_work`.
    dirty: Vec<ChunkId>,
    /// Whether admission may have something to start (new queue entries, a freed slot or
    /// freed bytes).
    admission_dirty: bool,
    budget: Budget,
    max_downloads: usize,
    /// Slots beyond `max_downloads` that only urgent downloads may use.
    fetch_slots: usize,
    downloads_running: usize,
    jobs_running: usize,
    next_generation: u64,
    index_changes: Vec<IndexChange>,
    /// Counts index changes; the reconciler publishes up to a version.
    index_version: u64,
    /// The version the last `take_index_changes` handed to the reconciler to publish.
    taken_version: u64,
    shutting_down: bool,
    /// What the transitions so far ask the caller to carry out; see [`Effect`].
    effects: Vec<Effect>,
    /// Events to send once the reconciler has published the index they describe, so a
    /// subscriber told "ready" finds the chunk.
    after_publish: Vec<Event>,
    /// Failed disk jobs to try again after a backoff: (chunk, incarnation, failures in a row).
    io_retries: Vec<IoRetry>,
    released: Releases,
    /// Chunks waiting for free space on the filesystem, oldest first. May hold stale ids
    /// (no longer `Phase::WaitingForDisk`); [`Table::disk_space`] drops them.
    disk_waiters: VecDeque<ChunkId>,
    /// Running downloads whose reservation passed the free-space check: they may be writing.
    disk_granted: HashSet<ChunkId>,
    /// The usable free space last seen (after what granted downloads still have to write).
    disk_free: u64,
}

/// A failed disk job (removal, tombstone) the reconciler should retry after a backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IoRetry {
    pub(crate) chunk: ChunkId,
    incarnation: u64,
    /// Failures in a row so far (1 after the first).
    pub(crate) failures: u32,
}

/// Whether a requested deletion is recorded on disk, so that neither a crash nor a stop can
/// bring the chunk back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deletion {
    /// Nothing of the chunk is committed, or a tombstone records its deletion.
    Durable,
    /// Its files or its tombstone are still to be written or removed.
    Pending,
    /// The chunk is wanted again (a later call won).
    Wanted,
}

impl Table {
    pub(crate) fn new(
        budget: u64,
        max_downloads: usize,
        fetch_slots: usize,
        released: Releases,
    ) -> Self {
        Self {
            entries: HashMap::new(),
            queues: Queues::default(),
            lru: BTreeSet::new(),
            clock: 0,
            dirty: Vec::new(),
            admission_dirty: false,
            budget: Budget {
                limit: budget,
                ..Budget::default()
            },
            max_downloads: max_downloads.max(1),
            fetch_slots,
            downloads_running: 0,
            jobs_running: 0,
            next_generation: 0,
            index_changes: Vec::new(),
            index_version: 0,
            taken_version: 0,
            shutting_down: false,
            effects: Vec::new(),
            after_publish: Vec::new(),
            io_retries: Vec::new(),
            released,
            disk_waiters: VecDeque::new(),
            disk_granted: HashSet::new(),
            disk_free: 0,
        }
    }

    /// Adds a chunk found committed on disk at startup: ready, and assigned unless its mark
    /// says it was fetched for queries (`cached`).
    pub(crate) fn adopt(&mut self, chunk: Arc<DataChunk>, path: PathBuf, size: u64, cached: bool) {
        let id = *chunk.id();
        let resident = self.new_resident(chunk.clone(), path.clone(), size);
        self.show(&resident);
        self.budget.committed += size;
        let incarnation = self.next_incarnation();
        let desire = if cached {
            Desire::Cached
        } else {
            Desire::Assigned
        };
        // A new resident nobody else holds yet: set up here, not an effect.
        resident.set_cached(cached);
        let mut entry = Entry::new(chunk, desire, incarnation);
        entry.size = Some(size);
        let mut stored = Stored::new(path, size);
        stored.cached_mark = cached;
        entry.phase = Phase::Ready { stored, resident };
        self.entries.insert(id, entry);
        self.sync_lru(id);
    }

    fn next_incarnation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// The entry for `chunk`, created with `desire` if the table does not know the id.
    fn entry_for(&mut self, chunk: &Arc<DataChunk>, desire: Desire) -> &mut Entry {
        let id = *chunk.id();
        if !self.entries.contains_key(&id) {
            let incarnation = self.next_incarnation();
            self.entries
                .insert(id, Entry::new(chunk.clone(), desire, incarnation));
        }
        match self.entries.get_mut(&id) {
            Some(entry) => entry,
            None => unreachable!("inserted above"),
        }
    }

    /// Takes `chunk` as the entry's description, unless a different one is in use: then the
    /// request is refused, recorded and reported.
    fn describe(
        &mut self,
        chunk: Arc<DataChunk>,
        desire: Desire,
        invalid: &mut Option<InvalidChunk>,
    ) -> Result<(), Arc<Error>> {
        let id = *chunk.id();
        let entry = self.entry_for(&chunk, desire);
        if entry.chunk != chunk {
            if !entry.replaceable() {
                let error = Arc::new(match invalid.take() {
                    Some(source) => Error::InvalidChunk { chunk: id, source },
                    None => Error::Conflict { chunk: id },
                });
                entry.rejected = Some(error.clone());
                emit(
                    &mut self.effects,
                    Event::Rejected {
                        chunk: id,
                        error: error.clone(),
                    },
                );
                return Err(error);
            }
            entry.chunk = chunk;
            entry.size = None;
        }
        entry.rejected = None;
        entry.clear_io_failed();
        Ok(())
    }

    /// Whether a download call for `chunk` would change nothing: the same description is
    /// already assigned and queued, downloading or ready, with nothing to retry. Such calls
    /// (an assignment refreshed) are answered without marking work or waking anyone.
    pub(crate) fn download_is_noop(&self, chunk: &DataChunk) -> bool {
        self.entries.get(chunk.id()).is_some_and(|entry| {
            entry.desire == Desire::Assigned
                && *entry.chunk == *chunk
                && entry.rejected.is_none()
                && !entry.io_failed()
                && (entry.busy()
                    || matches!(
                        entry.phase,
                        Phase::Queued { .. } | Phase::WaitingForDisk | Phase::Ready { .. }
                    ))
        })
    }

    /// A call to download `chunk`. `invalid` is the result of validating it, done by the
    /// caller outside the lock. Returns the error when the request is refused or the chunk is
    /// invalid, for the caller to log.
    pub(crate) fn request_download(
        &mut self,
        chunk: Arc<DataChunk>,
        mut invalid: Option<InvalidChunk>,
    ) -> Option<Arc<Error>> {
        let id = *chunk.id();
        if let Err(error) = self.describe(chunk, Desire::Assigned, &mut invalid) {
            return Some(error);
        }
        let entry = self.entries.get_mut(&id)?;
        entry.set_desire(Desire::Assigned, &mut self.effects);
        if let Some(source) = invalid {
            let error = Arc::new(Error::InvalidChunk { chunk: id, source });
            // Nothing of an invalid description can be on disk or in flight (a different one
            // in use was refused above).
            if entry.replaceable() {
                entry.phase = Phase::Failed {
                    error: error.clone(),
                    attempts: 0,
                };
            }
            emit(
                &mut self.effects,
                Event::DownloadFailed {
                    chunk: id,
                    error: error.clone(),
                    attempts: 0,
                },
            );
            self.sync_lru(id);
            return Some(error);
        }
        self.bring_back(id, false);
        None
    }

    /// A query asks for `chunk`: the ready chunk at once, or a ticket to wait for its download.
    ///
    /// An unknown chunk is downloaded as cached (not assigned); a deleted one still on disk is
    /// shown again as cached; an assigned one stays assigned. A download not yet started moves
    /// to the urgent queue; a failed one is tried again now. A running download is shared.
    /// An invalid description, or one that differs from the description in use, changes
    /// nothing and is refused.
    pub(crate) fn request_fetch(
        &mut self,
        chunk: Arc<DataChunk>,
        mut invalid: Option<InvalidChunk>,
    ) -> Fetch {
        let id = *chunk.id();
        if let Some(source) = invalid.take() {
            // Refused without a trace in the table: a query's bad description must not
            // disturb a chunk in use, nor leave a failed entry behind.
            let error = Arc::new(Error::InvalidChunk { chunk: id, source });
            emit(
                &mut self.effects,
                Event::Rejected {
                    chunk: id,
                    error: error.clone(),
                },
            );
            return Fetch::Refused(error);
        }
        if let Err(error) = self.describe(chunk, Desire::Cached, &mut invalid) {
            return Fetch::Refused(error);
        }
        let Some(entry) = self.entries.get_mut(&id) else {
            unreachable!("described above");
        };
        if entry.desire == Desire::Deleted {
            entry.set_desire(Desire::Cached, &mut self.effects);
        }
        if let Some(resident) = self.bring_back(id, true) {
            self.touch(id);
            return Fetch::Ready(resident);
        }
        let Some(entry) = self.entries.get_mut(&id) else {
            unreachable!("described above");
        };
        entry.fetchers += 1;
        Fetch::Pending(FetchTicket {
            chunk: id,
            incarnation: entry.incarnation,
        })
    }

    /// Where a waiting fetch stands. A settled fetch (ready, failed, gone) stops counting.
    pub(crate) fn fetch_settled(&mut self, ticket: &FetchTicket) -> FetchState {
        let Some(entry) = self.entries.get_mut(&ticket.chunk) else {
            return FetchState::Gone;
        };
        if entry.incarnation != ticket.incarnation {
            return FetchState::Gone;
        }
        let state = if !entry.wanted() {
            FetchState::Gone
        } else if let Some(resident) = entry.shown() {
            FetchState::Ready(resident.clone())
        } else if let Phase::Failed { error, .. } = &entry.phase {
            FetchState::Failed(error.clone())
        } else if self.shutting_down {
            FetchState::Failed(Arc::new(Error::Shutdown))
        } else {
            return FetchState::Pending;
        };
        debug_assert!(entry.fetchers > 0, "a settled fetch was counted");
        entry.fetchers = entry.fetchers.saturating_sub(1);
        if entry.fetchers == 0 {
            // No longer protected from eviction: a waiting download may use its room.
            self.admission_dirty = true;
        }
        if matches!(state, FetchState::Ready(_)) {
            self.touch(ticket.chunk);
        }
        state
    }

    /// A waiting fetch gave up (its future was dropped). A cached chunk nobody waits for any
    /// more and whose download has not started is forgotten.
    pub(crate) fn fetch_abandoned(&mut self, ticket: &FetchTicket) {
        let Some(entry) = self.entries.get_mut(&ticket.chunk) else {
            return;
        };
        if entry.incarnation != ticket.incarnation {
            return;
        }
        debug_assert!(entry.fetchers > 0, "an abandoned fetch was counted");
        entry.fetchers = entry.fetchers.saturating_sub(1);
        if entry.fetchers > 0 {
            return;
        }
        self.admission_dirty = true;
        if entry.desire == Desire::Cached && entry.replaceable() {
            self.forget(ticket.chunk);
        }
    }

    /// Moves a wanted chunk towards being on disk: shows a hidden one again (no download),
    /// queues an absent one (`urgent`: in the urgent queue, promoting it if it waits in the
    /// background queue; a failed one goes first). Returns the resident if it is visible.
    fn bring_back(&mut self, id: ChunkId, urgent: bool) -> Option<Arc<Resident>> {
        let entry = self.entries.get_mut(&id)?;
        let mut show = None;
        let mut visible = None;
        match mem::replace(&mut entry.phase, Phase::Absent) {
            Phase::Deleting {
                stored,
                resident: weak,
                why,
            } if why != Hidden::Corrupt => {
                let resident = match weak.upgrade() {
                    Some(resident) => resident,
                    None => {
                        // Every ref is gone but the files are intact: a new resident over
                        // them; the stale release of the old one is harmless.
                        self.next_generation += 1;
                        Arc::new(Resident::new(
                            entry.chunk.clone(),
                            stored.path.clone(),
                            stored.size,
                            self.next_generation,
                            self.released.clone(),
                        ))
                    }
                };
                self.effects.push(Effect::SetHidden {
                    resident: resident.clone(),
                    hidden: false,
                });
                self.effects.push(Effect::SetCached {
                    resident: resident.clone(),
                    cached: entry.desire == Desire::Cached,
                });
                if why == Hidden::Evicted {
                    self.budget.evicting -= stored.size;
                }
                // Shown: no download to hurry (urgent after a failed removal of a chunk
                // fetched meanwhile).
                entry.urgent = false;
                show = Some(resident.clone());
                visible = Some(resident.clone());
                entry.phase = Phase::Ready { stored, resident };
            }
            Phase::Ready { stored, resident } => {
                self.effects.push(Effect::SetCached {
                    resident: resident.clone(),
                    cached: entry.desire == Desire::Cached,
                });
                visible = Some(resident.clone());
                entry.phase = Phase::Ready { stored, resident };
            }
            // Its files are going: downloaded again once they are gone (see
            // `removal_finished`).
            phase @ Phase::Removing { .. } => {
                entry.urgent |= urgent;
                entry.phase = phase;
            }
            // Corrupt: removed once no ref holds it, then downloaded again.
            phase @ Phase::Deleting { .. } => entry.phase = phase,
            // A cancelled download still running: `download_finished` queues it again.
            // Waiting for disk space: `disk_space` queues it (in the urgent queue if asked)
            // once it fits; trying now would only fail the same check.
            phase @ (Phase::Downloading(_) | Phase::WaitingForDisk) => {
                entry.urgent |= urgent;
                entry.phase = phase;
            }
            phase @ (Phase::Absent | Phase::Queued { .. } | Phase::Failed { .. }) => {
                let promote = urgent && !entry.urgent;
                entry.urgent |= urgent;
                let waiting_for_space = match phase {
                    Phase::Queued { waiting_for_space } => waiting_for_space,
                    _ => false,
                };
                let queued = matches!(phase, Phase::Queued { .. });
                entry.phase = Phase::Queued { waiting_for_space };
                if !queued || promote {
                    // A retry after a failure goes first ("try again now"); a new chunk waits
                    // its turn.
                    let retry = matches!(phase, Phase::Failed { .. });
                    self.queues.push(id, entry.urgent, retry);
                    self.admission_dirty = true;
                }
            }
        }
        if let Some(resident) = show {
            self.show(&resident);
            // A cached chunk shown again may be evicted for a waiting download.
            self.admission_dirty = true;
        }
        self.sync_lru(id);
        self.dirty.push(id);
        visible
    }

    /// Replaces the whole desired set: every assigned chunk not in `chunks` is deleted, every
    /// chunk in it is requested, as one step under one lock. Cached chunks not in `chunks`
    /// stay cached. Returns the refused requests.
    pub(crate) fn request_assignment(
        &mut self,
        chunks: Vec<(Arc<DataChunk>, Option<InvalidChunk>)>,
    ) -> Vec<Arc<Error>> {
        let assigned: std::collections::HashSet<ChunkId> =
            chunks.iter().map(|(chunk, _)| *chunk.id()).collect();
        let unassigned: Vec<ChunkId> = self
            .entries
            .iter()
            .filter(|(id, entry)| entry.desire == Desire::Assigned && !assigned.contains(*id))
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
        entry.set_desire(Desire::Deleted, &mut self.effects);
        entry.urgent = false;
        entry.rejected = None;
        entry.clear_io_failed();
        let hide = entry.take_out_of_sight(Hidden::Deleted, &mut self.effects);
        if let Phase::Downloading(download) = &mut entry.phase {
            download.cancelled = true;
            self.effects.push(Effect::Cancel(download.cancel.clone()));
        }
        let nothing_on_disk = entry.replaceable();
        if let Some((key, _)) = hide {
            self.hide(key);
        }
        self.sync_lru(id);
        if nothing_on_disk {
            // Queued or failed: unqueued and forgotten at once (admission skips the stale id).
            self.forget(id);
        } else {
            self.dirty.push(id);
        }
    }

    /// A resident reported its last strong reference gone, or (for a cached chunk) its last
    /// pin dropped.
    pub(crate) fn released(&mut self, released: Released) {
        self.effects.push(Effect::ReleaseFolded);
        let Some(entry) = self.entries.get(&released.id) else {
            return;
        };
        match released.kind {
            ReleaseKind::Dropped => self.dirty.push(released.id),
            ReleaseKind::Unpinned => {
                // Evictable now: a download waiting for room may use it.
                if entry.desire == Desire::Cached {
                    self.admission_dirty = true;
                }
            }
        }
    }

    /// [`Table::try_reserve_within`] without a free-space reading: the budget alone.
    #[cfg(test)]
    pub(crate) fn try_reserve(&mut self, id: &ChunkId, size: u64) -> Reservation {
        self.try_reserve_within(id, size, None)
    }

    /// A running download asks to reserve `size` bytes (its total, now known). If the budget
    /// has no room, cached chunks are evicted for it where they can cover the shortfall; the
    /// download then waits for their removal. `free`: the filesystem's usable free space just
    /// read (margin subtracted), if it could be read; the bytes must also fit in it after what
    /// the other granted downloads still have to write (see the module docs), else the answer
    /// is [`Reservation::NoDiskSpace`] (and cached chunks are evicted for the shortfall).
    pub(crate) fn try_reserve_within(
        &mut self,
        id: &ChunkId,
        size: u64,
        free: Option<u64>,
    ) -> Reservation {
        let pending = match free {
            Some(_) => self.pending_writes(Some(id)),
            None => 0,
        };
        let Some(entry) = self.entries.get_mut(id) else {
            return Reservation::Gone;
        };
        let Phase::Downloading(Download {
            reserved,
            cancelled,
            progress,
            ..
        }) = &mut entry.phase
        else {
            return Reservation::Gone;
        };
        if *cancelled {
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
            let deficit = others + size - self.budget.limit;
            self.make_room(deficit, id);
            return Reservation::NoSpace;
        }
        if let Some(free) = free {
            let usable = free.saturating_sub(pending);
            self.disk_free = usable;
            if size > usable {
                // Cached chunks hold disk space too: evict them for the shortfall as for the
                // budget (their removal frees it; the wait for disk space notices).
                self.make_room(size - usable, id);
                return Reservation::NoDiskSpace { free: usable };
            }
        }
        self.budget.reserved = self.budget.reserved - *reserved + size;
        *reserved = size;
        self.effects.push(Effect::SetTotal {
            progress: progress.clone(),
            total: size,
        });
        self.disk_granted.insert(*id);
        Reservation::Granted
    }

    /// The bytes that granted downloads other than `except` still have to write: their
    /// reservation minus what they have written.
    fn pending_writes(&self, except: Option<&ChunkId>) -> u64 {
        self.disk_granted
            .iter()
            .filter(|id| Some(*id) != except)
            .filter_map(|id| match &self.entries.get(id)?.phase {
                Phase::Downloading(Download {
                    reserved, progress, ..
                }) => Some(reserved.saturating_sub(progress.done.load(Ordering::Relaxed))),
                _ => None,
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Whether chunks wait for free space on the filesystem: the reconciler then reads it
    /// every `disk_space_poll` and reports it to [`Table::disk_space`].
    pub(crate) fn waiting_for_disk(&self) -> bool {
        !self.disk_waiters.is_empty()
    }

    /// The reconciler read the filesystem's usable free space (`free`, margin subtracted):
    /// queues again, oldest first, the chunks waiting for disk space that fit in it after what
    /// granted downloads still have to write (first fit: a large chunk that does not fit does
    /// not hold back smaller ones). O(waiting chunks).
    pub(crate) fn disk_space(&mut self, free: u64) {
        let usable = free.saturating_sub(self.pending_writes(None));
        self.disk_free = usable;
        let mut left = usable;
        let mut fitting = Vec::new();
        for id in mem::take(&mut self.disk_waiters) {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            if !matches!(entry.phase, Phase::WaitingForDisk) {
                continue;
            }
            if !entry.wanted() {
                // Not waiting any more (defensive: a deletion forgets a waiting chunk).
                entry.phase = Phase::Absent;
                self.dirty.push(id);
                continue;
            }
            let size = entry.size.unwrap_or(0);
            if size <= left {
                left -= size;
                entry.phase = Phase::Queued {
                    waiting_for_space: true,
                };
                fitting.push((id, entry.urgent));
            } else {
                self.disk_waiters.push_back(id);
            }
        }
        // At the front of their queues, as they have waited longest, in their order.
        for &(id, urgent) in fitting.iter().rev() {
            self.queues.push(id, urgent, true);
            self.admission_dirty = true;
        }
    }

    /// Evicts cached chunks, least recently used first, until the bytes being evicted cover
    /// `deficit`. Evicts nothing and returns false if the candidates cannot cover it.
    fn make_room(&mut self, deficit: u64, except: &ChunkId) -> bool {
        let mut coming = self.budget.evicting;
        if coming >= deficit {
            return true;
        }
        let mut victims = Vec::new();
        for &(_, id) in &self.lru {
            if coming >= deficit {
                break;
            }
            if id == *except {
                continue;
            }
            let Some(entry) = self.entries.get(&id) else {
                continue;
            };
            let Some(resident) = entry.shown() else {
                continue;
            };
            if entry.fetchers > 0 || entry.busy() || resident.pins() > 0 {
                continue;
            }
            coming += entry.committed_size();
            victims.push(id);
        }
        if coming < deficit {
            return false;
        }
        for id in victims {
            self.evict(id);
        }
        true
    }

    /// Deletes a ready cached chunk to make room: hidden at once, removed once no ref holds it.
    fn evict(&mut self, id: ChunkId) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        debug_assert_eq!(
            entry.desire,
            Desire::Cached,
            "only cached chunks are evicted"
        );
        let Some((key, size)) = entry.take_out_of_sight(Hidden::Evicted, &mut self.effects) else {
            return;
        };
        entry.desire = Desire::Deleted;
        self.budget.evicting += size;
        self.hide(key);
        self.sync_lru(id);
        self.dirty.push(id);
        emit(
            &mut self.effects,
            Event::Evicted {
                chunk: id,
                bytes: size,
            },
        );
    }

    /// Marks a ready cached chunk as just used.
    fn touch(&mut self, id: ChunkId) {
        if let Some(entry) = self.entries.get_mut(&id)
            && let Some(tick) = entry.lru_tick.take()
        {
            self.lru.remove(&(tick, id));
        }
        self.sync_lru(id);
    }

    /// Puts the chunk in the LRU set if it is ready and cached, out of it otherwise. A chunk
    /// that enters gets the next tick: it is the most recently used.
    fn sync_lru(&mut self, id: ChunkId) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let cached = entry.desire == Desire::Cached && entry.shown().is_some();
        match (cached, entry.lru_tick) {
            (true, None) => {
                self.clock += 1;
                entry.lru_tick = Some(self.clock);
                self.lru.insert((self.clock, id));
            }
            (false, Some(tick)) => {
                self.lru.remove(&(tick, id));
                entry.lru_tick = None;
            }
            _ => {}
        }
    }

    /// Whether the table has work for another turn right away (a step taken during this turn,
    /// such as an eviction, left chunks to settle).
    pub(crate) fn needs_turn(&self) -> bool {
        !self.shutting_down && (!self.dirty.is_empty() || self.admission_dirty)
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
        if entry.busy() || entry.io_failed() {
            return;
        }
        let cached = entry.desire == Desire::Cached;
        match &mut entry.phase {
            Phase::Ready { stored, .. } => {
                if stored.tombstone {
                    stored.job = Some(MarkJob::Tombstone);
                    self.jobs_running += 1;
                    work.push(Work::RemoveTombstone { chunk: id });
                } else if stored.cached_mark != cached {
                    stored.job = Some(MarkJob::CachedMark);
                    self.jobs_running += 1;
                    work.push(Work::SetCachedMark { chunk: id, cached });
                }
            }
            Phase::Deleting {
                stored, resident, ..
            } => {
                if resident.strong_count() == 0 {
                    let Phase::Deleting { stored, why, .. } =
                        mem::replace(&mut entry.phase, Phase::Absent)
                    else {
                        unreachable!("matched above");
                    };
                    self.jobs_running += 1;
                    work.push(Work::Remove {
                        chunk: id,
                        path: stored.path.clone(),
                        tombstone: stored.tombstone,
                        cached_mark: stored.cached_mark,
                    });
                    entry.phase = Phase::Removing { stored, why };
                } else if !stored.tombstone {
                    stored.job = Some(MarkJob::Tombstone);
                    self.jobs_running += 1;
                    work.push(Work::WriteTombstone { chunk: id });
                }
            }
            Phase::Downloading(_) | Phase::Removing { .. } => {}
            Phase::Absent | Phase::Queued { .. } | Phase::WaitingForDisk | Phase::Failed { .. } => {
                if !entry.wanted() {
                    self.forget(id);
                } else if matches!(entry.phase, Phase::Absent) {
                    entry.phase = Phase::Queued {
                        waiting_for_space: false,
                    };
                    self.queues.push(id, entry.urgent, false);
                    self.admission_dirty = true;
                }
            }
        }
    }

    /// Starts queued downloads while there are slots and room in the budget: the urgent queue
    /// first, then the background queue.
    fn admit(&mut self, work: &mut Vec<Work>) {
        if !self.admission_dirty {
            return;
        }
        self.admission_dirty = false;
        // Bytes that urgent downloads waiting for room have claimed in this pass.
        let mut claimed = 0;
        let mut urgent = mem::take(&mut self.queues.urgent);
        self.admit_from(&mut urgent, true, &mut claimed, work);
        self.queues.urgent = urgent;
        let mut background = mem::take(&mut self.queues.background);
        self.admit_from(&mut background, false, &mut claimed, work);
        self.queues.background = background;
    }

    /// Starts downloads from the front of one queue, in order, while slots last. A chunk whose
    /// size does not fit stops the queue: it waits at the front (🚫) and the chunks behind it
    /// wait behind it, so a large chunk is never starved by smaller ones and a pass costs
    /// O(started + stale ids) rather than a walk over the whole queue. Stale ids (deleted,
    /// promoted, already running) are dropped as they reach the front.
    fn admit_from(
        &mut self,
        queue: &mut VecDeque<ChunkId>,
        urgent: bool,
        claimed: &mut u64,
        work: &mut Vec<Work>,
    ) {
        let slots = if urgent {
            self.max_downloads + self.fetch_slots
        } else {
            self.max_downloads
        };
        while self.downloads_running < slots {
            let Some(&id) = queue.front() else {
                return;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                queue.pop_front();
                continue;
            };
            // An urgent chunk promoted out of the background queue leaves a stale copy there.
            let promoted_copy = !urgent && entry.urgent;
            let Phase::Queued { waiting_for_space } = entry.phase else {
                queue.pop_front();
                continue;
            };
            if !entry.wanted() || promoted_copy {
                if !promoted_copy {
                    entry.phase = Phase::Absent;
                }
                queue.pop_front();
                continue;
            }
            let reserved = match entry.size {
                Some(size) if size > self.budget.limit => {
                    let error = Arc::new(Error::TooLargeForBudget {
                        chunk: id,
                        needed: size,
                        budget: self.budget.limit,
                    });
                    entry.phase = Phase::Failed {
                        error: error.clone(),
                        attempts: 0,
                    };
                    emit(
                        &mut self.effects,
                        Event::DownloadFailed {
                            chunk: id,
                            error,
                            attempts: 0,
                        },
                    );
                    queue.pop_front();
                    continue;
                }
                Some(size) if size > self.budget.available().saturating_sub(*claimed) => {
                    let deficit = (self.budget.committed + self.budget.reserved + *claimed + size)
                        .saturating_sub(self.budget.limit);
                    if urgent {
                        *claimed += size;
                    }
                    let announced = waiting_for_space;
                    if !self.make_room(deficit, &id) {
                        // Nothing to evict: wait until deletions or unpins free room.
                        if let Some(entry) = self.entries.get_mut(&id) {
                            entry.phase = Phase::Queued {
                                waiting_for_space: true,
                            };
                        }
                        if !announced {
                            emit(
                                &mut self.effects,
                                Event::BudgetExceeded {
                                    chunk: id,
                                    needed: size,
                                    available: self.budget.available(),
                                },
                            );
                        }
                    }
                    return;
                }
                Some(size) => size,
                None => 0,
            };
            queue.pop_front();
            let cancel = CancellationToken::new();
            let progress = Arc::new(Progress::with_total(reserved));
            entry.phase = Phase::Downloading(Download {
                cancel: cancel.clone(),
                cancelled: false,
                progress: progress.clone(),
                reserved,
            });
            self.budget.reserved += reserved;
            self.downloads_running += 1;
            self.jobs_running += 1;
            emit(&mut self.effects, Event::DownloadStarted { chunk: id });
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
        let job = match &mut entry.phase {
            Phase::Downloading(download) => Ended::Download {
                reserved: download.reserved,
            },
            Phase::Removing { .. } => Ended::Remove,
            Phase::Ready { stored, .. } | Phase::Deleting { stored, .. } => match stored.job.take()
            {
                Some(MarkJob::Tombstone) => Ended::Tombstone,
                Some(MarkJob::CachedMark) => Ended::CachedMark,
                None => {
                    debug_assert!(false, "a job finished for a chunk without a job");
                    return;
                }
            },
            _ => {
                debug_assert!(false, "a job finished for a chunk without a job");
                return;
            }
        };
        if matches!(
            outcome,
            Outcome::Removed(Ok(()))
                | Outcome::TombstoneWritten(Ok(()))
                | Outcome::TombstoneRemoved(Ok(()))
                | Outcome::CachedMarked { result: Ok(()), .. }
        ) {
            entry.io_failures = 0;
        }
        self.jobs_running -= 1;
        self.dirty.push(id);
        match (job, outcome) {
            (Ended::Download { reserved }, Outcome::Download(outcome)) => {
                self.disk_granted.remove(&id);
                self.downloads_running -= 1;
                self.budget.reserved -= reserved;
                self.admission_dirty = true;
                self.download_finished(id, outcome);
            }
            (Ended::Remove, Outcome::Removed(result)) => self.removal_finished(id, result),
            (Ended::Tombstone, Outcome::TombstoneWritten(result)) => match result {
                Ok(()) => {
                    if let Some(entry) = self.entries.get_mut(&id) {
                        if let Some(stored) = entry.stored_mut() {
                            stored.tombstone = true;
                        }
                        if let Phase::Deleting { resident, .. } = &entry.phase
                            && resident.strong_count() > 0
                        {
                            emit(&mut self.effects, Event::WaitingForRefs { chunk: id });
                        }
                    }
                }
                Err(error) => self.io_failed(id, error),
            },
            (Ended::CachedMark, Outcome::CachedMarked { cached, result }) => match result {
                Ok(()) => {
                    if let Some(stored) = self.entries.get_mut(&id).and_then(Entry::stored_mut) {
                        stored.cached_mark = cached;
                    }
                }
                Err(error) => self.io_failed(id, error),
            },
            (Ended::Tombstone, Outcome::TombstoneRemoved(result)) => match result {
                Ok(()) => {
                    if let Some(stored) = self.entries.get_mut(&id).and_then(Entry::stored_mut) {
                        stored.tombstone = false;
                    }
                }
                Err(error) => self.io_failed(id, error),
            },
            (job, outcome) => {
                debug_assert!(false, "job {job:?} ended with {outcome:?}");
            }
        }
        if let Some(entry) = self.entries.get(&id)
            && entry.desire == Desire::Cached
        {
            if entry.fetchers == 0 && entry.replaceable() {
                // Not on disk (cancelled, failed, no room, or its old files just removed) and
                // no fetch waits for it any more: not worth a place in the queue.
                self.forget(id);
            } else {
                // No job works on it any more: it may be evicted for a download waiting for
                // room.
                self.admission_dirty = true;
            }
        }
    }

    /// A download ended: the entry leaves `Downloading` for the phase its outcome leads to.
    fn download_finished(&mut self, id: ChunkId, outcome: DownloadOutcome) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let wanted = entry.wanted();
        entry.phase = Phase::Absent;
        match outcome {
            DownloadOutcome::Committed { path, size } => {
                self.budget.committed += size;
                entry.size = Some(size);
                entry.disk_wait_announced = false;
                entry.urgent = false;
                self.next_generation += 1;
                let resident = Arc::new(Resident::new(
                    entry.chunk.clone(),
                    path.clone(),
                    size,
                    self.next_generation,
                    self.released.clone(),
                ));
                // A new resident nobody else holds yet: set up here, not an effect.
                resident.set_hidden(!wanted);
                resident.set_cached(entry.desire == Desire::Cached);
                let stored = Stored::new(path, size);
                entry.phase = if wanted {
                    Phase::Ready {
                        stored,
                        resident: resident.clone(),
                    }
                } else {
                    // Deleted while committing: removed as soon as `settle` runs.
                    Phase::Deleting {
                        stored,
                        resident: Arc::downgrade(&resident),
                        why: Hidden::Deleted,
                    }
                };
                if wanted {
                    self.show(&resident);
                    self.after_publish.push(Event::ChunkReady {
                        chunk: id,
                        bytes: size,
                    });
                }
                self.touch(id);
                self.storage_used();
            }
            DownloadOutcome::Cancelled => {
                if wanted {
                    entry.phase = Phase::Queued {
                        waiting_for_space: false,
                    };
                    self.queues.push(id, entry.urgent, true);
                }
            }
            DownloadOutcome::NeedsSpace { size } => {
                entry.size = Some(size);
                if wanted {
                    self.queues.push(id, entry.urgent, true);
                    let deficit = (self.budget.committed + self.budget.reserved + size)
                        .saturating_sub(self.budget.limit);
                    // Room that evictions are freeing is coming: no need to announce a wait.
                    let waiting_for_space = self.budget.evicting < deficit;
                    entry.phase = Phase::Queued { waiting_for_space };
                    if waiting_for_space {
                        emit(
                            &mut self.effects,
                            Event::BudgetExceeded {
                                chunk: id,
                                needed: size,
                                available: self.budget.available(),
                            },
                        );
                    }
                }
            }
            DownloadOutcome::NeedsDiskSpace { size, free } => {
                if size > 0 {
                    entry.size = Some(size);
                }
                self.disk_free = free;
                if wanted {
                    // Out of the queues until `disk_space` finds room: not a failure, not an
                    // attempt.
                    entry.phase = Phase::WaitingForDisk;
                    self.disk_waiters.push_back(id);
                    if !mem::replace(&mut entry.disk_wait_announced, true) {
                        emit(
                            &mut self.effects,
                            Event::BudgetExceeded {
                                chunk: id,
                                needed: size,
                                available: free.min(self.budget.available()),
                            },
                        );
                    }
                }
            }
            DownloadOutcome::Failed { error, attempts } => {
                entry.disk_wait_announced = false;
                if wanted {
                    let error = Arc::new(error);
                    entry.phase = Phase::Failed {
                        error: error.clone(),
                        attempts,
                    };
                    emit(
                        &mut self.effects,
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

    /// A removal ended: the files are gone (the chunk is downloaded again if wanted, forgotten
    /// otherwise), or the removal failed and is retried after a backoff.
    fn removal_finished(&mut self, id: ChunkId, result: Result<(), Error>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if !matches!(entry.phase, Phase::Removing { .. }) {
            return;
        }
        let Phase::Removing { stored, why } = mem::replace(&mut entry.phase, Phase::Absent) else {
            unreachable!("matched above");
        };
        // Whatever the result, the room this eviction promised is no longer coming from it.
        if why == Hidden::Evicted {
            self.budget.evicting -= stored.size;
            self.admission_dirty = true;
        }
        if let Err(error) = result {
            // Every ref was gone: a new resident is made if it is shown again.
            entry.phase = Phase::Deleting {
                stored,
                resident: Weak::new(),
                why: if why == Hidden::Corrupt {
                    Hidden::Corrupt
                } else {
                    Hidden::Deleted
                },
            };
            self.io_failed(id, error);
            return;
        }
        self.budget.committed -= stored.size;
        self.admission_dirty = true;
        if entry.wanted() {
            entry.phase = Phase::Queued {
                waiting_for_space: false,
            };
            self.queues.push(id, entry.urgent, true);
        } else {
            self.forget(id);
        }
        self.storage_used();
    }

    fn io_failed(&mut self, id: ChunkId, error: Error) {
        if let Some(entry) = self.entries.get_mut(&id) {
            if let Some(stored) = entry.stored_mut() {
                stored.io_failed = true;
            }
            entry.io_failures = entry.io_failures.saturating_add(1);
            if !self.shutting_down {
                self.io_retries.push(IoRetry {
                    chunk: id,
                    incarnation: entry.incarnation,
                    failures: entry.io_failures,
                });
            }
        }
        emit(
            &mut self.effects,
            Event::IoFailed {
                chunk: id,
                error: Arc::new(error),
            },
        );
    }

    /// Drops a chunk that is neither wanted nor on disk.
    fn forget(&mut self, id: ChunkId) {
        if let Some(entry) = self.entries.remove(&id) {
            debug_assert!(entry.lru_tick.is_none(), "a forgotten chunk was in the LRU");
            // It may have held the front of its queue (waiting for room): the chunks behind
            // it may start now.
            if matches!(entry.phase, Phase::Queued { .. }) {
                self.admission_dirty = true;
            }
        }
        emit(&mut self.effects, Event::ChunkDeleted { chunk: id });
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
        self.effects
            .push(Effect::VisibleVersion(self.index_version));
    }

    fn hide(&mut self, key: IndexKey) {
        self.index_version += 1;
        self.index_changes.push(IndexChange::Hide(key));
        // Listed before the version moves: a reader that sees the version finds the hide.
        self.effects.push(Effect::Hidden {
            version: self.index_version,
            key,
        });
        self.effects
            .push(Effect::VisibleVersion(self.index_version));
    }

    /// The effects of the transitions since the last call, in order, for the caller to carry
    /// out while it still holds the lock (see [`crate::reconciler::apply`]).
    pub(crate) fn take_effects(&mut self) -> Vec<Effect> {
        mem::take(&mut self.effects)
    }

    /// The releases channel's sender, given to every new resident.
    pub(crate) fn releases(&self) -> &Releases {
        &self.released
    }

    fn storage_used(&mut self) {
        emit(
            &mut self.effects,
            Event::StorageUsed {
                used: self.budget.committed,
                reserved: self.budget.reserved,
                budget: self.budget.limit,
            },
        );
    }

    /// Events to send after the index changes taken so far are published.
    pub(crate) fn take_after_publish(&mut self) -> Vec<Event> {
        mem::take(&mut self.after_publish)
    }

    /// The visibility changes since the last call, and the version they bring the index to.
    ///
    /// The reconciler publishes each batch before it takes the next, so the hides up to the
    /// previous batch's version are in the published snapshot: `list_chunks` no longer needs
    /// them, and they are dropped here, keeping the shared list as short as one turn's hides.
    pub(crate) fn take_index_changes(&mut self) -> (Vec<IndexChange>, u64) {
        self.effects
            .push(Effect::HidesPublished(self.taken_version));
        self.taken_version = self.index_version;
        (mem::take(&mut self.index_changes), self.index_version)
    }

    /// The version of the visible set; the index is current once it has published it.
    pub(crate) fn index_version(&self) -> u64 {
        self.index_version
    }

    /// Stops starting jobs and cancels the running downloads. Every deletion requested so far
    /// gets one more try at being recorded ([`Table::shutdown_work`]).
    pub(crate) fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.io_retries.clear();
        for entry in self.entries.values_mut() {
            entry.clear_io_failed();
            if let Phase::Downloading(download) = &mut entry.phase {
                download.cancelled = true;
                self.effects.push(Effect::Cancel(download.cancel.clone()));
            }
        }
    }

    /// While shutting down: the jobs that make every requested deletion durable, so that the
    /// next start does not bring a deleted chunk back. An unpinned chunk is removed; a pinned
    /// one (its refs may outlive the manager) gets a tombstone, applied at the next start.
    /// Each chunk gets one try; empty once nothing is left to record.
    pub(crate) fn shutdown_work(&mut self) -> Vec<Work> {
        debug_assert!(self.shutting_down);
        let mut work = Vec::new();
        for (id, entry) in &mut self.entries {
            if entry.busy() || entry.io_failed() || entry.wanted() {
                continue;
            }
            let Phase::Deleting {
                stored, resident, ..
            } = &mut entry.phase
            else {
                continue;
            };
            if resident.strong_count() == 0 {
                let Phase::Deleting { stored, why, .. } =
                    mem::replace(&mut entry.phase, Phase::Absent)
                else {
                    unreachable!("matched above");
                };
                work.push(Work::Remove {
                    chunk: *id,
                    path: stored.path.clone(),
                    tombstone: stored.tombstone,
                    cached_mark: stored.cached_mark,
                });
                entry.phase = Phase::Removing { stored, why };
            } else if !stored.tombstone {
                stored.job = Some(MarkJob::Tombstone);
                work.push(Work::WriteTombstone { chunk: *id });
            } else {
                continue;
            }
            self.jobs_running += 1;
        }
        work
    }

    /// The scrub found the committed files of `id` (the resident of `generation`) damaged:
    /// hide the chunk at once; its files go once no ref holds them, and a wanted chunk is then
    /// downloaded again. Returns whether the chunk was hidden (false if it changed meanwhile).
    pub(crate) fn quarantine(&mut self, id: ChunkId, generation: u64) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        let Phase::Ready { resident, .. } = &entry.phase else {
            return false;
        };
        if resident.generation != generation {
            return false;
        }
        let Some((key, _)) = entry.take_out_of_sight(Hidden::Corrupt, &mut self.effects) else {
            unreachable!("ready, matched above");
        };
        self.hide(key);
        self.sync_lru(id);
        self.dirty.push(id);
        true
    }

    /// Failed disk jobs to retry after a backoff, since the last call.
    pub(crate) fn take_io_retries(&mut self) -> Vec<IoRetry> {
        mem::take(&mut self.io_retries)
    }

    /// The backoff of a failed disk job has passed: try it again (if the chunk is still the
    /// same entry and still needs it).
    pub(crate) fn retry_io(&mut self, retry: IoRetry) {
        if let Some(entry) = self.entries.get_mut(&retry.chunk)
            && entry.incarnation == retry.incarnation
            && entry.io_failed()
        {
            entry.clear_io_failed();
            self.dirty.push(retry.chunk);
        }
    }

    /// Whether the deletion of `id` is recorded on disk. See [`Deletion`].
    pub(crate) fn deletion(&self, id: &ChunkId) -> Deletion {
        let Some(entry) = self.entries.get(id) else {
            return Deletion::Durable;
        };
        if entry.wanted() {
            return Deletion::Wanted;
        }
        // A running job may still commit (a cancelled download racing its rename) or is
        // removing the files: not settled until it ends.
        if entry.busy() {
            return Deletion::Pending;
        }
        match entry.stored() {
            None => Deletion::Durable,
            Some(stored) if stored.tombstone => Deletion::Durable,
            Some(_) => Deletion::Pending,
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
        self.entries.get(id)?.shown().cloned()
    }

    /// Where a chunk stands, for waiters.
    pub(crate) fn settled(&self, id: &ChunkId) -> Settled {
        let Some(entry) = self.entries.get(id) else {
            return Settled::NotWanted;
        };
        if !entry.wanted() {
            return Settled::NotWanted;
        }
        match &entry.phase {
            Phase::Ready { resident, .. } => return Settled::Ready(resident.clone()),
            Phase::Failed { error, .. } => return Settled::Failed(error.clone()),
            _ => {}
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
            wanted: entry.desire == Desire::Assigned,
            cached: entry.desire == Desire::Cached,
            rejected: entry.rejected.clone(),
        }
    }

    fn state_of(&self, entry: &Entry) -> ChunkState {
        match &entry.phase {
            Phase::Downloading(Download { progress, .. }) => {
                let total = progress.total.load(Ordering::Relaxed);
                ChunkState::Downloading {
                    bytes_done: progress.done.load(Ordering::Relaxed),
                    bytes_total: (total > 0).then_some(total),
                }
            }
            Phase::Ready { .. } => ChunkState::Ready,
            Phase::Deleting { resident, .. } => ChunkState::Deleting {
                pinned: resident.strong_count() > 0,
            },
            Phase::Removing { .. } => ChunkState::Deleting { pinned: false },
            Phase::Failed { error, attempts } => ChunkState::Failed {
                error: error.clone(),
                attempts: *attempts,
            },
            Phase::Queued {
                waiting_for_space: true,
            } => ChunkState::WaitingForSpace {
                needed: entry.size.unwrap_or(0),
                available: self.budget.available(),
            },
            Phase::WaitingForDisk => ChunkState::WaitingForSpace {
                needed: entry.size.unwrap_or(0),
                available: self.budget.available().min(self.disk_free),
            },
            Phase::Absent | Phase::Queued { .. } => ChunkState::Queued,
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
            if entry.desire == Desire::Assigned {
                let reserved = match &entry.phase {
                    Phase::Downloading(download) => download.reserved,
                    _ => 0,
                };
                totals.bytes_assigned = totals
                    .bytes_assigned
                    .saturating_add(entry.committed_size().saturating_add(reserved));
            }
            match self.state_of(entry) {
                ChunkState::Queued => totals.queued += 1,
                ChunkState::WaitingForSpace { .. } => totals.waiting_for_space += 1,
                ChunkState::Downloading { .. } => totals.downloading += 1,
                ChunkState::Ready => {
                    totals.ready += 1;
                    totals.cached += usize::from(entry.desire == Desire::Cached);
                }
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

impl Table {
    /// Checks the table's bookkeeping against its entries; for tests.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut lru = BTreeSet::new();
        let (mut committed, mut reserved, mut evicting) = (0, 0, 0);
        for (id, entry) in &self.entries {
            let ready_cached = entry.desire == Desire::Cached && entry.shown().is_some();
            assert_eq!(entry.lru_tick.is_some(), ready_cached, "LRU membership");
            if let Some(tick) = entry.lru_tick {
                lru.insert((tick, *id));
            }
            if let Some(resident) = entry.shown() {
                assert_eq!(resident.is_cached(), entry.desire == Desire::Cached);
            }
            committed += entry.committed_size();
            match &entry.phase {
                Phase::Downloading(Download { reserved: r, .. }) => reserved += r,
                Phase::Deleting {
                    why: Hidden::Evicted,
                    ..
                }
                | Phase::Removing {
                    why: Hidden::Evicted,
                    ..
                } => evicting += entry.committed_size(),
                Phase::WaitingForDisk => assert!(
                    self.disk_waiters.contains(id),
                    "a chunk waiting for disk space is in the waiters"
                ),
                Phase::Queued { .. } if entry.wanted() => {
                    let queue = if entry.urgent {
                        &self.queues.urgent
                    } else {
                        &self.queues.background
                    };
                    assert!(queue.contains(id), "a queued chunk is in its queue");
                }
                _ => {}
            }
            assert!(
                !(entry.urgent && matches!(entry.phase, Phase::Ready { .. })),
                "a ready chunk is not urgent"
            );
            if let Some(stored) = entry.stored() {
                assert!(
                    !(stored.job.is_some() && stored.io_failed),
                    "a failed disk job waits for its retry before it runs again"
                );
            }
            if self.disk_granted.contains(id) {
                assert!(
                    matches!(entry.phase, Phase::Downloading(_)),
                    "a granted download is running"
                );
            }
        }
        assert_eq!(
            lru, self.lru,
            "the LRU set holds exactly the ready cached chunks"
        );
        assert_eq!(committed, self.budget.committed, "committed bytes");
        assert_eq!(reserved, self.budget.reserved, "reserved bytes");
        assert_eq!(evicting, self.budget.evicting, "evicting bytes");
        assert!(
            committed + reserved <= self.budget.limit,
            "the budget holds"
        );
    }
}

fn emit(effects: &mut Vec<Effect>, event: Event) {
    effects.push(Effect::Emit(event));
}

#[cfg(test)]
mod tests;
