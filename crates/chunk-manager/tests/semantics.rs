//! Each row of the desired-state table (SPEC §3), through the public API against a real
//! origin. Downloads are held at a gate so that "while downloading" is a fact, not a timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chunk_manager::{ChunkManager, ChunkState, Event};
use chunk_origin::{Fault, Gate};
use common::{Catalog, config, temporary_entries, wait_event};

#[test]
fn delete_while_downloading_cancels_at_once_and_removes_partial_files() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.chunk(1, 0, 0..100, &[("big", 1 << 20), ("small", 10)]);
    let gate = Gate::new();
    catalog.origin.push_fault(
        "1/big",
        Fault::Stall {
            after: 64 * 1024,
            gate: gate.clone(),
        },
    );
    let mut events = manager.subscribe();
    manager.download_chunk(chunk);
    assert!(
        gate.wait_reached(Duration::from_secs(10)),
        "the download reached the stall"
    );
    assert!(matches!(
        manager.status(&[1; 32]).unwrap().state,
        ChunkState::Downloading { .. }
    ));
    assert!(
        !temporary_entries(dir.path()).is_empty(),
        "partial files exist while downloading"
    );

    manager.delete_chunk([1; 32]);
    wait_event(&mut events, |e| matches!(e, Event::ChunkDeleted { .. }));
    assert!(
        temporary_entries(dir.path()).is_empty(),
        "partial files removed"
    );
    assert!(manager.status(&[1; 32]).is_none());
    assert!(manager.list_chunks().is_empty());
    gate.open();
    manager.wait_idle_blocking();
    assert!(
        manager.list_chunks().is_empty(),
        "a cancelled download never appears"
    );
}

#[test]
fn delete_while_queued_unqueues_without_downloading() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path()).with_max_concurrent_downloads(1)).unwrap();
    let gate = Gate::new();
    let first = catalog.simple(1, 100_000);
    catalog.origin.push_fault(
        "1/data",
        Fault::Stall {
            after: 10,
            gate: gate.clone(),
        },
    );
    let second = catalog.simple(2, 10);
    manager.download_chunk(first);
    assert!(gate.wait_reached(Duration::from_secs(10)));
    manager.download_chunk(second);
    assert!(matches!(
        manager.status(&[2; 32]).unwrap().state,
        ChunkState::Queued
    ));
    manager.delete_chunk([2; 32]);
    assert!(manager.status(&[2; 32]).is_none(), "unqueued at once");
    gate.open();
    manager.wait_idle_blocking();
    assert_eq!(manager.list_chunks(), vec![[1; 32]]);
    assert!(
        catalog.origin.requests("2/data").is_empty(),
        "never requested"
    );
}

#[test]
fn download_of_a_ready_or_downloading_chunk_changes_nothing() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 50_000);
    let gate = Gate::new();
    catalog.origin.push_fault(
        "1/data",
        Fault::Stall {
            after: 100,
            gate: gate.clone(),
        },
    );
    manager.download_chunk(chunk.clone());
    assert!(gate.wait_reached(Duration::from_secs(10)));
    manager.download_chunk(chunk.clone());
    gate.open();
    manager.wait_idle_blocking();
    manager.download_chunk(chunk);
    manager.wait_idle_blocking();
    assert_eq!(catalog.origin.get_count("1/data"), 1, "one download in all");
    catalog.assert_intact(&manager.get_chunk(&[1; 32]).unwrap());
}

#[test]
fn delete_while_pinned_hides_at_once_and_removes_right_after_the_last_ref() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    manager.download_chunk(catalog.simple(1, 10_000));
    let held = manager.wait_ready_blocking([1; 32]).unwrap();
    let path = held.path().to_path_buf();
    let mut events = manager.subscribe();

    manager.delete_chunk([1; 32]);
    assert!(manager.find_chunk([0; 32], 150).is_none());
    assert!(manager.get_chunk(&[1; 32]).is_none());
    wait_event(&mut events, |e| matches!(e, Event::WaitingForRefs { .. }));
    assert!(matches!(
        manager.status(&[1; 32]).unwrap().state,
        ChunkState::Deleting { pinned: true }
    ));
    assert_eq!(manager.totals().pinned, 1);
    catalog.assert_intact(&held);

    drop(held);
    // The drop itself triggers removal: no polling interval to wait out.
    wait_event(&mut events, |e| matches!(e, Event::ChunkDeleted { .. }));
    assert!(!path.exists(), "files removed after the last ref");
    assert!(manager.status(&[1; 32]).is_none());
    assert_eq!(manager.totals().bytes_committed, 0);
}

#[test]
fn download_while_waiting_for_refs_shows_it_again_without_downloading() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 10_000);
    manager.download_chunk(chunk.clone());
    let held = manager.wait_ready_blocking([1; 32]).unwrap();
    let mut events = manager.subscribe();
    manager.delete_chunk([1; 32]);
    wait_event(&mut events, |e| matches!(e, Event::WaitingForRefs { .. }));

    manager.download_chunk(chunk);
    let again = manager.wait_ready_blocking([1; 32]).unwrap();
    assert_eq!(again.path(), held.path());
    assert!(manager.find_chunk([0; 32], 150).is_some());
    drop(held);
    manager.wait_idle_blocking();
    assert_eq!(catalog.origin.get_count("1/data"), 1, "no second download");
    catalog.assert_intact(&again);

    // The deletion record is gone too: a restart keeps the chunk.
    drop(again);
    manager.shutdown_blocking();
    drop(manager);
    let reopened = ChunkManager::open(config(dir.path())).unwrap();
    assert_eq!(reopened.list_chunks(), vec![[1; 32]]);
}

#[test]
fn failed_chunk_is_tried_again_on_request_and_forgotten_on_delete() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path())).unwrap();
    let chunk = catalog.simple(1, 1000);
    catalog.origin.set_fault("1/data", Some(Fault::Status(404)));
    manager.download_chunk(chunk.clone());
    assert!(manager.wait_ready_blocking([1; 32]).is_err());
    assert!(matches!(
        manager.status(&[1; 32]).unwrap().state,
        ChunkState::Failed { .. }
    ));
    assert_eq!(manager.totals().failed, 1);

    catalog.origin.set_fault("1/data", None);
    manager.download_chunk(chunk.clone());
    catalog.assert_intact(&manager.wait_ready_blocking([1; 32]).unwrap());

    catalog.origin.set_fault("1/data", Some(Fault::Status(404)));
    let other = catalog.simple(2, 10);
    catalog.origin.set_fault("2/data", Some(Fault::Status(403)));
    manager.download_chunk(other);
    assert!(manager.wait_ready_blocking([2; 32]).is_err());
    manager.delete_chunk([2; 32]);
    assert!(manager.status(&[2; 32]).is_none(), "forgotten");
}

#[test]
fn downloads_wait_for_budget_and_resume_when_deletions_free_space() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path()).with_disk_budget(25_000)).unwrap();
    let mut events = manager.subscribe();
    manager.download_chunk(catalog.simple(1, 10_000));
    manager.download_chunk(catalog.simple(2, 10_000));
    manager.wait_idle_blocking();
    manager.download_chunk(catalog.simple(3, 10_000));
    wait_event(&mut events, |e| matches!(e, Event::BudgetExceeded { .. }));
    manager.wait_idle_blocking();
    assert!(matches!(
        manager.status(&[3; 32]).unwrap().state,
        ChunkState::WaitingForSpace { needed: 10_000, .. }
    ));
    let totals = manager.totals();
    assert!(totals.bytes_committed + totals.bytes_reserved <= 25_000);

    manager.delete_chunk([1; 32]);
    catalog.assert_intact(&manager.wait_ready_blocking([3; 32]).unwrap());
    let mut ids = manager.list_chunks();
    ids.sort();
    assert_eq!(
        ids,
        vec![[2; 32], [3; 32]],
        "the desired chunks were never evicted"
    );
}

#[test]
fn a_chunk_larger_than_the_whole_budget_fails_clearly() {
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(config(dir.path()).with_disk_budget(1000)).unwrap();
    manager.download_chunk(catalog.simple(1, 5000));
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(error.to_string().contains("whole disk budget"), "{error}");
}
