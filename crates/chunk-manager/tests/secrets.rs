//! Secrets in URLs (issue 10, item 9): presigned signatures and credentials never appear in
//! an error, a status or an event, whatever fails: an HTTP status, a refused connection (the
//! HTTP client's own error names the URL), a redirect's `Location`, an invalid description.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use chunk_manager::{ChunkManager, DataChunk, Error, Event};
use chunk_origin::Fault;
use common::{Catalog, config};

const SECRETS: [&str; 2] = ["secret", "hunter2"];

/// Everything a failed chunk shows about itself: its error (with causes, and debug-printed),
/// its status, and every event.
fn shown(
    manager: &ChunkManager,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    id: u8,
) -> String {
    let error = manager.wait_ready_blocking([id; 32]).unwrap_err();
    let status = manager.status(&[id; 32]).unwrap();
    let mut text = format!("{}\n{error:?}\n{status:?}\n", error.with_causes());
    while let Ok(event) = events.try_recv() {
        text.push_str(&format!("{event}\n{event:?}\n"));
    }
    text
}

fn assert_no_secret(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret:?} leaked in:\n{text}");
    }
}

fn chunk(id: u8, url: String) -> DataChunk {
    DataChunk::new(
        [id; 32],
        [0; 32],
        0..10,
        HashMap::from([("data".to_string(), url)]),
    )
}

#[test]
fn issue10_a_failing_presigned_url_never_shows_its_signature_or_credentials() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path()).with_retries(1)).unwrap();
    let mut events = manager.subscribe();
    let addr = catalog.origin.addr();
    let url = |path: &str| format!("http://user:hunter2@{addr}/{path}?X-Amz-Signature=secret");

    // Retried server errors, then a failure.
    catalog.simple(1, 100);
    catalog.origin.set_fault("1/data", Some(Fault::Status(503)));
    manager.download_chunk(chunk(1, url("1/data")));
    let text = shown(&manager, &mut events, 1);
    assert!(
        text.contains("?<redacted>") && text.contains("503"),
        "{text}"
    );
    assert_no_secret(&text);

    // A redirect to a presigned URL.
    catalog.simple(2, 100);
    catalog.origin.set_fault(
        "2/data",
        Some(Fault::Redirect {
            status: 302,
            location: "http://admin:hunter2@127.0.0.1:9/x?token=secret".into(),
        }),
    );
    manager.download_chunk(chunk(2, url("2/data")));
    let text = shown(&manager, &mut events, 2);
    assert!(
        text.contains("redirect to http://127.0.0.1:9/x?<redacted>"),
        "{text}"
    );
    assert_no_secret(&text);

    // A refused connection: the HTTP client's error carries the URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("http://user:hunter2@127.0.0.1:{port}/x?X-Amz-Signature=secret");
    manager.download_chunk(chunk(3, refused));
    let error = manager.wait_ready_blocking([3; 32]).unwrap_err();
    assert!(matches!(*error, Error::Network { .. }), "{error:?}");
    assert!(
        std::error::Error::source(&*error).is_some(),
        "the cause is kept as a source"
    );
    let text = shown(&manager, &mut events, 3);
    assert_no_secret(&text);

    // An invalid description.
    manager.download_chunk(chunk(
        4,
        "ftp://user:hunter2@h/x?X-Amz-Signature=secret".into(),
    ));
    let text = shown(&manager, &mut events, 4);
    assert!(text.contains("ftp://h/x?<redacted>"), "{text}");
    assert_no_secret(&text);
}
