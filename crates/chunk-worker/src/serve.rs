//! `chunk-worker serve`: the daemon.
//!
//! # Overview
//!
//! Resolves the settings, installs the metrics recorder, opens the manager (which takes the
//! data directory's lock and rebuilds its state from disk), then serves the API until SIGINT or
//! SIGTERM. It prints `listening on http://ADDR` on stdout once the socket is bound, so a
//! supervisor or a test that asked for port 0 learns the port.
//!
//! # Cancellation
//!
//! A signal cancels the shutdown token: the server stops accepting and lets in-flight requests
//! finish while the manager shuts down (downloads cancelled, temporary data removed, jobs
//! joined); event streams end after the manager's shutdown event. The lock is released when
//! the manager drops. Exit code 0.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chunk_manager::ChunkManager;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::settings::ServeArgs;
use crate::telemetry;

/// Runs the daemon until a signal asks it to stop.
pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = args.resolve()?;
    let metrics = telemetry::install()?;
    let data_dir = settings.config.data_dir.clone();
    let manager = ChunkManager::open(settings.config.clone())
        .with_context(|| format!("open the data directory {}", data_dir.display()))?;
    log_startup(&manager);
    let manager = Arc::new(manager);
    let query = crate::query::QueryService::start(
        Arc::clone(&manager),
        args.catalog.as_deref(),
        &args.queries,
    )?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("chunk-worker-api")
        .enable_all()
        .build()
        .context("start the API runtime")?;
    let shutdown = CancellationToken::new();
    let stopped = CancellationToken::new();
    let state = AppState {
        manager: Arc::clone(&manager),
        token: settings.token.as_deref().map(Arc::from),
        metrics,
        shutdown: shutdown.clone(),
        stopped: stopped.clone(),
        data_dir,
        query,
    };
    let app = api::router(state, settings.max_body);
    runtime.block_on(async {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("listen on {}", settings.listen))?;
        let address = listener.local_addr().context("read the bound address")?;
        tracing::info!(%address, auth = settings.token.is_some(), "listening");
        announce(address)?;
        tokio::spawn(watch_signals(shutdown.clone()));
        // The manager shuts down while the server drains, so event streams see its shutdown
        // event and end.
        let manager_stopped = tokio::spawn({
            let manager = Arc::clone(&manager);
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                manager.shutdown().await;
                stopped.cancel();
            }
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serve the API");
        // If serving failed, stop the manager all the same.
        shutdown.cancel();
        manager_stopped
            .await
            .context("the manager's shutdown task")?;
        served
    })?;
    drop(runtime);
    // The last handle: dropping it joins the manager's thread and releases the lock.
    drop(manager);
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn announce(address: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{address}").context("write to stdout")?;
    stdout.flush().context("write to stdout")
}

fn log_startup(manager: &ChunkManager) {
    let report = manager.startup_report();
    tracing::info!(
        data_dir = %manager.config().data_dir.display(),
        adopted = report.adopted,
        adopted_bytes = report.adopted_bytes,
        cleaned_temporary = report.cleaned_temporary,
        removed_deleted = report.removed_deleted,
        "data directory opened"
    );
    for problem in &report.problems {
        tracing::warn!(%problem, "found on disk and not served; `chunk-worker gc` removes it");
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn watch_signals(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            if let Err(error) = result {
                tracing::error!(%error, "cannot watch SIGINT");
                std::future::pending::<()>().await;
            }
            tracing::info!("SIGINT received; shutting down");
        }
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
    shutdown.cancel();
}
