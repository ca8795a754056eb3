//! # chunk-manager
//!
//! The data layer of a query worker in a sharded data lake. A dataset is split into immutable
//! chunks (an id, a block range, 1 to 10 files at URLs); a worker is assigned some of them and
//! the assignment changes while queries run. The [`ChunkManager`] downloads the chunks it is
//! told to keep, deletes the ones it is told to drop, and shows queries only complete chunks,
//! never removing one while a [`ChunkRef`] holds it.
//!
//! ```
//! use chunk_manager::{ChunkManager, Config, DataChunk, DataManager};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let origin = chunk_origin::Origin::start()?;
//! # origin.insert("blocks", chunk_origin::content(7, 4096));
//! let dir = tempfile::tempdir()?;
//! let manager = ChunkManager::open(Config::new(dir.path()).with_disk_budget(1 << 30))?;
//! let files = [("blocks.parquet".to_string(), origin.url("blocks"))].into();
//! manager.download_chunk(DataChunk::new([1; 32], [0; 32], 0..1000, files));
//! manager.wait_idle_blocking();
//! assert_eq!(manager.list_chunks(), vec![[1; 32]]);
//! let chunk = manager.find_chunk([0; 32], 999).expect("ready");
//! assert!(chunk.path().join("blocks.parquet").is_file());
//! # Ok(())
//! # }
//! ```
//!
//! ## Guarantees
//!
//! - **Desired state**: the last call for an id wins, whatever the order of calls; the manager
//!   converges to it in the background (see the table in the crate's `table` module docs).
//! - **Visibility**: only fully downloaded, verified, committed chunks are listed or found; a
//!   chunk appears atomically and disappears at once when deleted.
//! - **Refs**: while a [`ChunkRef`] lives its files are neither removed, moved nor changed.
//! - **Durability**: a crash at any instant loses no committed chunk and shows no partial one;
//!   a deletion that was reported (❌ or ⌛️) stays deleted. See the `disk` module docs.
//! - **Budget**: committed plus reserved bytes never exceed [`Config::disk_budget`].
//! - **Queries**: [`ChunkManager::fetch`] gets a chunk for a query, pinned: at once if ready,
//!   otherwise downloaded ahead of background downloads, one download for every caller. A
//!   chunk fetched that is not assigned is *cached*: evicted, least recently used first, when
//!   the budget needs room, never while pinned; an assigned chunk is never evicted.
//! - **Cheap calls**: no call does IO or waits; lookups take no lock.
//!
//! ## On disk
//!
//! ```text
//! data_dir/LOCK
//! data_dir/chunks/<dataset hex>/<start>-<end>-<chunk hex>/{<files>, .manifest.json}
//! data_dir/tmp/  data_dir/trash/  data_dir/deleted/
//! ```
#![deny(missing_docs)]

mod chunk;
mod config;
mod disk;
mod download;
mod error;
mod event;
mod handle;
mod index;
mod integrity;
mod manager;
mod meter;
mod reconciler;
mod scrub;
mod source;
mod status;
mod table;

use std::path::{Path, PathBuf};

pub use chunk::{
    ChunkId, DataChunk, DatasetId, InvalidChunk, InvalidId, MAX_FILE_NAME_LEN, MAX_FILES, ShortId,
    id_from_hex, id_to_hex, redact_url, redact_urls,
};
pub use config::{AzureConfig, Config, GcsConfig, S3Config, TIB};
pub use disk::StartupReport;
pub use error::Error;
pub use event::{Bytes, Event};
pub use handle::ChunkRef;
pub use integrity::{Checksum, ChecksumAlgorithm, FileCheck, InvalidChecksum};
pub use manager::ChunkManager;
pub use meter::names as metric_names;
pub use status::{ChunkState, ChunkStatus, Totals};

/// The original interface of the data manager. [`ChunkManager`] implements it.
pub trait DataManager: Send + Sync {
    /// Opens a manager on `data_dir`. Implementations that can fail panic with the error's
    /// message; see [`ChunkManager::open`] for the fallible constructor.
    fn new(data_dir: PathBuf) -> Self;
    /// Asks for the chunk to be downloaded. Returns at once.
    fn download_chunk(&self, chunk: DataChunk);
    /// The ids of the ready chunks.
    fn list_chunks(&self) -> Vec<ChunkId>;
    /// A ready chunk of the dataset that contains the block, pinned while the ref lives.
    fn find_chunk(&self, dataset_id: [u8; 32], block_number: u64) -> Option<impl DataChunkRef>;
    /// Asks for the chunk to be deleted. Returns at once.
    fn delete_chunk(&self, chunk_id: [u8; 32]);
}

/// A pinned chunk: its directory stays as it is while the ref lives.
pub trait DataChunkRef: Send + Sync + Clone {
    /// The chunk's directory, holding one file per name.
    fn path(&self) -> &Path;
}

/// The README's examples, run as doc tests so the front door stays true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
