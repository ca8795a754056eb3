//! `az://` sources against Azurite, Azure's blob storage emulator (npm; installed into the
//! target directory if `azurite-blob` is not on the PATH, and the tests fail if it cannot be):
//! download a chunk, a missing blob, a wrong account key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use chunk_manager::{AzureConfig, ChunkManager, Config, DataChunk};
use chunk_origin::azurite::{ACCOUNT, ACCOUNT_KEY, Azurite};
use chunk_origin::content;
use common::{assert_denied_without, assert_missing_fails_at_once, config, put};
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};

const CONTAINER: &str = "chunks";

/// One emulator for every test of this file (each uses its own blob names); it stops when this
/// test process ends.
fn shared_azurite() -> &'static Azurite {
    static AZURITE: std::sync::OnceLock<Azurite> = std::sync::OnceLock::new();
    AZURITE.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("azurite");
        let azurite = Azurite::start(&dir)
            .unwrap_or_else(|error| panic!("the az:// tests need Azurite: {error}"));
        azurite.create_container(CONTAINER).unwrap();
        azurite
    })
}

/// A client for setting up the container's blobs.
fn store(azurite: &Azurite) -> MicrosoftAzure {
    MicrosoftAzureBuilder::new()
        .with_endpoint(azurite.endpoint())
        .with_account(ACCOUNT)
        .with_access_key(ACCOUNT_KEY)
        .with_container_name(CONTAINER)
        .with_allow_http(true)
        .build()
        .unwrap()
}

fn azure_config(dir: &std::path::Path, azurite: &Azurite, key: &str) -> Config {
    config(dir).with_azure(
        AzureConfig::default()
            .with_endpoint(azurite.endpoint())
            .with_credentials(ACCOUNT, key),
    )
}

fn az_chunk(id: u8, scheme: &str, keys: &[&str]) -> DataChunk {
    let files: HashMap<String, String> = keys
        .iter()
        .map(|key| {
            let name = key.rsplit('/').next().unwrap().to_string();
            (name, format!("{scheme}://{CONTAINER}/{key}"))
        })
        .collect();
    DataChunk::new([id; 32], [0; 32], 0..100, files)
}

#[test]
fn issue12_downloads_a_chunk_from_az_and_pins_its_etag() {
    let azurite = shared_azurite();
    let store = store(azurite);
    let (blocks, logs) = (content(1, 300_000), content(2, 1_000));
    put(&store, "plain/1/blocks", &blocks);
    put(&store, "plain/1/logs", &logs);
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(azure_config(dir.path(), azurite, ACCOUNT_KEY)).unwrap();
    manager.download_chunk(az_chunk(1, "az", &["plain/1/blocks", "plain/1/logs"]));
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    assert!(std::fs::read(ready.path().join("blocks")).unwrap() == blocks[..]);
    assert!(std::fs::read(ready.path().join("logs")).unwrap() == logs[..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ready.path().join(".manifest.json")).unwrap())
            .unwrap();
    assert!(
        manifest["files"]["blocks"]["etag"].as_str().is_some(),
        "the blob's ETag is recorded: {manifest}"
    );

    // `azure://` names the same container.
    manager.download_chunk(az_chunk(2, "azure", &["plain/1/logs"]));
    let ready = manager.wait_ready_blocking([2; 32]).unwrap();
    assert!(std::fs::read(ready.path().join("logs")).unwrap() == logs[..]);
}

#[test]
fn issue12_a_missing_blob_fails_at_once_naming_it() {
    let azurite = shared_azurite();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(azure_config(dir.path(), azurite, ACCOUNT_KEY)).unwrap();
    let chunk = az_chunk(1, "az", &["missing/1/blocks"]);
    assert_missing_fails_at_once(&manager, chunk, "az://chunks/missing/1/blocks");
}

#[test]
fn issue12_a_wrong_account_key_fails_with_access_denied_without_showing_it() {
    let azurite = shared_azurite();
    put(&store(azurite), "denied/1/blocks", &content(3, 100));
    let dir = tempfile::tempdir().unwrap();
    // A well-formed key, not the account's.
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let manager = ChunkManager::open(azure_config(dir.path(), azurite, wrong)).unwrap();
    manager.download_chunk(az_chunk(1, "az", &["denied/1/blocks"]));
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert_denied_without(&error, wrong);
}
