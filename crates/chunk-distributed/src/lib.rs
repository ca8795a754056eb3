//! # chunk-distributed
//!
//! Queries across the fleet, on [datafusion-distributed](https://github.com/datafusion-contrib/datafusion-distributed)
//! (pinned `=4.0.0`). Everything that touches its API lives in this crate, so an upgrade
//! touches one place.
//!
//! - [`flight::FlightService`]: every worker serves datafusion-distributed's worker (Arrow
//!   Flight over gRPC) on a second port; with a cluster token, a request without
//!   `authorization: Bearer <token>` is refused before anything is decoded.
//! - [`Coordinator`]: any worker plans a query with the distributed planner. Each table of the
//!   query is a [`scan::ChunkTable`] over the covering chunks; its scan is split into one task
//!   per first live holder (in the placement's rendezvous order, [`FleetView`]) and each task
//!   is routed to that holder, else to any live worker. On the worker, the scan finds the
//!   chunks by id in its own catalog (nothing in a plan names a path or a URL) and pins each
//!   with `ChunkManager::fetch`: a local read when held, an on-demand download otherwise.
//!
//! - **Failover:** datafusion-distributed has no task retry. When a query fails before its
//!   first batch is returned, the coordinator probes the workers of its plan; those that do
//!   not answer are marked down for a cooldown and the query is planned again without them
//!   (each chunk then goes to its next live holder in rank order, or, with none left, to the
//!   first live worker of its rank, which downloads it), at most [`MAX_RETRIES`] times. A
//!   worker lost after the first batch ends the stream with [`DistributedError::WorkerLost`]
//!   (see [`is_worker_lost`]): the query is read-only over immutable chunks, so the client can
//!   simply run it again.
//!
//! - **Exact arithmetic:** the coordinator plans with `chunk_query::checked`'s rules (sums
//!   widened, integer `+ - *` as overflow-checked functions). datafusion-distributed's codec
//!   sends a scalar function by its name alone (its own codec comes first and claims every
//!   function with no payload, so a user codec never sees one): each worker's session
//!   registers the checked functions ([`chunk_query::checked::checked_functions`]) and the
//!   exact decimal sum ([`chunk_query::checked::checked_aggregates`]) under those names, so a
//!   stage sent to a worker overflows with the same error as on a single node.
#![deny(missing_docs)]

pub mod flight;
pub mod scan;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chunk_fleet::placement::{Ranker, WorkerCapacity};
use chunk_fleet::store::{ClusterStore, StoreError};
use chunk_manager::{ChunkId, DatasetId};
use chunk_query::checked::{CheckedArithmetic, WidenSums};
use chunk_query::{QueryEngine, QueryError};
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion_distributed::GetWorkerInfoRequest;
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{
    DistributedExt, SessionStateBuilderExt, WorkerResolver, display_plan_ascii,
};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue};
use url::Url;

use crate::flight::{TOKEN_HEADER, bearer};
use crate::scan::{ChunkScanCodec, ChunkTable, ScanPart};

/// What can go wrong serving or coordinating distributed queries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistributedError {
    /// The Flight address cannot be bound.
    #[error("cannot listen on {addr} for the flight service: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cluster token cannot be sent as a header value.
    #[error("the cluster token must be visible ASCII")]
    Token,
    /// A member advertises a Flight URL that does not parse.
    #[error("worker {worker} advertises a bad flight url {url:?}")]
    BadUrl {
        /// The worker.
        worker: String,
        /// The URL.
        url: String,
    },
    /// No live worker serves Flight.
    #[error("no live worker with a flight service in the cluster")]
    NoWorkers,
    /// The cluster store cannot be read.
    #[error("cluster store: {0}")]
    Store(#[from] StoreError),
    /// The query is refused or fails as on a single node.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The distributed plan cannot be built or run.
    #[error("distributed query: {0}")]
    Execution(#[from] DataFusionError),
    /// Workers stopped answering during the query (before its first batch, even after
    /// [`MAX_RETRIES`] retries; or after it). The query is read-only: run it again.
    #[error(
        "worker(s) {workers} of the fleet stopped answering during the query; they are skipped for a while, so running the query again is safe and should succeed ({source})"
    )]
    WorkerLost {
        /// The workers found down, comma-separated.
        workers: String,
        /// The failure the query saw.
        #[source]
        source: Box<DataFusionError>,
    },
}

/// Whether a query's stream failed because a worker was lost after its first batch (the
/// error [`Coordinator::query`]'s stream yields then wraps a [`DistributedError::WorkerLost`]).
pub fn is_worker_lost(error: &DataFusionError) -> bool {
    match error.find_root() {
        DataFusionError::External(source) => source
            .downcast_ref::<DistributedError>()
            .is_some_and(|error| matches!(error, DistributedError::WorkerLost { .. })),
        _ => false,
    }
}

impl DistributedError {
    /// Whether the client's request is at fault (bad SQL, an unknown dataset, ...).
    pub fn is_bad_request(&self) -> bool {
        match self {
            Self::Query(error) => error.is_bad_request(),
            _ => false,
        }
    }

    /// Whether workers were lost: the query may be run again.
    pub fn is_worker_lost(&self) -> bool {
        match self {
            Self::WorkerLost { .. } => true,
            Self::Execution(error) => is_worker_lost(error),
            _ => false,
        }
    }
}

/// One live worker of the fleet, as a coordinator sees it.
#[derive(Debug, Clone)]
pub struct FleetWorker {
    /// Its id.
    pub id: String,
    /// Its disk budget (the placement's weight).
    pub capacity: u64,
    /// Its Flight service.
    pub flight_url: Url,
    /// The chunks the current assignment gives it.
    pub chunks: BTreeSet<ChunkId>,
}

/// The live workers with a Flight service, and who holds which chunk.
#[derive(Debug, Clone)]
pub struct FleetView {
    workers: Vec<FleetWorker>,
    ranker: Ranker,
}

impl FleetView {
    /// A view of these workers.
    ///
    /// # Errors
    ///
    /// [`DistributedError::NoWorkers`] for none; a duplicate id is a store error.
    pub fn new(workers: Vec<FleetWorker>) -> Result<Self, DistributedError> {
        if workers.is_empty() {
            return Err(DistributedError::NoWorkers);
        }
        let capacities: Vec<WorkerCapacity> = workers
            .iter()
            .map(|worker| WorkerCapacity::new(worker.id.clone(), worker.capacity.max(1)))
            .collect();
        let ranker = Ranker::new(&capacities).map_err(|error| {
            DistributedError::Execution(DataFusionError::Plan(format!("fleet: {error}")))
        })?;
        Ok(Self { workers, ranker })
    }

    /// Reads the cluster store: the members that heartbeat within `live_within` and advertise
    /// a Flight URL, and the current assignment's chunks for each.
    ///
    /// # Errors
    ///
    /// [`DistributedError::Store`], [`DistributedError::BadUrl`], [`DistributedError::NoWorkers`].
    pub async fn load(
        store: &ClusterStore,
        live_within: Duration,
    ) -> Result<Self, DistributedError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let members = store.list_members().await?.members;
        let assignment = match store.read_state().await? {
            Some(state) => Some(store.read_assignment(&state.assignment).await?),
            None => None,
        };
        let mut workers = Vec::new();
        for member in members {
            let Some(flight) = &member.flight_url else {
                continue;
            };
            if now.saturating_sub(member.heartbeat_unix_ms) > live_within.as_millis() as u64 {
                continue;
            }
            let flight_url = Url::parse(flight).map_err(|_error| DistributedError::BadUrl {
                worker: member.worker_id.clone(),
                url: flight.clone(),
            })?;
            let chunks = assignment
                .as_ref()
                .and_then(|assignment| assignment.workers.get(&member.worker_id))
                .map(|chunks| chunks.iter().copied().collect())
                .unwrap_or_default();
            workers.push(FleetWorker {
                id: member.worker_id,
                capacity: member.capacity_bytes,
                flight_url,
                chunks,
            });
        }
        Self::new(workers)
    }

    /// Every live worker's Flight URL.
    pub fn urls(&self) -> Vec<Url> {
        self.workers
            .iter()
            .map(|worker| worker.flight_url.clone())
            .collect()
    }

    /// The live workers.
    pub fn workers(&self) -> &[FleetWorker] {
        &self.workers
    }

    /// The view without the workers whose Flight URL is in `down`.
    ///
    /// # Errors
    ///
    /// [`DistributedError::NoWorkers`] if none is left.
    pub fn without(&self, down: &HashSet<Url>) -> Result<Self, DistributedError> {
        if down.is_empty() {
            return Ok(self.clone());
        }
        Self::new(
            self.workers
                .iter()
                .filter(|worker| !down.contains(&worker.flight_url))
                .cloned()
                .collect(),
        )
    }

    /// The live worker a chunk no live worker holds is read on (downloaded there, cached):
    /// the first live worker of its rank, so every scan of the chunk in a query goes to the
    /// same one.
    pub fn fallback(&self, chunk: &ChunkId) -> Option<&FleetWorker> {
        let first = self.ranker.rank(chunk).into_iter().next()?;
        self.workers.iter().find(|worker| worker.id == first)
    }

    /// The live workers assigned `chunk`, in its rank order (the failover order).
    pub fn holders(&self, chunk: &ChunkId) -> Vec<&FleetWorker> {
        let by_id: BTreeMap<&str, &FleetWorker> = self
            .workers
            .iter()
            .map(|worker| (worker.id.as_str(), worker))
            .collect();
        self.ranker
            .rank(chunk)
            .into_iter()
            .filter_map(|id| by_id.get(id).copied())
            .filter(|worker| worker.chunks.contains(chunk))
            .collect()
    }
}

/// A fixed list of workers for one query.
struct Workers(Vec<Url>);

impl WorkerResolver for Workers {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.0.clone())
    }
}

/// Where one chunk of a distributed query is planned to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChunk {
    /// The chunk.
    pub chunk: ChunkId,
    /// The blocks read from it.
    pub blocks: Range<u64>,
    /// Its first live holder, if any: the worker the plan routes it to.
    pub holder: Option<String>,
    /// The worker that reads it: its first live holder, else the first live worker of its
    /// rank, which downloads it.
    pub worker: Option<String>,
}

/// A distributed query's results.
pub struct DistributedStream {
    /// The rows, as Arrow record batches. The first was already received when
    /// [`Coordinator::query`] returned; a worker lost after it ends the stream with an error
    /// for which [`is_worker_lost`] holds.
    pub stream: SendableRecordBatchStream,
    /// Every chunk read, and where.
    pub chunks: Vec<PlannedChunk>,
    /// Blocks of the range no chunk covers.
    pub missing: Vec<Range<u64>>,
    /// The workers found down and left out while the query was retried (empty when the
    /// first plan ran through).
    pub lost: Vec<String>,
}

/// How many times a query is planned again after losing workers before its first batch.
pub const MAX_RETRIES: usize = 2;

/// How long a worker found down is left out of the plans, unless
/// [`Coordinator::with_cooldown`] says otherwise.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

/// How long a probe of a worker's Flight port may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Workers found down, with when they may be tried again.
#[derive(Debug)]
struct Health {
    cooldown: Duration,
    down: Mutex<HashMap<Url, Instant>>,
}

impl Health {
    /// The Flight URLs still in their cooldown.
    fn down(&self) -> HashSet<Url> {
        let now = Instant::now();
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        down.retain(|_, until| *until > now);
        down.keys().cloned().collect()
    }

    fn mark(&self, workers: &[FleetWorker]) {
        let until = Instant::now() + self.cooldown;
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        for worker in workers {
            tracing::warn!(worker = %worker.id, url = %worker.flight_url, cooldown = ?self.cooldown, "worker down: left out of query plans for the cooldown");
            down.insert(worker.flight_url.clone(), until);
        }
    }
}

/// Whether the worker's Flight service answers a `GetWorkerInfo` call, on a connection of
/// its own, within [`PROBE_TIMEOUT`]. (A TCP connect alone is not enough: a process being
/// killed may still accept connections for a moment after its streams broke.)
async fn answers(url: &Url, token: Option<&HeaderValue>) -> bool {
    let token = token.cloned();
    let probe = async move {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string()).ok()?;
        let channel = endpoint.connect().await.ok()?;
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut request: http::Request<tonic::body::Body>| {
                if let Some(token) = &token {
                    request.headers_mut().insert(TOKEN_HEADER, token.clone());
                }
                request
            })
            .service(channel);
        let mut client = create_worker_client(BoxCloneSyncChannel::new(service));
        client.get_worker_info(GetWorkerInfoRequest {}).await.ok()
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(_))
    )
}

/// The workers of `view` whose Flight service does not answer, probed at once.
async fn unreachable(view: &FleetView, token: Option<&HeaderValue>) -> Vec<FleetWorker> {
    let probes = view.workers.iter().map(|worker| async move {
        (!answers(&worker.flight_url, token).await).then(|| worker.clone())
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn names(workers: &[FleetWorker]) -> String {
    workers
        .iter()
        .map(|worker| worker.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of an `EXPLAIN`: `plan_type` and `plan`, as DataFusion's.
fn explain_stream(rows: &[(&str, &str)]) -> Result<SendableRecordBatchStream, DistributedError> {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    let schema = Arc::new(Schema::new(vec![
        Field::new("plan_type", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|row| row.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|row| row.1))),
        ],
    )
    .map_err(|error| DistributedError::Execution(error.into()))?;
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter([Ok(batch)]),
    )))
}

/// Plans and runs queries across the fleet; see the crate docs.
pub struct Coordinator {
    engine: Arc<QueryEngine>,
    token: Option<String>,
    health: Arc<Health>,
}

impl Coordinator {
    /// A coordinator that plans with `engine`'s catalog and settings (and reads with its
    /// manager the scans that run here), sending `token` to workers.
    pub fn new(engine: Arc<QueryEngine>, token: Option<String>) -> Self {
        Self {
            engine,
            token,
            health: Arc::new(Health {
                cooldown: DEFAULT_COOLDOWN,
                down: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Leaves a worker found down out of the plans for `cooldown` (default
    /// [`DEFAULT_COOLDOWN`]).
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.health = Arc::new(Health {
            cooldown,
            down: Mutex::new(HashMap::new()),
        });
        self
    }

    /// Runs `sql` over `blocks` of `dataset` across `fleet`: the answer a single
    /// [`QueryEngine`] with every chunk would give. Only read-only SQL is allowed. Returns
    /// once the first batch (or the end) has arrived. A failure before it that leaves a
    /// worker of the plan unreachable marks that worker down and plans again (see the crate
    /// docs).
    ///
    /// # Errors
    ///
    /// [`DistributedError::Query`] as [`QueryEngine::query`] refuses, [`DistributedError::Execution`]
    /// if the plan fails, [`DistributedError::WorkerLost`] if workers were still lost after
    /// [`MAX_RETRIES`] retries, [`DistributedError::NoWorkers`], [`DistributedError::Token`].
    pub async fn query(
        &self,
        fleet: &FleetView,
        dataset: &DatasetId,
        blocks: Range<u64>,
        sql: &str,
    ) -> Result<DistributedStream, DistributedError> {
        let token = self.token.as_deref().map(bearer).transpose()?;
        let mut view = fleet.without(&self.health.down())?;
        let mut lost: Vec<FleetWorker> = Vec::new();
        let mut retries = 0;
        loop {
            let failure = match self.start(&view, dataset, blocks.clone(), sql).await {
                Ok(mut started) => match started.stream.next().await {
                    Some(Err(error)) => DistributedError::Execution(error),
                    first => {
                        started.stream = self.rest(first, started.stream, view, token);
                        started.lost = lost.iter().map(|worker| worker.id.clone()).collect();
                        return Ok(started);
                    }
                },
                Err(error @ DistributedError::Execution(_)) => error,
                Err(error) => return Err(error),
            };
            let down = unreachable(&view, token.as_ref()).await;
            if down.is_empty() {
                return Err(failure);
            }
            self.health.mark(&down);
            lost.extend(down.iter().cloned());
            if retries == MAX_RETRIES {
                let DistributedError::Execution(source) = failure else {
                    return Err(failure);
                };
                return Err(DistributedError::WorkerLost {
                    workers: names(&lost),
                    source: Box::new(source),
                });
            }
            retries += 1;
            tracing::warn!(
                down = %names(&down),
                retry = retries,
                error = %failure,
                "query failed before its first batch with workers down; planning it again without them"
            );
            let urls: HashSet<Url> = down.into_iter().map(|worker| worker.flight_url).collect();
            view = view.without(&urls)?;
        }
    }

    /// The stream after its first item: a failure with a worker of the plan unreachable marks
    /// it down and becomes [`DistributedError::WorkerLost`].
    fn rest(
        &self,
        first: Option<Result<datafusion::arrow::record_batch::RecordBatch, DataFusionError>>,
        rest: SendableRecordBatchStream,
        view: FleetView,
        token: Option<HeaderValue>,
    ) -> SendableRecordBatchStream {
        let schema = rest.schema();
        let health = Arc::clone(&self.health);
        let view = Arc::new(view);
        let rest = rest.then(move |item| {
            let health = Arc::clone(&health);
            let view = Arc::clone(&view);
            let token = token.clone();
            async move {
                let error = match item {
                    Ok(batch) => return Ok(batch),
                    Err(error) => error,
                };
                let down = unreachable(&view, token.as_ref()).await;
                if down.is_empty() {
                    return Err(error);
                }
                health.mark(&down);
                Err(DataFusionError::External(Box::new(
                    DistributedError::WorkerLost {
                        workers: names(&down),
                        source: Box::new(error),
                    },
                )))
            }
        });
        let stream = futures::stream::iter(first).chain(rest);
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }

    /// Plans `sql` on `fleet` and starts it.
    async fn start(
        &self,
        fleet: &FleetView,
        dataset: &DatasetId,
        blocks: Range<u64>,
        sql: &str,
    ) -> Result<DistributedStream, DistributedError> {
        let catalog = self.engine.catalog();
        let cover = catalog.cover(dataset, blocks.clone())?;
        if cover.parts.is_empty() {
            return Err(QueryError::NoChunks {
                dataset: *dataset,
                range: blocks,
            }
            .into());
        }
        let schemas = self.engine.table_schemas(dataset).await?;
        let mut chunks = Vec::new();
        let parts: Vec<ScanPart> = cover
            .parts
            .iter()
            .map(|part| {
                let id = part.chunk.id();
                let holders = fleet.holders(id);
                let worker = holders.first().copied().or_else(|| fleet.fallback(id));
                chunks.push(PlannedChunk {
                    chunk: *id,
                    blocks: part.blocks.clone(),
                    holder: holders.first().map(|worker| worker.id.clone()),
                    worker: worker.map(|worker| worker.id.clone()),
                });
                let mut route: Vec<Url> = holders
                    .iter()
                    .map(|worker| worker.flight_url.clone())
                    .collect();
                if route.is_empty() {
                    // No live holder: read (downloaded) on the chunk's first live worker.
                    route.extend(worker.map(|worker| worker.flight_url.clone()));
                }
                ScanPart {
                    chunk: *id,
                    blocks: part.blocks.clone(),
                    holders: route,
                    worker: worker.map(|worker| worker.id.clone()),
                    download: holders.is_empty(),
                }
            })
            .collect();
        let context = self.context(fleet)?;
        for (name, schema) in schemas {
            let table = ChunkTable {
                name: name.clone(),
                schema,
                parts: parts.clone(),
                block_column: self.engine.config().block_column.clone(),
                engine: self.engine.clone(),
            };
            context.register_table(TableReference::bare(name), Arc::new(table))?;
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = context
            .sql_with_options(sql, options)
            .await
            .map_err(|error| match error.find_root() {
                DataFusionError::SQL(..)
                | DataFusionError::Plan(_)
                | DataFusionError::SchemaError(..)
                | DataFusionError::NotImplemented(_) => DistributedError::Query(QueryError::Sql {
                    source: Box::new(error),
                }),
                _ => DistributedError::Execution(error),
            })?;
        match frame.logical_plan() {
            LogicalPlan::Explain(explain) => {
                // DataFusion's EXPLAIN plans its input without the distributed planner: plan it
                // here, and show the stages with the workers each chunk scan variant runs on.
                let physical = context.state().create_physical_plan(&explain.plan).await?;
                let text = display_plan_ascii(physical.as_ref(), false);
                let logical = explain.plan.display_indent().to_string();
                return Ok(DistributedStream {
                    stream: explain_stream(&[
                        ("logical_plan", &logical),
                        ("distributed_plan", &text),
                    ])?,
                    // Nothing is read.
                    chunks: Vec::new(),
                    missing: cover.missing,
                    lost: Vec::new(),
                });
            }
            LogicalPlan::Analyze(_) => {
                return Err(QueryError::Sql {
                    source: Box::new(DataFusionError::NotImplemented(
                        "EXPLAIN ANALYZE is not supported across the fleet; use EXPLAIN"
                            .to_string(),
                    )),
                }
                .into());
            }
            _ => {}
        }
        let stream = frame.execute_stream().await?;
        Ok(DistributedStream {
            stream,
            chunks,
            missing: cover.missing,
            lost: Vec::new(),
        })
    }

    /// The session of one query: the engine's settings, exact arithmetic, and the distributed
    /// planner with the chunk scan's hooks.
    fn context(&self, fleet: &FleetView) -> Result<SessionContext, DistributedError> {
        let config = self.engine.config();
        let mut session = SessionConfig::new()
            .with_batch_size(config.batch_size)
            .with_target_partitions(config.target_partitions)
            .with_information_schema(false);
        let parquet = &mut session.options_mut().execution.parquet;
        parquet.pushdown_filters = config.pushdown_filters;
        let mut builder = SessionStateBuilder::new()
            .with_config(session)
            .with_default_features()
            .with_analyzer_rule(Arc::new(WidenSums))
            .with_analyzer_rule(Arc::new(TypeCoercion::new()))
            .with_analyzer_rule(Arc::new(CheckedArithmetic))
            .with_distributed_worker_resolver(Workers(fleet.urls()))
            .with_distributed_planner()
            .with_distributed_user_codec(ChunkScanCodec::new(Some(self.engine.clone())))
            .with_distributed_desired_task_count_handler(scan::desired_task_count)
            .with_distributed_scale_up_leaf_node_handler(scan::scale_up)
            .with_distributed_route_tasks_handler(scan::route_tasks);
        if let Some(token) = &self.token {
            let mut headers = HeaderMap::new();
            headers.insert(TOKEN_HEADER, bearer(token)?);
            builder = builder.with_distributed_passthrough_headers(headers)?;
        }
        Ok(SessionContext::new_with_state(builder.build()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn worker(id: &str, port: u16, chunks: &[ChunkId]) -> FleetWorker {
        FleetWorker {
            id: id.to_string(),
            capacity: 1 << 30,
            flight_url: Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            chunks: chunks.iter().copied().collect(),
        }
    }

    #[test]
    fn issue13_failover_order_is_the_rank_order_then_the_first_live_worker() {
        let chunk: ChunkId = [3; 32];
        let ids = ["a", "b", "c", "d"];
        let all: Vec<FleetWorker> = ids
            .iter()
            .enumerate()
            .map(|(index, id)| worker(id, 9000 + index as u16, &[]))
            .collect();
        let rank: Vec<String> = FleetView::new(all.clone())
            .unwrap()
            .ranker
            .rank(&chunk)
            .into_iter()
            .map(String::from)
            .collect();
        // The chunk on the first two of its rank (R = 2).
        let workers: Vec<FleetWorker> = all
            .into_iter()
            .map(|mut worker| {
                if rank[..2].contains(&worker.id) {
                    worker.chunks.insert(chunk);
                }
                worker
            })
            .collect();
        let url = |id: &str| {
            workers
                .iter()
                .find(|worker| worker.id == id)
                .unwrap()
                .flight_url
                .clone()
        };
        let view = FleetView::new(workers.clone()).unwrap();
        let holders: Vec<&str> = view.holders(&chunk).iter().map(|w| w.id.as_str()).collect();
        assert_eq!(holders, [rank[0].as_str(), rank[1].as_str()]);
        // The first holder down: the second reads it.
        let first_down = view.without(&HashSet::from([url(&rank[0])])).unwrap();
        let holders: Vec<&str> = first_down
            .holders(&chunk)
            .iter()
            .map(|w| w.id.as_str())
            .collect();
        assert_eq!(holders, [rank[1].as_str()]);
        // Both down: no holder; the first live worker of its rank downloads it.
        let both_down = view
            .without(&HashSet::from([url(&rank[0]), url(&rank[1])]))
            .unwrap();
        assert!(both_down.holders(&chunk).is_empty());
        assert_eq!(both_down.fallback(&chunk).unwrap().id, rank[2]);
        // All down: no plan.
        let every: HashSet<Url> = workers.iter().map(|w| w.flight_url.clone()).collect();
        assert!(matches!(
            view.without(&every),
            Err(DistributedError::NoWorkers)
        ));
    }

    #[test]
    fn issue13_a_worker_found_down_is_left_out_for_the_cooldown() {
        let down = [worker("a", 9000, &[])];
        let long = Health {
            cooldown: Duration::from_secs(3600),
            down: Mutex::new(HashMap::new()),
        };
        long.mark(&down);
        assert!(long.down().contains(&down[0].flight_url));
        let over = Health {
            cooldown: Duration::ZERO,
            down: Mutex::new(HashMap::new()),
        };
        over.mark(&down);
        assert!(over.down().is_empty());
    }
}
