//! Test support: generated chunks served by an in-process origin, a manager on a temporary
//! directory, and the reference answer computed by DataFusion directly over the same files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chunk_manager::{ChunkManager, Config, DataChunk, DatasetId};
use chunk_origin::Origin;
use chunk_query::arrow::record_batch::RecordBatch;
use chunk_query::arrow::util::pretty::pretty_format_batches;
use chunk_query::datafusion::prelude::{ParquetReadOptions, SessionContext};
use chunk_query::synth::{FILE_NAMES, Synth, SynthChunk, SynthConfig};
use chunk_query::{Catalog, QueryConfig, QueryEngine};

pub const DATASET: DatasetId = [0x5e; 32];

/// Generated chunks, served by an origin at `<dir>/<file>`, and a local copy of every file
/// laid out per table (`<root>/<table>/<dir>.parquet`) for the reference.
pub struct Fixture {
    pub origin: Origin,
    pub synth: Synth,
    pub chunks: Vec<SynthChunk>,
    pub descriptions: Vec<DataChunk>,
    copies: tempfile::TempDir,
}

impl Fixture {
    pub fn new(ranges: &[Range<u64>]) -> Self {
        init_tracing();
        let origin = Origin::start().unwrap();
        let synth = Synth::new(SynthConfig::small());
        let copies = tempfile::tempdir().unwrap();
        let mut chunks = Vec::new();
        let mut descriptions = Vec::new();
        for range in ranges {
            let chunk = synth.chunk(&DATASET, range.clone()).unwrap();
            for (name, bytes) in &chunk.files {
                origin.insert(&chunk.path(name), bytes.clone());
                let table = name.trim_end_matches(".parquet");
                let dir = copies.path().join(table);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(format!("{}.parquet", chunk.dir())), bytes).unwrap();
            }
            descriptions.push(chunk.describe(&DATASET, |path| origin.url(path)));
            chunks.push(chunk);
        }
        Self {
            origin,
            synth,
            chunks,
            descriptions,
            copies,
        }
    }

    /// The catalog, with the tables' schemas.
    pub fn catalog(&self) -> Catalog {
        self.catalog_without_schemas()
            .with_schemas(DATASET, chunk_query::synth::schemas())
    }

    /// The catalog, chunks only.
    pub fn catalog_without_schemas(&self) -> Catalog {
        Catalog::new(self.descriptions.clone()).unwrap()
    }

    /// GET requests the origin received for chunk `n`'s files.
    pub fn gets(&self, n: usize) -> usize {
        let chunk = &self.chunks[n];
        FILE_NAMES
            .iter()
            .map(|name| self.origin.get_count(&chunk.path(name)))
            .sum()
    }

    /// The body bytes the origin sent for one request of `path`.
    pub fn served_bytes(&self, path: &str, request: &chunk_origin::RequestRecord) -> u64 {
        let size = self
            .chunks
            .iter()
            .flat_map(|chunk| {
                chunk
                    .files
                    .iter()
                    .map(move |(name, bytes)| (chunk.path(name), bytes.len() as u64))
            })
            .find(|(file, _)| file == path)
            .map_or(0, |(_, size)| size);
        match (request.method.as_str(), request.status, request.range) {
            ("GET", 200, _) => size,
            ("GET", 206, Some((first, last))) => {
                last.map_or(size, |last| last.min(size - 1) + 1) - first
            }
            _ => 0,
        }
    }

    /// GET requests per chunk.
    pub fn all_gets(&self) -> Vec<usize> {
        (0..self.chunks.len()).map(|n| self.gets(n)).collect()
    }

    /// The answer to `sql` over `blocks`, computed by DataFusion directly over the local copies
    /// of every chunk's files (not only the covering ones), each table a view restricted to the
    /// blocks.
    pub async fn reference(&self, blocks: &Range<u64>, sql: &str) -> String {
        let context = SessionContext::new();
        for name in FILE_NAMES {
            let table = name.trim_end_matches(".parquet");
            let dir = self.copies.path().join(table);
            context
                .register_parquet(
                    format!("all_{table}"),
                    format!("{}/", dir.display()),
                    ParquetReadOptions::default(),
                )
                .await
                .unwrap();
            context
                .sql(&format!(
                    "CREATE VIEW {table} AS SELECT * FROM all_{table} \
                     WHERE block_number >= {} AND block_number < {}",
                    blocks.start, blocks.end
                ))
                .await
                .unwrap();
        }
        let batches = context.sql(sql).await.unwrap().collect().await.unwrap();
        pretty(&batches)
    }
}

pub fn pretty(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

/// A manager on its own temporary directory, with fast retries and no fsync.
pub struct Worker {
    pub manager: Arc<ChunkManager>,
    pub engine: QueryEngine,
    pub dir: tempfile::TempDir,
}

impl Worker {
    pub fn new(catalog: Catalog) -> Self {
        Self::with(catalog, |config| config, QueryConfig::default())
    }

    /// A worker that fetches whole chunks instead of reading remotely.
    pub fn whole(catalog: Catalog) -> Self {
        Self::with(
            catalog,
            |config| config,
            QueryConfig::default().with_remote_reads(false),
        )
    }

    pub fn with(
        catalog: Catalog,
        configure: impl FnOnce(Config) -> Config,
        query: QueryConfig,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::new(dir.path())
            .with_fsync(false)
            .with_retries(1)
            .with_retry_delays(Duration::from_millis(5), Duration::from_millis(20))
            .with_read_timeout(Duration::from_secs(5));
        let manager = Arc::new(ChunkManager::open(configure(config)).unwrap());
        let engine = QueryEngine::with_config(manager.clone(), catalog, query).unwrap();
        Self {
            manager,
            engine,
            dir,
        }
    }

    /// Assigns `chunk` (as `download_chunk` does) and waits until it is ready.
    pub async fn assign(&self, chunk: &DataChunk) {
        self.manager.download_chunk(chunk.clone());
        self.manager.wait_ready(*chunk.id()).await.unwrap();
    }

    /// Runs a query to the end and formats its result.
    pub async fn run(&self, blocks: Range<u64>, sql: &str) -> String {
        let stream = self.engine.query(&DATASET, blocks, sql).await.unwrap();
        pretty(&stream.collect().await.unwrap())
    }

    /// The chunk directories on disk.
    pub fn chunk_dirs(&self) -> Vec<PathBuf> {
        let root = self.dir.path().join("chunks");
        let mut dirs = Vec::new();
        for dataset in std::fs::read_dir(&root).into_iter().flatten() {
            for chunk in std::fs::read_dir(dataset.unwrap().path()).unwrap() {
                dirs.push(chunk.unwrap().path());
            }
        }
        dirs
    }
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
