//! The daemon's HTTP API: routes, JSON views, auth and errors. Wiring only: every handler is
//! one or two calls into [`ChunkManager`].
//!
//! # Overview
//!
//! | route | what |
//! | --- | --- |
//! | `PUT /chunks/{id}` | schedule a download (body: the chunk description); 202 |
//! | `DELETE /chunks/{id}` | schedule a deletion; 202 |
//! | `PUT /assignment` | replace the whole desired set (body: a list of chunks); 202 |
//! | `GET /chunks` | ready chunks; `?status=all` for every known chunk with progress |
//! | `GET /chunks/{id}` | one chunk's status |
//! | `GET /datasets/{dataset}/blocks/{n}` | the ready chunk holding a block, or 404 |
//! | `GET /events` | server-sent events, one per manager event |
//! | `POST /query` | run SQL over a block range; streams JSON, NDJSON or Arrow IPC ([`crate::query`]) |
//! | `PUT /catalog`, `GET /catalog` | replace the query catalog; its size |
//! | `GET /datasets/{d}/schema` | the dataset's tables and their columns ([`crate::query`]) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (503 while shutting down) |
//!
//! Every error is JSON, `{"error": {"code": ..., "message": ...}}`, with a 4xx status for bad
//! requests. With a token configured, every request that is not a `GET` or `HEAD` needs
//! `Authorization: Bearer <token>`.
//!
//! # Cancellation
//!
//! Event streams end after the manager's shutdown event (or once the manager has stopped),
//! so a graceful shutdown never waits on a subscriber, and a subscriber sees the shutdown.

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use chunk_manager::{
    ChunkId, ChunkManager, ChunkRef, ChunkState, ChunkStatus, DataChunk, Event, id_from_hex,
    id_to_hex,
};
use futures::Stream;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// What every handler shares. Owned by the router; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The manager the API drives.
    pub manager: Arc<ChunkManager>,
    /// The bearer token mutating requests need, if any.
    pub token: Option<Arc<str>>,
    /// Renders the Prometheus metrics.
    pub metrics: PrometheusHandle,
    /// Cancelled when the daemon starts shutting down.
    pub shutdown: CancellationToken,
    /// Cancelled when the manager has shut down; ends the event streams.
    pub stopped: CancellationToken,
    /// The data directory, for the free-space gauge.
    pub data_dir: PathBuf,
    /// Runs queries (`POST /query`) over the catalog (`PUT /catalog`).
    pub query: crate::query::QueryService,
}

/// Builds the router.
pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/chunks", get(list_chunks))
        .route(
            "/chunks/{id}",
            put(put_chunk).delete(delete_chunk).get(get_chunk),
        )
        .route("/assignment", put(put_assignment))
        .route("/datasets/{dataset}/blocks/{block}", get(find_block))
        .route("/datasets/{dataset}/schema", get(crate::query::get_schema))
        .route("/events", get(events))
        .route("/query", axum::routing::post(crate::query::post_query))
        .route(
            "/catalog",
            put(crate::query::put_catalog).get(crate::query::get_catalog),
        )
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// An error response: a status and a JSON body naming the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_json",
        };
        // Unprocessable (well-formed JSON of the wrong shape) is reported as 400 like any
        // other malformed body; the message says which field.
        let status = match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            status => status,
        };
        Self::new(status, code, rejection.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Requires the bearer token on every request that can change state.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    match bearer(request.headers()) {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => unauthorized("the bearer token is wrong"),
        None => unauthorized("this request needs an Authorization: Bearer <token> header"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_id(text: &str, what: &str) -> ApiResult<ChunkId> {
    id_from_hex(text).map_err(|error| {
        ApiError::bad_request(
            "invalid_id",
            format!("{what} {text:?} is not valid: {error}"),
        )
    })
}

/// A chunk description as the API takes it: the `DataChunk` JSON form.
type ChunkBody = DataChunk;

#[derive(Serialize)]
struct Accepted {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunks: Option<usize>,
}

async fn put_chunk(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ChunkBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id, "chunk id")?;
    let Json(chunk) = body?;
    if chunk.id() != &id {
        return Err(ApiError::bad_request(
            "id_mismatch",
            format!(
                "the path names chunk {} but the body describes chunk {}",
                id_to_hex(&id),
                id_to_hex(chunk.id())
            ),
        ));
    }
    validate(&chunk)?;
    if let Some(known) = state.manager.status(&id)
        && (known.wanted || known.cached)
        && *known.chunk != chunk
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "chunk {} is already known with a different description; delete it first",
                id_to_hex(&id)
            ),
        ));
    }
    state.manager.download_chunk(chunk);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "accepted",
            chunk: Some(id_to_hex(&id)),
            chunks: None,
        }),
    ))
}

fn validate(chunk: &DataChunk) -> ApiResult<()> {
    chunk.validate().map_err(|error| {
        ApiError::bad_request(
            "invalid_chunk",
            format!("chunk {}: {error}", id_to_hex(chunk.id())),
        )
    })
}

async fn delete_chunk(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id, "chunk id")?;
    state.manager.delete_chunk(id);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "accepted",
            chunk: Some(id_to_hex(&id)),
            chunks: None,
        }),
    ))
}

/// The body of `PUT /assignment`: a list of chunks, bare or as `{"chunks": [...]}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum AssignmentBody {
    List(Vec<ChunkBody>),
    Object { chunks: Vec<ChunkBody> },
}

async fn put_assignment(
    State(state): State<AppState>,
    body: Result<Json<AssignmentBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body?;
    let chunks = match body {
        AssignmentBody::List(chunks) | AssignmentBody::Object { chunks } => chunks,
    };
    // All or nothing: one bad chunk refuses the whole assignment, so a typo cannot delete
    // everything else.
    let mut seen = HashSet::with_capacity(chunks.len());
    for chunk in &chunks {
        validate(chunk)?;
        if !seen.insert(*chunk.id()) {
            return Err(ApiError::bad_request(
                "duplicate_chunk",
                format!("chunk {} appears twice", id_to_hex(chunk.id())),
            ));
        }
    }
    let count = chunks.len();
    state.manager.assign(chunks);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "accepted",
            chunk: None,
            chunks: Some(count),
        }),
    ))
}

/// A ready chunk.
#[derive(Serialize)]
struct ReadyView {
    id: String,
    dataset_id: String,
    block_range: std::ops::Range<u64>,
    size: u64,
    path: PathBuf,
    files: Vec<String>,
}

impl ReadyView {
    fn new(chunk: &ChunkRef) -> Self {
        let description = chunk.chunk();
        Self {
            id: id_to_hex(chunk.id()),
            dataset_id: id_to_hex(chunk.dataset_id()),
            block_range: description.block_range(),
            size: chunk.size(),
            path: chunk.path().to_path_buf(),
            files: description.files().keys().cloned().collect(),
        }
    }
}

/// Any known chunk, with its state and progress.
#[derive(Serialize)]
struct StatusView {
    id: String,
    dataset_id: String,
    block_range: std::ops::Range<u64>,
    files: Vec<String>,
    state: &'static str,
    wanted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_done: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_needed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_available: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pinned: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<String>,
}

impl StatusView {
    fn new(status: &ChunkStatus) -> Self {
        let chunk = &status.chunk;
        let mut view = Self {
            id: id_to_hex(chunk.id()),
            dataset_id: id_to_hex(chunk.dataset_id()),
            block_range: chunk.block_range(),
            files: chunk.files().keys().cloned().collect(),
            state: status.state.name(),
            wanted: status.wanted,
            bytes_done: None,
            bytes_total: None,
            bytes_needed: None,
            bytes_available: None,
            pinned: None,
            attempts: None,
            error: None,
            rejected: status.rejected.as_ref().map(ToString::to_string),
        };
        match &status.state {
            ChunkState::Downloading {
                bytes_done,
                bytes_total,
            } => {
                view.bytes_done = Some(*bytes_done);
                view.bytes_total = *bytes_total;
            }
            ChunkState::WaitingForSpace { needed, available } => {
                view.bytes_needed = Some(*needed);
                view.bytes_available = Some(*available);
            }
            ChunkState::Deleting { pinned } => view.pinned = Some(*pinned),
            ChunkState::Failed { error, attempts } => {
                view.error = Some(error.to_string());
                view.attempts = Some(*attempts);
            }
            _ => {}
        }
        view
    }
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_chunks(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) =
        query.map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))?;
    match query.status.as_deref() {
        None | Some("ready") => {
            let mut ready: Vec<ReadyView> = state
                .manager
                .list_chunks()
                .iter()
                .filter_map(|id| state.manager.get_chunk(id))
                .map(|chunk| ReadyView::new(&chunk))
                .collect();
            ready.sort_by_cached_key(|view| {
                (
                    view.dataset_id.clone(),
                    view.block_range.start,
                    view.id.clone(),
                )
            });
            Ok(Json(ready).into_response())
        }
        Some("all") => {
            let mut all: Vec<StatusView> = state
                .manager
                .statuses()
                .iter()
                .map(StatusView::new)
                .collect();
            all.sort_by_cached_key(|view| {
                (
                    view.dataset_id.clone(),
                    view.block_range.start,
                    view.id.clone(),
                )
            });
            Ok(Json(all).into_response())
        }
        Some(other) => Err(ApiError::bad_request(
            "invalid_query",
            format!("status={other:?} is not known; use status=ready or status=all"),
        )),
    }
}

async fn get_chunk(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<StatusView>> {
    let id = parse_id(&id, "chunk id")?;
    let status = state
        .manager
        .status(&id)
        .ok_or_else(|| ApiError::not_found(format!("chunk {} is not known", id_to_hex(&id))))?;
    Ok(Json(StatusView::new(&status)))
}

async fn find_block(
    State(state): State<AppState>,
    Path((dataset, block)): Path<(String, String)>,
) -> ApiResult<Json<ReadyView>> {
    let dataset = parse_id(&dataset, "dataset id")?;
    let block: u64 = block.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_block",
            format!("block {block:?} is not a block number"),
        )
    })?;
    let chunk = state.manager.find_chunk(dataset, block).ok_or_else(|| {
        ApiError::not_found(format!(
            "no ready chunk of dataset {} holds block {block}",
            id_to_hex(&dataset)
        ))
    })?;
    Ok(Json(ReadyView::new(&chunk)))
}

/// An event as JSON, for the event stream.
#[derive(Serialize)]
struct EventView {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk: Option<String>,
    message: String,
}

impl EventView {
    fn new(event: &Event) -> Self {
        Self {
            kind: event_kind(event),
            chunk: event.chunk().map(id_to_hex),
            message: event.to_string(),
        }
    }
}

fn event_kind(event: &Event) -> &'static str {
    match event {
        Event::DownloadStarted { .. } => "download_started",
        Event::FileDownloaded { .. } => "file_downloaded",
        Event::Retrying { .. } => "retrying",
        Event::ChunkReady { .. } => "chunk_ready",
        Event::DownloadFailed { .. } => "download_failed",
        Event::ChunkDeleted { .. } => "chunk_deleted",
        Event::BudgetExceeded { .. } => "budget_exceeded",
        Event::WaitingForRefs { .. } => "waiting_for_refs",
        Event::StorageUsed { .. } => "storage_used",
        Event::Rejected { .. } => "rejected",
        Event::IoFailed { .. } => "io_failed",
        Event::Shutdown => "shutdown",
        _ => "other",
    }
}

async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    struct Subscription {
        receiver: broadcast::Receiver<Event>,
        stopped: CancellationToken,
        done: bool,
    }
    let subscription = Subscription {
        receiver: state.manager.subscribe(),
        stopped: state.stopped.clone(),
        done: false,
    };
    let stream = futures::stream::unfold(subscription, |mut subscription| async move {
        if subscription.done {
            return None;
        }
        let next = tokio::select! {
            () = subscription.stopped.cancelled() => return None,
            next = subscription.receiver.recv() => next,
        };
        let event = match next {
            Ok(event) => {
                // The manager's last word: send it, then end the stream so a graceful
                // shutdown does not wait on this subscriber.
                subscription.done = matches!(event, Event::Shutdown);
                let view = EventView::new(&event);
                SseEvent::default()
                    .event(view.kind)
                    .json_data(&view)
                    .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"))
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => SseEvent::default()
                .event("lagged")
                .data(format!("{{\"missed\":{missed}}}")),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), subscription))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    telemetry::update_gauges(&state.manager, &state.data_dir);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the daemon is shutting down",
        )
        .into_response();
    }
    "ready\n".into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
