//! Placement: which workers hold which chunks. A pure, deterministic function.
//!
//! # Overview
//!
//! Every chunk goes to `R` workers (default 2), chosen by weighted rendezvous
//! (highest-random-weight) hashing with bounded loads:
//!
//! 1. for a chunk `c`, every worker `w` gets the score `-capacity(w) / ln(u(c, w))`, with
//!    `u(c, w)` in (0, 1) a stable hash of both ids (below). The workers ordered by score,
//!    highest first, is the chunk's *rank*: the order in which it is placed, and the failover
//!    order queries use to pick a holder ([`rank`], [`Ranker`]);
//! 2. chunks are placed one after the other in ascending id order; each takes the first `R`
//!    workers of its rank that still have room: a worker's bytes never exceed
//!    `floor(capacity * saturation)` (saturation default 0.9);
//! 3. a chunk that finds fewer than `min(R, workers)` workers with room keeps the ones it found
//!    and is reported in [`Placement::unplaced`] with the reason.
//!
//! Ordering workers by `-capacity / ln(u)` is sampling without replacement proportional to
//! capacity (the exponential-race form of Efraimidis and Spirakis), so a worker with twice the
//! disk gets about twice the bytes. Because a chunk's rank depends only on the chunk and the
//! worker ids, a worker leaving moves only the replicas it held, and a worker joining takes
//! about `1/N` of the replicas from the others and moves nothing else, as long as no worker
//! reaches its bound (keep 10% headroom or more: with 6% the model in `FLEET.md` moved 104
//! extra replicas of 12,000).
//!
//! # The hash, fixed on every machine
//!
//! - chunk hash `hc`: the first 8 bytes, big-endian, of `sha256(chunk id)` (the 32 id bytes);
//! - worker hash `hw`: the first 8 bytes, big-endian, of `sha256(worker id)` (its UTF-8 bytes);
//! - pair hash: `fmix64(hc ^ fmix64(hw))`, with `fmix64` the 64-bit finaliser of MurmurHash3;
//! - `u = ((pair >> 12) + 0.5) / 2^52`, exact in an `f64` and strictly inside (0, 1);
//! - `ln` is computed by this module with `+ - * /` only (an `atanh` series), never by the
//!   platform's libm, so every machine computes the same bits. Workers are compared by
//!   `-ln(u) / capacity`, smallest first (the same order as the score, highest first); exact
//!   ties go to the smaller worker id.
//!
//! Changing any of these moves almost every chunk: it is part of the format
//! ([`HASH_VERSION`]).
//!
//! # Speed
//!
//! Scoring every worker for every chunk is `chunks x workers` hashes, but only the first few
//! of a rank are needed. Per chunk, a pass over the workers computes the pair hash and the
//! cheap lower bound `(1 - u) / capacity <= -ln(u) / capacity`, and computes the logarithm
//! only for workers whose bound can still beat the current `R + 2`-th best (a handful per
//! chunk). The passes run on all cores; the bounded-load fill that follows is sequential and
//! falls back to the full rank only for a chunk whose first `R + 2` workers lack room.
//! 1,000,000 chunks over 1,000 workers take a few seconds (`cargo bench -p chunk-fleet`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use sha2::{Digest, Sha256};

/// The id of a chunk: 32 bytes, the same type as `chunk_manager::ChunkId`.
pub type ChunkId = [u8; 32];

/// The version of the hash and ranking rule; a change of rule is a change of this number.
pub const HASH_VERSION: u32 = 1;

/// How many workers beyond `R` each chunk's first pass keeps as spares for full workers.
const SPARE_CANDIDATES: usize = 2;

/// A chunk to place: its id and its size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSize {
    /// The chunk's id.
    pub id: ChunkId,
    /// Its size on disk, in bytes.
    pub bytes: u64,
}

/// A live worker: its id and the disk it offers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerCapacity {
    /// The worker's id (stable across restarts).
    pub id: String,
    /// Its disk budget, in bytes.
    pub capacity: u64,
}

impl WorkerCapacity {
    /// A worker with this id and capacity.
    pub fn new(id: impl Into<String>, capacity: u64) -> Self {
        Self {
            id: id.into(),
            capacity,
        }
    }
}

/// The knobs of a placement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// How many workers hold each chunk (`R`). Keep it fixed: changing it moves many replicas.
    pub replication: usize,
    /// The fraction of its capacity a worker may be given, in (0, 1].
    pub saturation: f64,
}

impl Default for Params {
    /// `R = 2`, saturation 0.9.
    fn default() -> Self {
        Self {
            replication: 2,
            saturation: 0.9,
        }
    }
}

/// Input a placement refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// `R` is 0.
    #[error("replication must be at least 1")]
    ZeroReplication,
    /// The saturation is not in (0, 1].
    #[error("saturation {value} is not in (0, 1]")]
    InvalidSaturation {
        /// The value given.
        value: f64,
    },
    /// Two workers share an id.
    #[error("worker id {id:?} appears twice")]
    DuplicateWorker {
        /// The id.
        id: String,
    },
    /// Two chunks share an id.
    #[error("chunk {id} appears twice")]
    DuplicateChunk {
        /// The id, in hex.
        id: String,
    },
}

/// Why a chunk has fewer replicas than it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnplacedReason {
    /// There is no live worker at all.
    NoWorkers,
    /// Every worker without a replica is already at `capacity * saturation`: the fleet is full.
    FleetFull,
}

impl fmt::Display for UnplacedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnplacedReason::NoWorkers => f.write_str("no live worker"),
            UnplacedReason::FleetFull => {
                f.write_str("fleet full: no other worker has room under capacity * saturation")
            }
        }
    }
}

/// A chunk placed on fewer than `min(R, workers)` workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// The chunk.
    pub chunk: ChunkId,
    /// Its size in bytes.
    pub bytes: u64,
    /// The workers it was placed on (fewer than wanted, maybe none), in rank order.
    pub placed_on: Vec<String>,
    /// How many replicas it should have: `min(R, workers)`.
    pub wanted: usize,
    /// Why it has fewer.
    pub reason: UnplacedReason,
}

/// The result of [`place`].
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Every live worker (even one given nothing) with its chunks, in ascending id order.
    pub assigned: BTreeMap<String, Vec<ChunkId>>,
    /// Bytes given to each worker.
    pub bytes: BTreeMap<String, u64>,
    /// Chunks with fewer than `min(R, workers)` replicas, in ascending id order.
    pub unplaced: Vec<Unplaced>,
    /// The parameters used.
    pub params: Params,
}

impl Placement {
    /// The number of replicas placed, over all workers.
    pub fn replicas(&self) -> usize {
        self.assigned.values().map(Vec::len).sum()
    }
}

/// The workers of a placement, hashed once, to rank many chunks.
///
/// ```
/// use chunk_fleet::placement::{Ranker, WorkerCapacity};
/// let ranker = Ranker::new(&[WorkerCapacity::new("a", 100), WorkerCapacity::new("b", 100)])?;
/// let order = ranker.rank(&[7; 32]);
/// assert_eq!(order.len(), 2);
/// assert_eq!(ranker.rank(&[7; 32]), order); // the same on every call and every machine
/// # Ok::<(), chunk_fleet::placement::PlacementError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Ranker {
    /// Worker ids, ascending; indexes below refer to this order.
    ids: Vec<String>,
    /// `fmix64(worker hash)` per worker.
    mixed: Vec<u64>,
    /// Capacity per worker, as `f64`.
    capacity: Vec<f64>,
    /// `1 / capacity` per worker (infinite for 0).
    inverse_capacity: Vec<f64>,
}

impl Ranker {
    /// Hashes the workers. Their order does not matter; ids must be distinct.
    pub fn new(workers: &[WorkerCapacity]) -> Result<Self, PlacementError> {
        let mut sorted: Vec<&WorkerCapacity> = workers.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0].id == pair[1].id) {
            return Err(PlacementError::DuplicateWorker {
                id: pair[0].id.clone(),
            });
        }
        Ok(Self {
            ids: sorted.iter().map(|w| w.id.clone()).collect(),
            mixed: sorted.iter().map(|w| fmix64(worker_hash(&w.id))).collect(),
            capacity: sorted.iter().map(|w| w.capacity as f64).collect(),
            inverse_capacity: sorted.iter().map(|w| 1.0 / w.capacity as f64).collect(),
        })
    }

    /// The worker ids, ascending.
    pub fn workers(&self) -> &[String] {
        &self.ids
    }

    /// Every worker in the chunk's rank order: the placement order and the failover order.
    pub fn rank(&self, chunk: &ChunkId) -> Vec<&str> {
        self.full_rank(chunk_hash(chunk))
            .into_iter()
            .map(|index| self.ids[index as usize].as_str())
            .collect()
    }

    /// The first `k` workers of the chunk's rank (fewer if there are fewer workers); as
    /// `rank(chunk)[..k]` but without scoring every worker exactly.
    pub fn top(&self, chunk: &ChunkId, k: usize) -> Vec<&str> {
        let mut out = Vec::with_capacity(k);
        self.top_k(chunk_hash(chunk), k, &mut out);
        out.into_iter()
            .map(|(_, index)| self.ids[index as usize].as_str())
            .collect()
    }

    /// `-ln(u) / capacity` for a pair: smaller ranks first.
    fn key(&self, chunk_hash: u64, worker: usize) -> f64 {
        neg_ln(unit(fmix64(chunk_hash ^ self.mixed[worker]))) / self.capacity[worker]
    }

    /// Every worker index in rank order.
    fn full_rank(&self, chunk_hash: u64) -> Vec<u32> {
        let mut keyed: Vec<(f64, u32)> = (0..self.ids.len())
            .map(|worker| (self.key(chunk_hash, worker), worker as u32))
            .collect();
        keyed.sort_by(compare_keyed);
        keyed.into_iter().map(|(_, index)| index).collect()
    }

    /// The first `k` of the rank, best first, into `out` (cleared first).
    ///
    /// Exact keys are computed only for workers whose lower bound `(1 - u) / capacity` does not
    /// exceed the current `k`-th key by more than a rounding margin, so the result is exactly
    /// the first `k` of [`Ranker::full_rank`].
    fn top_k(&self, chunk_hash: u64, k: usize, out: &mut Vec<(f64, u32)>) {
        out.clear();
        if k == 0 {
            return;
        }
        let mut threshold = f64::INFINITY;
        for worker in 0..self.ids.len() {
            let u = unit(fmix64(chunk_hash ^ self.mixed[worker]));
            if out.len() == k {
                let lower_bound = (1.0 - u) * self.inverse_capacity[worker];
                if lower_bound > threshold * (1.0 + 1e-9) {
                    continue;
                }
            }
            let candidate = (neg_ln(u) / self.capacity[worker], worker as u32);
            if out.len() == k {
                match out.last() {
                    Some(last) if compare_keyed(&candidate, last) == Ordering::Less => {
                        out.pop();
                    }
                    _ => continue,
                }
            }
            let at =
                out.partition_point(|probe| compare_keyed(probe, &candidate) == Ordering::Less);
            out.insert(at, candidate);
            if out.len() == k {
                threshold = out[k - 1].0;
            }
        }
    }
}

/// Every worker's id in the chunk's rank order (see the module docs); the failover order.
///
/// For many chunks, build a [`Ranker`] once.
pub fn rank(chunk: &ChunkId, workers: &[WorkerCapacity]) -> Result<Vec<String>, PlacementError> {
    let ranker = Ranker::new(workers)?;
    Ok(ranker.rank(chunk).into_iter().map(str::to_owned).collect())
}

/// Places every chunk on `min(R, workers)` workers (see the module docs).
///
/// The result depends only on the sets of chunks and workers, not on their order.
///
/// ```
/// use chunk_fleet::placement::{place, ChunkSize, Params, WorkerCapacity};
/// let chunks: Vec<ChunkSize> =
///     (0..100u8).map(|i| ChunkSize { id: [i; 32], bytes: 10 }).collect();
/// let workers = [WorkerCapacity::new("a", 1000), WorkerCapacity::new("b", 1000), WorkerCapacity::new("c", 1000)];
/// let placement = place(&chunks, &workers, Params::default())?;
/// assert_eq!(placement.replicas(), 200);
/// assert!(placement.unplaced.is_empty());
/// assert!(placement.bytes.values().all(|&bytes| bytes <= 900));
/// # Ok::<(), chunk_fleet::placement::PlacementError>(())
/// ```
pub fn place(
    chunks: &[ChunkSize],
    workers: &[WorkerCapacity],
    params: Params,
) -> Result<Placement, PlacementError> {
    if params.replication == 0 {
        return Err(PlacementError::ZeroReplication);
    }
    if !(params.saturation > 0.0 && params.saturation <= 1.0) {
        return Err(PlacementError::InvalidSaturation {
            value: params.saturation,
        });
    }
    let ranker = Ranker::new(workers)?;
    let mut sorted: Vec<ChunkSize> = chunks.to_vec();
    sorted.sort_unstable_by(|a, b| a.id.cmp(&b.id).then(a.bytes.cmp(&b.bytes)));
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0].id == pair[1].id) {
        return Err(PlacementError::DuplicateChunk {
            id: hex::encode(pair[0].id),
        });
    }

    let worker_count = ranker.ids.len();
    let wanted = params.replication.min(worker_count);
    let mut assigned: Vec<Vec<ChunkId>> = vec![Vec::new(); worker_count];
    let mut load = vec![0u64; worker_count];
    let limit: Vec<u64> = ranker
        .capacity
        .iter()
        .map(|capacity| (capacity * params.saturation).floor() as u64)
        .collect();
    let mut unplaced = Vec::new();

    if worker_count == 0 {
        unplaced = sorted
            .iter()
            .map(|chunk| Unplaced {
                chunk: chunk.id,
                bytes: chunk.bytes,
                placed_on: Vec::new(),
                wanted: 0,
                reason: UnplacedReason::NoWorkers,
            })
            .collect();
    } else {
        let k = (params.replication + SPARE_CANDIDATES).min(worker_count);
        let candidates = candidates_in_parallel(&ranker, &sorted, k);
        let mut chosen: Vec<u32> = Vec::with_capacity(wanted);
        for (index, chunk) in sorted.iter().enumerate() {
            chosen.clear();
            let first = &candidates[index * k..(index + 1) * k];
            pick(first, chunk.bytes, &load, &limit, wanted, &mut chosen);
            if chosen.len() < wanted && k < worker_count {
                chosen.clear();
                let all = ranker.full_rank(chunk_hash(&chunk.id));
                pick(&all, chunk.bytes, &load, &limit, wanted, &mut chosen);
            }
            for &worker in &chosen {
                load[worker as usize] += chunk.bytes;
                assigned[worker as usize].push(chunk.id);
            }
            if chosen.len() < wanted {
                unplaced.push(Unplaced {
                    chunk: chunk.id,
                    bytes: chunk.bytes,
                    placed_on: chosen
                        .iter()
                        .map(|&worker| ranker.ids[worker as usize].clone())
                        .collect(),
                    wanted,
                    reason: UnplacedReason::FleetFull,
                });
            }
        }
    }

    Ok(Placement {
        assigned: ranker.ids.iter().cloned().zip(assigned).collect(),
        bytes: ranker.ids.iter().cloned().zip(load).collect(),
        unplaced,
        params,
    })
}

/// The first `wanted` workers of `order` with room for `bytes`, into `chosen`.
fn pick(
    order: &[u32],
    bytes: u64,
    load: &[u64],
    limit: &[u64],
    wanted: usize,
    chosen: &mut Vec<u32>,
) {
    for &worker in order {
        if chosen.len() == wanted {
            return;
        }
        let worker_index = worker as usize;
        if load[worker_index].saturating_add(bytes) <= limit[worker_index] {
            chosen.push(worker);
        }
    }
}

/// The first `k` ranked workers of every chunk, `k` per chunk in chunk order, computed on all
/// cores (each chunk's candidates depend only on the chunk, so the split does not matter).
fn candidates_in_parallel(ranker: &Ranker, chunks: &[ChunkSize], k: usize) -> Vec<u32> {
    let mut out = vec![0u32; chunks.len() * k];
    if chunks.is_empty() || k == 0 {
        return out;
    }
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 64);
    let per_thread = chunks.len().div_ceil(threads).max(1024);
    std::thread::scope(|scope| {
        for (chunk_part, out_part) in chunks
            .chunks(per_thread)
            .zip(out.chunks_mut(per_thread * k))
        {
            scope.spawn(move || {
                let mut top = Vec::with_capacity(k);
                for (chunk, slot) in chunk_part.iter().zip(out_part.chunks_mut(k)) {
                    ranker.top_k(chunk_hash(&chunk.id), k, &mut top);
                    for (place, (_, worker)) in slot.iter_mut().zip(&top) {
                        *place = *worker;
                    }
                }
            });
        }
    });
    out
}

/// Orders `(key, worker index)`: smaller key first, then smaller index (smaller id).
fn compare_keyed(a: &(f64, u32), b: &(f64, u32)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// The chunk hash: the first 8 bytes, big-endian, of `sha256(id)`.
fn chunk_hash(id: &ChunkId) -> u64 {
    first_u64(&Sha256::digest(id))
}

/// The worker hash: the first 8 bytes, big-endian, of `sha256(id as UTF-8)`.
fn worker_hash(id: &str) -> u64 {
    first_u64(&Sha256::digest(id.as_bytes()))
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// The 64-bit finaliser of MurmurHash3.
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// `((h >> 12) + 0.5) / 2^52`: exact, in `[2^-53, 1 - 2^-53]`.
fn unit(hash: u64) -> f64 {
    ((hash >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

/// `-ln(u)` for `u` in (0, 1), with IEEE-754 `+ - * /` only (no libm, no fused operations), so
/// the bits are the same on every machine. Relative error below 1e-15.
fn neg_ln(u: f64) -> f64 {
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
    // 1 / (2i + 1) for i = 0..=10: the series of atanh(s) / s in powers of s^2.
    const COEFFICIENTS: [f64; 11] = [
        1.0,
        1.0 / 3.0,
        1.0 / 5.0,
        1.0 / 7.0,
        1.0 / 9.0,
        1.0 / 11.0,
        1.0 / 13.0,
        1.0 / 15.0,
        1.0 / 17.0,
        1.0 / 19.0,
        1.0 / 21.0,
    ];
    let bits = u.to_bits();
    // u >= 2^-53 is a normal number: u = m * 2^e with m in [1, 2).
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if mantissa > SQRT_2 {
        mantissa *= 0.5;
        exponent += 1;
    }
    // ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172.
    let s = (mantissa - 1.0) / (mantissa + 1.0);
    let s2 = s * s;
    let mut series = 0.0;
    for coefficient in COEFFICIENTS.iter().rev() {
        series = series * s2 + coefficient;
    }
    let ln_mantissa = 2.0 * s * series;
    -(exponent as f64 * std::f64::consts::LN_2 + ln_mantissa)
}

/// Replicas added and removed on one worker between two placements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerDiff {
    /// Chunks the worker holds in the new placement and not in the old.
    pub added: usize,
    /// Chunks the worker held in the old placement and not in the new.
    pub removed: usize,
}

/// What changed between two placements, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementDiff {
    /// Per worker present in either placement, with at least one change.
    pub per_worker: BTreeMap<String, WorkerDiff>,
    /// Replicas added, over all workers: the replicas that move.
    pub added: usize,
    /// Replicas removed, over all workers.
    pub removed: usize,
}

/// Counts the replicas added and removed per worker from `old` to `new` (worker id to chunks).
///
/// ```
/// use std::collections::BTreeMap;
/// use chunk_fleet::placement::diff;
/// let old = BTreeMap::from([("a".to_string(), vec![[1; 32], [2; 32]])]);
/// let new = BTreeMap::from([("a".to_string(), vec![[1; 32]]), ("b".to_string(), vec![[2; 32]])]);
/// let changes = diff(&old, &new);
/// assert_eq!((changes.added, changes.removed), (1, 1));
/// assert_eq!(changes.per_worker["b"].added, 1);
/// ```
pub fn diff(
    old: &BTreeMap<String, Vec<ChunkId>>,
    new: &BTreeMap<String, Vec<ChunkId>>,
) -> PlacementDiff {
    let empty = Vec::new();
    let mut out = PlacementDiff::default();
    let workers: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for worker in workers {
        let before: HashSet<&ChunkId> = old.get(worker).unwrap_or(&empty).iter().collect();
        let after: HashSet<&ChunkId> = new.get(worker).unwrap_or(&empty).iter().collect();
        let change = WorkerDiff {
            added: after.difference(&before).count(),
            removed: before.difference(&after).count(),
        };
        out.added += change.added;
        out.removed += change.removed;
        if change != WorkerDiff::default() {
            out.per_worker.insert(worker.clone(), change);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neg_ln_matches_libm_closely() {
        let mut state = 1u64;
        for _ in 0..100_000 {
            state = fmix64(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
            let u = unit(state);
            let ours = neg_ln(u);
            let reference = -u.ln();
            assert!(
                ((ours - reference) / reference).abs() < 1e-13,
                "u {u}: {ours} vs {reference}"
            );
        }
        for u in [
            2f64.powi(-53),
            0.5,
            1.0 - 2f64.powi(-53),
            std::f64::consts::FRAC_1_SQRT_2,
            0.999,
        ] {
            let reference = -u.ln();
            assert!(((neg_ln(u) - reference) / reference).abs() < 1e-13, "u {u}");
        }
    }

    #[test]
    fn unit_is_strictly_inside_zero_one() {
        assert!(unit(0) > 0.0);
        assert!(unit(u64::MAX) < 1.0);
        assert!(neg_ln(unit(u64::MAX)) > 0.0);
    }

    #[test]
    fn the_hash_is_pinned() {
        // These values are part of the format: if this test fails, placements change everywhere.
        assert_eq!(chunk_hash(&[0; 32]), 0x66687aadf862bd77);
        assert_eq!(
            worker_hash("worker-1"),
            first_u64(&Sha256::digest(b"worker-1"))
        );
        assert_eq!(
            neg_ln(unit(fmix64(
                chunk_hash(&[0; 32]) ^ fmix64(worker_hash("a"))
            )))
            .to_bits(),
            PINNED_NEG_LN_BITS
        );
        let workers: Vec<WorkerCapacity> = ["a", "b", "c", "d", "e"]
            .iter()
            .zip(1..)
            .map(|(id, capacity)| WorkerCapacity::new(*id, capacity))
            .collect();
        let ranker = Ranker::new(&workers).expect("distinct ids");
        let ranks: Vec<String> = (0..8u8).map(|i| ranker.rank(&[i; 32]).concat()).collect();
        assert_eq!(ranks.join(" "), PINNED_RANKS);
    }

    const PINNED_NEG_LN_BITS: u64 = 4586209908171052102;
    const PINNED_RANKS: &str = "eabcd edcba ebcda dbaec bceda bdeac bdcea ebdca";

    #[test]
    fn top_k_is_the_prefix_of_the_full_rank() {
        let workers: Vec<WorkerCapacity> = (0..300)
            .map(|i| WorkerCapacity::new(format!("w{i}"), 1 + (i as u64 % 7) * 1000))
            .collect();
        let ranker = Ranker::new(&workers).expect("distinct ids");
        for c in 0..200u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&c.to_le_bytes());
            let full = ranker.rank(&id);
            for k in [1, 2, 4, 17, 300, 400] {
                assert_eq!(
                    ranker.top(&id, k),
                    full[..k.min(300)].to_vec(),
                    "chunk {c} k {k}"
                );
            }
        }
    }

    #[test]
    fn bad_params_and_duplicates_are_errors() {
        let workers = [WorkerCapacity::new("a", 10)];
        let chunk = ChunkSize {
            id: [1; 32],
            bytes: 1,
        };
        let zero = Params {
            replication: 0,
            ..Params::default()
        };
        assert_eq!(
            place(&[chunk], &workers, zero),
            Err(PlacementError::ZeroReplication)
        );
        for saturation in [0.0, -1.0, 1.5, f64::NAN] {
            let params = Params {
                saturation,
                ..Params::default()
            };
            assert!(matches!(
                place(&[chunk], &workers, params),
                Err(PlacementError::InvalidSaturation { .. })
            ));
        }
        let twice = [WorkerCapacity::new("a", 10), WorkerCapacity::new("a", 20)];
        assert!(matches!(
            place(&[chunk], &twice, Params::default()),
            Err(PlacementError::DuplicateWorker { .. })
        ));
        assert!(matches!(
            place(&[chunk, chunk], &workers, Params::default()),
            Err(PlacementError::DuplicateChunk { .. })
        ));
    }

    #[test]
    fn no_workers_reports_every_chunk() {
        let chunk = ChunkSize {
            id: [1; 32],
            bytes: 1,
        };
        let placement = place(&[chunk], &[], Params::default()).expect("valid");
        assert_eq!(placement.unplaced.len(), 1);
        assert_eq!(placement.unplaced[0].reason, UnplacedReason::NoWorkers);
    }

    #[test]
    fn a_full_fleet_reports_the_chunks_it_cannot_place() {
        let workers = [WorkerCapacity::new("a", 100), WorkerCapacity::new("b", 100)];
        let chunks: Vec<ChunkSize> = (0..10u8)
            .map(|i| ChunkSize {
                id: [i; 32],
                bytes: 20,
            })
            .collect();
        // 90 bytes each: 4 chunks fit per worker, so 4 chunks get both replicas, 6 none.
        let placement = place(&chunks, &workers, Params::default()).expect("valid");
        assert!(placement.bytes.values().all(|&bytes| bytes <= 90));
        assert_eq!(placement.replicas(), 8);
        assert_eq!(placement.unplaced.len(), 6);
        assert!(
            placement
                .unplaced
                .iter()
                .all(|u| u.reason == UnplacedReason::FleetFull && u.wanted == 2)
        );
    }
}
