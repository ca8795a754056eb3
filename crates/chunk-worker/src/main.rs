//! `chunk-worker`: the chunk-manager worker binary. Wiring only; the logic lives in the
//! `chunk-manager` library.

mod demo;

use clap::{Parser, Subcommand};

/// The chunk-manager worker: keeps a worker node's assigned chunks on local disk.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a self-contained demo (the default): an in-process origin on 127.0.0.1 serves
    /// generated chunks while random downloads and deletes, with a few held refs, run against a
    /// small disk budget.
    Demo(demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli
        .command
        .unwrap_or(Command::Demo(demo::DemoArgs::default()))
    {
        Command::Demo(args) => demo::run(&args),
    }
}
