//! `gs://` sources. No GCS emulator is reachable from the package registries we use, so these
//! tests point the client at the in-process origin on 127.0.0.1 (object_store's base URL
//! override) with a generated service account key: the URL is accepted, a client is built
//! from the key, and failing requests map to clear, permanent errors that never show the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use chunk_manager::{ChunkManager, Config, DataChunk, Error, GcsConfig};
use chunk_origin::{Fault, Origin, content};
use common::{assert_denied_without, assert_missing_fails_at_once, config};

/// A service account key that object_store accepts without signing anything
/// (`disable_oauth`), with a private key that must never show in an error.
fn dummy_key(secret: &str) -> String {
    serde_json::json!({
        "private_key": secret,
        "private_key_id": "generated-key-id",
        "client_email": "chunk-manager-test@example.invalid",
        "disable_oauth": true,
    })
    .to_string()
}

/// A generated secret: what must not leak.
fn secret() -> String {
    format!("-----BEGIN PRIVATE KEY-----{}", hex::encode(content(7, 24)))
}

fn gcs_config(dir: &std::path::Path, origin: &Origin, key: &str) -> Config {
    config(dir).with_gcs(
        GcsConfig::default()
            .with_endpoint(format!("http://{}", origin.addr()))
            .with_service_account_key(key),
    )
}

fn gs_chunk(id: u8, url: &str) -> DataChunk {
    let files: HashMap<String, String> = [("blocks".to_string(), url.to_string())].into();
    DataChunk::new([id; 32], [0; 32], 0..100, files)
}

#[test]
fn issue12_a_missing_gs_object_fails_at_once_naming_it() {
    let origin = Origin::start().unwrap();
    let secret = secret();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(gcs_config(dir.path(), &origin, &dummy_key(&secret))).unwrap();
    let chunk = gs_chunk(1, "gs://bucket/missingblocks");
    chunk.validate().unwrap();
    assert_missing_fails_at_once(&manager, chunk, "gs://bucket/missingblocks");
    let shown = manager
        .wait_ready_blocking([1; 32])
        .unwrap_err()
        .with_causes();
    assert!(!shown.contains(&secret), "{shown}");
    // The request went to the bucket's object, through the base URL override (object
    // names are sent percent-encoded whole, so these tests use alphanumeric names).
    assert!(!origin.requests("bucket/missingblocks").is_empty());
}

#[test]
fn issue12_a_refused_gs_request_is_access_denied_without_the_key() {
    let origin = Origin::start().unwrap();
    origin.insert("bucket/deniedblocks", content(1, 100));
    origin.set_fault("bucket/deniedblocks", Some(Fault::Status(403)));
    let secret = secret();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(gcs_config(dir.path(), &origin, &dummy_key(&secret))).unwrap();
    manager.download_chunk(gs_chunk(1, "gs://bucket/deniedblocks"));
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert_denied_without(&error, &secret);
}

#[test]
fn issue12_a_bad_service_account_key_is_a_clear_configuration_error() {
    let origin = Origin::start().unwrap();
    let secret = secret();
    let dir = tempfile::tempdir().unwrap();
    // Not JSON: the client cannot be built.
    let manager = ChunkManager::open(gcs_config(dir.path(), &origin, &secret)).unwrap();
    manager.download_chunk(gs_chunk(1, "gs://bucket/anyblocks"));
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(matches!(*error, Error::SourceConfig { .. }), "{error:?}");
    assert!(!error.is_retryable());
    let shown = error.with_causes();
    assert!(shown.contains("gs://bucket/anyblocks"), "{shown}");
    assert!(!shown.contains(&secret[10..]), "{shown}");
    assert_eq!(
        origin.total_requests(),
        0,
        "nothing is sent without a client"
    );
}
