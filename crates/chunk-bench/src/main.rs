//! The benchmark driver of chunk-manager; `bench/run.sh` runs it end to end (see
//! BENCHMARKS.md). Each command prints a human report and, with `--json FILE`, appends its
//! figures as one JSON line.

#[path = "../../chunk-manager/benches/support/fixture.rs"]
mod fixture;

mod admission;
mod compare;
mod download;
mod files;
mod latency;
mod probe;
mod proc;
mod reconcile;
mod startup;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks of chunk-manager (driven by bench/run.sh)")]
struct Cli {
    /// Append the command's figures, as one JSON line, to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The throughput file set.
#[derive(Args, Clone)]
struct ShapeArgs {
    /// Seed of the file sizes and contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Chunks in the set (3 files each).
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// The smallest file, in MB.
    #[arg(long, default_value_t = 8)]
    min_mb: u64,
    /// The largest file, in MB.
    #[arg(long, default_value_t = 64)]
    max_mb: u64,
}

impl ShapeArgs {
    fn shape(&self) -> files::Shape {
        files::Shape {
            seed: self.seed,
            chunks: self.chunks,
            min_mb: self.min_mb,
            max_mb: self.max_mb.max(self.min_mb),
        }
    }

    fn to_args(&self) -> Vec<String> {
        [
            ("--seed", self.seed.to_string()),
            ("--chunks", self.chunks.to_string()),
            ("--min-mb", self.min_mb.to_string()),
            ("--max-mb", self.max_mb.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Prints a free TCP port on 127.0.0.1.
    FreePort,
    /// Writes the throughput file set (kept if already there).
    Files {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        shape: ShapeArgs,
    },
    /// Compares chunk-manager, aria2c and curl on the file set served at --url (throughput,
    /// API latency during the downloads, peak memory).
    Compare {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Where the origin serves the file set.
        #[arg(long)]
        url: String,
        /// Where the downloads go (on the disk under test).
        #[arg(long)]
        work_dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Pause between two rounds of API calls during the chunk-manager runs, in µs.
        #[arg(long, default_value_t = 100)]
        probe_us: u64,
    },
    /// One chunk-manager download of the file set (run by `compare` in a fresh process).
    Download {
        #[command(flatten)]
        shape: ShapeArgs,
        #[arg(long)]
        url: String,
        #[arg(long)]
        data_dir: PathBuf,
        /// `on` or `off`.
        #[arg(long, default_value = "on")]
        fsync: String,
        /// Call the API from another thread meanwhile, pausing this many µs between rounds.
        #[arg(long)]
        probe_us: Option<u64>,
        /// Only these chunks of the set (comma-separated positions).
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<usize>>,
    },
    /// Fills a data directory with small ready chunks through the public API.
    Populate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 5000)]
        chunks: usize,
        #[arg(long, default_value_t = 10)]
        datasets: usize,
        /// Bytes per file.
        #[arg(long, default_value_t = 64)]
        file_size: usize,
    },
    /// Times `open` on a populated data directory and reads the idle memory.
    Startup {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 5000)]
        chunks: usize,
        #[arg(long, default_value_t = 7)]
        repeat: usize,
        /// Drop the kernel's caches before the first open (root; affects the whole machine).
        #[arg(long)]
        cold: bool,
    },
    /// Random download/delete calls; time to quiescence, cancellation, wasted bytes.
    Reconcile {
        /// Where the data directory goes (on the disk under test).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 500)]
        chunks: usize,
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        /// Size of each of a chunk's 3 files, in KiB.
        #[arg(long, default_value_t = 1024)]
        file_kib: usize,
        /// The longest pause between two calls, in µs (uniformly random from 0).
        #[arg(long, default_value_t = 2000)]
        max_gap_us: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Throttle the origin: pause this many ms between pieces of a file (0: no throttle).
        #[arg(long, default_value_t = 0)]
        origin_delay_ms: u64,
        /// The pieces of a throttled file, in KiB.
        #[arg(long, default_value_t = 32)]
        origin_piece_kib: usize,
    },
    /// Admission with an assignment far larger than the budget (API latency while it re-runs),
    /// and lookups while the visible set changes.
    Admission {
        /// Where the data directories go.
        #[arg(long)]
        dir: PathBuf,
        /// Chunks that fill the budget (fetched for queries and pinned).
        #[arg(long, default_value_t = 100)]
        budget_chunks: usize,
        /// Assigned chunks waiting for room.
        #[arg(long, default_value_t = 5000)]
        queued: usize,
        /// Seconds each phase is measured.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Deletes downloads mid-transfer, one at a time, and times until each is forgotten.
    Cancel {
        /// Where the data directory goes (on the disk under test).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        count: usize,
        /// Size of each of a chunk's 3 files, in KiB.
        #[arg(long, default_value_t = 4096)]
        file_kib: usize,
        /// Pause between pieces of a file at the origin, in ms.
        #[arg(long, default_value_t = 2)]
        origin_delay_ms: u64,
        /// The pieces, in KiB.
        #[arg(long, default_value_t = 32)]
        origin_piece_kib: usize,
        /// Leave the disk idle (by default another thread writes and fsyncs meanwhile).
        #[arg(long)]
        no_disk_load: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let figures = match &cli.command {
        Command::FreePort => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
            return Ok(());
        }
        Command::Files { dir, shape } => {
            let plan = files::plan(shape.shape());
            let bytes = files::generate(dir, &plan, shape.seed)?;
            println!(
                "{} files, {:.0} MB, in {}",
                plan.len() * fixture::FILE_NAMES.len(),
                bytes as f64 / files::MB as f64,
                dir.display()
            );
            serde_json::json!({"files": plan.len() * 3, "bytes": bytes})
        }
        Command::Compare {
            shape,
            url,
            work_dir,
            rounds,
            probe_us,
        } => {
            let plan = files::plan(shape.shape());
            compare::run(compare::Compare {
                chunks: &plan,
                shape_args: shape.to_args(),
                base_url: url,
                work_dir,
                rounds: (*rounds).max(1),
                probe_pace: Duration::from_micros(*probe_us),
            })?
        }
        Command::Download {
            shape,
            url,
            data_dir,
            fsync,
            probe_us,
            only,
        } => {
            let plan: Vec<_> = files::plan(shape.shape())
                .into_iter()
                .filter(|chunk| only.as_ref().is_none_or(|only| only.contains(&chunk.index)))
                .collect();
            let figures = download::run(download::Run {
                chunks: &plan,
                base_url: url,
                data_dir,
                fsync: fsync != "off",
                probe: probe_us.map(Duration::from_micros),
            })?;
            // The last line of stdout is what `compare` reads.
            println!("{figures}");
            return append_json(cli.json.as_deref(), &figures);
        }
        Command::Populate {
            dir,
            chunks,
            datasets,
            file_size,
        } => {
            let start = std::time::Instant::now();
            fixture::populate(dir, *chunks, *datasets, *file_size)
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            println!(
                "populated {} with {chunks} chunks over {datasets} datasets in {:.1?}",
                dir.display(),
                start.elapsed()
            );
            serde_json::json!({"populated": chunks})
        }
        Command::Startup {
            dir,
            chunks,
            repeat,
            cold,
        } => startup::run(startup::Startup {
            dir,
            chunks: *chunks,
            repeat: *repeat,
            cold: *cold,
        })?,
        Command::Reconcile {
            dir,
            chunks,
            calls,
            file_kib,
            max_gap_us,
            seed,
            origin_delay_ms,
            origin_piece_kib,
        } => reconcile::run(reconcile::Reconcile {
            dir,
            chunks: *chunks,
            calls: *calls,
            file_kib: *file_kib,
            max_gap: Duration::from_micros(*max_gap_us),
            seed: *seed,
            origin_piece: origin_piece_kib * 1024,
            origin_delay: Duration::from_millis(*origin_delay_ms),
        })?,
        Command::Admission {
            dir,
            budget_chunks,
            queued,
            seconds,
        } => admission::run(admission::Admission {
            dir,
            budget_chunks: *budget_chunks,
            queued: *queued,
            seconds: *seconds,
        })?,
        Command::Cancel {
            dir,
            count,
            file_kib,
            origin_delay_ms,
            origin_piece_kib,
            no_disk_load,
        } => reconcile::cancel(reconcile::Cancel {
            dir,
            count: *count,
            file_kib: *file_kib,
            origin_piece: origin_piece_kib * 1024,
            origin_delay: Duration::from_millis(*origin_delay_ms),
            disk_load: !no_disk_load,
        })?,
    };
    append_json(cli.json.as_deref(), &figures)
}

fn append_json(path: Option<&Path>, figures: &serde_json::Value) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    writeln!(file, "{figures}").with_context(|| format!("write {}", path.display()))
}
