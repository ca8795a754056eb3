//! Test support: an origin serving generated chunks, configs with fast retries, and checks
//! that a chunk on disk is byte-identical to what the origin serves.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use chunk_manager::{ChunkId, ChunkManager, ChunkRef, Config, DataChunk, Error, Event};
use chunk_origin::{Origin, content};

/// An origin plus the bytes of every file it serves.
pub struct Catalog {
    pub origin: Origin,
    files: Mutex<HashMap<String, Bytes>>,
}

impl Catalog {
    pub fn new() -> Self {
        init_tracing();
        Self {
            origin: Origin::start().expect("origin starts"),
            files: Mutex::new(HashMap::new()),
        }
    }

    /// A chunk of `dataset` covering `range`, with files of the given names and sizes, served
    /// by the origin at `<id>/<name>`.
    pub fn chunk(
        &self,
        id: u8,
        dataset: u8,
        range: std::ops::Range<u64>,
        files: &[(&str, usize)],
    ) -> DataChunk {
        let mut urls = HashMap::new();
        for &(name, size) in files {
            let path = format!("{id}/{name}");
            let body = content(u64::from(id) << 32 | size as u64, size);
            self.origin.insert(&path, body.clone());
            self.files.lock().unwrap().insert(path.clone(), body);
            urls.insert(name.to_string(), self.origin.url(&path));
        }
        DataChunk::new([id; 32], [dataset; 32], range, urls)
    }

    /// A one-file chunk in dataset 0 covering `id*100 .. id*100+100`.
    pub fn simple(&self, id: u8, size: usize) -> DataChunk {
        let start = u64::from(id) * 100;
        self.chunk(id, 0, start..start + 100, &[("data", size)])
    }

    /// Asserts the chunk's files on disk are exactly the origin's.
    pub fn assert_intact(&self, chunk: &ChunkRef) {
        assert_dir_matches(self, chunk.id(), chunk.path());
    }

    pub fn bytes(&self, path: &str) -> Bytes {
        self.files.lock().unwrap()[path].clone()
    }
}

pub fn assert_dir_matches(catalog: &Catalog, id: &ChunkId, dir: &Path) {
    let files = catalog.files.lock().unwrap();
    let prefix = format!("{}/", id[0]);
    let mut count = 0;
    for (path, body) in files.iter().filter(|(path, _)| path.starts_with(&prefix)) {
        let name = &path[prefix.len()..];
        let on_disk = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
        assert!(
            on_disk == body[..],
            "{} differs from the origin's",
            dir.join(name).display()
        );
        count += 1;
    }
    assert!(count > 0, "no files known for chunk {}", id[0]);
}

/// Production config with fast retries and short timeouts for tests.
pub fn config(dir: &Path) -> Config {
    Config::new(dir)
        .with_retry_delays(Duration::from_millis(5), Duration::from_millis(40))
        .with_read_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(2))
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Waits (on a plain thread) for the first event matching `predicate`.
pub fn wait_event(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    predicate: impl Fn(&Event) -> bool,
) -> Event {
    loop {
        match events.blocking_recv() {
            Ok(event) if predicate(&event) => return event,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(error) => panic!("event stream ended: {error}"),
        }
    }
}

/// Entries left in the manager's temporary directory.
pub fn temporary_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("tmp"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Downloads `chunk`, whose one file `url` is missing at its object store, and checks that it
/// fails at once (one attempt, not retryable) with a 404 whose message names the file.
pub fn assert_missing_fails_at_once(manager: &ChunkManager, chunk: DataChunk, url: &str) {
    let id = *chunk.id();
    let mut events = manager.subscribe();
    manager.download_chunk(chunk);
    let error = manager.wait_ready_blocking(id).unwrap_err();
    assert!(
        matches!(*error, Error::HttpStatus { status: 404, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable(), "{error:?}");
    assert!(error.to_string().contains(url), "{error}");
    let failed = wait_event(&mut events, |event| {
        matches!(event, Event::DownloadFailed { .. } | Event::Retrying { .. })
    });
    assert!(
        matches!(failed, Event::DownloadFailed { attempts: 1, .. }),
        "not retried: {failed}"
    );
}

/// Checks that a refused request is access denied (or a bare 403), not retried, and that
/// `secret` shows nowhere in the error and its causes.
pub fn assert_denied_without(error: &Error, secret: &str) {
    assert!(
        matches!(
            error,
            Error::AccessDenied { .. } | Error::HttpStatus { status: 403, .. }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable(), "{error:?}");
    let shown = error.with_causes();
    assert!(!shown.contains(secret), "{shown}");
}

/// Puts `body` at `key` of an object store (an emulator's), from a plain thread.
pub fn put(store: &impl object_store::ObjectStore, key: &str, body: &Bytes) {
    use object_store::ObjectStoreExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(store.put(
            &object_store::path::Path::from(key),
            object_store::PutPayload::from(body.clone()),
        ))
        .unwrap();
}
