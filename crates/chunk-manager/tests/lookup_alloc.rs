//! The lookup path allocates nothing: `find_chunk` loads the published snapshot and clones an
//! `Arc` (the returned ref), and dropping the ref frees nothing while the chunk is wanted.
//! The benchmark (`benches/lookup.rs`) checks the same on 5,000 chunks; this keeps it a test.
//!
//! This test binary counts allocations per thread (the `allocation-counter` crate installs the
//! counting global allocator), so the manager's own threads do not disturb the count.

use chunk_manager::{ChunkManager, Config, DataChunk};

#[test]
fn find_chunk_and_dropping_its_ref_do_not_allocate() {
    let origin = chunk_origin::Origin::start().unwrap();
    origin.insert("file", chunk_origin::content(1, 16));
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(Config::new(dir.path()).with_fsync(false)).unwrap();
    let chunks = (0..40u8).map(|n| {
        let start = u64::from(n / 4) * 100;
        DataChunk::new(
            [n + 1; 32],
            [n % 4; 32],
            start..start + 100,
            [("data".to_string(), origin.url("file"))].into(),
        )
    });
    manager.assign(chunks);
    manager.wait_idle_blocking();
    assert_eq!(manager.list_chunks().len(), 40);

    let lookup = |n: u64| manager.find_chunk([(n % 4) as u8; 32], (n * 7) % 1000);
    // The first lookups on a thread may register it with the snapshot's reclamation scheme.
    for n in 0..100 {
        drop(lookup(n));
    }
    let mut hits = 0;
    let info = allocation_counter::measure(|| {
        for n in 0..10_000 {
            if let Some(chunk) = lookup(n) {
                hits += usize::from(!chunk.path().as_os_str().is_empty());
            }
        }
        assert!(manager.find_chunk([9; 32], 5).is_none());
        assert!(manager.find_chunk([0; 32], 1_000).is_none());
    });
    assert_eq!(hits, 10_000);
    assert_eq!(
        info.count_total, 0,
        "find_chunk allocated {} times ({} bytes)",
        info.count_total, info.bytes_total
    );
}
