//! The throughput benchmark's file set: 20 chunks of 3 files, 8 to 64 MB each, deterministic
//! from a seed, laid out as `c00/blocks.parquet` ... under the directory nginx serves.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chunk_manager::DataChunk;

use crate::fixture;

/// Bytes in a megabyte, as the report counts them.
pub const MB: u64 = 1_000_000;
const MIB: u64 = 1 << 20;

/// The shape of the file set.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Seed for the sizes and the contents.
    pub seed: u64,
    /// How many chunks.
    pub chunks: usize,
    /// The smallest file, in MB.
    pub min_mb: u64,
    /// The largest file, in MB.
    pub max_mb: u64,
}

/// One file of the set.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    /// Its path under the served directory (and under every download directory).
    pub path: String,
    /// Its name inside the chunk.
    pub name: &'static str,
    /// Its size in bytes.
    pub size: u64,
}

/// One chunk of the set.
#[derive(Debug, Clone)]
pub struct PlannedChunk {
    /// Its position in the set.
    pub index: usize,
    /// Its files.
    pub files: Vec<PlannedFile>,
}

impl PlannedChunk {
    /// The chunk's bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|file| file.size).sum()
    }

    /// The chunk's description, with its files at `base_url`.
    pub fn describe(&self, base_url: &str) -> DataChunk {
        let files = self
            .files
            .iter()
            .map(|file| {
                (
                    file.name.to_string(),
                    format!("{}/{}", base_url.trim_end_matches('/'), file.path),
                )
            })
            .collect();
        let position = (self.index / 2) as u64;
        DataChunk::new(
            fixture::chunk_id(self.index),
            fixture::dataset_id(self.index % 2),
            position * fixture::BLOCKS..(position + 1) * fixture::BLOCKS,
            files,
        )
    }
}

/// The file set of `shape`: the same sizes on every run with the same seed.
pub fn plan(shape: Shape) -> Vec<PlannedChunk> {
    let mut rng = fastrand::Rng::with_seed(shape.seed);
    (0..shape.chunks)
        .map(|index| PlannedChunk {
            index,
            files: fixture::FILE_NAMES
                .iter()
                .map(|name| PlannedFile {
                    path: format!("c{index:02}/{name}"),
                    name,
                    size: rng.u64(shape.min_mb * MB..=shape.max_mb * MB),
                })
                .collect(),
        })
        .collect()
}

/// Writes the file set under `dir`, keeping files that already have the right size. Returns
/// the total bytes of the set.
pub fn generate(dir: &Path, chunks: &[PlannedChunk], seed: u64) -> anyhow::Result<u64> {
    let mut total = 0;
    for chunk in chunks {
        for (number, file) in chunk.files.iter().enumerate() {
            total += file.size;
            let path = dir.join(&file.path);
            if std::fs::metadata(&path).is_ok_and(|meta| meta.len() == file.size) {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
            }
            let mut out = std::io::BufWriter::with_capacity(
                MIB as usize,
                std::fs::File::create(&path)
                    .with_context(|| format!("create {}", path.display()))?,
            );
            let file_seed = seed ^ ((chunk.index as u64) << 32) ^ ((number as u64) << 24);
            let mut written = 0;
            let mut block = 0u64;
            while written < file.size {
                let length = (file.size - written).min(MIB);
                out.write_all(&chunk_origin::content(file_seed + block, length as usize))?;
                written += length;
                block += 1;
            }
            out.flush()
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(total)
}

/// An `aria2c --input-file` list fetching every file of `chunks` into `out_dir`.
pub fn aria2_input(chunks: &[PlannedChunk], base_url: &str, out_dir: &Path) -> String {
    let mut text = String::new();
    for file in chunks.iter().flat_map(|chunk| &chunk.files) {
        let target = out_dir.join(&file.path);
        let (dir, name) = (target.parent().unwrap_or(out_dir), file.name);
        text.push_str(&format!(
            "{}/{}\n  dir={}\n  out={name}\n",
            base_url.trim_end_matches('/'),
            file.path,
            dir.display()
        ));
    }
    text
}

/// A `curl --config` file fetching every file of `chunks` into `out_dir`.
pub fn curl_config(chunks: &[PlannedChunk], base_url: &str, out_dir: &Path) -> String {
    let mut text = String::new();
    for file in chunks.iter().flat_map(|chunk| &chunk.files) {
        text.push_str(&format!(
            "url = \"{}/{}\"\noutput = \"{}\"\n",
            base_url.trim_end_matches('/'),
            file.path,
            out_dir.join(&file.path).display()
        ));
    }
    text
}
