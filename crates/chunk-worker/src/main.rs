//! `chunk-worker`: the chunk-manager worker binary. Wiring only; the logic lives in the
//! `chunk-manager` library.

/// `println!` for the commands' output, without its panic when stdout is closed (piped to
/// `head`, say): the output is then dropped and the command goes on to its end, cleaning up
/// after itself (child processes, temporary directories) as usual.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _closed_stdout_is_not_an_error = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` as [`say!`] is `println!`.
macro_rules! say_inline {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _closed_stdout_is_not_an_error = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod api;
mod cluster;
mod cluster_bench;
mod cluster_demo;
mod demo;
mod distributed;
mod download;
mod local_fleet;
mod offline;
mod query;
mod remote;
mod schedule;
mod serve;
mod settings;
mod telemetry;

use std::io::IsTerminal as _;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc. Queries allocate and free many short-lived buffers
/// (decoded pages, Arrow arrays, codec contexts) from several threads; with glibc's allocator
/// `malloc`, `free` and `malloc_consolidate` were 12% of a small query's time (perf, release
/// build). DataFusion's own CLI and DuckDB (jemalloc) make the same choice.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// The chunk-manager worker: keeps a worker node's assigned chunks on local disk.
///
/// Every option can also be set by the environment variable shown, or in the TOML file given
/// by --config; a flag wins over the variable, the variable over the file.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the daemon: an HTTP API for the scheduler and operators, with metrics.
    Serve(Box<settings::ServeArgs>),
    /// Downloads the chunks listed in a JSON file into the data directory, with progress bars.
    Download(download::DownloadArgs),
    /// Lists the ready chunks of the data directory.
    Ls(offline::LsArgs),
    /// Shows one chunk's state and files.
    Status(offline::StatusArgs),
    /// Finds the ready chunk that holds a block.
    Find(offline::FindArgs),
    /// Deletes a chunk from the data directory.
    Rm(offline::RmArgs),
    /// Re-checks every ready chunk's files against its manifest.
    Verify(offline::DirArgs),
    /// Removes temporary data and unknown or corrupt directories.
    Gc(offline::DirArgs),
    /// Runs one SQL query over the blocks of a dataset, downloading only the chunks it needs.
    Query(query::QueryArgs),
    /// Shows the tables of a dataset and their columns (like DESCRIBE).
    Schema(query::SchemaArgs),
    /// Writes generated blockchain-like Parquet chunks and a catalog; --serve serves them.
    Synth(query::SynthArgs),
    /// Places the catalog's chunks on the fleet's live workers and publishes the assignment
    /// in the cluster store, every --interval (or --once).
    Schedule(schedule::ScheduleArgs),
    /// Operates a fleet: `cluster status`, `cluster demo`, `cluster bench`.
    #[command(subcommand)]
    Cluster(schedule::ClusterCommand),
    /// Runs a self-contained demo (the default): an in-process origin on 127.0.0.1 serves
    /// generated chunks while random downloads and deletes, with a few held refs, run against a
    /// small disk budget.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log_filter(&cli))),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; none in a log file or a pipe, nor with a
        // NO_COLOR that is set and not empty (no-color.org).
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
        )
        .init();
    let result = match cli
        .command
        .unwrap_or(Command::Demo(demo::DemoArgs::default()))
    {
        Command::Serve(args) => serve::run(&args),
        Command::Download(args) => download::run(&args),
        Command::Ls(args) => offline::ls(&args),
        Command::Status(args) => offline::status(&args),
        Command::Find(args) => offline::find(&args),
        Command::Rm(args) => offline::rm(&args),
        Command::Verify(args) => offline::verify(&args),
        Command::Gc(args) => offline::gc(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Query(args) => query::run(&args),
        Command::Synth(args) => query::synth(&args),
        Command::Schema(args) => query::schema(&args),
        Command::Schedule(args) => schedule::run(&args),
        Command::Cluster(command) => schedule::cluster(&command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon logs its work; `download` reports through its own progress display (a log
/// line would cut through the bars); the other commands log warnings.
fn default_log_filter(cli: &Cli) -> &'static str {
    match cli.command {
        Some(Command::Serve(_) | Command::Schedule(_)) => "info",
        Some(Command::Download(_)) => "error",
        _ => "warn",
    }
}
