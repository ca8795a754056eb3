//! The fleet's operator commands: `chunk-worker schedule` and `chunk-worker cluster status`.
//! Wiring only; placement and the store live in `chunk-fleet`.
//!
//! # The scheduler
//!
//! Every `--interval` (or once with `--once`): loads the catalog (a JSON file or URL, as
//! `chunk-worker query --catalog` takes), stores it in the cluster store content-addressed
//! (`catalogs/<sha256>.json.gz`: workers read the chunk descriptions from there), reads the
//! members (silent longer than `--member-timeout`: gone), places the chunks on the live ones
//! and publishes the assignment if it changed ([`chunk_fleet::scheduler::run_round`]). A chunk's
//! size for placement is the sum of its files' declared sizes (`checks`) when every file
//! declares one, else `--default-chunk-size`.
//!
//! Stateless and restartable: killed and restarted, it computes the same placement and
//! publishes nothing. Several at once are safe: one publishes each generation, the others log
//! the conflict and try again next round. A catalog that cannot be loaded keeps the last one
//! loaded (long-running) or fails (`--once`, or no catalog yet).
//!
//! Metrics (through the `metrics` facade; recorded when a recorder is installed):
//! `chunk_fleet_rounds_total`, `chunk_fleet_publications_total`,
//! `chunk_fleet_conflicts_total`, `chunk_fleet_round_errors_total`,
//! `chunk_fleet_replicas_added_total`, `chunk_fleet_replicas_removed_total`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use chunk_fleet::placement::{ChunkId, ChunkSize, Params};
use chunk_fleet::scheduler::{CatalogSnapshot, RoundDecision, SchedulerConfig, run_round};
use chunk_fleet::store::{Assignment, ClusterStore, Member, State};
use chunk_manager::DataChunk;
use serde::Serialize;

use crate::settings::{parse_duration, parse_size};

/// `chunk-worker schedule`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScheduleArgs {
    /// The cluster store: an object_store URL such as file:///srv/fleet or s3://bucket/prefix.
    #[arg(long, env = "CHUNK_WORKER_CLUSTER", value_name = "URL")]
    pub cluster: String,
    /// The catalog to place: a JSON file or an http(s) URL (a list of chunk descriptions, as
    /// `query --catalog` takes).
    #[arg(long, env = "CHUNK_WORKER_CATALOG", value_name = "FILE|URL")]
    pub catalog: String,
    /// Run one round and exit.
    #[arg(long)]
    pub once: bool,
    /// Time between rounds.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Duration,
    /// A member silent for longer than this is gone and its chunks are placed elsewhere; keep it
    /// well above the workers' heartbeat interval.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    pub member_timeout: Duration,
    /// Workers holding each chunk (R). Keep it fixed: changing it moves many replicas.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub replication: usize,
    /// The fraction of a worker's capacity that placement may fill, in (0, 1].
    #[arg(long, default_value_t = 0.9, value_name = "FRACTION")]
    pub saturation: f64,
    /// The size assumed for a chunk whose files do not all declare their size.
    #[arg(long, default_value = "200MB", value_name = "SIZE", value_parser = parse_size)]
    pub default_chunk_size: u64,
    /// Serve the scheduler's Prometheus metrics (rounds, publications, replicas added and
    /// removed, conflicts, errors) at http://ADDR/metrics, e.g. 127.0.0.1:9107. Off by default.
    #[arg(long, env = "CHUNK_WORKER_SCHEDULE_METRICS", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `chunk-worker cluster ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Shows the fleet: members, liveness, capacity, bytes assigned and held, chunks
    /// under-replicated, the assignment in force.
    Status(StatusArgs),
    /// Starts a fleet on 127.0.0.1 (an origin with generated chunks, a scheduler and three
    /// workers as child processes), runs a few queries through one worker showing which
    /// worker read which chunks, kills a worker with SIGKILL and shows the same answers, then
    /// stops everything.
    Demo(crate::cluster_demo::ClusterDemoArgs),
    /// Times the demo's queries on fleets of 1, 2 and 4 workers started on this machine and
    /// on a single worker outside any fleet; prints a markdown table (median time, bytes moved
    /// between workers, chunks read locally and downloaded).
    Bench(crate::cluster_bench::ClusterBenchArgs),
}

/// `chunk-worker cluster status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The cluster store.
    #[arg(long, env = "CHUNK_WORKER_CLUSTER", value_name = "URL")]
    pub cluster: String,
    /// A member silent for longer than this shows as not live.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    pub member_timeout: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")
}

/// A chunk's size for placement: its files' declared sizes if every file declares one.
fn chunk_size(chunk: &DataChunk, default: u64) -> u64 {
    let declared: Option<u64> = chunk
        .files()
        .keys()
        .map(|name| chunk.checks().get(name).and_then(|check| check.size))
        .sum();
    declared.unwrap_or(default)
}

/// Every chunk of a catalog, by id.
fn all_chunks(catalog: &chunk_query::Catalog) -> Vec<DataChunk> {
    let mut chunks: Vec<DataChunk> = catalog
        .datasets()
        .flat_map(|dataset| catalog.chunks(dataset).iter().map(|c| DataChunk::clone(c)))
        .collect();
    chunks.sort_by(|a, b| a.id().cmp(b.id()));
    chunks
}

/// Loads the catalog, stores it in the cluster store, and returns the snapshot to place.
async fn load_snapshot(
    store: &ClusterStore,
    source: &str,
    default_chunk_size: u64,
) -> anyhow::Result<CatalogSnapshot> {
    let catalog = chunk_query::Catalog::load(source)
        .await
        .with_context(|| format!("load the catalog {source}"))?;
    let chunks = all_chunks(&catalog);
    // The whole catalog, tables' schemas included: a worker in the fleet queries with it
    // (it may hold none of a table's chunks, and still plans).
    let json = catalog.to_json().context("encode the catalog")?;
    let identity = store
        .put_catalog(&json)
        .await
        .context("store the catalog in the cluster store")?;
    Ok(CatalogSnapshot {
        identity,
        chunks: chunks
            .iter()
            .map(|chunk| ChunkSize {
                id: *chunk.id(),
                bytes: chunk_size(chunk, default_chunk_size),
            })
            .collect(),
    })
}

/// Runs the scheduler (see the module docs).
pub fn run(args: &ScheduleArgs) -> anyhow::Result<ExitCode> {
    let config = SchedulerConfig {
        params: Params {
            replication: args.replication,
            saturation: args.saturation,
        },
        liveness_timeout: args.member_timeout,
        activation_delay: Duration::ZERO,
    };
    if args.interval.is_zero() {
        anyhow::bail!("--interval must be more than 0");
    }
    let store = ClusterStore::open(&args.cluster)
        .with_context(|| format!("open the cluster store {}", args.cluster))?;
    let runtime = runtime()?;
    if args.once {
        let snapshot = runtime.block_on(load_snapshot(
            &store,
            &args.catalog,
            args.default_chunk_size,
        ))?;
        let line = runtime.block_on(round(&store, &snapshot, &config))?;
        say!("{line}");
        return Ok(ExitCode::SUCCESS);
    }
    let metrics = match args.metrics_listen {
        Some(address) => Some((crate::telemetry::install()?, address)),
        None => None,
    };
    runtime.block_on(async {
        if let Some((handle, address)) = metrics {
            serve_metrics(handle, address).await?;
        }
        let stop = crate::serve::stop_signal();
        tokio::pin!(stop);
        let mut snapshot: Option<CatalogSnapshot> = None;
        let mut ticks = tokio::time::interval(args.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(store = %args.cluster, catalog = %args.catalog, "scheduler started");
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => {}
            }
            match load_snapshot(&store, &args.catalog, args.default_chunk_size).await {
                Ok(loaded) => {
                    if snapshot.as_ref().is_some_and(|s| s.identity != loaded.identity) {
                        tracing::info!(catalog = %loaded.identity, chunks = loaded.chunks.len(), "the catalog changed");
                    }
                    snapshot = Some(loaded);
                }
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), "cannot load the catalog; placing the last one loaded");
                    metrics::counter!("chunk_fleet_round_errors_total").increment(1);
                }
            }
            let Some(snapshot) = &snapshot else { continue };
            if let Err(error) = round(&store, snapshot, &config).await {
                tracing::error!(error = %format!("{error:#}"), "round failed; retrying next round");
            }
        }
        tracing::info!("scheduler stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Serves `GET /metrics` on `address` in the background; prints the bound address.
async fn serve_metrics(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    address: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listen on {address} for metrics"))?;
    let bound = listener.local_addr().context("the metrics address")?;
    say!("metrics on http://{bound}/metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
    Ok(())
}

/// One round: logs and counts what moved, returns a one-line summary.
async fn round(
    store: &ClusterStore,
    snapshot: &CatalogSnapshot,
    config: &SchedulerConfig,
) -> anyhow::Result<String> {
    metrics::counter!("chunk_fleet_rounds_total").increment(1);
    let outcome = match run_round(store, snapshot, now_unix_ms(), config).await {
        Ok(outcome) => outcome,
        Err(error) if error.is_conflict() => {
            metrics::counter!("chunk_fleet_conflicts_total").increment(1);
            tracing::warn!(%error, "another scheduler published first; trying again next round");
            return Ok(format!("conflict: {error}"));
        }
        Err(error) => {
            metrics::counter!("chunk_fleet_round_errors_total").increment(1);
            return Err(anyhow::Error::new(error).context("scheduler round"));
        }
    };
    for skipped in &outcome.skipped_members {
        tracing::warn!(error = %skipped, "member file skipped; that worker counts as gone");
    }
    let plan = &outcome.plan;
    match (&plan.decision, &outcome.published) {
        (RoundDecision::Publish { moves, .. }, Some(state)) => {
            metrics::counter!("chunk_fleet_publications_total").increment(1);
            metrics::counter!("chunk_fleet_replicas_added_total").increment(moves.added as u64);
            metrics::counter!("chunk_fleet_replicas_removed_total").increment(moves.removed as u64);
            for (worker, change) in &moves.per_worker {
                if change.added > 0 || change.removed > 0 {
                    tracing::info!(
                        worker = %worker,
                        added = change.added,
                        removed = change.removed,
                        "replicas moved"
                    );
                }
            }
            Ok(format!(
                "published generation {} assignment {} workers {} replicas added {} removed {} under-replicated {}",
                state.generation,
                state.assignment,
                plan.live_workers.len(),
                moves.added,
                moves.removed,
                plan.under_replicated
            ))
        }
        (RoundDecision::NoLiveWorkers, _) => {
            tracing::warn!("no live worker; nothing published, the last assignment stays");
            Ok("no live workers: nothing published".to_string())
        }
        _ => {
            let state = store.read_state().await.ok().flatten();
            Ok(match state {
                Some(state) => format!(
                    "unchanged generation {} assignment {} workers {}",
                    state.generation,
                    state.assignment,
                    plan.live_workers.len()
                ),
                None => "unchanged".to_string(),
            })
        }
    }
}

/// Runs a `cluster` subcommand.
pub fn cluster(command: &ClusterCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Status(args) => status(args),
        ClusterCommand::Demo(args) => crate::cluster_demo::run(args),
        ClusterCommand::Bench(args) => crate::cluster_bench::run(args),
    }
}

/// `cluster status --json`.
#[derive(Debug, Serialize)]
struct StatusJson {
    generation: Option<u64>,
    assignment: Option<String>,
    published_unix_ms: Option<u64>,
    replication: Option<usize>,
    chunks: usize,
    /// Chunks with fewer than R live holders that have applied the assignment in force.
    under_replicated: usize,
    /// Chunks the placement could not give R workers (the fleet is full).
    unplaceable: usize,
    workers: Vec<WorkerJson>,
    /// Member files that could not be read.
    skipped_members: Vec<String>,
    /// Why the assignment could not be read, if it could not.
    assignment_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct WorkerJson {
    worker_id: String,
    http_url: String,
    live: bool,
    heartbeat_age_ms: u64,
    capacity_bytes: u64,
    assigned_chunks: usize,
    assigned_bytes: u64,
    held_chunks: Option<u64>,
    held_bytes: Option<u64>,
    applied: bool,
    in_assignment: bool,
}

fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let store = ClusterStore::open(&args.cluster)
        .with_context(|| format!("open the cluster store {}", args.cluster))?;
    let report = runtime()?.block_on(gather(&store, args))?;
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&report).context("encode the status")?
        );
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

async fn gather(store: &ClusterStore, args: &StatusArgs) -> anyhow::Result<StatusJson> {
    let members = store.list_members().await.context("list the members")?;
    let state: Option<State> = store.read_state().await.context("read the state")?;
    let mut assignment_error = None;
    let mut assignment: Option<Assignment> = None;
    if let Some(state) = &state {
        match store.read_assignment(&state.assignment).await {
            Ok(read) => assignment = Some(read),
            Err(error) => assignment_error = Some(error.to_string()),
        }
    }
    Ok(report(
        &members.members,
        state.as_ref(),
        assignment.as_ref(),
        args,
        members.skipped.iter().map(ToString::to_string).collect(),
        assignment_error,
    ))
}

fn report(
    members: &[Member],
    state: Option<&State>,
    assignment: Option<&Assignment>,
    args: &StatusArgs,
    skipped_members: Vec<String>,
    assignment_error: Option<String>,
) -> StatusJson {
    let now = now_unix_ms();
    let timeout = args.member_timeout.as_millis() as u64;
    let live = |member: &Member| member.heartbeat_unix_ms.saturating_add(timeout) >= now;
    let current = state.map(|s| &s.assignment);
    let applied =
        |member: &Member| current.is_some() && member.applied_assignment.as_ref() == current;
    let by_id: BTreeMap<&str, &Member> =
        members.iter().map(|m| (m.worker_id.as_str(), m)).collect();
    let mut ids: BTreeSet<&str> = by_id.keys().copied().collect();
    if let Some(assignment) = assignment {
        ids.extend(assignment.workers.keys().map(String::as_str));
    }
    let empty = Vec::new();
    let workers = ids
        .into_iter()
        .map(|id| {
            let assigned = assignment.and_then(|a| a.workers.get(id)).unwrap_or(&empty);
            let member = by_id.get(id);
            WorkerJson {
                worker_id: id.to_string(),
                http_url: member.map(|m| m.http_url.clone()).unwrap_or_default(),
                live: member.is_some_and(|m| live(m)),
                heartbeat_age_ms: member.map_or(0, |m| now.saturating_sub(m.heartbeat_unix_ms)),
                capacity_bytes: member.map_or(0, |m| m.capacity_bytes),
                assigned_chunks: assigned.len(),
                assigned_bytes: assignment
                    .and_then(|a| a.bytes.get(id).copied())
                    .unwrap_or(0),
                held_chunks: member.and_then(|m| m.held_chunks),
                held_bytes: member.and_then(|m| m.held_bytes),
                applied: member.is_some_and(|m| applied(m)),
                in_assignment: assignment.is_some_and(|a| a.workers.contains_key(id)),
            }
        })
        .collect();
    let mut serving: BTreeMap<&ChunkId, usize> = BTreeMap::new();
    let mut chunks: BTreeSet<&ChunkId> = BTreeSet::new();
    if let Some(assignment) = assignment {
        chunks.extend(assignment.under_replicated.iter());
        for (worker, ids) in &assignment.workers {
            let ok = by_id
                .get(worker.as_str())
                .is_some_and(|m| live(m) && applied(m));
            for id in ids {
                chunks.insert(id);
                if ok {
                    *serving.entry(id).or_default() += 1;
                }
            }
        }
    }
    let replication = assignment.map(|a| a.replication);
    let under_replicated = chunks
        .iter()
        .filter(|id| serving.get(*id).copied().unwrap_or(0) < replication.unwrap_or(0))
        .count();
    StatusJson {
        generation: state.map(|s| s.generation),
        assignment: state.map(|s| s.assignment.to_string()),
        published_unix_ms: state.map(|s| s.published_unix_ms),
        replication,
        chunks: chunks.len(),
        under_replicated,
        unplaceable: assignment.map_or(0, |a| a.under_replicated.len()),
        workers,
        skipped_members,
        assignment_error,
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn print_table(report: &StatusJson) {
    match (&report.assignment, report.generation) {
        (Some(id), Some(generation)) => say!("assignment {id} (generation {generation})"),
        _ => say!("no assignment published yet"),
    }
    if let Some(error) = &report.assignment_error {
        say!("assignment unreadable: {error}");
    }
    say!(
        "chunks {}, replication {}, under-replicated {}, unplaceable {}",
        report.chunks,
        report
            .replication
            .map_or("-".to_string(), |r| r.to_string()),
        report.under_replicated,
        report.unplaceable
    );
    say!(
        "{:<16} {:<5} {:>8} {:>11} {:>9} {:>11} {:>9} {:>11} {:<7} URL",
        "WORKER",
        "LIVE",
        "AGE",
        "CAPACITY",
        "ASSIGNED",
        "BYTES",
        "HELD",
        "BYTES",
        "APPLIED"
    );
    for worker in &report.workers {
        say!(
            "{:<16} {:<5} {:>8} {:>11} {:>9} {:>11} {:>9} {:>11} {:<7} {}",
            worker.worker_id,
            if worker.live { "yes" } else { "no" },
            format!("{:.1}s", worker.heartbeat_age_ms as f64 / 1000.0),
            human(worker.capacity_bytes),
            worker.assigned_chunks,
            human(worker.assigned_bytes),
            worker
                .held_chunks
                .map_or("-".to_string(), |n| n.to_string()),
            worker.held_bytes.map_or("-".to_string(), human),
            if worker.applied { "yes" } else { "no" },
            worker.http_url
        );
    }
    for skipped in &report.skipped_members {
        say!("skipped member file: {skipped}");
    }
}
