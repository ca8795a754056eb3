//! The chunk scan leaf: a table of a query's covering chunks, its plan node, the codec that
//! ships it to workers, and the planner hooks that split it by holder and route it.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use chunk_manager::{ChunkId, id_from_hex, id_to_hex};
use chunk_query::QueryEngine;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, internal_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext, col, lit};
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedLeafExec, NetworkBoundaryExt,
    RouteTasksEvent, RouteTasksEventResponse, ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse,
    get_distributed_worker_resolver,
};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use serde::{Deserialize, Serialize};
use url::Url;

/// One chunk a scan reads: the chunk and the blocks it answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPart {
    /// The chunk.
    pub chunk: ChunkId,
    /// The blocks read from it.
    pub blocks: Range<u64>,
    /// Where it can be read, in order (coordinator only; not sent to workers): the Flight
    /// URLs of its live holders in the placement's rank order, or, when none is live, of the
    /// worker that downloads it.
    pub holders: Vec<Url>,
    /// The id of the worker planned to read it (coordinator only, for `EXPLAIN`).
    pub worker: Option<String>,
    /// Whether that worker has to download it: no live worker holds it (coordinator only).
    pub download: bool,
}

/// The table `name` of a query: the file `name.parquet` of each covering chunk.
#[derive(Debug)]
pub struct ChunkTable {
    pub(crate) name: String,
    pub(crate) schema: SchemaRef,
    pub(crate) parts: Vec<ScanPart>,
    pub(crate) block_column: String,
    pub(crate) engine: Arc<QueryEngine>,
}

#[async_trait]
impl TableProvider for ChunkTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ChunkScanExec::new(
            ScanSpec {
                table: self.name.clone(),
                table_schema: self.schema.clone(),
                projection: projection.cloned(),
                block_column: self.block_column.clone(),
            },
            self.parts.clone(),
            self.parts.len().max(1),
            None,
            Some(self.engine.clone()),
        )?))
    }
}

/// What a scan reads of each chunk, the same in every variant.
#[derive(Debug, Clone)]
pub(crate) struct ScanSpec {
    pub(crate) table: String,
    pub(crate) table_schema: SchemaRef,
    pub(crate) projection: Option<Vec<usize>>,
    pub(crate) block_column: String,
}

/// Reads one table's file from some chunks: partition `i` is chunk `i` (partitions past the
/// chunks are empty, so every variant of a split scan has the same partition count). Each
/// chunk is pinned with `ChunkManager::fetch` for the life of its stream: a local read when
/// the worker holds it, an on-demand download otherwise.
#[derive(Debug)]
pub struct ChunkScanExec {
    spec: ScanSpec,
    parts: Vec<ScanPart>,
    /// Where this variant should run (coordinator only).
    route: Option<Url>,
    /// The engine whose manager and catalog the scan reads with (absent only in a plan being
    /// encoded on a node that cannot run it).
    engine: Option<Arc<QueryEngine>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl ChunkScanExec {
    pub(crate) fn new(
        spec: ScanSpec,
        parts: Vec<ScanPart>,
        partitions: usize,
        route: Option<Url>,
        engine: Option<Arc<QueryEngine>>,
    ) -> Result<Self> {
        let schema = match &spec.projection {
            Some(indices) => Arc::new(spec.table_schema.project(indices)?),
            None => spec.table_schema.clone(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            spec,
            parts,
            route,
            engine,
            schema,
            properties,
        })
    }

    /// The chunks this scan reads, in partition order.
    pub fn parts(&self) -> &[ScanPart] {
        &self.parts
    }

    /// The table it reads.
    pub fn table(&self) -> &str {
        &self.spec.table
    }

    fn partitions(&self) -> usize {
        self.properties.partitioning.partition_count()
    }

    fn variant(&self, parts: Vec<ScanPart>, partitions: usize, route: Option<Url>) -> Result<Self> {
        Self::new(
            self.spec.clone(),
            parts,
            partitions,
            route,
            self.engine.clone(),
        )
    }
}

impl DisplayAs for ChunkScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkScanExec: table={} chunks=[", self.spec.table)?;
        for (index, part) in self.parts.iter().enumerate() {
            if index > 0 {
                write!(f, ", ")?;
            }
            let hex = id_to_hex(&part.chunk);
            write!(
                f,
                "{}:{}..{}",
                &hex[..8],
                part.blocks.start,
                part.blocks.end
            )?;
            if let Some(worker) = &part.worker {
                write!(f, "@{worker}")?;
                if part.download {
                    write!(f, "(download)")?;
                }
            }
        }
        write!(f, "]")?;
        if let Some(route) = &self.route {
            write!(f, " on={route}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ChunkScanExec {
    fn name(&self) -> &str {
        "ChunkScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("ChunkScanExec has no children");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema.clone();
        let Some(part) = self.parts.get(partition).cloned() else {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let Some(engine) = self.engine.clone() else {
            return internal_err!("ChunkScanExec cannot run here: no chunk manager");
        };
        let spec = self.spec.clone();
        let batch_size = context.session_config().batch_size();
        let output = schema.clone();
        let stream = futures::stream::once(async move {
            read_part(engine, spec, part, output, batch_size).await
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Pins the part's chunk and streams its file's rows of the part's blocks, projected.
async fn read_part(
    engine: Arc<QueryEngine>,
    spec: ScanSpec,
    part: ScanPart,
    output: SchemaRef,
    batch_size: usize,
) -> Result<futures::stream::BoxStream<'static, Result<RecordBatch>>> {
    let catalog = engine.catalog();
    let Some(chunk) = catalog.get(&part.chunk) else {
        return plan_err!(
            "chunk {} is not in this worker's catalog",
            id_to_hex(&part.chunk)
        );
    };
    let file = format!("{}.parquet", spec.table);
    if !chunk.files().contains_key(&file) {
        // A chunk without this table's file contributes no rows.
        return Ok(futures::stream::empty().boxed());
    }
    let pinned = engine
        .manager()
        .fetch((**chunk).clone())
        .await
        .map_err(|error| {
            DataFusionError::Execution(format!(
                "cannot get chunk {}: {error}",
                id_to_hex(&part.chunk)
            ))
        })?;
    let path = pinned.path().join(&file);
    let context = SessionContext::new_with_config(SessionConfig::new().with_batch_size(batch_size));
    let mut frame = context
        .read_parquet(path.display().to_string(), ParquetReadOptions::default())
        .await?;
    if frame
        .schema()
        .has_column_with_unqualified_name(&spec.block_column)
    {
        let column = col(spec.block_column.as_str());
        frame = frame.filter(
            column
                .clone()
                .gt_eq(lit(part.blocks.start))
                .and(column.lt(lit(part.blocks.end))),
        )?;
    }
    let names: Vec<&str> = output.fields().iter().map(|f| f.name().as_str()).collect();
    let counts_only = names.is_empty();
    if !counts_only {
        frame = frame.select_columns(&names)?;
    }
    let stream = frame.execute_stream().await?;
    let stream = stream.map(move |batch| {
        // The pin lives as long as the stream.
        let _pinned = &pinned;
        let batch = batch?;
        if counts_only {
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            Ok(RecordBatch::try_new_with_options(
                output.clone(),
                vec![],
                &options,
            )?)
        } else {
            // The Parquet reader may choose other encodings of a type (`Utf8View` for
            // `Utf8`): cast back to the table's types.
            let columns = batch
                .columns()
                .iter()
                .zip(output.fields())
                .map(|(column, field)| {
                    if column.data_type() == field.data_type() {
                        Ok(column.clone())
                    } else {
                        datafusion::arrow::compute::cast(column, field.data_type())
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new(output.clone(), columns)?)
        }
    });
    Ok(stream.boxed())
}

/// A chunk scan on the wire: chunk ids and block ranges, never a path or a URL; the worker
/// finds the chunks in its own catalog.
#[derive(Serialize, Deserialize)]
struct ScanWire {
    table: String,
    /// The table's Arrow schema, as DataFusion's protobuf.
    table_schema: Vec<u8>,
    projection: Option<Vec<usize>>,
    block_column: String,
    partitions: usize,
    /// `(chunk id hex, first block, end block)`.
    parts: Vec<(String, u64, u64)>,
}

/// Encodes and decodes [`ChunkScanExec`]; on a worker it binds decoded scans to the worker's
/// engine. Anything else is refused.
#[derive(Debug)]
pub struct ChunkScanCodec {
    engine: Option<Arc<QueryEngine>>,
}

impl ChunkScanCodec {
    /// A codec whose decoded scans read with `engine`.
    pub fn new(engine: Option<Arc<QueryEngine>>) -> Self {
        Self { engine }
    }
}

impl PhysicalExtensionCodec for ChunkScanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return internal_err!("ChunkScanExec has no children, got {}", inputs.len());
        }
        let wire: ScanWire = serde_json::from_slice(buf)
            .map_err(|error| DataFusionError::Plan(format!("not a chunk scan: {error}")))?;
        let schema = datafusion_proto::protobuf::Schema::decode(wire.table_schema.as_slice())
            .map_err(|error| DataFusionError::Plan(format!("bad chunk scan schema: {error}")))?;
        let schema: Schema = (&schema).try_into()?;
        let parts = wire
            .parts
            .into_iter()
            .map(|(chunk, start, end)| {
                let chunk = id_from_hex(&chunk)
                    .map_err(|error| DataFusionError::Plan(format!("bad chunk id: {error}")))?;
                Ok(ScanPart {
                    chunk,
                    blocks: start..end,
                    holders: Vec::new(),
                    worker: None,
                    download: false,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if wire.partitions < parts.len() || wire.partitions > parts.len().max(1) * 64 {
            return plan_err!("bad chunk scan partition count {}", wire.partitions);
        }
        Ok(Arc::new(ChunkScanExec::new(
            ScanSpec {
                table: wire.table,
                table_schema: Arc::new(schema),
                projection: wire.projection,
                block_column: wire.block_column,
            },
            parts,
            wire.partitions,
            None,
            self.engine.clone(),
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(scan) = node.downcast_ref::<ChunkScanExec>() else {
            return internal_err!("only chunk scans are sent to workers, not {}", node.name());
        };
        let schema: datafusion_proto::protobuf::Schema =
            scan.spec.table_schema.as_ref().try_into()?;
        let wire = ScanWire {
            table: scan.spec.table.clone(),
            table_schema: schema.encode_to_vec(),
            projection: scan.spec.projection.clone(),
            block_column: scan.spec.block_column.clone(),
            partitions: scan.partitions(),
            parts: scan
                .parts
                .iter()
                .map(|part| (id_to_hex(&part.chunk), part.blocks.start, part.blocks.end))
                .collect(),
        };
        serde_json::to_writer(buf, &wire)
            .map_err(|error| DataFusionError::Internal(format!("encoding a chunk scan: {error}")))
    }
}

/// Checks a plan fragment a worker received before it runs: every leaf must be a chunk scan
/// of chunks in `engine`'s catalog, a network boundary (data from another worker of the
/// query) or a constant (`EmptyExec`, `PlaceholderRowExec`); nothing may write. So no plan
/// reads a file path, another table provider or inline data on the worker.
pub(crate) fn check_worker_plan(engine: &QueryEngine, plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let catalog = engine.catalog();
    plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<ChunkScanExec>() {
            if let Some(part) = scan
                .parts
                .iter()
                .find(|part| catalog.get(&part.chunk).is_none())
            {
                return plan_err!(
                    "plan refused: chunk {} is not in this worker's catalog",
                    id_to_hex(&part.chunk)
                );
            }
            return Ok(TreeNodeRecursion::Continue);
        }
        if node.name() == "DataSinkExec" {
            return plan_err!("plan refused: a worker does not write (DataSinkExec)");
        }
        let allowed = !node.children().is_empty()
            || node.as_ref().is_network_boundary()
            || node.downcast_ref::<EmptyExec>().is_some()
            || node.downcast_ref::<PlaceholderRowExec>().is_some();
        if allowed {
            Ok(TreeNodeRecursion::Continue)
        } else {
            plan_err!(
                "plan refused: a worker reads only chunk scans of its catalog, not {}",
                node.name()
            )
        }
    })?;
    Ok(())
}

/// The first live holder of a part, if any.
fn first_holder(part: &ScanPart) -> Option<&Url> {
    part.holders.first()
}

/// One task per distinct first holder (at least one).
pub(crate) fn desired_task_count(
    event: DesiredTaskCountEvent<'_>,
) -> Option<Result<DesiredTaskCountEventResponse>> {
    let scan = event.plan.downcast_ref::<ChunkScanExec>()?;
    let mut holders: Vec<Option<&Url>> = scan.parts.iter().map(first_holder).collect();
    holders.sort();
    holders.dedup();
    Some(Ok(DesiredTaskCountEventResponse::desired(
        holders.len().max(1),
    )))
}

/// Splits a scan into `task_count` variants: the chunks grouped by their first live holder
/// (groups beyond the task count merged round-robin), each variant routed to its holder.
pub(crate) fn scale_up(
    event: ScaleUpLeafNodeEvent<'_>,
) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    let scan = event.plan.downcast_ref::<ChunkScanExec>()?;
    Some(split(scan, event.task_count, event.plan))
}

fn split(
    scan: &ChunkScanExec,
    task_count: usize,
    original: &Arc<dyn ExecutionPlan>,
) -> Result<ScaleUpLeafNodeEventResponse> {
    let task_count = task_count.max(1);
    let mut groups: BTreeMap<Option<Url>, Vec<ScanPart>> = BTreeMap::new();
    for part in &scan.parts {
        groups
            .entry(first_holder(part).cloned())
            .or_default()
            .push(part.clone());
    }
    let mut tasks: Vec<(Option<Url>, Vec<ScanPart>)> = vec![(None, Vec::new()); task_count];
    for (index, (holder, parts)) in groups.into_iter().enumerate() {
        let task = &mut tasks[index % task_count];
        if task.1.is_empty() {
            task.0 = holder;
        }
        task.1.extend(parts);
    }
    let partitions = tasks
        .iter()
        .map(|(_, parts)| parts.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let variants = tasks
        .into_iter()
        .map(|(route, parts)| {
            scan.variant(parts, partitions, route)
                .map(|variant| Arc::new(variant) as Arc<dyn ExecutionPlan>)
        })
        .collect::<Result<Vec<_>>>()?;
    let leaf = DistributedLeafExec::try_new(Arc::clone(original), variants)?;
    Ok(ScaleUpLeafNodeEventResponse::new(Arc::new(leaf)))
}

/// Sends each task of a stage with a split chunk scan to its variant's holder when that
/// worker is live, else to a live worker round-robin.
pub(crate) fn route_tasks(event: RouteTasksEvent<'_>) -> Option<Result<RouteTasksEventResponse>> {
    let mut routes: Option<Vec<Option<Url>>> = None;
    let found = event.plan.apply(|node| {
        if let Some(leaf) = node.downcast_ref::<DistributedLeafExec>()
            && leaf.original().downcast_ref::<ChunkScanExec>().is_some()
        {
            routes = Some(
                leaf.variants()
                    .iter()
                    .map(|variant| {
                        variant
                            .downcast_ref::<ChunkScanExec>()
                            .and_then(|scan| scan.route.clone())
                    })
                    .collect(),
            );
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Err(error) = found {
        return Some(Err(error));
    }
    let routes = routes?;
    let live = match get_distributed_worker_resolver(event.task_ctx.session_config())
        .and_then(|resolver| resolver.get_urls())
    {
        Ok(live) => live,
        Err(error) => return Some(Err(error)),
    };
    if live.is_empty() {
        return Some(plan_err!("no live worker to run the query on"));
    }
    let urls = (0..event.task_count)
        .map(|task| match routes.get(task).cloned().flatten() {
            Some(url) if live.contains(&url) => url,
            _ => live[task % live.len()].clone(),
        })
        .collect();
    Some(Ok(RouteTasksEventResponse::new(urls)))
}
