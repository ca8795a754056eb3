//! The ref (pin) type: what a query holds while it reads a chunk's files.
//!
//! A chunk that is on disk is a [`Resident`], shared through an `Arc`. While the chunk is
//! wanted, the manager's table and its lookup snapshot hold strong references; a
//! [`ChunkRef`] is one more. When the chunk is deleted, the manager keeps only a `Weak`, so the
//! strong count falls to zero exactly when the last ref (or lookup snapshot) is dropped. That
//! drop tells the reconciler, which then removes the files. No polling, no manual counter.
//!
//! Strong references do not tell a query's pin from the manager's own lookup snapshots, so a
//! resident also counts its pins: the live [`ChunkRef`]s. A cached chunk (fetched for a query,
//! not assigned) is evicted only when it has none, and the last pin of a cached chunk tells
//! the reconciler, so that a download waiting for room can evict it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::chunk::{ChunkId, DataChunk, DatasetId};

/// A message from a resident chunk to the reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Released {
    pub(crate) id: ChunkId,
    pub(crate) generation: u64,
    pub(crate) kind: ReleaseKind,
}

/// What a [`Released`] message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseKind {
    /// The last strong reference is gone: a deleted chunk's files may go.
    Dropped,
    /// The last pin of a cached chunk is gone: it may be evicted.
    Unpinned,
}

/// Where residents report their release: a channel to the reconciler, plus a count of
/// releases sent but not yet folded into the table, so that waiting for idleness also waits
/// for a ref dropped a moment ago.
#[derive(Debug, Clone)]
pub(crate) struct Releases {
    sender: mpsc::UnboundedSender<Released>,
    in_flight: Arc<AtomicUsize>,
}

impl Releases {
    pub(crate) fn channel() -> (Self, mpsc::UnboundedReceiver<Released>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let releases = Self {
            sender,
            in_flight: Arc::new(AtomicUsize::new(0)),
        };
        (releases, receiver)
    }

    fn send(&self, released: Released) -> bool {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let sent = self.sender.send(released).is_ok();
        if !sent {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }

    /// Called by the reconciler for each release it folded into the table (under its lock).
    pub(crate) fn folded(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// A committed chunk on disk. Owned through `Arc`; see the module docs.
#[derive(Debug)]
pub(crate) struct Resident {
    pub(crate) chunk: Arc<DataChunk>,
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    /// Tells a stale release (of a resident replaced after a revive) from the current one.
    pub(crate) generation: u64,
    /// Set under the table lock when the chunk is deleted, so lookups stop returning it at once,
    /// before the lookup snapshot is rebuilt without it.
    pub(crate) hidden: AtomicBool,
    /// Set under the table lock while the chunk is cached (evictable).
    cached: AtomicBool,
    /// Live [`ChunkRef`]s.
    pins: AtomicUsize,
    released: Releases,
}

impl Resident {
    pub(crate) fn new(
        chunk: Arc<DataChunk>,
        path: PathBuf,
        size: u64,
        generation: u64,
        released: Releases,
    ) -> Self {
        Self {
            chunk,
            path,
            size,
            generation,
            hidden: AtomicBool::new(false),
            cached: AtomicBool::new(false),
            pins: AtomicUsize::new(0),
            released,
        }
    }

    pub(crate) fn is_hidden(&self) -> bool {
        self.hidden.load(Ordering::Acquire)
    }

    pub(crate) fn set_hidden(&self, hidden: bool) {
        self.hidden.store(hidden, Ordering::Release);
    }

    // `cached` and `pins` use `SeqCst`: the table sets `cached` and then reads `pins`, a ref's
    // drop lowers `pins` and then reads `cached`, so at least one of them sees the other and
    // a waiting download learns that the chunk became evictable.

    pub(crate) fn set_cached(&self, cached: bool) {
        self.cached.store(cached, Ordering::SeqCst);
    }

    pub(crate) fn is_cached(&self) -> bool {
        self.cached.load(Ordering::SeqCst)
    }

    /// Live refs.
    pub(crate) fn pins(&self) -> usize {
        self.pins.load(Ordering::SeqCst)
    }

    fn pin(&self) {
        self.pins.fetch_add(1, Ordering::SeqCst);
    }

    fn unpin(&self) {
        if self.pins.fetch_sub(1, Ordering::SeqCst) == 1 && self.is_cached() {
            let released = Released {
                id: *self.chunk.id(),
                generation: self.generation,
                kind: ReleaseKind::Unpinned,
            };
            // A closed channel means the manager is gone: nothing waits for room any more.
            let _manager_may_be_gone = self.released.send(released);
        }
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        let released = Released {
            id: *self.chunk.id(),
            generation: self.generation,
            kind: ReleaseKind::Dropped,
        };
        // A closed channel means the manager is gone; the next start removes the files of a
        // chunk whose deletion was recorded.
        if !self.released.send(released) {
            tracing::debug!(chunk = %crate::ShortId(&released.id), "chunk released after shutdown");
        }
    }
}

/// A pinned, fully downloaded chunk.
///
/// While any clone of a `ChunkRef` lives, the chunk's directory and files are neither removed,
/// moved nor changed, even if the chunk is deleted meanwhile: the files go right after the last
/// ref is dropped. A ref is cheap to clone, `Send + Sync + 'static`, and may outlive the
/// manager. A cached chunk (see [`ChunkManager::fetch`](crate::ChunkManager::fetch)) is never
/// evicted while a ref holds it.
#[derive(Debug)]
pub struct ChunkRef {
    resident: Arc<Resident>,
}

impl ChunkRef {
    /// Pins the resident. Refs of cached chunks are created under the table lock, so that an
    /// eviction never races a pin.
    pub(crate) fn new(resident: Arc<Resident>) -> Self {
        resident.pin();
        Self { resident }
    }

    #[cfg(test)]
    pub(crate) fn resident(&self) -> &Arc<Resident> {
        &self.resident
    }

    /// The chunk's directory, which holds one file per name in [`DataChunk::files`].
    pub fn path(&self) -> &Path {
        &self.resident.path
    }

    /// The chunk's description.
    pub fn chunk(&self) -> &DataChunk {
        &self.resident.chunk
    }

    /// The chunk's id.
    pub fn id(&self) -> &ChunkId {
        self.resident.chunk.id()
    }

    /// The chunk's dataset.
    pub fn dataset_id(&self) -> &DatasetId {
        self.resident.chunk.dataset_id()
    }

    /// The path of one of the chunk's files, or `None` if the chunk has no file of that name.
    pub fn file_path(&self, name: &str) -> Option<PathBuf> {
        self.resident
            .chunk
            .files()
            .contains_key(name)
            .then(|| self.resident.path.join(name))
    }

    /// The total size of the chunk's files in bytes.
    pub fn size(&self) -> u64 {
        self.resident.size
    }
}

impl Clone for ChunkRef {
    fn clone(&self) -> Self {
        Self::new(self.resident.clone())
    }
}

impl Drop for ChunkRef {
    fn drop(&mut self) {
        self.resident.unpin();
    }
}

impl crate::DataChunkRef for ChunkRef {
    fn path(&self) -> &Path {
        ChunkRef::path(self)
    }
}
