//! The public API from the caller's side: lookups, refs, the original trait, and calls from
//! plain threads and from inside tokio runtimes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use chunk_manager::{ChunkManager, DataChunkRef, DataManager, Error};
use common::{Catalog, config};

#[test]
fn downloads_and_finds_chunks_with_half_open_ranges() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let a = catalog.chunk(
        1,
        7,
        100..200,
        &[("blocks", 3000), ("logs", 100_000), ("tx", 1)],
    );
    let b = catalog.chunk(2, 7, 200..300, &[("blocks", 5000)]);
    let other = catalog.chunk(3, 8, 100..200, &[("blocks", 10)]);
    for chunk in [a, b, other] {
        manager.download_chunk(chunk);
    }
    manager.wait_idle_blocking();

    let mut listed = manager.list_chunks();
    listed.sort();
    assert_eq!(listed, vec![[1; 32], [2; 32], [3; 32]]);
    let find = |dataset: u8, block| manager.find_chunk([dataset; 32], block).map(|c| c.id()[0]);
    assert_eq!(find(7, 99), None);
    assert_eq!(find(7, 100), Some(1));
    assert_eq!(find(7, 199), Some(1));
    assert_eq!(find(7, 200), Some(2));
    assert_eq!(find(7, 299), Some(2));
    assert_eq!(find(7, 300), None);
    assert_eq!(find(8, 150), Some(3));
    assert_eq!(find(9, 150), None);
    for id in [1u8, 2, 3] {
        catalog.assert_intact(&manager.get_chunk(&[id; 32]).unwrap());
    }
    let totals = manager.totals();
    assert_eq!(totals.ready, 3);
    assert_eq!(totals.bytes_committed, 3000 + 100_000 + 1 + 5000 + 10);
}

#[test]
fn overlapping_ranges_return_a_covering_chunk_consistently() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    manager.download_chunk(catalog.chunk(1, 0, 0..1000, &[("f", 10)]));
    manager.download_chunk(catalog.chunk(2, 0, 10..20, &[("f", 10)]));
    manager.download_chunk(catalog.chunk(3, 0, 500..1500, &[("f", 10)]));
    manager.wait_idle_blocking();
    let find = |block| manager.find_chunk([0; 32], block).map(|c| c.id()[0]);
    assert_eq!(find(5), Some(1));
    assert_eq!(
        find(15),
        Some(2),
        "the covering chunk with the greatest start"
    );
    assert_eq!(
        find(300),
        Some(1),
        "a long earlier chunk covers past a short later one"
    );
    assert_eq!(find(700), Some(3));
    assert_eq!(find(1200), Some(3));
    for _ in 0..10 {
        assert_eq!(find(700), Some(3), "the same one each time");
    }
}

#[test]
fn a_ref_keeps_files_after_delete_and_outlives_the_manager() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    manager.download_chunk(catalog.simple(1, 20_000));
    let held = manager.wait_ready_blocking([1; 32]).unwrap();
    let clone = held.clone();
    manager.delete_chunk([1; 32]);
    assert!(manager.find_chunk([0; 32], 150).is_none(), "hidden at once");
    assert!(manager.list_chunks().is_empty());
    manager.wait_idle_blocking();
    catalog.assert_intact(&held);
    manager.shutdown_blocking();
    drop(manager);
    // The ref moves to another thread and still reads its files after the manager is gone.
    std::thread::spawn(move || catalog.assert_intact(&clone))
        .join()
        .unwrap();
    drop(held);
}

fn uses_the_original_trait<M: DataManager>(manager: &M, catalog: &Catalog) {
    manager.download_chunk(catalog.simple(4, 100));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let found = loop {
        if let Some(found) = manager.find_chunk([0; 32], 450) {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "chunk never appeared");
        std::thread::yield_now();
    };
    assert!(found.path().join("data").is_file());
    let copy = found.clone();
    assert_eq!(copy.path(), found.path());
    assert_eq!(manager.list_chunks(), vec![[4; 32]]);
    manager.delete_chunk([4; 32]);
    assert!(manager.find_chunk([0; 32], 450).is_none());
}

#[test]
fn the_original_trait_works_through_generics() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = <ChunkManager as DataManager>::new(dir.path().to_path_buf());
    uses_the_original_trait(&manager, &catalog);
}

#[test]
#[should_panic(expected = "is in use by another chunk manager")]
fn trait_new_panics_with_the_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ChunkManager::open(config(dir.path())).unwrap();
    let _second = <ChunkManager as DataManager>::new(dir.path().to_path_buf());
}

#[test]
fn many_plain_threads_call_at_once() {
    let catalog = Arc::new(Catalog::new());
    let dir = tempfile::tempdir().unwrap();
    let manager = Arc::new(ChunkManager::open(config(dir.path())).unwrap());
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let (manager, catalog) = (manager.clone(), catalog.clone());
            std::thread::spawn(move || {
                let id = 10 + t;
                for round in 0..20 {
                    manager.download_chunk(catalog.simple(id, 500));
                    if round % 3 == 0 {
                        manager.delete_chunk([id; 32]);
                    }
                    let _ = manager.find_chunk([0; 32], u64::from(id) * 100 + 5);
                    let _ = manager.list_chunks();
                }
                manager.download_chunk(catalog.simple(id, 500));
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    manager.wait_idle_blocking();
    let mut ids = manager.list_chunks();
    ids.sort();
    assert_eq!(ids, (10..18u8).map(|i| [i; 32]).collect::<Vec<_>>());
    for id in ids {
        catalog.assert_intact(&manager.get_chunk(&id).unwrap());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn works_inside_a_current_thread_runtime() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    manager.download_chunk(catalog.simple(1, 4096));
    let chunk = manager.wait_ready([1; 32]).await.unwrap();
    catalog.assert_intact(&chunk);
    manager.delete_chunk([1; 32]);
    drop(chunk);
    manager.wait_idle().await;
    assert!(manager.status(&[1; 32]).is_none());
    manager.shutdown().await;
    // Dropping after shutdown, inside the runtime, must not panic.
    drop(manager);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_inside_a_multi_thread_runtime_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    drop(manager);
    let again = ChunkManager::open(config(dir.path())).unwrap();
    again.shutdown().await;
}

#[test]
fn wait_ready_reports_failure_and_not_wanted() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 10);
    catalog.origin.remove("1/data");
    manager.download_chunk(chunk);
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(
        matches!(*error, Error::HttpStatus { status: 404, .. }),
        "{error}"
    );
    let error = manager.wait_ready_blocking([2; 32]).unwrap_err();
    assert!(matches!(*error, Error::NotWanted { .. }), "{error}");
    manager.shutdown_blocking();
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(
        matches!(*error, Error::Shutdown | Error::HttpStatus { .. }),
        "{error}"
    );
}

#[test]
fn events_tell_each_step_with_the_original_emoji() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let mut events = manager.subscribe();
    manager.download_chunk(catalog.chunk(1, 0, 0..10, &[("a", 10), ("b", 20)]));
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    manager.delete_chunk([1; 32]);
    manager.wait_idle_blocking();
    drop(ready);
    manager.wait_idle_blocking();
    manager.shutdown_blocking();
    let mut lines = Vec::new();
    while let Ok(event) = events.try_recv() {
        lines.push(event.to_string());
    }
    let firsts: Vec<char> = lines.iter().filter_map(|l| l.chars().next()).collect();
    for emoji in ['📡', '💾', '✅', '📏', '⌛', '❌', '🛑'] {
        assert!(firsts.contains(&emoji), "no {emoji} in {lines:#?}");
    }
    assert_eq!(firsts.iter().filter(|&&c| c == '💾').count(), 2);
}
