//! The daemon's side of distributed queries: its Arrow Flight service and the coordinator path
//! of `POST /query`. datafusion-distributed itself is used only in the `chunk-distributed`
//! crate.
//!
//! - The Flight service (datafusion-distributed's worker) runs on the query runtime, on
//!   `--flight-listen`: by default `127.0.0.1:0` (an ephemeral loopback port) when the worker
//!   joins a fleet (`--cluster`), off otherwise. Its URL (`http://` and the bound address) is
//!   advertised in the heartbeat. With `--cluster-token`, a request without
//!   `authorization: Bearer <token>` is refused.
//! - A worker in a fleet answers `POST /query` by planning distributed: the live members'
//!   Flight URLs and the current assignment come from the cluster store at each query, each
//!   chunk's scan is routed to its first live holder in the placement's rank order, and the
//!   scans run on the workers with their own catalog and `ChunkManager`. Workers found down
//!   are left out for a cooldown and the query is planned again (see `chunk_distributed`);
//!   the coordinator, and so that memory, lives as long as the daemon.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chunk_distributed::flight::FlightService;
use chunk_distributed::{Coordinator, DistributedError, DistributedStream, FleetView};
use chunk_fleet::store::ClusterStore;
use chunk_manager::DatasetId;
use chunk_query::QueryEngine;

use crate::cluster::ClusterArgs;

/// The daemon's distributed query options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DistributedArgs {
    /// Where the Arrow Flight service for distributed queries listens, such as
    /// 127.0.0.1:7001 [default: 127.0.0.1:0 with --cluster, else off].
    #[arg(long, env = "CHUNK_WORKER_FLIGHT_LISTEN", value_name = "ADDR")]
    pub flight_listen: Option<SocketAddr>,
    /// The fleet's shared secret: required on every Flight request this worker serves, and
    /// sent on those it makes [default: none, no check].
    #[arg(
        long,
        env = "CHUNK_WORKER_CLUSTER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub cluster_token: Option<String>,
    /// How long a worker found down during a query is left out of the query plans this
    /// worker makes [default: 30s].
    #[arg(long, env = "CHUNK_WORKER_WORKER_COOLDOWN", value_name = "DURATION", value_parser = crate::settings::parse_duration)]
    pub worker_cooldown: Option<Duration>,
}

/// How long a member may be silent and still get query tasks, unless `--member-timeout` says.
const DEFAULT_LIVE_WITHIN: Duration = Duration::from_secs(60);

/// Starts the Flight service on the query runtime if it is on (see the module docs), and
/// returns it with the fleet's query path (when `--cluster` is set).
pub fn start(
    args: &DistributedArgs,
    cluster: &ClusterArgs,
    engine: Arc<QueryEngine>,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<(Option<FlightService>, Option<FleetQueries>)> {
    let listen = match (args.flight_listen, &cluster.cluster) {
        (Some(listen), _) => Some(listen),
        (None, Some(_)) => Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        (None, None) => None,
    };
    let flight = match listen {
        None => None,
        Some(listen) => Some(
            runtime
                .block_on(FlightService::start(
                    listen,
                    engine.clone(),
                    args.cluster_token.clone(),
                ))
                .context("start the flight service")?,
        ),
    };
    let fleet = match &cluster.cluster {
        None => None,
        Some(url) => Some(FleetQueries {
            coordinator: Coordinator::new(engine, args.cluster_token.clone()).with_cooldown(
                args.worker_cooldown
                    .unwrap_or(chunk_distributed::DEFAULT_COOLDOWN),
            ),
            store: ClusterStore::open(url)
                .with_context(|| format!("open the cluster store {url}"))?,
            live_within: cluster.member_timeout.unwrap_or(DEFAULT_LIVE_WITHIN),
        }),
    };
    Ok((flight, fleet))
}

/// The fleet's query path of a worker in a fleet.
pub struct FleetQueries {
    coordinator: Coordinator,
    store: ClusterStore,
    live_within: Duration,
}

impl FleetQueries {
    /// Plans and starts `sql` across the fleet's live workers.
    pub async fn query(
        &self,
        dataset: &DatasetId,
        blocks: Range<u64>,
        sql: &str,
    ) -> Result<DistributedStream, DistributedError> {
        let view = FleetView::load(&self.store, self.live_within).await?;
        self.coordinator.query(&view, dataset, blocks, sql).await
    }
}
