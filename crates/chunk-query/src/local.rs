//! Local chunk files read in place: the `file://` object store of the query engine.
//!
//! DataFusion reads Parquet through `object_store`; its local store hands every range read to
//! tokio's blocking pool (`spawn_blocking`), two or three per file and row group. For a
//! warm chunk file, the read itself is a page-cache copy of microseconds, and the hand-off to
//! another thread and back cost more than the read: 8-15% of a small query's time went to
//! thread switches. [`InlineLocal`] reads the column chunks a scan asks for
//! ([`ObjectStore::get_ranges`]), and answers the `HEAD`s and range reads of planning (a file's
//! size for each of a table's files, footers, page indexes), on the query's own thread: `pread`
//! and `fstat`. Whole-file reads, listings and writes are the local store's. Query threads are the engine's own
//! runtime (`--query-threads`), apart from the HTTP server's, so a read that does go to disk
//! stalls only queries, as a database's own reads do.

use std::fmt;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// The local file system, with range reads done inline (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct InlineLocal {
    inner: LocalFileSystem,
}

impl InlineLocal {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl fmt::Display for InlineLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InlineLocal({})", self.inner)
    }
}

/// An IO error on `path` as object_store reports it.
fn io_error(path: &std::path::Path, error: std::io::Error) -> object_store::Error {
    if error.kind() == std::io::ErrorKind::NotFound {
        object_store::Error::NotFound {
            path: path.display().to_string(),
            source: Box::new(error),
        }
    } else {
        object_store::Error::Generic {
            store: "InlineLocal",
            source: Box::new(error),
        }
    }
}

/// The bytes of `range` of `file` (at `path`); an error, not short data, past its end.
fn read_at(file: &std::fs::File, path: &std::path::Path, range: Range<u64>) -> Result<Bytes> {
    let length = usize::try_from(range.end.saturating_sub(range.start)).map_err(|error| {
        object_store::Error::Generic {
            store: "InlineLocal",
            source: Box::new(error),
        }
    })?;
    let mut buffer = vec![0; length];
    file.read_exact_at(&mut buffer, range.start)
        .map_err(|error| io_error(path, error))?;
    Ok(Bytes::from(buffer))
}

/// A file's metadata as the local store gives it (the same e-tag: inode, modification time
/// in microseconds and size, in hex), so caches keyed by it agree whichever store answered.
fn object_meta(location: &Path, metadata: &std::fs::Metadata) -> std::io::Result<ObjectMeta> {
    use std::os::unix::fs::MetadataExt;
    let modified = metadata.modified()?;
    let micros = modified
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    Ok(ObjectMeta {
        location: location.clone(),
        last_modified: chrono::DateTime::<chrono::Utc>::from(modified),
        size: metadata.len(),
        e_tag: Some(format!(
            "{:x}-{micros:x}-{:x}",
            metadata.ino(),
            metadata.len()
        )),
        version: None,
    })
}

#[async_trait::async_trait]
impl ObjectStore for InlineLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        options: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, options).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        options: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, options).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.range.is_none() && !options.head {
            // A whole file: streamed from the file by the local store.
            return self.inner.get_opts(location, options).await;
        }
        let path = self.inner.path_to_filesystem(location)?;
        // A HEAD is one `stat`; a range read opens the file and reads from what it opened.
        let file = if options.head {
            None
        } else {
            Some(std::fs::File::open(&path).map_err(|error| io_error(&path, error))?)
        };
        let metadata = match &file {
            Some(file) => file.metadata(),
            None => std::fs::metadata(&path),
        }
        .map_err(|error| io_error(&path, error))?;
        if metadata.is_dir() {
            return Err(object_store::Error::NotFound {
                path: path.display().to_string(),
                source: "is a directory".into(),
            });
        }
        let meta = object_meta(location, &metadata).map_err(|error| io_error(&path, error))?;
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(range) => {
                range
                    .as_range(meta.size)
                    .map_err(|error| object_store::Error::Generic {
                        store: "InlineLocal",
                        source: Box::new(error),
                    })?
            }
            None => 0..meta.size,
        };
        let body = match &file {
            Some(file) => read_at(file, &path, range.clone())?,
            None => Bytes::new(),
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(body) }).boxed()),
            attributes: Attributes::default(),
            range,
            meta,
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.inner.path_to_filesystem(location)?;
        let file = std::fs::File::open(&path).map_err(|error| io_error(&path, error))?;
        ranges
            .iter()
            .map(|range| read_at(&file, &path, range.clone()))
            .collect()
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt as _;

    #[tokio::test]
    async fn ranges_are_read_in_place_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let file = dir.path().join("blocks.parquet");
        std::fs::write(&file, b"0123456789").unwrap_or_else(|error| panic!("{error}"));
        let store = InlineLocal::new();
        let location = Path::from_filesystem_path(&file).unwrap_or_else(|error| panic!("{error}"));
        let read = store
            .get_ranges(&location, &[0..2, 5..9, 9..10])
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(read, [&b"01"[..], &b"5678"[..], &b"9"[..]]);
        // Past the end: an error, not short data.
        assert!(store.get_ranges(&location, &[8..12]).await.is_err());
        let missing = Path::from_filesystem_path(dir.path())
            .unwrap_or_else(|error| panic!("{error}"))
            .join("missing.parquet");
        let error = store.get_ranges(&missing, &[0..1]).await.unwrap_err();
        assert!(
            matches!(error, object_store::Error::NotFound { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("missing.parquet"), "{error}");
    }

    /// HEADs and range reads answered in place agree with the local store's: the same
    /// metadata (caches key on it), the same bytes for every kind of range.
    #[tokio::test]
    async fn heads_and_range_gets_agree_with_the_local_store() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let file = dir.path().join("logs.parquet");
        std::fs::write(&file, b"0123456789").unwrap_or_else(|error| panic!("{error}"));
        let location = Path::from_filesystem_path(&file).unwrap_or_else(|error| panic!("{error}"));
        let inline = InlineLocal::new();
        let local = LocalFileSystem::new();
        let head = inline
            .head(&location)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            head,
            local
                .head(&location)
                .await
                .unwrap_or_else(|error| panic!("{error}"))
        );
        assert_eq!(head.size, 10);
        for range in [
            object_store::GetRange::Bounded(2..5),
            object_store::GetRange::Offset(7),
            object_store::GetRange::Suffix(4),
        ] {
            let options = GetOptions {
                range: Some(range.clone()),
                ..GetOptions::default()
            };
            let got = inline
                .get_opts(&location, options.clone())
                .await
                .unwrap_or_else(|error| panic!("{error}"));
            let want = local
                .get_opts(&location, options)
                .await
                .unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(got.range, want.range, "{range:?}");
            assert_eq!(got.meta, want.meta, "{range:?}");
            assert_eq!(
                got.bytes().await.unwrap_or_else(|error| panic!("{error}")),
                want.bytes().await.unwrap_or_else(|error| panic!("{error}")),
                "{range:?}"
            );
        }
        // A range past the end and a failed precondition are errors, as with the local store.
        let past = GetOptions {
            range: Some(object_store::GetRange::Bounded(12..14)),
            ..GetOptions::default()
        };
        assert!(inline.get_opts(&location, past).await.is_err());
        let stale = GetOptions {
            if_match: Some("another-version".to_string()),
            range: Some(object_store::GetRange::Bounded(0..1)),
            ..GetOptions::default()
        };
        assert!(matches!(
            inline.get_opts(&location, stale).await,
            Err(object_store::Error::Precondition { .. })
        ));
        let missing = Path::from_filesystem_path(dir.path())
            .unwrap_or_else(|error| panic!("{error}"))
            .join("missing.parquet");
        assert!(matches!(
            inline.head(&missing).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }
}
