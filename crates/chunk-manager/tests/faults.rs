//! Origin faults (SPEC §4): permanent client errors, retried server errors, truncated,
//! reset, slow and stalled bodies, ignored ranges and redirects, against an in-process origin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chunk_manager::{ChunkManager, Error};
use chunk_origin::{Fault, Gate};
use common::{Catalog, config, temporary_entries};

fn gets(catalog: &Catalog, path: &str) -> Vec<Option<(u64, Option<u64>)>> {
    catalog
        .origin
        .requests(path)
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.range)
        .collect()
}

#[test]
fn client_errors_are_permanent_and_not_retried() {
    for status in [404u16, 403, 410] {
        let catalog = Catalog::new();
        let dir = tempfile::tempdir().unwrap();
        let manager = ChunkManager::open(config(dir.path())).unwrap();
        let chunk = catalog.simple(1, 1000);
        catalog
            .origin
            .set_fault("1/data", Some(Fault::Status(status)));
        manager.download_chunk(chunk);
        let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
        assert!(
            matches!(*error, Error::HttpStatus { status: s, .. } if s == status),
            "{error}"
        );
        assert!(!error.is_retryable());
        assert!(
            error.to_string().contains("1/data"),
            "the error names the URL: {error}"
        );
        // A refused HEAD is asked again with a GET (S3 presigned URLs refuse HEAD): 403 is
        // two requests, still no retry.
        let expected = if status == 403 { 2 } else { 1 };
        assert_eq!(
            catalog.origin.requests("1/data").len(),
            expected,
            "no retry"
        );
        assert!(manager.list_chunks().is_empty());
        manager.wait_idle_blocking();
        assert!(temporary_entries(dir.path()).is_empty());
    }
}

#[test]
fn a_404_page_on_the_data_request_is_never_saved_as_data() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 1000);
    catalog.origin.push_fault("1/data", Fault::Status(404));
    manager.download_chunk(chunk);
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(
        matches!(*error, Error::HttpStatus { status: 404, .. }),
        "{error}"
    );
    assert!(manager.list_chunks().is_empty());
}

#[test]
fn server_errors_are_retried_until_success() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 30_000);
    for status in [500, 503, 429] {
        catalog.origin.push_fault("1/data", Fault::Status(status));
    }
    manager.download_chunk(chunk);
    catalog.assert_intact(&manager.wait_ready_blocking([1; 32]).unwrap());
    assert_eq!(gets(&catalog, "1/data").len(), 4);
}

#[test]
fn server_errors_fail_the_chunk_after_the_configured_retries() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path()).with_retries(2)).unwrap();
    let chunk = catalog.simple(1, 100);
    catalog.origin.set_fault("1/data", Some(Fault::Status(500)));
    manager.download_chunk(chunk);
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(
        matches!(*error, Error::HttpStatus { status: 500, .. }),
        "{error}"
    );
    let status = manager.status(&[1; 32]).unwrap();
    assert!(
        matches!(
            status.state,
            chunk_manager::ChunkState::Failed { attempts: 3, .. }
        ),
        "{status:?}"
    );
}

#[test]
fn a_truncated_body_is_resumed_with_a_range_request() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 200_000);
    catalog
        .origin
        .push_fault("1/data", Fault::Truncate { after: 70_000 });
    manager.download_chunk(chunk);
    catalog.assert_intact(&manager.wait_ready_blocking([1; 32]).unwrap());
    let ranges = gets(&catalog, "1/data");
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], None);
    let (resume_from, _) = ranges[1].expect("the retry asks for a range");
    assert!(
        resume_from > 0 && resume_from <= 70_000,
        "resumed from {resume_from}"
    );
}

#[test]
fn a_reset_connection_is_retried_and_resumed() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 300_000);
    catalog
        .origin
        .push_fault("1/data", Fault::Reset { after: 100_000 });
    catalog
        .origin
        .push_fault("1/data", Fault::Reset { after: 0 });
    manager.download_chunk(chunk);
    catalog.assert_intact(&manager.wait_ready_blocking([1; 32]).unwrap());
    assert!(gets(&catalog, "1/data").len() >= 3);
}

#[test]
fn an_origin_that_ignores_ranges_restarts_the_file_cleanly() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 100_000);
    catalog
        .origin
        .push_fault("1/data", Fault::Truncate { after: 40_000 });
    catalog.origin.push_fault("1/data", Fault::IgnoreRange);
    manager.download_chunk(chunk);
    catalog.assert_intact(&manager.wait_ready_blocking([1; 32]).unwrap());
}

#[test]
fn a_slow_but_steady_body_is_not_timed_out() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    // Each piece arrives well within the read timeout though the whole takes longer than it.
    let manager =
        ChunkManager::open(config(dir.path()).with_read_timeout(Duration::from_millis(400)))
            .unwrap();
    let chunk = catalog.simple(1, 40_000);
    catalog.origin.push_fault(
        "1/data",
        Fault::Slow {
            piece: 4000,
            delay: Duration::from_millis(60),
        },
    );
    manager.download_chunk(chunk);
    catalog.assert_intact(&manager.wait_ready_blocking([1; 32]).unwrap());
    assert_eq!(
        gets(&catalog, "1/data").len(),
        1,
        "no retry: a slow link is not a failure"
    );
}

#[test]
fn a_stalled_body_times_out_and_is_resumed() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager =
        ChunkManager::open(config(dir.path()).with_read_timeout(Duration::from_millis(300)))
            .unwrap();
    let chunk = catalog.simple(1, 50_000);
    let gate = Gate::new();
    catalog.origin.push_fault(
        "1/data",
        Fault::Stall {
            after: 20_000,
            gate: gate.clone(),
        },
    );
    let mut events = manager.subscribe();
    manager.download_chunk(chunk);
    let retry = common::wait_event(&mut events, |e| {
        matches!(e, chunk_manager::Event::Retrying { .. })
    });
    assert!(retry.to_string().contains("no data for"), "{retry}");
    catalog.assert_intact(&manager.wait_ready_blocking([1; 32]).unwrap());
    gate.open();
    let ranges = gets(&catalog, "1/data");
    assert!(
        matches!(ranges.last(), Some(Some((from, None))) if *from > 0),
        "{ranges:?}"
    );
}

#[test]
fn redirects_are_not_followed() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 100);
    catalog.origin.set_fault("1/data", Some(Fault::Status(302)));
    manager.download_chunk(chunk);
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(error.to_string().contains("redirect"), "{error}");
    assert_eq!(catalog.origin.requests("1/data").len(), 1);
}

#[test]
fn a_refused_connection_is_retried_then_fails_the_chunk() {
    let _catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path()).with_retries(1)).unwrap();
    // A port nothing listens on: bind and drop a listener to find one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/x");
    manager.download_chunk(chunk_manager::DataChunk::new(
        [1; 32],
        [0; 32],
        0..1,
        [("f".into(), url)].into(),
    ));
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(matches!(*error, Error::Network { .. }), "{error}");
}

#[test]
fn one_failing_file_fails_only_its_chunk() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let bad = catalog.chunk(1, 0, 0..100, &[("good", 5000), ("bad", 5000)]);
    catalog.origin.set_fault("1/bad", Some(Fault::Status(404)));
    let good = catalog.simple(2, 5000);
    manager.download_chunk(bad);
    manager.download_chunk(good);
    assert!(manager.wait_ready_blocking([1; 32]).is_err());
    catalog.assert_intact(&manager.wait_ready_blocking([2; 32]).unwrap());
    manager.wait_idle_blocking();
    assert!(
        temporary_entries(dir.path()).is_empty(),
        "the failed chunk's partial files are removed"
    );
}

#[test]
fn issue10_an_origin_that_refuses_head_is_probed_with_a_get() {
    for status in [403u16, 405] {
        let catalog = Catalog::new();
        let dir = tempfile::tempdir().unwrap();
        let manager = ChunkManager::open(config(dir.path())).unwrap();
        let chunk = catalog
            .simple(1, 50_000)
            .with_check("data", chunk_manager::FileCheck::new().with_size(50_000));
        catalog.origin.refuse_head("1/data", Some(status));
        manager.download_chunk(chunk);
        let ready = manager.wait_ready_blocking([1; 32]);
        let ready = ready.unwrap_or_else(|error| panic!("HEAD {status}: {error}"));
        catalog.assert_intact(&ready);
        let requests: Vec<_> = catalog
            .origin
            .requests("1/data")
            .into_iter()
            .map(|r| (r.method, r.range, r.status))
            .collect();
        assert_eq!(
            requests,
            vec![
                ("HEAD".to_string(), None, status),
                ("GET".to_string(), Some((0, Some(0))), 206),
                ("GET".to_string(), None, 200),
            ],
            "HEAD {status}"
        );
    }
}

#[test]
fn issue10_an_empty_file_behind_a_refused_head_is_fine() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 0);
    catalog.origin.refuse_head("1/data", Some(403));
    manager.download_chunk(chunk);
    catalog.assert_intact(&manager.wait_ready_blocking([1; 32]).unwrap());
}

#[test]
fn issue10_a_404_on_head_still_fails_permanently() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 1000);
    catalog.origin.refuse_head("1/data", Some(404));
    manager.download_chunk(chunk);
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(
        matches!(*error, Error::HttpStatus { status: 404, .. }),
        "{error}"
    );
    assert_eq!(
        catalog.origin.requests("1/data").len(),
        1,
        "no GET, no retry"
    );
}
