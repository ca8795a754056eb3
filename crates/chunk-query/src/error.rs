//! The public error types: one for loading a catalog, one for running a query.
//!
//! Each is a `#[non_exhaustive]` enum of cases a caller can act on, naming what it is about
//! (the file, the URL, the chunk, the dataset). [`QueryError::kind`] gives a stable name for
//! logs, metrics and HTTP error codes.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chunk_manager::{ChunkId, DatasetId, InvalidChunk, ShortId};
use datafusion::error::DataFusionError;

/// Why a [`Catalog`](crate::Catalog) could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A table schema of the catalog is invalid.
    #[error("the catalog {origin} has an invalid schema for dataset {dataset}: {reason}")]
    BadSchema {
        /// Where it came from: a path or a URL.
        origin: String,
        /// The dataset, as written.
        dataset: String,
        /// What is wrong.
        reason: String,
    },

    /// The catalog file cannot be read.
    #[error("cannot read the catalog {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The catalog is not a JSON list of chunk descriptions.
    #[error("the catalog {origin} is not a list of chunk descriptions: {source}")]
    Parse {
        /// Where it came from: a path or a URL.
        origin: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// The catalog URL could not be fetched.
    #[error("cannot fetch the catalog {url}: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong, with the source chain flattened.
        message: String,
    },

    /// A chunk description in the catalog is invalid.
    #[error("the catalog's chunk {}: {source}", ShortId(chunk))]
    InvalidChunk {
        /// The chunk.
        chunk: ChunkId,
        /// What is wrong with it.
        #[source]
        source: InvalidChunk,
    },

    /// The catalog lists one chunk id twice.
    #[error("the catalog lists chunk {} twice", ShortId(chunk))]
    Duplicate {
        /// The chunk.
        chunk: ChunkId,
    },

    /// Listing the object store failed.
    #[error("cannot list {location}: {source}")]
    List {
        /// The store and prefix listed.
        location: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// The listing URL is not one of the supported kinds.
    #[error("cannot list {url}: {reason}")]
    UnsupportedUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },

    /// An object in the listing is not `<start>-<end>[-<chunk id>]/<file>` under the prefix.
    #[error("object {path} is not <start>-<end>[-<chunk id>]/<file>: {reason}")]
    BadObjectName {
        /// The object's path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The block range is empty (`start >= end`).
    #[error("the block range {}..{} is empty", range.start, range.end)]
    EmptyRange {
        /// The range asked for.
        range: Range<u64>,
    },

    /// The catalog has no chunk of this dataset.
    #[error("the catalog has no chunk of dataset {}", ShortId(dataset))]
    UnknownDataset {
        /// The dataset.
        dataset: DatasetId,
    },

    /// No chunk of the catalog holds any block of the range.
    #[error(
        "no chunk of dataset {} holds any of the blocks {}..{}",
        ShortId(dataset),
        range.start,
        range.end
    )]
    NoChunks {
        /// The dataset.
        dataset: DatasetId,
        /// The range asked for.
        range: Range<u64>,
    },

    /// A chunk the query needs could not be downloaded (or was deleted while the query waited
    /// for it, or the manager shut down).
    #[error("chunk {} is not available: {source}", ShortId(chunk))]
    Fetch {
        /// The chunk.
        chunk: ChunkId,
        /// Why, as the chunk manager reports it.
        #[source]
        source: Arc<chunk_manager::Error>,
    },

    /// The chunks the query must fetch whole (and the cached chunks it reads) cannot be on
    /// disk at once: the disk budget, less the assigned chunks, is too small. Nothing was
    /// downloaded. Narrow the block range, raise the budget, or read remotely.
    #[error(
        "the query needs {needed} bytes of chunks on disk at once ({chunks} chunks in its range) \
         but the disk budget leaves {room} bytes for queries (budget {budget} bytes, the rest \
         held by assigned chunks); narrow the block range or raise the budget"
    )]
    TooLargeForBudget {
        /// Bytes the query needs on disk at once.
        needed: u64,
        /// Bytes of the budget not held by assigned chunks.
        room: u64,
        /// The disk budget.
        budget: u64,
        /// Chunks covering the query's range.
        chunks: usize,
    },

    /// The chunks the query needs were not all ready within the fetch timeout.
    #[error("the query's chunks were not ready within {timeout:?}")]
    FetchTimeout {
        /// The timeout.
        timeout: Duration,
    },

    /// The SQL is invalid, refers to an unknown table or column, or is not a read-only query.
    #[error("invalid query: {source}")]
    Sql {
        /// DataFusion's error.
        #[source]
        source: Box<DataFusionError>,
    },

    /// The spill directory cannot be created or emptied.
    #[error("cannot prepare the spill directory {}: {source}", path.display())]
    SpillDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The query failed while it ran (reading a file, a resource limit, ...).
    #[error("the query failed: {source}")]
    Execution {
        /// DataFusion's error.
        #[source]
        source: Box<DataFusionError>,
    },
}

impl QueryError {
    /// A short, stable name for the kind of error, for logs, metrics and JSON:
    /// `empty_range`, `unknown_dataset`, `no_chunks`, `fetch_failed`, `fetch_timeout`,
    /// `too_large_for_budget`, `invalid_sql`, `spill_dir` or `execution`.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::EmptyRange { .. } => "empty_range",
            QueryError::UnknownDataset { .. } => "unknown_dataset",
            QueryError::NoChunks { .. } => "no_chunks",
            QueryError::Fetch { .. } => "fetch_failed",
            QueryError::FetchTimeout { .. } => "fetch_timeout",
            QueryError::TooLargeForBudget { .. } => "too_large_for_budget",
            QueryError::Sql { .. } => "invalid_sql",
            QueryError::SpillDir { .. } => "spill_dir",
            QueryError::Execution { .. } => "execution",
        }
    }

    /// Whether the request itself is wrong (bad range, unknown dataset, bad SQL), as opposed to
    /// a failure of the worker or an origin.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            QueryError::EmptyRange { .. }
                | QueryError::UnknownDataset { .. }
                | QueryError::NoChunks { .. }
                | QueryError::Sql { .. }
        )
    }

    pub(crate) fn sql(error: DataFusionError) -> Self {
        QueryError::Sql {
            source: Box::new(error),
        }
    }

    pub(crate) fn execution(error: DataFusionError) -> Self {
        QueryError::Execution {
            source: Box::new(error),
        }
    }
}

/// Why synthetic data could not be generated: a bug, since the generator controls its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// A record batch could not be built.
    #[error("cannot build a record batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A Parquet file could not be written.
    #[error("cannot write a Parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}
