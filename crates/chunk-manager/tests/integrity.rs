//! End-to-end integrity over HTTP: declared sizes and checksums are checked, a mismatch is
//! retried from the first byte and then fails the chunk clearly, corruption in transit is
//! caught, the manifest records the checksums, and a file replaced while a download was cut
//! is downloaded again whole instead of stitched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chunk_manager::{Checksum, ChunkManager, DataChunk, Error, Event, FileCheck};
use chunk_origin::{Fault, Gate, Validators, content};
use common::{Catalog, config, temporary_entries, wait_event};
use sha2::Digest as _;

fn sha256(bytes: &[u8]) -> Checksum {
    Checksum::Sha256(sha2::Sha256::digest(bytes).into())
}

fn manifest(chunk: &chunk_manager::ChunkRef) -> serde_json::Value {
    let text = std::fs::read(chunk.path().join(".manifest.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

#[test]
fn declared_sizes_and_checksums_are_checked_and_recorded() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let files = [("a", 70_000), ("b", 1234), ("c", 99_999)];
    let chunk = catalog.chunk(1, 0, 0..10, &files);
    let (a, b, c) = (
        catalog.bytes("1/a"),
        catalog.bytes("1/b"),
        catalog.bytes("1/c"),
    );
    let chunk = chunk
        .with_check(
            "a",
            FileCheck::new().with_size(70_000).with_checksum(sha256(&a)),
        )
        .with_check(
            "b",
            FileCheck::new().with_checksum(Checksum::Crc32c(crc32c::crc32c(&b))),
        )
        .with_check(
            "c",
            FileCheck::new().with_checksum(Checksum::Blake3(*blake3::hash(&c).as_bytes())),
        );
    manager.download_chunk(chunk);
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    catalog.assert_intact(&ready);
    let manifest = manifest(&ready);
    assert_eq!(manifest["files"]["a"]["checksum"], sha256(&a).to_string());
    assert_eq!(
        manifest["files"]["b"]["checksum"],
        format!("crc32c:{:08x}", crc32c::crc32c(&b))
    );
    assert!(manifest["files"]["a"]["etag"].is_string(), "{manifest}");
    assert_eq!(manifest["chunk"]["checks"]["a"]["size"], 70_000);
}

#[test]
fn a_checksum_mismatch_is_retried_from_the_first_byte_then_fails_the_chunk() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path()).with_retries(2)).unwrap();
    let mut events = manager.subscribe();
    let wrong = Checksum::Sha256([7; 32]);
    let chunk = catalog
        .simple(1, 50_000)
        .with_check("data", FileCheck::new().with_checksum(wrong));
    manager.download_chunk(chunk);
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    match &*error {
        Error::ChecksumMismatch {
            file,
            algorithm,
            expected,
            actual,
            ..
        } => {
            assert_eq!(file, "data");
            assert_eq!(*algorithm, chunk_manager::ChecksumAlgorithm::Sha256);
            assert_eq!(&**expected, "07".repeat(32));
            let data = catalog.bytes("1/data");
            assert_eq!(&**actual, &sha256(&data).to_string()["sha256:".len()..]);
        }
        other => panic!("{other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("sha256") && message.contains("\"data\""),
        "{message}"
    );
    let retried = wait_event(&mut events, |event| matches!(event, Event::Retrying { .. }));
    assert!(retried.to_string().contains("sha256"), "{retried}");
    // Every attempt downloaded the whole file: never a resume onto bad bytes.
    let gets: Vec<_> = catalog
        .origin
        .requests("1/data")
        .into_iter()
        .filter(|request| request.method == "GET")
        .collect();
    assert_eq!(gets.len(), 3, "the first attempt and two retries");
    assert!(
        gets.iter().all(|request| request.range.is_none()),
        "{gets:?}"
    );
    manager.wait_idle_blocking();
    assert!(temporary_entries(dir.path()).is_empty());
    assert!(manager.list_chunks().is_empty());
}

#[test]
fn a_wrong_declared_size_fails_before_downloading() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path()).with_retries(1)).unwrap();
    let chunk = catalog
        .simple(1, 5_000)
        .with_check("data", FileCheck::new().with_size(4_999));
    manager.download_chunk(chunk);
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(
        matches!(
            *error,
            Error::SizeMismatch {
                expected: 4_999,
                actual: 5_000,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(catalog.origin.get_count("1/data"), 0, "no byte was fetched");
}

#[test]
fn corruption_in_transit_is_caught_and_the_file_downloaded_again() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 80_000);
    let data = catalog.bytes("1/data");
    let chunk = chunk.with_check("data", FileCheck::new().with_checksum(sha256(&data)));
    catalog
        .origin
        .push_fault("1/data", Fault::Corrupt { at: 40_000 });
    manager.download_chunk(chunk);
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    catalog.assert_intact(&ready);
    assert_eq!(catalog.origin.get_count("1/data"), 2);
}

#[test]
fn a_file_replaced_during_a_resume_is_downloaded_again_not_stitched() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let gate = Gate::new();
    let chunk = catalog.simple(1, 200_000);
    catalog.origin.push_fault(
        "1/data",
        Fault::Cut {
            after: 100_000,
            gate: gate.clone(),
        },
    );
    manager.download_chunk(chunk);
    assert!(gate.wait_reached(Duration::from_secs(30)));
    // Same size, new content: only the ETag tells them apart.
    let replacement = content(999, 200_000);
    catalog.origin.insert("1/data", replacement.clone());
    gate.open();
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    let on_disk = std::fs::read(ready.path().join("data")).unwrap();
    assert!(on_disk == replacement[..], "the new version, whole");
    let statuses: Vec<_> = catalog
        .origin
        .requests("1/data")
        .into_iter()
        .filter(|request| request.method == "GET")
        .map(|request| (request.range, request.status))
        .collect();
    assert_eq!(
        statuses,
        vec![(None, 200), (Some((100_000, None)), 200)],
        "cut, then the resume pinned with If-Range answered with the whole new version"
    );
}

#[test]
fn a_check_for_a_file_the_chunk_does_not_have_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = DataChunk::new(
        [1; 32],
        [0; 32],
        0..10,
        HashMap::from([("a".to_string(), "http://127.0.0.1:1/a".to_string())]),
    )
    .with_check("b", FileCheck::new().with_size(1));
    manager.download_chunk(chunk);
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(*error, Error::InvalidChunk { .. }) && message.contains("\"b\""),
        "{message}"
    );
}

#[test]
fn file_urls_are_refused_unless_allowed() {
    let source = tempfile::tempdir().unwrap();
    let path = source.path().join("blocks");
    std::fs::write(&path, content(5, 3000)).unwrap();
    let url = format!("file://{}", path.display());
    let chunk = DataChunk::new(
        [1; 32],
        [0; 32],
        0..10,
        HashMap::from([("blocks".to_string(), url)]),
    );

    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    manager.download_chunk(chunk.clone());
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(error.to_string().contains("allow_file_urls"), "{error}");
    manager.shutdown_blocking();
    drop(manager);

    let manager = ChunkManager::open(config(dir.path()).with_file_urls(true)).unwrap();
    manager.download_chunk(chunk);
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    assert!(std::fs::read(ready.path().join("blocks")).unwrap() == content(5, 3000)[..]);
}

/// Cuts the download of a 200,000-byte file at 100,000 bytes, replaces the file (same size,
/// new content) during the cut, and returns the committed bytes, the replacement, and the
/// GETs' (range, status).
/// A GET's range and status, as the origin recorded them.
type Get = (Option<(u64, Option<u64>)>, u16);

fn cut_and_replace(validators: Validators) -> (Vec<u8>, bytes::Bytes, Vec<Get>) {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let gate = Gate::new();
    let chunk = catalog.simple(1, 200_000);
    catalog.origin.set_validators("1/data", validators);
    catalog.origin.push_fault(
        "1/data",
        Fault::Cut {
            after: 100_000,
            gate: gate.clone(),
        },
    );
    manager.download_chunk(chunk);
    assert!(gate.wait_reached(Duration::from_secs(30)));
    let replacement = content(999, 200_000);
    catalog.origin.insert("1/data", replacement.clone());
    gate.open();
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    let on_disk = std::fs::read(ready.path().join("data")).unwrap();
    let gets = catalog
        .origin
        .requests("1/data")
        .into_iter()
        .filter(|request| request.method == "GET")
        .map(|request| (request.range, request.status))
        .collect();
    (on_disk, replacement, gets)
}

#[test]
fn issue10_resume_without_a_strong_validator_starts_over_and_never_stitches() {
    for validators in [
        Validators::None,
        Validators::WeakEtag,
        Validators::LastModified,
    ] {
        let (on_disk, replacement, gets) = cut_and_replace(validators);
        assert!(
            on_disk == replacement[..],
            "{validators:?}: the committed file is the new version, whole, not a mix"
        );
        assert_eq!(
            gets,
            vec![(None, 200), (None, 200)],
            "{validators:?}: no Range without a strong validator"
        );
    }
}

#[test]
fn issue10_resume_with_a_strong_etag_replaced_during_the_cut_takes_the_whole_new_version() {
    let (on_disk, replacement, gets) = cut_and_replace(Validators::StrongEtag);
    assert!(on_disk == replacement[..], "the new version, whole");
    assert_eq!(
        gets,
        vec![(None, 200), (Some((100_000, None)), 200)],
        "the If-Range resume answered with the whole new version, used as is"
    );
}

#[test]
fn issue10_resume_with_a_strong_etag_still_fetches_only_the_rest() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 200_000);
    catalog
        .origin
        .push_fault("1/data", Fault::Truncate { after: 80_000 });
    manager.download_chunk(chunk);
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    catalog.assert_intact(&ready);
    let gets: Vec<_> = catalog
        .origin
        .requests("1/data")
        .into_iter()
        .filter(|request| request.method == "GET")
        .map(|request| (request.range, request.status))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    let (Some((from, None)), 206) = gets[1] else {
        panic!("the resume is a range request answered 206: {gets:?}")
    };
    assert!(from > 0 && from <= 80_000, "resumed from {from}");
    assert_eq!(
        catalog.origin.bytes_served(),
        80_000 + (200_000 - from),
        "no byte received is downloaded again"
    );
}
