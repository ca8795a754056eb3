//! Operator commands that open the data directory directly: `ls`, `status`, `find`, `rm`,
//! `verify` and `gc`.
//!
//! # Overview
//!
//! Each command opens the directory with [`ChunkManager::open`], as the daemon does at start,
//! does its work and shuts the manager down. Opening has the start's side effects: temporary
//! data of interrupted downloads is removed and recorded deletions are finished. The commands
//! never create a data directory: a mistyped `--data-dir` is an error, not a new directory.
//!
//! The manager holds the directory's OS lock, so while a daemon (`chunk-worker serve`) runs on
//! it these commands refuse, naming the daemon's pid; its HTTP API (`GET /chunks`, ...) is the
//! way to look at a live directory.
//!
//! Chunk and dataset ids are given as 64 hex characters, or as a prefix of at least
//! [`MIN_PREFIX`] of them that matches exactly one known id (the table shows 12).
//!
//! Human output is an aligned table or `key value` lines on stdout; `--json` prints the views
//! defined here ([`ChunkView`], [`VerifyView`], [`GcView`], [`RmView`]) instead.
//!
//! # Exit codes
//!
//! - 0: done. For `rm` also when the chunk was not there: it is gone either way.
//! - 1: `status` of a chunk the directory does not hold, `find` of a block no ready chunk
//!   holds, `verify` finding a bad chunk or an unusable directory, `gc` failing to remove one;
//!   or an error (the directory is missing, locked or unusable, an id prefix is ambiguous).
//! - 2: bad usage, including an id that is not hex (reported by the argument parser).

use std::collections::{BTreeSet, HashSet};
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use chunk_manager::{
    Bytes, ChunkId, ChunkManager, ChunkRef, ChunkState, ChunkStatus, Config, DataChunk, Error,
    ShortId, id_from_hex, id_to_hex,
};
use serde::Serialize;

use crate::settings::ManagerArgs;

/// The shortest id prefix accepted on the command line.
pub const MIN_PREFIX: usize = 4;

/// Options of every command that opens the data directory.
#[derive(Debug, Clone, clap::Args)]
pub struct DirArgs {
    /// The manager's options (data directory, config file, ...).
    #[command(flatten)]
    pub manager: ManagerArgs,
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Options of `chunk-worker ls`.
#[derive(Debug, Clone, clap::Args)]
pub struct LsArgs {
    /// The data directory and output format.
    #[command(flatten)]
    pub dir: DirArgs,
    /// Also show chunks that are not ready (queued, downloading, failed, deleting), and the
    /// directories that are not valid chunks.
    #[arg(long)]
    pub all: bool,
}

/// Options of `chunk-worker status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The data directory and output format.
    #[command(flatten)]
    pub dir: DirArgs,
    /// The chunk's id: 64 hex characters, or a unique prefix of at least 4.
    #[arg(value_name = "CHUNK_ID", value_parser = parse_id_arg)]
    pub chunk: IdArg,
}

/// Options of `chunk-worker find`.
#[derive(Debug, Clone, clap::Args)]
pub struct FindArgs {
    /// The data directory and output format.
    #[command(flatten)]
    pub dir: DirArgs,
    /// The dataset's id: 64 hex characters, or a unique prefix of at least 4.
    #[arg(value_name = "DATASET_ID", value_parser = parse_id_arg)]
    pub dataset: IdArg,
    /// The block number.
    #[arg(value_name = "BLOCK")]
    pub block: u64,
}

/// Options of `chunk-worker rm`.
#[derive(Debug, Clone, clap::Args)]
pub struct RmArgs {
    /// The data directory and output format.
    #[command(flatten)]
    pub dir: DirArgs,
    /// The chunk's id: 64 hex characters, or a unique prefix of at least 4.
    #[arg(value_name = "CHUNK_ID", value_parser = parse_id_arg)]
    pub chunk: IdArg,
}

/// A chunk or dataset id as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdArg {
    /// All 64 hex characters.
    Full(ChunkId),
    /// A lowercase hex prefix, to be matched against the ids the directory holds.
    Prefix(String),
}

impl IdArg {
    /// The one id among `known` this argument names: a full id names itself (known or not), a
    /// prefix the one known id it starts. `None` if a prefix matches nothing.
    ///
    /// # Errors
    ///
    /// A prefix that matches more than one id.
    fn resolve<'a>(
        &self,
        what: &str,
        known: impl IntoIterator<Item = &'a [u8; 32]>,
    ) -> anyhow::Result<Option<[u8; 32]>> {
        let prefix = match self {
            IdArg::Full(id) => return Ok(Some(*id)),
            IdArg::Prefix(prefix) => prefix,
        };
        let mut matches: Vec<[u8; 32]> = known
            .into_iter()
            .filter(|id| id_to_hex(id).starts_with(prefix.as_str()))
            .copied()
            .collect();
        matches.sort_unstable();
        matches.dedup();
        match matches.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => {
                let listed: Vec<String> = many.iter().map(id_to_hex).collect();
                bail!(
                    "{what} id prefix {prefix:?} is ambiguous: it matches {}; give more characters",
                    listed.join(", ")
                )
            }
        }
    }
}

impl fmt::Display for IdArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdArg::Full(id) => f.write_str(&id_to_hex(id)),
            IdArg::Prefix(prefix) => write!(f, "{prefix}…"),
        }
    }
}

/// Parses an id argument: 64 hex characters, or a hex prefix of at least [`MIN_PREFIX`]. An
/// optional `0x` is ignored.
fn parse_id_arg(text: &str) -> Result<IdArg, String> {
    let trimmed = text.trim();
    let hex = trimmed.strip_prefix("0x").unwrap_or(trimmed);
    if hex.len() == 64 {
        return id_from_hex(hex)
            .map(IdArg::Full)
            .map_err(|error| error.to_string());
    }
    if (MIN_PREFIX..64).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(IdArg::Prefix(hex.to_ascii_lowercase()));
    }
    Err(format!(
        "invalid id {:?}: expected 64 hex characters, or a prefix of at least {MIN_PREFIX} as \
         `ls` shows",
        text.chars().take(80).collect::<String>()
    ))
}

/// A chunk as the commands show it. `ls --json` prints a list of these; `status --json` and
/// `find --json` one.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkView {
    /// The chunk's id, hex.
    pub id: String,
    /// The dataset's id, hex.
    pub dataset_id: String,
    /// The half-open block range, as in chunk descriptions.
    pub block_range: RangeView,
    /// Where the chunk stands, with the details of that state.
    #[serde(flatten)]
    pub state: StateView,
    /// Whether the last request for the chunk was a download (false: a delete).
    pub wanted: bool,
    /// The chunk's bytes on disk, once ready.
    pub size: Option<u64>,
    /// The chunk's directory, once ready.
    pub path: Option<PathBuf>,
    /// The chunk's files, by name.
    pub files: Vec<FileView>,
    /// The last request for this id that was refused (a different description), if any.
    pub rejected: Option<String>,
}

/// A half-open block range `start..end`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RangeView {
    /// The first block.
    pub start: u64,
    /// One past the last block.
    pub end: u64,
}

/// A chunk's state: its stable name plus the details that state has.
#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    /// `queued`, `waiting_for_space`, `downloading`, `ready`, `deleting` or `failed`.
    pub state: &'static str,
    /// Downloading: bytes written so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    /// Downloading: the chunk's size, once the origin has told it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Waiting for space: bytes the chunk needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed: Option<u64>,
    /// Waiting for space: bytes free in the budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<u64>,
    /// Deleting: whether refs still hold the chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    /// Failed: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed: the kind of error, a stable name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    /// Failed: attempts made for the failing file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl StateView {
    fn named(state: &'static str) -> Self {
        Self {
            state,
            bytes_done: None,
            bytes_total: None,
            needed: None,
            available: None,
            pinned: None,
            error: None,
            error_kind: None,
            attempts: None,
        }
    }

    fn of(state: &ChunkState) -> Self {
        let mut view = Self::named(state.name());
        match state {
            ChunkState::WaitingForSpace { needed, available } => {
                view.needed = Some(*needed);
                view.available = Some(*available);
            }
            ChunkState::Downloading {
                bytes_done,
                bytes_total,
            } => {
                view.bytes_done = Some(*bytes_done);
                view.bytes_total = *bytes_total;
            }
            ChunkState::Deleting { pinned } => view.pinned = Some(*pinned),
            ChunkState::Failed { error, attempts } => {
                view.error = Some(error.to_string());
                view.error_kind = Some(error.kind());
                view.attempts = Some(*attempts);
            }
            _ => {}
        }
        view
    }

    /// A few words for the table's STATE column.
    fn short(&self) -> String {
        match (self.state, self.bytes_done, self.bytes_total, self.pinned) {
            ("downloading", Some(done), Some(total), _) if total > 0 => {
                format!("downloading {}%", done.saturating_mul(100) / total)
            }
            ("deleting", _, _, Some(true)) => "deleting (pinned)".to_string(),
            (state, ..) => state.to_string(),
        }
    }
}

/// One file of a chunk.
#[derive(Debug, Clone, Serialize)]
pub struct FileView {
    /// The file's name inside the chunk's directory.
    pub name: String,
    /// Where it is downloaded from.
    pub url: String,
    /// Its size on disk, when the chunk is ready (only `status` and `find` look).
    pub size: Option<u64>,
}

impl ChunkView {
    /// The view of a chunk that is not (known to be) on disk.
    fn described(chunk: &DataChunk, state: StateView) -> Self {
        let range = chunk.block_range();
        Self {
            id: id_to_hex(chunk.id()),
            dataset_id: id_to_hex(chunk.dataset_id()),
            block_range: RangeView {
                start: range.start,
                end: range.end,
            },
            state,
            wanted: true,
            size: None,
            path: None,
            files: chunk
                .files()
                .iter()
                .map(|(name, url)| FileView {
                    name: name.clone(),
                    url: url.clone(),
                    size: None,
                })
                .collect(),
            rejected: None,
        }
    }

    /// The view of a ready chunk; `stat_files` also reads each file's size from the disk.
    fn ready(chunk: &ChunkRef, stat_files: bool) -> Self {
        let mut view = Self::described(chunk.chunk(), StateView::named("ready"));
        view.size = Some(chunk.size());
        view.path = Some(chunk.path().to_path_buf());
        if stat_files {
            for file in &mut view.files {
                file.size = std::fs::metadata(chunk.path().join(&file.name))
                    .ok()
                    .map(|metadata| metadata.len());
            }
        }
        view
    }

    /// The view of any chunk the manager knows.
    fn of_status(manager: &ChunkManager, status: &ChunkStatus, stat_files: bool) -> Self {
        let ready = matches!(status.state, ChunkState::Ready)
            .then(|| manager.get_chunk(status.chunk.id()))
            .flatten();
        let mut view = match ready {
            Some(chunk) => Self::ready(&chunk, stat_files),
            None => Self::described(&status.chunk, StateView::of(&status.state)),
        };
        view.wanted = status.wanted;
        view.rejected = status.rejected.as_ref().map(|error| error.to_string());
        view
    }

    fn sort_key(&self) -> (&str, u64, u64, &str) {
        (
            &self.dataset_id,
            self.block_range.start,
            self.block_range.end,
            &self.id,
        )
    }

    /// The `key value` lines of `status` and `find`.
    fn describe(&self, out: &mut String) {
        line(out, format_args!("chunk    {}", self.id));
        line(out, format_args!("dataset  {}", self.dataset_id));
        line(
            out,
            format_args!(
                "blocks   {}..{}",
                self.block_range.start, self.block_range.end
            ),
        );
        line(out, format_args!("state    {}", self.state.state));
        if let Some(done) = self.state.bytes_done {
            let total = self
                .state
                .bytes_total
                .map_or_else(|| "an unknown size".to_string(), |t| Bytes(t).to_string());
            line(out, format_args!("progress {} of {total}", Bytes(done)));
        }
        if let (Some(needed), Some(available)) = (self.state.needed, self.state.available) {
            line(
                out,
                format_args!(
                    "waiting  needs {}, {} free in the disk budget",
                    Bytes(needed),
                    Bytes(available)
                ),
            );
        }
        if self.state.pinned == Some(true) {
            line(out, "pinned   refs still hold it; files go when they drop");
        }
        if let Some(error) = &self.state.error {
            line(out, format_args!("error    {error}"));
        }
        if let Some(attempts) = self.state.attempts {
            line(out, format_args!("attempts {attempts}"));
        }
        if !self.wanted {
            line(out, "wanted   no (deleted)");
        }
        if let Some(rejected) = &self.rejected {
            line(out, format_args!("rejected {rejected}"));
        }
        if let Some(size) = self.size {
            line(out, format_args!("size     {}", Bytes(size)));
        }
        if let Some(path) = &self.path {
            line(out, format_args!("path     {}", path.display()));
        }
        let name_width = self.files.iter().map(|f| f.name.len()).max().unwrap_or(0);
        let sizes: Vec<String> = self
            .files
            .iter()
            .map(|f| f.size.map(|s| Bytes(s).to_string()).unwrap_or_default())
            .collect();
        let size_width = sizes.iter().map(String::len).max().unwrap_or(0);
        for (n, (file, size)) in self.files.iter().zip(&sizes).enumerate() {
            let label = if n == 0 { "files   " } else { "        " };
            line(
                out,
                format_args!(
                    "{label} {:<name_width$}  {size:>size_width$}  {}",
                    file.name, file.url
                ),
            );
        }
    }
}

/// What `verify --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyView {
    /// Ready chunks checked.
    pub checked: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Ready chunks whose files do not match their manifests.
    pub bad: Vec<BadChunkView>,
    /// Directories that are not valid chunks (never served; `gc` removes them).
    pub unusable: Vec<UnusableView>,
}

/// A ready chunk whose files do not match its manifest.
#[derive(Debug, Clone, Serialize)]
pub struct BadChunkView {
    /// The chunk's id, hex.
    pub id: String,
    /// What does not match, with the chunk's directory.
    pub error: String,
}

/// A directory (or file) in the data directory that is not a valid chunk.
#[derive(Debug, Clone, Serialize)]
pub struct UnusableView {
    /// Where it is.
    pub path: PathBuf,
    /// Why it is not a valid chunk.
    pub reason: String,
    /// The bytes it takes.
    pub bytes: u64,
}

/// What `gc --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct GcView {
    /// Temporary entries (interrupted downloads and removals) removed when the directory was
    /// opened.
    pub temporary_removed: usize,
    /// Their bytes, as measured just before opening.
    pub temporary_bytes: u64,
    /// Chunks removed because their deletion had been recorded before a stop or crash.
    pub deleted_chunks_removed: usize,
    /// Unusable directories removed.
    pub unusable_removed: Vec<UnusableView>,
    /// Unusable directories left in place: a chunk the directory holds owns their name.
    pub unusable_kept: Vec<UnusableView>,
    /// Removals that failed.
    pub failures: Vec<String>,
    /// Bytes freed in total.
    pub bytes_freed: u64,
}

/// What `rm --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct RmView {
    /// The chunk's id, hex.
    pub id: String,
    /// Whether the directory held the chunk.
    pub existed: bool,
    /// The chunk's bytes, if it was ready.
    pub bytes_freed: u64,
}

/// `chunk-worker ls`: the ready chunks (with `--all`, every chunk the manager knows and the
/// unusable directories), ordered by dataset and block range.
pub fn ls(args: &LsArgs) -> anyhow::Result<ExitCode> {
    let manager = open_existing(&args.dir.manager)?;
    let mut views: Vec<ChunkView> = if args.all {
        manager
            .statuses()
            .iter()
            .map(|status| ChunkView::of_status(&manager, status, false))
            .collect()
    } else {
        manager
            .list_chunks()
            .iter()
            .filter_map(|id| manager.get_chunk(id))
            .map(|chunk| ChunkView::ready(&chunk, false))
            .collect()
    };
    views.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let unusable = unusable(&manager);
    manager.shutdown_blocking();

    if args.dir.json {
        print_json(&views)?;
    } else {
        let mut out = String::new();
        table(&views, args.all, &mut out);
        if args.all && !unusable.is_empty() {
            line(
                &mut out,
                format_args!(
                    "\n{} entries are not valid chunks (never served; `chunk-worker gc` removes \
                     them):",
                    unusable.len()
                ),
            );
            for entry in &unusable {
                line(
                    &mut out,
                    format_args!("  {}: {}", entry.path.display(), entry.reason),
                );
            }
        }
        print(&out);
    }
    if !args.all && !unusable.is_empty() {
        print_err(format_args!(
            "note: {} entries in the data directory are not valid chunks; `ls --all` lists them, \
             `gc` removes them",
            unusable.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `chunk-worker status`: one chunk's state and files. Exit code 1 if the directory does not
/// hold the chunk.
pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let manager = open_existing(&args.dir.manager)?;
    let statuses = manager.statuses();
    let id = args
        .chunk
        .resolve("chunk", statuses.iter().map(|s| s.chunk.id()))?;
    let view = id
        .and_then(|id| manager.status(&id))
        .map(|status| ChunkView::of_status(&manager, &status, true));
    let data_dir = manager.config().data_dir.clone();
    manager.shutdown_blocking();

    let Some(view) = view else {
        print_err(format_args!(
            "chunk {} is not in the data directory {}",
            args.chunk,
            data_dir.display()
        ));
        return Ok(ExitCode::from(1));
    };
    show_one(&view, args.dir.json)
}

/// Prints one chunk: its JSON view, or its description.
fn show_one(view: &ChunkView, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        print_json(view)?;
    } else {
        let mut out = String::new();
        view.describe(&mut out);
        print(&out);
    }
    Ok(ExitCode::SUCCESS)
}

/// `chunk-worker find`: the ready chunk that holds a block, as a query would find it. Exit code
/// 1 if no ready chunk of the dataset holds it.
pub fn find(args: &FindArgs) -> anyhow::Result<ExitCode> {
    let manager = open_existing(&args.dir.manager)?;
    let statuses = manager.statuses();
    let dataset = args
        .dataset
        .resolve("dataset", statuses.iter().map(|s| s.chunk.dataset_id()))?;
    let view = dataset
        .and_then(|dataset| manager.find_chunk(dataset, args.block))
        .map(|chunk| ChunkView::ready(&chunk, true));
    manager.shutdown_blocking();

    let Some(view) = view else {
        print_err(format_args!(
            "no ready chunk of dataset {} holds block {}",
            args.dataset, args.block
        ));
        return Ok(ExitCode::from(1));
    };
    show_one(&view, args.dir.json)
}

/// `chunk-worker rm`: deletes a chunk and waits until its files are gone, so the deletion is
/// durable when the command returns. Exit code 0 also when the chunk was not there.
pub fn rm(args: &RmArgs) -> anyhow::Result<ExitCode> {
    let manager = open_existing(&args.dir.manager)?;
    let statuses = manager.statuses();
    let Some(id) = args
        .chunk
        .resolve("chunk", statuses.iter().map(|s| s.chunk.id()))?
    else {
        manager.shutdown_blocking();
        bail!(
            "no chunk id in the data directory starts with {}",
            args.chunk
        );
    };
    let existed = manager.status(&id).is_some();
    // Only the size: a ref held across the deletion would keep the files.
    let bytes = manager.get_chunk(&id).map_or(0, |chunk| chunk.size());
    manager.delete_chunk(id);
    manager.wait_idle_blocking();
    let left = manager.status(&id);
    manager.shutdown_blocking();
    if let Some(left) = left {
        let detail = match &left.state {
            ChunkState::Failed { error, .. } => error.to_string(),
            other => other.name().to_string(),
        };
        bail!("chunk {} could not be removed: {detail}", id_to_hex(&id));
    }

    if args.dir.json {
        print_json(&RmView {
            id: id_to_hex(&id),
            existed,
            bytes_freed: bytes,
        })?;
    } else if existed {
        print(format_args!(
            "deleted chunk {} ({} freed)\n",
            id_to_hex(&id),
            Bytes(bytes)
        ));
    } else {
        print(format_args!(
            "chunk {} was not in the data directory; nothing to delete\n",
            id_to_hex(&id)
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `chunk-worker verify`: re-reads every ready chunk's files and compares them with its
/// manifest. Exit code 1 if a chunk does not match or a directory is not a valid chunk.
pub fn verify(args: &DirArgs) -> anyhow::Result<ExitCode> {
    let manager = open_existing(&args.manager)?;
    let ready: Vec<ChunkId> = manager.list_chunks();
    let bytes = ready
        .iter()
        .filter_map(|id| manager.get_chunk(id))
        .map(|chunk| chunk.size())
        .sum();
    let bad: Vec<BadChunkView> = manager
        .verify()
        .into_iter()
        .map(|(id, error)| BadChunkView {
            id: id_to_hex(&id),
            error: error.to_string(),
        })
        .collect();
    let view = VerifyView {
        checked: ready.len(),
        bytes,
        bad,
        unusable: unusable(&manager),
    };
    manager.shutdown_blocking();

    if args.json {
        print_json(&view)?;
    } else {
        let mut out = String::new();
        line(
            &mut out,
            format_args!(
                "checked {} ready chunks ({})",
                view.checked,
                Bytes(view.bytes)
            ),
        );
        for bad in &view.bad {
            line(&mut out, format_args!("BAD      {}  {}", bad.id, bad.error));
        }
        for entry in &view.unusable {
            line(
                &mut out,
                format_args!("UNUSABLE {}: {}", entry.path.display(), entry.reason),
            );
        }
        print(&out);
    }
    if !view.bad.is_empty() {
        print_err(format_args!(
            "{} chunks do not match their manifests: delete each with `chunk-worker rm <id>` and \
             download it again",
            view.bad.len()
        ));
    }
    if !view.unusable.is_empty() {
        print_err(format_args!(
            "{} entries are not valid chunks (never served): `chunk-worker gc` removes them",
            view.unusable.len()
        ));
    }
    Ok(if view.bad.is_empty() && view.unusable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `chunk-worker gc`: removes temporary data (opening the directory does) and the directories
/// that are not valid chunks. Exit code 1 if a removal failed.
pub fn gc(args: &DirArgs) -> anyhow::Result<ExitCode> {
    let config = args.manager.resolve()?;
    ensure_exists(&config.data_dir)?;
    // Measured before opening, since opening removes it.
    let temporary_bytes =
        disk_usage(&config.data_dir.join("tmp")) + disk_usage(&config.data_dir.join("trash"));
    let manager = open(config)?;
    let report = manager.startup_report();
    let (temporary_removed, deleted_chunks_removed) =
        (report.cleaned_temporary, report.removed_deleted);
    let candidates = unusable(&manager);
    let failed = manager.remove_unusable();
    manager.shutdown_blocking();

    let failed_paths: HashSet<&Path> = failed
        .iter()
        .filter_map(|error| match error {
            Error::DataDir { path, .. } => Some(path.as_path()),
            _ => None,
        })
        .collect();
    let (unusable_removed, unusable_kept): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .filter(|entry| !failed_paths.contains(entry.path.as_path()))
        .partition(|entry| {
            !entry.path.as_os_str().is_empty() && std::fs::symlink_metadata(&entry.path).is_err()
        });
    let failures: Vec<String> = failed.iter().map(ToString::to_string).collect();
    let temporary_bytes = if temporary_removed > 0 {
        temporary_bytes
    } else {
        0
    };
    let view = GcView {
        temporary_removed,
        temporary_bytes,
        deleted_chunks_removed,
        bytes_freed: temporary_bytes + unusable_removed.iter().map(|e| e.bytes).sum::<u64>(),
        unusable_removed,
        unusable_kept,
        failures,
    };

    if args.json {
        print_json(&view)?;
    } else {
        let mut out = String::new();
        line(
            &mut out,
            format_args!(
                "removed {} temporary entries ({}) left by interrupted downloads and removals",
                view.temporary_removed,
                Bytes(view.temporary_bytes)
            ),
        );
        line(
            &mut out,
            format_args!(
                "removed {} chunks whose deletion was recorded before a stop",
                view.deleted_chunks_removed
            ),
        );
        line(
            &mut out,
            format_args!(
                "removed {} entries that are not valid chunks",
                view.unusable_removed.len()
            ),
        );
        for entry in &view.unusable_removed {
            line(
                &mut out,
                format_args!(
                    "  {} ({}): {}",
                    entry.path.display(),
                    Bytes(entry.bytes),
                    entry.reason
                ),
            );
        }
        for entry in &view.unusable_kept {
            line(
                &mut out,
                format_args!(
                    "kept {}: {} (a chunk in the directory owns its name)",
                    entry.path.display(),
                    entry.reason
                ),
            );
        }
        line(&mut out, format_args!("freed {}", Bytes(view.bytes_freed)));
        print(&out);
    }
    for failure in &view.failures {
        print_err(format_args!("error: {failure}"));
    }
    Ok(if view.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Opens the data directory, adding to a lock error the hint that the daemon's API is the way
/// while it runs. Creates the directory if needed (for `download`).
pub(crate) fn open(config: Config) -> anyhow::Result<ChunkManager> {
    ChunkManager::open(config).map_err(|error| match error {
        Error::Locked { .. } => anyhow!(
            "{error}; while the daemon runs, use its HTTP API instead (GET /chunks, GET \
             /chunks/<id>, DELETE /chunks/<id>, GET /datasets/<id>/blocks/<n>)"
        ),
        other => anyhow::Error::new(other),
    })
}

/// Opens a data directory that must already exist: an inspection never creates one.
fn open_existing(args: &ManagerArgs) -> anyhow::Result<ChunkManager> {
    let config = args.resolve()?;
    ensure_exists(&config.data_dir)?;
    open(config)
}

fn ensure_exists(data_dir: &Path) -> anyhow::Result<()> {
    if !data_dir.exists() {
        bail!(
            "data dir {} does not exist (set it with --data-dir, CHUNK_WORKER_DATA_DIR or \
             --config)",
            data_dir.display()
        );
    }
    Ok(())
}

/// The entries the startup scan found not to be valid chunks, with their sizes.
fn unusable(manager: &ChunkManager) -> Vec<UnusableView> {
    manager
        .startup_report()
        .problems
        .iter()
        .map(|problem| match problem {
            Error::Corrupt { path, reason } => UnusableView {
                path: path.clone(),
                reason: reason.clone(),
                bytes: disk_usage(path),
            },
            other => UnusableView {
                path: PathBuf::new(),
                reason: other.to_string(),
                bytes: 0,
            },
        })
        .collect()
}

/// The bytes of the files under `path` (not following symlinks); best effort, for reports.
fn disk_usage(path: &Path) -> u64 {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !metadata.is_dir() {
        return metadata.len();
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| disk_usage(&entry.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// The aligned table of `ls`.
fn table(views: &[ChunkView], with_state: bool, out: &mut String) {
    if views.is_empty() {
        line(out, "no chunks");
        return;
    }
    let mut headers = vec!["ID", "DATASET", "BLOCKS", "SIZE", "FILES"];
    if with_state {
        headers.push("STATE");
    }
    let right_aligned = [false, false, true, true, true, false];
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|view| {
            let mut row = vec![
                short_hex(&view.id),
                short_hex(&view.dataset_id),
                format!("{}..{}", view.block_range.start, view.block_range.end),
                view.size.map(|s| Bytes(s).to_string()).unwrap_or_default(),
                view.files.len().to_string(),
            ];
            if with_state {
                row.push(view.state.short());
            }
            row
        })
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .chain([headers[column].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |cells: &[String], out: &mut String| {
        let mut text = String::new();
        for (column, cell) in cells.iter().enumerate() {
            let width = widths[column];
            if column > 0 {
                text.push_str("  ");
            }
            if right_aligned[column] {
                let _infallible = write!(text, "{cell:>width$}");
            } else {
                let _infallible = write!(text, "{cell:<width$}");
            }
        }
        line(out, text.trim_end());
    };
    render(
        &headers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        out,
    );
    for row in &rows {
        render(row, out);
    }
    let bytes: u64 = views.iter().filter_map(|view| view.size).sum();
    let datasets: BTreeSet<&str> = views.iter().map(|v| v.dataset_id.as_str()).collect();
    line(
        out,
        format_args!(
            "{} {}, {} {}, {}",
            views.len(),
            plural(views.len(), "chunk", "chunks"),
            datasets.len(),
            plural(datasets.len(), "dataset", "datasets"),
            Bytes(bytes)
        ),
    );
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The table's short form of a hex id: the first 12 characters, as [`ShortId`] prints.
fn short_hex(hex: &str) -> String {
    match id_from_hex(hex) {
        Ok(id) => ShortId(&id).to_string(),
        Err(_) => hex.chars().take(12).collect(),
    }
}

/// Appends one line to a text being built.
fn line(out: &mut String, text: impl fmt::Display) {
    let _infallible = writeln!(out, "{text}");
}

/// Writes to stdout. A closed stdout (`| head`) is not an error, and never a panic.
pub(crate) fn print(text: impl fmt::Display) {
    let mut stdout = std::io::stdout().lock();
    let _reader_gone_is_fine = write!(stdout, "{text}").and_then(|()| stdout.flush());
}

/// Writes one line to stderr, never panicking.
pub(crate) fn print_err(text: impl fmt::Display) {
    let _nowhere_to_report = writeln!(std::io::stderr().lock(), "{text}");
}

/// Prints a value as pretty JSON on stdout.
fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("serialize the output")?;
    print(format_args!("{text}\n"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_full_hex_or_a_long_enough_prefix() {
        let full = id_to_hex(&[0xab; 32]);
        assert_eq!(parse_id_arg(&full), Ok(IdArg::Full([0xab; 32])));
        assert_eq!(
            parse_id_arg(&format!("0x{}", full.to_uppercase())),
            Ok(IdArg::Full([0xab; 32]))
        );
        assert_eq!(parse_id_arg("ABCD"), Ok(IdArg::Prefix("abcd".to_string())));
        for bad in ["", "abc", "xyz1", &"a".repeat(65), &"g".repeat(64), "ab cd"] {
            let error = parse_id_arg(bad).unwrap_err();
            assert!(error.contains("64 hex characters"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn prefixes_resolve_to_one_known_id_or_fail_clearly() {
        let known = [[0xab; 32], [0xac; 32], [0x12; 32]];
        let resolve = |text: &str| parse_id_arg(text).unwrap().resolve("chunk", &known);
        assert_eq!(resolve("abab").unwrap(), Some([0xab; 32]));
        assert_eq!(resolve("ffff").unwrap(), None);
        let unknown = id_to_hex(&[0xff; 32]);
        assert_eq!(
            resolve(&unknown).unwrap(),
            Some([0xff; 32]),
            "full ids stand"
        );
        let known = [[0xab; 32], [0xab; 32], {
            let mut id = [0xab; 32];
            id[31] = 0;
            id
        }];
        let error = parse_id_arg("abab")
            .unwrap()
            .resolve("chunk", &known)
            .unwrap_err();
        assert!(error.to_string().contains("ambiguous"), "{error}");
    }
}
