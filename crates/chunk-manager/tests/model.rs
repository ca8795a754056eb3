//! Model-based property test through the public API, against a real origin: random sequences
//! of download, delete, a query's fetch, take-ref, drop-ref and restart. A deleted chunk is
//! hidden at once, a held ref's files never change, a fetch returns the chunk pinned and leaves
//! an assigned chunk assigned, and after quiescence the visible set equals the desired set
//! (assigned or cached) with every visible chunk byte-identical to the origin's. Cached chunks
//! stay cached across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chunk_manager::{ChunkManager, ChunkRef, DataChunk};
use common::{Catalog, config, temporary_entries};
use proptest::prelude::*;

const CHUNKS: u8 = 5;

fn fixture() -> &'static (Catalog, Vec<DataChunk>) {
    static FIXTURE: OnceLock<(Catalog, Vec<DataChunk>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let catalog = Catalog::new();
        let chunks = (0..CHUNKS)
            .map(|id| {
                catalog.chunk(
                    id,
                    0,
                    u64::from(id) * 100..u64::from(id) * 100 + 100,
                    &[("a", 3000 + usize::from(id) * 1000), ("b", 700)],
                )
            })
            .collect();
        (catalog, chunks)
    })
}

#[derive(Debug, Clone)]
enum Op {
    Download(u8),
    Delete(u8),
    Fetch(u8),
    TakeRef(u8),
    DropRef(usize),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..CHUNKS).prop_map(Op::Download),
        3 => (0..CHUNKS).prop_map(Op::Delete),
        3 => (0..CHUNKS).prop_map(Op::Fetch),
        2 => (0..CHUNKS).prop_map(Op::TakeRef),
        2 => any::<usize>().prop_map(Op::DropRef),
        1 => Just(Op::Restart),
    ]
}

/// What the last call asked for a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wish {
    Assigned,
    Cached,
    Deleted,
}

fn block(id: u8) -> u64 {
    u64::from(id) * 100 + 50
}

fn settle(manager: &ChunkManager, refs: &mut Vec<ChunkRef>) {
    manager.wait_idle_blocking();
    refs.clear();
    manager.wait_idle_blocking();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn visible_set_converges_to_the_desired_set(ops in prop::collection::vec(op(), 1..40)) {
        let (catalog, chunks) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut manager = ChunkManager::open(config(dir.path())).unwrap();
        let mut wishes: BTreeMap<u8, Wish> = BTreeMap::new();
        let mut refs: Vec<ChunkRef> = Vec::new();
        for op in ops {
            match op {
                Op::Download(id) => {
                    manager.download_chunk(chunks[usize::from(id)].clone());
                    wishes.insert(id, Wish::Assigned);
                }
                Op::Delete(id) => {
                    manager.delete_chunk([id; 32]);
                    wishes.insert(id, Wish::Deleted);
                    prop_assert!(manager.find_chunk([0; 32], block(id)).is_none(), "deleted chunk {} still found", id);
                    prop_assert!(!manager.list_chunks().contains(&[id; 32]));
                }
                Op::Fetch(id) => {
                    let chunk = manager.fetch_blocking(chunks[usize::from(id)].clone()).unwrap();
                    catalog.assert_intact(&chunk);
                    let wish = wishes.entry(id).or_insert(Wish::Deleted);
                    if *wish == Wish::Deleted {
                        *wish = Wish::Cached;
                    }
                    let status = manager.status(&[id; 32]).unwrap();
                    prop_assert_eq!(status.wanted, *wish == Wish::Assigned);
                    prop_assert_eq!(status.cached, *wish == Wish::Cached);
                    prop_assert_eq!(manager.find_chunk([0; 32], block(id)).map(|c| *c.id()), Some([id; 32]));
                    refs.push(chunk);
                }
                Op::TakeRef(id) => {
                    if matches!(wishes.get(&id), Some(Wish::Assigned | Wish::Cached)) {
                        let chunk = manager.wait_ready_blocking([id; 32]).unwrap();
                        prop_assert_eq!(manager.find_chunk([0; 32], block(id)).map(|c| *c.id()), Some([id; 32]));
                        refs.push(chunk);
                    } else {
                        prop_assert!(manager.get_chunk(&[id; 32]).is_none());
                    }
                }
                Op::DropRef(n) => {
                    if !refs.is_empty() {
                        let chunk = refs.swap_remove(n % refs.len());
                        catalog.assert_intact(&chunk);
                    }
                }
                Op::Restart => {
                    settle(&manager, &mut refs);
                    manager.shutdown_blocking();
                    drop(manager);
                    manager = ChunkManager::open(config(dir.path())).unwrap();
                    prop_assert!(manager.startup_report().problems.is_empty());
                    // Cached chunks stay cached (their marks are on disk): nothing changes.
                }
            }
        }
        settle(&manager, &mut refs);
        let desired: Vec<[u8; 32]> = wishes.iter().filter(|(_, w)| **w != Wish::Deleted).map(|(id, _)| [*id; 32]).collect();
        let mut visible = manager.list_chunks();
        visible.sort();
        prop_assert_eq!(&visible, &desired);
        for id in &visible {
            catalog.assert_intact(&manager.get_chunk(id).unwrap());
        }
        for (id, _) in wishes.iter().filter(|(_, w)| **w == Wish::Deleted) {
            prop_assert!(manager.status(&[*id; 32]).is_none(), "deleted chunk {} still known", id);
        }
        let on_disk = std::fs::read_dir(dir.path().join("chunks").join("00".repeat(32)))
            .map(|entries| entries.count())
            .unwrap_or(0);
        prop_assert_eq!(on_disk, desired.len(), "deleted chunks' files are gone");
        let temporary = temporary_entries(dir.path());
        prop_assert!(temporary.is_empty(), "temporary data left: {:?}", temporary);
        prop_assert_eq!(manager.totals().bytes_committed, visible.iter().map(|id| manager.get_chunk(id).unwrap().size()).sum::<u64>());
    }
}
