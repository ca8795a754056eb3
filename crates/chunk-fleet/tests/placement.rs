//! Placement: invariants on random fleets, balance and churn on the fleet of `FLEET.md`.

use std::collections::{BTreeMap, HashSet};

use chunk_fleet::placement::{
    ChunkId, ChunkSize, Params, Placement, Ranker, UnplacedReason, WorkerCapacity, diff, place,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const MB: u64 = 1_000_000;

fn id_of(i: u64) -> ChunkId {
    Sha256::digest(i.to_le_bytes()).into()
}

/// A reference placement written the slow, obvious way: full rank, then the first `R` with room.
fn naive(chunks: &[ChunkSize], workers: &[WorkerCapacity], params: Params) -> Placement {
    let ranker = Ranker::new(workers).expect("distinct ids");
    let limit: BTreeMap<&str, u64> = workers
        .iter()
        .map(|w| {
            (
                w.id.as_str(),
                (w.capacity as f64 * params.saturation).floor() as u64,
            )
        })
        .collect();
    let mut sorted = chunks.to_vec();
    sorted.sort_by_key(|c| c.id);
    let mut assigned: BTreeMap<String, Vec<ChunkId>> =
        workers.iter().map(|w| (w.id.clone(), Vec::new())).collect();
    let mut bytes: BTreeMap<String, u64> = workers.iter().map(|w| (w.id.clone(), 0)).collect();
    let wanted = params.replication.min(workers.len());
    let mut unplaced = Vec::new();
    for chunk in &sorted {
        let mut placed_on = Vec::new();
        for worker in ranker.rank(&chunk.id) {
            if placed_on.len() == wanted {
                break;
            }
            if bytes[worker] + chunk.bytes <= limit[worker] {
                *bytes.get_mut(worker).expect("known") += chunk.bytes;
                assigned.get_mut(worker).expect("known").push(chunk.id);
                placed_on.push(worker.to_string());
            }
        }
        if workers.is_empty() || placed_on.len() < wanted {
            unplaced.push(chunk_fleet::placement::Unplaced {
                chunk: chunk.id,
                bytes: chunk.bytes,
                placed_on,
                wanted,
                reason: if workers.is_empty() {
                    UnplacedReason::NoWorkers
                } else {
                    UnplacedReason::FleetFull
                },
            });
        }
    }
    Placement {
        assigned,
        bytes,
        unplaced,
        params,
    }
}

fn fleet_strategy() -> impl Strategy<Value = (Vec<ChunkSize>, Vec<WorkerCapacity>, Params, u64)> {
    (
        prop::collection::btree_map(any::<[u8; 32]>(), 0u64..200, 0..80),
        prop::collection::btree_map("[a-z]{1,6}", 0u64..2_000, 0..12),
        1usize..5,
        0.3f64..=1.0,
        any::<u64>(),
    )
        .prop_map(|(chunks, workers, replication, saturation, seed)| {
            (
                chunks
                    .into_iter()
                    .map(|(id, bytes)| ChunkSize { id, bytes })
                    .collect(),
                workers
                    .into_iter()
                    .map(|(id, capacity)| WorkerCapacity { id, capacity })
                    .collect(),
                Params {
                    replication,
                    saturation,
                },
                seed,
            )
        })
}

/// A deterministic shuffle (Fisher-Yates over a splitmix sequence).
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn placement_invariants_on_random_fleets((chunks, workers, params, seed) in fleet_strategy()) {
        let placement = place(&chunks, &workers, params).expect("valid input");
        let wanted = params.replication.min(workers.len());

        // No worker over capacity * saturation, and the byte counts add up.
        let size: BTreeMap<ChunkId, u64> = chunks.iter().map(|c| (c.id, c.bytes)).collect();
        for worker in &workers {
            let held = &placement.assigned[&worker.id];
            let bytes: u64 = held.iter().map(|id| size[id]).sum();
            prop_assert_eq!(bytes, placement.bytes[&worker.id]);
            prop_assert!(bytes as f64 <= worker.capacity as f64 * params.saturation);
        }

        // Every chunk on exactly `wanted` distinct workers, or reported with a reason that holds.
        let mut holders: BTreeMap<ChunkId, Vec<&str>> = BTreeMap::new();
        for (worker, held) in &placement.assigned {
            for id in held {
                holders.entry(*id).or_default().push(worker);
            }
        }
        let unplaced: BTreeMap<ChunkId, _> =
            placement.unplaced.iter().map(|u| (u.chunk, u)).collect();
        for chunk in &chunks {
            let on = holders.get(&chunk.id).cloned().unwrap_or_default();
            let distinct: HashSet<&str> = on.iter().copied().collect();
            prop_assert_eq!(distinct.len(), on.len());
            match unplaced.get(&chunk.id) {
                None => prop_assert_eq!(on.len(), wanted),
                Some(report) => {
                    prop_assert!(on.len() < wanted || workers.is_empty());
                    prop_assert_eq!(report.placed_on.len(), on.len());
                    if workers.is_empty() {
                        prop_assert_eq!(report.reason, UnplacedReason::NoWorkers);
                    } else {
                        prop_assert_eq!(report.reason, UnplacedReason::FleetFull);
                        // Every other worker really has no room for it.
                        for worker in &workers {
                            if !report.placed_on.contains(&worker.id) {
                                let limit = (worker.capacity as f64 * params.saturation).floor() as u64;
                                prop_assert!(placement.bytes[&worker.id] + chunk.bytes > limit);
                            }
                        }
                    }
                }
            }
        }

        // The fast path gives the same answer as the obvious algorithm.
        prop_assert_eq!(&placement, &naive(&chunks, &workers, params));

        // Input order does not matter.
        let mut chunks_shuffled = chunks.clone();
        let mut workers_shuffled = workers.clone();
        shuffle(&mut chunks_shuffled, seed);
        shuffle(&mut workers_shuffled, seed ^ 1);
        prop_assert_eq!(
            &placement,
            &place(&chunks_shuffled, &workers_shuffled, params).expect("valid input")
        );
    }

    #[test]
    fn rank_is_a_permutation_independent_of_input_order(
        (_, workers, _, seed) in fleet_strategy(),
        chunk in any::<[u8; 32]>(),
    ) {
        let order = chunk_fleet::placement::rank(&chunk, &workers).expect("distinct ids");
        let mut shuffled = workers.clone();
        shuffle(&mut shuffled, seed);
        prop_assert_eq!(&order, &chunk_fleet::placement::rank(&chunk, &shuffled).expect("distinct ids"));
        let mut sorted = order.clone();
        sorted.sort();
        let mut ids: Vec<String> = workers.iter().map(|w| w.id.clone()).collect();
        ids.sort();
        prop_assert_eq!(sorted, ids);
    }
}

/// The fleet of `FLEET.md`: 20 workers, five with twice the disk; 6,000 chunks of about 200 MB.
/// `headroom` is the fraction of the fleet's `capacity * saturation` left free on average.
fn model_fleet(headroom: f64) -> (Vec<ChunkSize>, Vec<WorkerCapacity>) {
    let chunks: Vec<ChunkSize> = (0..6_000u64)
        .map(|i| {
            let id = id_of(i);
            // 150 to 250 MB, from the id.
            let bytes = 150 * MB + u64::from(id[31]) % 100 * MB;
            ChunkSize { id, bytes }
        })
        .collect();
    let total: u64 = chunks.iter().map(|c| c.bytes).sum::<u64>() * 2;
    let weight_total = 15.0 + 5.0 * 2.0;
    let unit = total as f64 / (1.0 - headroom) / 0.9 / weight_total;
    let workers = (0..20)
        .map(|i| {
            let weight = if i < 5 { 2.0 } else { 1.0 };
            WorkerCapacity::new(format!("worker-{i:02}"), (unit * weight) as u64)
        })
        .collect();
    (chunks, workers)
}

fn holders_count(placement: &Placement) -> usize {
    placement.assigned.values().map(Vec::len).sum()
}

#[test]
fn bytes_per_worker_follow_capacity_within_ten_percent() {
    let (chunks, workers) = model_fleet(0.15);
    let placement = place(&chunks, &workers, Params::default()).expect("valid");
    assert!(placement.unplaced.is_empty());
    assert_eq!(holders_count(&placement), 12_000);
    let total_bytes: u64 = placement.bytes.values().sum();
    let total_capacity: u64 = workers.iter().map(|w| w.capacity).sum();
    for worker in &workers {
        let expected = total_bytes as f64 * worker.capacity as f64 / total_capacity as f64;
        let got = placement.bytes[&worker.id] as f64;
        let deviation = (got - expected) / expected;
        assert!(
            deviation.abs() <= 0.10,
            "{}: {got} bytes, expected {expected} ({:+.1}%)",
            worker.id,
            deviation * 100.0
        );
    }
}

#[test]
fn a_worker_leaving_moves_only_its_replicas() {
    let (chunks, workers) = model_fleet(0.15);
    let before = place(&chunks, &workers, Params::default()).expect("valid");
    for leaving in ["worker-00", "worker-13"] {
        let rest: Vec<WorkerCapacity> = workers
            .iter()
            .filter(|w| w.id != leaving)
            .cloned()
            .collect();
        let after = place(&chunks, &rest, Params::default()).expect("valid");
        assert!(after.unplaced.is_empty());
        let changes = diff(&before.assigned, &after.assigned);
        let held = before.assigned[leaving].len();
        assert_eq!(
            changes.removed, held,
            "only the leaver's replicas are removed"
        );
        assert_eq!(changes.added, held, "each of them is added once elsewhere");
        assert_eq!(changes.per_worker[leaving].removed, held);
    }
}

#[test]
fn a_worker_joining_takes_its_share_and_nothing_else_moves() {
    let (chunks, workers) = model_fleet(0.15);
    let before = place(&chunks, &workers, Params::default()).expect("valid");
    for (joining, capacity) in [
        ("worker-20", workers[10].capacity),
        ("worker-21", workers[0].capacity),
    ] {
        let mut more = workers.clone();
        more.push(WorkerCapacity::new(joining, capacity));
        let after = place(&chunks, &more, Params::default()).expect("valid");
        let changes = diff(&before.assigned, &after.assigned);
        let taken = after.assigned[joining].len();
        assert_eq!(changes.added, taken, "only the new worker gains replicas");
        assert_eq!(
            changes.removed, taken,
            "the others lose exactly what it took"
        );
        let total_capacity: u64 = more.iter().map(|w| w.capacity).sum();
        let fair = 12_000.0 * capacity as f64 / total_capacity as f64;
        assert!(
            (taken as f64 - fair).abs() <= 0.15 * fair,
            "{joining} took {taken}, its capacity share is {fair:.0}"
        );
    }
}

#[test]
fn shrinking_headroom_costs_extra_moves_but_stays_correct() {
    // At 10% headroom the bound starts to bite on a few workers; placements stay valid and a
    // departure moves at most a little more than the leaver held.
    let (chunks, workers) = model_fleet(0.10);
    let before = place(&chunks, &workers, Params::default()).expect("valid");
    assert!(before.unplaced.is_empty());
    let rest: Vec<WorkerCapacity> = workers[1..].to_vec();
    let after = place(&chunks, &rest, Params::default()).expect("valid");
    let changes = diff(&before.assigned, &after.assigned);
    let held = before.assigned["worker-00"].len();
    assert!(changes.added >= held);
    assert!(
        changes.added <= held + held / 10,
        "{} moves for {held} held",
        changes.added
    );
}
