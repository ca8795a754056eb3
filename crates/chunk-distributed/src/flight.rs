//! The worker's Arrow Flight (gRPC) service: datafusion-distributed's `Worker`, behind the
//! cluster token.
//!
//! Every byte its connections carry is counted, through the `metrics` facade (recorded when
//! the process installs a recorder): [`BYTES_SENT`] (the Arrow results of the plan fragments
//! it runs, with their gRPC and HTTP/2 framing) and [`BYTES_RECEIVED`] (plans, their
//! metadata). Summed over the fleet's workers, they are the bytes moved between workers by
//! queries, a coordinator's calls to its own service included.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use chunk_query::QueryEngine;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion_distributed::{
    DistributedExt, Worker, WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse,
    WorkerQueryContext,
};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::DistributedError;
use crate::scan::{ChunkScanCodec, check_worker_plan};

/// Counter: bytes the Flight service wrote to its connections.
pub const BYTES_SENT: &str = "chunk_distributed_flight_bytes_sent_total";
/// Counter: bytes the Flight service read from its connections.
pub const BYTES_RECEIVED: &str = "chunk_distributed_flight_bytes_received_total";

/// The gRPC metadata key that carries the cluster token.
pub const TOKEN_HEADER: &str = "authorization";

/// The value of [`TOKEN_HEADER`] for a token: `Bearer <token>`.
pub(crate) fn bearer(token: &str) -> Result<HeaderValue, DistributedError> {
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_invalid| DistributedError::Token)
}

/// A running Flight service.
pub struct FlightService {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl FlightService {
    /// Binds `listen` and serves datafusion-distributed's worker on it, running the plan
    /// fragments it receives with `engine`'s chunks (a chunk scan pins its chunk with
    /// [`chunk_manager::ChunkManager::fetch`]). With a `token`, every request must carry
    /// `authorization: Bearer <token>` in its gRPC metadata; others are refused with
    /// `UNAUTHENTICATED` before anything is decoded. Call inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`DistributedError::Bind`] if `listen` cannot be bound, [`DistributedError::Token`] for a
    /// token that cannot be a header value.
    pub async fn start(
        listen: SocketAddr,
        engine: Arc<QueryEngine>,
        token: Option<String>,
    ) -> Result<Self, DistributedError> {
        let expected = token.as_deref().map(bearer).transpose()?;
        let listener =
            TcpListener::bind(listen)
                .await
                .map_err(|source| DistributedError::Bind {
                    addr: listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DistributedError::Bind {
                addr: listen,
                source,
            })?;
        let forwarded = expected.clone();
        let worker = Worker::from_session_builder(move |context: WorkerQueryContext| {
            let engine = engine.clone();
            let forwarded = forwarded.clone();
            async move { worker_session(context, engine, forwarded) }
        });
        let check =
            move |request: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
                match &expected {
                    None => Ok(request),
                    Some(expected) => {
                        let given = request.metadata().get(TOKEN_HEADER).map(|v| v.as_bytes());
                        if given.is_some_and(|given| constant_time_eq(given, expected.as_bytes())) {
                            Ok(request)
                        } else {
                            Err(tonic::Status::unauthenticated(
                                "the cluster token is required",
                            ))
                        }
                    }
                }
            };
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        // Without TCP_NODELAY (tonic sets it only on listeners it binds itself), small
        // replies wait for the peer's delayed ACK: about 40 ms per exchange, which made every
        // multi-worker query take 80 ms more than one on a single worker.
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
            accepted.map(|stream| {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY on a flight connection");
                }
                CountedStream::new(stream)
            })
        });
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(tonic::service::InterceptorLayer::new(check))
                .add_service(worker.into_worker_server())
                .serve_with_incoming_shutdown(incoming, stopped.cancelled_owned()),
        );
        tracing::info!(%addr, token = token.is_some(), "flight service listening");
        Ok(Self { addr, stop, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL other workers reach this service at: `http://` and the bound address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, and waits for the server to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "flight service ended with an error"),
            Err(error) => tracing::warn!(%error, "flight service task failed"),
        }
    }
}

/// The session a plan fragment runs in on this worker: the chunk scan codec (bound to this
/// worker's engine), the checked integer functions of `chunk_query::checked`, the check that refuses a fragment whose leaves are not chunk scans of
/// this worker's catalog, and the token forwarded on the fragment's own calls to other
/// workers.
fn worker_session(
    context: WorkerQueryContext,
    engine: Arc<QueryEngine>,
    token: Option<HeaderValue>,
) -> Result<SessionState, DataFusionError> {
    let checked = Arc::clone(&engine);
    let mut builder = context
        .builder
        .with_distributed_user_codec(ChunkScanCodec::new(Some(engine)))
        .with_distributed_worker_plan_rewrite_handler(move |event: WorkerPlanRewriteEvent<'_>| {
            check_worker_plan(&checked, &event.plan)?;
            Ok(WorkerPlanRewriteEventResponse::new(event.plan))
        });
    // The coordinator's exact integer `+ - *` and decimal sums arrive by name
    // (datafusion-distributed's codec sends a function's name only): found here.
    builder
        .scalar_functions()
        .get_or_insert_with(Vec::new)
        .extend(chunk_query::checked::checked_functions());
    builder
        .aggregate_functions()
        .get_or_insert_with(Vec::new)
        .extend(chunk_query::checked::checked_aggregates());
    if let Some(token) = token {
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN_HEADER, token);
        builder = builder.with_distributed_passthrough_headers(headers)?;
    }
    Ok(builder.build())
}

/// A connection whose bytes are counted as [`BYTES_SENT`] and [`BYTES_RECEIVED`].
struct CountedStream {
    inner: TcpStream,
    sent: metrics::Counter,
    received: metrics::Counter,
}

impl CountedStream {
    fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            sent: metrics::counter!(BYTES_SENT),
            received: metrics::counter!(BYTES_RECEIVED),
        }
    }
}

impl tonic::transport::server::Connected for CountedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.received
                .increment(buf.filled().len().saturating_sub(before) as u64);
        }
        polled
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            this.sent.increment(written as u64);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled {
            this.sent.increment(written as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Compares without returning early on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use chunk_manager::{ChunkManager, Config};
    use chunk_query::{Catalog, synth};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::ExecutionPlan;
    use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    use datafusion_distributed::grpc::DefaultChannelResolver;
    use datafusion_distributed::{ChannelResolver, MaybeEncoded, SetPlanRequest, TaskKey};
    use futures::StreamExt;
    use url::Url;

    use super::*;
    use crate::scan::{ChunkScanExec, ScanPart, ScanSpec};

    const TOKEN: &str = "fleet-secret";
    const DATASET: [u8; 32] = [7; 32];

    /// Sends `plan` to the worker at `url` as datafusion-distributed's coordinator does (the
    /// right token, the plan encoded with the chunk scan codec); the worker's refusal, if any.
    async fn set_plan(url: &Url, plan: Arc<dyn ExecutionPlan>, query: u128) -> Result<(), String> {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_distributed_user_codec(ChunkScanCodec::new(None))
            .build();
        let context = state.task_ctx();
        let mut client = DefaultChannelResolver::default()
            .get_worker_client_for_url(url)
            .await
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN_HEADER, bearer(TOKEN).unwrap());
        let request = SetPlanRequest {
            task_key: TaskKey {
                query_id: uuid::Uuid::from_u128(query),
                stage_id: 1,
                task_number: 0,
            },
            task_count: 1,
            plan: MaybeEncoded::Decoded(plan),
            work_unit_feed_declarations: Vec::new(),
            target_worker_url: url.clone(),
            query_start_time_ns: 0,
        };
        client
            .coordinator_channel(
                headers,
                request,
                // The end of the query right after its plan: the worker has decoded and
                // checked the plan by the time it answers, and lets the task go at once.
                futures::stream::empty().boxed(),
                ExecutionPlanMetricsSet::new(),
                &context,
            )
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issue13_plan_with_a_non_chunk_leaf_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A worker whose catalog has one chunk; a Parquet file of the same data on its disk.
        let chunk = synth::Synth::new(synth::SynthConfig::small())
            .chunk(&DATASET, 0..100)
            .unwrap();
        let described = chunk.describe(&DATASET, |path| format!("http://127.0.0.1:9/{path}"));
        let local = dir.path().join("blocks.parquet");
        let (_, bytes) = chunk
            .files
            .iter()
            .find(|(name, _)| name == "blocks.parquet")
            .unwrap();
        std::fs::write(&local, bytes).unwrap();
        let manager = Arc::new(ChunkManager::open(Config::new(dir.path().join("data"))).unwrap());
        let catalog = Catalog::new(vec![described.clone()])
            .unwrap()
            .with_schemas(DATASET, synth::schemas());
        let engine = Arc::new(QueryEngine::new(manager, catalog).unwrap());
        let service = FlightService::start(
            "127.0.0.1:0".parse().unwrap(),
            engine,
            Some(TOKEN.to_string()),
        )
        .await
        .unwrap();
        let url = Url::parse(&service.url()).unwrap();

        let schema = synth::schemas()
            .into_iter()
            .find(|(name, _)| name == "blocks")
            .unwrap()
            .1;
        let scan = |chunk: chunk_manager::ChunkId| -> Arc<dyn ExecutionPlan> {
            Arc::new(
                ChunkScanExec::new(
                    ScanSpec {
                        table: "blocks".to_string(),
                        table_schema: schema.clone(),
                        projection: None,
                        block_column: "block_number".to_string(),
                    },
                    vec![ScanPart {
                        chunk,
                        blocks: 0..100,
                        holders: Vec::new(),
                        worker: None,
                        download: false,
                    }],
                    1,
                    None,
                    None,
                )
                .unwrap(),
            )
        };
        // A chunk scan of its catalog is accepted.
        set_plan(&url, scan(*described.id()), 1)
            .await
            .expect("a chunk scan of the catalog runs");
        // A chunk it does not know is refused.
        let refused = set_plan(&url, scan([9; 32]), 2).await.unwrap_err();
        assert!(
            refused.contains("not in this worker's catalog"),
            "{refused}"
        );
        // A Parquet scan of a path on the worker is refused.
        let context = SessionContext::new();
        let parquet = context
            .read_parquet(local.display().to_string(), ParquetReadOptions::default())
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let refused = set_plan(&url, parquet, 3).await.unwrap_err();
        assert!(refused.contains("plan refused"), "{refused}");
        assert!(refused.contains("DataSourceExec"), "{refused}");
        // So is inline data (a memory table).
        let batches = context
            .read_parquet(local.display().to_string(), ParquetReadOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let memory = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
            std::slice::from_ref(&batches),
            batches[0].schema(),
            None,
        )
        .unwrap();
        let refused = set_plan(&url, memory, 4).await.unwrap_err();
        assert!(refused.contains("plan refused"), "{refused}");
        service.shutdown().await;
    }
}
