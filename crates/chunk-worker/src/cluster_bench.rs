//! `chunk-worker cluster bench`: the demo's queries on fleets of 1, 2, 4... workers on this
//! machine (see [`crate::local_fleet`]), and on a single worker outside any fleet (the
//! single-node engine) as the baseline. Prints a markdown table: per query and setup, the
//! median and the fastest of the timed runs (wall time of `POST /query` on the first worker,
//! the whole body read), the bytes moved between workers per query and the chunks read locally
//! and downloaded per query.
//!
//! Bytes moved between workers: the sum over the fleet's workers of what their Flight services
//! wrote to and read from their connections (`chunk_distributed_flight_bytes_sent_total` +
//! `_received_total` in `GET /metrics`: Arrow results, plans, with the gRPC and HTTP/2
//! framing; the coordinator's calls to its own service included), scraped before and after a
//! query's timed runs, divided by the runs.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use chunk_distributed::flight::{BYTES_RECEIVED, BYTES_SENT};

use crate::cluster_demo::queries;
use crate::local_fleet::{FleetSpec, LocalFleet};

/// Options of `chunk-worker cluster bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterBenchArgs {
    /// The fleet sizes to measure, such as 1,2,4.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Timed runs of each query per setup (after one warm-up run); the median is shown.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// How many chunks the origin serves.
    #[arg(long, default_value_t = 16)]
    pub chunks: u64,
    /// Blocks per chunk.
    #[arg(long, default_value_t = 1000)]
    pub blocks_per_chunk: u64,
    /// Mean transactions per block of the generated data.
    #[arg(long, default_value_t = 50)]
    pub transactions_per_block: u32,
    /// `serve --query-threads` of every worker [default: the worker's, the number of CPUs].
    #[arg(long)]
    pub query_threads: Option<usize>,
}

/// The measures of one query on one setup.
struct Row {
    query: usize,
    setup: String,
    median: Duration,
    fastest: Duration,
    bytes: Option<f64>,
    read: String,
    downloaded: String,
}

/// Runs the benchmark (see the module docs).
pub fn run(args: &ClusterBenchArgs) -> anyhow::Result<ExitCode> {
    if args.runs == 0 || args.workers.contains(&0) {
        bail!("--runs and every --workers must be at least 1");
    }
    let args = args.clone();
    crate::local_fleet::run_until_signal(async move { bench(&args).await })?;
    Ok(ExitCode::SUCCESS)
}

async fn bench(args: &ClusterBenchArgs) -> anyhow::Result<()> {
    let base = FleetSpec {
        workers: 1,
        chunks: args.chunks,
        blocks_per_chunk: args.blocks_per_chunk,
        transactions_per_block: args.transactions_per_block,
        query_threads: args.query_threads,
        standalone: false,
    };
    let queries = queries(&base.blocks(), base.blocks_per_chunk);
    let mut setups = vec![FleetSpec {
        standalone: true,
        ..base.clone()
    }];
    for &workers in &args.workers {
        setups.push(FleetSpec {
            workers,
            ..base.clone()
        });
    }
    let mut rows = Vec::new();
    let mut expected: Vec<serde_json::Value> = Vec::new();
    let mut data_bytes = 0;
    for spec in &setups {
        let setup = if spec.standalone {
            "single node".to_string()
        } else {
            format!(
                "{} worker{} (R = {})",
                spec.workers,
                if spec.workers == 1 { "" } else { "s" },
                spec.replication()
            )
        };
        eprintln!("{setup}: starting");
        let fleet = LocalFleet::start(spec.clone()).await?;
        data_bytes = fleet.data_bytes();
        let measured = measure(&fleet, spec, &setup, &queries, args.runs, &mut expected).await;
        let measured = measured.map_err(|error| fleet.explain_failure(error))?;
        rows.extend(measured);
        drop(fleet);
    }
    say_inline!(
        "{}",
        table(
            args,
            &queries,
            &rows,
            data_bytes,
            std::env::current_exe().ok()
        )
    );
    Ok(())
}

/// Times every query on one setup; checks its answers against the first setup's.
async fn measure(
    fleet: &LocalFleet,
    spec: &FleetSpec,
    setup: &str,
    queries: &[(std::ops::Range<u64>, &'static str)],
    runs: usize,
    expected: &mut Vec<serde_json::Value>,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (index, (blocks, sql)) in queries.iter().enumerate() {
        // The warm-up: the single node downloads its chunks here.
        let warm = fleet.query(0, blocks.clone(), sql).await?;
        match expected.get(index) {
            Some(rows) if *rows != warm.rows => {
                bail!(
                    "query {} answers differently on {setup}: {} instead of {rows}",
                    index + 1,
                    warm.rows
                );
            }
            Some(_) => {}
            None => expected.push(warm.rows.clone()),
        }
        let before = fleet.metric_sum(&[BYTES_SENT, BYTES_RECEIVED]).await?;
        let mut times = Vec::new();
        let mut last = warm;
        for _ in 0..runs {
            last = fleet.query(0, blocks.clone(), sql).await?;
            times.push(last.elapsed);
        }
        let after = fleet.metric_sum(&[BYTES_SENT, BYTES_RECEIVED]).await?;
        times.sort_unstable();
        rows.push(Row {
            query: index,
            setup: setup.to_string(),
            median: times[times.len() / 2],
            fastest: times[0],
            bytes: (!spec.standalone).then(|| (after - before) / runs as f64),
            read: last.header("x-chunks-read").unwrap_or("?").to_string(),
            downloaded: last
                .header("x-chunks-downloaded")
                .unwrap_or("?")
                .to_string(),
        });
    }
    Ok(rows)
}

fn table(
    args: &ClusterBenchArgs,
    queries: &[(std::ops::Range<u64>, &'static str)],
    rows: &[Row],
    data_bytes: u64,
    binary: Option<std::path::PathBuf>,
) -> String {
    let mut text = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(
        text,
        "{} chunks of {} blocks ({} transactions per block on average, {:.1} MB of Parquet), {} timed runs per query after a warm-up, {cpus} CPU(s), every worker on this machine; binary {}\n",
        args.chunks,
        args.blocks_per_chunk,
        args.transactions_per_block,
        data_bytes as f64 / 1e6,
        args.runs,
        binary.map_or_else(|| "?".to_string(), |path| path.display().to_string()),
    );
    for (index, (blocks, sql)) in queries.iter().enumerate() {
        let _ = writeln!(
            text,
            "- q{}: `{sql}` over blocks {}..{}",
            index + 1,
            blocks.start,
            blocks.end
        );
    }
    let _ = writeln!(
        text,
        "\n| query | setup | median ms | fastest ms | bytes between workers | chunks read locally | downloaded |"
    );
    let _ = writeln!(text, "|---|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let local = match (row.read.parse::<u64>(), row.downloaded.parse::<u64>()) {
            (Ok(read), Ok(downloaded)) => read.saturating_sub(downloaded).to_string(),
            _ => "?".to_string(),
        };
        let bytes = row
            .bytes
            .map_or_else(|| "-".to_string(), |bytes| format!("{bytes:.0}"));
        let _ = writeln!(
            text,
            "| q{} | {} | {:.1} | {:.1} | {bytes} | {local} | {} |",
            row.query + 1,
            row.setup,
            row.median.as_secs_f64() * 1e3,
            row.fastest.as_secs_f64() * 1e3,
            row.downloaded,
        );
    }
    text
}
