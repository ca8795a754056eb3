//! Placement time and churn figures.
//!
//! Run: `cargo bench -p chunk-fleet --bench placement` (add `-- --quick` to skip the
//! 1,000,000 x 1,000 case).

use std::time::Instant;

use chunk_fleet::placement::{ChunkSize, Params, WorkerCapacity, diff, place};
use sha2::{Digest, Sha256};

const MB: u64 = 1_000_000;

/// `chunks` chunks of 150 to 249 MB and `workers` workers named `<prefix>worker-NN`, the first
/// quarter with twice the disk, sized so that the fleet is `1 - headroom` full under
/// `capacity * 0.9` with R = 2. With 6,000 x 20 and no prefix this is the fleet of the tests.
fn fleet_named(
    chunks: u64,
    workers: usize,
    headroom: f64,
    prefix: &str,
) -> (Vec<ChunkSize>, Vec<WorkerCapacity>) {
    let chunks: Vec<ChunkSize> = (0..chunks)
        .map(|i| {
            let id: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
            ChunkSize {
                id,
                bytes: 150 * MB + u64::from(id[31]) % 100 * MB,
            }
        })
        .collect();
    let weight = |i: usize| if i < workers / 4 { 2.0 } else { 1.0 };
    let weights: f64 = (0..workers).map(weight).sum();
    let total = chunks.iter().map(|c| c.bytes).sum::<u64>() as f64 * 2.0;
    let unit = total / (1.0 - headroom) / 0.9 / weights;
    let workers = (0..workers)
        .map(|i| WorkerCapacity::new(format!("{prefix}worker-{i:02}"), (unit * weight(i)) as u64))
        .collect();
    (chunks, workers)
}

fn fleet(chunks: u64, workers: usize, headroom: f64) -> (Vec<ChunkSize>, Vec<WorkerCapacity>) {
    fleet_named(chunks, workers, headroom, "")
}

fn churn(chunks: &[ChunkSize], workers: &[WorkerCapacity], label: &str) {
    let params = Params::default();
    let before = place(chunks, workers, params).expect("valid fleet");
    let leaver = &workers[1].id;
    let held = before.assigned[leaver].len();
    let rest: Vec<WorkerCapacity> = workers
        .iter()
        .filter(|w| &w.id != leaver)
        .cloned()
        .collect();
    let after_leave = place(chunks, &rest, params).expect("valid fleet");
    let leave = diff(&before.assigned, &after_leave.assigned);
    let mut more = workers.to_vec();
    more.push(WorkerCapacity::new("worker-new", workers[1].capacity));
    let after_join = place(chunks, &more, params).expect("valid fleet");
    let join = diff(&before.assigned, &after_join.assigned);
    let taken = after_join.assigned["worker-new"].len();
    let total_capacity: u64 = more.iter().map(|w| w.capacity).sum();
    let fair = before.replicas() as f64 * workers[1].capacity as f64 / total_capacity as f64;
    println!(
        "{label}: leave: worker held {held}, replicas moved {} (extra {}); \
         join: new worker took {taken} (capacity share {fair:.0}), replicas moved {} (extra {})",
        leave.added,
        leave.added - held,
        join.added,
        join.added - taken,
    );
}

/// The largest deviation of a worker's bytes from its capacity share, as a fraction.
fn worst_deviation(chunks: &[ChunkSize], workers: &[WorkerCapacity]) -> f64 {
    let placement = place(chunks, workers, Params::default()).expect("valid fleet");
    let total_bytes: u64 = placement.bytes.values().sum();
    let total_capacity: u64 = workers.iter().map(|w| w.capacity).sum();
    let worst = workers
        .iter()
        .map(|w| {
            let expected = total_bytes as f64 * w.capacity as f64 / total_capacity as f64;
            (placement.bytes[&w.id] as f64 - expected) / expected
        })
        .fold(
            0.0f64,
            |worst, d| if d.abs() > worst.abs() { d } else { worst },
        );
    assert!(placement.unplaced.is_empty());
    worst
}

fn balance() {
    let (chunks, workers) = fleet(6_000, 20, 0.15);
    println!(
        "balance, 6000 x 20 (the test fleet): worst worker {:+.1}% from its capacity share",
        worst_deviation(&chunks, &workers) * 100.0
    );
    let mut worst: Vec<f64> = (0..20)
        .map(|seed| {
            let (chunks, workers) = fleet_named(6_000, 20, 0.15, &format!("fleet{seed}-"));
            worst_deviation(&chunks, &workers).abs() * 100.0
        })
        .collect();
    worst.sort_by(f64::total_cmp);
    println!(
        "balance over 20 other namings of the 20 workers: the worst worker is off by {:.1}% \
         in the median fleet, {:.1}% in the worst fleet",
        worst[10], worst[19]
    );
}

fn timed(chunks: u64, workers: usize) {
    let (chunks_list, workers_list) = fleet(chunks, workers, 0.15);
    let start = Instant::now();
    let placement = place(&chunks_list, &workers_list, Params::default()).expect("valid fleet");
    let elapsed = start.elapsed();
    println!(
        "place {chunks} chunks x {workers} workers (R = 2): {:.3} s, {} replicas, {} unplaced",
        elapsed.as_secs_f64(),
        placement.replicas(),
        placement.unplaced.len()
    );
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    println!("chunk-fleet placement benchmark ({cores} cores)");
    println!("reproduce: cargo bench -p chunk-fleet --bench placement");
    timed(6_000, 20);
    balance();
    for headroom in [0.15, 0.10, 0.06, 0.01] {
        let (chunks, workers) = fleet(6_000, 20, headroom);
        churn(
            &chunks,
            &workers,
            &format!("6000 x 20, headroom {:.0}%", headroom * 100.0),
        );
    }
    if !quick {
        timed(1_000_000, 1_000);
    }
}
