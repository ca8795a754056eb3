//! The dataset catalog: every chunk of every dataset, so the worker knows which remote chunk
//! covers which blocks.
//!
//! # Overview
//!
//! A [`Catalog`] is an immutable list of chunk descriptions (the same JSON form the manager and
//! the daemon take), indexed per dataset by range start. It is loaded from a JSON file or URL
//! ([`Catalog::load`]), built from descriptions ([`Catalog::new`]), or listed from object
//! storage ([`Catalog::list`], [`Catalog::list_url`]) where each chunk is a directory
//! `<start>-<end>[-<chunk id>]/` of files.
//!
//! [`Catalog::cover`] answers a query's question: which chunks, and which blocks of each, cover
//! a block range. Ranges of one dataset may overlap (after re-chunking); the cover then takes,
//! at each block, the covering chunk that reaches furthest, and gives every chunk the part of
//! the range it answers for, so that no block is read twice. Blocks no chunk covers are
//! reported as missing.
//!
//! # Table schemas
//!
//! A catalog may also carry each table's Arrow schema per dataset, so a query is planned (and
//! a query that cannot plan is refused) before any chunk is downloaded. In the JSON form,
//! next to the chunks:
//!
//! ```json
//! {"chunks": [...],
//!  "schemas": {"<dataset id, 64 hex digits>": {"blocks": [
//!      {"name": "block_number", "type": "UInt64", "nullable": false},
//!      {"name": "timestamp", "type": "Timestamp(µs, \"UTC\")", "nullable": false}]}}}
//! ```
//!
//! where `type` is Arrow's name of the data type (as `DataType`'s `Display` writes it and its
//! `FromStr` reads it). `chunk-worker synth` writes them. A catalog without a table's schema
//! (a bare list, or one listed from object storage) still works: the engine then reads the
//! schema from one chunk before planning (see [`crate::engine`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chunk_manager::{ChunkId, DataChunk, DatasetId, id_from_hex};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, QueryError};

/// Every chunk of every dataset the worker may query. Cheap to share behind an `Arc`.
///
/// ```
/// use chunk_manager::DataChunk;
/// use chunk_query::Catalog;
///
/// let file = |name: &str| [(format!("{name}.parquet"), format!("https://origin/{name}"))].into();
/// let catalog = Catalog::new([
///     DataChunk::new([1; 32], [7; 32], 0..100, file("a")),
///     DataChunk::new([2; 32], [7; 32], 100..200, file("b")),
/// ])?;
/// let cover = catalog.cover(&[7; 32], 50..150)?;
/// let chunks: Vec<_> = cover.parts.iter().map(|part| (part.chunk.id()[0], part.blocks.clone())).collect();
/// assert_eq!(chunks, [(1, 50..100), (2, 100..150)]);
/// assert!(cover.missing.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    datasets: HashMap<DatasetId, DatasetChunks>,
    by_id: HashMap<ChunkId, Arc<DataChunk>>,
    /// Per dataset, the tables' schemas, by table name (`blocks` for `blocks.parquet`).
    schemas: HashMap<DatasetId, BTreeMap<String, SchemaRef>>,
}

/// One column of a table schema in a catalog file.
#[derive(Debug, Serialize, Deserialize)]
struct ColumnJson {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
    #[serde(default = "yes")]
    nullable: bool,
}

fn yes() -> bool {
    true
}

/// Per dataset (hex id), per table, its columns.
type SchemasJson = BTreeMap<String, BTreeMap<String, Vec<ColumnJson>>>;

/// One dataset's chunks, sorted by `(start, id)`.
#[derive(Debug, Default, Clone)]
struct DatasetChunks {
    chunks: Vec<Arc<DataChunk>>,
    /// `reach[i]`: the position among `chunks[..=i]` of the chunk that ends last (the later
    /// one on ties), so the chunk reaching furthest from a block is found in O(log n).
    reach: Vec<usize>,
}

/// Which chunks answer a block range, and for which blocks each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cover {
    /// In block order; the `blocks` of consecutive parts do not overlap.
    pub parts: Vec<CoverPart>,
    /// Blocks of the range that no chunk of the catalog covers.
    pub missing: Vec<Range<u64>>,
}

/// One chunk of a [`Cover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverPart {
    /// The chunk.
    pub chunk: Arc<DataChunk>,
    /// The blocks the query reads from it: within its range and the query's.
    pub blocks: Range<u64>,
}

impl Cover {
    /// Whether filtering every part by the whole query range gives each block once: true
    /// unless a part's chunk starts before its blocks inside the query range, which happens
    /// only where chunks overlap.
    pub fn is_disjoint(&self, query: &Range<u64>) -> bool {
        self.parts.iter().all(|part| {
            part.blocks.start == query.start || part.chunk.block_range().start >= part.blocks.start
        })
    }
}

/// A catalog file: a list of chunk descriptions, bare or as `{"chunks": [...]}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum CatalogFile {
    List(Vec<DataChunk>),
    Object {
        chunks: Vec<DataChunk>,
        #[serde(default)]
        schemas: SchemasJson,
    },
}

impl Catalog {
    /// A catalog of these chunks.
    ///
    /// # Errors
    ///
    /// [`CatalogError::InvalidChunk`] for a description the manager would refuse,
    /// [`CatalogError::Duplicate`] for an id listed twice.
    pub fn new(chunks: impl IntoIterator<Item = DataChunk>) -> Result<Self, CatalogError> {
        let mut by_id = HashMap::new();
        let mut grouped: HashMap<DatasetId, Vec<Arc<DataChunk>>> = HashMap::new();
        for chunk in chunks {
            chunk
                .validate()
                .map_err(|source| CatalogError::InvalidChunk {
                    chunk: *chunk.id(),
                    source,
                })?;
            let chunk = Arc::new(chunk);
            if by_id.insert(*chunk.id(), chunk.clone()).is_some() {
                return Err(CatalogError::Duplicate { chunk: *chunk.id() });
            }
            grouped.entry(*chunk.dataset_id()).or_default().push(chunk);
        }
        let datasets = grouped
            .into_iter()
            .map(|(dataset, chunks)| (dataset, DatasetChunks::new(chunks)))
            .collect();
        Ok(Self {
            datasets,
            by_id,
            schemas: HashMap::new(),
        })
    }

    /// The catalog with these table schemas for `dataset` (replacing any it had for those
    /// tables); see the module docs.
    pub fn with_schemas(
        mut self,
        dataset: DatasetId,
        tables: impl IntoIterator<Item = (String, SchemaRef)>,
    ) -> Self {
        self.schemas.entry(dataset).or_default().extend(tables);
        self
    }

    /// The schema of `table` of `dataset`, if the catalog has it.
    pub fn schema(&self, dataset: &DatasetId, table: &str) -> Option<SchemaRef> {
        self.schemas.get(dataset)?.get(table).cloned()
    }

    /// The table schemas the catalog has for `dataset`, by table name.
    pub fn schemas(&self, dataset: &DatasetId) -> BTreeMap<String, SchemaRef> {
        self.schemas.get(dataset).cloned().unwrap_or_default()
    }

    /// The catalog as JSON: `{"chunks": [...], "schemas": {...}}`, which
    /// [`Catalog::from_json`] reads back.
    ///
    /// # Errors
    ///
    /// `serde_json`'s error (a chunk description that cannot be encoded: a bug).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut datasets: Vec<&DatasetId> = self.datasets.keys().collect();
        datasets.sort();
        let chunks: Vec<&DataChunk> = datasets
            .iter()
            .flat_map(|dataset| self.chunks(dataset).iter().map(|chunk| chunk.as_ref()))
            .collect();
        let schemas: SchemasJson = self
            .schemas
            .iter()
            .map(|(dataset, tables)| {
                let tables = tables
                    .iter()
                    .map(|(table, schema)| {
                        let columns = schema
                            .fields()
                            .iter()
                            .map(|field| ColumnJson {
                                name: field.name().clone(),
                                data_type: field.data_type().to_string(),
                                nullable: field.is_nullable(),
                            })
                            .collect();
                        (table.clone(), columns)
                    })
                    .collect();
                (chunk_manager::id_to_hex(dataset), tables)
            })
            .collect();
        serde_json::to_vec_pretty(&serde_json::json!({"chunks": chunks, "schemas": schemas}))
    }

    /// Parses a catalog: a JSON list of chunk descriptions, or `{"chunks": [...]}`. `origin`
    /// names where it came from, for errors.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Parse`], or those of [`Catalog::new`].
    pub fn from_json(json: &[u8], origin: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile =
            serde_json::from_slice(json).map_err(|source| CatalogError::Parse {
                origin: origin.to_string(),
                source,
            })?;
        match file {
            CatalogFile::List(chunks) => Self::new(chunks),
            CatalogFile::Object { chunks, schemas } => {
                let mut catalog = Self::new(chunks)?;
                for (dataset, tables) in schemas {
                    let bad = |reason: String| CatalogError::BadSchema {
                        origin: origin.to_string(),
                        dataset: dataset.clone(),
                        reason,
                    };
                    let id = id_from_hex(&dataset).map_err(|error| bad(error.to_string()))?;
                    let mut parsed = Vec::new();
                    for (table, columns) in tables {
                        let fields = columns
                            .into_iter()
                            .map(|column| {
                                let data_type: DataType =
                                    column.data_type.parse().map_err(|error| {
                                        bad(format!(
                                            "table {table}, column {}: {error}",
                                            column.name
                                        ))
                                    })?;
                                Ok(Field::new(column.name, data_type, column.nullable))
                            })
                            .collect::<Result<Vec<_>, CatalogError>>()?;
                        parsed.push((table, Arc::new(Schema::new(fields))));
                    }
                    catalog = catalog.with_schemas(id, parsed);
                }
                Ok(catalog)
            }
        }
    }

    /// Reads a catalog file (see [`Catalog::from_json`]).
    ///
    /// # Errors
    ///
    /// [`CatalogError::Read`], or those of [`Catalog::from_json`].
    pub fn load_file(path: &Path) -> Result<Self, CatalogError> {
        let json = std::fs::read(path).map_err(|source| CatalogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&json, &path.display().to_string())
    }

    /// Fetches a catalog from an `http://` or `https://` URL (see [`Catalog::from_json`]).
    ///
    /// # Errors
    ///
    /// [`CatalogError::Fetch`] if the request fails or answers other than 200, or those of
    /// [`Catalog::from_json`].
    pub async fn load_url(url: &str) -> Result<Self, CatalogError> {
        let failed = |message: String| CatalogError::Fetch {
            url: url.to_string(),
            message,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|error| failed(error_chain(&error)))?;
        let response = client
            .get(url)
            .send()
            .await
            .map_err(|error| failed(error_chain(&error)))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status())));
        }
        let json = response
            .bytes()
            .await
            .map_err(|error| failed(error_chain(&error)))?;
        Self::from_json(&json, url)
    }

    /// Loads a catalog from a file path or an `http(s)://` URL.
    ///
    /// # Errors
    ///
    /// Those of [`Catalog::load_file`] or [`Catalog::load_url`].
    pub async fn load(source: &str) -> Result<Self, CatalogError> {
        if source.starts_with("http://") || source.starts_with("https://") {
            Self::load_url(source).await
        } else {
            let path = source.strip_prefix("file://").unwrap_or(source);
            Self::load_file(Path::new(path))
        }
    }

    /// Lists one dataset's chunks from object storage: every object under `prefix` named
    /// `<start>-<end>[-<chunk id>]/<file>` is a file of the chunk covering `start..end`
    /// (objects directly under `prefix` are skipped). The
    /// chunk id is the 64 hex digits if the name has them, otherwise the BLAKE3 hash of the
    /// dataset id and the directory name. A file's URL is `url_base` joined with the object's
    /// full path (for example `s3://bucket` or `https://bucket.example.com`).
    ///
    /// # Errors
    ///
    /// [`CatalogError::List`] if listing fails, [`CatalogError::BadObjectName`] for an object
    /// not named as above, or those of [`Catalog::new`].
    pub async fn list(
        store: &dyn ObjectStore,
        prefix: &ObjectPath,
        dataset: DatasetId,
        url_base: &str,
    ) -> Result<Self, CatalogError> {
        let objects: Vec<_> = store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|source| CatalogError::List {
                location: format!("{store} {prefix}"),
                source: Box::new(source),
            })?;
        let base = url_base.trim_end_matches('/');
        let mut chunks: BTreeMap<String, ListedChunk> = BTreeMap::new();
        for object in objects {
            let full = object.location.to_string();
            let relative = full
                .strip_prefix(prefix.as_ref())
                .unwrap_or(&full)
                .trim_start_matches('/');
            let bad = |reason: &str| CatalogError::BadObjectName {
                path: full.clone(),
                reason: reason.to_string(),
            };
            let Some((directory, file)) = relative.split_once('/') else {
                // A file beside the chunks (a README, the catalog itself): not a chunk's.
                tracing::debug!(path = %full, "not in a chunk directory; skipped");
                continue;
            };
            if file.contains('/') {
                return Err(bad("nested below the chunk directory"));
            }
            let (range, id) =
                parse_chunk_dir(directory, &dataset).map_err(|reason| bad(&reason))?;
            chunks
                .entry(directory.to_string())
                .or_insert_with(|| ListedChunk {
                    range,
                    id,
                    files: HashMap::new(),
                })
                .files
                .insert(file.to_string(), format!("{base}/{full}"));
        }
        Self::new(
            chunks
                .into_values()
                .map(|listed| DataChunk::new(listed.id, dataset, listed.range, listed.files)),
        )
    }

    /// [`Catalog::list`] from a URL: `s3://bucket/prefix` (credentials and endpoint from the
    /// standard `AWS_*` environment variables; files' URLs `s3://bucket/...`) or
    /// `file:///directory` (files' URLs `file:///...`). `files_base` replaces the base of the
    /// files' URLs, for stores also served over HTTP.
    ///
    /// # Errors
    ///
    /// [`CatalogError::UnsupportedUrl`] for another scheme or a malformed URL, or those of
    /// [`Catalog::list`].
    pub async fn list_url(
        url: &str,
        dataset: DatasetId,
        files_base: Option<&str>,
    ) -> Result<Self, CatalogError> {
        let unsupported = |reason: String| CatalogError::UnsupportedUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = reqwest::Url::parse(url).map_err(|error| unsupported(error.to_string()))?;
        match parsed.scheme() {
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .ok_or_else(|| unsupported("no bucket (expected s3://bucket/prefix)".into()))?;
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|error| unsupported(error.to_string()))?;
                let prefix = ObjectPath::from(parsed.path().trim_matches('/'));
                let base = files_base.map_or_else(|| format!("s3://{bucket}"), str::to_string);
                Self::list(&store, &prefix, dataset, &base).await
            }
            "file" => {
                let directory = parsed
                    .to_file_path()
                    .map_err(|()| unsupported("not a local path".into()))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&directory)
                    .map_err(|error| unsupported(error.to_string()))?;
                let base = match files_base {
                    Some(base) => base.to_string(),
                    None => reqwest::Url::from_directory_path(&directory)
                        .map_err(|()| unsupported("not an absolute path".into()))?
                        .to_string(),
                };
                Self::list(&store, &ObjectPath::default(), dataset, &base).await
            }
            other => Err(unsupported(format!(
                "unsupported scheme {other:?} (use s3:// or file://)"
            ))),
        }
    }

    /// The datasets the catalog knows.
    pub fn datasets(&self) -> impl Iterator<Item = &DatasetId> {
        self.datasets.keys()
    }

    /// One dataset's chunks, sorted by range start (empty for an unknown dataset).
    pub fn chunks(&self, dataset: &DatasetId) -> &[Arc<DataChunk>] {
        self.datasets
            .get(dataset)
            .map_or(&[], |chunks| chunks.chunks.as_slice())
    }

    /// The chunk with this id.
    pub fn get(&self, chunk: &ChunkId) -> Option<&Arc<DataChunk>> {
        self.by_id.get(chunk)
    }

    /// How many chunks the catalog lists, in all datasets.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the catalog lists no chunk.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The chunks that answer `blocks` of `dataset`, and the blocks each answers for; see the
    /// module docs. O(k log n) for k parts.
    ///
    /// # Errors
    ///
    /// [`QueryError::EmptyRange`], or [`QueryError::UnknownDataset`] if the catalog has no
    /// chunk of the dataset.
    pub fn cover(&self, dataset: &DatasetId, blocks: Range<u64>) -> Result<Cover, QueryError> {
        if blocks.is_empty() {
            return Err(QueryError::EmptyRange { range: blocks });
        }
        let chunks = self
            .datasets
            .get(dataset)
            .ok_or(QueryError::UnknownDataset { dataset: *dataset })?;
        Ok(chunks.cover(blocks))
    }
}

impl DatasetChunks {
    fn new(mut chunks: Vec<Arc<DataChunk>>) -> Self {
        chunks.sort_by_key(|chunk| (chunk.block_range().start, *chunk.id()));
        let mut reach: Vec<usize> = Vec::with_capacity(chunks.len());
        for (position, chunk) in chunks.iter().enumerate() {
            let best = match reach.last() {
                Some(&best) if chunks[best].block_range().end > chunk.block_range().end => best,
                _ => position,
            };
            reach.push(best);
        }
        Self { chunks, reach }
    }

    fn cover(&self, blocks: Range<u64>) -> Cover {
        let mut parts = Vec::new();
        let mut missing = Vec::new();
        let mut block = blocks.start;
        while block < blocks.end {
            // Chunks at positions below `started` start at or before `block`.
            let started = self
                .chunks
                .partition_point(|chunk| chunk.block_range().start <= block);
            let furthest = started
                .checked_sub(1)
                .map(|last| &self.chunks[self.reach[last]])
                .filter(|chunk| chunk.block_range().end > block);
            match furthest {
                Some(chunk) => {
                    let end = chunk.block_range().end.min(blocks.end);
                    parts.push(CoverPart {
                        chunk: chunk.clone(),
                        blocks: block..end,
                    });
                    block = end;
                }
                None => {
                    let next = self.chunks.get(started).map_or(blocks.end, |chunk| {
                        chunk.block_range().start.min(blocks.end)
                    });
                    missing.push(block..next);
                    block = next;
                }
            }
        }
        Cover { parts, missing }
    }
}

/// A chunk directory found by a listing.
struct ListedChunk {
    range: Range<u64>,
    id: ChunkId,
    files: HashMap<String, String>,
}

/// Parses a chunk directory name `<start>-<end>[-<64 hex id>]`.
fn parse_chunk_dir(name: &str, dataset: &DatasetId) -> Result<(Range<u64>, ChunkId), String> {
    let mut fields = name.splitn(3, '-');
    let number = |field: Option<&str>, what: &str| {
        field
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| format!("the {what} block is not a number"))
    };
    let start = number(fields.next(), "start")?;
    let end = number(fields.next(), "end")?;
    if start >= end {
        return Err(format!("the range {start}..{end} is empty"));
    }
    let id = match fields.next() {
        Some(hex) if hex.len() == 64 => {
            id_from_hex(hex).map_err(|error| format!("the chunk id: {error}"))?
        }
        _ => {
            let mut hasher = blake3::Hasher::new();
            hasher.update(dataset);
            hasher.update(name.as_bytes());
            *hasher.finalize().as_bytes()
        }
    };
    Ok((start..end, id))
}

/// An error and its sources on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn chunk(id: u8, range: Range<u64>) -> DataChunk {
        DataChunk::new(
            [id; 32],
            [0; 32],
            range,
            [("blocks.parquet".into(), format!("http://origin/{id}"))].into(),
        )
    }

    fn parts(cover: &Cover) -> Vec<(u8, Range<u64>)> {
        cover
            .parts
            .iter()
            .map(|part| (part.chunk.id()[0], part.blocks.clone()))
            .collect()
    }

    #[test]
    fn cover_takes_only_the_chunks_that_overlap_the_range() {
        let catalog =
            Catalog::new([chunk(1, 0..100), chunk(2, 100..200), chunk(3, 200..300)]).unwrap();
        let cover = catalog.cover(&[0; 32], 150..200).unwrap();
        assert_eq!(parts(&cover), [(2, 150..200)]);
        let cover = catalog.cover(&[0; 32], 99..201).unwrap();
        assert_eq!(parts(&cover), [(1, 99..100), (2, 100..200), (3, 200..201)]);
        assert!(cover.is_disjoint(&(99..201)));
    }

    #[test]
    fn cover_reports_gaps_and_the_ends_beyond_the_catalog() {
        let catalog = Catalog::new([chunk(1, 100..200), chunk(2, 300..400)]).unwrap();
        let cover = catalog.cover(&[0; 32], 0..1000).unwrap();
        assert_eq!(parts(&cover), [(1, 100..200), (2, 300..400)]);
        assert_eq!(cover.missing, [0..100, 200..300, 400..1000]);
    }

    #[test]
    fn overlapping_chunks_answer_each_block_once() {
        // 2 was re-chunked into 3 and 4; 5 is a long chunk over all of them.
        let catalog = Catalog::new([
            chunk(1, 0..100),
            chunk(2, 100..200),
            chunk(3, 100..150),
            chunk(4, 150..260),
            chunk(5, 50..250),
        ])
        .unwrap();
        let cover = catalog.cover(&[0; 32], 0..300).unwrap();
        assert_eq!(parts(&cover), [(1, 0..100), (5, 100..250), (4, 250..260)]);
        assert_eq!(cover.missing, [260..300]);
        assert!(!cover.is_disjoint(&(0..300)), "5 starts before its part");
    }

    #[test]
    fn an_empty_range_or_unknown_dataset_is_an_error() {
        let catalog = Catalog::new([chunk(1, 0..100)]).unwrap();
        assert!(matches!(
            catalog.cover(&[0; 32], 5..5),
            Err(QueryError::EmptyRange { .. })
        ));
        assert!(matches!(
            catalog.cover(&[9; 32], 0..5),
            Err(QueryError::UnknownDataset { .. })
        ));
    }

    #[test]
    fn duplicates_and_invalid_chunks_are_refused() {
        assert!(matches!(
            Catalog::new([chunk(1, 0..100), chunk(1, 0..100)]),
            Err(CatalogError::Duplicate { .. })
        ));
        assert!(matches!(
            Catalog::new([chunk(1, 5..5)]),
            Err(CatalogError::InvalidChunk { .. })
        ));
    }

    #[test]
    fn json_is_a_list_or_an_object_with_chunks() {
        let list = serde_json::to_vec(&[chunk(1, 0..10)]).unwrap();
        assert_eq!(Catalog::from_json(&list, "list").unwrap().len(), 1);
        let object = serde_json::to_vec(&serde_json::json!({"chunks": [chunk(2, 0..10)]})).unwrap();
        assert_eq!(Catalog::from_json(&object, "object").unwrap().len(), 1);
        assert!(matches!(
            Catalog::from_json(b"{", "broken"),
            Err(CatalogError::Parse { .. })
        ));
    }

    #[test]
    fn issue11_table_schemas_survive_json() {
        let catalog = Catalog::new([chunk(1, 0..10)])
            .unwrap()
            .with_schemas([0; 32], crate::synth::schemas());
        let json = catalog.to_json().unwrap();
        let back = Catalog::from_json(&json, "json").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(
            back.schema(&[0; 32], "transactions"),
            Some(crate::synth::transactions_schema())
        );
        assert_eq!(back.schemas(&[0; 32]).len(), 3);
        let bad = br#"{"chunks": [], "schemas": {"00": {"t": [{"name": "a", "type": "Nope"}]}}}"#;
        assert!(matches!(
            Catalog::from_json(bad, "bad"),
            Err(CatalogError::BadSchema { .. })
        ));
    }

    #[test]
    fn chunk_directories_name_their_range_and_maybe_their_id() {
        let id = [0xab; 32];
        let name = format!("0000000100-0000000200-{}", chunk_manager::id_to_hex(&id));
        assert_eq!(parse_chunk_dir(&name, &[0; 32]).unwrap(), (100..200, id));
        let (range, derived) = parse_chunk_dir("100-200-abc", &[0; 32]).unwrap();
        assert_eq!(range, 100..200);
        assert_eq!(parse_chunk_dir("100-200-abc", &[0; 32]).unwrap().1, derived);
        assert_ne!(parse_chunk_dir("100-200-abc", &[1; 32]).unwrap().1, derived);
        assert!(parse_chunk_dir("x-200", &[0; 32]).is_err());
        assert!(parse_chunk_dir("200-100", &[0; 32]).is_err());
    }
}
