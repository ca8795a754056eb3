//! The worker's Arrow Flight (gRPC) service: datafusion-distributed's `Worker`, behind the
//! cluster token.

use std::net::SocketAddr;
use std::sync::Arc;

use chunk_query::QueryEngine;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion_distributed::{DistributedExt, Worker, WorkerQueryContext};
use http::{HeaderMap, HeaderValue};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::DistributedError;
use crate::scan::ChunkScanCodec;

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
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
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
/// worker's engine) and the token forwarded on the fragment's own calls to other workers.
fn worker_session(
    context: WorkerQueryContext,
    engine: Arc<QueryEngine>,
    token: Option<HeaderValue>,
) -> Result<SessionState, DataFusionError> {
    let mut builder = context
        .builder
        .with_distributed_user_codec(ChunkScanCodec::new(Some(engine)));
    if let Some(token) = token {
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN_HEADER, token);
        builder = builder.with_distributed_passthrough_headers(headers)?;
    }
    Ok(builder.build())
}

/// Compares without returning early on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
