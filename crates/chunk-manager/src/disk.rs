//! The data directory: layout, manifests, durable renames, the lock and the startup scan.
//!
//! # Layout
//!
//! ```text
//! data_dir/
//!   LOCK                                  the pid of the manager holding the directory's lock
//!   chunks/<dataset hex>/<start>-<end>-<chunk hex>/
//!       <file>...                         the chunk's files, by their names
//!       .manifest.json                    description, sizes and BLAKE3 of every file
//!   tmp/<chunk hex>/                      downloads in flight (same filesystem)
//!   trash/<chunk hex>.<n>/                chunks being removed
//!   deleted/<chunk hex>                   tombstones: deleted while pinned, remove on start
//!   cached/<chunk hex>                    marks: fetched for queries, not assigned (evictable)
//! ```
//!
//! `ls chunks/<dataset>` lists a dataset's chunks by range. File names are validated as single
//! path components and can never start with `.`, so no file can collide with the manifest.
//!
//! # Crash consistency
//!
//! A chunk is committed by renaming its complete, fsynced temporary directory into `chunks/`,
//! then fsyncing the parent: a crash leaves it either absent (its temporary data is removed at
//! the next start) or complete. Removal renames the directory into `trash/` first, so a crash
//! never leaves a half-removed chunk visible. A chunk deleted while refs hold it gets a
//! tombstone first, so it stays deleted across a crash. A chunk fetched for queries (cached,
//! evictable) has a mark in `cached/`, so it stays evictable after a restart; a crash between
//! a commit and its mark leaves the chunk adopted as assigned, which is safe (it is kept).
//! Every rename goes through
//! [`durable_rename`], which includes the fsyncs.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkId, DataChunk, id_from_hex, id_to_hex};
use crate::error::Error;

/// The manifest's file name inside a chunk directory.
pub(crate) const MANIFEST: &str = ".manifest.json";
const LOCK: &str = "LOCK";
const MANIFEST_FORMAT: u32 = 1;

/// The bytes of the filesystem holding `dir` that downloads may use: the free space an
/// unprivileged process may write (`f_bavail * f_frsize`) minus the margin
/// ([`Config::min_free_bytes`](crate::Config::min_free_bytes), at most 5% of the filesystem's
/// size). Reads `statvfs`, a blocking call (cheap: no disk access on local filesystems).
pub(crate) fn usable_free_space(dir: &Path, min_free_bytes: u64) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    Ok(usable_free(
        stat.f_bavail,
        stat.f_blocks,
        stat.f_frsize,
        min_free_bytes,
    ))
}

/// See [`usable_free_space`]: `available` and `blocks` in units of `block_size` bytes.
pub(crate) fn usable_free(available: u64, blocks: u64, block_size: u64, min_free: u64) -> u64 {
    let free = available.saturating_mul(block_size);
    let size = blocks.saturating_mul(block_size);
    free.saturating_sub(min_free.min(size / 20))
}

/// Paths inside the data directory.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) fsync: bool,
    trash_counter: AtomicU64,
}

impl Layout {
    pub(crate) fn new(root: PathBuf, fsync: bool) -> Self {
        Self {
            root,
            fsync,
            trash_counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn chunks_dir(&self) -> PathBuf {
        self.root.join("chunks")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    pub(crate) fn tombstones_dir(&self) -> PathBuf {
        self.root.join("deleted")
    }

    /// Where a chunk lives once committed.
    pub(crate) fn chunk_dir(&self, chunk: &DataChunk) -> PathBuf {
        let range = chunk.block_range();
        self.chunks_dir()
            .join(id_to_hex(chunk.dataset_id()))
            .join(format!(
                "{:010}-{:010}-{}",
                range.start,
                range.end,
                id_to_hex(chunk.id())
            ))
    }

    /// Where a chunk is downloaded before it is committed.
    pub(crate) fn download_dir(&self, id: &ChunkId) -> PathBuf {
        self.tmp_dir().join(id_to_hex(id))
    }

    pub(crate) fn tombstone(&self, id: &ChunkId) -> PathBuf {
        self.tombstones_dir().join(id_to_hex(id))
    }

    pub(crate) fn cached_marks_dir(&self) -> PathBuf {
        self.root.join("cached")
    }

    pub(crate) fn cached_mark(&self, id: &ChunkId) -> PathBuf {
        self.cached_marks_dir().join(id_to_hex(id))
    }

    fn fresh_trash_path(&self, name: &str) -> PathBuf {
        let n = self.trash_counter.fetch_add(1, Ordering::Relaxed);
        self.trash_dir()
            .join(format!("{name}.{}.{n}", std::process::id()))
    }

    /// Fsyncs a directory, so renames and creations inside it are durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fsync {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Renames `from` to `to` and makes the rename durable: the one way anything moves.
    pub(crate) fn durable_rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)?;
        let to_parent = to.parent().unwrap_or(Path::new("."));
        self.sync_dir(to_parent)?;
        let from_parent = from.parent().unwrap_or(Path::new("."));
        if from_parent != to_parent {
            self.sync_dir(from_parent)?;
        }
        Ok(())
    }

    /// Writes a small file and fsyncs it (the directory is synced by the caller's rename).
    pub(crate) fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(bytes)?;
        if self.fsync {
            file.sync_all()?;
        }
        Ok(())
    }

    /// Moves a directory into the trash (the durable step), then deletes it.
    pub(crate) fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let trashed = self.fresh_trash_path(&name);
        self.durable_rename(dir, &trashed)?;
        fs::remove_dir_all(&trashed)
    }

    /// Commits a fully written, fsynced download directory to its place in `chunks/`.
    pub(crate) fn commit(&self, download: &Path, target: &Path) -> io::Result<()> {
        self.sync_dir(download)?;
        let dataset_dir = target.parent().unwrap_or(Path::new("."));
        if !dataset_dir.exists() {
            fs::create_dir_all(dataset_dir)?;
            self.sync_dir(&self.chunks_dir())?;
        }
        if target.exists() {
            // A corrupt leftover under the same name, reported at startup: never served, now
            // replaced by a verified copy.
            self.remove_dir(target)?;
        }
        self.durable_rename(download, target)
    }

    pub(crate) fn write_tombstone(&self, id: &ChunkId) -> io::Result<()> {
        let path = self.tombstone(id);
        self.write_synced(&path, b"")?;
        self.sync_dir(&self.tombstones_dir())
    }

    pub(crate) fn remove_tombstone(&self, id: &ChunkId) -> io::Result<()> {
        self.remove_record(&self.tombstones_dir(), &self.tombstone(id))
    }

    /// Records (or, with `cached` false, removes the record) that the chunk is cached: fetched
    /// for queries, not assigned, so evictable after a restart too.
    pub(crate) fn set_cached_mark(&self, id: &ChunkId, cached: bool) -> io::Result<()> {
        if cached {
            self.write_synced(&self.cached_mark(id), b"")?;
            self.sync_dir(&self.cached_marks_dir())
        } else {
            self.remove_record(&self.cached_marks_dir(), &self.cached_mark(id))
        }
    }

    /// Removes a small record file (a tombstone, a mark) durably; a missing one is fine.
    fn remove_record(&self, dir: &Path, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Ok(()) => self.sync_dir(dir),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// What a committed chunk's directory says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: u32,
    pub(crate) chunk: DataChunk,
    pub(crate) files: std::collections::BTreeMap<String, FileEntry>,
}

/// One file of a committed chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    pub(crate) size: u64,
    pub(crate) blake3: String,
    /// The declared checksum, as computed and matched during the download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) checksum: Option<crate::Checksum>,
    /// The source's ETag of the version downloaded, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) etag: Option<String>,
}

impl Manifest {
    pub(crate) fn new(
        chunk: DataChunk,
        files: std::collections::BTreeMap<String, FileEntry>,
    ) -> Self {
        Self {
            format: MANIFEST_FORMAT,
            chunk,
            files,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.files.values().map(|file| file.size).sum()
    }
}

/// The exclusive OS lock on a data directory, released when dropped (or when the process
/// dies, so a crash never blocks the next start).
///
/// The lock is taken on the data directory itself (`flock` on its descriptor), not on a file
/// inside it: an operator who deletes a file cannot let a second manager in. The `LOCK` file
/// only tells who holds the lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    _dir: File,
}

impl DirLock {
    pub(crate) fn acquire(root: &Path) -> Result<Self, Error> {
        let dir = File::open(root).map_err(|source| Error::DataDir {
            path: root.to_path_buf(),
            action: "open the directory to lock it",
            source,
        })?;
        let path = root.join(LOCK);
        match dir.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path)
                    .ok()
                    .map(|text| text.trim().to_string());
                return Err(Error::Locked {
                    path: root.to_path_buf(),
                    lock: path,
                    holder: holder.filter(|text| !text.is_empty()),
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(Error::DataDir {
                    path: root.to_path_buf(),
                    action: "lock the directory",
                    source,
                });
            }
        }
        let pid = format!("pid {}\n", std::process::id());
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut file| file.write_all(pid.as_bytes()));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot record the pid in the lock file");
        }
        Ok(Self { _dir: dir })
    }
}

/// A chunk found committed at startup.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) chunk: Arc<DataChunk>,
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    /// Fetched for queries, not assigned: adopted as cached (evictable).
    pub(crate) cached: bool,
}

/// What `open` found in the data directory.
#[derive(Debug, Default)]
pub struct StartupReport {
    /// Committed chunks adopted as ready.
    pub adopted: usize,
    /// Of those, chunks fetched for queries and not assigned (cached, evictable).
    pub adopted_cached: usize,
    /// Their bytes.
    pub adopted_bytes: u64,
    /// Chunks removed because their deletion had been recorded before a stop or crash.
    pub removed_deleted: usize,
    /// Temporary and trash entries cleaned up (interrupted downloads and removals).
    pub cleaned_temporary: usize,
    /// Directories that are not valid chunks: never served; left for an operator to inspect.
    pub problems: Vec<Error>,
}

/// Prepares the data directory: creates the layout, cleans temporary data, applies tombstones
/// and finds the committed chunks.
pub(crate) fn scan(layout: &Layout) -> Result<(Vec<Found>, StartupReport), Error> {
    let data_dir_error = |path: &Path, action: &'static str| {
        let path = path.to_path_buf();
        move |source| Error::DataDir {
            path,
            action,
            source,
        }
    };
    for dir in [
        layout.chunks_dir(),
        layout.tmp_dir(),
        layout.trash_dir(),
        layout.tombstones_dir(),
        layout.cached_marks_dir(),
    ] {
        fs::create_dir_all(&dir).map_err(data_dir_error(&dir, "create"))?;
    }
    let mut report = StartupReport::default();
    for dir in [layout.tmp_dir(), layout.trash_dir()] {
        for entry in fs::read_dir(&dir).map_err(data_dir_error(&dir, "list"))? {
            let path = entry.map_err(data_dir_error(&dir, "list"))?.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(data_dir_error(&path, "remove temporary data"))?;
            report.cleaned_temporary += 1;
        }
    }
    let tombstones = read_records(&layout.tombstones_dir(), "tombstone", &mut report)?;
    let mut cached_marks = read_records(&layout.cached_marks_dir(), "cached mark", &mut report)?;

    // List first (cheap), check the chunk directories on several threads (each check reads a
    // manifest and stats the files: on a cold cache disk latency dominates, and parallel
    // reads overlap it), then adopt in listing order.
    let mut listed = Vec::new();
    let chunks_dir = layout.chunks_dir();
    for dataset_entry in fs::read_dir(&chunks_dir).map_err(data_dir_error(&chunks_dir, "list"))? {
        let dataset_path = dataset_entry
            .map_err(data_dir_error(&chunks_dir, "list"))?
            .path();
        let dataset_name = dataset_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if id_from_hex(dataset_name).is_err() || !dataset_path.is_dir() {
            listed.push(Listed::Problem(Error::Corrupt {
                path: dataset_path,
                reason: "unknown entry: not a dataset directory".to_string(),
            }));
            continue;
        }
        for chunk_entry in
            fs::read_dir(&dataset_path).map_err(data_dir_error(&dataset_path, "list"))?
        {
            let path = chunk_entry
                .map_err(data_dir_error(&dataset_path, "list"))?
                .path();
            listed.push(Listed::Chunk(path));
        }
    }
    let paths: Vec<&Path> = listed
        .iter()
        .filter_map(|listed| match listed {
            Listed::Chunk(path) => Some(path.as_path()),
            Listed::Problem(_) => None,
        })
        .collect();
    let mut checks = check_chunk_dirs(layout, &paths).into_iter();

    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for listed in listed {
        let path = match listed {
            Listed::Problem(problem) => {
                report.problems.push(problem);
                continue;
            }
            Listed::Chunk(path) => path,
        };
        let check = checks
            .next()
            .unwrap_or_else(|| Err("the directory was not checked".to_string()));
        match check {
            Ok(manifest) => {
                let id = *manifest.chunk.id();
                if tombstones.contains(&id) {
                    layout
                        .remove_dir(&path)
                        .map_err(data_dir_error(&path, "remove a deleted chunk"))?;
                    report.removed_deleted += 1;
                    continue;
                }
                if !seen.insert(id) {
                    report.problems.push(Error::Corrupt {
                        path,
                        reason: "a second directory for the same chunk id".to_string(),
                    });
                    continue;
                }
                let size = manifest.size();
                let cached = cached_marks.remove(&id);
                report.adopted += 1;
                report.adopted_cached += usize::from(cached);
                report.adopted_bytes = report.adopted_bytes.saturating_add(size);
                found.push(Found {
                    chunk: Arc::new(manifest.chunk),
                    path,
                    size,
                    cached,
                });
            }
            Err(reason) => report.problems.push(Error::Corrupt { path, reason }),
        }
    }
    for id in tombstones {
        layout
            .remove_tombstone(&id)
            .map_err(data_dir_error(&layout.tombstone(&id), "remove a tombstone"))?;
    }
    // Marks of chunks that are not on disk (removed, or a crash before the commit).
    for id in cached_marks {
        layout.set_cached_mark(&id, false).map_err(data_dir_error(
            &layout.cached_mark(&id),
            "remove a cached mark",
        ))?;
    }
    Ok((found, report))
}

/// The chunk ids recorded by the files of `dir` (tombstones, marks); other names are reported.
fn read_records(
    dir: &Path,
    what: &str,
    report: &mut StartupReport,
) -> Result<HashSet<ChunkId>, Error> {
    let listing = |source| Error::DataDir {
        path: dir.to_path_buf(),
        action: "list",
        source,
    };
    let mut ids = HashSet::new();
    for entry in fs::read_dir(dir).map_err(listing)? {
        let entry = entry.map_err(listing)?;
        match entry.file_name().to_str().map(id_from_hex) {
            Some(Ok(id)) => {
                ids.insert(id);
            }
            _ => report.problems.push(Error::Corrupt {
                path: entry.path(),
                reason: format!("not a {what} (expected a 64-character hex chunk id)"),
            }),
        }
    }
    Ok(ids)
}

/// An entry of `chunks/` found at startup, in listing order.
enum Listed {
    Problem(Error),
    Chunk(PathBuf),
}

/// Threads that check chunk directories at startup. More than the cores: on a cold cache they
/// mostly wait for the disk, which serves parallel reads faster than one at a time.
const SCAN_THREADS: usize = 8;

/// [`check_chunk_dir`] for every path, on up to [`SCAN_THREADS`] threads (this one included;
/// whatever no helper thread checked, this one does). Results are in the paths' order.
fn check_chunk_dirs(layout: &Layout, paths: &[&Path]) -> Vec<Result<Manifest, String>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut checked = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = paths.get(index) else {
                return checked;
            };
            checked.push((index, check_chunk_dir(layout, path)));
        }
    };
    let helpers = SCAN_THREADS.min(paths.len() / 64).saturating_sub(1);
    let mut results: Vec<Option<Result<Manifest, String>>> = paths.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let spawned: Vec<_> = (0..helpers)
            .map_while(|_| {
                std::thread::Builder::new()
                    .name("chunk-manager-scan".to_string())
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        let mut checked = work();
        for helper in spawned {
            // A helper that panicked leaves its paths unchecked: checked again below.
            checked.extend(helper.join().unwrap_or_default());
        }
        for (index, result) in checked {
            results[index] = Some(result);
        }
    });
    results
        .into_iter()
        .zip(paths)
        .map(|(result, path)| result.unwrap_or_else(|| check_chunk_dir(layout, path)))
        .collect()
}

/// Checks that a chunk directory is named after its manifest and holds every file at its size.
/// Contents are not hashed here (that is `verify`), so startup stays fast.
fn check_chunk_dir(layout: &Layout, path: &Path) -> Result<Manifest, String> {
    if !path.is_dir() {
        return Err("unknown entry: not a chunk directory".to_string());
    }
    let text = fs::read(path.join(MANIFEST))
        .map_err(|error| format!("cannot read the manifest: {error}"))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|error| format!("unreadable manifest: {error}"))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(format!("unknown manifest format {}", manifest.format));
    }
    manifest
        .chunk
        .validate()
        .map_err(|error| format!("invalid chunk description in the manifest: {error}"))?;
    if layout.chunk_dir(&manifest.chunk) != path {
        return Err("the directory's name does not match its manifest".to_string());
    }
    let names: Vec<&String> = manifest.chunk.files().keys().collect();
    if names != manifest.files.keys().collect::<Vec<_>>() {
        return Err("the manifest's files do not match the chunk's description".to_string());
    }
    for (name, file) in &manifest.files {
        let actual = fs::metadata(path.join(name))
            .map_err(|error| format!("file {name:?}: {error}"))?
            .len();
        if actual != file.size {
            return Err(format!(
                "file {name:?} has {actual} bytes, the manifest says {}",
                file.size
            ));
        }
    }
    Ok(manifest)
}

/// Re-reads every file of a committed chunk and compares sizes and BLAKE3 hashes with its
/// manifest.
pub(crate) fn verify_chunk_dir(path: &Path) -> Result<(), String> {
    let text = fs::read(path.join(MANIFEST))
        .map_err(|error| format!("cannot read the manifest: {error}"))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|error| format!("unreadable manifest: {error}"))?;
    for (name, file) in &manifest.files {
        let mut hasher = blake3::Hasher::new();
        let size = hasher
            .update_reader(
                File::open(path.join(name)).map_err(|error| format!("file {name:?}: {error}"))?,
            )
            .map_err(|error| format!("file {name:?}: {error}"))?
            .count();
        let hash = hasher.finalize().to_hex();
        if size != file.size || hash.as_str() != file.blake3 {
            return Err(format!("file {name:?} does not match its manifest"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue10_free_space_keeps_a_margin_capped_at_a_twentieth_of_the_disk() {
        const MIB: u64 = 1 << 20;
        // A large disk keeps the whole margin.
        assert_eq!(
            usable_free(100_000, 10_000_000, 4096, 256 * MIB),
            100_000 * 4096 - 256 * MIB
        );
        // A 60 MiB disk keeps 3 MiB, not 256.
        assert_eq!(usable_free(60 * 256, 60 * 256, 4096, 256 * MIB), 57 * MIB);
        // Less free than the margin: nothing usable, no wrap.
        assert_eq!(usable_free(1, 1_000_000, 4096, 256 * MIB), 0);
        assert_eq!(usable_free(u64::MAX, u64::MAX, 4096, 0), u64::MAX);
    }

    #[test]
    fn issue10_free_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let free = usable_free_space(dir.path(), 0).unwrap();
        assert!(free > 0);
        assert!(usable_free_space(&dir.path().join("missing"), 0).is_err());
    }

    #[test]
    fn durable_rename_moves_across_directories() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf(), true);
        fs::create_dir_all(dir.path().join("a/x")).unwrap();
        fs::create_dir_all(dir.path().join("b")).unwrap();
        layout
            .durable_rename(&dir.path().join("a/x"), &dir.path().join("b/y"))
            .unwrap();
        assert!(dir.path().join("b/y").is_dir());
        assert!(!dir.path().join("a/x").exists());
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let error = DirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(error, Error::Locked { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains(&dir.path().display().to_string())
        );
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
