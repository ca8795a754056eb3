//! A hash join's dynamic filter in its probe side's scan, evaluated only while it filters.
//!
//! When a hash join has built its table, DataFusion pushes a filter made from it into the
//! Parquet scan of the other side: the build side's key bounds and a membership test (an
//! `IN` list, or a lookup in the join's hash table). The scan evaluates it on every row as a
//! row filter, before decoding the other columns. That pays when most probe rows have no
//! match; when nearly all of them have one (logs joined with their transactions), it filters
//! nothing and costs a second hash and probe per row: a quarter of such a join's CPU.
//!
//! [`SkipIdleJoinFilters`] wraps each such filter in the scan's predicate in a
//! [`SelectiveFilter`], which samples it: after a window of rows in which the filter let
//! almost every row through, it stops evaluating it (every row passes, as the join checks
//! the keys itself anyway) for a stretch of rows, then samples again. The filter only ever
//! saves work, so answers do not depend on when it runs. Row-group and page pruning by the
//! filter's bounds is kept: it sees through the wrapper ([`PhysicalExpr::snapshot`]).

use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;

/// Rows over which a filter's selectivity is measured before deciding.
const SAMPLE_ROWS: u64 = 64 * 1024;

/// Rows let through unevaluated after a sample in which the filter was idle; then it is
/// sampled again (so a filter that starts filtering later is used again, at most this many
/// rows late).
const SKIP_ROWS: u64 = 16 * SAMPLE_ROWS;

/// A sample is idle when at least this share of its rows passed (in tenths).
const IDLE_TENTHS: u64 = 9;

/// The physical optimizer rule that wraps the dynamic filters hash joins push into Parquet
/// scans in [`SelectiveFilter`]s. It runs after DataFusion's rules (the filters are pushed
/// by the last of them).
#[derive(Debug, Default)]
pub(crate) struct SkipIdleJoinFilters {
    /// The sampler of the filters of the plan's root join, if given: otherwise each filter
    /// has its own.
    sampler: Option<Arc<Mutex<Sampler>>>,
}

impl SkipIdleJoinFilters {
    /// The rule whose wrapping of the filters of the plan's root (a join) shares `sampler`:
    /// the joins of one join's chunks ([`crate::chunkwise`]), whose filters filter alike, skip
    /// and sample as one. Other joins' filters have their own.
    pub(crate) fn sharing(sampler: Arc<Mutex<Sampler>>) -> Self {
        Self {
            sampler: Some(sampler),
        }
    }
}

impl PhysicalOptimizerRule for SkipIdleJoinFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut joins = HashSet::new();
        plan.apply(|node| {
            if node.downcast_ref::<HashJoinExec>().is_some() {
                joins.extend(
                    node.dynamic_expressions_produced()
                        .iter()
                        .filter_map(|filter| filter.expression_id()),
                );
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if joins.is_empty() {
            return Ok(plan);
        }
        let root: HashSet<u64> = plan
            .dynamic_expressions_produced()
            .iter()
            .filter_map(|filter| filter.expression_id())
            .collect();
        let shared = self.sampler.as_ref().map(|sampler| (sampler, &root));
        plan.transform_up(|node| wrap_scan_filters(node, &joins, shared))
            .map(|rewritten| rewritten.data)
    }

    fn name(&self) -> &str {
        "chunk_query_skip_idle_join_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` with the join filters (by expression id) in its Parquet predicate wrapped, if it is
/// a Parquet scan that has any.
fn wrap_scan_filters(
    node: Arc<dyn ExecutionPlan>,
    joins: &HashSet<u64>,
    shared: Option<(&Arc<Mutex<Sampler>>, &HashSet<u64>)>,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some(scan) = node.downcast_ref::<DataSourceExec>() else {
        return Ok(Transformed::no(node));
    };
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
        return Ok(Transformed::no(node));
    };
    let Some(parquet) = config.file_source().downcast_ref::<ParquetSource>() else {
        return Ok(Transformed::no(node));
    };
    let Some(predicate) = parquet.filter() else {
        return Ok(Transformed::no(node));
    };
    let predicate = predicate.transform_down(|expr| {
        if expr.downcast_ref::<SelectiveFilter>().is_some() {
            // Wrapped already (the rule ran on this plan before).
            return Ok(Transformed::new(expr, false, TreeNodeRecursion::Jump));
        }
        let id = expr
            .downcast_ref::<DynamicFilterPhysicalExpr>()
            .and_then(|_| expr.expression_id())
            .filter(|id| joins.contains(id));
        if let Some(id) = id {
            let sampler = match shared {
                Some((sampler, root)) if root.contains(&id) => Arc::clone(sampler),
                _ => Arc::default(),
            };
            let wrapped: Arc<dyn PhysicalExpr> = Arc::new(SelectiveFilter {
                filter: expr,
                sampler,
            });
            // Not into the wrapper's child: it is the filter just wrapped.
            Ok(Transformed::new(wrapped, true, TreeNodeRecursion::Jump))
        } else {
            Ok(Transformed::no(expr))
        }
    })?;
    if !predicate.transformed {
        return Ok(Transformed::no(node));
    }
    let mut config = config.clone();
    config.file_source = Arc::new(parquet.with_predicate(predicate.data));
    let scan = scan.clone().with_data_source(Arc::new(config));
    Ok(Transformed::yes(Arc::new(scan)))
}

/// A filter (a conjunct of a scan's row filter) evaluated only while it filters: see the
/// [module](self). All the scan's partitions and files share one [`Sampler`].
#[derive(Debug)]
pub(crate) struct SelectiveFilter {
    filter: Arc<dyn PhysicalExpr>,
    sampler: Arc<Mutex<Sampler>>,
}

impl SelectiveFilter {
    fn sampler(&self) -> std::sync::MutexGuard<'_, Sampler> {
        // The sampler's counters are consistent after any panic (plain stores): keep going.
        self.sampler.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a [`SelectiveFilter`] is in its cycle of sampling and skipping, and how many rows it
/// has let through unevaluated.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sampler {
    /// Rows still to let through without evaluating the filter.
    skip: u64,
    /// Rows evaluated in the current sample, and how many of them passed.
    seen: u64,
    passed: u64,
    /// Rows offered so far, and how many of them went through unevaluated.
    rows: u64,
    skipped: u64,
}

impl Sampler {
    /// The rows let through unevaluated so far, and the rows offered.
    pub(crate) fn skipped_of(&self) -> (u64, u64) {
        (self.skipped, self.rows)
    }

    /// Whether the next batch of `rows` rows is to be evaluated; if not, it is counted as
    /// skipped.
    pub(crate) fn evaluate(&mut self, rows: u64) -> bool {
        self.rows += rows;
        if self.skip == 0 {
            return true;
        }
        self.skip = self.skip.saturating_sub(rows);
        self.skipped += rows;
        false
    }

    /// Records that `passed` of `rows` evaluated rows passed; at the end of a sample in which
    /// the filter was idle, starts skipping.
    pub(crate) fn record(&mut self, rows: u64, passed: u64) {
        self.seen += rows;
        self.passed += passed;
        if self.seen >= SAMPLE_ROWS {
            if self.passed * 10 >= self.seen * IDLE_TENTHS {
                self.skip = SKIP_ROWS;
            }
            self.seen = 0;
            self.passed = 0;
        }
    }
}

impl fmt::Display for SelectiveFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // After a run (EXPLAIN ANALYZE), how much of the filter's work was skipped.
        let (skipped, rows) = self.sampler().skipped_of();
        write!(
            f,
            "selective({}, skipped {skipped} of {rows} rows)",
            self.filter
        )
    }
}

impl PartialEq for SelectiveFilter {
    fn eq(&self, other: &Self) -> bool {
        self.filter.as_ref() == other.filter.as_ref()
    }
}

impl Eq for SelectiveFilter {}

impl Hash for SelectiveFilter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.filter.hash(state);
    }
}

impl PhysicalExpr for SelectiveFilter {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.filter.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.filter.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let rows = batch.num_rows() as u64;
        if !self.sampler().evaluate(rows) {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))));
        }
        let value = self.filter.evaluate(batch)?;
        // A constant (the placeholder `true` before the join has built its table, or `false`
        // for an empty one) says nothing about selectivity.
        if let ColumnarValue::Array(array) = &value
            && let Some(matches) = array.as_any().downcast_ref::<arrow::array::BooleanArray>()
        {
            self.sampler().record(rows, matches.true_count() as u64);
        }
        Ok(value)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.filter]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [filter] = <[_; 1]>::try_from(children).map_err(|children| {
            datafusion::error::DataFusionError::Internal(format!(
                "a selective filter has one child, not {}",
                children.len()
            ))
        })?;
        Ok(Arc::new(Self {
            filter,
            sampler: Arc::clone(&self.sampler),
        }))
    }

    /// The filter itself, for pruning by statistics (the snapshot of the wrapped filter is
    /// taken first: the child).
    fn snapshot(&self) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        Ok(Some(Arc::clone(&self.filter)))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.filter.fmt_sql(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_filter_is_skipped_then_sampled_again() {
        let mut sampler = Sampler::default();
        let batch = 8192;
        // A sample in which every row passes, then the skipped stretch.
        for _ in 0..SAMPLE_ROWS / batch {
            assert!(sampler.evaluate(batch));
            sampler.record(batch, batch);
        }
        let mut skipped = 0;
        while !sampler.evaluate(batch) {
            skipped += batch;
        }
        assert_eq!(skipped, SKIP_ROWS);
        // Sampled again: a filter that now filters is kept.
        for _ in 0..SAMPLE_ROWS / batch {
            assert!(sampler.evaluate(batch));
            sampler.record(batch, batch / 2);
        }
        for _ in 0..100 {
            assert!(sampler.evaluate(batch));
        }
    }

    #[test]
    fn a_filter_that_filters_a_tenth_is_kept() {
        let mut sampler = Sampler::default();
        let batch = 1000;
        for _ in 0..1000 {
            assert!(sampler.evaluate(batch));
            sampler.record(batch, batch * 9 / 10 - 1);
        }
    }
}
