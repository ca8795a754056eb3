//! Local chunk files read in place: the `file://` object store of the query engine.
//!
//! DataFusion reads Parquet through `object_store`; its local store hands every range read to
//! tokio's blocking pool (`spawn_blocking`), two or three per file and row group. For a
//! warm chunk file, the read itself is a page-cache copy of microseconds, and the hand-off to
//! another thread and back cost more than the read: 8-15% of a small query's time went to
//! thread switches. [`InlineLocal`] reads the column chunks a scan asks for
//! ([`ObjectStore::get_ranges`]) on the query's own thread, with `pread`; everything else
//! (footers, listing, metadata) is the local store's. Query threads are the engine's own
//! runtime (`--query-threads`), apart from the HTTP server's, so a read that does go to disk
//! stalls only queries, as a database's own reads do.

use std::fmt;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
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
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.inner.path_to_filesystem(location)?;
        let file = std::fs::File::open(&path).map_err(|error| io_error(&path, error))?;
        ranges
            .iter()
            .map(|range| {
                let length =
                    usize::try_from(range.end.saturating_sub(range.start)).map_err(|error| {
                        object_store::Error::Generic {
                            store: "InlineLocal",
                            source: Box::new(error),
                        }
                    })?;
                let mut buffer = vec![0; length];
                file.read_exact_at(&mut buffer, range.start)
                    .map_err(|error| io_error(&path, error))?;
                Ok(Bytes::from(buffer))
            })
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
}
