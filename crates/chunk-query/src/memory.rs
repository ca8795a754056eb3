//! Memory: one limit for all running queries, shared fairly, with spilling to disk.
//!
//! # The limit
//!
//! Every query of an engine runs under one memory pool of
//! [`QueryConfig::memory_limit`] bytes (1 GiB by default; `--query-memory` for the daemon).
//! It is `SharedPool`, DataFusion's `FairSpillPool` with an overdraft for the operators
//! that cannot spill: those (hash join build sides, the merges of a sort's spilled runs, ...)
//! take what they need first come, first served, and what is left is split evenly between the
//! operators that can spill (sorts, group-bys, repartitions) of every running query, so one
//! big query cannot starve the others (with a greedy pool, whoever grows first takes
//! everything and the others fail with "Resources exhausted").
//!
//! A share is checked when an operator grows: one that grew while it was alone keeps its
//! big share until it next asks for more, which it may never do (a sort merging its runs).
//! With DataFusion's pool, a merge starting in another query then found nothing left and
//! failed (four concurrent window queries under 64 MiB failed one run in three once scans
//! got faster). So an operator that cannot spill may take memory held by those that can, up
//! to a quarter of the limit beyond it: the shares of the spilling operators shrink at once
//! and each gives back what it holds beyond its share the next time it grows, by spilling.
//! Operators that cannot spill never hold more than the limit together. The total can pass
//! the limit while a spilling operator keeps a stale share (as with DataFusion's pool, where
//! a second sort may take its half while the first still holds the whole): the overdraft
//! adds at most a quarter of the limit to that, for operators that cannot spill.

//! # Spilling
//!
//! An operator that reaches its share writes what it holds to a spill file and goes on:
//! sorts (`ORDER BY`, and the sorts under windows and sort-merge joins), the partial stage of
//! hash aggregations (the final stage too: it spills its groups sorted and merges them; a
//! `GROUP BY` with 60,000 groups succeeds under 8 MiB in one partition and 12 MiB in eight,
//! but fails with "Resources exhausted" under 4 MiB, where the merge of its spilled runs does
//! not fit), sort-merge joins and repartitions. A hash join does not spill:
//! its build side (the smaller input) must fit in memory, or the query fails with "Resources
//! exhausted". Window functions hold their current partition outside the pool.
//!
//! Spill files go to [`QueryConfig::spill_dir`], by default `<data_dir>/tmp/query-spill/` of
//! the chunk manager (created when the engine starts, after the manager, which empties
//! `tmp/` whenever it opens); each engine uses a `datafusion-*` directory of its own in it,
//! removed when the engine is dropped, and an engine starting removes the `datafusion-*`
//! directories a crashed process left there. Spill files count against
//! [`QueryConfig::max_spill_bytes`] (100 GiB by default), not the manager's disk budget.
//!
//! To give each sort room to spill even under a small limit, the memory a sort keeps for its
//! final merge (DataFusion's `sort_spill_reservation_bytes`, 10 MiB by default) is at most a
//! sixteenth of the limit per partition, and a merge of spilled runs reads at most two of
//! them at once (more runs take more merge passes): merges cannot spill, and uncapped, one
//! partition's merge would take all the memory it can get.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chunk_manager::ChunkManager;
use datafusion::common::{
    Result as DataFusionResult, human_readable_size, resources_datafusion_err,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode, SpillingProgress};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{DiskManager, SpillFile, TempFileFactory};
use datafusion::prelude::SessionConfig;

use crate::QueryConfig;
use crate::bounded::{BoundedExpressions, bound_functions};
use crate::error::QueryError;

/// The prefix of the directories DataFusion makes for its spill files.
const SPILL_PREFIX: &str = "datafusion-";

/// How many spill files one merge pass reads at once. DataFusion's merges of spilled runs
/// cannot spill, and by default take as much of the pool as they can get (a buffer per
/// file), starving the other partitions and queries: capped, each takes a few batches, and
/// more runs take more passes.
const SPILL_MERGE_FAN_IN: usize = 2;

/// The default spill directory, under the manager's `tmp/`.
const SPILL_DIR: &str = "tmp/query-spill";

/// Where spill files go: [`QueryConfig::spill_dir`] or `<data_dir>/tmp/query-spill`.
pub(crate) fn spill_dir(manager: &ChunkManager, config: &QueryConfig) -> PathBuf {
    match &config.spill_dir {
        Some(dir) => dir.clone(),
        None => manager.config().data_dir.join(SPILL_DIR),
    }
}

/// The runtime shared by every query of an engine: the fair memory pool and the disk manager
/// spilling to the spill directory (created, and emptied of earlier processes' spill files);
/// with the count of spill files made.
pub(crate) fn runtime_env(
    manager: &ChunkManager,
    config: &QueryConfig,
) -> Result<(Arc<RuntimeEnv>, Arc<SpillFiles>), QueryError> {
    let dir = spill_dir(manager, config);
    prepare_spill_dir(&dir).map_err(|source| QueryError::SpillDir {
        path: dir.clone(),
        source,
    })?;
    let disk = DiskManagerBuilder::default()
        .with_mode(DiskManagerMode::Directories(vec![dir]))
        .with_max_temp_directory_size(config.max_spill_bytes)
        .with_max_spill_merge_fan_in(SPILL_MERGE_FAN_IN)
        .build()
        .map_err(QueryError::execution)?;
    let spills = Arc::new(SpillFiles {
        disk: Arc::new(disk),
        made: AtomicU64::new(0),
    });
    let counted = DiskManagerBuilder::default()
        .with_mode(DiskManagerMode::Custom(spills.clone()))
        .with_max_temp_directory_size(config.max_spill_bytes);
    let mut runtime = RuntimeEnvBuilder::new().with_disk_manager_builder(counted);
    if let Some(limit) = config.memory_limit {
        // The errors name the five biggest consumers.
        let top = NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN);
        let pool: Arc<dyn MemoryPool> =
            Arc::new(TrackConsumersPool::new(SharedPool::new(limit), top));
        runtime = runtime.with_memory_pool(pool);
    }
    let runtime = runtime.build_arc().map_err(QueryError::execution)?;
    // Local chunk files: column chunks read on the query's thread (see `crate::local`).
    runtime.register_object_store(
        datafusion::execution::object_store::ObjectStoreUrl::local_filesystem().as_ref(),
        crate::local::InlineLocal::new(),
    );
    Ok((runtime, spills))
}

/// The overdraft of operators that cannot spill, over memory held by those that can: a
/// quarter of the limit (see the module docs).
const OVERDRAFT: usize = 4;

/// The engine's memory pool: DataFusion's `FairSpillPool`, with an overdraft for operators
/// that cannot spill (see the module docs).
#[derive(Debug)]
pub(crate) struct SharedPool {
    limit: usize,
    state: std::sync::Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Consumers that can spill, registered now.
    spillers: usize,
    /// Bytes held by consumers that can spill.
    spillable: usize,
    /// Bytes held by consumers that cannot.
    unspillable: usize,
}

impl PoolState {
    /// The bytes held by consumers of `reservation`'s kind (can spill, or cannot).
    fn held(&mut self, reservation: &MemoryReservation) -> &mut usize {
        if reservation.consumer().can_spill() {
            &mut self.spillable
        } else {
            &mut self.unspillable
        }
    }
}

impl SharedPool {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            state: std::sync::Mutex::new(PoolState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // The state is three counters updated in one statement each: a panic elsewhere
        // cannot leave them half-changed.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl MemoryPool for SharedPool {
    fn name(&self) -> &str {
        "shared"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            self.state().spillers += 1;
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            let mut state = self.state();
            state.spillers = state.spillers.saturating_sub(1);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        *self.state().held(reservation) += additional;
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let mut state = self.state();
        let held = state.held(reservation);
        *held = held.saturating_sub(shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DataFusionResult<()> {
        let mut state = self.state();
        let available = if reservation.consumer().can_spill() {
            // Each spiller's even share of what the others leave.
            let share = self.limit.saturating_sub(state.unspillable) / state.spillers.max(1);
            share.saturating_sub(reservation.size())
        } else {
            // Free memory, and memory the spillers hold up to the overdraft; never more
            // than the limit for these operators together.
            let overdraft = (self.limit / OVERDRAFT).min(state.spillable);
            (self.limit + overdraft)
                .saturating_sub(state.unspillable + state.spillable)
                .min(self.limit.saturating_sub(state.unspillable))
        };
        if additional > available {
            return Err(resources_datafusion_err!(
                "Failed to allocate additional {} for {} with {} already allocated for this reservation - {} remain available for the total memory pool: {}",
                human_readable_size(additional),
                reservation.consumer().name(),
                human_readable_size(reservation.size()),
                human_readable_size(available),
                self
            ));
        }
        *state.held(reservation) += additional;
        Ok(())
    }

    fn reserved(&self) -> usize {
        let state = self.state();
        state.spillable + state.unspillable
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

impl std::fmt::Display for SharedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shared(limit: {})", human_readable_size(self.limit))
    }
}

/// The spill files of an engine: made by a DataFusion disk manager over the spill directory
/// (which keeps their total under [`QueryConfig::max_spill_bytes`]), and counted.
pub(crate) struct SpillFiles {
    disk: Arc<DiskManager>,
    made: AtomicU64,
}

impl SpillFiles {
    /// How many spill files queries have made since the engine started.
    pub(crate) fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// The spill files that exist now: their bytes and how many.
    pub(crate) fn progress(&self) -> SpillingProgress {
        self.disk.spilling_progress()
    }
}

impl TempFileFactory for SpillFiles {
    fn create_temp_file(
        &self,
        description: &str,
    ) -> datafusion::common::Result<Arc<dyn SpillFile>> {
        self.made.fetch_add(1, Ordering::Relaxed);
        self.disk.create_tmp_file(description)
    }
}

/// Creates `dir` and removes the spill directories left in it by earlier processes (only
/// those: it may be a directory the operator shares with other things).
fn prepare_spill_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(SPILL_PREFIX));
        if stale && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// The memory settings of a query's session.
pub(crate) fn configure_session(session: &mut SessionConfig, config: &QueryConfig) {
    let execution = &mut session.options_mut().execution;
    if let Some(limit) = config.memory_limit {
        let partitions = config.target_partitions.max(1);
        let share = limit / 16 / partitions;
        execution.sort_spill_reservation_bytes = execution
            .sort_spill_reservation_bytes
            .min(share.max(64 * 1024));
    }
}

/// Wraps the functions that build big values and adds the rule that refuses them at planning:
/// see [`crate::bounded`].
pub(crate) fn bound_expressions(
    mut builder: SessionStateBuilder,
    config: &QueryConfig,
) -> SessionStateBuilder {
    if let Some(functions) = builder.scalar_functions() {
        bound_functions(functions, config.max_expression_bytes);
    }
    builder.with_optimizer_rule(Arc::new(BoundedExpressions))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn consumer(pool: &Arc<dyn MemoryPool>, name: &str, can_spill: bool) -> MemoryReservation {
        MemoryConsumer::new(name)
            .with_can_spill(can_spill)
            .register(pool)
    }

    /// A sort that grew alone holds the whole limit; a merge of another query still gets
    /// its memory (DataFusion's fair pool refused it), and the sort's share shrinks so that
    /// it spills at its next growth.
    #[test]
    fn a_merge_gets_memory_a_lone_sort_took() {
        let pool: Arc<dyn MemoryPool> = Arc::new(SharedPool::new(64 * MIB));
        let early = consumer(&pool, "ExternalSorter[0]", true);
        early
            .try_grow(64 * MIB)
            .unwrap_or_else(|error| panic!("{error}"));
        let late = consumer(&pool, "ExternalSorter[0]", true);
        let merge = consumer(&pool, "ExternalSorterMerge[0]", false);
        merge
            .try_grow(4 * MIB)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(pool.reserved(), 68 * MIB);
        // The overdraft is a quarter of the limit.
        assert!(merge.try_grow(13 * MIB).is_err());
        merge
            .try_grow(12 * MIB)
            .unwrap_or_else(|error| panic!("{error}"));
        // Both sorts now share what the merge leaves: (64 - 16) / 2 each.
        assert!(early.try_grow(1).is_err());
        late.try_grow(24 * MIB)
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(late.try_grow(1).is_err());
        // The early sort spills: what it gives back is free again.
        early.free();
        merge.free();
        late.free();
        assert_eq!(pool.reserved(), 0);
    }

    /// Operators that cannot spill never hold more than the limit together, overdraft or not.
    #[test]
    fn unspillable_operators_stay_within_the_limit() {
        let pool: Arc<dyn MemoryPool> = Arc::new(SharedPool::new(64 * MIB));
        let join = consumer(&pool, "HashJoinInput", false);
        join.try_grow(60 * MIB)
            .unwrap_or_else(|error| panic!("{error}"));
        let sort = consumer(&pool, "ExternalSorter[0]", true);
        sort.try_grow(4 * MIB)
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(sort.try_grow(1).is_err());
        assert!(join.try_grow(4 * MIB + 1).is_err());
        join.try_grow(4 * MIB)
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(join.try_grow(1).is_err());
        let message = join.try_grow(MIB).unwrap_err().to_string();
        assert!(message.contains("HashJoinInput"), "{message}");
    }
}
