//! Query benchmark: a query over a block range that spans N chunks, through the worker cold
//! (chunks downloaded whole on demand into an empty data directory), warm (chunks on disk)
//! and remote cold (chunks not held, their files read with range requests: only the
//! footers, columns and pages the query needs), against DataFusion reading the same Parquet
//! files directly from the origin over HTTP. The bytes fetched are the origin's counts.
//!
//! ```sh
//! cargo bench -p chunk-query --bench query                      # N = 1, 4, 16
//! cargo bench -p chunk-query --bench query -- --chunks 1,8 --reps 5
//! ```
//!
//! The origin is the in-process one on 127.0.0.1 (`chunk-origin`), serving generated chunks
//! from memory: 1,000 blocks of about 150 transactions each, with their logs. Each figure is
//! the median of `--reps` runs; a cold run opens a new manager on an empty directory
//! (downloads are fsynced, as in production); an HTTP run uses a new DataFusion session, so
//! nothing is cached between runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chunk_manager::{ChunkManager, Config, DatasetId};
use chunk_origin::Origin;
use chunk_query::arrow::record_batch::RecordBatch;
use chunk_query::datafusion::prelude::{
    ParquetReadOptions, SessionConfig, SessionContext, ident, lit,
};
use chunk_query::synth::{FILE_NAMES, Synth, SynthChunk, SynthConfig};
use chunk_query::{Catalog, QueryConfig, QueryEngine};
use object_store::ClientOptions;
use object_store::http::HttpBuilder;

const DATASET: DatasetId = [0xbe; 32];
const BLOCKS_PER_CHUNK: u64 = 1000;

const QUERIES: [(&str, &str); 4] = [
    (
        "blocks: count, sum",
        "SELECT count(*) AS blocks, sum(gas_used) AS gas FROM blocks",
    ),
    (
        "transactions: one column",
        "SELECT sum(gas) AS gas FROM transactions",
    ),
    (
        "transactions: top receivers",
        "SELECT \"to\", count(*) AS calls, sum(value) AS value FROM transactions \
         GROUP BY \"to\" ORDER BY calls DESC LIMIT 10",
    ),
    (
        "logs: one contract's events",
        "SELECT topic0, count(*) AS n FROM logs \
         WHERE address = '0xf02814e3ed5e531e3267f1279ef6d4bf09e3aaa9' \
         GROUP BY topic0 ORDER BY n DESC",
    ),
];

struct Args {
    chunks: Vec<u64>,
    reps: usize,
}

fn args() -> Args {
    let mut parsed = Args {
        chunks: vec![1, 4, 16],
        reps: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--chunks" => {
                parsed.chunks = args
                    .next()
                    .expect("--chunks N,N,...")
                    .split(',')
                    .map(|n| n.parse().expect("a number of chunks"))
                    .collect();
            }
            "--reps" => parsed.reps = args.next().expect("--reps N").parse().expect("a number"),
            // `cargo bench` passes --bench; anything else is a filter this binary ignores.
            _ => {}
        }
    }
    parsed
}

fn main() {
    let args = args();
    let most = args.chunks.iter().copied().max().unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let origin = Origin::start().unwrap();
    let synth = Synth::new(SynthConfig::default());
    let generating = Instant::now();
    let chunks: Vec<SynthChunk> = (0..most)
        .map(|n| {
            let start = n * BLOCKS_PER_CHUNK;
            synth
                .chunk(&DATASET, start..start + BLOCKS_PER_CHUNK)
                .unwrap()
        })
        .collect();
    for chunk in &chunks {
        for (name, bytes) in &chunk.files {
            origin.insert(&chunk.path(name), bytes.clone());
        }
    }
    let catalog = Catalog::new(
        chunks
            .iter()
            .map(|chunk| chunk.describe(&DATASET, |path| origin.url(path))),
    )
    .unwrap()
    // As `chunk-worker synth` writes it: queries plan before reading anything.
    .with_schemas(DATASET, chunk_query::synth::schemas());
    let size = chunks[0].size();
    eprintln!(
        "generated {most} chunks of {BLOCKS_PER_CHUNK} blocks in {:.1} s; a chunk is {:.1} MiB \
         ({} transactions)",
        generating.elapsed().as_secs_f64(),
        size as f64 / (1 << 20) as f64,
        synth
            .tables(0..BLOCKS_PER_CHUNK)
            .unwrap()
            .transactions
            .num_rows()
    );

    println!(
        "| query | chunks | MiB | worker cold | worker warm | worker remote cold | \
         DataFusion over HTTP | MiB fetched cold / remote cold / HTTP | rows |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &n in &args.chunks {
        let blocks = 0..n * BLOCKS_PER_CHUNK;
        let mib = chunks[..n as usize]
            .iter()
            .map(SynthChunk::size)
            .sum::<u64>() as f64
            / (1 << 20) as f64;
        for (name, sql) in QUERIES {
            let mut cold = Vec::new();
            let mut warm = Vec::new();
            let mut http = Vec::new();
            let mut remote = Vec::new();
            let mut rows = 0;
            let (mut fetched_cold, mut fetched_remote, mut fetched_http) = (0, 0, 0);
            for _ in 0..args.reps {
                let dir = tempfile::tempdir().unwrap();
                let manager = Arc::new(ChunkManager::open(Config::new(dir.path())).unwrap());
                let whole = QueryConfig::default().with_remote_reads(false);
                let engine =
                    QueryEngine::with_config(manager.clone(), catalog.clone(), whole).unwrap();
                let served = origin.bytes_served();
                let (took, answer) = runtime.block_on(timed(async {
                    let stream = engine.query(&DATASET, blocks.clone(), sql).await.unwrap();
                    assert!(stream.used_chunks().iter().all(|chunk| chunk.fetched));
                    stream.collect().await.unwrap()
                }));
                cold.push(took);
                fetched_cold = origin.bytes_served() - served;
                rows = count(&answer);
                for _ in 0..2 {
                    let (took, again) = runtime.block_on(timed(async {
                        let stream = engine.query(&DATASET, blocks.clone(), sql).await.unwrap();
                        assert!(stream.used_chunks().iter().all(|chunk| !chunk.fetched));
                        stream.collect().await.unwrap()
                    }));
                    assert_eq!(count(&again), rows);
                    warm.push(took);
                }
                drop(engine);
                manager.shutdown_blocking();

                let dir = tempfile::tempdir().unwrap();
                let manager = Arc::new(ChunkManager::open(Config::new(dir.path())).unwrap());
                let engine = QueryEngine::new(manager.clone(), catalog.clone()).unwrap();
                let served = origin.bytes_served();
                let (took, answer) = runtime.block_on(timed(async {
                    let stream = engine.query(&DATASET, blocks.clone(), sql).await.unwrap();
                    assert!(stream.used_chunks().iter().all(|chunk| chunk.remote));
                    stream.collect().await.unwrap()
                }));
                assert_eq!(count(&answer), rows, "the same answer");
                remote.push(took);
                fetched_remote = origin.bytes_served() - served;
                drop(engine);
                manager.shutdown_blocking();

                let served = origin.bytes_served();
                let (took, direct) = runtime.block_on(timed(over_http(
                    &origin,
                    &chunks[..n as usize],
                    &blocks,
                    sql,
                )));
                assert_eq!(count(&direct), rows, "the same answer");
                http.push(took);
                fetched_http = origin.bytes_served() - served;
            }
            println!(
                "| {name} | {n} | {mib:.0} | {} | {} | {} | {} | {:.0} / {:.2} / {:.2} | {rows} |",
                ms(&mut cold),
                ms(&mut warm),
                ms(&mut remote),
                ms(&mut http),
                fetched_cold as f64 / (1 << 20) as f64,
                fetched_remote as f64 / (1 << 20) as f64,
                fetched_http as f64 / (1 << 20) as f64,
            );
        }
    }
    println!();
    println!(
        "reproduce: cargo bench -p chunk-query --bench query -- --chunks {} --reps {}",
        args.chunks
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.reps
    );
}

/// DataFusion alone: the covering chunks' files read from the origin over HTTP, each table
/// restricted to the blocks as the worker does.
async fn over_http(
    origin: &Origin,
    chunks: &[SynthChunk],
    blocks: &std::ops::Range<u64>,
    sql: &str,
) -> Vec<RecordBatch> {
    let base = origin.url("");
    let store = HttpBuilder::new()
        .with_url(base.clone())
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()
        .unwrap();
    let context = SessionContext::new_with_config(SessionConfig::new());
    context.register_object_store(&base.parse().unwrap(), Arc::new(store));
    for name in FILE_NAMES {
        let urls: Vec<String> = chunks
            .iter()
            .map(|chunk| origin.url(&chunk.path(name)))
            .collect();
        let frame = context
            .read_parquet(urls, ParquetReadOptions::default())
            .await
            .unwrap()
            .filter(
                ident("block_number")
                    .gt_eq(lit(blocks.start))
                    .and(ident("block_number").lt(lit(blocks.end))),
            )
            .unwrap();
        context
            .register_table(name.trim_end_matches(".parquet"), frame.into_view())
            .unwrap();
    }
    context.sql(sql).await.unwrap().collect().await.unwrap()
}

async fn timed<T>(work: impl Future<Output = T>) -> (Duration, T) {
    let started = Instant::now();
    let value = work.await;
    (started.elapsed(), value)
}

fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// The median, in milliseconds.
fn ms(samples: &mut [Duration]) -> String {
    samples.sort();
    let median = samples[samples.len() / 2];
    format!("{:.0} ms", median.as_secs_f64() * 1000.0)
}
