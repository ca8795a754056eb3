//! A data directory of many small ready chunks, for the lookup, startup and memory benchmarks.
//!
//! The chunks are made through the public API (an in-process origin serving tiny files, a
//! manager with fsync off and wide concurrency), so the directory is exactly what a real
//! manager commits, whatever the manifest format becomes. Shared by
//! `crates/chunk-manager/benches/lookup.rs` and the `chunk-bench` binary (through `#[path]`).

use std::path::Path;

use chunk_manager::{ChunkId, ChunkManager, Config, DataChunk, DatasetId};

/// The names of every chunk's files.
pub const FILE_NAMES: [&str; 3] = ["blocks.parquet", "logs.parquet", "transactions.parquet"];

/// Blocks per chunk: chunk `n` of a dataset covers `n * BLOCKS..(n + 1) * BLOCKS`.
pub const BLOCKS: u64 = 1_000;

/// The id of dataset `n`.
pub fn dataset_id(n: usize) -> DatasetId {
    let mut id = [0xd5; 32];
    id[..8].copy_from_slice(&(n as u64).to_be_bytes());
    id
}

/// The id of chunk `n`.
pub fn chunk_id(n: usize) -> ChunkId {
    let mut id = [0xc4; 32];
    id[..8].copy_from_slice(&(n as u64).to_be_bytes());
    id
}

/// `count` chunks spread round-robin over `datasets` datasets, each dataset's chunks contiguous
/// and non-overlapping from block 0, with their files at `url(file name)`.
pub fn chunks(count: usize, datasets: usize, url: impl Fn(&str) -> String) -> Vec<DataChunk> {
    (0..count)
        .map(|n| {
            let position = (n / datasets) as u64;
            let files = FILE_NAMES
                .iter()
                .map(|name| (name.to_string(), url(name)))
                .collect();
            DataChunk::new(
                chunk_id(n),
                dataset_id(n % datasets),
                position * BLOCKS..(position + 1) * BLOCKS,
                files,
            )
        })
        .collect()
}

/// Fills `dir` with `count` ready chunks over `datasets` datasets (files of `file_size`
/// bytes) and returns their descriptions. Takes a few seconds for 5,000 chunks.
pub fn populate(
    dir: &Path,
    count: usize,
    datasets: usize,
    file_size: usize,
) -> Result<Vec<DataChunk>, Box<dyn std::error::Error>> {
    let origin = chunk_origin::Origin::start()?;
    for (seed, name) in FILE_NAMES.iter().enumerate() {
        origin.insert(name, chunk_origin::content(seed as u64, file_size));
    }
    let chunks = chunks(count, datasets, |name| origin.url(name));
    let config = Config::new(dir)
        .with_fsync(false)
        .with_max_concurrent_downloads(32)
        .with_event_capacity(1 << 16);
    let manager = ChunkManager::open(config)?;
    manager.assign(chunks.clone());
    manager.wait_idle_blocking();
    let ready = manager.list_chunks().len();
    manager.shutdown_blocking();
    if ready != count {
        return Err(format!("populate: {ready} of {count} chunks are ready").into());
    }
    Ok(chunks)
}
