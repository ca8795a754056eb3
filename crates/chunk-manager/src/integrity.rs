//! End-to-end integrity: what a chunk description may declare about each file (its size and a
//! checksum), and the hashing that checks it while the file streams to disk.
//!
//! A declared size is checked against the origin's answer before a byte is written; a
//! declared checksum, and for S3 single-part objects the ETag (an MD5), are checked when the
//! file is complete. A mismatch fails the attempt: the file is downloaded again from its first
//! byte (retried like any transient fault), and after the retries the chunk fails with an
//! error naming the file, the algorithm and both values. Nothing unchecked is committed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// A checksum a chunk description declares for one of its files, written `algorithm:hex`:
/// `sha256:<64 hex>`, `blake3:<64 hex>` or `crc32c:<8 hex>` (CRC-32C, big-endian).
///
/// ```
/// use chunk_manager::Checksum;
/// let checksum: Checksum = "crc32c:e3069283".parse().unwrap();
/// assert_eq!(checksum, Checksum::Crc32c(0xe3069283));
/// assert_eq!(checksum.to_string(), "crc32c:e3069283");
/// assert!("md5:00".parse::<Checksum>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Checksum {
    /// SHA-256.
    Sha256([u8; 32]),
    /// BLAKE3 (256-bit output).
    Blake3([u8; 32]),
    /// CRC-32C (Castagnoli), as S3 and GCS report it.
    Crc32c(u32),
}

/// A checksum algorithm, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChecksumAlgorithm {
    /// SHA-256.
    Sha256,
    /// BLAKE3.
    Blake3,
    /// CRC-32C.
    Crc32c,
    /// The MD5 an S3 single-part object's ETag states.
    EtagMd5,
}

impl ChecksumAlgorithm {
    /// The name: `sha256`, `blake3`, `crc32c` or `md5 (etag)`.
    pub fn name(&self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Blake3 => "blake3",
            ChecksumAlgorithm::Crc32c => "crc32c",
            ChecksumAlgorithm::EtagMd5 => "md5 (etag)",
        }
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Checksum {
    /// The algorithm, whose name is written before the colon.
    pub fn algorithm(&self) -> ChecksumAlgorithm {
        match self {
            Checksum::Sha256(_) => ChecksumAlgorithm::Sha256,
            Checksum::Blake3(_) => ChecksumAlgorithm::Blake3,
            Checksum::Crc32c(_) => ChecksumAlgorithm::Crc32c,
        }
    }

    /// The value as lowercase hex.
    pub fn hex(&self) -> String {
        match self {
            Checksum::Sha256(bytes) | Checksum::Blake3(bytes) => hex::encode(bytes),
            Checksum::Crc32c(value) => format!("{value:08x}"),
        }
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a checksum did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid checksum {text:?}: {reason}")]
pub struct InvalidChecksum {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for Checksum {
    type Err = InvalidChecksum;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidChecksum {
            text: text.chars().take(100).collect(),
            reason,
        };
        let (algorithm, value) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected algorithm:hex, such as sha256:<64 hex digits>"))?;
        let digest32 = || {
            let mut bytes = [0; 32];
            hex::decode_to_slice(value, &mut bytes)
                .map_err(|_| invalid("the value must be 64 hex digits"))?;
            Ok(bytes)
        };
        match algorithm.to_ascii_lowercase().as_str() {
            "sha256" => digest32().map(Checksum::Sha256),
            "blake3" => digest32().map(Checksum::Blake3),
            "crc32c" => {
                let mut bytes = [0; 4];
                hex::decode_to_slice(value, &mut bytes)
                    .map_err(|_| invalid("the value must be 8 hex digits"))?;
                Ok(Checksum::Crc32c(u32::from_be_bytes(bytes)))
            }
            _ => Err(invalid(
                "unsupported algorithm (use sha256, blake3 or crc32c)",
            )),
        }
    }
}

impl Serialize for Checksum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a chunk description declares about one file, checked during the download.
///
/// ```
/// use chunk_manager::{Checksum, DataChunk, FileCheck};
/// let chunk = DataChunk::new(
///     [1; 32],
///     [2; 32],
///     0..100,
///     [("blocks".to_string(), "http://127.0.0.1:8000/blocks".to_string())].into(),
/// )
/// .with_check("blocks", FileCheck::new().with_size(1024).with_checksum(Checksum::Crc32c(7)));
/// assert_eq!(chunk.checks()["blocks"].size, Some(1024));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileCheck {
    /// The file's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The file's checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
}

impl FileCheck {
    /// Declares nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares the size.
    pub fn with_size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// Declares the checksum.
    pub fn with_checksum(mut self, checksum: Checksum) -> Self {
        self.checksum = Some(checksum);
        self
    }
}

/// Hashes one file as it is written: BLAKE3 always (for the manifest), plus the declared
/// algorithm and MD5 (for an S3 ETag) when asked.
#[derive(Clone)]
pub(crate) struct Hashes {
    blake3: blake3::Hasher,
    sha256: Option<sha2::Sha256>,
    crc32c: Option<u32>,
    md5: Option<md5::Md5>,
}

/// The digests of a complete file.
#[derive(Debug, Clone)]
pub(crate) struct Digests {
    pub(crate) blake3: [u8; 32],
    pub(crate) sha256: Option<[u8; 32]>,
    pub(crate) crc32c: Option<u32>,
    pub(crate) md5: Option<[u8; 16]>,
}

impl Hashes {
    /// Hashes for a file whose declared checksum is `declared`, with MD5 if `md5`.
    pub(crate) fn new(declared: Option<Checksum>, md5: bool) -> Self {
        Self {
            blake3: blake3::Hasher::new(),
            sha256: matches!(declared, Some(Checksum::Sha256(_))).then(sha2::Sha256::new),
            crc32c: matches!(declared, Some(Checksum::Crc32c(_))).then_some(0),
            md5: md5.then(md5::Md5::new),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.blake3.update(bytes);
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(bytes);
        }
        if let Some(crc) = &mut self.crc32c {
            *crc = crc32c::crc32c_append(*crc, bytes);
        }
        if let Some(md5) = &mut self.md5 {
            md5.update(bytes);
        }
    }

    /// Starts over, for a file downloaded again from its first byte.
    pub(crate) fn reset(&mut self) {
        self.blake3.reset();
        if let Some(sha256) = &mut self.sha256 {
            *sha256 = sha2::Sha256::new();
        }
        if let Some(crc) = &mut self.crc32c {
            *crc = 0;
        }
        if let Some(md5) = &mut self.md5 {
            *md5 = md5::Md5::new();
        }
    }

    /// The digests of what was hashed so far; hashing may continue after a restart.
    pub(crate) fn digests(&self) -> Digests {
        Digests {
            blake3: *self.blake3.finalize().as_bytes(),
            sha256: self.sha256.clone().map(|sha| sha.finalize().into()),
            crc32c: self.crc32c,
            md5: self.md5.clone().map(|md5| md5.finalize().into()),
        }
    }
}

impl Digests {
    /// The digest of the same algorithm as `declared`.
    pub(crate) fn actual(&self, declared: &Checksum) -> Option<Checksum> {
        match declared {
            Checksum::Sha256(_) => self.sha256.map(Checksum::Sha256),
            Checksum::Blake3(_) => Some(Checksum::Blake3(self.blake3)),
            Checksum::Crc32c(_) => self.crc32c.map(Checksum::Crc32c),
        }
    }
}

/// The MD5 an S3 ETag states, if it is a single-part upload's ETag (32 hex digits, no `-N`
/// part count).
pub(crate) fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    let etag = etag.trim().trim_start_matches("W/").trim_matches('"');
    let mut md5 = [0; 16];
    hex::decode_to_slice(etag, &mut md5).ok()?;
    Some(md5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_round_trip_and_refuse_bad_text() {
        for text in [
            format!("sha256:{}", "ab".repeat(32)),
            format!("blake3:{}", "01".repeat(32)),
            "crc32c:0000ffff".to_string(),
        ] {
            let checksum: Checksum = text.parse().unwrap();
            assert_eq!(checksum.to_string(), text);
            let json = serde_json::to_string(&checksum).unwrap();
            assert_eq!(serde_json::from_str::<Checksum>(&json).unwrap(), checksum);
        }
        for bad in ["sha256", "sha256:xyz", "crc32c:123", "md5:abc", ""] {
            assert!(bad.parse::<Checksum>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_match_the_reference_values() {
        let mut hashes = Hashes::new(Some(Checksum::Crc32c(0)), true);
        hashes.update(b"1234");
        hashes.update(b"56789");
        let digests = hashes.digests();
        // The standard check values of CRC-32C and MD5 for "123456789".
        assert_eq!(digests.crc32c, Some(0xe306_9283));
        assert_eq!(
            hex::encode(digests.md5.unwrap()),
            "25f9e794323b453885f5181f1b624d0b"
        );
        let mut sha = Hashes::new(Some(Checksum::Sha256([0; 32])), false);
        sha.update(b"abc");
        assert_eq!(
            hex::encode(sha.digests().sha256.unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        sha.reset();
        sha.update(b"abc");
        assert_eq!(
            sha.digests().blake3,
            *blake3::hash(b"abc").as_bytes(),
            "reset starts over"
        );
    }

    #[test]
    fn only_single_part_etags_state_an_md5() {
        assert!(etag_md5("\"25f9e794323b453885f5181f1b624d0b\"").is_some());
        assert!(etag_md5("\"25f9e794323b453885f5181f1b624d0b-3\"").is_none());
        assert!(etag_md5("abc").is_none());
    }
}
