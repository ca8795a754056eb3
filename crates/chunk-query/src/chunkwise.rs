//! Joins on the block column, computed chunk by chunk.
//!
//! A chunk holds every row of its blocks, in every table. When a hash join's keys pair the
//! block column of one side with the block column of the other, a row can only match rows of
//! its own chunk: the join is the union of one join per chunk. DataFusion does not know
//! that; it builds one hash table of the whole build side (or hashes and repartitions both
//! inputs). The first is built by one thread while the others wait, and is too big for the
//! CPU's caches, so every probe is a trip to memory: on two CPUs, the benchmark's join of
//! transactions and logs (1.85 million build rows) spent a third of its wall time building
//! on one core, and a quarter of its CPU in the probe's lookups.
//!
//! [`ChunkwiseJoins`] replaces such a join by a [`ChunkwiseJoinExec`], which joins the chunks
//! of the query one after another in each of its partitions: the build side's rows of one
//! chunk, then the probe side's rows of the same chunk against them. Each table is a chunk's
//! worth (a few MB: it stays in the caches), the partitions build in parallel, and a join
//! holds at most one chunk's table per partition in memory instead of the whole build side.
//! Small chunks are joined a few at a time (a *unit*: chunks in a row, up to [`UNIT_BYTES`] of
//! files), so that a join's fixed cost is not paid for every chunk of a few kB.
//!
//! Which chunk a file belongs to is told by the engine ([`ChunkFiles`]), not guessed from
//! paths. The rule applies only where the answer is the same by construction: both inputs
//! are scans of chunk files under operators that keep or drop rows one at a time
//! (projections, filters, unions, exchanges) or chunkwise joins (a join of three tables on
//! the block column runs chunk by chunk as a whole: each chunk's join joins that chunk's join
//! of the other two), every file is known, one pair of keys is the block column on both
//! sides, NULL keys never match, and the join has no limit and does not depend on the whole
//! build side (a null-aware anti join does). Otherwise the plan is left as DataFusion made
//! it.
//!
//! Each chunk's join is DataFusion's own `HashJoinExec` (one table, `CollectLeft`), with its
//! dynamic filter pushed into that chunk's probe scan (the bounds and keys of that chunk's
//! table: tighter than the whole table's) and sampled as [`crate::probe_filter`] does, over
//! one shared sampler for all the chunks of a join.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{JoinSide, JoinType, NullEquality, Result, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::{ColumnIndex, build_join_schema};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use crate::probe_filter::{Sampler, SkipIdleJoinFilters};

/// The chunk of each file of a query, as scans name files: object store URL -> path in that
/// store -> chunk (the index of its part in the query's cover).
pub(crate) type FileChunks = HashMap<String, HashMap<String, usize>>;

/// Which chunk of the query each of its files belongs to, told by the engine once the
/// query's tables are registered (or its plan is reused, with the files it reads).
#[derive(Debug, Default)]
pub(crate) struct ChunkFiles {
    files: OnceLock<Arc<FileChunks>>,
}

impl ChunkFiles {
    /// The [`FileChunks`] of a query's files, `(url, chunk)`.
    pub(crate) fn index<'a>(
        files: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> Result<Arc<FileChunks>> {
        let mut known = FileChunks::new();
        for (url, chunk) in files {
            let url = ListingTableUrl::parse(url)?;
            known
                .entry(url.object_store().as_str().to_string())
                .or_default()
                .insert(url.prefix().as_ref().to_string(), chunk);
        }
        Ok(Arc::new(known))
    }

    /// Records the chunks of the query's files; only the first call counts.
    pub(crate) fn set(&self, files: Arc<FileChunks>) {
        // A second call would describe the same tables: the first stands.
        let _first_stands = self.files.set(files);
    }

    /// The chunk of `file`, read through the store `store`.
    fn chunk(&self, store: &str, file: &PartitionedFile) -> Option<usize> {
        let path: &str = file.object_meta.location.as_ref();
        self.files.get()?.get(store)?.get(path).copied()
    }
}

/// The physical optimizer rule that turns hash joins on the block column into
/// [`ChunkwiseJoinExec`]s (see the [module](self)). It runs before DataFusion's last filter
/// pushdown, which would otherwise push a filter made from the whole build side's table into
/// the probe side.
#[derive(Debug)]
pub(crate) struct ChunkwiseJoins {
    files: Arc<ChunkFiles>,
    block_column: String,
}

impl ChunkwiseJoins {
    /// The rule for the files of one query, joining on `block_column`.
    pub(crate) fn new(files: Arc<ChunkFiles>, block_column: &str) -> Self {
        Self {
            files,
            block_column: block_column.to_string(),
        }
    }

    /// `plan` with its eligible joins replaced; its parent needs `required` of it.
    fn rewrite(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        required: Distribution,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        let plan = if children.is_empty() {
            plan
        } else {
            let requirements = plan.input_distribution_requirements();
            let mut changed = false;
            let mut rewritten = Vec::with_capacity(children.len());
            for (index, child) in children.into_iter().enumerate() {
                let required = requirements
                    .child_distribution(index)
                    .cloned()
                    .unwrap_or(Distribution::UnspecifiedDistribution);
                let new = self.rewrite(Arc::clone(&child), required, config)?;
                changed |= !Arc::ptr_eq(&new, &child);
                rewritten.push(new);
            }
            if changed {
                plan.replace_children(rewritten, RECOMPUTE)?
            } else {
                plan
            }
        };
        let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
            return Ok(plan);
        };
        let partitioning = join.properties().output_partitioning();
        // A parent that needs the join's rows partitioned by keys gets them repartitioned
        // alike, which only a hash partitioning (or none) can be.
        let keyed = !matches!(
            required,
            Distribution::UnspecifiedDistribution | Distribution::SinglePartition
        );
        if keyed && !matches!(partitioning, Partitioning::Hash(..)) {
            return Ok(plan);
        }
        let partitions = config.execution.target_partitions.max(1);
        let Some(chunkwise) =
            ChunkwiseJoinExec::try_new(join, &self.files, &self.block_column, partitions)?
        else {
            return Ok(plan);
        };
        let chunkwise: Arc<dyn ExecutionPlan> = Arc::new(chunkwise);
        // The chunkwise join's partitions are neither one nor keyed: made so if needed.
        Ok(match required {
            Distribution::UnspecifiedDistribution => chunkwise,
            Distribution::SinglePartition => one_partition(chunkwise),
            _ => Arc::new(RepartitionExec::try_new(chunkwise, partitioning.clone())?),
        })
    }
}

/// Plan copies whose children may differ in their properties.
const RECOMPUTE: ReplaceChildrenOptions =
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);

impl PhysicalOptimizerRule for ChunkwiseJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.files.files.get().is_none() {
            return Ok(plan);
        }
        self.rewrite(plan, Distribution::UnspecifiedDistribution, config)
    }

    fn name(&self) -> &str {
        "chunk_query_chunkwise_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A hash join computed chunk by chunk: see the [module](self). Its children are the join's
/// inputs over all chunks, as planned; each partition runs, for each of its units in turn (a
/// chunk, or a few small ones in a row), the join of those inputs restricted to the unit's
/// files.
#[derive(Debug)]
pub(crate) struct ChunkwiseJoinExec {
    joins: Arc<ChunkJoins>,
    /// The units each partition joins, in order: each unit a few chunks in a row, joined as
    /// one ([`units`]).
    units: Vec<Vec<Unit>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What a [`ChunkwiseJoinExec`]'s partitions share to make each chunk's join.
#[derive(Debug)]
struct ChunkJoins {
    /// The join as planned (its inputs span every chunk); each chunk's join is a copy.
    join: Arc<HashJoinExec>,
    files: Arc<ChunkFiles>,
    /// The files of the scans of the join's inputs, by chunk.
    build_scans: ScanFiles,
    probe_scans: ScanFiles,
    /// The bytes each chunk's files give the join's inputs (joins below it included).
    sizes: BTreeMap<usize, u64>,
    /// The dynamic filters of all the chunks' joins are sampled as one.
    sampler: Arc<Mutex<Sampler>>,
}

impl ChunkJoins {
    /// What the partitions of a chunkwise `join` share, if both its inputs are made only of
    /// scans of known chunk files under operators [`restrict`] copies.
    fn new(join: Arc<HashJoinExec>, files: Arc<ChunkFiles>) -> Option<Self> {
        let mut sizes = BTreeMap::new();
        let (mut build_scans, mut probe_scans) = (Vec::new(), Vec::new());
        let known = read_inputs(join.left(), &files, &mut build_scans, &mut sizes)
            && read_inputs(join.right(), &files, &mut probe_scans, &mut sizes);
        known.then(|| Self {
            join,
            files,
            build_scans,
            probe_scans,
            sizes,
            sampler: Arc::default(),
        })
    }

    /// The join of one unit's rows (one partition; its dynamic filter not pushed yet):
    /// `None` if neither input has any.
    fn plan(&self, unit: &[usize]) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let build = restrict(self.join.left(), unit, &self.build_scans, &mut 0)?;
        let probe = restrict(self.join.right(), unit, &self.probe_scans, &mut 0)?;
        let (build, probe) = match (build, probe) {
            (None, None) => return Ok(None),
            (build, probe) => (
                build.unwrap_or_else(|| Arc::new(EmptyExec::new(self.join.left().schema()))),
                probe.unwrap_or_else(|| Arc::new(EmptyExec::new(self.join.right().schema()))),
            ),
        };
        // One partition each: the table is built once, and a join in `CollectLeft` mode
        // finishes its dynamic filter only when every probe partition has started.
        let (build, probe) = (one_partition(build), one_partition(probe));
        self.join
            .builder()
            .with_new_children(vec![build, probe])?
            .reset_state()
            .build_exec()
            .map(Some)
    }

    /// Runs the join of one unit's rows; `None` if neither input has any.
    fn run(
        &self,
        unit: &[usize],
        context: Arc<TaskContext>,
    ) -> Result<Option<SendableRecordBatchStream>> {
        let Some(join) = self.plan(unit)? else {
            return Ok(None);
        };
        // This chunk's own dynamic filters (its join's, and those of the chunkwise joins
        // below it, now plain joins of the chunk), into this chunk's scans; this join's sampled
        // with the other chunks'.
        let config = context.session_config().options();
        let join = FilterPushdown::new_post_optimization().optimize(join, config)?;
        let join =
            SkipIdleJoinFilters::sharing(Arc::clone(&self.sampler)).optimize(join, config)?;
        // A join gives its thread back between output batches (see `YieldInJoins`).
        let join = CooperativeExec::new(join);
        join.execute(0, context).map(Some)
    }
}

impl ChunkwiseJoinExec {
    /// `join` computed chunk by chunk over up to `partitions` partitions, if it can be.
    fn try_new(
        join: &HashJoinExec,
        files: &Arc<ChunkFiles>,
        block_column: &str,
        partitions: usize,
    ) -> Result<Option<Self>> {
        let eligible = per_row(*join.join_type())
            && join.null_equality() == NullEquality::NullEqualsNothing
            && !join.null_aware
            && join.fetch().is_none()
            && join.properties().output_ordering().is_none()
            && join.on().iter().any(|(left, right)| {
                block_key(join.left(), left, block_column)
                    && block_key(join.right(), right, block_column)
            });
        if !eligible {
            return Ok(None);
        }
        let join = join
            .builder()
            .with_partition_mode(PartitionMode::CollectLeft)
            .reset_state()
            .build()?;
        let Some(joins) = ChunkJoins::new(Arc::new(join), Arc::clone(files)) else {
            return Ok(None);
        };
        // With fewer chunks than partitions, DataFusion's join uses more of the CPUs.
        if joins.sizes.len() < partitions.max(2) {
            return Ok(None);
        }
        Ok(Some(Self::with_units(joins, partitions)))
    }

    /// The chunkwise join of `joins`, its units spread over up to `partitions` partitions.
    fn with_units(joins: ChunkJoins, partitions: usize) -> Self {
        let units = spread(units(&joins.sizes, partitions), partitions);
        let mut equivalence: EquivalenceProperties = joins.join.properties().eq_properties.clone();
        // Each partition's rows come unit after unit, in no declared order.
        equivalence.clear_orderings();
        let properties = PlanProperties::new(
            equivalence,
            Partitioning::UnknownPartitioning(units.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            joins: Arc::new(joins),
            units,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for ChunkwiseJoinExec {
    fn fmt_as(&self, format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units: usize = self.units.iter().map(Vec::len).sum();
        let chunks: usize = self.units.iter().flatten().map(Vec::len).sum();
        let (skipped, rows) = self
            .joins
            .sampler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .skipped_of();
        write!(
            f,
            "ChunkwiseJoinExec: chunks={chunks}, units={units}, partitions={}, \
             probe filters=selective(per unit, skipped {skipped} of {rows} rows), each: ",
            self.units.len()
        )?;
        self.joins.join.fmt_as(format, f)
    }
}

impl ExecutionPlan for ChunkwiseJoinExec {
    fn name(&self) -> &str {
        "ChunkwiseJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.joins.join.left(), self.joins.join.right()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.joins.join.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let join = self
            .joins
            .join
            .builder()
            .with_new_children(children)?
            .build()?;
        let Some(joins) = ChunkJoins::new(Arc::new(join), Arc::clone(&self.joins.files)) else {
            return internal_err!("ChunkwiseJoinExec's new inputs are not scans of chunk files");
        };
        Ok(Arc::new(Self::with_units(joins, self.units.len())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(units) = self.units.get(partition) else {
            return internal_err!(
                "ChunkwiseJoinExec has {} partitions, not {}",
                self.units.len(),
                partition + 1
            );
        };
        let schema = self.schema();
        let joined = MetricBuilder::new(&self.metrics).counter("chunks_joined", partition);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let output = Arc::clone(&schema);
        let joins = Arc::clone(&self.joins);
        // The units one after another: each one's join is made and run when the previous
        // one is done (its table dropped).
        let stream = futures::stream::iter(units.clone())
            .map(move |unit| {
                let joined = joined.clone();
                let (joins, context) = (Arc::clone(&joins), Arc::clone(&context));
                futures::stream::once(async move {
                    let stream = joins.run(&unit, context)?;
                    if stream.is_some() {
                        joined.add(unit.len());
                    }
                    Ok::<_, DataFusionError>(futures::stream::iter(stream).flatten())
                })
                .try_flatten()
            })
            .flatten()
            .map(move |batch| {
                let batch = batch?;
                output_rows.add(batch.num_rows());
                // The chunk's inputs may differ from the whole's in nullability only.
                if batch.schema() == output {
                    Ok(batch)
                } else {
                    batch
                        .with_schema(Arc::clone(&output))
                        .map_err(DataFusionError::from)
                }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// `plan` merged into one partition, if it has more.
fn one_partition(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(plan))
    } else {
        plan
    }
}

/// A few chunks in a row (by their index in the query's cover: in block order), joined as one.
type Unit = Vec<usize>;

/// The input bytes (Parquet files, both sides) past which a unit takes no more chunks. A
/// chunk of the benchmark (36 MB) is a unit of its own; tiny chunks are joined together, so
/// that each join's fixed cost (its plan, its table, its files opened) is not paid per chunk
/// of a few kB (2,000 chunks of 24 kB: 1.13 s as chunks, against 0.30 s for one table).
const UNIT_BYTES: u64 = 16 << 20;

/// The chunks, in order, cut into units of about [`UNIT_BYTES`] (less when the whole is
/// small, so that there are units for every partition), each with its bytes.
fn units(sizes: &BTreeMap<usize, u64>, partitions: usize) -> Vec<(Unit, u64)> {
    let total: u64 = sizes.values().sum();
    let target = UNIT_BYTES.min(total / partitions.max(1) as u64).max(1);
    let mut units: Vec<(Unit, u64)> = Vec::new();
    let mut unit = (Vec::new(), 0);
    for (&chunk, &bytes) in sizes {
        unit.0.push(chunk);
        unit.1 += bytes;
        if unit.1 >= target {
            units.push(std::mem::take(&mut unit));
        }
    }
    if !unit.0.is_empty() {
        units.push(unit);
    }
    units
}

/// The units spread over at most `partitions` partitions with about equal bytes each (the
/// largest first, each to the least loaded partition); each partition's units in block
/// order.
fn spread(units: Vec<(Unit, u64)>, partitions: usize) -> Vec<Vec<Unit>> {
    let partitions = partitions.clamp(1, units.len().max(1));
    let mut by_size = units;
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut loads: Vec<(u64, Vec<Unit>)> = vec![(0, Vec::new()); partitions];
    for (unit, bytes) in by_size {
        if let Some(least) = loads.iter_mut().min_by_key(|(load, _)| *load) {
            least.0 += bytes;
            least.1.push(unit);
        }
    }
    loads
        .into_iter()
        .map(|(_, mut units)| {
            units.sort_unstable();
            units
        })
        .filter(|units| !units.is_empty())
        .collect()
}

/// Whether `key`, an expression over `plan`'s output, is the block column of the chunk
/// files `plan` scans.
fn block_key(plan: &Arc<dyn ExecutionPlan>, key: &Arc<dyn PhysicalExpr>, block: &str) -> bool {
    key.downcast_ref::<Column>()
        .is_some_and(|column| is_block_column(plan, column.index(), block))
}

/// Whether output column `index` of `plan` is the block column of the files it scans,
/// through the operators [`restrict`] copies.
fn is_block_column(plan: &Arc<dyn ExecutionPlan>, index: usize, block: &str) -> bool {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return projection.expr().get(index).is_some_and(|projected| {
            projected
                .expr
                .downcast_ref::<Column>()
                .is_some_and(|column| is_block_column(projection.input(), column.index(), block))
        });
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let index = match filter.projection() {
            Some(projection) => match projection.get(index) {
                Some(&index) => index,
                None => return false,
            },
            None => index,
        };
        return is_block_column(filter.input(), index, block);
    }
    if let Some(chunkwise) = plan.downcast_ref::<ChunkwiseJoinExec>() {
        // A column of one side of a join of chunks (a join's rows are of one chunk).
        let join = &chunkwise.joins.join;
        let index = match &join.projection {
            Some(projection) => match projection.get(index) {
                Some(&index) => index,
                None => return false,
            },
            None => index,
        };
        let (_, columns) = build_join_schema(
            &join.left().schema(),
            &join.right().schema(),
            join.join_type(),
        );
        return match columns.get(index) {
            Some(ColumnIndex {
                index,
                side: JoinSide::Left,
            }) => is_block_column(join.left(), *index, block),
            Some(ColumnIndex {
                index,
                side: JoinSide::Right,
            }) => is_block_column(join.right(), *index, block),
            _ => false,
        };
    }
    if plan.downcast_ref::<DataSourceExec>().is_some() {
        // A scan's columns are the files' (no partition columns: see `read_inputs`).
        return plan
            .schema()
            .fields()
            .get(index)
            .is_some_and(|field| field.name() == block);
    }
    if passes_rows(plan.as_ref()) || plan.downcast_ref::<UnionExec>().is_some() {
        let children = plan.children();
        return !children.is_empty()
            && children
                .iter()
                .all(|child| is_block_column(child, index, block));
    }
    false
}

/// Whether `plan` only moves rows between partitions or batches (no limit): a chunk's copy
/// of the plan leaves it out.
fn passes_rows(plan: &dyn ExecutionPlan) -> bool {
    let exchange = plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some();
    exchange && plan.fetch().is_none()
}

/// The files of each scan of a join's input, by chunk, in the order [`restrict`] meets the
/// scans (so that restricting the input to each unit in turn does not go through every file
/// of the input each time).
type ScanFiles = Vec<HashMap<usize, Vec<PartitionedFile>>>;

/// Adds the scans of `plan` to `scans` and the bytes of each chunk it reads to `sizes`;
/// `false` if `plan` is not made only of scans of known chunk files under operators
/// [`restrict`] copies (chunkwise joins included: they restrict their own inputs).
fn read_inputs(
    plan: &Arc<dyn ExecutionPlan>,
    files: &ChunkFiles,
    scans: &mut ScanFiles,
    sizes: &mut BTreeMap<usize, u64>,
) -> bool {
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
            return false;
        };
        if config.limit.is_some() || !config.table_partition_cols().is_empty() {
            return false;
        }
        let store = config.object_store_url.as_str();
        let mut by_chunk: HashMap<usize, Vec<PartitionedFile>> = HashMap::new();
        for file in config.file_groups.iter().flat_map(|group| group.iter()) {
            let Some(chunk) = files.chunk(store, file) else {
                return false;
            };
            let bytes = match &file.range {
                Some(range) => u64::try_from(range.end - range.start).unwrap_or(0),
                None => file.object_meta.size,
            };
            *sizes.entry(chunk).or_default() += bytes;
            by_chunk.entry(chunk).or_default().push(file.clone());
        }
        scans.push(by_chunk);
        return true;
    }
    if let Some(chunkwise) = plan.downcast_ref::<ChunkwiseJoinExec>() {
        for (&chunk, &bytes) in &chunkwise.joins.sizes {
            *sizes.entry(chunk).or_default() += bytes;
        }
        return true;
    }
    let copied = passes_rows(plan.as_ref())
        || plan.downcast_ref::<UnionExec>().is_some()
        || plan.downcast_ref::<ProjectionExec>().is_some()
        || plan
            .downcast_ref::<FilterExec>()
            .is_some_and(|filter| filter.fetch().is_none());
    copied
        && plan
            .children()
            .into_iter()
            .all(|child| read_inputs(child, files, scans, sizes))
}

/// `plan` reading only the files of the chunks of `unit`, without its exchanges (a unit is
/// read by one partition); `None` if it reads none of them. `plan` passed [`read_inputs`];
/// `scans` are its [`ScanFiles`], the next one at `next`.
fn restrict(
    plan: &Arc<dyn ExecutionPlan>,
    unit: &[usize],
    scans: &[HashMap<usize, Vec<PartitionedFile>>],
    next: &mut usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
            return internal_err!("a chunkwise join's scan reads no files");
        };
        let Some(by_chunk) = scans.get(*next) else {
            return internal_err!("a chunkwise join's input has more scans than it had");
        };
        *next += 1;
        let mine: Vec<PartitionedFile> = unit
            .iter()
            .filter_map(|chunk| by_chunk.get(chunk))
            .flatten()
            .cloned()
            .collect();
        if mine.is_empty() {
            return Ok(None);
        }
        let mut config = config.clone();
        config.file_groups = vec![FileGroup::new(mine)];
        config.output_partitioning = None;
        let scan = scan.clone().with_data_source(Arc::new(config));
        return Ok(Some(Arc::new(scan)));
    }
    if let Some(chunkwise) = plan.downcast_ref::<ChunkwiseJoinExec>() {
        return chunkwise.joins.plan(unit);
    }
    if passes_rows(plan.as_ref()) {
        return match plan.children().first() {
            Some(child) => restrict(child, unit, scans, next),
            None => internal_err!("{} has no input", plan.name()),
        };
    }
    let mut children = Vec::new();
    for child in plan.children() {
        if let Some(child) = restrict(child, unit, scans, next)? {
            children.push(child);
        }
    }
    if plan.downcast_ref::<UnionExec>().is_some() {
        return match children.len() {
            0 => Ok(None),
            _ => UnionExec::try_new(children).map(Some),
        };
    }
    // A projection or a filter: of its one input.
    if children.len() != 1 {
        return Ok(None);
    }
    Arc::clone(plan)
        .replace_children(children, RECOMPUTE)
        .map(Some)
}

/// Whether a join of this type keeps or drops each row by its matches alone (so a chunk's
/// rows, which match only rows of their chunk, are joined alike in a join of the chunk).
const fn per_row(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner
            | JoinType::Left
            | JoinType::Right
            | JoinType::Full
            | JoinType::LeftSemi
            | JoinType::RightSemi
            | JoinType::LeftAnti
            | JoinType::RightAnti
            | JoinType::LeftMark
            | JoinType::RightMark
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_spread_by_size_and_kept_in_order() {
        let mb = 1 << 20;
        // Chunks of the benchmark's size: a unit each.
        let sizes: BTreeMap<usize, u64> = [(0, 20), (1, 50), (2, 30), (3, 30), (4, 20)]
            .into_iter()
            .map(|(chunk, size)| (chunk, size * mb))
            .collect();
        let spread2 = spread(units(&sizes, 2), 2);
        assert_eq!(
            spread2,
            vec![vec![vec![0], vec![1]], vec![vec![2], vec![3], vec![4]]]
        );
        // A small chunk goes with the next one.
        let small: BTreeMap<usize, u64> = [(0, 5 * mb), (1, 50 * mb)].into_iter().collect();
        assert_eq!(units(&small, 1), vec![(vec![0, 1], 55 * mb)]);
        // Never more partitions than units.
        assert_eq!(spread(units(&sizes, 8), 8).len(), 5);
        assert_eq!(spread(units(&sizes, 1), 1).len(), 1);
        // Tiny chunks: units of consecutive chunks, still one per partition at least.
        let tiny: BTreeMap<usize, u64> = (0..1000).map(|chunk| (chunk, 20_000)).collect();
        let cut = units(&tiny, 2);
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[0].0, (0..500).collect::<Vec<_>>());
        let many: BTreeMap<usize, u64> = (0..4000).map(|chunk| (chunk, 20_000)).collect();
        let cut = units(&many, 2);
        assert_eq!(cut.len(), 5);
        assert!(cut[..4].iter().all(|(_, bytes)| *bytes >= UNIT_BYTES));
        let all: Vec<usize> = cut.into_iter().flat_map(|(unit, _)| unit).collect();
        assert_eq!(all, (0..4000).collect::<Vec<_>>());
    }
}
