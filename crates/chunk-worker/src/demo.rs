//! The demo: the original one's random downloads and deletes with held refs, on an embedded
//! origin, printing every event.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chunk_manager::{Bytes, ChunkManager, ChunkRef, Config, DataChunk, Event, ShortId};
use chunk_origin::{Origin, content};

/// Options of `chunk-worker demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How many chunks the origin serves.
    #[arg(long, default_value_t = 12)]
    chunks: u8,
    /// The disk budget, in chunks' worth.
    #[arg(long, default_value_t = 4)]
    budget_chunks: u64,
    /// How many random calls to make.
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// Where to keep the data (default: a temporary directory removed at the end).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seed of the random calls.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            chunks: 12,
            budget_chunks: 4,
            steps: 60,
            data_dir: None,
            seed: 7,
        }
    }
}

/// Three files per chunk, like a blockchain chunk's blocks, transactions and logs.
const FILES: [(&str, usize); 3] = [
    ("blocks.parquet", 512 * 1024),
    ("transactions.parquet", 1536 * 1024),
    ("logs.parquet", 1024 * 1024),
];
const CHUNK_BYTES: u64 = 3 * 1024 * 1024;
const BLOCKS_PER_CHUNK: u64 = 1000;

pub fn run(args: &DemoArgs) -> anyhow::Result<std::process::ExitCode> {
    let started = Instant::now();
    let origin = Origin::start().context("start the demo origin")?;
    let dataset = [0xd5; 32];
    let chunks: Vec<DataChunk> = (0..args.chunks)
        .map(|n| {
            let files = FILES
                .iter()
                .map(|&(name, size)| {
                    let path = format!("chunk-{n}/{name}");
                    origin.insert(&path, content(u64::from(n) * 16 + size as u64, size));
                    (name.to_string(), origin.url(&path))
                })
                .collect();
            let start = u64::from(n) * BLOCKS_PER_CHUNK;
            let mut id = [0u8; 32];
            id[0] = n;
            id[1..9].copy_from_slice(&start.to_be_bytes());
            DataChunk::new(id, dataset, start..start + BLOCKS_PER_CHUNK, files)
        })
        .collect();

    let temporary = tempfile::tempdir().context("create a temporary data directory")?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let budget = args.budget_chunks * CHUNK_BYTES;
    say!(
        "chunk-manager demo: {} chunks of {} on {}, budget {} ({} chunks), data in {}",
        chunks.len(),
        Bytes(CHUNK_BYTES),
        origin.url(""),
        Bytes(budget),
        args.budget_chunks,
        data_dir.display()
    );
    let manager = ChunkManager::open(Config::new(&data_dir).with_disk_budget(budget))
        .with_context(|| format!("open the data directory {}", data_dir.display()))?;
    let mut events = manager.subscribe();
    let printer = std::thread::spawn(move || {
        while let Ok(event) = events.blocking_recv() {
            let last = matches!(event, Event::Shutdown);
            say!("{event}");
            if last {
                break;
            }
        }
    });

    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut held: Vec<(ChunkRef, usize)> = Vec::new();
    for step in 0..args.steps {
        let chunk = &chunks[rng.usize(..chunks.len())];
        if rng.u8(..10) < 6 {
            manager.download_chunk(chunk.clone());
        } else {
            manager.delete_chunk(*chunk.id());
        }
        // A query takes a ref on the chunk holding a random block and keeps it a few steps.
        if rng.u8(..4) == 0 {
            let block = rng.u64(..u64::from(args.chunks) * BLOCKS_PER_CHUNK);
            if let Some(found) = manager.find_chunk(dataset, block) {
                say!("🔎 query pins {} for block {block}", ShortId(found.id()));
                held.push((found, step + rng.usize(3..10)));
            }
        }
        held.retain(|(chunk, until)| {
            let keep = *until > step;
            if !keep {
                say!("🔓 query releases {}", ShortId(chunk.id()));
            }
            keep
        });
        std::thread::sleep(Duration::from_millis(rng.u64(40..120)));
    }
    for (chunk, _) in held.drain(..) {
        say!("🔓 query releases {}", ShortId(chunk.id()));
    }
    manager.wait_idle_blocking();
    let totals = manager.totals();
    say!(
        "📊 {} ready, {} waiting for space, {} failed; {} used of {}",
        totals.ready,
        totals.waiting_for_space,
        totals.failed,
        Bytes(totals.bytes_committed),
        Bytes(totals.disk_budget)
    );
    manager.shutdown_blocking();
    printer
        .join()
        .map_err(|_| anyhow::anyhow!("the event printer panicked"))?;
    say!(
        "done in {:.1} s: {} requests served by the origin",
        started.elapsed().as_secs_f64(),
        origin.total_requests()
    );
    Ok(std::process::ExitCode::SUCCESS)
}
