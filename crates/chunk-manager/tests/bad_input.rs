//! Bad input (SPEC §4): every case is a clear error in the chunk's status, an event and the
//! log; nothing panics, nothing committed is lost, no path escapes the data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use chunk_manager::{ChunkManager, ChunkState, DataChunk, Error, Event, InvalidChunk};
use common::{Catalog, config, wait_event};

fn failed_with(manager: &ChunkManager, id: u8) -> Arc<Error> {
    let error = manager.wait_ready_blocking([id; 32]).unwrap_err();
    let status = manager
        .status(&[id; 32])
        .expect("the chunk's status keeps the error");
    assert!(
        matches!(status.state, ChunkState::Failed { .. }),
        "{status:?}"
    );
    error
}

#[test]
fn file_names_that_are_not_one_plain_component_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let long = "x".repeat(256);
    let names = [
        "",
        ".",
        "..",
        "../../../etc/passwd",
        "a/b",
        "a\\b",
        "nul\0byte",
        ".hidden",
        "/abs",
        &long,
    ];
    let mut events = manager.subscribe();
    for (i, name) in names.iter().enumerate() {
        let id = i as u8 + 1;
        let files = HashMap::from([(name.to_string(), "http://127.0.0.1:9/x".to_string())]);
        manager.download_chunk(DataChunk::new([id; 32], [0; 32], 0..10, files));
        let error = failed_with(&manager, id);
        assert!(
            error.to_string().contains("invalid file name"),
            "{name:?} gave {error}"
        );
        wait_event(&mut events, |e| matches!(e, Event::DownloadFailed { .. }));
    }
    manager.wait_idle_blocking();
    // Nothing was written anywhere: only the manager's own layout exists.
    let mut entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["LOCK", "cached", "chunks", "deleted", "tmp", "trash"]
    );
    assert!(
        std::fs::read_dir(dir.path().join("chunks"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn empty_ranges_missing_files_and_bad_urls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let file = |url: &str| HashMap::from([("f".to_string(), url.to_string())]);
    manager.download_chunk(DataChunk::new([1; 32], [0; 32], 10..10, file("http://h/x")));
    #[allow(clippy::reversed_empty_ranges)] // the point of the test
    let reversed = 20..10;
    manager.download_chunk(DataChunk::new(
        [2; 32],
        [0; 32],
        reversed,
        file("http://h/x"),
    ));
    manager.download_chunk(DataChunk::new([3; 32], [0; 32], 0..10, HashMap::new()));
    manager.download_chunk(DataChunk::new([4; 32], [0; 32], 0..10, file("ftp://h/x")));
    manager.download_chunk(DataChunk::new([5; 32], [0; 32], 0..10, file("not a url")));
    manager.download_chunk(DataChunk::new([6; 32], [0; 32], 0..10, file("http://")));
    let expect = |id: u8, check: fn(&InvalidChunk) -> bool| {
        let error = failed_with(&manager, id);
        match &*error {
            Error::InvalidChunk { source, .. } => assert!(check(source), "chunk {id}: {error}"),
            other => panic!("chunk {id}: {other}"),
        }
    };
    expect(1, |e| matches!(e, InvalidChunk::EmptyRange { .. }));
    expect(2, |e| matches!(e, InvalidChunk::EmptyRange { .. }));
    expect(3, |e| matches!(e, InvalidChunk::NoFiles));
    expect(
        4,
        |e| matches!(e, InvalidChunk::Url { reason, .. } if reason.contains("scheme")),
    );
    expect(5, |e| matches!(e, InvalidChunk::Url { .. }));
    expect(6, |e| matches!(e, InvalidChunk::Url { .. }));
    assert!(manager.list_chunks().is_empty());
}

#[test]
fn binary_ids_are_fine_in_paths_and_logs() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 100);
    // Ids with bytes that are '/' in ASCII or invalid UTF-8.
    let mut id = [0xff; 32];
    id[0] = b'/';
    id[1] = 0x00;
    let chunk = DataChunk::new(
        id,
        [b'/'; 32],
        chunk.block_range(),
        chunk.files().clone().into_iter().collect(),
    );
    manager.download_chunk(chunk);
    let ready = manager.wait_ready_blocking(id).unwrap();
    assert!(ready.path().starts_with(dir.path().join("chunks")));
    assert_eq!(manager.list_chunks(), vec![id]);
}

#[test]
fn an_id_sent_again_with_a_different_description_is_rejected_and_loses_nothing() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 1000);
    manager.download_chunk(chunk.clone());
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    let mut events = manager.subscribe();
    let different = DataChunk::new(
        [1; 32],
        [0; 32],
        0..5,
        chunk.files().clone().into_iter().collect(),
    );
    manager.download_chunk(different);
    let event = wait_event(&mut events, |e| matches!(e, Event::Rejected { .. }));
    assert!(
        event.to_string().contains("different description"),
        "{event}"
    );
    let status = manager.status(&[1; 32]).unwrap();
    assert!(matches!(status.state, ChunkState::Ready));
    assert!(status.rejected.is_some());
    assert_eq!(
        status.chunk.block_range(),
        100..200,
        "the first description stays"
    );
    catalog.assert_intact(&ready);
    assert!(manager.find_chunk([0; 32], 150).is_some());
}

#[test]
fn a_data_dir_that_is_a_file_is_a_clear_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let error = ChunkManager::open(config(file.path())).unwrap_err();
    assert!(matches!(error, Error::DataDir { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(&file.path().display().to_string()),
        "{error}"
    );
    let nested = file.path().join("below");
    let error = ChunkManager::open(config(&nested)).unwrap_err();
    assert!(matches!(error, Error::DataDir { .. }), "{error}");
}

#[test]
fn a_data_dir_that_cannot_be_created_is_a_clear_error() {
    // Not even root may create directories under /proc.
    let error =
        ChunkManager::open(config(std::path::Path::new("/proc/chunk-manager-test"))).unwrap_err();
    assert!(matches!(error, Error::DataDir { .. }), "{error}");
    assert!(
        error.to_string().contains("/proc/chunk-manager-test"),
        "{error}"
    );
}

#[test]
fn issue10_urls_without_a_host_or_with_control_characters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let urls = [
        "http:///x",
        "https:///x",
        "http:/x",
        "\u{0}http://x",
        "http://x/\u{0}y",
        "http://x/a\nb",
        "http://x/a\tb",
        "\u{7f}http://x",
    ];
    for (i, url) in urls.iter().enumerate() {
        let id = i as u8 + 1;
        let files = HashMap::from([("f".to_string(), url.to_string())]);
        manager.download_chunk(DataChunk::new([id; 32], [0; 32], 0..10, files));
        let error = failed_with(&manager, id);
        assert!(
            matches!(
                &*error,
                Error::InvalidChunk {
                    source: InvalidChunk::Url { .. },
                    ..
                }
            ),
            "{url:?} gave {error}"
        );
    }
    assert!(manager.list_chunks().is_empty());
}

#[test]
fn issue11_more_than_ten_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let files = |n: usize| -> HashMap<String, String> {
        (0..n)
            .map(|i| (format!("f{i}"), format!("http://127.0.0.1:9/{i}")))
            .collect()
    };
    manager.download_chunk(DataChunk::new([1; 32], [0; 32], 0..10, files(11)));
    manager.download_chunk(DataChunk::new([2; 32], [0; 32], 0..10, files(1000)));
    for (id, count) in [(1, 11), (2, 1000)] {
        let error = failed_with(&manager, id);
        assert!(
            matches!(
                &*error,
                Error::InvalidChunk { source: InvalidChunk::TooManyFiles { count: c, max: 10 }, .. }
                    if *c == count
            ),
            "{error}"
        );
        assert!(error.to_string().contains("at most 10"), "{error}");
    }
}

#[test]
fn issue11_unknown_fields_in_a_chunk_description_are_refused() {
    let chunk = DataChunk::new(
        [1; 32],
        [0; 32],
        0..10,
        HashMap::from([("f".to_string(), "http://h/x".to_string())]),
    )
    .with_check("f", chunk_manager::FileCheck::new().with_size(5));
    let json = serde_json::to_value(&chunk).unwrap();
    assert_eq!(
        serde_json::from_value::<DataChunk>(json.clone()).unwrap(),
        chunk
    );

    // A misspelled `checks` would silently skip verification.
    let mut misspelled = json.clone();
    let checks = misspelled
        .as_object_mut()
        .unwrap()
        .remove("checks")
        .unwrap();
    misspelled["check"] = checks;
    let error = serde_json::from_value::<DataChunk>(misspelled).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `check`"),
        "{error}"
    );

    // So would a misspelled field of a check.
    let mut nested = json.clone();
    nested["checks"]["f"]["checksun"] = "sha256:00".into();
    let error = serde_json::from_value::<DataChunk>(nested).unwrap_err();
    assert!(error.to_string().contains("checksun"), "{error}");

    let mut extra = json;
    extra["priority"] = 1.into();
    assert!(serde_json::from_value::<DataChunk>(extra).is_err());
}
