//! An in-process HTTP/1.1 origin on 127.0.0.1 serving in-memory files, with fault injection.
//!
//! Tests, the demo and the daemon's tests use it in place of a real file server. It is
//! written on plain tokio sockets so that faults are exact: a body cut after N bytes, a
//! connection reset, a stall held at a [`Gate`] until the test opens it.
//!
//! ```
//! use chunk_origin::{Fault, Origin, content};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let origin = Origin::start()?;
//! origin.insert("chunk/blocks", content(1, 1000));
//! origin.push_fault("chunk/blocks", Fault::Status(503));
//!
//! let client = reqwest::Client::new();
//! let first = client.get(origin.url("chunk/blocks")).send().await?;
//! assert_eq!(first.status(), 503);
//! let second = client.get(origin.url("chunk/blocks")).send().await?;
//! assert_eq!(second.bytes().await?, content(1, 1000));
//! assert_eq!(origin.get_count("chunk/blocks"), 2);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod azurite;
mod gate;
mod http;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

pub use gate::Gate;

/// A fault to inject into a response.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Respond with this status and a small HTML error page instead of the file.
    Status(u16),
    /// Send the headers with the full `Content-Length`, then `after` body bytes, then close
    /// the connection cleanly.
    Truncate {
        /// Body bytes sent before closing.
        after: u64,
    },
    /// Send the headers and `after` body bytes, then reset the connection (RST).
    Reset {
        /// Body bytes sent before the reset.
        after: u64,
    },
    /// Send the body in pieces of `piece` bytes, waiting `delay` between pieces.
    Slow {
        /// Bytes per piece.
        piece: usize,
        /// The wait between pieces.
        delay: Duration,
    },
    /// Send the headers and `after` body bytes, then hold until `gate` opens, then send the
    /// rest. Stops if the client goes away meanwhile.
    Stall {
        /// Body bytes sent before the stall.
        after: u64,
        /// The gate that releases the stall.
        gate: Gate,
    },
    /// Ignore any `Range` header: answer 200 with the whole body.
    IgnoreRange,
    /// Send the headers and `after` body bytes, then hold until `gate` opens, then reset the
    /// connection: a cut the test can act during (say, replace the file).
    Cut {
        /// Body bytes sent before the cut.
        after: u64,
        /// The gate that releases the reset.
        gate: Gate,
    },
    /// Answer with a redirect of this status to this `Location`.
    Redirect {
        /// The status, 301, 302, 307, ...
        status: u16,
        /// The `Location` header sent.
        location: String,
    },
    /// Send the body with the byte at offset `at` of the file flipped (corruption in
    /// transit: the length and headers are right, the content is not).
    Corrupt {
        /// The file offset of the flipped byte.
        at: u64,
    },
}

/// Which validators the origin sends for a file, and so how a client can pin a resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Validators {
    /// A strong `ETag` (the default): `If-Match` and `If-Range` work.
    #[default]
    StrongEtag,
    /// Only a weak `ETag` (`W/"..."`): it never matches `If-Match` or `If-Range`.
    WeakEtag,
    /// No `ETag`, only `Last-Modified` (a fixed date whatever the content).
    LastModified,
    /// Neither an `ETag` nor `Last-Modified`.
    None,
}

/// One request the origin received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path, without the leading `/` or a query.
    pub path: String,
    /// The requested byte range `(first, last)`, if any.
    pub range: Option<(u64, Option<u64>)>,
    /// The status answered.
    pub status: u16,
}

/// What the server tasks share with the [`Origin`] handle.
#[derive(Debug, Default)]
struct State {
    files: Mutex<HashMap<String, Bytes>>,
    queued: Mutex<HashMap<String, VecDeque<Fault>>>,
    persistent: Mutex<HashMap<String, Fault>>,
    validators: Mutex<HashMap<String, Validators>>,
    head_status: Mutex<HashMap<String, u16>>,
    requests: Mutex<Vec<RequestRecord>>,
    bytes_served: AtomicU64,
}

/// Locks a mutex; the data behind these locks stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn file(&self, path: &str) -> Option<Bytes> {
        lock(&self.files).get(path).cloned()
    }

    /// The fault for this request: a queued one (GET only) first, then the persistent one.
    fn fault(&self, path: &str, is_get: bool) -> Option<Fault> {
        if is_get
            && let Some(fault) = lock(&self.queued)
                .get_mut(path)
                .and_then(VecDeque::pop_front)
        {
            return Some(fault);
        }
        lock(&self.persistent).get(path).cloned()
    }

    fn validators(&self, path: &str) -> Validators {
        lock(&self.validators)
            .get(path)
            .copied()
            .unwrap_or_default()
    }

    fn head_status(&self, path: &str) -> Option<u16> {
        lock(&self.head_status).get(path).copied()
    }

    fn record(&self, record: RequestRecord) {
        lock(&self.requests).push(record);
    }
}

/// An HTTP origin on `127.0.0.1`, serving on its own background thread and runtime, so it
/// works from plain threads and from any tokio runtime. Stops when dropped.
#[derive(Debug)]
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Origin {
    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start() -> std::io::Result<Origin> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let (stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chunk-origin")
            .enable_all()
            .build()?;
        let server_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("chunk-origin".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => http::serve(listener, server_state, stopped).await,
                        Err(error) => tracing::error!(%error, "origin cannot listen"),
                    }
                });
                // Connections still open end with the runtime, here on the origin's thread.
                runtime.shutdown_background();
            })?;
        Ok(Origin {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the origin listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of `path` (given without a leading `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Serves `body` at `path` (replacing what was there).
    pub fn insert(&self, path: &str, body: Bytes) {
        lock(&self.state.files).insert(path.trim_start_matches('/').to_string(), body);
    }

    /// Stops serving `path` (404 from now on).
    pub fn remove(&self, path: &str) {
        lock(&self.state.files).remove(path.trim_start_matches('/'));
    }

    /// Queues a fault for the next `GET` of `path`; each `GET` consumes at most one.
    pub fn push_fault(&self, path: &str, fault: Fault) {
        lock(&self.state.queued)
            .entry(path.trim_start_matches('/').to_string())
            .or_default()
            .push_back(fault);
    }

    /// Sets (or with `None` clears) a fault applied to every request of `path`. Queued faults
    /// come first. For `HEAD` only [`Fault::Status`] has an effect.
    pub fn set_fault(&self, path: &str, fault: Option<Fault>) {
        let path = path.trim_start_matches('/').to_string();
        let mut persistent = lock(&self.state.persistent);
        match fault {
            Some(fault) => persistent.insert(path, fault),
            None => persistent.remove(&path),
        };
    }

    /// Sets which validators `path` is served with (see [`Validators`]).
    pub fn set_validators(&self, path: &str, validators: Validators) {
        lock(&self.state.validators).insert(path.trim_start_matches('/').to_string(), validators);
    }

    /// Makes every `HEAD` of `path` answer `status` (say 403 or 405, as S3 presigned `GET`
    /// URLs do) while `GET` works; `None` serves `HEAD` again.
    pub fn refuse_head(&self, path: &str, status: Option<u16>) {
        let path = path.trim_start_matches('/').to_string();
        let mut refused = lock(&self.state.head_status);
        match status {
            Some(status) => refused.insert(path, status),
            None => refused.remove(&path),
        };
    }

    /// Every request seen for `path`, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<RequestRecord> {
        let path = path.trim_start_matches('/');
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many `GET` requests `path` received.
    pub fn get_count(&self, path: &str) -> usize {
        self.requests(path)
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    }

    /// How many requests the origin received, for any path.
    pub fn total_requests(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// Body bytes written to clients.
    pub fn bytes_served(&self) -> u64 {
        self.state.bytes_served.load(Ordering::Relaxed)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the origin's thread panicked");
        }
    }
}

/// Deterministic pseudo-random bytes: the same `(seed, len)` always gives the same content.
/// Fast enough to generate hundreds of megabytes (splitmix64).
pub fn content(seed: u64, len: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(len + 8);
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    while bytes.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(len);
    Bytes::from(bytes)
}
