//! Optimized logical plans of recent queries, reused when a query comes again over the same
//! chunks.
//!
//! Before a query runs, its tables are registered (a Parquet listing per table, the local
//! files checked for rows outside the range: [`crate::within`]) and its SQL is planned and
//! optimized: for a small query (an aggregate over one column of 20 chunks) that was a third
//! of its CPU, about 1.2 ms, each time. A worker answers the same queries over and over (a
//! dashboard, a poller), so the optimized logical plan is kept, with the files its tables
//! read, keyed by everything it depends on: the SQL text, the dataset, the block range, the
//! partitions, and each chunk of the cover with how it is read. Only queries whose chunks are
//! all on this worker's disk are kept: their files are immutable (a chunk's directory is named
//! by its id) and pinned for the query, as on the first run. Queries over more than
//! [`PLAN_CHUNKS_KEPT`] chunks are not kept.
//!
//! A logical plan holds no state of a run (the physical plan, made anew from it each time,
//! does): reusing one gives the same physical plan as planning again would.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use chunk_manager::{ChunkId, DatasetId};
use datafusion::logical_expr::LogicalPlan;

use crate::chunkwise::FileChunks;

/// How many plans are kept; the least recently used goes first.
const PLANS_KEPT: usize = 64;

/// The most chunks a kept plan may read. A plan holds its tables' file listings and the
/// statistics DataFusion gathered of every file (a few kB each), and planning is a small part
/// of a query over many chunks: a plan over more is not kept, so that the kept plans stay
/// within a few tens of MB.
pub(crate) const PLAN_CHUNKS_KEPT: usize = 64;

/// What a query's plan depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PlanKey {
    pub(crate) sql: String,
    pub(crate) dataset: DatasetId,
    pub(crate) blocks: Range<u64>,
    pub(crate) partitions: usize,
    /// Each part of the cover: its chunk, the blocks read from it, and whether the query
    /// reads any of its files (on this worker's disk).
    pub(crate) parts: Vec<(ChunkId, Range<u64>, bool)>,
}

/// A kept plan: the optimized logical plan, and the chunk of every file its tables read (for
/// [`crate::chunkwise::ChunkFiles`]).
#[derive(Debug, Clone)]
pub(crate) struct CachedPlan {
    pub(crate) plan: LogicalPlan,
    pub(crate) files: Arc<FileChunks>,
}

/// The plans kept, with when each was last used.
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    plans: Mutex<Plans>,
}

#[derive(Debug, Default)]
struct Plans {
    by_key: HashMap<PlanKey, (CachedPlan, u64)>,
    clock: u64,
}

impl PlanCache {
    /// The plan kept for `key`, if any.
    pub(crate) fn get(&self, key: &PlanKey) -> Option<CachedPlan> {
        let mut plans = self.lock();
        plans.clock += 1;
        let now = plans.clock;
        let (plan, used) = plans.by_key.get_mut(key)?;
        *used = now;
        Some(plan.clone())
    }

    /// Keeps `plan` for `key`, dropping the least recently used plan if too many are kept.
    pub(crate) fn insert(&self, key: PlanKey, plan: CachedPlan) {
        let mut plans = self.lock();
        plans.clock += 1;
        let now = plans.clock;
        if plans.by_key.len() >= PLANS_KEPT && !plans.by_key.contains_key(&key) {
            let oldest = plans
                .by_key
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                plans.by_key.remove(&oldest);
            }
        }
        plans.by_key.insert(key, (plan, now));
    }

    /// Forgets every plan.
    pub(crate) fn clear(&self) {
        self.lock().by_key.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Plans> {
        // Plain inserts and removals: the map is whole after any panic.
        self.plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::LogicalPlanBuilder;

    fn key(sql: &str) -> PlanKey {
        PlanKey {
            sql: sql.to_string(),
            dataset: [1; 32],
            blocks: 0..10,
            partitions: 2,
            parts: vec![([2; 32], 0..10, true)],
        }
    }

    fn plan() -> CachedPlan {
        CachedPlan {
            plan: LogicalPlanBuilder::empty(false).build().unwrap(),
            files: Arc::default(),
        }
    }

    #[test]
    fn the_least_recently_used_plan_goes_first() {
        let cache = PlanCache::default();
        for n in 0..PLANS_KEPT {
            cache.insert(key(&n.to_string()), plan());
        }
        // The first one used again: the second is now the oldest.
        assert!(cache.get(&key("0")).is_some());
        cache.insert(key("new"), plan());
        assert!(cache.get(&key("0")).is_some());
        assert!(cache.get(&key("1")).is_none());
        assert!(cache.get(&key("new")).is_some());
        // Any other difference is another key.
        let mut other = key("0");
        other.parts[0].2 = false;
        assert!(cache.get(&other).is_none());
        cache.clear();
        assert!(cache.get(&key("0")).is_none());
    }
}
