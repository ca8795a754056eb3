//! The query engine: SQL over the chunks that cover a block range.
//!
//! # Overview
//!
//! [`QueryEngine::query`] asks the [`Catalog`] which chunks cover the range, reads each one
//! locally if the [`ChunkManager`] holds it, otherwise in place with range requests or
//! fetched whole with [`ChunkManager::fetch`] (downloaded on demand, ahead of background
//! downloads, one download per chunk however many queries want it; see "Only the data a
//! query reads" below), registers every Parquet file name the query reads as one table over
//! the chunks that have it (`blocks.parquet` of every chunk is the table `blocks`), restricts
//! each table to the range's blocks with a filter on the block column that DataFusion pushes
//! into the Parquet scans (row groups and pages whose statistics fall outside are skipped),
//! plans the SQL and returns a [`QueryStream`] of Arrow record batches.
//!
//! # Planning before downloading
//!
//! A query is planned against the tables' schemas before any chunk is fetched, so SQL that
//! cannot plan (an unknown table or column, a type error) downloads nothing. The schemas come
//! from the catalog (see [`crate::catalog`]); for a table the catalog has no schema for, the
//! engine reads the Parquet footers of the first chunk of the cover: with range requests
//! (`HEAD`, then the file's last 64 KiB) when its files are `http(s)://` URLs, otherwise by
//! fetching that one chunk (which the query needs anyway). When every chunk of the tables
//! the SQL names is held by this worker, nothing is fetched, and the query is planned once,
//! over the files.
//!
//! # Only the data a query reads
//!
//! The plan made against the schemas names the tables the query reads (its table scans,
//! subqueries included); only their files are registered and read. Then, per covering chunk:
//!
//! - a chunk this worker holds (assigned, or cached by an earlier query) is read whole and
//!   locally, pinned for the query's lifetime;
//! - with [`QueryConfig::remote_reads`] (the default), a chunk it does not hold is not
//!   downloaded: the Parquet files of the tables the query reads are read where they are,
//!   through DataFusion's Parquet source over `object_store`'s HTTP store, whose range
//!   requests fetch the footer (exactly: its length, then the metadata), the page index and
//!   only the column chunks and pages of the row groups the projection and the block-range
//!   filter need. Such a chunk needs no pin. Only `http(s)://` files without a query string
//!   or credentials in the URL are read this way; a chunk with other files (`s3://`,
//!   `file://`, presigned URLs) is fetched whole as below;
//! - otherwise the chunk is fetched whole with [`ChunkManager::fetch`] (cached, and evicted
//!   least recently used first) and read locally.
//!
//! Remote reads fetch far fewer bytes for a cold query that reads a few columns, a few
//! tables or part of a chunk. Whole-chunk fetches are better when the same cold chunks are
//! queried again and again (the second query reads from disk, with no request at all) or
//! when a query reads most of every file anyway: turn remote reads off then.
//!
//! # Joins and repeated queries
//!
//! A chunk holds every row of its blocks in every table, so a hash join whose keys pair the
//! block column of both sides (`t.block_number = l.block_number`) matches rows of one chunk
//! only: it runs chunk by chunk, each partition joining its chunks one after another with
//! DataFusion's own hash join over that chunk's files (`ChunkwiseJoinExec` in `EXPLAIN`). A
//! chunk's table stays in the CPU's caches, the partitions build their tables in parallel, and
//! the join needs one chunk's table of memory per partition (small chunks are joined a few at
//! a time). A query whose chunks are all on
//! disk keeps its optimized plan for the next run of the same SQL over the same chunks (see
//! [`QueryEngine::query`]).
//!
//! # Exact arithmetic
//!
//! Sums of integers are `Decimal128(38, 0)`, sums of decimals are checked, and integer `+`,
//! `-`, `*` fail on overflow instead of wrapping: see [`crate::checked`].
//!
//! # Pins
//!
//! The stream holds a [`ChunkRef`] to every chunk the query reads locally, so none of them
//! is evicted or removed while it runs: a chunk deleted meanwhile is hidden from new lookups at once and
//! its files go after the stream is dropped. The refs drop after DataFusion's own stream, which
//! stops its tasks.
//!
//! # Cancellation
//!
//! Dropping the future of [`QueryEngine::query`] gives up the fetches (a cached chunk nobody
//! waits for any more and not yet downloading is forgotten); dropping the stream stops the
//! query and releases the pins.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chunk_manager::{ChunkId, ChunkManager, ChunkRef, DatasetId, ShortId};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::empty::EmptyTable;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::SpillingProgress;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{
    DataFrame, Expr, ParquetReadOptions, SQLOptions, SessionConfig, SessionContext, ident, lit,
};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SQLStatement;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::catalog::{Catalog, Cover, CoverPart};
use crate::checked::{CheckedArithmetic, WidenSums};
use crate::chunkwise::{ChunkFiles, ChunkwiseJoins};
use crate::error::QueryError;
use crate::plans::{CachedPlan, PLAN_CHUNKS_KEPT, PlanCache, PlanKey};
use crate::probe_filter::SkipIdleJoinFilters;

/// The file extension that makes a chunk file a table.
const PARQUET: &str = ".parquet";

/// How queries run. [`QueryConfig::default`] suits a production worker; every field has a
/// chainable `with_*` setter.
///
/// ```
/// use std::time::Duration;
/// use chunk_query::QueryConfig;
/// let config = QueryConfig::default()
///     .with_block_column("number")
///     .with_memory_limit(Some(4 << 30))
///     .with_fetch_timeout(Some(Duration::from_secs(60)));
/// assert_eq!(config.block_column, "number");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueryConfig {
    /// The column of every table that holds the block number, filtered by the query's range.
    /// A table without it is not filtered. Default `block_number`.
    pub block_column: String,
    /// Rows per record batch. Default 8192.
    pub batch_size: usize,
    /// How many partitions (threads' worth of work) a query is split into. Default: the
    /// number of CPUs. See [`QueryConfig::adaptive_partitions`].
    pub target_partitions: usize,
    /// Whether a query that starts while others run is split into fewer partitions: the
    /// target divided by the queries running, itself included (at least one). The CPUs are
    /// busy with the others anyway, and each split costs work of its own (an aggregation
    /// hashes every row twice, a top-k sorts twice): on two CPUs, a `GROUP BY` over text
    /// keys took 37% less CPU in one partition than in two. A query alone still gets all of
    /// them. Default on.
    pub adaptive_partitions: bool,
    /// The memory all running queries may use together for sorts, aggregations, joins and
    /// exchanges, shared fairly between the operators that can spill (see [`crate::memory`]):
    /// beyond their share sorts, group-bys and sort-merge joins spill to disk; a hash join's
    /// build side must fit. `None` for no limit. Default 1 GiB.
    pub memory_limit: Option<usize>,
    /// Where spill files go; `None` for `<data_dir>/tmp/query-spill` of the manager (emptied
    /// with the rest of `tmp/` whenever the manager opens). Default `None`.
    pub spill_dir: Option<PathBuf>,
    /// The most bytes the spill files of all running queries may take together; a query that
    /// needs more fails. Not counted against the manager's disk budget. Default 100 GiB.
    pub max_spill_bytes: u64,
    /// The most bytes one call of a function that builds big values (`repeat`, `lpad`,
    /// `array_repeat`, ...) may build, over a batch of rows: see [`crate::bounded`]. Default
    /// 256 MiB.
    pub max_expression_bytes: usize,
    /// How long a query waits for its chunks to be ready; `None` to wait as long as it takes.
    /// Default 10 minutes.
    pub fetch_timeout: Option<Duration>,
    /// Whether the Parquet reader evaluates filters while decoding, skipping the rows (not
    /// only the row groups and pages) that do not match. Default on.
    pub pushdown_filters: bool,
    /// Whether a covering chunk this worker does not hold is read remotely, with range
    /// requests for only the footers, column chunks and pages the query needs, rather than
    /// downloaded whole (and cached) first. Default on; see the module docs for when
    /// whole-chunk fetches are better.
    pub remote_reads: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            block_column: "block_number".to_string(),
            batch_size: 8192,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            memory_limit: Some(1 << 30),
            spill_dir: None,
            max_spill_bytes: 100 << 30,
            max_expression_bytes: 256 << 20,
            fetch_timeout: Some(Duration::from_secs(600)),
            pushdown_filters: true,
            remote_reads: true,
            adaptive_partitions: true,
        }
    }
}

impl QueryConfig {
    /// Sets [`QueryConfig::block_column`].
    pub fn with_block_column(mut self, column: impl Into<String>) -> Self {
        self.block_column = column.into();
        self
    }

    /// Sets [`QueryConfig::batch_size`] (at least 1).
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Sets [`QueryConfig::target_partitions`] (at least 1).
    pub fn with_target_partitions(mut self, partitions: usize) -> Self {
        self.target_partitions = partitions.max(1);
        self
    }

    /// Sets [`QueryConfig::memory_limit`].
    pub fn with_memory_limit(mut self, bytes: Option<usize>) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Sets [`QueryConfig::spill_dir`].
    pub fn with_spill_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.spill_dir = dir;
        self
    }

    /// Sets [`QueryConfig::max_spill_bytes`].
    pub fn with_max_spill_bytes(mut self, bytes: u64) -> Self {
        self.max_spill_bytes = bytes;
        self
    }

    /// Sets [`QueryConfig::max_expression_bytes`].
    pub fn with_max_expression_bytes(mut self, bytes: usize) -> Self {
        self.max_expression_bytes = bytes;
        self
    }

    /// Sets [`QueryConfig::fetch_timeout`].
    pub fn with_fetch_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Sets [`QueryConfig::adaptive_partitions`].
    pub fn with_adaptive_partitions(mut self, adaptive: bool) -> Self {
        self.adaptive_partitions = adaptive;
        self
    }

    /// Sets [`QueryConfig::pushdown_filters`].
    pub fn with_pushdown_filters(mut self, pushdown: bool) -> Self {
        self.pushdown_filters = pushdown;
        self
    }

    /// Sets [`QueryConfig::remote_reads`].
    pub fn with_remote_reads(mut self, remote: bool) -> Self {
        self.remote_reads = remote;
        self
    }
}

/// Runs SQL over a dataset's chunks, downloading on demand only the chunks a query needs.
///
/// Shared by every query of a worker (wrap it in an `Arc`); queries run concurrently. The
/// catalog can be replaced while queries run ([`QueryEngine::set_catalog`]).
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use chunk_manager::{ChunkManager, Config};
/// use chunk_query::{Catalog, QueryEngine, synth};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // An origin on 127.0.0.1 serving three generated chunks of 100 blocks each.
/// let origin = chunk_origin::Origin::start()?;
/// let dataset = [7; 32];
/// let generator = synth::Synth::new(synth::SynthConfig::small());
/// let mut chunks = Vec::new();
/// for start in [0, 100, 200] {
///     let chunk = generator.chunk(&dataset, start..start + 100)?;
///     for (name, bytes) in &chunk.files {
///         origin.insert(&chunk.path(name), bytes.clone());
///     }
///     chunks.push(chunk.describe(&dataset, |path| origin.url(path)));
/// }
///
/// let dir = tempfile::tempdir()?;
/// let manager = Arc::new(ChunkManager::open(Config::new(dir.path()))?);
/// let engine = QueryEngine::new(manager.clone(), Catalog::new(chunks)?)?;
///
/// // Blocks 150..250 are in the second and third chunks: only those two are read, in place,
/// // with range requests for the parts of their blocks files the query needs.
/// let stream = engine
///     .query(&dataset, 150..250, "SELECT count(*) AS n, min(block_number) AS first FROM blocks")
///     .await?;
/// assert_eq!(stream.used_chunks().len(), 2);
/// assert!(stream.used_chunks().iter().all(|chunk| chunk.remote));
/// let batches = stream.collect().await?;
/// let table = chunk_query::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
/// assert!(table.contains("| 100 | 150   |"), "{table}");
/// assert!(manager.list_chunks().is_empty(), "nothing downloaded");
/// # Ok(())
/// # }
/// ```
pub struct QueryEngine {
    manager: Arc<ChunkManager>,
    catalog: ArcSwap<Catalog>,
    config: QueryConfig,
    /// Shared by every query: the memory pool and the spill directory.
    runtime: Arc<RuntimeEnv>,
    /// The spill files queries make.
    spills: Arc<crate::memory::SpillFiles>,
    /// The disk budget's room for chunks fetched whole, in [`ROOM_UNIT`]s: a query takes its
    /// share before it pins or fetches anything (see [`QueryEngine::sources`]).
    fetch_room: tokio::sync::Semaphore,
    /// The room's size.
    fetch_room_units: u32,
    /// The queries running now: from the start of [`QueryEngine::query`] to the drop of its
    /// stream.
    running: Arc<AtomicUsize>,
    /// Plans of recent queries ([`crate::plans`]).
    plans: PlanCache,
}

/// One chunk a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChunkUse {
    /// The chunk.
    pub chunk: ChunkId,
    /// The blocks the query reads from it.
    pub blocks: Range<u64>,
    /// Whether it was not ready when the query asked for it and was downloaded whole for this
    /// query (or by a download this query waited for).
    pub fetched: bool,
    /// Whether the query reads its files remotely, with range requests for only the parts it
    /// needs: the worker does not hold it and [`QueryConfig::remote_reads`] is on.
    pub remote: bool,
}

impl QueryEngine {
    /// An engine with [`QueryConfig::default`].
    ///
    /// # Errors
    ///
    /// [`QueryError::Execution`] if DataFusion's runtime cannot be set up.
    pub fn new(manager: Arc<ChunkManager>, catalog: Catalog) -> Result<Self, QueryError> {
        Self::with_config(manager, catalog, QueryConfig::default())
    }

    /// An engine with this configuration.
    ///
    /// # Errors
    ///
    /// [`QueryError::Execution`] if DataFusion's runtime cannot be set up.
    pub fn with_config(
        manager: Arc<ChunkManager>,
        catalog: Catalog,
        config: QueryConfig,
    ) -> Result<Self, QueryError> {
        let (runtime, spills) = crate::memory::runtime_env(&manager, &config)?;
        let fetch_room_units = room_units(manager.config().disk_budget);
        Ok(Self {
            spills,
            fetch_room: tokio::sync::Semaphore::new(fetch_room_units as usize),
            fetch_room_units,
            manager,
            catalog: ArcSwap::from_pointee(catalog),
            config,
            runtime,
            running: Arc::new(AtomicUsize::new(0)),
            plans: PlanCache::default(),
        })
    }

    /// The catalog queries use now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Replaces the catalog. Running queries keep the one they started with.
    pub fn set_catalog(&self, catalog: Catalog) {
        self.catalog.store(Arc::new(catalog));
        self.plans.clear();
    }

    /// The manager that holds the chunks.
    pub fn manager(&self) -> &Arc<ChunkManager> {
        &self.manager
    }

    /// The configuration.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// Runs `sql` over the blocks `blocks` of `dataset`; see the module docs. The SQL sees one
    /// table per Parquet file name of the covering chunks, holding only the rows of the range.
    /// Only read-only queries are allowed (no DDL, DML or `SET`). Call it inside a tokio
    /// runtime; the stream must be polled there too.
    ///
    /// A query over up to 64 chunks, all on this worker's disk, keeps its optimized plan (the
    /// 64 most recently used are kept, until [`QueryEngine::set_catalog`]): the same SQL over
    /// the same range, the same chunks read alike and as many partitions runs it again without
    /// registering its tables or planning its SQL ([`QueryStream::plan_reused`]).
    ///
    /// # Errors
    ///
    /// [`QueryError::EmptyRange`], [`QueryError::UnknownDataset`],
    /// [`QueryError::NoChunks`] if no chunk covers any block of the range,
    /// [`QueryError::Fetch`] or [`QueryError::FetchTimeout`] if a chunk cannot be had,
    /// [`QueryError::Sql`] for SQL that does not plan, [`QueryError::Execution`] otherwise.
    pub async fn query(
        &self,
        dataset: &DatasetId,
        blocks: Range<u64>,
        sql: &str,
    ) -> Result<QueryStream, QueryError> {
        let started = Instant::now();
        let running = Running::enter(&self.running);
        let partitions = if self.config.adaptive_partitions {
            (self.config.target_partitions / running.now).max(1)
        } else {
            self.config.target_partitions
        };
        let files = Arc::new(ChunkFiles::default());
        let context = self.context_with(partitions, &files);
        // One copy of the session's state serves every step: the tables registered below
        // are in its catalog too, which the copies share.
        let state = context.state();
        // Refused before anything is downloaded: SQL that does not parse or does not read.
        let statement = read_only(&state, sql)?;
        let catalog = self.catalog.load_full();
        let cover = catalog.cover(dataset, blocks.clone())?;
        if cover.parts.is_empty() {
            return Err(QueryError::NoChunks {
                dataset: *dataset,
                range: blocks,
            });
        }
        // The tables the SQL names, as DataFusion's planner resolves them: if this worker
        // holds every chunk of theirs, nothing is fetched and the query is planned once.
        let named = named_tables(&state, &statement)?;
        let decided = self.decide(&cover, Some(&named));
        let all_local = decided.iter().all(|source| {
            matches!(
                source,
                Some(ChunkSource::Local(_)) | Some(ChunkSource::Unread)
            )
        });
        let (schemas, tables, key, (sources, chunks)) = if all_local {
            // A plan made for these chunks, read this way, may be kept.
            let key = (cover.parts.len() <= PLAN_CHUNKS_KEPT).then(|| PlanKey {
                sql: sql.to_string(),
                dataset: *dataset,
                blocks: blocks.clone(),
                partitions,
                parts: cover
                    .parts
                    .iter()
                    .zip(&decided)
                    .map(|(part, source)| {
                        let local = matches!(source, Some(ChunkSource::Local(_)));
                        (*part.chunk.id(), part.blocks.clone(), local)
                    })
                    .collect(),
            });
            let tables = Some(named);
            let sources = self.report(&cover, decided, Vec::new());
            (None, tables, key, sources)
        } else {
            drop(decided);
            // Planned against the schemas first: a query that cannot plan fetches nothing
            // (or one chunk, if the catalog lacks a schema).
            let schemas = self.cover_schemas(&catalog, dataset, &cover).await?;
            // The tables the plan reads, if known: only their files matter.
            let tables = match &schemas {
                Some(schemas) => Some(check_plan(&self.context(), schemas, sql).await?),
                None => None,
            };
            let sources = self.sources(&cover, tables.as_ref()).await?;
            (schemas, tables, None, sources)
        };
        let fetched = started.elapsed();
        let cached = key.as_ref().and_then(|key| self.plans.get(key));
        let reused = cached.is_some();
        let CachedPlan {
            plan,
            files: file_chunks,
        } = match cached {
            Some(cached) => cached,
            None => {
                let registered = self
                    .register_tables(
                        &context,
                        &cover,
                        &sources,
                        &blocks,
                        tables.as_ref(),
                        schemas.as_ref(),
                    )
                    .await?;
                let plan = state.statement_to_plan(statement).await.map_err(classify)?;
                sql_options().verify_plan(&plan).map_err(classify)?;
                let plan = state.optimize(&plan).map_err(classify)?;
                let file_chunks =
                    ChunkFiles::index(registered.iter().map(|(url, chunk)| (url.as_str(), *chunk)))
                        .map_err(QueryError::execution)?;
                let planned = CachedPlan {
                    plan,
                    files: file_chunks,
                };
                // Not an EXPLAIN: its text is made while optimizing.
                let explain = matches!(
                    planned.plan,
                    LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
                );
                if let Some(key) = key
                    && !explain
                {
                    self.plans.insert(key, planned.clone());
                }
                planned
            }
        };
        files.set(file_chunks);
        let registered = started.elapsed();
        let pins: Vec<ChunkRef> = sources
            .into_iter()
            .filter_map(|source| match source {
                ChunkSource::Local(pinned) => Some(pinned),
                ChunkSource::Remote | ChunkSource::Unread => None,
            })
            .collect();
        let physical = state
            .query_planner()
            .create_physical_plan(&plan, &state)
            .await
            .map_err(classify)?;
        let inner = execute_stream(physical, state.task_ctx()).map_err(classify)?;
        tracing::info!(
            dataset = %ShortId(dataset),
            blocks = ?blocks,
            chunks = chunks.len(),
            downloaded = chunks.iter().filter(|chunk| chunk.fetched).count(),
            remote = chunks.iter().filter(|chunk| chunk.remote).count(),
            missing = cover.missing.len(),
            partitions,
            reused,
            fetch_us = fetched.as_micros() as u64,
            tables_us = (registered - fetched).as_micros() as u64,
            plan_us = (started.elapsed() - registered).as_micros() as u64,
            "query started"
        );
        Ok(QueryStream {
            inner,
            chunks,
            missing: cover.missing,
            pins,
            reused,
            _running: running,
        })
    }

    /// The schema of every table of `dataset`, by name: from the catalog, or else read from
    /// the Parquet footers of the dataset's first chunk (fetched, and cached, for it).
    ///
    /// # Errors
    ///
    /// [`QueryError::UnknownDataset`], or those of fetching the chunk and reading its files.
    pub async fn table_schemas(
        &self,
        dataset: &DatasetId,
    ) -> Result<BTreeMap<String, SchemaRef>, QueryError> {
        let catalog = self.catalog.load_full();
        let known = catalog.schemas(dataset);
        let Some(first) = catalog.chunks(dataset).first() else {
            return Err(QueryError::UnknownDataset { dataset: *dataset });
        };
        let missing = first
            .files()
            .keys()
            .filter_map(|name| table_name(name))
            .any(|table| !known.contains_key(table));
        if !known.is_empty() && !missing {
            return Ok(known);
        }
        let mut schemas = self.footer_schemas(first).await?;
        schemas.extend(known);
        Ok(schemas)
    }

    /// The schemas of the tables of the cover's chunks, or `None` if some are unknown even
    /// after reading the first chunk's.
    async fn cover_schemas(
        &self,
        catalog: &Catalog,
        dataset: &DatasetId,
        cover: &Cover,
    ) -> Result<Option<BTreeMap<String, SchemaRef>>, QueryError> {
        let mut schemas = catalog.schemas(dataset);
        let names: std::collections::BTreeSet<&str> = cover
            .parts
            .iter()
            .flat_map(|part| {
                part.chunk
                    .files()
                    .keys()
                    .filter_map(|name| table_name(name))
            })
            .collect();
        if names.iter().all(|name| schemas.contains_key(*name)) {
            schemas.retain(|name, _| names.contains(name.as_str()));
            return Ok(Some(schemas));
        }
        let Some(first) = cover.parts.first() else {
            return Ok(None);
        };
        for (name, schema) in self.footer_schemas(&first.chunk).await? {
            schemas.entry(name).or_insert(schema);
        }
        if names.iter().all(|name| schemas.contains_key(*name)) {
            schemas.retain(|name, _| names.contains(name.as_str()));
            Ok(Some(schemas))
        } else {
            Ok(None)
        }
    }

    /// Reads one chunk's tables' schemas from their Parquet footers: with range requests
    /// when its files are `http(s)://` URLs (the footers only, nothing downloaded), otherwise
    /// (or if that fails) by fetching the chunk.
    async fn footer_schemas(
        &self,
        chunk: &chunk_manager::DataChunk,
    ) -> Result<BTreeMap<String, SchemaRef>, QueryError> {
        let tables: Vec<(&str, &String)> = chunk
            .files()
            .iter()
            .filter_map(|(name, url)| Some((table_name(name)?, url)))
            .collect();
        let remote = tables
            .iter()
            .all(|(_, url)| url.starts_with("http://") || url.starts_with("https://"));
        if remote {
            match remote_schemas(&tables).await {
                Ok(schemas) => return Ok(schemas),
                Err(error) => tracing::debug!(
                    chunk = %ShortId(chunk.id()),
                    %error,
                    "cannot read the footers with range requests; fetching the chunk"
                ),
            }
        }
        let fetch = self.manager.fetch(chunk.clone());
        let pinned = match self.config.fetch_timeout {
            Some(timeout) => tokio::time::timeout(timeout, fetch)
                .await
                .map_err(|_elapsed| QueryError::FetchTimeout { timeout })?,
            None => fetch.await,
        }
        .map_err(|source| QueryError::Fetch {
            chunk: *chunk.id(),
            source,
        })?;
        let mut schemas = BTreeMap::new();
        for name in chunk.files().keys() {
            let Some(table) = table_name(name) else {
                continue;
            };
            let path = pinned.path().join(name);
            let schema = read_footer_schema(&path).map_err(|error| {
                // The Parquet error stays the root, so callers can tell bad chunk data.
                QueryError::execution(
                    DataFusionError::ParquetError(Box::new(error))
                        .context(format!("cannot read the schema of {}", path.display())),
                )
            })?;
            schemas.insert(table.to_string(), schema);
        }
        Ok(schemas)
    }

    /// How the query reads each chunk of the cover, and what it reports about each: a chunk
    /// this worker holds is pinned and read locally; one it does not is read remotely (see
    /// [`QueryConfig::remote_reads`]) or fetched whole and pinned; a chunk none of whose files
    /// the query reads is left alone.
    ///
    /// A query that fetches whole chunks must have room for them all at once in the disk
    /// budget (the budget less the assigned chunks, which are never evicted): one that cannot
    /// fails at once ([`QueryError::TooLargeForBudget`]) and downloads nothing. Otherwise it
    /// waits for its turn in [`QueryEngine`]'s fetch room (first come, first served) holding
    /// no pin, so no query waiting for room keeps another from finding it; once admitted it
    /// pins and fetches its chunks, all within [`QueryConfig::fetch_timeout`].
    async fn sources(
        &self,
        cover: &Cover,
        tables: Option<&BTreeSet<String>>,
    ) -> Result<(Vec<ChunkSource>, Vec<ChunkUse>), QueryError> {
        let decided = self.decide(cover, tables);
        if decided.iter().all(Option::is_some) {
            return Ok(self.report(cover, decided, Vec::new()));
        }
        let admitted = async {
            let needed = self.room_needed(cover, &decided).await?;
            // Nothing pinned while waiting for room.
            drop(decided);
            let room = self.admit(needed, cover).await?;
            let decided = self.decide(cover, tables);
            let fetches = cover
                .parts
                .iter()
                .zip(&decided)
                .filter(|(_, source)| source.is_none())
                .map(|(part, _)| async move {
                    self.manager
                        .fetch((*part.chunk).clone())
                        .await
                        .map_err(|source| QueryError::Fetch {
                            chunk: *part.chunk.id(),
                            source,
                        })
                });
            let fetched = futures::future::try_join_all(fetches).await?;
            drop(room);
            Ok::<_, QueryError>((decided, fetched))
        };
        let (decided, fetched) = match self.config.fetch_timeout {
            Some(timeout) => tokio::time::timeout(timeout, admitted)
                .await
                .map_err(|_elapsed| QueryError::FetchTimeout { timeout })??,
            None => admitted.await?,
        };
        Ok(self.report(cover, decided, fetched))
    }

    /// For each part of the cover, how it is read if that is known without fetching: unread,
    /// local (pinned now), or remote; `None` for a chunk to fetch whole.
    fn decide(&self, cover: &Cover, tables: Option<&BTreeSet<String>>) -> Vec<Option<ChunkSource>> {
        cover
            .parts
            .iter()
            .map(|part| {
                let read = read_urls(part, tables);
                if read.is_empty() {
                    Some(ChunkSource::Unread)
                } else if let Some(pinned) = self.manager.get_chunk(part.chunk.id()) {
                    Some(ChunkSource::Local(pinned))
                } else if self.config.remote_reads
                    && read.iter().all(|url| remote_origin(url).is_some())
                {
                    Some(ChunkSource::Remote)
                } else {
                    None
                }
            })
            .collect()
    }

    /// The sources in cover order (each undecided part takes the next fetched chunk) and what
    /// the query reports of each chunk.
    fn report(
        &self,
        cover: &Cover,
        decided: Vec<Option<ChunkSource>>,
        fetched: Vec<ChunkRef>,
    ) -> (Vec<ChunkSource>, Vec<ChunkUse>) {
        let uses = cover
            .parts
            .iter()
            .zip(&decided)
            .map(|(part, source)| ChunkUse {
                chunk: *part.chunk.id(),
                blocks: part.blocks.clone(),
                fetched: source.is_none(),
                remote: matches!(source, Some(ChunkSource::Remote)),
            })
            .collect();
        let mut fetched = fetched.into_iter();
        let sources = decided
            .into_iter()
            .map(|source| {
                source
                    .or_else(|| fetched.next().map(ChunkSource::Local))
                    .unwrap_or(ChunkSource::Unread)
            })
            .collect();
        (sources, uses)
    }

    /// The bytes of the disk budget this query needs at once: every chunk it fetches whole
    /// and every cached chunk it reads locally (assigned chunks are on disk for good and take
    /// no room a query could use). Sizes come from the chunks this worker knows, else from
    /// the catalog's declared sizes or the origins (no download).
    async fn room_needed(
        &self,
        cover: &Cover,
        decided: &[Option<ChunkSource>],
    ) -> Result<u64, QueryError> {
        let mut needed = 0u64;
        let mut probes = Vec::new();
        for (part, source) in cover.parts.iter().zip(decided) {
            let status = self.manager.status(part.chunk.id());
            if status.as_ref().is_some_and(|status| status.wanted) {
                continue;
            }
            match source {
                Some(ChunkSource::Local(pinned)) => needed = needed.saturating_add(pinned.size()),
                Some(_) => {}
                None => probes.push(async move {
                    self.manager
                        .probe_size(&part.chunk)
                        .await
                        .map_err(|source| QueryError::Fetch {
                            chunk: *part.chunk.id(),
                            source: Arc::new(source),
                        })
                }),
            }
        }
        let sizes = futures::stream::iter(probes)
            .buffer_unordered(PROBES_AT_ONCE)
            .try_collect::<Vec<u64>>()
            .await?;
        Ok(sizes.into_iter().fold(needed, u64::saturating_add))
    }

    /// Waits for `needed` bytes of the fetch room (and the assigned chunks' bytes, which the
    /// budget holds anyway), first come, first served; fails at once if the budget, less the
    /// assigned chunks, can never hold them.
    async fn admit(
        &self,
        needed: u64,
        cover: &Cover,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, QueryError> {
        let totals = self.manager.totals();
        let room = totals.disk_budget.saturating_sub(totals.bytes_assigned);
        if needed > room {
            return Err(QueryError::TooLargeForBudget {
                needed,
                room,
                budget: totals.disk_budget,
                chunks: cover.parts.len(),
            });
        }
        // The assigned chunks' bytes are taken along: queries admitted together then fit in
        // the budget beside the assigned chunks, so none waits for room another holds.
        let units =
            room_units(needed.saturating_add(totals.bytes_assigned)).min(self.fetch_room_units);
        self.fetch_room
            .acquire_many(units)
            .await
            .map_err(|_closed| QueryError::FetchTimeout {
                timeout: Duration::ZERO,
            })
    }

    /// A session for one query: the engine's settings and memory pool, and the rules that make
    /// arithmetic exact ([`crate::checked`]).
    fn context(&self) -> SessionContext {
        self.context_with(self.config.target_partitions, &Arc::default())
    }

    /// [`QueryEngine::context`] with this many partitions, its joins on the block column
    /// computed chunk by chunk once `files` knows the chunks ([`crate::chunkwise`]).
    fn context_with(&self, partitions: usize, files: &Arc<ChunkFiles>) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_batch_size(self.config.batch_size)
            .with_target_partitions(partitions)
            .with_information_schema(false);
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = self.config.pushdown_filters;
        parquet.reorder_filters = self.config.pushdown_filters;
        crate::memory::configure_session(&mut config, &self.config);
        collect_join_build_sides(&mut config, &self.config);
        // DataFusion's rules, with the chunkwise joins before its last filter pushdown (which
        // would push the whole build side's filter into the probe side).
        let mut rules = PhysicalOptimizer::new().rules;
        let last_pushdown = rules
            .iter()
            .position(|rule| rule.name() == "FilterPushdown(Post)")
            .unwrap_or(rules.len());
        rules.insert(
            last_pushdown,
            Arc::new(ChunkwiseJoins::new(
                Arc::clone(files),
                &self.config.block_column,
            )),
        );
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_physical_optimizer_rules(rules)
            // After DataFusion's own rules: sums widened, then types coerced again above
            // them, then integer arithmetic checked.
            .with_analyzer_rule(Arc::new(WidenSums))
            .with_analyzer_rule(Arc::new(TypeCoercion::new()))
            .with_analyzer_rule(Arc::new(CheckedArithmetic))
            .with_physical_optimizer_rule(Arc::new(YieldInJoins))
            .with_physical_optimizer_rule(Arc::new(SkipIdleJoinFilters::default()));
        builder = crate::memory::bound_expressions(builder, &self.config);
        SessionContext::new_with_state(builder.build())
    }

    /// Where spill files go.
    pub fn spill_dir(&self) -> PathBuf {
        crate::memory::spill_dir(&self.manager, &self.config)
    }

    /// The spill files of running queries now: their bytes and how many.
    pub fn spilling(&self) -> SpillingProgress {
        self.spills.progress()
    }

    /// How many spill files queries have made since the engine started.
    pub fn spill_files_made(&self) -> u64 {
        self.spills.made()
    }

    /// The bytes of the memory limit reserved by running queries now.
    pub fn memory_reserved(&self) -> usize {
        self.runtime.memory_pool.reserved()
    }

    /// Registers one table per Parquet file name the query reads (every one if `tables` is
    /// `None`): the union of that file over the chunks, local or remote, restricted to the
    /// query's blocks. Returns the URL of every file the tables read, with its chunk (its
    /// part's index in `cover`).
    async fn register_tables(
        &self,
        context: &SessionContext,
        cover: &Cover,
        sources: &[ChunkSource],
        blocks: &Range<u64>,
        tables: Option<&BTreeSet<String>>,
        schemas: Option<&BTreeMap<String, SchemaRef>>,
    ) -> Result<Vec<(String, usize)>, QueryError> {
        // table name -> its file in each chunk, with the blocks the chunk answers for
        let mut files: BTreeMap<String, Vec<TableFile>> = BTreeMap::new();
        for (chunk, (part, source)) in cover.parts.iter().zip(sources).enumerate() {
            for (name, url) in part.chunk.files() {
                let Some(table) = table_name(name) else {
                    continue;
                };
                if !reads(name, tables) {
                    continue;
                }
                let location = match source {
                    ChunkSource::Local(pinned) => {
                        let path = pinned.path().join(name);
                        let url = file_url(&path)?;
                        Location::Local { path, url }
                    }
                    ChunkSource::Remote => match remote_origin(url) {
                        Some(origin) => Location::Remote {
                            origin,
                            url: url.clone(),
                        },
                        None => continue,
                    },
                    ChunkSource::Unread => continue,
                };
                files.entry(table.to_string()).or_default().push(TableFile {
                    location,
                    blocks: part.blocks.clone(),
                    chunk,
                });
            }
        }
        let registered = files
            .values()
            .flatten()
            .map(|file| (file.location.url().to_string(), file.chunk))
            .collect();
        let disjoint = cover.is_disjoint(blocks);
        for (table, files) in files {
            // Read together: the local files, and the remote ones of each origin (one object
            // store each). Overlapping chunks: each alone, answering only for its own part of
            // the range.
            let mut groups: Vec<Vec<&TableFile>> = Vec::new();
            for file in &files {
                match groups.iter_mut().find(|group| {
                    disjoint
                        && group
                            .first()
                            .is_some_and(|first| first.location.store() == file.location.store())
                }) {
                    Some(group) => group.push(file),
                    None => groups.push(vec![file]),
                }
            }
            let schema = schemas.and_then(|schemas| schemas.get(&table));
            let mut union: Option<DataFrame> = None;
            for group in groups {
                let Some(first) = group.first() else {
                    continue;
                };
                let range = if disjoint { blocks } else { &first.blocks };
                let frame = read_files(context, &group, schema).await?;
                let frame = self.restrict_files(context, frame, &group, range).await?;
                union = Some(match union {
                    None => frame,
                    Some(union) => union.union(frame).map_err(QueryError::execution)?,
                });
            }
            let Some(frame) = union else {
                continue;
            };
            context
                .register_table(TableReference::bare(table), frame.into_view())
                .map_err(QueryError::execution)?;
        }
        Ok(registered)
    }

    /// `frame`, the table of `files`, restricted to `blocks`: the local files whose every row
    /// is in `blocks` by their statistics ([`crate::within`]) are read without the filter,
    /// and the others with it.
    async fn restrict_files(
        &self,
        context: &SessionContext,
        frame: DataFrame,
        files: &[&TableFile],
        blocks: &Range<u64>,
    ) -> Result<DataFrame, QueryError> {
        // Only local files are checked (a remote footer would cost a request).
        if files
            .iter()
            .any(|file| !matches!(file.location, Location::Local { .. }))
        {
            return self.restrict(frame, blocks);
        }
        let schema = frame.schema().as_arrow().clone();
        // The paths of the files proven inside, and of the others.
        let mut inside = Vec::new();
        let mut edge = Vec::new();
        for file in files {
            let Location::Local { path, url } = &file.location else {
                continue;
            };
            // A chunk that declares blocks outside the range has rows outside it.
            let proven = blocks.start <= file.blocks.start
                && file.blocks.end <= blocks.end
                && crate::within::rows_within(
                    context,
                    path,
                    &schema,
                    &self.config.block_column,
                    blocks,
                )
                .await;
            let paths = if proven { &mut inside } else { &mut edge };
            paths.push(url.clone());
        }
        if inside.is_empty() {
            return self.restrict(frame, blocks);
        }
        if edge.is_empty() {
            return Ok(frame);
        }
        // Both parts read with the schema of the whole, so that they union whatever each
        // file holds.
        let inside = read(context, inside, Some(&schema)).await?;
        let edge = read(context, edge, Some(&schema)).await?;
        self.restrict(edge, blocks)?
            .union(inside)
            .map_err(QueryError::execution)
    }

    /// Keeps the rows whose block is in `blocks`, if the table has the block column.
    fn restrict(&self, frame: DataFrame, blocks: &Range<u64>) -> Result<DataFrame, QueryError> {
        let column = &self.config.block_column;
        if !frame.schema().has_column_with_unqualified_name(column) {
            return Ok(frame);
        }
        let in_range: Expr = ident(column.as_str())
            .gt_eq(lit(blocks.start))
            .and(ident(column.as_str()).lt(lit(blocks.end)));
        frame.filter(in_range).map_err(QueryError::execution)
    }
}

/// One chunk's file of a table.
struct TableFile {
    location: Location,
    /// The blocks the chunk answers for.
    blocks: Range<u64>,
    /// The chunk's part in the query's cover.
    chunk: usize,
}

/// Where a query reads a chunk's file.
enum Location {
    /// In a chunk directory this worker holds.
    Local {
        /// The file.
        path: PathBuf,
        /// The file as a `file://` URL, as DataFusion reads it ([`file_url`]).
        url: String,
    },
    /// At its origin, with range requests.
    Remote {
        /// The object store (scheme and authority) it is read through.
        origin: ObjectStoreUrl,
        /// Its URL.
        url: String,
    },
}

impl Location {
    /// Its URL.
    fn url(&self) -> &str {
        match self {
            Location::Local { url, .. } | Location::Remote { url, .. } => url,
        }
    }

    /// The object store it is read through: `None` for the local file system.
    fn store(&self) -> Option<&ObjectStoreUrl> {
        match self {
            Location::Local { .. } => None,
            Location::Remote { origin, .. } => Some(origin),
        }
    }
}

/// How a query reads one chunk of its cover.
enum ChunkSource {
    /// Held (or fetched whole) by this worker, pinned while the query runs.
    Local(ChunkRef),
    /// Read at its origin with range requests.
    Remote,
    /// The query reads none of its files.
    Unread,
}

/// Whether the query reads the chunk file `name`: a table file of one of `tables` (of any
/// table if `None`).
/// The URLs of the files of a part's chunk that the query reads.
fn read_urls<'a>(part: &'a CoverPart, tables: Option<&BTreeSet<String>>) -> Vec<&'a String> {
    part.chunk
        .files()
        .iter()
        .filter(|(name, _)| reads(name, tables))
        .map(|(_, url)| url)
        .collect()
}

/// Origins asked at once for the sizes of the chunks a query fetches whole.
const PROBES_AT_ONCE: usize = 16;

/// The fetch room counts in MiB, so that a semaphore's permits cover any budget.
const ROOM_UNIT: u64 = 1 << 20;

/// `bytes` of fetch room in [`ROOM_UNIT`]s, rounded up, at least one.
fn room_units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(ROOM_UNIT).max(1)).unwrap_or(u32::MAX)
}

fn reads(name: &str, tables: Option<&BTreeSet<String>>) -> bool {
    table_name(name).is_some_and(|table| tables.is_none_or(|tables| tables.contains(table)))
}

/// The object store a file URL can be read remotely through: `http(s)://host[:port]` for a
/// plain `http(s)://` URL of a file; `None` for other schemes, and for URLs the HTTP store
/// cannot address as given (a query string such as a presigned URL's signature, credentials,
/// a fragment, a directory, glob characters that DataFusion would expand).
fn remote_origin(url: &str) -> Option<ObjectStoreUrl> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let plain = matches!(parsed.scheme(), "http" | "https")
        && parsed.query().is_none()
        && parsed.fragment().is_none()
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && !parsed.path().ends_with('/')
        && !parsed.path().contains(['*', '?', '[', ']', '{', '}']);
    if !plain {
        return None;
    }
    let host = parsed.host_str()?;
    let origin = match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    };
    ObjectStoreUrl::parse(origin).ok()
}

/// The footer bytes read first from a remote Parquet file: only its length and magic, so
/// the metadata is then read exactly (as DuckDB does), never more of the file than needed.
const REMOTE_FOOTER_HINT: usize = 8;

/// Reads files of one table from one store as a DataFrame: local paths as today; remote
/// files through an HTTP object store for their origin (registered on first use), with the
/// catalog's schema if known (no footer read to infer it).
async fn read_files(
    context: &SessionContext,
    files: &[&TableFile],
    schema: Option<&SchemaRef>,
) -> Result<DataFrame, QueryError> {
    let mut paths = Vec::with_capacity(files.len());
    let mut origin = None;
    for file in files {
        match &file.location {
            Location::Local { url, .. } => paths.push(url.clone()),
            Location::Remote { origin: store, url } => {
                origin = Some(store);
                paths.push(url.clone());
            }
        }
    }
    let Some(origin) = origin else {
        return read(context, paths, None).await;
    };
    register_http_store(context, origin)?;
    // Any name: a URL need not end in .parquet.
    let mut options = ParquetReadOptions::default()
        .file_extension("")
        .metadata_size_hint(Some(REMOTE_FOOTER_HINT));
    if let Some(schema) = schema {
        options = options.schema(schema.as_ref());
    }
    context
        .read_parquet(paths, options)
        .await
        .map_err(QueryError::execution)
}

/// Registers an HTTP object store for `origin` in the session's runtime, unless one is.
fn register_http_store(
    context: &SessionContext,
    origin: &ObjectStoreUrl,
) -> Result<(), QueryError> {
    let runtime = context.runtime_env();
    if runtime.object_store(origin).is_ok() {
        return Ok(());
    }
    let options = object_store::ClientOptions::new()
        .with_allow_http(true)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120));
    let store = object_store::http::HttpBuilder::new()
        .with_url(origin.as_str())
        .with_client_options(options)
        .build()
        .map_err(|error| {
            QueryError::execution(DataFusionError::Execution(format!(
                "cannot read from {origin}: {error}"
            )))
        })?;
    runtime.register_object_store(origin.as_ref(), Arc::new(store));
    Ok(())
}

/// Makes every join give the thread back between its output batches.
///
/// DataFusion's tasks yield to the scheduler only when their sources (the Parquet scans) have
/// used up tokio's budget; a join can produce billions of rows from a few input batches, so
/// a cross join would keep its threads for minutes, and cancelling it (dropping its stream)
/// would take effect only when it is done. Wrapping each join in a [`CooperativeExec`] spends
/// budget per output batch, so the task yields every 128 batches and a cancellation or a
/// timeout stops it within a few batches.
#[derive(Debug)]
struct YieldInJoins;

impl PhysicalOptimizerRule for YieldInJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &datafusion::common::config::ConfigOptions,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.name().contains("Join") {
                let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
                Ok(Transformed::yes(wrapped))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|rewritten| rewritten.data)
    }

    fn name(&self) -> &str {
        "chunk_query_yield_in_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The table a chunk file is, if it is a Parquet file: `blocks` for `blocks.parquet`.
fn table_name(file: &str) -> Option<&str> {
    file.strip_suffix(PARQUET).filter(|stem| !stem.is_empty())
}

/// The schemas of remote Parquet files, from their footers, read with range requests.
async fn remote_schemas(tables: &[(&str, &String)]) -> Result<BTreeMap<String, SchemaRef>, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|error| crate::catalog::error_chain(&error))?;
    let mut schemas = BTreeMap::new();
    for (table, url) in tables {
        let schema = remote_footer_schema(&client, url)
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        schemas.insert((*table).to_string(), schema);
    }
    Ok(schemas)
}

/// How much of a file's end the first footer read takes: most footers fit.
const FOOTER_GUESS: u64 = 64 * 1024;

/// A remote Parquet file's Arrow schema: `HEAD` for its size, then a range `GET` of its last
/// 64 KiB (and one more for a bigger footer).
async fn remote_footer_schema(client: &reqwest::Client, url: &str) -> Result<SchemaRef, String> {
    let head = client
        .head(url)
        .send()
        .await
        .map_err(|error| crate::catalog::error_chain(&error))?;
    if !head.status().is_success() {
        return Err(format!("HEAD answered {}", head.status()));
    }
    let size = head
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .ok_or("no Content-Length")?;
    if size < 12 {
        return Err(format!("{size} bytes is too small for a Parquet file"));
    }
    let tail_len = size.min(FOOTER_GUESS);
    let tail = read_range(client, url, size - tail_len, size).await?;
    let Some(footer) = tail.get(tail.len().saturating_sub(8)..) else {
        return Err("short read".into());
    };
    if footer.len() != 8 || &footer[4..] != b"PAR1" {
        return Err("no Parquet footer (PAR1)".into());
    }
    let mut length = [0u8; 4];
    length.copy_from_slice(&footer[..4]);
    let metadata_len = u64::from(u32::from_le_bytes(length));
    if metadata_len + 12 > size {
        return Err(format!(
            "a footer of {metadata_len} bytes in a file of {size}"
        ));
    }
    let metadata = if metadata_len + 8 <= tail_len {
        let end = tail.len() - 8;
        tail.slice(end - metadata_len as usize..end)
    } else {
        read_range(client, url, size - 8 - metadata_len, size - 8).await?
    };
    let metadata = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&metadata)
        .map_err(|error| error.to_string())?;
    let file = metadata.file_metadata();
    let schema =
        parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
            .map_err(|error| error.to_string())?;
    Ok(Arc::new(schema))
}

/// Bytes `start..end` of a remote file.
async fn read_range(
    client: &reqwest::Client,
    url: &str,
    start: u64,
    end: u64,
) -> Result<bytes::Bytes, String> {
    let response = client
        .get(url)
        .header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1))
        .send()
        .await
        .map_err(|error| crate::catalog::error_chain(&error))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| crate::catalog::error_chain(&error))?;
    let wanted = (end - start) as usize;
    match status.as_u16() {
        206 if body.len() == wanted => Ok(body),
        // A server that ignores ranges sends the whole file.
        200 if body.len() as u64 >= end => Ok(body.slice(start as usize..end as usize)),
        other => Err(format!(
            "a range read answered {other} with {} bytes",
            body.len()
        )),
    }
}

/// A Parquet file's Arrow schema, from its footer.
fn read_footer_schema(path: &std::path::Path) -> Result<SchemaRef, parquet::errors::ParquetError> {
    let file = std::fs::File::open(path)?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    Ok(builder.schema().clone())
}

fn sql_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans `sql` over empty tables of these schemas: the errors a query would get from
/// planning, before anything is downloaded. Returns the tables the plan reads (its table
/// scans, subqueries included).
async fn check_plan(
    context: &SessionContext,
    schemas: &BTreeMap<String, SchemaRef>,
    sql: &str,
) -> Result<BTreeSet<String>, QueryError> {
    for (name, schema) in schemas {
        let table: Arc<dyn TableProvider> = Arc::new(EmptyTable::new(schema.clone()));
        context
            .register_table(TableReference::bare(name.as_str()), table)
            .map_err(QueryError::execution)?;
    }
    let frame = context
        .sql_with_options(sql, sql_options())
        .await
        .map_err(classify)?;
    let mut tables = BTreeSet::new();
    frame
        .logical_plan()
        .apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                tables.insert(scan.table_name.table().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(QueryError::execution)?;
    frame.create_physical_plan().await.map_err(classify)?;
    Ok(tables)
}

/// A local file as a `file://` URL. DataFusion takes a URL as it is, where it would `stat` a
/// plain path (every file, every query) and take one holding `*`, `?` or `[` for a glob.
fn file_url(path: &std::path::Path) -> Result<String, QueryError> {
    std::path::absolute(path)
        .ok()
        .and_then(|absolute| reqwest::Url::from_file_path(absolute).ok())
        .map(String::from)
        .ok_or_else(|| {
            QueryError::execution(DataFusionError::Execution(format!(
                "{} cannot be read as a file URL",
                path.display()
            )))
        })
}

/// Reads local files of one table, with `schema` if given (else the files' merged schema).
/// Not with the catalog's schema: the schema read from the files gives text columns as
/// `Utf8View`, which sorts and aggregations hold in far less memory than the catalog's `Utf8`
/// (with it, a sort under a 16 MiB limit could not merge its spilled runs); the footers it
/// reads are cached.
async fn read(
    context: &SessionContext,
    paths: Vec<String>,
    schema: Option<&Schema>,
) -> Result<DataFrame, QueryError> {
    let mut options = ParquetReadOptions::default();
    if let Some(schema) = schema {
        options = options.schema(schema);
    }
    context
        .read_parquet(paths, options)
        .await
        .map_err(QueryError::execution)
}

/// Parses `sql` and checks that it is a query (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`).
fn read_only(state: &SessionState, sql: &str) -> Result<DFStatement, QueryError> {
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state
        .sql_to_statement(sql, &dialect)
        .map_err(QueryError::sql)?;
    let query = match &statement {
        DFStatement::Statement(inner) => {
            matches!(
                **inner,
                SQLStatement::Query(_) | SQLStatement::Explain { .. }
            )
        }
        DFStatement::Explain(_) => true,
        _ => false,
    };
    if query {
        Ok(statement)
    } else {
        Err(QueryError::sql(DataFusionError::Plan(
            "only queries are allowed (SELECT, WITH, VALUES, EXPLAIN)".to_string(),
        )))
    }
}

/// The names of the tables `statement` reads, as DataFusion's planner resolves them (common
/// table expressions excluded).
fn named_tables(
    state: &SessionState,
    statement: &DFStatement,
) -> Result<BTreeSet<String>, QueryError> {
    let references = state
        .resolve_table_references(statement)
        .map_err(QueryError::sql)?;
    Ok(references
        .iter()
        .map(|reference| reference.table().to_string())
        .collect())
}

/// Partitions up to which a hash join builds one table for all partitions (see
/// [`collect_join_build_sides`]).
const COLLECT_LEFT_PARTITIONS: usize = 4;

/// With few partitions (up to [`COLLECT_LEFT_PARTITIONS`]: a small worker), a hash join whose
/// build side is estimated under an eighth of the memory limit (1 GiB if there is none) and 16
/// million rows builds one hash table that every partition probes (DataFusion's
/// `CollectLeft`), rather than hashing and repartitioning both inputs to build one table per
/// partition: on two CPUs, the join of the query benchmark (1.9 million build rows, 3.8
/// million probe rows) took 20% less CPU (`bench/duckdb.sh`). DataFusion's own thresholds
/// (1 MiB, 128 Ki rows) suit machines with many cores, where the partitioned build runs on
/// all of them. The build side does not spill either way.
fn collect_join_build_sides(session: &mut SessionConfig, config: &QueryConfig) {
    if config.target_partitions > COLLECT_LEFT_PARTITIONS {
        return;
    }
    let optimizer = &mut session.options_mut().optimizer;
    let limit = config.memory_limit.unwrap_or(1 << 30);
    optimizer.hash_join_single_partition_threshold = optimizer
        .hash_join_single_partition_threshold
        .max(limit / 8);
    optimizer.hash_join_single_partition_threshold_rows = optimizer
        .hash_join_single_partition_threshold_rows
        .max(16 << 20);
}

/// Planning errors are the request's fault; the rest are failures while running.
fn classify(error: DataFusionError) -> QueryError {
    match error.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => QueryError::sql(error),
        _ => QueryError::execution(error),
    }
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("chunks_in_catalog", &self.catalog.load().len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The result of a query: Arrow record batches as they are computed.
///
/// Holds the query's chunks pinned until it is dropped. A `Stream` of
/// `Result<RecordBatch, QueryError>`; [`QueryStream::collect`] gathers them.
pub struct QueryStream {
    // Field order matters: DataFusion's stream (and the tasks it stops on drop) goes before
    // the pins.
    inner: SendableRecordBatchStream,
    chunks: Vec<ChunkUse>,
    missing: Vec<Range<u64>>,
    pins: Vec<ChunkRef>,
    /// Whether the plan was an earlier query's ([`crate::plans`]).
    reused: bool,
    /// Counts the query as running until the stream is dropped.
    _running: Running,
}

/// A query counted in [`QueryEngine`]'s running queries while this lives.
struct Running {
    count: Arc<AtomicUsize>,
    /// The queries running when this one started, itself included.
    now: usize,
}

impl Running {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        let now = count.fetch_add(1, Ordering::Relaxed) + 1;
        Self {
            count: count.clone(),
            now,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl QueryStream {
    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    /// The chunks the query reads, in block order.
    pub fn used_chunks(&self) -> &[ChunkUse] {
        &self.chunks
    }

    /// Blocks of the range that no chunk of the catalog covers (they are simply absent from
    /// the result).
    pub fn missing(&self) -> &[Range<u64>] {
        &self.missing
    }

    /// The pinned chunks (those read locally), in block order.
    pub fn pinned(&self) -> &[ChunkRef] {
        &self.pins
    }

    /// Whether the query ran the plan made for an earlier query of the same SQL over the same
    /// chunks (its tables were not registered nor its SQL planned again): see
    /// [`QueryEngine::query`].
    pub fn plan_reused(&self) -> bool {
        self.reused
    }

    /// Gathers every batch.
    ///
    /// # Errors
    ///
    /// [`QueryError::Execution`] if the query fails while it runs.
    pub async fn collect(self) -> Result<Vec<RecordBatch>, QueryError> {
        self.try_collect().await
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch, QueryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner
            .poll_next_unpin(cx)
            .map(|batch| batch.map(|batch| batch.map_err(QueryError::execution)))
    }
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("chunks", &self.chunks)
            .field("missing", &self.missing)
            .finish_non_exhaustive()
    }
}
