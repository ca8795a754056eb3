//! # chunk-query
//!
//! SQL queries over a dataset's chunks, on [Apache DataFusion](https://datafusion.apache.org),
//! that download only the data they need.
//!
//! A worker holds some chunks of a dataset (its assignment) in a
//! [`ChunkManager`](chunk_manager::ChunkManager). A query names a dataset, a block range and
//! SQL. The [`QueryEngine`] asks the [`Catalog`] (every chunk of the dataset: id, range,
//! files) which chunks cover the range, gets each from the manager (those not on disk are
//! downloaded on demand, ahead of background downloads, and kept as *cached* chunks the manager
//! evicts, least recently used first, when its budget needs room), pins them for the query's
//! lifetime, registers their Parquet files as tables (`blocks.parquet` → `blocks`), pushes the
//! block range down as a filter (not on files whose statistics show every row inside it) and
//! streams Arrow record batches out.
//!
//! ```
//! use std::sync::Arc;
//! use chunk_manager::{ChunkManager, Config};
//! use chunk_query::{Catalog, QueryEngine, synth::{Synth, SynthConfig}};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let origin = chunk_origin::Origin::start()?;
//! let dataset = [1; 32];
//! let synth = Synth::new(SynthConfig::small());
//! let chunk = synth.chunk(&dataset, 0..100)?;
//! # for (name, bytes) in &chunk.files { origin.insert(&chunk.path(name), bytes.clone()); }
//! // Files served by an origin (here an in-process one on 127.0.0.1).
//! let catalog = Catalog::new([chunk.describe(&dataset, |path| origin.url(path))])?;
//!
//! let dir = tempfile::tempdir()?;
//! let manager = Arc::new(ChunkManager::open(Config::new(dir.path()))?);
//! let engine = QueryEngine::new(manager, catalog)?;
//! let batches = engine
//!     .query(&dataset, 10..20, "SELECT count(*) FROM blocks")
//!     .await?
//!     .collect()
//!     .await?;
//! assert_eq!(batches[0].num_rows(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## Modules
//!
//! - [`catalog`]: the dataset catalog (chunks and table schemas) and the cover of a block range.
//! - [`checked`]: exact sums and overflow-checked integer arithmetic.
//! - [`memory`]: the memory limit shared by all queries, and spilling to disk.
//! - [`bounded`]: no single expression can build a value big enough to take the process down.
//! - [`engine`]: the query engine and its result stream.
//! - [`synth`]: a generator of realistic blockchain-like Parquet chunks.
//! - [`output`]: results as JSON, Arrow IPC or a text table.
#![deny(missing_docs)]

pub mod bounded;
pub mod catalog;
pub mod checked;
mod chunkwise;
pub mod engine;
mod error;
mod exact_sum;
mod local;
pub mod memory;
pub mod output;
mod plans;
mod probe_filter;
pub mod synth;
mod within;

pub use catalog::{Catalog, Cover, CoverPart};
pub use engine::{ChunkUse, QueryConfig, QueryEngine, QueryStream};
pub use error::{CatalogError, QueryError, SynthError};

/// The Arrow crate the results are made of, for callers that format or send them.
pub use arrow;
/// The DataFusion crate the engine runs on.
pub use datafusion;
/// The Parquet crate this one writes with (for [`synth::SynthConfig::compression`]).
pub use parquet;
