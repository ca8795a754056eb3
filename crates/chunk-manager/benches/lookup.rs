//! Lookups on a full worker: `find_chunk` and `list_chunks` with 5,000 ready chunks over 10
//! datasets, adopted at startup from a data directory made through the public API.
//!
//! Targets (see BENCHMARKS.md): `find_chunk` median under 100 ns, and no allocation on the
//! lookup path (the returned ref is an `Arc` clone, not an allocation). The allocation check
//! runs first and fails the benchmark if a lookup allocates; `tests/lookup_alloc.rs` keeps it
//! as a test.
//!
//! ```sh
//! cargo bench -p chunk-manager --bench lookup
//! ```

#[path = "support/fixture.rs"]
mod fixture;

use std::hint::black_box;
use std::time::{Duration, Instant};

use chunk_manager::{ChunkManager, Config, DatasetId};
use criterion::{BatchSize, Criterion};

const CHUNKS: usize = 5_000;
const DATASETS: usize = 10;

/// Random lookups that hit: every dataset, every chunk, anywhere in its range.
fn hits(count: usize) -> Vec<(DatasetId, u64)> {
    let mut rng = fastrand::Rng::with_seed(7);
    let per_dataset = (CHUNKS / DATASETS) as u64;
    (0..count)
        .map(|_| {
            let dataset = fixture::dataset_id(rng.usize(..DATASETS));
            (dataset, rng.u64(..per_dataset * fixture::BLOCKS))
        })
        .collect()
}

/// Fails the run if the lookup path allocates on this thread.
fn check_no_allocation(manager: &ChunkManager, queries: &[(DatasetId, u64)]) {
    // The first load on a thread registers it with the snapshot's reclamation scheme once.
    for &(dataset, block) in queries {
        black_box(manager.find_chunk(dataset, block));
    }
    let rounds = 100_000;
    let mut found = 0usize;
    let info = allocation_counter::measure(|| {
        for n in 0..rounds {
            let (dataset, block) = queries[n % queries.len()];
            if let Some(chunk) = black_box(manager.find_chunk(dataset, block)) {
                found += 1;
                black_box(chunk.path());
            }
        }
        black_box(manager.find_chunk([0xee; 32], 5));
        black_box(manager.find_chunk(fixture::dataset_id(0), u64::MAX));
    });
    println!(
        "allocation check: {rounds} find_chunk calls ({found} hits, 2 misses): {} allocations, {} bytes",
        info.count_total, info.bytes_total
    );
    assert_eq!(found, rounds, "every query should hit");
    assert_eq!(info.count_total, 0, "find_chunk allocated: {info:?}");
}

/// The median of `samples` timed batches, per call, independent of criterion's estimates.
fn median_per_call(samples: usize, batch: usize, mut call: impl FnMut(usize)) -> Duration {
    let mut times: Vec<Duration> = (0..samples)
        .map(|sample| {
            let start = Instant::now();
            for n in 0..batch {
                call(sample * batch + n);
            }
            start.elapsed() / batch as u32
        })
        .collect();
    times.sort();
    times[samples / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let start = Instant::now();
    fixture::populate(dir.path(), CHUNKS, DATASETS, 64).expect("populate the data directory");
    println!(
        "made {CHUNKS} ready chunks over {DATASETS} datasets in {:.1?}",
        start.elapsed()
    );
    let start = Instant::now();
    let manager = ChunkManager::open(Config::new(dir.path())).expect("open");
    println!("open (adopting {CHUNKS} chunks): {:.1?}", start.elapsed());
    assert_eq!(manager.startup_report().adopted, CHUNKS);
    assert_eq!(manager.list_chunks().len(), CHUNKS);

    let queries = hits(4096);
    check_no_allocation(&manager, &queries);

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = criterion.benchmark_group("lookup_5000_chunks");
    let mut next = 0usize;
    group.bench_function("find_chunk/hit", |b| {
        b.iter(|| {
            let (dataset, block) = queries[next % queries.len()];
            next = next.wrapping_add(1);
            manager.find_chunk(black_box(dataset), black_box(block))
        })
    });
    group.bench_function("find_chunk/miss_past_the_end", |b| {
        b.iter(|| manager.find_chunk(black_box(fixture::dataset_id(3)), black_box(u64::MAX)))
    });
    group.bench_function("find_chunk/miss_unknown_dataset", |b| {
        b.iter(|| manager.find_chunk(black_box([0xee; 32]), black_box(10)))
    });
    group.bench_function("find_chunk/hit_and_read_path", |b| {
        b.iter(|| {
            let (dataset, block) = queries[next % queries.len()];
            next = next.wrapping_add(1);
            manager
                .find_chunk(black_box(dataset), black_box(block))
                .map(|chunk| chunk.path().as_os_str().len())
        })
    });
    group.bench_function("list_chunks", |b| {
        b.iter_batched(|| (), |()| manager.list_chunks(), BatchSize::SmallInput)
    });
    group.finish();
    criterion.final_summary();

    // Criterion reports means with confidence intervals; the target is on the median.
    let find = median_per_call(201, 10_000, |n| {
        let (dataset, block) = queries[n % queries.len()];
        black_box(manager.find_chunk(black_box(dataset), black_box(block)));
    });
    let list = median_per_call(101, 10, |_| {
        black_box(manager.list_chunks());
    });
    println!("median per call: find_chunk (hit) {find:.1?}, list_chunks (5000 ids) {list:.1?}");
    println!(
        "target find_chunk median < 100 ns: {}",
        if find < Duration::from_nanos(100) {
            "met"
        } else {
            "NOT met"
        }
    );
    manager.shutdown_blocking();
}
