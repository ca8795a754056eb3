//! The public error type.
//!
//! One `#[non_exhaustive]` enum whose variants are the cases a caller can act on. Every
//! variant names what it is about: the chunk, the file, the URL or the path.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::chunk::{ChunkId, InvalidChunk, ShortId};

/// Everything that can go wrong in the chunk manager.
///
/// Failures of one chunk are reported in its [status](crate::ChunkStatus), as an
/// [event](crate::Event) and in the log; they never affect other chunks. Errors that prevent
/// the manager from running at all are returned by [`ChunkManager::open`](crate::ChunkManager::open).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The chunk description is invalid; nothing was downloaded.
    #[error("chunk {}: {source}", ShortId(chunk))]
    InvalidChunk {
        /// The chunk.
        chunk: ChunkId,
        /// What is wrong with the description.
        #[source]
        source: InvalidChunk,
    },

    /// The id was sent again with a different description while the first one is still in use.
    #[error(
        "chunk {}: sent again with a different description; the first one stays in effect",
        ShortId(chunk)
    )]
    Conflict {
        /// The chunk.
        chunk: ChunkId,
    },

    /// The data directory cannot be used.
    #[error("data dir {}: cannot {action}: {source}", path.display())]
    DataDir {
        /// The path that failed.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another live chunk manager holds the data directory's lock.
    #[error(
        "data dir {} is in use by another chunk manager (lock {} is held{})",
        path.display(),
        lock.display(),
        holder.as_deref().map(|h| format!(" by {h}")).unwrap_or_default()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The file that names the holder (the lock itself is on the directory).
        lock: PathBuf,
        /// What the holder wrote into the lock file (its pid), if readable.
        holder: Option<String>,
    },

    /// The origin answered with an HTTP status other than success.
    #[error("chunk {} file {file:?}: {url} answered HTTP {status}", ShortId(chunk))]
    HttpStatus {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The URL requested, without its query or credentials (see [`redact_url`](crate::redact_url)).
        url: String,
        /// The status code.
        status: u16,
    },

    /// A network failure: connection refused or reset, a broken body, a protocol error, or
    /// an object store failure that may pass.
    #[error("chunk {} file {file:?}: {url}: {message}", ShortId(chunk))]
    Network {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The URL requested, without its query or credentials (see [`redact_url`](crate::redact_url)).
        url: String,
        /// What failed, in short; the details are in the source.
        message: String,
        /// The underlying error (free of URLs with secrets).
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// The origin sent nothing for longer than the read timeout.
    #[error(
        "chunk {} file {file:?}: {url}: no data for {timeout:?}",
        ShortId(chunk)
    )]
    Timeout {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The URL requested, without its query or credentials (see [`redact_url`](crate::redact_url)).
        url: String,
        /// The idle time allowed.
        timeout: Duration,
    },

    /// The body was shorter or longer than announced, or the file's size changed between
    /// requests.
    #[error(
        "chunk {} file {file:?}: {url}: expected {expected} bytes, got {actual}",
        ShortId(chunk)
    )]
    SizeMismatch {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The URL requested, without its query or credentials (see [`redact_url`](crate::redact_url)).
        url: String,
        /// The size announced.
        expected: u64,
        /// The size received (so far, for a short body).
        actual: u64,
    },

    /// The origin's answer cannot be used as a file: no size, a redirect, a bad range reply.
    #[error("chunk {} file {file:?}: {url}: {reason}", ShortId(chunk))]
    BadResponse {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The URL requested, without its query or credentials (see [`redact_url`](crate::redact_url)).
        url: String,
        /// What is wrong.
        reason: String,
    },

    /// A filesystem operation on a chunk's files failed (a full disk, permissions, ...).
    #[error("chunk {}: cannot {action} {}: {source}", ShortId(chunk), path.display())]
    Io {
        /// The chunk.
        chunk: ChunkId,
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The sizes the sources state for a chunk's files add up to more than a `u64` holds:
    /// a broken or hostile origin.
    #[error(
        "chunk {}: the sizes of its files overflow a 64-bit count",
        ShortId(chunk)
    )]
    SizeOverflow {
        /// The chunk.
        chunk: ChunkId,
    },

    /// The chunk is larger than the whole disk budget, so it can never be downloaded.
    #[error(
        "chunk {} needs {needed} bytes but the whole disk budget is {budget} bytes",
        ShortId(chunk)
    )]
    TooLargeForBudget {
        /// The chunk.
        chunk: ChunkId,
        /// The chunk's size.
        needed: u64,
        /// The configured budget.
        budget: u64,
    },

    /// A chunk directory on disk does not match its manifest, or is not a chunk at all. It is
    /// never served.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The directory.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },

    /// The chunk is not wanted (it was deleted, or never requested).
    #[error("chunk {} is not wanted", ShortId(chunk))]
    NotWanted {
        /// The chunk.
        chunk: ChunkId,
    },

    /// The chunk was requested again (downloaded, assigned or fetched) while its deletion was
    /// awaited: the later call won.
    #[error(
        "chunk {} was requested again before its deletion was recorded",
        ShortId(chunk)
    )]
    Superseded {
        /// The chunk.
        chunk: ChunkId,
    },

    /// The manager has shut down.
    #[error("the chunk manager has shut down")]
    Shutdown,

    /// A bug: the manager's background loop failed (panicked), so the manager stopped. Waiters
    /// get this error instead of waiting forever; [`ChunkManager::health`](crate::ChunkManager::health)
    /// reports it.
    #[error("the chunk manager stopped after an internal failure: {message}")]
    Crashed {
        /// What failed.
        message: String,
    },

    /// A bug: a job of the manager panicked. The chunk is reported failed instead of hanging.
    #[error("chunk {}: internal error: {message}", ShortId(chunk))]
    Internal {
        /// The chunk.
        chunk: ChunkId,
        /// The panic's message.
        message: String,
    },

    /// The manager's background thread could not be started.
    #[error("cannot start the background thread: {source}")]
    Runtime {
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A file's content does not match the checksum the chunk description declares, or the
    /// MD5 its S3 ETag states.
    #[error(
        "chunk {} file {file:?}: {url}: {algorithm} is {actual}, expected {expected}",
        ShortId(chunk)
    )]
    ChecksumMismatch {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The URL requested, without its query or credentials (see [`redact_url`](crate::redact_url)).
        url: String,
        /// The algorithm.
        algorithm: crate::ChecksumAlgorithm,
        /// The declared or stated value, hex.
        expected: Box<str>,
        /// The value of the bytes received, hex.
        actual: Box<str>,
    },

    /// The object changed while it was being downloaded (its ETag or size differs), so the
    /// parts already received are not stitched to the new version's.
    #[error(
        "chunk {} file {file:?}: {url} changed during the download: {reason}",
        ShortId(chunk)
    )]
    SourceChanged {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The URL requested, without its query or credentials (see [`redact_url`](crate::redact_url)).
        url: String,
        /// What changed.
        reason: String,
    },

    /// The source refused the credentials, or they may not read the object.
    #[error(
        "chunk {} file {file:?}: {url}: access denied (check the credentials): {message}",
        ShortId(chunk)
    )]
    AccessDenied {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The URL requested, without its query or credentials (see [`redact_url`](crate::redact_url)).
        url: String,
        /// What the source said, in short; the details are in the source.
        message: String,
        /// The underlying error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// The source of a URL cannot be set up (an object store's configuration is incomplete or
    /// invalid).
    #[error("chunk {} file {file:?}: cannot use {url}: {message}", ShortId(chunk))]
    SourceConfig {
        /// The chunk.
        chunk: ChunkId,
        /// The file name.
        file: String,
        /// The URL, without its query or credentials (see [`redact_url`](crate::redact_url)).
        url: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// Whether trying again later may succeed: network faults, timeouts, short bodies,
    /// checksum mismatches (the file is downloaded again from its first byte), HTTP 408, 429
    /// and 5xx, running out of file descriptors (`EMFILE`, `ENFILE`: they free up) and a full
    /// filesystem (see [`Error::is_disk_full`]). Client errors (404, 403, ...), refused
    /// credentials, other filesystem errors and bad input are permanent.
    ///
    /// ```
    /// use chunk_manager::Error;
    /// let not_found = Error::HttpStatus { chunk: [0; 32], file: "f".into(), url: "u".into(), status: 404 };
    /// assert!(!not_found.is_retryable());
    /// let unavailable = Error::HttpStatus { chunk: [0; 32], file: "f".into(), url: "u".into(), status: 503 };
    /// assert!(unavailable.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::HttpStatus { status, .. } => {
                *status == 408 || *status == 429 || (500..600).contains(status)
            }
            Error::Network { .. }
            | Error::Timeout { .. }
            | Error::SizeMismatch { .. }
            | Error::ChecksumMismatch { .. } => true,
            Error::Io { source, .. } => is_out_of_descriptors(source) || is_disk_full(source),
            _ => false,
        }
    }

    /// Whether the filesystem is full (`ENOSPC`) or the quota used up (`EDQUOT`). A download
    /// that meets it is not failed and not retried as an attempt: it releases its reservation
    /// and waits for free space like a chunk over the budget, then starts again.
    ///
    /// ```
    /// use chunk_manager::Error;
    /// # #[cfg(target_os = "linux")] {
    /// let full = Error::Io {
    ///     chunk: [0; 32],
    ///     action: "write",
    ///     path: "/data/tmp/x/f".into(),
    ///     source: std::io::Error::from_raw_os_error(28),
    /// };
    /// assert!(full.is_disk_full());
    /// # }
    /// ```
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if is_disk_full(source))
    }

    /// The error's message followed by its causes, `a: b: c` (a cause whose text is already
    /// in the message is skipped): for logs, where the causes help an operator.
    pub fn with_causes(&self) -> String {
        let mut message = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            let text = error.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = error.source();
        }
        message
    }

    /// The chunk the error is about, if it is about one.
    pub fn chunk(&self) -> Option<&ChunkId> {
        match self {
            Error::InvalidChunk { chunk, .. }
            | Error::Conflict { chunk }
            | Error::HttpStatus { chunk, .. }
            | Error::Network { chunk, .. }
            | Error::Timeout { chunk, .. }
            | Error::SizeMismatch { chunk, .. }
            | Error::BadResponse { chunk, .. }
            | Error::Io { chunk, .. }
            | Error::TooLargeForBudget { chunk, .. }
            | Error::SizeOverflow { chunk }
            | Error::NotWanted { chunk }
            | Error::Superseded { chunk }
            | Error::Internal { chunk, .. }
            | Error::ChecksumMismatch { chunk, .. }
            | Error::SourceChanged { chunk, .. }
            | Error::AccessDenied { chunk, .. }
            | Error::SourceConfig { chunk, .. } => Some(chunk),
            Error::DataDir { .. }
            | Error::Locked { .. }
            | Error::Corrupt { .. }
            | Error::Shutdown
            | Error::Crashed { .. }
            | Error::Runtime { .. } => None,
        }
    }

    /// A short, stable name for the kind of error, for metrics labels and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidChunk { .. } => "invalid_chunk",
            Error::Conflict { .. } => "conflict",
            Error::DataDir { .. } => "data_dir",
            Error::Locked { .. } => "locked",
            Error::HttpStatus { .. } => "http_status",
            Error::Network { .. } => "network",
            Error::Timeout { .. } => "timeout",
            Error::SizeMismatch { .. } => "size_mismatch",
            Error::BadResponse { .. } => "bad_response",
            Error::Io { .. } => "io",
            Error::TooLargeForBudget { .. } => "too_large_for_budget",
            Error::SizeOverflow { .. } => "size_overflow",
            Error::Corrupt { .. } => "corrupt",
            Error::NotWanted { .. } => "not_wanted",
            Error::Superseded { .. } => "superseded",
            Error::Shutdown => "shutdown",
            Error::Crashed { .. } => "crashed",
            Error::Internal { .. } => "internal",
            Error::Runtime { .. } => "runtime",
            Error::ChecksumMismatch { .. } => "checksum_mismatch",
            Error::SourceChanged { .. } => "source_changed",
            Error::AccessDenied { .. } => "access_denied",
            Error::SourceConfig { .. } => "source_config",
        }
    }
}

/// `EMFILE` ("Too many open files") or `ENFILE` (the system's table is full): the process or
/// the machine is out of file descriptors for now, which passes as others are closed. The
/// numbers are the same on Linux, the BSDs and macOS.
pub(crate) fn is_out_of_descriptors(error: &io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    cfg!(unix) && matches!(error.raw_os_error(), Some(EMFILE | ENFILE))
}

/// `ENOSPC` (no space left on the device) or `EDQUOT` (the disk quota is used up): room
/// that comes back when files are removed. `EDQUOT` is 122 on Linux, 69 on macOS and the BSDs.
pub(crate) fn is_disk_full(error: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = if cfg!(any(target_os = "linux", target_os = "android")) {
        122
    } else {
        69
    };
    cfg!(unix) && matches!(error.raw_os_error(), Some(ENOSPC | EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(source: io::Error) -> Error {
        Error::Io {
            chunk: [0; 32],
            action: "create",
            path: PathBuf::from("/x"),
            source,
        }
    }

    #[test]
    #[cfg(unix)]
    fn issue10_out_of_file_descriptors_is_retryable() {
        assert!(
            io_error(io::Error::from_raw_os_error(24)).is_retryable(),
            "EMFILE"
        );
        assert!(
            io_error(io::Error::from_raw_os_error(23)).is_retryable(),
            "ENFILE"
        );
        // Other filesystem errors stay permanent.
        assert!(
            !io_error(io::Error::from_raw_os_error(13)).is_retryable(),
            "EACCES"
        );
        assert!(!io_error(io::Error::other("x")).is_retryable());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn issue10_a_full_disk_is_a_wait_not_a_failure() {
        for (errno, name) in [(28, "ENOSPC"), (122, "EDQUOT")] {
            let error = io_error(io::Error::from_raw_os_error(errno));
            assert!(error.is_disk_full(), "{name}");
            assert!(error.is_retryable(), "{name}");
        }
        assert!(!io_error(io::Error::from_raw_os_error(24)).is_disk_full());
        assert!(!io_error(io::Error::from_raw_os_error(13)).is_disk_full());
        assert!(!Error::Shutdown.is_disk_full());
    }
}
