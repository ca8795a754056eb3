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
//! Not yet: retry on a worker failing mid-query, `EXPLAIN` naming workers, refusing
//! non-chunk leaves on the worker (its codec decodes only chunk scans, but DataFusion's own
//! nodes still decode), integer arithmetic (`+ - *` checked by `chunk_query::checked`) inside
//! a stage sent to a worker.
#![deny(missing_docs)]

pub mod flight;
pub mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chunk_fleet::placement::{Ranker, WorkerCapacity};
use chunk_fleet::store::{ClusterStore, StoreError};
use chunk_manager::{ChunkId, DatasetId};
use chunk_query::checked::{CheckedArithmetic, WidenSums};
use chunk_query::{QueryEngine, QueryError};
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder};
use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion_distributed::{DistributedExt, SessionStateBuilderExt, WorkerResolver};
use http::HeaderMap;
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
}

impl DistributedError {
    /// Whether the client's request is at fault (bad SQL, an unknown dataset, ...).
    pub fn is_bad_request(&self) -> bool {
        match self {
            Self::Query(error) => error.is_bad_request(),
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
    /// The worker the plan routes it to (its first live holder), if any holds it.
    pub holder: Option<String>,
}

/// A distributed query's results.
pub struct DistributedStream {
    /// The rows, as Arrow record batches.
    pub stream: SendableRecordBatchStream,
    /// Every chunk read, and where.
    pub chunks: Vec<PlannedChunk>,
    /// Blocks of the range no chunk covers.
    pub missing: Vec<Range<u64>>,
}

/// Plans and runs queries across the fleet; see the crate docs.
pub struct Coordinator {
    engine: Arc<QueryEngine>,
    token: Option<String>,
}

impl Coordinator {
    /// A coordinator that plans with `engine`'s catalog and settings (and reads with its
    /// manager the scans that run here), sending `token` to workers.
    pub fn new(engine: Arc<QueryEngine>, token: Option<String>) -> Self {
        Self { engine, token }
    }

    /// Runs `sql` over `blocks` of `dataset` across `fleet`: the answer a single
    /// [`QueryEngine`] with every chunk would give. Only read-only SQL is allowed.
    ///
    /// # Errors
    ///
    /// [`DistributedError::Query`] as [`QueryEngine::query`] refuses, [`DistributedError::Execution`]
    /// if the plan fails, [`DistributedError::Token`].
    pub async fn query(
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
                let holders = fleet.holders(part.chunk.id());
                chunks.push(PlannedChunk {
                    chunk: *part.chunk.id(),
                    blocks: part.blocks.clone(),
                    holder: holders.first().map(|worker| worker.id.clone()),
                });
                ScanPart {
                    chunk: *part.chunk.id(),
                    blocks: part.blocks.clone(),
                    holders: holders
                        .iter()
                        .map(|worker| worker.flight_url.clone())
                        .collect(),
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
        let stream = frame.execute_stream().await?;
        Ok(DistributedStream {
            stream,
            chunks,
            missing: cover.missing,
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
