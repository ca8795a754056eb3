//! Queries: the `query` and `synth` commands, and the daemon's `POST /query` and
//! `PUT /catalog`. Wiring only; the logic lives in `chunk-query`.
//!
//! # Overview
//!
//! - `chunk-worker query` opens the data directory (like the other operator commands, so it
//!   refuses while a daemon holds it: use `POST /query` then), loads the catalog, runs one
//!   query and prints the result as a table, JSON, NDJSON or Arrow IPC. `--demo` runs it over
//!   generated chunks served by an in-process origin instead; `--cluster URL` sends it to a
//!   worker of a fleet ([`crate::remote`]).
//! - `chunk-worker synth` writes generated chunks and a `catalog.json` to a directory, and with
//!   `--serve` serves them on 127.0.0.1 until interrupted, so the other commands have an origin
//!   to download from.
//! - `POST /query` takes `{"dataset", "blocks": {"start", "end"}, "sql", "format"}` and streams
//!   the result as JSON (default), NDJSON or Arrow IPC (`"format": "arrow"`, or
//!   `Accept: application/vnd.apache.arrow.stream`); `PUT /catalog` replaces the catalog;
//!   `GET /datasets/{dataset}/schema` lists the tables and their columns (`chunk-worker
//!   schema` prints them).
//! - Daemon queries run on a runtime of their own (`--query-threads`), supervised from the
//!   HTTP server's: a client that disconnects or `--query-timeout` stops the query, and a
//!   query that fails after its first batch ends its body unmistakably (see [`post_query`]).

use std::io::{IsTerminal, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use axum::Json;
use axum::body::{Body, Bytes as BodyBytes};
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chunk_manager::{Bytes, ChunkManager, DataChunk, DatasetId, id_from_hex, id_to_hex};
use chunk_origin::Origin;
use chunk_query::output::{Encoder, Format};
use chunk_query::synth::{Synth, SynthChunk, SynthConfig};
use chunk_query::{Catalog, QueryConfig, QueryEngine, QueryError, QueryStream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::api::AppState;
use crate::settings::ManagerArgs;

/// The dataset id the synthetic data uses unless told otherwise.
pub const SYNTH_DATASET: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// Options of `chunk-worker query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// The manager's options (data directory, disk budget, ...); chunks fetched for the query
    /// stay there, cached, for the next one.
    #[command(flatten)]
    pub manager: ManagerArgs,
    /// The catalog of the dataset's chunks: a JSON file or an http(s) URL (a list of chunk
    /// descriptions, or {"chunks": [...]}), or an s3:// or file:// prefix to list.
    #[arg(long, env = "CHUNK_WORKER_CATALOG", value_name = "FILE|URL")]
    pub catalog: Option<String>,
    /// The dataset: 64 hex digits, or a unique prefix of at least 4 of a dataset the catalog
    /// names (a catalog file, or a directory with a catalog.json); may be left out when the
    /// catalog has one dataset. Listing an s3:// prefix or a directory without a catalog.json
    /// needs all 64 digits.
    #[arg(long, value_name = "DATASET_ID")]
    pub dataset: Option<String>,
    /// The blocks to query, START..END (END excluded).
    #[arg(long, value_name = "START..END", value_parser = parse_blocks)]
    pub blocks: Range<u64>,
    /// Output: table, json, ndjson or arrow (Arrow IPC stream, not to a terminal).
    #[arg(long, default_value = "table", value_parser = parse_format)]
    pub format: Format,
    /// Query generated chunks served by an in-process origin on 127.0.0.1 (no catalog
    /// needed; a temporary data directory unless --data-dir is given).
    #[arg(long)]
    pub demo: bool,
    /// Download every covering chunk the data directory lacks, whole, and read it locally
    /// (kept, cached, for the next query), rather than reading only the parts of its files
    /// the query needs with range requests. Better for repeated queries on the same chunks.
    #[arg(long)]
    pub whole_chunks: bool,
    /// Send the query to a worker of a fleet, which plans it across the fleet, instead of
    /// running it here: the fleet's cluster store (file:///..., s3://...; a live member is
    /// asked) or a worker's HTTP URL (http://host:port).
    #[arg(long, value_name = "URL", conflicts_with_all = ["demo", "whole_chunks"])]
    pub cluster: Option<String>,
    /// With --cluster: the worker's API token, if it has one.
    #[arg(
        long,
        env = "CHUNK_WORKER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The SQL: tables are the chunks' Parquet file names (blocks, transactions, logs, ...),
    /// holding only the rows of the blocks asked for.
    #[arg(value_name = "SQL")]
    pub sql: String,
}

/// Options of `chunk-worker synth`.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// Where to write the chunks (`<start>-<end>-<id>/<file>.parquet`) and `catalog.json`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// How many chunks.
    #[arg(long, default_value_t = 10)]
    pub chunks: u64,
    /// Blocks per chunk.
    #[arg(long, default_value_t = 1000)]
    pub blocks_per_chunk: u64,
    /// The first block.
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Mean transactions per block.
    #[arg(long, default_value_t = 20)]
    pub transactions_per_block: u32,
    /// How the Parquet pages are compressed: zstd, snappy, lz4 or none.
    #[arg(long, default_value = "zstd", value_parser = parse_compression)]
    pub compression: chunk_query::parquet::basic::Compression,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 16 * 1024, value_name = "ROWS")]
    pub row_group_rows: usize,
    /// The dataset id (64 hex digits).
    #[arg(long, default_value = SYNTH_DATASET)]
    pub dataset: String,
    /// Serve the chunks on 127.0.0.1 until interrupted; the catalog's URLs point there.
    #[arg(long)]
    pub serve: bool,
    /// The base of the catalog's URLs when not serving [default: file:// URLs of --out].
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
}

fn parse_compression(text: &str) -> Result<chunk_query::parquet::basic::Compression, String> {
    use chunk_query::parquet::basic::{Compression, ZstdLevel};
    match text {
        "zstd" => Ok(Compression::ZSTD(ZstdLevel::default())),
        "snappy" => Ok(Compression::SNAPPY),
        "lz4" => Ok(Compression::LZ4_RAW),
        "none" => Ok(Compression::UNCOMPRESSED),
        other => Err(format!("{other:?}: expected zstd, snappy, lz4 or none")),
    }
}

fn parse_blocks(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not START..END"))?;
    let number = |part: &str| {
        part.trim()
            .parse::<u64>()
            .map_err(|_| format!("{part:?} is not a block number"))
    };
    let blocks = number(start)?..number(end)?;
    if blocks.is_empty() {
        return Err(format!("{text:?} is empty (END is excluded)"));
    }
    Ok(blocks)
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse()
}

/// `chunk-worker query`.
pub fn run(args: &QueryArgs) -> anyhow::Result<ExitCode> {
    if let Some(cluster) = &args.cluster {
        return crate::remote::run(args, cluster);
    }
    if args.format == Format::ArrowIpc && std::io::stdout().is_terminal() {
        bail!("--format arrow writes binary data: redirect it to a file or a pipe");
    }
    let runtime = cli_runtime()?;
    let temporary = tempfile::tempdir().context("create a temporary directory")?;
    // The demo's origin lives until the query is done.
    let (catalog, _origin, config) = cli_catalog(
        &runtime,
        temporary.path(),
        args.demo,
        args.catalog.as_deref(),
        args.dataset.as_deref(),
        &args.manager,
    )?;
    let data_dir = config.data_dir.clone();
    let manager = Arc::new(ChunkManager::open(config).with_context(|| {
        format!(
            "open the data directory {} (while a daemon runs on it, use its POST /query)",
            data_dir.display()
        )
    })?);
    let dataset = pick_dataset(&catalog, args.dataset.as_deref())?;
    let config = QueryConfig::default().with_remote_reads(!args.whole_chunks);
    let engine = QueryEngine::with_config(manager.clone(), catalog, config)
        .context("set up the query engine")?;
    let started = Instant::now();
    let result = runtime.block_on(async {
        let stream = engine
            .query(&dataset, args.blocks.clone(), &args.sql)
            .await
            .map_err(|failure| anyhow!(user_message(&failure.to_string())))?;
        let summary = summarize(&stream);
        let rows = write_stream(stream, args.format, &mut std::io::stdout().lock()).await?;
        anyhow::Ok((summary, rows))
    });
    manager.shutdown_blocking();
    let (summary, rows) = result?;
    eprintln!(
        "{rows} row(s) in {:.3} s; {summary}",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Options of `chunk-worker schema`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchemaArgs {
    /// The manager's options (a catalog without schemas makes it fetch one chunk to read
    /// them).
    #[command(flatten)]
    pub manager: ManagerArgs,
    /// The catalog, as for `query`.
    #[arg(long, env = "CHUNK_WORKER_CATALOG", value_name = "FILE|URL")]
    pub catalog: Option<String>,
    /// The dataset, as for `query`.
    #[arg(long, value_name = "DATASET_ID")]
    pub dataset: Option<String>,
    /// Show the demo's tables (as `query --demo` sees them).
    #[arg(long)]
    pub demo: bool,
    /// Print JSON (as `GET /datasets/{dataset}/schema`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The runtime a CLI command (`query`, `schema`) runs its catalog loading and queries on.
fn cli_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the query runtime")
}

/// What a CLI command reads: the demo's catalog (with the origin serving it, to keep alive
/// while the command runs, and a data directory under `temporary` unless one is given) or the
/// catalog at `--catalog`; and the manager's configuration.
fn cli_catalog(
    runtime: &tokio::runtime::Runtime,
    temporary: &Path,
    demo: bool,
    source: Option<&str>,
    dataset: Option<&str>,
    manager: &ManagerArgs,
) -> anyhow::Result<(Catalog, Option<Origin>, chunk_manager::Config)> {
    let (catalog, origin, config) = if demo {
        let (catalog, origin) = demo_catalog()?;
        let mut config = manager.resolve()?;
        if manager.data_dir.is_none() {
            config.data_dir = temporary.join("data");
        }
        (catalog, Some(origin), config)
    } else {
        let source = source.ok_or_else(|| anyhow!("--catalog is needed (or --demo)"))?;
        let catalog = runtime.block_on(load_catalog(source, dataset))?;
        (catalog, None, manager.resolve()?)
    };
    Ok((catalog, origin, config.with_worker_threads(2)))
}

/// `chunk-worker schema`: every table of a dataset and its columns, like `DESCRIBE`.
pub fn schema(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    let runtime = cli_runtime()?;
    let temporary = tempfile::tempdir().context("create a temporary directory")?;
    let (catalog, _origin, config) = cli_catalog(
        &runtime,
        temporary.path(),
        args.demo,
        args.catalog.as_deref(),
        args.dataset.as_deref(),
        &args.manager,
    )?;
    let dataset = pick_dataset(&catalog, args.dataset.as_deref())?;
    let schemas = match catalog.schemas(&dataset) {
        known if !known.is_empty() => known,
        _ => {
            let data_dir = config.data_dir.clone();
            let manager = Arc::new(
                ChunkManager::open(config)
                    .with_context(|| format!("open the data directory {}", data_dir.display()))?,
            );
            let engine =
                QueryEngine::new(manager.clone(), catalog).context("set up the query engine")?;
            let result = runtime.block_on(engine.table_schemas(&dataset));
            manager.shutdown_blocking();
            result.map_err(|failure| anyhow!(user_message(&failure.to_string())))?
        }
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::to_string_pretty(&schema_json(&schemas)).context("encode")?;
        writeln!(out, "{json}").context("write the schema")?;
    } else {
        for (table, schema) in &schemas {
            writeln!(out, "{table}").context("write the schema")?;
            let width = schema
                .fields()
                .iter()
                .map(|field| field.name().len())
                .max()
                .unwrap_or(0);
            for field in schema.fields() {
                let null = if field.is_nullable() { "" } else { " NOT NULL" };
                writeln!(
                    out,
                    "  {:width$}  {}{null}",
                    field.name(),
                    field.data_type()
                )
                .context("write the schema")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a query read, in one line.
fn summarize(stream: &QueryStream) -> String {
    let used = stream.used_chunks();
    let downloaded = used.iter().filter(|chunk| chunk.fetched).count();
    let remote = used.iter().filter(|chunk| chunk.remote).count();
    let mut text = format!(
        "{} chunk(s) read, {downloaded} downloaded for the query, {remote} read remotely",
        used.len()
    );
    for missing in stream.missing() {
        text.push_str(&format!(
            "; blocks {}..{} are in no chunk of the catalog",
            missing.start, missing.end
        ));
    }
    text
}

/// Writes the result as it comes; returns the number of rows. Nothing is written if the
/// query fails before its first batch; a failure after it ends JSON and NDJSON output with
/// the same `{"error": ...}` line as the daemon's, an Arrow stream without its end-of-stream
/// marker, and is returned (the command exits non-zero).
async fn write_stream(
    mut stream: QueryStream,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let mut encoder = Encoder::new(format, stream.schema()).context("encode the result")?;
    let first = stream
        .next()
        .await
        .transpose()
        .map_err(|failure| anyhow!(user_message(&failure.to_string())))?;
    out.write_all(&encoder.begin()?)
        .context("write the result")?;
    let mut rows = 0;
    let mut next = first;
    loop {
        let Some(batch) = next else { break };
        rows += batch.num_rows();
        out.write_all(&encoder.batch(&batch)?)
            .context("write the result")?;
        next = match stream.next().await.transpose() {
            Ok(next) => next,
            Err(failure) => {
                let failure = Failure::Query(failure);
                if matches!(format, Format::Json | Format::Ndjson) {
                    out.write_all(&error_trailer(format, &failure))
                        .context("write the result")?;
                }
                out.flush().context("write the result")?;
                bail!(
                    "the query failed after {rows} row(s): {}",
                    failure.message()
                );
            }
        };
    }
    out.write_all(&encoder.finish()?)
        .context("write the result")?;
    if format == Format::Json {
        out.write_all(b"\n").context("write the result")?;
    }
    out.flush().context("write the result")?;
    Ok(rows)
}

/// Loads a catalog file or URL, or lists an `s3://` prefix or a directory. A directory's
/// `catalog.json`, if it has one (`chunk-worker synth` writes it), names its datasets (so a
/// `--dataset` prefix works) and gives the tables' schemas.
async fn load_catalog(source: &str, dataset: Option<&str>) -> anyhow::Result<Catalog> {
    let local = source.strip_prefix("file://").unwrap_or(source);
    let listing = if source.starts_with("s3://") {
        Some(source.to_string())
    } else if (source.starts_with("file://") || !source.contains("://"))
        && Path::new(local).is_dir()
    {
        let directory = Path::new(local)
            .canonicalize()
            .with_context(|| format!("resolve {local}"))?;
        Some(format!("file://{}", directory.display()))
    } else {
        None
    };
    let Some(url) = listing else {
        return Catalog::load(source)
            .await
            .with_context(|| format!("load the catalog {source}"));
    };
    let described = if source.starts_with("s3://") {
        None
    } else {
        let file = Path::new(local).join("catalog.json");
        file.is_file()
            .then(|| Catalog::load_file(&file))
            .transpose()
            .with_context(|| format!("load {}", file.display()))?
    };
    let dataset = match (dataset, &described) {
        (Some(text), Some(described)) if text.len() != 64 => pick_dataset(described, Some(text))?,
        (None, Some(described)) => pick_dataset(described, None)?,
        (Some(text), _) => id_from_hex(text).map_err(|error| {
            anyhow!("--dataset {text}: {error} (listing {source} needs the full 64 hex digits unless it has a catalog.json)")
        })?,
        (None, None) => bail!("--dataset (64 hex digits) is needed to list {source}"),
    };
    let listed = Catalog::list_url(&url, dataset, None)
        .await
        .with_context(|| format!("list the catalog {source}"))?;
    Ok(match described {
        Some(described) => listed.with_schemas(dataset, described.schemas(&dataset)),
        None => listed,
    })
}

/// The dataset named by a full id or a unique prefix, or the catalog's only one.
pub(crate) fn pick_dataset(catalog: &Catalog, given: Option<&str>) -> anyhow::Result<DatasetId> {
    let known: Vec<DatasetId> = catalog.datasets().copied().collect();
    let Some(text) = given else {
        return match known.as_slice() {
            [only] => Ok(*only),
            [] => bail!("the catalog lists no chunk"),
            _ => bail!(
                "the catalog has {} datasets; name one with --dataset",
                known.len()
            ),
        };
    };
    let text = text.to_ascii_lowercase();
    if text.len() == 64 {
        return id_from_hex(&text).map_err(|error| anyhow!("--dataset {text}: {error}"));
    }
    if text.len() < 4 {
        bail!("--dataset {text}: give at least 4 hex digits");
    }
    let matching: Vec<_> = known
        .iter()
        .filter(|id| id_to_hex(id).starts_with(&text))
        .collect();
    match matching.as_slice() {
        [one] => Ok(**one),
        [] => bail!("no dataset of the catalog starts with {text}"),
        _ => bail!("--dataset {text} matches several datasets"),
    }
}

/// The demo's data: 8 chunks of 500 blocks served by an in-process origin.
fn demo_catalog() -> anyhow::Result<(Catalog, Origin)> {
    let origin = Origin::start().context("start the demo origin")?;
    let dataset = id_from_hex(SYNTH_DATASET).map_err(|error| anyhow!("{error}"))?;
    let synth = Synth::new(SynthConfig::default().with_transactions_per_block(20));
    let mut chunks = Vec::new();
    for n in 0..8u64 {
        let chunk = synth.chunk(&dataset, n * 500..(n + 1) * 500)?;
        for (name, bytes) in &chunk.files {
            origin.insert(&chunk.path(name), bytes.clone());
        }
        chunks.push(chunk.describe(&dataset, |path| origin.url(path)));
    }
    eprintln!(
        "demo: 8 chunks of 500 blocks (0..4000) of dataset {} served at {}",
        &SYNTH_DATASET[..8],
        origin.url("")
    );
    Ok((Catalog::new(chunks)?, origin))
}

/// `chunk-worker synth`.
pub fn synth(args: &SynthArgs) -> anyhow::Result<ExitCode> {
    let dataset = id_from_hex(&args.dataset).map_err(|error| anyhow!("--dataset: {error}"))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let out = args
        .out
        .canonicalize()
        .with_context(|| format!("resolve {}", args.out.display()))?;
    let synth = Synth::new(
        SynthConfig::default()
            .with_transactions_per_block(args.transactions_per_block)
            .with_compression(args.compression)
            .with_row_group_rows(args.row_group_rows),
    );
    let mut chunks: Vec<SynthChunk> = Vec::new();
    for n in 0..args.chunks {
        let start = args.start + n * args.blocks_per_chunk;
        let chunk = synth.chunk(&dataset, start..start + args.blocks_per_chunk)?;
        chunk
            .write_to(&out)
            .with_context(|| format!("write {}", out.join(chunk.dir()).display()))?;
        chunks.push(chunk);
    }
    let origin = if args.serve {
        let origin = Origin::start().context("start the origin")?;
        for chunk in &chunks {
            for (name, bytes) in &chunk.files {
                origin.insert(&chunk.path(name), bytes.clone());
            }
        }
        Some(origin)
    } else {
        None
    };
    let base = match (&origin, &args.base_url) {
        (Some(origin), _) => origin.url("").trim_end_matches('/').to_string(),
        (None, Some(base)) => base.trim_end_matches('/').to_string(),
        (None, None) => format!("file://{}", out.display()),
    };
    let described: Vec<DataChunk> = chunks
        .iter()
        .map(|chunk| chunk.describe(&dataset, |path| format!("{base}/{path}")))
        .collect();
    let catalog_path = out.join("catalog.json");
    let json = Catalog::new(described)?
        .with_schemas(dataset, chunk_query::synth::schemas())
        .to_json()
        .context("encode the catalog")?;
    std::fs::write(&catalog_path, json)
        .with_context(|| format!("write {}", catalog_path.display()))?;
    let bytes: u64 = chunks.iter().map(SynthChunk::size).sum();
    say!(
        "wrote {} chunks of {} blocks ({}..{}, {}) of dataset {} to {}",
        chunks.len(),
        args.blocks_per_chunk,
        args.start,
        args.start + args.chunks * args.blocks_per_chunk,
        Bytes(bytes),
        args.dataset,
        out.display()
    );
    say!("catalog {}", catalog_path.display());
    if let Some(origin) = origin {
        say!("serving at {} until interrupted", origin.url(""));
        std::io::stdout().flush().context("write to stdout")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start a runtime")?;
        runtime
            .block_on(tokio::signal::ctrl_c())
            .context("wait for Ctrl-C")?;
        drop(origin);
    }
    Ok(ExitCode::SUCCESS)
}

/// The daemon's query options (flags or variables only).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QueryOptions {
    /// How long a query may run, from its request to its last row, before it is stopped,
    /// such as 300s or 10m [default: 300s].
    #[arg(long, env = "CHUNK_WORKER_QUERY_TIMEOUT", value_name = "DURATION", value_parser = crate::settings::parse_duration)]
    pub query_timeout: Option<Duration>,
    /// Threads that run queries, apart from the HTTP server's and the manager's [default:
    /// the number of CPUs].
    #[arg(long, env = "CHUNK_WORKER_QUERY_THREADS", value_name = "N")]
    pub query_threads: Option<usize>,
    /// Queries that run at once; the others wait their turn, in order (the wait counts
    /// against the timeout) [default: 8].
    #[arg(long, env = "CHUNK_WORKER_MAX_QUERIES", value_name = "N")]
    pub max_queries: Option<usize>,
    /// Download every covering chunk the worker lacks, whole (cached, evicted least recently
    /// used first), rather than reading only the parts of its files a query needs with range
    /// requests. Better when the same chunks are queried again and again.
    #[arg(long, env = "CHUNK_WORKER_WHOLE_CHUNKS")]
    pub whole_chunks: bool,
    /// The memory all running queries share for sorts, aggregations and joins, such as 1GiB;
    /// beyond their share sorts spill to <data-dir>/tmp/query-spill [default: 1GiB].
    #[arg(long, env = "CHUNK_WORKER_QUERY_MEMORY", value_name = "SIZE", value_parser = crate::settings::parse_size)]
    pub query_memory: Option<u64>,
}

/// The default of [`QueryOptions::max_queries`].
const DEFAULT_MAX_QUERIES: usize = 8;

/// The default of [`QueryOptions::query_timeout`].
const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(300);

/// The daemon's query engine, shared by its handlers. Queries run on a runtime of their own,
/// so a heavy one cannot stall the HTTP server (DataFusion's pattern for CPU-bound work).
#[derive(Clone)]
pub struct QueryService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    engine: Arc<QueryEngine>,
    /// Where queries run; `None` once shut down.
    runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
    timeout: Duration,
    /// One per query allowed to run at once.
    permits: Arc<tokio::sync::Semaphore>,
    /// Set when the worker is in a fleet: queries are planned across it.
    fleet: std::sync::OnceLock<Arc<crate::distributed::FleetQueries>>,
}

impl Drop for ServiceInner {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a runtime's own thread must not do.
        let runtime = self
            .runtime
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

impl QueryService {
    /// An engine over `manager` with the catalog at `source` (a file or URL), or an empty one.
    pub fn start(
        manager: Arc<ChunkManager>,
        source: Option<&str>,
        options: &QueryOptions,
    ) -> anyhow::Result<Self> {
        let catalog = match source {
            None => Catalog::default(),
            Some(source) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("start a runtime")?;
                let catalog = runtime.block_on(load_catalog(source, None))?;
                tracing::info!(
                    catalog = source,
                    chunks = catalog.len(),
                    datasets = catalog.datasets().count(),
                    "catalog loaded"
                );
                catalog
            }
        };
        let threads = options
            .query_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("chunk-worker-query")
            .enable_all()
            .build()
            .context("start the query runtime")?;
        let mut config = QueryConfig::default()
            .with_target_partitions(threads)
            .with_remote_reads(!options.whole_chunks);
        if let Some(bytes) = options.query_memory {
            config = config.with_memory_limit(Some(usize::try_from(bytes).unwrap_or(usize::MAX)));
        }
        let engine = QueryEngine::with_config(manager, catalog, config)
            .context("set up the query engine")?;
        metrics::gauge!(QUERIES_RUNNING).set(0.0);
        metrics::gauge!(QUERIES_QUEUED).set(0.0);
        Ok(Self {
            inner: Arc::new(ServiceInner {
                engine: Arc::new(engine),
                runtime: std::sync::Mutex::new(Some(runtime)),
                timeout: options.query_timeout.unwrap_or(DEFAULT_QUERY_TIMEOUT),
                permits: Arc::new(tokio::sync::Semaphore::new(
                    options.max_queries.unwrap_or(DEFAULT_MAX_QUERIES).max(1),
                )),
                fleet: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Stops the query runtime: running queries are cancelled, and their threads get up to
    /// `grace` to finish, so that none reads chunk files once the manager lets the data
    /// directory go. Later queries are refused. Call it from outside any runtime.
    pub fn shutdown(&self, grace: Duration) {
        let runtime = self
            .inner
            .runtime
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_timeout(grace);
        }
    }

    pub(crate) fn engine(&self) -> &Arc<QueryEngine> {
        &self.inner.engine
    }

    /// The runtime queries run on, unless shut down.
    pub(crate) fn runtime(&self) -> Option<tokio::runtime::Handle> {
        let runtime = self
            .inner
            .runtime
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        runtime.as_ref().map(|runtime| runtime.handle().clone())
    }

    /// Plans the queries to come across the fleet.
    pub(crate) fn set_fleet(&self, fleet: crate::distributed::FleetQueries) {
        let _ = self.inner.fleet.set(Arc::new(fleet));
    }

    /// Starts a query on the query runtime; its progress comes through the receiver. Dropping
    /// the receiver (the client went away) stops the query. Call it on the HTTP server's
    /// runtime: the query's supervisor (timeout, cancellation) runs there, so it acts even
    /// while the query keeps every query thread busy.
    fn spawn(
        &self,
        dataset: DatasetId,
        blocks: Range<u64>,
        sql: String,
    ) -> Option<tokio::sync::mpsc::Receiver<Progress>> {
        let runtime = self
            .inner
            .runtime
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()?
            .handle()
            .clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let engine = self.inner.engine.clone();
        let fleet = self.inner.fleet.get().cloned();
        let permits = self.inner.permits.clone();
        let timeout = self.inner.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        tokio::spawn(async move {
            let permit = {
                let _queued = Counted::new(QUERIES_QUEUED);
                tokio::select! {
                    () = sender.closed() => {
                        metrics::counter!(QUERIES, "result" => "cancelled").increment(1);
                        return;
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        let failure = Failure::Timeout(timeout);
                        metrics::counter!(QUERIES, "result" => failure.code()).increment(1);
                        let _ = sender.send(Progress::Failed(failure)).await;
                        return;
                    }
                    permit = permits.acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // Closed: the service is going away.
                        Err(_closed) => return,
                    },
                }
            };
            let work = match fleet {
                Some(fleet) => runtime.spawn(execute_distributed(
                    fleet,
                    dataset,
                    blocks,
                    sql,
                    sender.clone(),
                    permit,
                )),
                None => runtime.spawn(execute(
                    engine,
                    dataset,
                    blocks,
                    sql,
                    sender.clone(),
                    permit,
                )),
            };
            supervise(work, deadline, timeout, sender).await;
        });
        Some(receiver)
    }
}

/// What a running query reports to its HTTP handler.
enum Progress {
    /// Chunks fetched and the plan made.
    Started {
        schema: chunk_query::arrow::datatypes::SchemaRef,
        chunks: usize,
        downloaded: usize,
        /// Chunks read remotely, with range requests.
        remote: usize,
        missing: String,
        /// Workers of the fleet found down and left out while the query was retried.
        lost: String,
    },
    /// A batch of the result.
    Batch(chunk_query::arrow::record_batch::RecordBatch),
    /// The query failed.
    Failed(Failure),
    /// Every batch was sent.
    Done,
}

/// Why a query stopped early.
#[derive(Debug)]
enum Failure {
    Query(QueryError),
    Timeout(Duration),
    /// Workers of the fleet stopped answering during a distributed query: the client may run
    /// it again (the message says why).
    WorkerLost(String),
}

impl Failure {
    fn code(&self) -> &'static str {
        match self {
            Failure::Query(failure) => failure.kind(),
            Failure::Timeout(_) => "query_timeout",
            Failure::WorkerLost(_) => "worker_lost",
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Query(failure) => user_message(&failure.to_string()),
            Failure::Timeout(timeout) => {
                format!("the query ran longer than {timeout:?} and was stopped (--query-timeout)")
            }
            Failure::WorkerLost(message) => message.clone(),
        }
    }

    fn response(&self) -> Response {
        match self {
            Failure::Query(failure) => query_error(failure),
            Failure::Timeout(_) | Failure::WorkerLost(_) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                self.code(),
                &self.message(),
            ),
        }
    }
}

/// Counts a query in a gauge ([`QUERIES_RUNNING`], [`QUERIES_QUEUED`]) while it lives.
struct Counted(&'static str);

impl Counted {
    fn new(gauge: &'static str) -> Self {
        metrics::gauge!(gauge).increment(1.0);
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// Runs one query on the query runtime, sending its progress. Aborting the task drops
/// DataFusion's stream, which stops its tasks and releases the chunks.
async fn execute(
    engine: Arc<QueryEngine>,
    dataset: DatasetId,
    blocks: Range<u64>,
    sql: String,
    sender: tokio::sync::mpsc::Sender<Progress>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), Failure> {
    // Both released when the query really stops (its task ends or is dropped).
    let _running = (Counted::new(QUERIES_RUNNING), permit);
    let mut stream = engine
        .query(&dataset, blocks, &sql)
        .await
        .map_err(Failure::Query)?;
    let used = stream.used_chunks();
    let started = Progress::Started {
        schema: stream.schema(),
        chunks: used.len(),
        downloaded: used.iter().filter(|chunk| chunk.fetched).count(),
        remote: used.iter().filter(|chunk| chunk.remote).count(),
        missing: stream
            .missing()
            .iter()
            .map(|range| format!("{}..{}", range.start, range.end))
            .collect::<Vec<_>>()
            .join(","),
        lost: String::new(),
    };
    if sender.send(started).await.is_err() {
        return Ok(());
    }
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(Failure::Query)?;
        if sender.send(Progress::Batch(batch)).await.is_err() {
            return Ok(());
        }
    }
    let _ = sender.send(Progress::Done).await;
    Ok(())
}

/// Runs one query across the fleet, as [`execute`] runs it on this worker.
async fn execute_distributed(
    fleet: Arc<crate::distributed::FleetQueries>,
    dataset: DatasetId,
    blocks: Range<u64>,
    sql: String,
    sender: tokio::sync::mpsc::Sender<Progress>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), Failure> {
    let _running = (Counted::new(QUERIES_RUNNING), permit);
    let distributed = fleet
        .query(&dataset, blocks, &sql)
        .await
        .map_err(distributed_failure)?;
    let started = Progress::Started {
        schema: distributed.stream.schema(),
        chunks: distributed.chunks.len(),
        // Chunks no live worker holds: read where the plan sends them, downloaded there.
        downloaded: distributed
            .chunks
            .iter()
            .filter(|chunk| chunk.holder.is_none())
            .count(),
        // Fleet scans read the chunks on the workers that hold them (or fetch them there).
        remote: 0,
        missing: distributed
            .missing
            .iter()
            .map(|range| format!("{}..{}", range.start, range.end))
            .collect::<Vec<_>>()
            .join(","),
        lost: distributed.lost.join(","),
    };
    if sender.send(started).await.is_err() {
        return Ok(());
    }
    let mut stream = distributed.stream;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|error| {
            if chunk_distributed::is_worker_lost(&error) {
                let message = match error.find_root() {
                    // The DistributedError's own message, without "External error: ".
                    chunk_query::datafusion::error::DataFusionError::External(lost) => {
                        lost.to_string()
                    }
                    root => root.to_string(),
                };
                Failure::WorkerLost(message)
            } else {
                Failure::Query(QueryError::Execution {
                    source: Box::new(error),
                })
            }
        })?;
        if sender.send(Progress::Batch(batch)).await.is_err() {
            return Ok(());
        }
    }
    let _ = sender.send(Progress::Done).await;
    Ok(())
}

/// A distributed query's failure: workers lost, or as the single-node engine's error kinds.
fn distributed_failure(error: chunk_distributed::DistributedError) -> Failure {
    if error.is_worker_lost() {
        return Failure::WorkerLost(error.to_string());
    }
    Failure::Query(distributed_error(error))
}

/// A distributed query's failure as the single-node engine's error kinds.
fn distributed_error(error: chunk_distributed::DistributedError) -> QueryError {
    match error {
        chunk_distributed::DistributedError::Query(error) => error,
        chunk_distributed::DistributedError::Execution(error) => QueryError::Execution {
            source: Box::new(error),
        },
        other => QueryError::Execution {
            source: Box::new(chunk_query::datafusion::error::DataFusionError::Execution(
                other.to_string(),
            )),
        },
    }
}

/// Watches a query: aborts it when its client goes away (the receiver is dropped) or when it
/// runs out of time, and reports its failure.
async fn supervise(
    mut work: tokio::task::JoinHandle<Result<(), Failure>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    sender: tokio::sync::mpsc::Sender<Progress>,
) {
    let outcome = tokio::select! {
        () = sender.closed() => {
            work.abort();
            // The client also goes away once it has read the whole answer, which may be
            // before this task sees the work end: only work that did not end was cancelled.
            match work.await {
                Ok(outcome) => outcome,
                Err(_cancelled) => {
                    metrics::counter!(QUERIES, "result" => "cancelled").increment(1);
                    tracing::info!("query cancelled: its client went away");
                    return;
                }
            }
        }
        () = tokio::time::sleep_until(deadline) => {
            work.abort();
            Err(Failure::Timeout(timeout))
        }
        joined = &mut work => match joined {
            Ok(outcome) => outcome,
            Err(stopped) => Err(Failure::Query(QueryError::Execution {
                source: Box::new(chunk_query::datafusion::error::DataFusionError::Execution(
                    format!("the query stopped: {stopped}"),
                )),
            })),
        },
    };
    let Err(failure) = outcome else {
        return;
    };
    metrics::counter!(QUERIES, "result" => failure.code()).increment(1);
    match &failure {
        Failure::Query(failure) if failure.is_bad_request() => {
            tracing::info!(error = %failure, "query refused");
        }
        failure => tracing::warn!(error = %failure.message(), "query failed"),
    }
    let _ = sender.send(Progress::Failed(failure)).await;
}

/// The body of `POST /query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The dataset, 64 hex digits.
    dataset: String,
    /// The blocks, `{"start": .., "end": ..}` (end excluded).
    blocks: Range<u64>,
    /// The SQL.
    sql: String,
    /// `json` (default), `ndjson` or `arrow`.
    #[serde(default)]
    format: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: ErrorDetail { code, message },
        }),
    )
        .into_response()
}

/// An error message as users should read it: the library's advice names the CLI flag.
fn user_message(message: &str) -> String {
    message.replace(
        "see Config::allow_file_urls",
        "allow them with --allow-file-urls true or CHUNK_WORKER_ALLOW_FILE_URLS=true",
    )
}

fn query_error(failure: &QueryError) -> Response {
    let status = match failure {
        QueryError::UnknownDataset { .. } | QueryError::NoChunks { .. } => StatusCode::NOT_FOUND,
        QueryError::Fetch { .. } => StatusCode::BAD_GATEWAY,
        QueryError::FetchTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        // The worker's disk budget cannot hold the query's chunks: answered at once.
        QueryError::TooLargeForBudget { .. } => StatusCode::INSUFFICIENT_STORAGE,
        failure if failure.is_bad_request() => StatusCode::BAD_REQUEST,
        failure if bad_chunk_data(failure) => {
            // A chunk file that is not valid Parquet: bad data from the catalog's origin, not
            // a fault of this worker.
            return error(
                StatusCode::BAD_GATEWAY,
                "bad_chunk_data",
                &format!("a chunk file is not valid Parquet: {failure}"),
            );
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, failure.kind(), &user_message(&failure.to_string()))
}

/// Whether the query failed because a chunk's file could not be read as Parquet.
fn bad_chunk_data(failure: &QueryError) -> bool {
    let QueryError::Execution { source } = failure else {
        return false;
    };
    matches!(
        source.find_root(),
        chunk_query::datafusion::error::DataFusionError::ParquetError(_)
    ) || matches!(
        source.find_root(),
        chunk_query::datafusion::error::DataFusionError::ArrowError(arrow_error, _)
            if matches!(**arrow_error, chunk_query::arrow::error::ArrowError::ParquetError(_))
    )
}

/// The line that ends a result whose query failed after its first rows were sent:
/// `{"error": {"code": ..., "message": ...}}` (for JSON after a newline, so the body, an
/// array left open, does not parse).
fn error_trailer(format: Format, failure: &Failure) -> BodyBytes {
    let message = failure.message();
    let body = ErrorBody {
        error: ErrorDetail {
            code: failure.code(),
            message: &message,
        },
    };
    let mut line = if format == Format::Json {
        b"\n".to_vec()
    } else {
        Vec::new()
    };
    // Serializing two strings cannot fail; an empty object would still not parse as rows.
    line.extend(serde_json::to_vec(&body).unwrap_or_default());
    line.push(b'\n');
    BodyBytes::from(line)
}

/// `POST /query`: runs a query and streams its result.
///
/// The query runs until its first batch before the response starts, so a query that fails
/// early gets an error status with a JSON error. A failure after that cannot change the
/// status any more (200 was sent): the body then ends with `{"error": {...}}` on a line of
/// its own (NDJSON: a last line; JSON: after the rows, the array left unclosed, so the body
/// does not parse), and an Arrow IPC stream ends without its end-of-stream marker, the
/// connection cut.
pub async fn post_query(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &rejection.body_text(),
            );
        }
    };
    let dataset = match id_from_hex(&request.dataset) {
        Ok(dataset) => dataset,
        Err(problem) => {
            let message = format!("dataset {:?} is not valid: {problem}", request.dataset);
            return error(StatusCode::BAD_REQUEST, "invalid_id", &message);
        }
    };
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains(Format::ArrowIpc.content_type()));
    let format = match request.format.as_deref() {
        Some(name) => match name.parse::<Format>() {
            Ok(Format::Table) | Err(_) => {
                let message = format!("format {name:?} is not json, ndjson or arrow");
                return error(StatusCode::BAD_REQUEST, "invalid_format", &message);
            }
            Ok(format) => format,
        },
        None if wants_arrow => Format::ArrowIpc,
        None => Format::Json,
    };
    let started = Instant::now();
    let Some(mut progress) = state
        .query
        .spawn(dataset, request.blocks.clone(), request.sql)
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the query runtime is stopping",
        );
    };
    let stopped = || {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "execution",
            "the query stopped unexpectedly",
        )
    };
    let (schema, chunks, downloaded, remote, missing, lost) = match progress.recv().await {
        Some(Progress::Started {
            schema,
            chunks,
            downloaded,
            remote,
            missing,
            lost,
        }) => (schema, chunks, downloaded, remote, missing, lost),
        Some(Progress::Failed(failure)) => return failure.response(),
        _ => return stopped(),
    };
    // Up to the first batch (or the end), failures still get their status.
    let first = match progress.recv().await {
        Some(Progress::Failed(failure)) => return failure.response(),
        Some(first @ (Progress::Batch(_) | Progress::Done)) => first,
        _ => return stopped(),
    };
    metrics::counter!(QUERIES, "result" => "started").increment(1);
    metrics::histogram!(QUERY_START).record(started.elapsed());
    let mut encoder = match Encoder::new(format, schema) {
        Ok(encoder) => encoder,
        Err(failure) => {
            let message = format!("cannot encode the result as {}: {failure}", format.name());
            return error(StatusCode::INTERNAL_SERVER_ERROR, "encoding", &message);
        }
    };
    let head = encoder.begin();
    let body = futures::stream::once(async move { head }).chain(futures::stream::unfold(
        (progress, Some(encoder), Some(first)),
        move |(mut progress, encoder, first)| async move {
            let mut encoder = encoder?;
            let next = match first {
                Some(first) => Some(first),
                None => progress.recv().await,
            };
            match next {
                Some(Progress::Batch(batch)) => {
                    let bytes = encoder.batch(&batch);
                    Some((bytes, (progress, Some(encoder), None)))
                }
                Some(Progress::Done) => Some((encoder.finish(), (progress, None, None))),
                Some(Progress::Failed(failure)) => {
                    tracing::warn!(error = %failure.message(), "query failed while streaming its result");
                    let end = match format {
                        // No end-of-stream marker, and the connection is cut.
                        Format::ArrowIpc => Err(stream_error(failure.message())),
                        _ => Ok(error_trailer(format, &failure)),
                    };
                    Some((end, (progress, None, None)))
                }
                Some(Progress::Started { .. }) | None => {
                    let failure = Failure::Query(QueryError::Execution {
                        source: Box::new(chunk_query::datafusion::error::DataFusionError::Execution(
                            "the query stopped unexpectedly".to_string(),
                        )),
                    });
                    let end = match format {
                        Format::ArrowIpc => Err(stream_error(failure.message())),
                        _ => Ok(error_trailer(format, &failure)),
                    };
                    Some((end, (progress, None, None)))
                }
            }
        },
    ));
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert("x-chunks-read", HeaderValue::from(chunks));
    headers.insert("x-chunks-downloaded", HeaderValue::from(downloaded));
    headers.insert("x-chunks-remote", HeaderValue::from(remote));
    if let Ok(missing) = HeaderValue::from_str(&missing)
        && !missing.is_empty()
    {
        headers.insert("x-blocks-missing", missing);
    }
    if let Ok(lost) = HeaderValue::from_str(&lost)
        && !lost.is_empty()
    {
        headers.insert("x-workers-lost", lost);
    }
    response
}

fn stream_error(message: String) -> chunk_query::arrow::error::ArrowError {
    chunk_query::arrow::error::ArrowError::ExternalError(message.into())
}

/// `GET /datasets/{dataset}/schema`: every table of the dataset, with its columns:
/// `{"tables": {"blocks": [{"name", "type", "nullable"}, ...], ...}}`.
pub async fn get_schema(
    State(state): State<AppState>,
    axum::extract::Path(dataset): axum::extract::Path<String>,
) -> Response {
    let catalog = state.query.engine().catalog();
    let dataset = match pick_dataset(&catalog, Some(&dataset)) {
        Ok(dataset) => dataset,
        Err(problem) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_dataset",
                &format!("{problem:#}"),
            );
        }
    };
    match state.query.engine().table_schemas(&dataset).await {
        Ok(schemas) => (StatusCode::OK, Json(schema_json(&schemas))).into_response(),
        Err(failure) => query_error(&failure),
    }
}

/// Tables and their columns as JSON.
fn schema_json(
    schemas: &std::collections::BTreeMap<String, chunk_query::arrow::datatypes::SchemaRef>,
) -> serde_json::Value {
    let tables: serde_json::Map<String, serde_json::Value> = schemas
        .iter()
        .map(|(table, schema)| {
            let columns = schema
                .fields()
                .iter()
                .map(|field| {
                    serde_json::json!({
                        "name": field.name(),
                        "type": field.data_type().to_string(),
                        "nullable": field.is_nullable(),
                    })
                })
                .collect();
            (table.clone(), serde_json::Value::Array(columns))
        })
        .collect();
    serde_json::json!({ "tables": tables })
}

/// `PUT /catalog`: replaces the catalog (the body is a list of chunk descriptions, or
/// `{"chunks": [...]}`). Running queries keep the one they started with.
pub async fn put_catalog(State(state): State<AppState>, body: BodyBytes) -> Response {
    match Catalog::from_json(&body, "the request body") {
        Ok(catalog) => {
            let summary = CatalogSummary {
                chunks: catalog.len(),
                datasets: catalog.datasets().count(),
            };
            tracing::info!(
                chunks = summary.chunks,
                datasets = summary.datasets,
                "catalog replaced"
            );
            state.query.engine().set_catalog(catalog);
            (StatusCode::OK, Json(summary)).into_response()
        }
        Err(failure) => error(
            StatusCode::BAD_REQUEST,
            "invalid_catalog",
            &failure.to_string(),
        ),
    }
}

/// `GET /catalog`: how many chunks and datasets the catalog lists.
pub async fn get_catalog(State(state): State<AppState>) -> Json<CatalogSummary> {
    let catalog = state.query.engine().catalog();
    Json(CatalogSummary {
        chunks: catalog.len(),
        datasets: catalog.datasets().count(),
    })
}

/// The catalog, in numbers.
#[derive(Debug, Serialize)]
pub struct CatalogSummary {
    chunks: usize,
    datasets: usize,
}

/// Queries started, and refused, failed or cancelled by kind.
const QUERIES: &str = "chunk_worker_queries_total";
/// Queries running now (from their turn until they end, fail or are cancelled).
const QUERIES_RUNNING: &str = "chunk_worker_queries_running";
/// Queries waiting for their turn (`--max-queries`).
const QUERIES_QUEUED: &str = "chunk_worker_queries_queued";
/// Seconds from a query's request to its first byte: fetching its chunks and planning.
const QUERY_START: &str = "chunk_worker_query_start_seconds";
