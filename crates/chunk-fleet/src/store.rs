//! The cluster store: everything the fleet shares, as objects under one URL.
//!
//! # Overview
//!
//! ```text
//! <base>/members/<worker id>.json                     heartbeat of one worker (Member)
//! <base>/assignments/<unix ms>_<sha256>.json.gz       immutable placement (Assignment)
//! <base>/states/<generation, 20 digits>.json          the chain of published states (State)
//! <base>/state.json                                   the latest State, a copy for readers
//! <base>/catalogs/<sha256>.json.gz                    a catalog an assignment places (opaque bytes)
//! ```
//!
//! The base is an object_store URL: `file:///dir` on one machine and in tests, `s3://bucket/prefix`,
//! `gs://bucket/prefix` or `az://container/prefix` in production (credentials from the standard
//! `AWS_*`, `GOOGLE_*` or `AZURE_*` variables), `memory://` for a store in this process only.
//!
//! # Concurrency: two schedulers
//!
//! A state is published in two puts: first `states/<generation>.json` with
//! [`PutMode::Create`] (create-only: of two schedulers publishing the same generation, exactly
//! one succeeds; the other gets [`StoreError::Conflict`]), then `state.json` overwritten whole
//! (a put is atomic on every object store). Create-only puts are what every store offers:
//! `LocalFileSystem` implements them with a hard link, S3 with `If-None-Match`, GCS and Azure
//! natively; `LocalFileSystem` does not implement [`PutMode::Update`] (compare-and-swap on an
//! ETag), so this scheme is used everywhere, one code path for tests and production.
//!
//! The chain is the truth and `state.json` a hint: [`ClusterStore::read_state`] reads
//! `state.json` and then follows the chain past it (`states/<g + 1>.json`, ...), so a scheduler
//! that dies between its two puts, or a slow overwrite of `state.json` by an older generation,
//! never hides a published state. A scheduler publishes generation `g + 1` only after reading
//! `g`, so generations are dense.
//!
//! # Crash consistency
//!
//! Every object is written whole in one put. An assignment is written before the state that
//! names it. A reader that fails to read anything gets an error, never an empty state: a
//! worker must keep what it has when the store is unreachable or a file is corrupt.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::placement::{ChunkId, Placement};

/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The largest assignment file read, compressed or not (2 GiB: a million chunks with two
/// replicas take about 140 MB of JSON).
pub const MAX_ASSIGNMENT_BYTES: u64 = 2 << 30;

/// The largest member or state file read (16 MiB).
pub const MAX_SMALL_FILE_BYTES: u64 = 16 << 20;

/// How many member files [`ClusterStore::list_members`] reads at once.
const MEMBER_READS_IN_FLIGHT: usize = 16;

/// How far [`ClusterStore::read_state`] follows the chain past `state.json`.
const MAX_CHAIN_PROBES: u64 = 1024;

/// An error of the cluster store. Each names the object it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL cannot be used.
    #[error("invalid cluster store url {url:?}: {source}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store failed (unreachable, denied, ...).
    #[error("cluster store: {path}: {source}")]
    Io {
        /// The object.
        path: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },
    /// An object that cannot be decoded or whose checksum does not match.
    #[error("cluster store: {path}: corrupt: {reason}")]
    Corrupt {
        /// The object.
        path: String,
        /// What is wrong.
        reason: String,
        /// The decoder's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An object written by a newer version of this software.
    #[error(
        "cluster store: {path}: format version {found} is newer than this build reads ({supported})"
    )]
    NewerFormat {
        /// The object.
        path: String,
        /// Its format version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// An object larger than this build reads.
    #[error("cluster store: {path}: {size} bytes, more than the {limit} read")]
    TooLarge {
        /// The object.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A worker id that cannot name a member file.
    #[error("invalid worker id {id:?}: use 1 to 128 of A-Z a-z 0-9 . _ -, not starting with a dot")]
    InvalidWorkerId {
        /// The id given.
        id: String,
    },
    /// A string that is not an assignment id (`<unix ms>_<64 hex>`).
    #[error("invalid assignment id {id:?}: expected <unix ms>_<sha256 hex>")]
    InvalidAssignmentId {
        /// The text given.
        id: String,
    },
    /// Another writer published this generation first: read the state again and recompute.
    #[error(
        "cluster store: {path}: generation {generation} was already published by another writer"
    )]
    Conflict {
        /// The chain object.
        path: String,
        /// The generation.
        generation: u64,
    },
    /// A state with generation 0 (the first published generation is 1).
    #[error("state generation must be at least 1")]
    ZeroGeneration,
}

impl StoreError {
    /// Whether this is a lost race between writers ([`StoreError::Conflict`]).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    fn io(path: &Path, source: object_store::Error) -> Self {
        StoreError::Io {
            path: path.to_string(),
            source,
        }
    }

    fn corrupt(
        path: &Path,
        reason: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Corrupt {
            path: path.to_string(),
            reason: reason.into(),
            source,
        }
    }
}

/// A worker's heartbeat, `members/<worker id>.json`, rewritten every few seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The format version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The worker's id, stable across restarts; also the file name.
    pub worker_id: String,
    /// Its HTTP API, for example `http://10.0.0.5:8080`.
    pub http_url: String,
    /// Its Arrow Flight endpoint, if it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight_url: Option<String>,
    /// Its disk budget for chunks, in bytes.
    pub capacity_bytes: u64,
    /// The assignment it has applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_assignment: Option<AssignmentId>,
    /// When it wrote this, in milliseconds since the Unix epoch.
    pub heartbeat_unix_ms: u64,
    /// A random id of the running process, so that two processes claiming one worker id are
    /// told apart even at one address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Chunks the worker holds (ready on its disk), if it reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_chunks: Option<u64>,
    /// Bytes of those chunks, if it reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_bytes: Option<u64>,
}

impl Member {
    /// A heartbeat in the current format, without Flight endpoint, assignment or instance.
    pub fn new(
        worker_id: impl Into<String>,
        http_url: impl Into<String>,
        capacity_bytes: u64,
        heartbeat_unix_ms: u64,
    ) -> Self {
        Self {
            format: FORMAT_VERSION,
            worker_id: worker_id.into(),
            http_url: http_url.into(),
            flight_url: None,
            capacity_bytes,
            applied_assignment: None,
            heartbeat_unix_ms,
            instance: None,
            held_chunks: None,
            held_bytes: None,
        }
    }
}

/// Two processes heartbeating under one worker id: what the one writing saw.
///
/// A real clash shows on every heartbeat of both processes. A worker restarted on a new address
/// within the clash window sees one, on its first heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdClash {
    /// The worker id both claim.
    pub worker_id: String,
    /// The address of the writer.
    pub ours_http_url: String,
    /// The address in the record it replaced.
    pub theirs_http_url: String,
    /// The instance in the record it replaced.
    pub theirs_instance: Option<String>,
    /// When the replaced record was written.
    pub theirs_heartbeat_unix_ms: u64,
}

impl fmt::Display for IdClash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker id {:?} is claimed by two processes: this one at {} and another at {} (heartbeat at {} ms)",
            self.worker_id, self.ours_http_url, self.theirs_http_url, self.theirs_heartbeat_unix_ms
        )
    }
}

/// What [`ClusterStore::put_member`] saw while writing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Set when a recent record under the same id came from another process.
    pub clash: Option<IdClash>,
}

/// The members read by [`ClusterStore::list_members`].
#[derive(Debug, Default)]
pub struct MemberList {
    /// The members whose files are valid, in ascending id order.
    pub members: Vec<Member>,
    /// One error per member file that could not be used (logged and skipped).
    pub skipped: Vec<StoreError>,
}

/// The id of an assignment file: `<unix ms>_<sha256 of its uncompressed JSON>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AssignmentId {
    created_unix_ms: u64,
    sha256: String,
}

impl AssignmentId {
    /// When the assignment file was first written.
    pub fn created_unix_ms(&self) -> u64 {
        self.created_unix_ms
    }

    /// The sha256 (hex) of the uncompressed canonical JSON.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The file's path relative to the store base.
    pub fn relative_path(&self) -> String {
        format!("assignments/{self}.json.gz")
    }
}

impl fmt::Display for AssignmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:020}_{}", self.created_unix_ms, self.sha256)
    }
}

impl FromStr for AssignmentId {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidAssignmentId {
            id: text.chars().take(120).collect(),
        };
        let (time, sha) = text.split_once('_').ok_or_else(invalid)?;
        if time.is_empty()
            || !time.bytes().all(|b| b.is_ascii_digit())
            || sha.len() != 64
            || !sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid());
        }
        Ok(Self {
            created_unix_ms: time.parse().map_err(|_| invalid())?,
            sha256: sha.to_string(),
        })
    }
}

impl TryFrom<String> for AssignmentId {
    type Error = StoreError;
    fn try_from(text: String) -> Result<Self, StoreError> {
        text.parse()
    }
}

impl From<AssignmentId> for String {
    fn from(id: AssignmentId) -> String {
        id.to_string()
    }
}

/// An immutable placement as published: `assignments/<unix ms>_<sha256>.json.gz`.
///
/// Its canonical JSON (this struct serialised with chunk lists sorted) is what the sha256 in
/// the name covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The format version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The identity of the catalog placed (for example the sha256 of the catalog file).
    pub catalog: String,
    /// `R`.
    pub replication: usize,
    /// The saturation used.
    pub saturation: f64,
    /// Each worker's chunks (hex ids in JSON), ascending.
    #[serde(with = "hex_id_map")]
    pub workers: BTreeMap<String, Vec<ChunkId>>,
    /// Chunks placed on fewer workers than wanted (hex ids in JSON), ascending.
    #[serde(default, with = "hex_id_list")]
    pub under_replicated: Vec<ChunkId>,
    /// Each worker's bytes as placed (the chunk sizes the scheduler used), for operators.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bytes: BTreeMap<String, u64>,
}

impl Assignment {
    /// The assignment of a placement of this catalog.
    pub fn from_placement(placement: &Placement, catalog: impl Into<String>) -> Self {
        let mut assignment = Self {
            format: FORMAT_VERSION,
            catalog: catalog.into(),
            replication: placement.params.replication,
            saturation: placement.params.saturation,
            workers: placement.assigned.clone(),
            under_replicated: placement.unplaced.iter().map(|u| u.chunk).collect(),
            bytes: placement.bytes.clone(),
        };
        assignment.canonicalize();
        assignment
    }

    /// Sorts every chunk list and removes duplicates, so equal contents serialise equally.
    pub fn canonicalize(&mut self) {
        for chunks in self.workers.values_mut() {
            chunks.sort_unstable();
            chunks.dedup();
        }
        self.under_replicated.sort_unstable();
        self.under_replicated.dedup();
    }

    /// The canonical JSON and its sha256 (hex).
    fn canonical_json(&self) -> Result<(Vec<u8>, String), serde_json::Error> {
        let sorted = self
            .workers
            .values()
            .chain(std::iter::once(&self.under_replicated))
            .all(|chunks| chunks.windows(2).all(|pair| pair[0] < pair[1]));
        let bytes = if sorted {
            serde_json::to_vec(self)?
        } else {
            let mut copy = self.clone();
            copy.canonicalize();
            serde_json::to_vec(&copy)?
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        Ok((bytes, sha))
    }
}

/// The pointer to the assignment in force, `state.json` (and `states/<generation>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The format version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// 1 for the first state published, then one more per publication.
    pub generation: u64,
    /// The assignment in force.
    pub assignment: AssignmentId,
    /// Its path relative to the store base.
    pub assignment_path: String,
    /// When workers switch to it, in milliseconds since the Unix epoch.
    pub effective_from_unix_ms: u64,
    /// The workers the scheduler counted as live, ascending.
    pub live_workers: Vec<String>,
    /// When it was published, in milliseconds since the Unix epoch.
    pub published_unix_ms: u64,
}

impl State {
    /// The state of generation `generation` pointing at `assignment`.
    pub fn new(
        generation: u64,
        assignment: AssignmentId,
        effective_from_unix_ms: u64,
        live_workers: Vec<String>,
        published_unix_ms: u64,
    ) -> Self {
        Self {
            format: FORMAT_VERSION,
            generation,
            assignment_path: assignment.relative_path(),
            assignment,
            effective_from_unix_ms,
            live_workers,
            published_unix_ms,
        }
    }
}

/// The cluster store: a handle on the objects under one base URL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterStore {
    store: Arc<dyn ObjectStore>,
    base: Path,
    clash_window: Duration,
}

impl ClusterStore {
    /// Opens the store at `url`: `file:///dir`, `s3://bucket/prefix` (configured from the
    /// `AWS_*` environment variables), `gs://bucket/prefix` (`GOOGLE_*`),
    /// `az://container/prefix` (also `azure://`, `abfs[s]://`; `AZURE_*`), `memory://`, or
    /// another scheme object_store knows.
    /// Nothing is read or written yet.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with_options(url, std::iter::empty::<(String, String)>())
    }

    /// As [`ClusterStore::open`], with object_store configuration keys (for example
    /// `("aws_region", "eu-west-1")`, `("azure_storage_endpoint", "http://127.0.0.1:10000/acct")`);
    /// for `s3://`, `gs://` and `az://` they override the environment. Keys another store
    /// would read are ignored.
    pub fn open_with_options<I, K, V>(url: &str, options: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let invalid = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::InvalidUrl {
            url: url.to_string(),
            source,
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(Box::new(e)))?;
        let options: Vec<(String, String)> = options
            .into_iter()
            .map(|(key, value)| (key.as_ref().to_ascii_lowercase(), value.into()))
            .collect();
        // object_store's `parse_url_opts` ignores the environment: the cloud stores are
        // built here from their standard variables, then the options.
        let cloud: Option<Arc<dyn ObjectStore>> = match parsed.scheme() {
            "s3" | "s3a" => {
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_url(url.to_string());
                for (key, value) in &options {
                    if let Ok(key) = key.parse() {
                        builder = builder.with_config(key, value);
                    }
                }
                Some(Arc::new(builder.build().map_err(|e| invalid(Box::new(e)))?))
            }
            "gs" => {
                let mut builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.to_string());
                for (key, value) in &options {
                    if let Ok(key) = key.parse() {
                        builder = builder.with_config(key, value);
                    }
                }
                Some(Arc::new(builder.build().map_err(|e| invalid(Box::new(e)))?))
            }
            "az" | "adl" | "azure" | "abfs" | "abfss" => {
                let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.to_string());
                for (key, value) in &options {
                    if let Ok(key) = key.parse() {
                        builder = builder.with_config(key, value);
                    }
                }
                Some(Arc::new(builder.build().map_err(|e| invalid(Box::new(e)))?))
            }
            _ => None,
        };
        let (store, base): (Arc<dyn ObjectStore>, Path) = if let Some(store) = cloud {
            let base = Path::parse(parsed.path()).map_err(|e| invalid(Box::new(e)))?;
            (store, base)
        } else {
            let (store, base) =
                object_store::parse_url_opts(&parsed, options).map_err(|e| invalid(Box::new(e)))?;
            (Arc::from(store), base)
        };
        Ok(Self::from_store(store, base))
    }

    /// A store on an existing object store, under `base`.
    pub fn from_store(store: Arc<dyn ObjectStore>, base: Path) -> Self {
        Self {
            store,
            base,
            clash_window: Duration::from_secs(30),
        }
    }

    /// How recent a record under one's own id must be to count as another process's claim
    /// (default 30 s; use the liveness timeout).
    pub fn with_clash_window(mut self, window: Duration) -> Self {
        self.clash_window = window;
        self
    }

    fn path(&self, relative: &str) -> Path {
        relative
            .split('/')
            .fold(self.base.clone(), |path, part| path.join(part))
    }

    fn member_path(&self, worker_id: &str) -> Result<Path, StoreError> {
        validate_worker_id(worker_id)?;
        Ok(self.path(&format!("members/{worker_id}.json")))
    }

    fn chain_path(&self, generation: u64) -> Path {
        self.path(&format!("states/{generation:020}.json"))
    }

    /// Writes a worker's heartbeat, and says if a recent record under its id came from another
    /// process (another address or another instance): see [`IdClash`].
    pub async fn put_member(&self, member: &Member) -> Result<Heartbeat, StoreError> {
        let path = self.member_path(&member.worker_id)?;
        let clash = match self.get_small(&path).await? {
            None => None,
            Some(bytes) => match decode_member(&path, &bytes) {
                Ok(theirs) => self.clash(member, theirs),
                Err(error) => {
                    tracing::warn!(%error, "replacing an unreadable member file");
                    None
                }
            },
        };
        let bytes = serde_json::to_vec_pretty(member)
            .map_err(|e| StoreError::corrupt(&path, "cannot encode", Some(Box::new(e))))?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(Heartbeat { clash })
    }

    fn clash(&self, ours: &Member, theirs: Member) -> Option<IdClash> {
        let recent = theirs
            .heartbeat_unix_ms
            .saturating_add(self.clash_window.as_millis() as u64)
            >= ours.heartbeat_unix_ms;
        let other_instance = matches!(
            (&ours.instance, &theirs.instance),
            (Some(a), Some(b)) if a != b
        );
        (recent && (theirs.http_url != ours.http_url || other_instance)).then(|| IdClash {
            worker_id: ours.worker_id.clone(),
            ours_http_url: ours.http_url.clone(),
            theirs_http_url: theirs.http_url,
            theirs_instance: theirs.instance,
            theirs_heartbeat_unix_ms: theirs.heartbeat_unix_ms,
        })
    }

    /// Every member file. A file that cannot be used (garbage, a newer format, a name that does
    /// not match its worker id) is logged and reported in [`MemberList::skipped`]; it never
    /// fails the listing. Only a failure to list fails.
    pub async fn list_members(&self) -> Result<MemberList, StoreError> {
        let prefix = self.path("members");
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| StoreError::io(&prefix, e))?;
        let reads = metas.into_iter().filter_map(|meta| {
            let worker_id = meta.location.filename()?.strip_suffix(".json")?.to_string();
            Some(async move {
                let Some(bytes) = self.get_small(&meta.location).await? else {
                    return Ok(None); // deleted since the listing: gone, not broken
                };
                let member = decode_member(&meta.location, &bytes)?;
                if member.worker_id != worker_id {
                    return Err(StoreError::corrupt(
                        &meta.location,
                        format!("names worker {:?}, not {worker_id:?}", member.worker_id),
                        None,
                    ));
                }
                Ok(Some(member))
            })
        });
        let results: Vec<Result<Option<Member>, StoreError>> = futures::stream::iter(reads)
            .buffer_unordered(MEMBER_READS_IN_FLIGHT)
            .collect()
            .await;
        let mut out = MemberList::default();
        for result in results {
            match result {
                Ok(Some(member)) => out.members.push(member),
                Ok(None) => {}
                // An error on one file (even a failed read) skips that file only.
                Err(error) => {
                    tracing::warn!(%error, "skipping a member file");
                    out.skipped.push(error);
                }
            }
        }
        out.members.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(out)
    }

    /// Writes an assignment, once: the same content gives the same id, whenever it is put
    /// again (an existing file with the same sha256 is reused). `now_unix_ms` names a new file.
    pub async fn put_assignment(
        &self,
        assignment: &Assignment,
        now_unix_ms: u64,
    ) -> Result<AssignmentId, StoreError> {
        let prefix = self.path("assignments");
        let encoded = {
            let assignment = assignment.clone();
            let task_prefix = prefix.clone();
            tokio::task::spawn_blocking(move || encode_assignment(&task_prefix, &assignment))
                .await
                .map_err(|e| {
                    StoreError::corrupt(&prefix, "encoder task failed", Some(Box::new(e)))
                })??
        };
        let (compressed, sha) = encoded;
        let existing: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| StoreError::io(&prefix, e))?;
        let same_content = format!("_{sha}");
        if let Some(id) = existing
            .iter()
            .filter_map(|meta| meta.location.filename()?.strip_suffix(".json.gz"))
            .filter(|stem| stem.ends_with(&same_content))
            .filter_map(|stem| stem.parse::<AssignmentId>().ok())
            .min()
        {
            return Ok(id);
        }
        let id = AssignmentId {
            created_unix_ms: now_unix_ms,
            sha256: sha,
        };
        let path = self.path(&id.relative_path());
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(compressed), options)
            .await
        {
            // The same name is the same content: another writer put it first.
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(id),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Reads an assignment and checks it: the sha256 in its name, its format version.
    pub async fn read_assignment(&self, id: &AssignmentId) -> Result<Assignment, StoreError> {
        let path = self.path(&id.relative_path());
        let bytes = self
            .get_limited(&path, MAX_ASSIGNMENT_BYTES)
            .await?
            .ok_or_else(|| {
                StoreError::io(
                    &path,
                    object_store::Error::NotFound {
                        path: path.to_string(),
                        source: "no such assignment".into(),
                    },
                )
            })?;
        let expected = id.sha256.clone();
        let task_path = path.clone();
        tokio::task::spawn_blocking(move || decode_assignment(&task_path, &bytes, &expected))
            .await
            .map_err(|e| StoreError::corrupt(&path, "decoder task failed", Some(Box::new(e))))?
    }

    /// The latest published state, or `None` if none was ever published. Follows the chain
    /// past `state.json` (see the module docs). Any failure is an error, never `None`.
    pub async fn read_state(&self) -> Result<Option<State>, StoreError> {
        let pointer = self.path("state.json");
        let mut latest = match self.get_small(&pointer).await? {
            Some(bytes) => Some(decode_state(&pointer, &bytes)?),
            None => None,
        };
        let start = latest.as_ref().map_or(0, |state| state.generation);
        for generation in start + 1..=start + MAX_CHAIN_PROBES {
            let path = self.chain_path(generation);
            match self.get_small(&path).await? {
                Some(bytes) => {
                    let state = decode_state(&path, &bytes)?;
                    if state.generation != generation {
                        return Err(StoreError::corrupt(
                            &path,
                            format!("holds generation {}", state.generation),
                            None,
                        ));
                    }
                    latest = Some(state);
                }
                None => break,
            }
        }
        Ok(latest)
    }

    /// Publishes a state: `states/<generation>.json` create-only, then `state.json`.
    ///
    /// `state.generation` must be one more than the generation read by
    /// [`ClusterStore::read_state`] (1 if there was none). If another writer published that
    /// generation first, nothing is written and [`StoreError::Conflict`] is returned.
    pub async fn write_state(&self, state: &State) -> Result<(), StoreError> {
        if state.generation == 0 {
            return Err(StoreError::ZeroGeneration);
        }
        let path = self.chain_path(state.generation);
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| StoreError::corrupt(&path, "cannot encode", Some(Box::new(e))))?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes.clone()), options)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(StoreError::Conflict {
                    path: path.to_string(),
                    generation: state.generation,
                });
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        }
        let pointer = self.path("state.json");
        self.store
            .put(&pointer, PutPayload::from(bytes))
            .await
            .map_err(|e| StoreError::io(&pointer, e))?;
        Ok(())
    }

    /// Stores a catalog (opaque bytes, for example the JSON list of chunk descriptions that an
    /// assignment places), content-addressed: `catalogs/<sha256>.json.gz`. Returns the sha256
    /// (hex) of `bytes`, the name [`ClusterStore::read_catalog`] takes. Putting the same bytes
    /// again writes nothing.
    pub async fn put_catalog(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let sha = hex::encode(Sha256::digest(bytes));
        let path = self.path(&format!("catalogs/{sha}.json.gz"));
        match self.store.head(&path).await {
            Ok(_) => return Ok(sha),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StoreError::io(&path, e)),
        }
        let compressed = {
            let bytes = bytes.to_vec();
            let task_path = path.clone();
            tokio::task::spawn_blocking(move || {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder
                    .write_all(&bytes)
                    .and_then(|()| encoder.finish())
                    .map_err(|e| {
                        StoreError::corrupt(&task_path, "cannot compress", Some(Box::new(e)))
                    })
            })
            .await
            .map_err(|e| StoreError::corrupt(&path, "encoder task failed", Some(Box::new(e))))??
        };
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(compressed), options)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(sha),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Reads a catalog stored by [`ClusterStore::put_catalog`] and checks its sha256.
    pub async fn read_catalog(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::corrupt(
                &self.path("catalogs"),
                format!(
                    "{:?} is not a sha256",
                    sha256.chars().take(80).collect::<String>()
                ),
                None,
            ));
        }
        let path = self.path(&format!("catalogs/{sha256}.json.gz"));
        let compressed = self
            .get_limited(&path, MAX_ASSIGNMENT_BYTES)
            .await?
            .ok_or_else(|| {
                StoreError::io(
                    &path,
                    object_store::Error::NotFound {
                        path: path.to_string(),
                        source: "no such catalog".into(),
                    },
                )
            })?;
        let expected = sha256.to_string();
        let task_path = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(&compressed[..])
                .take(MAX_ASSIGNMENT_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| StoreError::corrupt(&task_path, "not gzip", Some(Box::new(e))))?;
            if bytes.len() as u64 > MAX_ASSIGNMENT_BYTES {
                return Err(StoreError::TooLarge {
                    path: task_path.to_string(),
                    size: bytes.len() as u64,
                    limit: MAX_ASSIGNMENT_BYTES,
                });
            }
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != expected {
                return Err(StoreError::corrupt(
                    &task_path,
                    format!("sha256 of the content is {actual}, the name says {expected}"),
                    None,
                ));
            }
            Ok(bytes)
        })
        .await
        .map_err(|e| StoreError::corrupt(&path, "decoder task failed", Some(Box::new(e))))?
    }

    async fn get_small(&self, path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_limited(path, MAX_SMALL_FILE_BYTES).await
    }

    /// The object's bytes; `None` if it does not exist.
    async fn get_limited(&self, path: &Path, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let result = match self.store.get(path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        if result.meta.size > limit {
            return Err(StoreError::TooLarge {
                path: path.to_string(),
                size: result.meta.size,
                limit,
            });
        }
        let bytes = result.bytes().await.map_err(|e| StoreError::io(path, e))?;
        Ok(Some(bytes.to_vec()))
    }
}

/// Checks that a worker id can name a member file.
pub fn validate_worker_id(id: &str) -> Result<(), StoreError> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidWorkerId {
            id: id.chars().take(140).collect(),
        })
    }
}

/// Only the format field, read before the rest so a newer format is reported as such.
#[derive(Deserialize)]
struct FormatProbe {
    format: u32,
}

fn check_format(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let probe: FormatProbe = serde_json::from_slice(bytes).map_err(|e| {
        StoreError::corrupt(path, "not a JSON object with a format", Some(Box::new(e)))
    })?;
    if probe.format > FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            path: path.to_string(),
            found: probe.format,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

fn decode_member(path: &Path, bytes: &[u8]) -> Result<Member, StoreError> {
    check_format(path, bytes)?;
    let member: Member = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::corrupt(path, "invalid member", Some(Box::new(e))))?;
    validate_worker_id(&member.worker_id)
        .map_err(|e| StoreError::corrupt(path, e.to_string(), None))?;
    Ok(member)
}

fn decode_state(path: &Path, bytes: &[u8]) -> Result<State, StoreError> {
    check_format(path, bytes)?;
    let state: State = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::corrupt(path, "invalid state", Some(Box::new(e))))?;
    if state.generation == 0 {
        return Err(StoreError::corrupt(path, "generation 0", None));
    }
    Ok(state)
}

fn encode_assignment(
    path: &Path,
    assignment: &Assignment,
) -> Result<(Vec<u8>, String), StoreError> {
    let (json, sha) = assignment
        .canonical_json()
        .map_err(|e| StoreError::corrupt(path, "cannot encode", Some(Box::new(e))))?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&json)
        .and_then(|()| encoder.finish())
        .map(|compressed| (compressed, sha))
        .map_err(|e| StoreError::corrupt(path, "cannot compress", Some(Box::new(e))))
}

fn decode_assignment(
    path: &Path,
    compressed: &[u8],
    sha256: &str,
) -> Result<Assignment, StoreError> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(MAX_ASSIGNMENT_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|e| StoreError::corrupt(path, "not gzip", Some(Box::new(e))))?;
    if json.len() as u64 > MAX_ASSIGNMENT_BYTES {
        return Err(StoreError::TooLarge {
            path: path.to_string(),
            size: json.len() as u64,
            limit: MAX_ASSIGNMENT_BYTES,
        });
    }
    let actual = hex::encode(Sha256::digest(&json));
    if actual != sha256 {
        return Err(StoreError::corrupt(
            path,
            format!("sha256 of the content is {actual}, the name says {sha256}"),
            None,
        ));
    }
    check_format(path, &json)?;
    serde_json::from_slice(&json)
        .map_err(|e| StoreError::corrupt(path, "invalid assignment", Some(Box::new(e))))
}

/// Serde of a list of chunk ids as hex strings.
mod hex_id_list {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::placement::ChunkId;

    pub(super) fn serialize<S: Serializer>(ids: &[ChunkId], s: S) -> Result<S::Ok, S::Error> {
        ids.iter().map(hex::encode).collect::<Vec<_>>().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChunkId>, D::Error> {
        let texts: Vec<String> = Vec::deserialize(d)?;
        texts
            .iter()
            .map(|text| parse(text).map_err(D::Error::custom))
            .collect()
    }

    pub(super) fn parse(text: &str) -> Result<ChunkId, String> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(text, &mut id).map_err(|_| {
            format!(
                "invalid chunk id {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
        Ok(id)
    }
}

/// Serde of worker id -> chunk ids, with ids as hex strings.
mod hex_id_map {
    use std::collections::BTreeMap;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::placement::ChunkId;

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<ChunkId>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(worker, ids)| (worker, ids.iter().map(hex::encode).collect::<Vec<_>>()))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<ChunkId>>, D::Error> {
        let texts: BTreeMap<String, Vec<String>> = BTreeMap::deserialize(d)?;
        texts
            .into_iter()
            .map(|(worker, ids)| {
                let ids = ids
                    .iter()
                    .map(|text| super::hex_id_list::parse(text).map_err(D::Error::custom))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((worker, ids))
            })
            .collect()
    }
}
