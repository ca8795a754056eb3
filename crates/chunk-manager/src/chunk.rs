//! Chunks and their ids: the description a caller hands to the manager, and its validation.
//!
//! A [`DataChunk`] is immutable: the content behind an id never changes. Its description is
//! checked by [`DataChunk::validate`] before anything touches the disk, so a hostile or broken
//! description (a file name like `../../etc/passwd`, an empty range, an `ftp://` URL) becomes a
//! clear [`InvalidChunk`] error instead of a path outside the data directory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::integrity::FileCheck;

/// The id of a dataset (for example one blockchain).
pub type DatasetId = [u8; 32];

/// The id of a chunk. Unique; the content behind an id never changes.
pub type ChunkId = [u8; 32];

/// The longest file name accepted, in bytes (the limit of common Linux filesystems).
pub const MAX_FILE_NAME_LEN: usize = 255;

/// The most files a chunk may have (the contract says 1 to 10).
pub const MAX_FILES: usize = 10;

/// A URL as errors, logs and events show it: without credentials and without its query, so
/// that presigned URLs' signatures and tokens never leak. The query is replaced by
/// `?<redacted>` (so a reader sees there was one) and the fragment is dropped; the scheme,
/// host, port and path stay. A string that does not parse as a URL is cut at its first `?` or
/// `#` and loses anything before an `@` in its authority.
///
/// ```
/// use chunk_manager::redact_url;
/// assert_eq!(
///     redact_url("https://user:pw@host:8443/a/b?X-Amz-Signature=secret#f"),
///     "https://host:8443/a/b?<redacted>"
/// );
/// assert_eq!(redact_url("http://host/a"), "http://host/a");
/// assert_eq!(redact_url("not a url?token=secret"), "not a url?<redacted>");
/// ```
pub fn redact_url(url: &str) -> String {
    const REDACTED: &str = "?<redacted>";
    if let Ok(mut parsed) = reqwest::Url::parse(url) {
        let had_query = parsed.query().is_some();
        // Both fail only for URLs that cannot have credentials, which then have none.
        let _no_credentials = parsed.set_username("");
        let _no_password = parsed.set_password(None);
        parsed.set_query(None);
        parsed.set_fragment(None);
        let mut shown = String::from(parsed);
        if had_query {
            shown.push_str(REDACTED);
        }
        return shown;
    }
    redact_as_text(url)
}

/// [`redact_url`] on the text itself, for what does not parse as a URL (and for URLs inside
/// free text, which must stay as written): cut at the first `?` (marked) or `#`, and without
/// anything before an `@` in the authority.
fn redact_as_text(url: &str) -> String {
    const REDACTED: &str = "?<redacted>";
    let (base, cut) = match url.find(['?', '#']) {
        Some(at) => (&url[..at], url[at..].starts_with('?')),
        None => (url, false),
    };
    let mut shown = match base.find("://") {
        Some(at) => {
            let (scheme, rest) = base.split_at(at + 3);
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let host_start = rest[..authority_end].rfind('@').map_or(0, |at| at + 1);
            format!("{scheme}{}", &rest[host_start..])
        }
        None => base.to_string(),
    };
    if cut {
        shown.push_str(REDACTED);
    }
    shown
}

/// Every URL in a text (an error message, an event) redacted as [`redact_url`] does, the
/// rest of the text as written: a URL is a scheme (letters, digits, `+`, `-`, `.`), `://`,
/// and what follows up to a space, a control character, a quote or an angle bracket.
///
/// ```
/// use chunk_manager::redact_urls;
/// assert_eq!(
///     redact_urls(r#"GET "https://u:p@h/b?X-Amz-Signature=s" answered 403; see s3://b/k"#),
///     r#"GET "https://h/b?<redacted>" answered 403; see s3://b/k"#
/// );
/// ```
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        let scheme_start = rest[..found]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |at| at + 1);
        let after = found + 3;
        let end = rest[after..]
            .find(|c: char| {
                c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '`')
            })
            .map_or(rest.len(), |at| after + at);
        if scheme_start == found {
            // No scheme: not a URL.
            out.push_str(&rest[..after]);
            rest = &rest[after..];
            continue;
        }
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_as_text(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Formats an id as lowercase hex, the form used in directory names, logs and JSON.
///
/// ```
/// assert_eq!(chunk_manager::id_to_hex(&[0xab; 32]).len(), 64);
/// ```
pub fn id_to_hex(id: &[u8; 32]) -> String {
    hex::encode(id)
}

/// Parses a 64-character hex id (either case).
///
/// ```
/// let id = [7u8; 32];
/// assert_eq!(chunk_manager::id_from_hex(&chunk_manager::id_to_hex(&id)).unwrap(), id);
/// assert!(chunk_manager::id_from_hex("not hex").is_err());
/// ```
pub fn id_from_hex(text: &str) -> Result<[u8; 32], InvalidId> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(text, &mut id).map_err(|_| InvalidId {
        text: text.chars().take(80).collect(),
    })?;
    Ok(id)
}

/// A string that is not a 64-character hex id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {text:?}: expected 64 hex characters")]
pub struct InvalidId {
    /// The offending text (at most 80 characters of it).
    pub text: String,
}

/// A short, human-friendly form of an id for logs and events: the first 12 hex characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortId<'a>(pub &'a [u8; 32]);

impl fmt::Display for ShortId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ShortId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One chunk of a dataset: an id, a half-open block range and 1 to 10 files, each a name and a
/// URL to download it from.
///
/// Serialises with ids as hex:
///
/// ```
/// use chunk_manager::DataChunk;
/// let chunk = DataChunk::new(
///     [1; 32],
///     [2; 32],
///     100..200,
///     [("blocks.parquet".to_string(), "http://127.0.0.1:8000/blocks".to_string())].into(),
/// );
/// let json = serde_json::to_string(&chunk).unwrap();
/// assert!(json.contains(&"01".repeat(32)));
/// let back: DataChunk = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, chunk);
/// assert!(chunk.validate().is_ok());
/// ```
///
/// Unknown fields are refused (a misspelled `checks` would otherwise skip verification
/// silently):
///
/// ```
/// use chunk_manager::DataChunk;
/// let json = format!(
///     r#"{{"id":"{id}","dataset_id":"{id}","block_range":{{"start":0,"end":1}},"files":{{}},"chekcs":{{}}}}"#,
///     id = "00".repeat(32)
/// );
/// assert!(serde_json::from_str::<DataChunk>(&json).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataChunk {
    #[serde(with = "hex_id")]
    id: ChunkId,
    #[serde(with = "hex_id")]
    dataset_id: DatasetId,
    block_range: Range<u64>,
    /// File name to URL; ordered so manifests and comparisons are deterministic.
    files: BTreeMap<String, String>,
    /// What is declared about some files (size, checksum), checked while downloading.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    checks: BTreeMap<String, FileCheck>,
}

impl DataChunk {
    /// Describes a chunk. Nothing is checked here; [`DataChunk::validate`] checks, and the
    /// manager validates every chunk it is given.
    pub fn new(
        id: ChunkId,
        dataset_id: DatasetId,
        block_range: Range<u64>,
        files: HashMap<String, String>,
    ) -> Self {
        Self {
            id,
            dataset_id,
            block_range,
            files: files.into_iter().collect(),
            checks: BTreeMap::new(),
        }
    }

    /// Declares a file's size and checksum, checked while it downloads (see [`FileCheck`]).
    /// A check for a name that is not one of the files makes the chunk invalid.
    pub fn with_check(mut self, file: impl Into<String>, check: FileCheck) -> Self {
        self.checks.insert(file.into(), check);
        self
    }

    /// The declared checks, by file name.
    pub fn checks(&self) -> &BTreeMap<String, FileCheck> {
        &self.checks
    }

    /// The chunk's id.
    pub fn id(&self) -> &ChunkId {
        &self.id
    }

    /// The dataset the chunk belongs to.
    pub fn dataset_id(&self) -> &DatasetId {
        &self.dataset_id
    }

    /// The half-open block range `start..end` the chunk covers.
    pub fn block_range(&self) -> Range<u64> {
        self.block_range.clone()
    }

    /// File name to URL, ordered by name.
    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }

    /// Checks everything that can be checked without the network: file names are single plain
    /// path components, the range is not empty, there are 1 to [`MAX_FILES`] files, every URL
    /// is a well-formed `http`, `https` (with a host), `s3`, `gs`, `az` (or `azure`, `abfs`,
    /// `abfss`) or `file` URL without control
    /// characters, and every declared check names a file.
    pub fn validate(&self) -> Result<(), InvalidChunk> {
        if self.block_range.start >= self.block_range.end {
            return Err(InvalidChunk::EmptyRange {
                start: self.block_range.start,
                end: self.block_range.end,
            });
        }
        if self.files.is_empty() {
            return Err(InvalidChunk::NoFiles);
        }
        if self.files.len() > MAX_FILES {
            return Err(InvalidChunk::TooManyFiles {
                count: self.files.len(),
                max: MAX_FILES,
            });
        }
        for (name, url) in &self.files {
            validate_file_name(name)?;
            validate_url(name, url)?;
        }
        if let Some(name) = self
            .checks
            .keys()
            .find(|name| !self.files.contains_key(*name))
        {
            return Err(InvalidChunk::CheckWithoutFile { name: name.clone() });
        }
        Ok(())
    }
}

impl fmt::Debug for DataChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataChunk")
            .field("id", &id_to_hex(&self.id))
            .field("dataset_id", &id_to_hex(&self.dataset_id))
            .field("block_range", &self.block_range)
            .field(
                "files",
                &self
                    .files
                    .iter()
                    .map(|(name, url)| (name, redact_url(url)))
                    .collect::<BTreeMap<_, _>>(),
            )
            .field("checks", &self.checks)
            .finish()
    }
}

/// Why a chunk description was refused. Each variant names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidChunk {
    /// `start >= end`.
    #[error("empty block range {start}..{end}")]
    EmptyRange {
        /// The range start.
        start: u64,
        /// The range end.
        end: u64,
    },
    /// The chunk lists no files.
    #[error("the chunk has no files")]
    NoFiles,
    /// The chunk lists more files than a chunk may have.
    #[error("the chunk has {count} files; a chunk has at most {max}")]
    TooManyFiles {
        /// How many files the chunk lists.
        count: usize,
        /// The most a chunk may have ([`MAX_FILES`]).
        max: usize,
    },
    /// A file name that is not one plain path component.
    #[error("invalid file name {name:?}: {reason}")]
    FileName {
        /// The name as given (lossy if it was very long).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A URL that does not parse, or whose scheme is not supported.
    #[error("invalid url {url:?} for file {file:?}: {reason}")]
    Url {
        /// The file the URL belongs to.
        file: String,
        /// The URL as given, without its query or credentials (see [`redact_url`]).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A declared check names no file of the chunk.
    #[error("a check is declared for {name:?}, which is not one of the chunk's files")]
    CheckWithoutFile {
        /// The name the check gives.
        name: String,
    },
}

fn validate_file_name(name: &str) -> Result<(), InvalidChunk> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("a relative directory")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.len() > MAX_FILE_NAME_LEN {
        Some("longer than 255 bytes")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(InvalidChunk::FileName {
            name: name.chars().take(300).collect(),
            reason,
        }),
    }
}

fn validate_url(file: &str, url: &str) -> Result<(), InvalidChunk> {
    let invalid = |reason: String| InvalidChunk::Url {
        file: file.to_string(),
        url: redact_url(url),
        reason,
    };
    // The URL parser drops leading and trailing controls and spaces and removes tabs and
    // newlines anywhere: refuse them rather than fetch something other than what was given.
    if url.chars().any(char::is_control) {
        return Err(invalid("contains a control character".to_string()));
    }
    if url.trim() != url {
        return Err(invalid("starts or ends with white space".to_string()));
    }
    let parsed = reqwest::Url::parse(url).map_err(|error| invalid(error.to_string()))?;
    match parsed.scheme() {
        "http" | "https" | "s3" | "gs" | "az" | "azure" | "abfs" | "abfss" => {
            // The parser turns `http:///x` and `http:/x` into host `x`: insist on `//host`.
            let rest = &url[parsed.scheme().len() + 1..];
            let authority = rest.strip_prefix("//").unwrap_or_default();
            if authority.is_empty() || authority.starts_with(['/', '\\']) {
                return Err(invalid("no host (expected scheme://host/...)".to_string()));
            }
        }
        _ => {}
    }
    match parsed.scheme() {
        "http" | "https" => {
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(invalid("no host".to_string()));
            }
        }
        scheme @ ("s3" | "gs" | "az" | "azure" | "abfs" | "abfss") => {
            let (bucket, expected) = match scheme {
                "s3" | "gs" => ("bucket", format!("{scheme}://bucket/key")),
                _ => ("container", format!("{scheme}://container/key")),
            };
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(invalid(format!("no {bucket} (expected {expected})")));
            }
            if parsed.path().trim_start_matches('/').is_empty() {
                return Err(invalid(format!("no key (expected {expected})")));
            }
            // `abfss://container@account.dfs.core.windows.net/key` names its account in the
            // host; anything else is only a bucket or container name.
            let account_form = matches!(scheme, "abfs" | "abfss") && !parsed.username().is_empty();
            if !account_form && (!parsed.username().is_empty() || parsed.password().is_some()) {
                return Err(invalid(format!(
                    "credentials in the URL (expected {expected}; credentials come from the \
                     environment or the configuration)"
                )));
            }
        }
        "file" => {
            if parsed.to_file_path().is_err() {
                return Err(invalid("not an absolute local path".to_string()));
            }
        }
        other => {
            return Err(invalid(format!(
                "unsupported scheme {other:?} (use http, https, s3, gs, az or file)"
            )));
        }
    }
    Ok(())
}

/// Serde support for 32-byte ids as hex strings.
pub(crate) mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        id: &[u8; 32],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(id))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; 32], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        super::id_from_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_with(name: &str, url: &str) -> DataChunk {
        DataChunk::new(
            [0; 32],
            [0; 32],
            0..10,
            [(name.to_string(), url.to_string())].into(),
        )
    }

    #[test]
    fn rejects_every_kind_of_bad_file_name() {
        let long = "a".repeat(256);
        for name in [
            "", ".", "..", "../x", "a/b", "a\\b", "a\0b", ".hidden", "a\nb", &long,
        ] {
            let error = chunk_with(name, "http://h/x").validate().unwrap_err();
            assert!(
                matches!(error, InvalidChunk::FileName { .. }),
                "{name:?}: {error}"
            );
        }
        assert!(
            chunk_with(&"a".repeat(255), "http://h/x")
                .validate()
                .is_ok()
        );
        assert!(
            chunk_with("blocks.parquet", "http://h/x")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "",
            "not a url",
            "ftp://h/x",
            "http://",
            "s3://",
            "s3://bucket-without-key",
            "s3://bucket/",
            "http:///x",
            "http:/x",
            "https:\\\\x/y",
            "s3:///bucket/key",
            "gs://",
            "gs://bucket",
            "gs://bucket/",
            "gs:///bucket/key",
            "az://container",
            "az://container/",
            "az:///container/key",
            "azure://",
            "az://user:pw@container/key",
            "\u{0}http://x",
            "http://x/a\u{7}b",
            "http://x/a\nb",
            " http://x/a",
            "http://x/a\t",
        ] {
            let error = chunk_with("f", url).validate().unwrap_err();
            assert!(
                matches!(error, InvalidChunk::Url { .. }),
                "{url:?}: {error}"
            );
        }
    }

    #[test]
    fn issue12_gs_and_az_urls_are_accepted() {
        for url in [
            "s3://bucket/key",
            "gs://bucket/key",
            "gs://bucket/dir/key.parquet",
            "az://container/key",
            "azure://container/dir/key",
            "abfs://container/key",
            "abfss://container@account.dfs.core.windows.net/key",
        ] {
            let result = chunk_with("f", url).validate();
            assert!(result.is_ok(), "{url}: {result:?}");
        }
        let error = chunk_with("f", "gs://bucket").validate().unwrap_err();
        assert!(error.to_string().contains("gs://bucket/key"), "{error}");
        let error = chunk_with("f", "az://c/").validate().unwrap_err();
        assert!(error.to_string().contains("az://container/key"), "{error}");
    }

    #[test]
    fn issue10_invalid_url_errors_do_not_show_secrets() {
        let error = chunk_with("f", "ftp://user:pw@h/x?X-Amz-Signature=secret")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            !error.contains("secret") && !error.contains("pw"),
            "{error}"
        );
        assert!(error.contains("ftp://h/x?<redacted>"), "{error}");
        let debug = format!("{:?}", chunk_with("f", "https://h/x?sig=secret"));
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn issue10_redacts_unparsable_urls_too() {
        assert_eq!(
            redact_url("http://u:p@[bad/x?s=1"),
            "http://[bad/x?<redacted>"
        );
        assert_eq!(redact_url("x#frag"), "x");
        assert_eq!(redact_url("s3://b/k?versionId=1"), "s3://b/k?<redacted>");
    }

    #[test]
    fn issue11_at_most_ten_files() {
        let files = |n: usize| -> HashMap<String, String> {
            (0..n)
                .map(|i| (format!("f{i}"), format!("http://h/{i}")))
                .collect()
        };
        assert!(
            DataChunk::new([0; 32], [0; 32], 0..1, files(10))
                .validate()
                .is_ok()
        );
        let error = DataChunk::new([0; 32], [0; 32], 0..1, files(11))
            .validate()
            .unwrap_err();
        assert_eq!(error, InvalidChunk::TooManyFiles { count: 11, max: 10 });
        assert!(error.to_string().contains("at most 10"), "{error}");
    }

    #[test]
    fn issue11_unknown_fields_are_refused() {
        let chunk =
            chunk_with("f", "http://h/x").with_check("f", crate::FileCheck::new().with_size(3));
        let mut json = serde_json::to_value(&chunk).unwrap();
        assert!(serde_json::from_value::<DataChunk>(json.clone()).is_ok());
        json["chekcs"] = json["checks"].take();
        json.as_object_mut().unwrap().remove("checks");
        let error = serde_json::from_value::<DataChunk>(json).unwrap_err();
        assert!(error.to_string().contains("chekcs"), "{error}");
        let mut json = serde_json::to_value(&chunk).unwrap();
        json["checks"]["f"]["sise"] = 3.into();
        let error = serde_json::from_value::<DataChunk>(json).unwrap_err();
        assert!(error.to_string().contains("sise"), "{error}");
    }

    #[test]
    fn rejects_empty_range_and_no_files() {
        let empty = DataChunk::new(
            [0; 32],
            [0; 32],
            5..5,
            [("f".into(), "http://h/".into())].into(),
        );
        assert_eq!(
            empty.validate(),
            Err(InvalidChunk::EmptyRange { start: 5, end: 5 })
        );
        let none = DataChunk::new([0; 32], [0; 32], 0..5, HashMap::new());
        assert_eq!(none.validate(), Err(InvalidChunk::NoFiles));
    }

    #[test]
    fn hex_ids_round_trip_and_reject_garbage() {
        let id = [0xfe; 32];
        assert_eq!(id_from_hex(&id_to_hex(&id)), Ok(id));
        assert!(id_from_hex("ab").is_err());
        assert!(id_from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(ShortId(&id).to_string(), "fefefefefefe");
    }
}
