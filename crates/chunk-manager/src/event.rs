//! Events: what the manager did, one step at a time, for logs, progress displays and metrics.

use std::fmt;
use std::sync::Arc;

use crate::chunk::{ChunkId, ShortId};
use crate::error::Error;
use crate::meter::Meter;

/// Sends events to subscribers and records them as metrics. Cheap to clone; every clone
/// feeds the same channel.
#[derive(Debug, Clone)]
pub(crate) struct Emitter {
    sender: tokio::sync::broadcast::Sender<Event>,
    meter: Arc<Meter>,
}

impl Emitter {
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, _) = tokio::sync::broadcast::channel(capacity.max(1));
        Self {
            sender,
            meter: Arc::default(),
        }
    }

    /// Records and sends an event; having no subscriber is fine.
    pub(crate) fn emit(&self, event: Event) {
        self.meter.record(&event);
        let _no_subscribers_is_fine = self.sender.send(event);
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

/// One step of the manager's work. Subscribe with
/// [`ChunkManager::subscribe`](crate::ChunkManager::subscribe).
///
/// `Display` prints the line the original demo printed, emoji first.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// 📡 A chunk's download started.
    DownloadStarted {
        /// The chunk.
        chunk: ChunkId,
    },
    /// 💾 One file of a chunk is downloaded and synced to disk.
    FileDownloaded {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The file's size.
        bytes: u64,
    },
    /// A file's download failed and will be tried again.
    Retrying {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Why it failed.
        error: Arc<Error>,
    },
    /// ✅ A chunk is committed and visible.
    ChunkReady {
        /// The chunk.
        chunk: ChunkId,
        /// Its size on disk.
        bytes: u64,
    },
    /// A chunk's download failed for good (until it is requested again).
    DownloadFailed {
        /// The chunk.
        chunk: ChunkId,
        /// Why.
        error: Arc<Error>,
        /// Attempts made for the failing file.
        attempts: u32,
    },
    /// ❌ A chunk is deleted: its files are gone (or it never had any).
    ChunkDeleted {
        /// The chunk.
        chunk: ChunkId,
    },
    /// 🚫 A download waits because the disk budget has no room for it, or the filesystem's
    /// free space (the second budget: see [`Config::min_free_bytes`](crate::Config::min_free_bytes))
    /// has not, or the filesystem filled up while it was written (`ENOSPC`).
    BudgetExceeded {
        /// The chunk.
        chunk: ChunkId,
        /// Bytes the chunk needs (0 if the disk filled up before its size was known).
        needed: u64,
        /// Bytes free in the budget now; for a wait for disk space, the smaller of that and
        /// the filesystem's usable free space.
        available: u64,
    },
    /// ⌛️ A deleted chunk is hidden and its deletion recorded; its files stay until the last
    /// ref is dropped.
    WaitingForRefs {
        /// The chunk.
        chunk: ChunkId,
    },
    /// 📏 Disk usage changed.
    StorageUsed {
        /// Bytes of committed chunks.
        used: u64,
        /// Bytes reserved by downloads in flight.
        reserved: u64,
        /// The disk budget.
        budget: u64,
    },
    /// A request was refused; the chunk's state is unchanged.
    Rejected {
        /// The chunk.
        chunk: ChunkId,
        /// Why.
        error: Arc<Error>,
    },
    /// A filesystem operation on a chunk failed (removal, deletion record).
    IoFailed {
        /// The chunk.
        chunk: ChunkId,
        /// What failed.
        error: Arc<Error>,
    },
    /// 🛑 The manager shut down.
    Shutdown,
    /// 🩺 The scrub found a committed chunk's files not matching its manifest: the chunk is
    /// hidden at once, its files removed once no ref holds them, and it is downloaded again if
    /// still wanted.
    Corrupt {
        /// The chunk.
        chunk: ChunkId,
        /// What does not match.
        reason: Arc<str>,
    },
    /// 🧹 A cached chunk (fetched for a query, not assigned) was evicted to make room in the
    /// disk budget: hidden at once, its files removed once no ref holds it (then
    /// [`Event::ChunkDeleted`]).
    Evicted {
        /// The chunk.
        chunk: ChunkId,
        /// The bytes it frees.
        bytes: u64,
    },
}

impl Event {
    /// The chunk the event is about, if any.
    pub fn chunk(&self) -> Option<&ChunkId> {
        match self {
            Event::DownloadStarted { chunk }
            | Event::FileDownloaded { chunk, .. }
            | Event::Retrying { chunk, .. }
            | Event::ChunkReady { chunk, .. }
            | Event::DownloadFailed { chunk, .. }
            | Event::ChunkDeleted { chunk }
            | Event::BudgetExceeded { chunk, .. }
            | Event::WaitingForRefs { chunk }
            | Event::Rejected { chunk, .. }
            | Event::IoFailed { chunk, .. }
            | Event::Evicted { chunk, .. }
            | Event::Corrupt { chunk, .. } => Some(chunk),
            Event::StorageUsed { .. } | Event::Shutdown => None,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::DownloadStarted { chunk } => write!(f, "📡 download started {}", ShortId(chunk)),
            Event::FileDownloaded { chunk, file, bytes } => {
                write!(
                    f,
                    "💾 file downloaded {} {file} ({})",
                    ShortId(chunk),
                    Bytes(*bytes)
                )
            }
            Event::Retrying {
                chunk,
                file,
                attempt,
                error,
            } => write!(
                f,
                "🔁 retrying {} {file} after attempt {attempt}: {error}",
                ShortId(chunk)
            ),
            Event::ChunkReady { chunk, bytes } => {
                write!(f, "✅ chunk ready {} ({})", ShortId(chunk), Bytes(*bytes))
            }
            Event::DownloadFailed {
                chunk,
                error,
                attempts,
            } => write!(
                f,
                "⚠️ download failed {} after {attempts} attempt(s): {error}",
                ShortId(chunk)
            ),
            Event::ChunkDeleted { chunk } => write!(f, "❌ chunk deleted {}", ShortId(chunk)),
            Event::BudgetExceeded {
                chunk,
                needed,
                available,
            } => write!(
                f,
                "🚫 storage budget exceeded: {} needs {}, {} free; waiting for deletions",
                ShortId(chunk),
                Bytes(*needed),
                Bytes(*available)
            ),
            Event::WaitingForRefs { chunk } => {
                write!(f, "⌛️ waiting for refs to drop {}", ShortId(chunk))
            }
            Event::StorageUsed {
                used,
                reserved,
                budget,
            } => write!(
                f,
                "📏 storage used {} + {} reserved of {}",
                Bytes(*used),
                Bytes(*reserved),
                Bytes(*budget)
            ),
            Event::Rejected { chunk, error } => {
                write!(f, "⛔ request rejected {}: {error}", ShortId(chunk))
            }
            Event::IoFailed { chunk, error } => {
                write!(f, "⚠️ disk operation failed {}: {error}", ShortId(chunk))
            }
            Event::Shutdown => write!(f, "🛑 shutdown"),
            Event::Corrupt { chunk, reason } => write!(
                f,
                "🩺 chunk {} does not match its manifest ({reason}): hidden, downloaded again if wanted",
                ShortId(chunk)
            ),
            Event::Evicted { chunk, bytes } => write!(
                f,
                "🧹 cached chunk evicted {} ({}) to make room",
                ShortId(chunk),
                Bytes(*bytes)
            ),
        }
    }
}

/// A byte count printed with a binary unit, e.g. `1.5 MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(Bytes(0).to_string(), "0 B");
        assert_eq!(Bytes(1023).to_string(), "1023 B");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(1 << 40).to_string(), "1.0 TiB");
    }

    #[test]
    fn events_print_the_original_emoji() {
        let id = [0xab; 32];
        assert!(
            Event::DownloadStarted { chunk: id }
                .to_string()
                .starts_with("📡")
        );
        assert!(
            Event::ChunkReady {
                chunk: id,
                bytes: 1
            }
            .to_string()
            .starts_with("✅")
        );
        assert!(
            Event::ChunkDeleted { chunk: id }
                .to_string()
                .starts_with("❌")
        );
        assert!(
            Event::WaitingForRefs { chunk: id }
                .to_string()
                .starts_with("⌛️")
        );
        assert!(Event::Shutdown.to_string().starts_with("🛑"));
        let corrupt = Event::Corrupt {
            chunk: id,
            reason: "file \"f\" differs".into(),
        }
        .to_string();
        assert!(corrupt.starts_with("🩺"), "{corrupt}");
        assert!(corrupt.contains("does not match its manifest"), "{corrupt}");
    }
}
