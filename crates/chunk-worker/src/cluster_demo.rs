//! `chunk-worker cluster demo`: a fleet on 127.0.0.1 in one process tree (an in-process origin
//! with synthetic chunks, a `file://` cluster store in a temporary directory, a scheduler and
//! three workers as child processes of this binary), a few queries through one worker's
//! `POST /query` with which worker read which chunks, one worker killed with SIGKILL and the
//! same queries answered again. Everything is stopped and removed at the end, on an error and
//! on Ctrl-C (SIGINT) or SIGTERM.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;

use crate::local_fleet::{ChunkRead, FleetSpec, LocalFleet};

/// Options of `chunk-worker cluster demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterDemoArgs {
    /// How many chunks the origin serves.
    #[arg(long, default_value_t = 8)]
    pub chunks: u64,
    /// Blocks per chunk.
    #[arg(long, default_value_t = 500)]
    pub blocks_per_chunk: u64,
    /// Mean transactions per block of the generated data.
    #[arg(long, default_value_t = 20)]
    pub transactions_per_block: u32,
}

/// The demo's queries over `blocks` (all of the chunks' blocks): an aggregate, a GROUP BY
/// over a range starting and ending mid-chunk, a join across tables, ORDER BY LIMIT.
pub fn queries(blocks: &Range<u64>, blocks_per_chunk: u64) -> Vec<(Range<u64>, &'static str)> {
    let half = blocks_per_chunk / 2;
    let inner = blocks.start + half..blocks.end.saturating_sub(half).max(blocks.start + half);
    vec![
        (
            blocks.clone(),
            "SELECT count(*) AS blocks, sum(gas_used) AS gas FROM blocks",
        ),
        (
            inner,
            "SELECT block_number % 4 AS k, count(*) AS txs FROM transactions GROUP BY block_number % 4 ORDER BY k",
        ),
        (
            blocks.clone(),
            "SELECT b.block_number, count(*) AS txs FROM blocks b JOIN transactions t ON t.block_number = b.block_number GROUP BY b.block_number ORDER BY txs DESC, b.block_number LIMIT 3",
        ),
        (
            blocks.clone(),
            "SELECT block_number, gas_used FROM blocks ORDER BY gas_used DESC, block_number LIMIT 3",
        ),
    ]
}

/// Runs the demo (see the module docs).
pub fn run(args: &ClusterDemoArgs) -> anyhow::Result<ExitCode> {
    let args = args.clone();
    crate::local_fleet::run_until_signal(async move { demo(&args).await })?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: &ClusterDemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let spec = FleetSpec {
        workers: 3,
        chunks: args.chunks,
        blocks_per_chunk: args.blocks_per_chunk,
        transactions_per_block: args.transactions_per_block,
        query_threads: Some(1),
        standalone: false,
    };
    say!(
        "cluster demo: {} chunks of {} blocks, 3 workers and a scheduler on 127.0.0.1, R = 2",
        spec.chunks,
        spec.blocks_per_chunk
    );
    let mut fleet = LocalFleet::start(spec.clone()).await?;
    let result = scenario(&mut fleet, &spec, started).await;
    let dir = fleet.dir().to_path_buf();
    let result = result.map_err(|error| fleet.explain_failure(error));
    drop(fleet);
    say!(
        "stopped: workers and scheduler killed and reaped, {} removed",
        dir.display()
    );
    result
}

async fn scenario(
    fleet: &mut LocalFleet,
    spec: &FleetSpec,
    started: Instant,
) -> anyhow::Result<()> {
    say!("origin: {}", fleet.origin.url(""));
    say!("data and cluster store: {}", fleet.dir().display());
    for worker in &fleet.workers {
        say!("worker {}: {}", worker.id, worker.url);
    }
    say!(
        "placement applied: every chunk ready on 2 workers ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let coordinator = 0;
    say!(
        "\nqueries through {}'s POST /query:",
        fleet.workers[coordinator].id
    );
    let queries = queries(&spec.blocks(), spec.blocks_per_chunk);
    let mut answers = Vec::new();
    let mut readers_of_first = Vec::new();
    for (index, (blocks, sql)) in queries.iter().enumerate() {
        say!(
            "\n[{}] {sql}  (blocks {}..{})",
            index + 1,
            blocks.start,
            blocks.end
        );
        let reads = fleet.readers(coordinator, blocks.clone(), sql).await?;
        say_inline!("{}", describe_reads(&reads));
        if index == 0 {
            readers_of_first = reads;
        }
        let answer = fleet.query(coordinator, blocks.clone(), sql).await?;
        say!(
            "  {} ms, {} chunk(s) read, {} downloaded",
            answer.elapsed.as_millis(),
            answer.header("x-chunks-read").unwrap_or("?"),
            answer.header("x-chunks-downloaded").unwrap_or("?"),
        );
        say!("  rows: {}", answer.rows);
        answers.push(answer.rows);
    }

    // The victim: a worker other than the coordinator that reads chunks.
    let coordinator_id = fleet.workers[coordinator].id.clone();
    let victim = fleet
        .workers
        .iter()
        .position(|worker| {
            worker.id != coordinator_id && readers_of_first.iter().any(|r| r.worker == worker.id)
        })
        .unwrap_or(1);
    let victim_id = fleet.workers[victim].id.clone();
    fleet.kill(victim)?;
    say!("\nkill -9 {victim_id}; the same queries at once:");
    for (index, ((blocks, sql), before)) in queries.iter().zip(&answers).enumerate() {
        let answer = fleet.query(coordinator, blocks.clone(), sql).await?;
        let same = &answer.rows == before;
        say!("\n[{}] {sql}", index + 1);
        say!(
            "  {} ms, {} chunk(s) read, {} downloaded, x-workers-lost: {}",
            answer.elapsed.as_millis(),
            answer.header("x-chunks-read").unwrap_or("?"),
            answer.header("x-chunks-downloaded").unwrap_or("?"),
            answer.header("x-workers-lost").unwrap_or("-"),
        );
        let reads = fleet.readers(coordinator, blocks.clone(), sql).await?;
        say_inline!("{}", describe_reads(&reads));
        say!("  rows: {}", answer.rows);
        say!(
            "  same rows as before the kill: {}",
            if same { "yes" } else { "NO" }
        );
        if !same {
            bail!("query {} answered differently after the kill", index + 1);
        }
    }
    say!(
        "\nall {} queries answered alike with {victim_id} dead ({:.1} s in all)",
        queries.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `  w1 reads blocks 0..500 1000..1500; transactions 0..500`, one line per worker.
fn describe_reads(reads: &[ChunkRead]) -> String {
    let mut by_worker: BTreeMap<&str, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
    for read in reads {
        let mut range = read.blocks.clone();
        if read.download {
            range.push_str(" (downloaded)");
        }
        by_worker
            .entry(&read.worker)
            .or_default()
            .entry(&read.table)
            .or_default()
            .push(range);
    }
    let mut text = String::new();
    for (worker, tables) in by_worker {
        let tables: Vec<String> = tables
            .into_iter()
            .map(|(table, ranges)| format!("{table} {}", ranges.join(" ")))
            .collect();
        let _ = writeln!(text, "  {worker} reads {}", tables.join("; "));
    }
    text
}
