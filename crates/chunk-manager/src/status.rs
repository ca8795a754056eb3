//! What the manager reports about a chunk and about itself.

use std::sync::Arc;

use crate::chunk::DataChunk;
use crate::error::Error;

/// Where one chunk stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ChunkState {
    /// Waiting for a download slot.
    Queued,
    /// Waiting until deletions free enough of the disk budget, or until the filesystem has
    /// enough free space (read again every [`Config::disk_space_poll`](crate::Config::disk_space_poll)).
    WaitingForSpace {
        /// Bytes the chunk needs.
        needed: u64,
        /// Bytes free in the budget now; for a wait for disk space, the smaller of that and
        /// the filesystem's usable free space when last read.
        available: u64,
    },
    /// Downloading.
    Downloading {
        /// Bytes written so far.
        bytes_done: u64,
        /// The chunk's size, once the origin has told it.
        bytes_total: Option<u64>,
    },
    /// Committed and visible.
    Ready,
    /// Deleted and hidden; the files are removed once no ref holds them.
    Deleting {
        /// Whether refs still hold the chunk.
        pinned: bool,
    },
    /// The download failed; [`download_chunk`](crate::ChunkManager::download_chunk) tries
    /// again.
    Failed {
        /// Why.
        error: Arc<Error>,
        /// Attempts made for the failing file.
        attempts: u32,
    },
}

impl ChunkState {
    /// A short, stable name: `queued`, `waiting_for_space`, `downloading`, `ready`, `deleting`
    /// or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            ChunkState::Queued => "queued",
            ChunkState::WaitingForSpace { .. } => "waiting_for_space",
            ChunkState::Downloading { .. } => "downloading",
            ChunkState::Ready => "ready",
            ChunkState::Deleting { .. } => "deleting",
            ChunkState::Failed { .. } => "failed",
        }
    }
}

/// The status of one chunk the manager knows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChunkStatus {
    /// The chunk's description.
    pub chunk: Arc<DataChunk>,
    /// Where it stands.
    pub state: ChunkState,
    /// Whether the chunk is assigned: the last request for it was a download (true), or a
    /// delete or a query's [`fetch`](crate::ChunkManager::fetch) (false).
    pub wanted: bool,
    /// Whether the chunk is cached: fetched for a query and not assigned, so it may be
    /// evicted (least recently used first) when the disk budget needs room.
    pub cached: bool,
    /// The last request for this id that was refused (a different description), if the chunk
    /// has not been requested successfully since.
    pub rejected: Option<Arc<Error>>,
}

/// Counts and bytes over all chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Chunks ready and visible.
    pub ready: usize,
    /// Of those, chunks cached for queries (not assigned; evictable).
    pub cached: usize,
    /// Chunks waiting for a download slot.
    pub queued: usize,
    /// Chunks waiting for room in the disk budget.
    pub waiting_for_space: usize,
    /// Chunks downloading.
    pub downloading: usize,
    /// Chunks whose download failed.
    pub failed: usize,
    /// Chunks deleted but still on disk (pinned by refs or being removed).
    pub deleting: usize,
    /// Of those, chunks held by refs.
    pub pinned: usize,
    /// Bytes of committed chunks on disk (visible or not yet removed).
    pub bytes_committed: u64,
    /// Bytes reserved by downloads in flight.
    pub bytes_reserved: u64,
    /// Of the committed and reserved bytes, those of assigned chunks: never evicted, so the
    /// budget less these is the most that chunks fetched for queries can hold.
    pub bytes_assigned: u64,
    /// The disk budget.
    pub disk_budget: u64,
}
