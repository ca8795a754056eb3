//! The daemon in a fleet: `chunk-worker serve --cluster URL --worker-id ID`.
//!
//! # Overview
//!
//! Two tasks on the API runtime:
//!
//! - the **heartbeat** writes `members/<id>.json` every `--heartbeat-interval`: the advertised
//!   HTTP URL (`--advertise`, else `http://` and the bound address), the capacity (the disk
//!   budget), the assignment applied (every chunk of this worker's part ready), the chunks and
//!   bytes held. Two processes under one id are logged at error level on every heartbeat and
//!   shown in `GET /cluster`.
//! - the **poller** reads `state.json` every `--poll-interval`; on a new assignment it reads it
//!   and the catalog it places, and applies this worker's part through
//!   [`ChunkManager::assign`].
//!
//! # Where the chunk descriptions come from
//!
//! An assignment names chunks by id only. The scheduler stores the catalog it placed in the
//! cluster store, content-addressed (`catalogs/<sha256>.json.gz`, the sha256 being the
//! assignment's `catalog` identity), and the worker reads the descriptions from there. So a
//! worker needs no catalog of its own, and the worker and the scheduler cannot disagree on a
//! chunk's files: what is applied is exactly what was placed. A worker started without
//! `--catalog` also queries with that catalog (chunk descriptions and tables' schemas):
//! each new one replaces its query engine's catalog, as `PUT /catalog` does.
//!
//! # Grace period
//!
//! When the assignment changes, the chunks of the old part that are not in the new one are
//! kept (`assign(new ∪ kept)`) until every holder of each of them in the new assignment reports
//! the new assignment applied in its heartbeat, or until `--cluster-grace` has passed; then they
//! are dropped. So a chunk that moves stays served by its old holder until the new one has it.
//!
//! # Safety
//!
//! The store is read, never trusted to be there: on any failure (unreachable, a corrupt or
//! newer-format state or assignment, a catalog that does not name an assigned chunk) the
//! worker keeps what it has, logs, and shows the error in `GET /cluster`. Nothing is ever
//! dropped because a read failed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use axum::Json;
use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Response};
use chunk_fleet::store::{AssignmentId, ClusterStore, Member, State, validate_worker_id};
use chunk_manager::{ChunkId, ChunkManager, ChunkState, DataChunk, id_to_hex};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::settings::parse_duration;

/// The daemon's fleet options (all unset: a stand-alone worker).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// The cluster store to join: an object_store URL such as file:///srv/fleet or
    /// s3://bucket/prefix [default: none, a stand-alone worker].
    #[arg(long, env = "CHUNK_WORKER_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// This worker's id in the fleet, stable across restarts (A-Z a-z 0-9 . _ -); needed with
    /// --cluster.
    #[arg(long, env = "CHUNK_WORKER_ID", value_name = "ID")]
    pub worker_id: Option<String>,
    /// The HTTP URL other nodes reach this worker at [default: http:// and the bound address].
    #[arg(long, env = "CHUNK_WORKER_ADVERTISE", value_name = "URL")]
    pub advertise: Option<String>,
    /// How often the heartbeat is written [default: 5s].
    #[arg(long, env = "CHUNK_WORKER_HEARTBEAT_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// How often state.json is read [default: 5s].
    #[arg(long, env = "CHUNK_WORKER_POLL_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// How long chunks moved away are kept at most, waiting for their new holders
    /// [default: 10m].
    #[arg(long, env = "CHUNK_WORKER_CLUSTER_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    pub cluster_grace: Option<Duration>,
    /// A member silent for longer than this shows as not live in GET /cluster; also the
    /// window in which another process's heartbeat under this id is a clash [default: 60s].
    #[arg(long, env = "CHUNK_WORKER_MEMBER_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub member_timeout: Option<Duration>,
}

/// The fleet settings, resolved.
#[derive(Debug, Clone)]
struct Settings {
    url: String,
    worker_id: String,
    advertise: Option<String>,
    heartbeat_interval: Duration,
    poll_interval: Duration,
    grace: Duration,
    member_timeout: Duration,
}

impl ClusterArgs {
    fn resolve(&self) -> anyhow::Result<Option<Settings>> {
        let Some(url) = self.cluster.clone() else {
            if self.worker_id.is_some() || self.advertise.is_some() {
                anyhow::bail!("--worker-id and --advertise need --cluster");
            }
            return Ok(None);
        };
        let worker_id = self
            .worker_id
            .clone()
            .ok_or_else(|| anyhow!("--cluster needs --worker-id"))?;
        validate_worker_id(&worker_id)?;
        let positive = |value: Option<Duration>, default: Duration, name: &str| {
            let value = value.unwrap_or(default);
            if value.is_zero() {
                anyhow::bail!("{name} must be more than 0");
            }
            Ok(value)
        };
        Ok(Some(Settings {
            url,
            worker_id,
            advertise: self.advertise.clone(),
            heartbeat_interval: positive(
                self.heartbeat_interval,
                Duration::from_secs(5),
                "heartbeat_interval",
            )?,
            poll_interval: positive(self.poll_interval, Duration::from_secs(5), "poll_interval")?,
            grace: self.cluster_grace.unwrap_or(Duration::from_secs(600)),
            member_timeout: positive(
                self.member_timeout,
                Duration::from_secs(60),
                "member_timeout",
            )?,
        }))
    }
}

/// The worker's view of the fleet, shared by its tasks and `GET /cluster`. Cheap to clone.
#[derive(Clone)]
pub struct ClusterView {
    inner: Arc<Mutex<Inner>>,
}

/// What the worker knows, under one lock (never held across an await).
struct Inner {
    /// The Flight service's URL, advertised in the heartbeat.
    flight_url: Option<String>,
    worker_id: String,
    store: String,
    advertise: Option<String>,
    capacity_bytes: u64,
    member_timeout: Duration,
    /// The last state read.
    state: Option<State>,
    /// The assignment in force for this worker, and its part of it.
    target: Option<Target>,
    /// Chunks of earlier assignments kept during the grace period, with their holders in the
    /// target assignment.
    kept: BTreeMap<ChunkId, Kept>,
    /// When the kept chunks are dropped whatever the other workers report.
    grace_ends: Option<Instant>,
    /// The set last given to the manager.
    last_assigned: BTreeSet<ChunkId>,
    /// The last assignment whose part was all ready.
    applied: Option<AssignmentId>,
    /// The members last read.
    members: Vec<Member>,
    /// The last failure to read the store, if the last poll failed.
    last_error: Option<String>,
    /// The last failure to write the heartbeat, if the last one failed.
    heartbeat_error: Option<String>,
    /// The last clash of worker ids seen, if the last heartbeat saw one.
    id_clash: Option<String>,
}

struct Target {
    id: AssignmentId,
    generation: u64,
    chunks: Vec<DataChunk>,
}

struct Kept {
    chunk: DataChunk,
    /// Its holders in the target assignment.
    holders: Vec<String>,
}

impl ClusterView {
    /// Advertises this Flight URL in the heartbeats to come.
    pub fn set_flight_url(&self, url: String) {
        self.lock().flight_url = Some(url);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the fleet tasks on `runtime` if `args` names a cluster store. `bound` receives the
/// daemon's bound address (for the default advertised URL).
pub fn start(
    args: &ClusterArgs,
    manager: Arc<ChunkManager>,
    queries: Option<Arc<chunk_query::QueryEngine>>,
    runtime: &tokio::runtime::Runtime,
    shutdown: CancellationToken,
    bound: oneshot::Receiver<SocketAddr>,
) -> anyhow::Result<Option<ClusterView>> {
    let Some(settings) = args.resolve()? else {
        return Ok(None);
    };
    let store = ClusterStore::open(&settings.url)
        .with_context(|| format!("open the cluster store {}", settings.url))?
        .with_clash_window(settings.member_timeout);
    let view = ClusterView {
        inner: Arc::new(Mutex::new(Inner {
            flight_url: None,
            worker_id: settings.worker_id.clone(),
            store: settings.url.clone(),
            advertise: settings.advertise.clone(),
            capacity_bytes: manager.config().disk_budget,
            member_timeout: settings.member_timeout,
            state: None,
            target: None,
            kept: BTreeMap::new(),
            grace_ends: None,
            last_assigned: BTreeSet::new(),
            applied: None,
            members: Vec::new(),
            last_error: None,
            heartbeat_error: None,
            id_clash: None,
        })),
    };
    tracing::info!(
        store = %settings.url,
        worker_id = %settings.worker_id,
        "joining the fleet"
    );
    let instance = format!("{:016x}", fastrand::u64(..));
    runtime.spawn(heartbeat_loop(
        store.clone(),
        view.clone(),
        Arc::clone(&manager),
        settings.clone(),
        instance,
        bound,
        shutdown.clone(),
    ));
    runtime.spawn(poll_loop(
        store,
        view.clone(),
        manager,
        queries,
        settings,
        shutdown,
    ));
    Ok(Some(view))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

async fn heartbeat_loop(
    store: ClusterStore,
    view: ClusterView,
    manager: Arc<ChunkManager>,
    settings: Settings,
    instance: String,
    bound: oneshot::Receiver<SocketAddr>,
    shutdown: CancellationToken,
) {
    let http_url = match settings.advertise.clone() {
        Some(url) => url,
        None => tokio::select! {
            () = shutdown.cancelled() => return,
            address = bound => match address {
                Ok(address) => format!("http://{address}"),
                Err(_) => return, // the server never bound: the daemon is failing
            },
        },
    };
    view.lock().advertise = Some(http_url.clone());
    let mut ticks = tokio::time::interval(settings.heartbeat_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (held_chunks, held_bytes) = held(&manager);
        let applied = view.lock().applied.clone();
        let mut member = Member::new(
            settings.worker_id.clone(),
            http_url.clone(),
            manager.config().disk_budget,
            now_unix_ms(),
        );
        member.applied_assignment = applied;
        member.flight_url = view.lock().flight_url.clone();
        member.instance = Some(instance.clone());
        member.held_chunks = Some(held_chunks);
        member.held_bytes = Some(held_bytes);
        match store.put_member(&member).await {
            Ok(heartbeat) => {
                let mut inner = view.lock();
                inner.heartbeat_error = None;
                if let Some(clash) = &heartbeat.clash {
                    tracing::error!(%clash, "two processes claim this worker id; give each worker its own --worker-id");
                    metrics::counter!("chunk_worker_cluster_id_clashes_total").increment(1);
                }
                inner.id_clash = heartbeat.clash.map(|clash| clash.to_string());
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot write the heartbeat; retrying");
                view.lock().heartbeat_error = Some(error_chain(&error));
            }
        }
    }
}

/// Chunks ready on disk and their bytes.
fn held(manager: &ChunkManager) -> (u64, u64) {
    let ids = manager.list_chunks();
    let bytes = ids
        .iter()
        .filter_map(|id| manager.get_chunk(id))
        .map(|chunk| chunk.size())
        .sum();
    (ids.len() as u64, bytes)
}

async fn poll_loop(
    store: ClusterStore,
    view: ClusterView,
    manager: Arc<ChunkManager>,
    queries: Option<Arc<chunk_query::QueryEngine>>,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let mut catalogs = CatalogCache {
        queries,
        ..CatalogCache::default()
    };
    let mut ticks = tokio::time::interval(settings.poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match poll_once(&store, &view, &manager, &settings, &mut catalogs).await {
            Ok(()) => view.lock().last_error = None,
            Err(error) => {
                let message = format!("{error:#}");
                tracing::warn!(error = %message, "cluster store read failed; keeping the chunks held");
                view.lock().last_error = Some(message);
            }
        }
        reconcile(&view, &manager);
    }
}

/// The last catalog read, by identity.
#[derive(Default)]
struct CatalogCache {
    identity: String,
    catalog: Option<chunk_query::Catalog>,
    /// The query engine that takes each new catalog (a worker without `--catalog`).
    queries: Option<Arc<chunk_query::QueryEngine>>,
}

/// Reads the members and the state; on a new assignment, reads it and its catalog and makes it
/// the target. Any failure leaves the view's target as it was.
async fn poll_once(
    store: &ClusterStore,
    view: &ClusterView,
    manager: &ChunkManager,
    settings: &Settings,
    catalogs: &mut CatalogCache,
) -> anyhow::Result<()> {
    let members = store.list_members().await.context("list the members")?;
    view.lock().members = members.members;
    let Some(state) = store.read_state().await.context("read the state")? else {
        return Ok(()); // nothing published yet
    };
    let current = view.lock().target.as_ref().map(|t| t.id.clone());
    if current.as_ref() == Some(&state.assignment) {
        view.lock().state = Some(state);
        return Ok(());
    }
    if state.effective_from_unix_ms > now_unix_ms() {
        return Ok(()); // not yet
    }
    let assignment = store
        .read_assignment(&state.assignment)
        .await
        .with_context(|| format!("read assignment {}", state.assignment))?;
    if catalogs.identity != assignment.catalog || catalogs.catalog.is_none() {
        let bytes = store
            .read_catalog(&assignment.catalog)
            .await
            .with_context(|| format!("read the catalog of assignment {}", state.assignment))?;
        let catalog =
            chunk_query::Catalog::from_json(&bytes, &format!("catalog {}", assignment.catalog))
                .with_context(|| format!("parse the catalog of assignment {}", state.assignment))?;
        if let Some(engine) = &catalogs.queries {
            tracing::info!(
                catalog = %assignment.catalog,
                chunks = catalog.len(),
                "querying with the catalog of the fleet's assignment"
            );
            engine.set_catalog(catalog.clone());
        }
        catalogs.identity = assignment.catalog.clone();
        catalogs.catalog = Some(catalog);
    }
    let catalog = catalogs
        .catalog
        .as_ref()
        .ok_or_else(|| anyhow!("no catalog"))?;
    let mine: &[ChunkId] = assignment
        .workers
        .get(&settings.worker_id)
        .map_or(&[], Vec::as_slice);
    let mut chunks = Vec::with_capacity(mine.len());
    for id in mine {
        let chunk = catalog.get(id).ok_or_else(|| {
            anyhow!(
                "assignment {} names chunk {} that its catalog does not describe",
                state.assignment,
                id_to_hex(id)
            )
        })?;
        chunks.push(DataChunk::clone(chunk));
    }
    // Every chunk's holders, for the chunks this worker may have to keep.
    let new_ids: BTreeSet<ChunkId> = mine.iter().copied().collect();
    let mut inner = view.lock();
    let mut kept: BTreeMap<ChunkId, DataChunk> = inner
        .kept
        .iter()
        .map(|(id, kept)| (*id, kept.chunk.clone()))
        .collect();
    match &inner.target {
        Some(target) => {
            for chunk in &target.chunks {
                kept.insert(*chunk.id(), chunk.clone());
            }
        }
        None => {
            // First assignment since start: what is on disk is the old assignment.
            for status in manager.statuses() {
                if matches!(status.state, ChunkState::Ready) && !status.cached {
                    kept.insert(*status.chunk.id(), DataChunk::clone(&status.chunk));
                }
            }
        }
    }
    kept.retain(|id, _| !new_ids.contains(id));
    let mut holders: HashMap<ChunkId, Vec<String>> =
        kept.keys().map(|id| (*id, Vec::new())).collect();
    for (worker, ids) in &assignment.workers {
        for id in ids {
            if let Some(list) = holders.get_mut(id) {
                list.push(worker.clone());
            }
        }
    }
    tracing::info!(
        assignment = %state.assignment,
        generation = state.generation,
        assigned = chunks.len(),
        kept = kept.len(),
        "applying a new assignment; chunks moved away are kept until their new holders have them"
    );
    inner.kept = kept
        .into_iter()
        .map(|(id, chunk)| {
            let holders = holders.remove(&id).unwrap_or_default();
            (id, Kept { chunk, holders })
        })
        .collect();
    inner.grace_ends = Some(Instant::now() + settings.grace);
    inner.target = Some(Target {
        id: state.assignment.clone(),
        generation: state.generation,
        chunks,
    });
    inner.state = Some(state);
    Ok(())
}

/// Drops the kept chunks whose new holders all report the target applied (all of them once the
/// grace period is over), gives the manager the target plus what is still kept if that set
/// changed, and records whether the target is applied.
fn reconcile(view: &ClusterView, manager: &ChunkManager) {
    let mut inner = view.lock();
    let Some(target_id) = inner.target.as_ref().map(|t| t.id.clone()) else {
        return;
    };
    let applied_by: BTreeSet<String> = inner
        .members
        .iter()
        .filter(|member| member.applied_assignment.as_ref() == Some(&target_id))
        .map(|member| member.worker_id.clone())
        .collect();
    let grace_over = inner.grace_ends.is_some_and(|ends| Instant::now() >= ends);
    let before = inner.kept.len();
    inner.kept.retain(|_, kept| {
        !grace_over
            && (kept.holders.is_empty()
                || !kept
                    .holders
                    .iter()
                    .all(|holder| applied_by.contains(holder)))
    });
    let dropped = before - inner.kept.len();
    if dropped > 0 {
        tracing::info!(
            dropped,
            still_kept = inner.kept.len(),
            grace_over,
            "dropping chunks kept for the grace period"
        );
    }
    let inner = &mut *inner;
    let Some(target) = inner.target.as_ref() else {
        return;
    };
    let desired: BTreeSet<ChunkId> = target
        .chunks
        .iter()
        .map(|chunk| *chunk.id())
        .chain(inner.kept.keys().copied())
        .collect();
    if desired != inner.last_assigned {
        let chunks: Vec<DataChunk> = target
            .chunks
            .iter()
            .cloned()
            .chain(inner.kept.values().map(|kept| kept.chunk.clone()))
            .collect();
        manager.assign(chunks);
        inner.last_assigned = desired;
    }
    let all_ready = target.chunks.iter().all(|chunk| {
        manager
            .status(chunk.id())
            .is_some_and(|status| matches!(status.state, ChunkState::Ready))
    });
    if all_ready && inner.applied.as_ref() != Some(&target_id) {
        tracing::info!(assignment = %target_id, "assignment applied: every chunk of this worker's part is ready");
        inner.applied = Some(target_id);
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `GET /cluster`: the worker's view of the fleet.
#[derive(Debug, Serialize)]
pub struct ClusterJson {
    worker_id: String,
    store: String,
    advertise: Option<String>,
    capacity_bytes: u64,
    generation: Option<u64>,
    assignment: Option<String>,
    applied_assignment: Option<String>,
    applied: bool,
    live_workers: Vec<String>,
    chunks: ChunkCounts,
    grace_remaining_ms: Option<u64>,
    members: Vec<MemberJson>,
    last_error: Option<String>,
    heartbeat_error: Option<String>,
    id_clash: Option<String>,
}

#[derive(Debug, Serialize)]
struct ChunkCounts {
    /// Chunks of this worker's part of the assignment.
    assigned: usize,
    /// Of those, ready.
    assigned_held: usize,
    /// Chunks of earlier assignments kept for the grace period.
    kept: usize,
    /// Chunks ready on disk, all told.
    held: u64,
    /// Their bytes.
    held_bytes: u64,
}

#[derive(Debug, Serialize)]
struct MemberJson {
    worker_id: String,
    http_url: String,
    live: bool,
    heartbeat_age_ms: u64,
    capacity_bytes: u64,
    applied_assignment: Option<String>,
    held_chunks: Option<u64>,
    held_bytes: Option<u64>,
}

/// `GET /cluster` handler: 404 when the worker is not in a fleet.
pub async fn get_cluster(AxumState(state): AxumState<AppState>) -> Response {
    match &state.cluster {
        Some(view) => Json(view_json(view, &state.manager)).into_response(),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": {"code": "not_in_a_fleet", "message": "this worker runs without --cluster"}})),
        )
            .into_response(),
    }
}

fn view_json(view: &ClusterView, manager: &ChunkManager) -> ClusterJson {
    let (held_chunks, held_bytes) = held(manager);
    let inner = view.lock();
    let now = now_unix_ms();
    let timeout = inner.member_timeout.as_millis() as u64;
    let assigned_held = inner.target.as_ref().map_or(0, |target| {
        target
            .chunks
            .iter()
            .filter(|chunk| manager.get_chunk(chunk.id()).is_some())
            .count()
    });
    ClusterJson {
        worker_id: inner.worker_id.clone(),
        store: inner.store.clone(),
        advertise: inner.advertise.clone(),
        capacity_bytes: inner.capacity_bytes,
        generation: inner.target.as_ref().map(|t| t.generation),
        assignment: inner.target.as_ref().map(|t| t.id.to_string()),
        applied_assignment: inner.applied.as_ref().map(ToString::to_string),
        applied: inner.target.is_some()
            && inner.applied.as_ref() == inner.target.as_ref().map(|t| &t.id),
        live_workers: inner
            .state
            .as_ref()
            .map(|s| s.live_workers.clone())
            .unwrap_or_default(),
        chunks: ChunkCounts {
            assigned: inner.target.as_ref().map_or(0, |t| t.chunks.len()),
            assigned_held,
            kept: inner.kept.len(),
            held: held_chunks,
            held_bytes,
        },
        grace_remaining_ms: inner
            .grace_ends
            .filter(|_| !inner.kept.is_empty())
            .map(|ends| ends.saturating_duration_since(Instant::now()).as_millis() as u64),
        members: inner
            .members
            .iter()
            .map(|member| MemberJson {
                worker_id: member.worker_id.clone(),
                http_url: member.http_url.clone(),
                live: member.heartbeat_unix_ms.saturating_add(timeout) >= now,
                heartbeat_age_ms: now.saturating_sub(member.heartbeat_unix_ms),
                capacity_bytes: member.capacity_bytes,
                applied_assignment: member.applied_assignment.as_ref().map(ToString::to_string),
                held_chunks: member.held_chunks,
                held_bytes: member.held_bytes,
            })
            .collect(),
        last_error: inner.last_error.clone(),
        heartbeat_error: inner.heartbeat_error.clone(),
        id_clash: inner.id_clash.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_flags_go_together() {
        let none = ClusterArgs::default();
        assert!(none.resolve().unwrap().is_none());
        let lonely_id = ClusterArgs {
            worker_id: Some("w1".into()),
            ..ClusterArgs::default()
        };
        assert!(lonely_id.resolve().is_err());
        let no_id = ClusterArgs {
            cluster: Some("file:///tmp/x".into()),
            ..ClusterArgs::default()
        };
        assert!(
            no_id
                .resolve()
                .unwrap_err()
                .to_string()
                .contains("--worker-id")
        );
        let bad_id = ClusterArgs {
            cluster: Some("file:///tmp/x".into()),
            worker_id: Some("../etc".into()),
            ..ClusterArgs::default()
        };
        assert!(bad_id.resolve().is_err());
        let ok = ClusterArgs {
            cluster: Some("file:///tmp/x".into()),
            worker_id: Some("w1".into()),
            ..ClusterArgs::default()
        };
        let settings = ok.resolve().unwrap().unwrap();
        assert_eq!(settings.grace, Duration::from_secs(600));
        assert_eq!(settings.heartbeat_interval, Duration::from_secs(5));
    }
}
