//! `chunk-worker serve`: the daemon.
//!
//! # Overview
//!
//! Resolves the settings, installs the metrics recorder, opens the manager (which takes the
//! data directory's lock and rebuilds its state from disk), then serves the API until SIGINT or
//! SIGTERM. It prints `listening on http://ADDR` on stdout once the socket is bound, so a
//! supervisor or a test that asked for port 0 learns the port.
//!
//! # Limits
//!
//! Each connection must send a request's headers within `--header-timeout` (an idle
//! keep-alive connection too) and may not stall a request body for longer than
//! `--body-timeout`; at most `--max-connections` are served at once, and never more than half
//! the open-file limit, so slow or idle clients cannot take the descriptors downloads need.
//! Connections over the limit wait in the listen backlog until one ends.
//!
//! # Cancellation
//!
//! A signal cancels the shutdown token: the listener closes, `/readyz` turns 503, idle
//! connections close, event streams end with a `shutdown` event, and requests in flight
//! may finish until `--shutdown-timeout`; then the connections still open are dropped. Only
//! once no request can read the data directory any more does the manager shut down
//! (downloads cancelled, temporary data removed, jobs joined, the lock released), and the
//! process exits right after, with code 0.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use chunk_manager::ChunkManager;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::settings::{ServeArgs, ServeSettings};
use crate::telemetry;

/// How long the API's leftover tasks get to end once the server is gone, before the manager
/// shuts down anyway.
const TASKS_GRACE: Duration = Duration::from_secs(1);

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
    let (bound, bound_receiver) = tokio::sync::oneshot::channel();
    // Without a catalog of its own, a worker in a fleet queries with the fleet's.
    let fleet_catalog = args.catalog.is_none().then(|| Arc::clone(query.engine()));
    let cluster = crate::cluster::start(
        &args.cluster,
        Arc::clone(&manager),
        fleet_catalog,
        &runtime,
        shutdown.clone(),
        bound_receiver,
    )?;
    let flight = match query.runtime() {
        Some(query_runtime) => {
            let (flight, fleet) = crate::distributed::start(
                &args.distributed,
                &args.cluster,
                Arc::clone(query.engine()),
                &query_runtime,
            )?;
            if let Some(fleet) = fleet {
                query.set_fleet(fleet);
            }
            if let (Some(flight), Some(cluster)) = (&flight, &cluster) {
                cluster.set_flight_url(flight.url());
            }
            flight
        }
        None => None,
    };
    let state = AppState {
        manager: Arc::clone(&manager),
        token: settings.token.as_deref().map(Arc::from),
        token_reads: settings.token_reads,
        metrics,
        shutdown: shutdown.clone(),
        data_dir,
        query: query.clone(),
        cluster,
    };
    let app = api::router(
        state,
        &api::Limits {
            max_body: settings.max_body,
            body_timeout: settings.body_timeout,
        },
    );
    let served = runtime.block_on(serve(app, &settings, shutdown, bound));
    // Tasks still running (connections past the shutdown deadline, their requests) are
    // dropped here, so none reads the data directory once the manager lets it go.
    runtime.shutdown_timeout(TASKS_GRACE);
    // The Flight service's task stops with the query runtime.
    drop(flight);
    // Queries too: their threads may read chunk files.
    query.shutdown(TASKS_GRACE);
    // Now the manager: downloads cancelled, temporary data removed, the lock released. The
    // process exits right after.
    manager.shutdown_blocking();
    drop(manager);
    served?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serves the API until `shutdown` is cancelled and the connections have ended or the
/// shutdown deadline has passed.
async fn serve(
    app: Router,
    settings: &ServeSettings,
    shutdown: CancellationToken,
    bound: tokio::sync::oneshot::Sender<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listen on {}", settings.listen))?;
    let address = listener.local_addr().context("read the bound address")?;
    let limit = connection_limit(settings.max_connections);
    tracing::info!(
        %address,
        auth = settings.token.is_some(),
        token_reads = settings.token_reads,
        max_connections = limit,
        "listening"
    );
    announce(address)?;
    let _ = bound.send(address); // the fleet's heartbeat advertises it; none without --cluster
    tokio::spawn(watch_signals(shutdown.clone()));

    let slots = Arc::new(Semaphore::new(limit));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    loop {
        // A slot first: over the limit, connections wait in the backlog, holding no
        // descriptor of ours.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => permit.context("the connection slots")?,
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    accept_failed(&error, &shutdown).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(
            http.clone(),
            stream,
            app.clone(),
            shutdown.clone(),
            permit,
        ));
    }
    drop(listener);
    let open = limit - slots.available_permits();
    if open > 0 {
        tracing::info!(open, "waiting for open connections to finish");
    }
    let all = u32::try_from(limit).unwrap_or(u32::MAX);
    let deadline = settings.shutdown_timeout;
    if tokio::time::timeout(deadline, slots.acquire_many(all))
        .await
        .is_err()
    {
        let open = limit - slots.available_permits();
        tracing::warn!(
            open,
            ?deadline,
            "connections still open at the shutdown deadline; dropping them"
        );
    }
    Ok(())
}

/// The connection limit: the configured one, at most half the open-file limit.
fn connection_limit(configured: usize) -> usize {
    let files = match rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        Some(files) => usize::try_from(files).unwrap_or(usize::MAX),
        None => usize::MAX,
    };
    let limit = configured.min(files / 2).max(1);
    if limit < configured {
        tracing::info!(
            configured,
            open_file_limit = files,
            limit,
            "connection limit lowered to half the open-file limit"
        );
    }
    limit
}

/// After a failed accept: a connection's own failure is skipped; running out of descriptors
/// (or memory) is waited out briefly rather than spun on.
async fn accept_failed(error: &std::io::Error, shutdown: &CancellationToken) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection; retrying shortly");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
}

/// Serves one connection; on shutdown, lets its request in flight finish, then closes it.
async fn serve_connection(
    http: http1::Builder,
    stream: TcpStream,
    app: Router,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = ended {
        // Timeouts, resets, malformed requests: the client's business.
        tracing::debug!(%error, "connection ended with an error");
    }
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
    stop_signal().await;
    shutdown.cancel();
}

/// Resolves on the first SIGINT or SIGTERM (never, for a signal that cannot be watched).
pub(crate) async fn stop_signal() {
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
}
