//! The scrub: re-reads committed chunks in the background and compares them with their
//! manifests, so that a file damaged on disk (a flipped bit, a same-size overwrite) is never
//! served for long.
//!
//! # Overview
//!
//! [`run`] walks the visible chunks in passes. For each chunk it holds the resident (so the
//! files cannot be removed under it), hashes every file with BLAKE3 at no more than
//! [`Config::scrub_bytes_per_second`](crate::Config::scrub_bytes_per_second), and compares size and hash with the manifest written at
//! commit. A mismatch quarantines the chunk through [`Table::quarantine`]: hidden at once,
//! removed once no ref holds it, downloaded again if it is still wanted. After a pass it waits
//! [`Config::scrub_interval`](crate::Config::scrub_interval) before the next.
//!
//! # Concurrency
//!
//! Reading happens on a blocking thread, one chunk at a time. A chunk hidden meanwhile
//! (deleted, evicted) is abandoned at the next block, so the scrub never delays a removal for
//! more than one block's read.
//!
//! # Cancellation
//!
//! Shutdown cancels the token; the blocking read checks it between blocks.
//!
//! [`Table::quarantine`]: crate::table::Table::quarantine

use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::counter;
use tokio_util::sync::CancellationToken;

use crate::chunk::ShortId;
use crate::disk::{MANIFEST, Manifest};
use crate::event::Event;
use crate::handle::Resident;
use crate::meter::names;
use crate::reconciler::Shared;

/// Bytes read per step: the unit of rate limiting and of cancellation.
const BLOCK: usize = 1 << 20;

/// How checking one chunk ended.
#[derive(Debug, PartialEq, Eq)]
enum Checked {
    Intact,
    Damaged(String),
    /// Hidden (deleted or evicted) or shut down while being read: not judged.
    Abandoned,
}

/// The scrub loop. Returns when `shutdown` is cancelled. Does nothing if the rate is zero.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let rate = shared.config.scrub_bytes_per_second;
    if rate == 0 {
        return;
    }
    loop {
        let ids = shared.index.load().visible_ids();
        for id in ids {
            if shutdown.is_cancelled() {
                return;
            }
            let Some(resident) = shared.table().shown(&id) else {
                continue;
            };
            let reading = resident.clone();
            let cancel = shutdown.clone();
            let checked = tokio::task::spawn_blocking(move || check(&reading, rate, &cancel)).await;
            match checked {
                Ok(Checked::Intact) => counter!(names::SCRUB_CHUNKS).increment(1),
                Ok(Checked::Abandoned) => {}
                Ok(Checked::Damaged(reason)) => {
                    counter!(names::SCRUB_CHUNKS).increment(1);
                    counter!(names::SCRUB_MISMATCHES).increment(1);
                    tracing::warn!(
                        chunk = %ShortId(&id),
                        path = %resident.path.display(),
                        %reason,
                        "scrub: chunk does not match its manifest; hidden, downloaded again if still wanted"
                    );
                    let quarantined = shared.table().quarantine(id, resident.generation);
                    if quarantined {
                        shared.emit(Event::Corrupt {
                            chunk: id,
                            reason: reason.into(),
                        });
                        shared.changed();
                    }
                }
                Err(join_error) => {
                    tracing::error!(chunk = %ShortId(&id), error = %join_error, "scrub: check panicked");
                }
            }
            drop(resident);
        }
        counter!(names::SCRUB_PASSES).increment(1);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(shared.config.scrub_interval) => {}
        }
    }
}

/// Hashes every file of the chunk at no more than `rate` bytes per second and compares them
/// with the manifest.
fn check(resident: &Resident, rate: u64, cancel: &CancellationToken) -> Checked {
    let text = match std::fs::read(resident.path.join(MANIFEST)) {
        Ok(text) => text,
        Err(error) => return Checked::Damaged(format!("cannot read the manifest: {error}")),
    };
    let manifest: Manifest = match serde_json::from_slice(&text) {
        Ok(manifest) => manifest,
        Err(error) => return Checked::Damaged(format!("unreadable manifest: {error}")),
    };
    let mut pace = Pace::new(rate);
    let mut buffer = vec![0; BLOCK];
    for (name, expected) in &manifest.files {
        let path = resident.path.join(name);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) => return Checked::Damaged(format!("file {name:?}: {error}")),
        };
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        loop {
            if cancel.is_cancelled() || resident.is_hidden() {
                return Checked::Abandoned;
            }
            let read = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Checked::Damaged(format!("file {name:?}: {error}")),
            };
            hasher.update(&buffer[..read]);
            size = size.saturating_add(read as u64);
            counter!(names::SCRUB_BYTES).increment(read as u64);
            pace.after(read as u64, cancel);
        }
        if size != expected.size {
            return Checked::Damaged(format!(
                "file {name:?} has {size} bytes, the manifest says {}",
                expected.size
            ));
        }
        if hasher.finalize().to_hex().as_str() != expected.blake3 {
            return Checked::Damaged(format!(
                "file {name:?}: its BLAKE3 hash differs from the manifest's"
            ));
        }
    }
    Checked::Intact
}

/// Keeps reading at no more than a rate: after each block, sleeps until the bytes read so far
/// are due.
struct Pace {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Pace {
    fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            start: Instant::now(),
            bytes: 0,
        }
    }

    fn after(&mut self, bytes: u64, cancel: &CancellationToken) {
        self.bytes = self.bytes.saturating_add(bytes);
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed && !cancel.is_cancelled() {
            // Short sleeps (one block at the configured rate), so cancellation stays prompt.
            std::thread::sleep((due - elapsed).min(Duration::from_millis(250)));
        }
    }
}

/// Whether a chunk directory matches its manifest, for tests of the scrub's check itself.
#[cfg(test)]
fn check_dir(path: &std::path::Path) -> Checked {
    let resident = Resident::new(
        Arc::new(crate::DataChunk::new(
            [0; 32],
            [0; 32],
            0..1,
            [("f".to_string(), "http://127.0.0.1/f".to_string())].into(),
        )),
        path.to_path_buf(),
        0,
        0,
        crate::handle::Releases::channel().0,
    );
    check(&resident, u64::MAX, &CancellationToken::new())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use std::path::Path;

    use super::*;
    use crate::disk::FileEntry;

    fn write_chunk(dir: &Path, content: &[u8]) {
        let manifest = Manifest::new(
            crate::DataChunk::new(
                [1; 32],
                [2; 32],
                0..10,
                [("f".to_string(), "http://127.0.0.1/f".to_string())].into(),
            ),
            BTreeMap::from([(
                "f".to_string(),
                FileEntry {
                    size: content.len() as u64,
                    blake3: blake3::hash(content).to_hex().to_string(),
                    checksum: None,
                    etag: None,
                },
            )]),
        );
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&manifest).unwrap()).unwrap();
    }

    #[test]
    fn a_flipped_byte_of_the_same_size_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let content = vec![7u8; 3 * BLOCK + 5];
        write_chunk(dir.path(), &content);
        std::fs::write(dir.path().join("f"), &content).unwrap();
        assert_eq!(check_dir(dir.path()), Checked::Intact);

        let mut flipped = content.clone();
        flipped[BLOCK + 1] ^= 1;
        std::fs::write(dir.path().join("f"), &flipped).unwrap();
        assert!(matches!(check_dir(dir.path()), Checked::Damaged(_)));

        std::fs::write(dir.path().join("f"), &content[1..]).unwrap();
        assert!(
            matches!(check_dir(dir.path()), Checked::Damaged(reason) if reason.contains("bytes"))
        );
    }
}
