//! Synthetic blockchain-like data: Parquet chunks of blocks, transactions and logs with
//! plausible columns, value distributions and sizes, for the demo, tests and benchmarks.
//!
//! # Overview
//!
//! Every block is generated from the seed and its number alone, so the same block has the
//! same rows whichever chunk holds it: chunks cut differently (re-chunking, overlaps) agree
//! on their common blocks, and a test can compute the expected answer from the blocks alone.
//!
//! | table | columns |
//! | --- | --- |
//! | `blocks` | `block_number`, `hash`, `parent_hash`, `timestamp`, `miner`, `gas_used`, `gas_limit`, `base_fee_per_gas` (wei), `size`, `transaction_count` |
//! | `transactions` | `block_number`, `transaction_index`, `hash`, `from`, `to` (null for contract creation), `value` (wei), `gas`, `gas_price` (wei), `nonce`, `input` (binary calldata), `status` |
//! | `logs` | `block_number`, `transaction_index`, `log_index`, `address`, `topic0` .. `topic3`, `data` |
//!
//! Wei amounts are `Decimal128(38, 0)` (Parquet `DECIMAL(38, 0)`), exact like real chain data;
//! `timestamp` is a Parquet `TIMESTAMP` (microseconds, UTC). [`schemas`] gives every table's
//! schema. Hashes and addresses are `0x`-prefixed hex strings. Senders are spread over 100,000
//! accounts, receivers and log emitters skewed towards a few hundred popular contracts, event
//! signatures towards `Transfer`; about a third of transactions are plain transfers with no
//! calldata and no logs. Files are sorted by block, compressed with ZSTD (by default) and carry
//! page statistics for the numeric columns, so a block-range filter skips row groups and pages;
//! text columns (hashes, addresses) have row-group statistics only, as per-page ranges of
//! random hashes prune nothing and would only make the page index a remote query reads bigger.
//!
//! ```
//! use chunk_query::synth::{Synth, SynthConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let synth = Synth::new(SynthConfig::small());
//! let tables = synth.tables(1000..1010)?;
//! assert_eq!(tables.blocks.num_rows(), 10);
//! let chunk = synth.chunk(&[7; 32], 1000..1010)?;
//! let names: Vec<_> = chunk.files.iter().map(|(name, _)| name.as_str()).collect();
//! assert_eq!(names, ["blocks.parquet", "transactions.parquet", "logs.parquet"]);
//! assert_eq!(chunk.dir(), format!("0000001000-0000001010-{}", chunk_manager::id_to_hex(&chunk.id)));
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Decimal128Builder, StringBuilder, TimestampMicrosecondBuilder,
    UInt8Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chunk_manager::{ChunkId, DataChunk, DatasetId, id_to_hex};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::SynthError;

/// The names of the three files of a chunk, in the order [`SynthChunk::files`] lists them.
pub const FILE_NAMES: [&str; 3] = ["blocks.parquet", "transactions.parquet", "logs.parquet"];

/// How much data, and of what shape.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SynthConfig {
    /// Everything is derived from it. Default 1.
    pub seed: u64,
    /// Mean transactions per block (uniform between 0 and twice this). Default 150, like
    /// Ethereum mainnet.
    pub transactions_per_block: u32,
    /// Mean logs per contract call (uniform between 0 and twice this). Default 3.
    pub logs_per_call: u32,
    /// Rows per Parquet row group. Default 16,384.
    pub row_group_rows: usize,
    /// Rows per Parquet data page, the unit a filter can skip inside a row group. Default
    /// 2,048.
    pub page_rows: usize,
    /// How data pages are compressed. Default ZSTD (level 3), as chain data archives are.
    pub compression: Compression,
    /// The first block's timestamp, in seconds since the epoch. Default 2024-01-01.
    pub genesis_timestamp: i64,
    /// Seconds between blocks. Default 12.
    pub block_time: i64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            transactions_per_block: 150,
            logs_per_call: 3,
            row_group_rows: 16 * 1024,
            page_rows: 2048,
            compression: Compression::ZSTD(ZstdLevel::default()),
            genesis_timestamp: 1_704_067_200,
            block_time: 12,
        }
    }
}

impl SynthConfig {
    /// Small files for tests and examples: about 4 transactions per block, row groups of 64
    /// rows, so a chunk of a hundred blocks has a few row groups per file.
    pub fn small() -> Self {
        Self {
            transactions_per_block: 4,
            logs_per_call: 2,
            row_group_rows: 64,
            page_rows: 16,
            ..Self::default()
        }
    }

    /// Sets [`SynthConfig::seed`].
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`SynthConfig::transactions_per_block`].
    pub fn with_transactions_per_block(mut self, transactions: u32) -> Self {
        self.transactions_per_block = transactions;
        self
    }

    /// Sets [`SynthConfig::logs_per_call`].
    pub fn with_logs_per_call(mut self, logs: u32) -> Self {
        self.logs_per_call = logs;
        self
    }

    /// Sets [`SynthConfig::compression`].
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets [`SynthConfig::row_group_rows`] (at least 1).
    pub fn with_row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows.max(1);
        self
    }
}

/// The three tables of a block range, as Arrow record batches.
#[derive(Debug, Clone)]
pub struct Tables {
    /// One row per block.
    pub blocks: RecordBatch,
    /// One row per transaction.
    pub transactions: RecordBatch,
    /// One row per log.
    pub logs: RecordBatch,
}

/// One generated chunk: its id, range and Parquet files.
#[derive(Debug, Clone)]
pub struct SynthChunk {
    /// The chunk's id: see [`chunk_id`].
    pub id: ChunkId,
    /// The blocks it holds.
    pub blocks: Range<u64>,
    /// `(file name, Parquet bytes)`, named as in [`FILE_NAMES`].
    pub files: Vec<(String, Bytes)>,
}

impl SynthChunk {
    /// The chunk's directory name, as an object store or an origin lays chunks out:
    /// `<start>-<end>-<id hex>`, the numbers zero-padded to ten digits so names sort by block.
    pub fn dir(&self) -> String {
        format!(
            "{:010}-{:010}-{}",
            self.blocks.start,
            self.blocks.end,
            id_to_hex(&self.id)
        )
    }

    /// The path of one of its files: `<dir>/<name>`.
    pub fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir())
    }

    /// The chunk's description, each file at `url(path)` (see [`SynthChunk::path`]).
    pub fn describe(&self, dataset: &DatasetId, url: impl Fn(&str) -> String) -> DataChunk {
        let files: HashMap<String, String> = self
            .files
            .iter()
            .map(|(name, _)| (name.clone(), url(&self.path(name))))
            .collect();
        DataChunk::new(self.id, *dataset, self.blocks.clone(), files)
    }

    /// The total size of its files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|(_, bytes)| bytes.len() as u64).sum()
    }

    /// Writes its files under `root/<dir>/`.
    ///
    /// # Errors
    ///
    /// The filesystem's error.
    pub fn write_to(&self, root: &Path) -> std::io::Result<()> {
        let dir = root.join(self.dir());
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(name), bytes)?;
        }
        Ok(())
    }
}

/// A chunk's id: the BLAKE3 hash of the dataset and the range, so the same chunk gets the same
/// id every time.
pub fn chunk_id(dataset: &DatasetId, blocks: &Range<u64>) -> ChunkId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"chunk-query synth chunk");
    hasher.update(dataset);
    hasher.update(&blocks.start.to_le_bytes());
    hasher.update(&blocks.end.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// The generator. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Synth {
    config: SynthConfig,
}

/// Popular event signatures: `Transfer`, `Approval`, `Swap` (Uniswap V2 and V3), `Sync`,
/// `Deposit`, `Withdrawal`; `Transfer` is by far the most common.
const TOPICS: [&str; 7] = [
    "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
    "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925",
    "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822",
    "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67",
    "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1",
    "0xe1fffcc4923d04b559f4d29a8bfc6cda04eb5b0d3c460751c2402c5c5cc9109c",
    "0x7fcf532c15f0a6db0bd6d0e038bea71d30d808c7d98cb3bf7268a95bf5081b65",
];

/// Accounts that send transactions.
const SENDERS: u64 = 100_000;
/// Contracts that receive calls and emit logs.
const CONTRACTS: u64 = 2_000;
/// Block producers.
const MINERS: u64 = 50;

impl Synth {
    /// A generator with this configuration.
    pub fn new(config: SynthConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    /// The tables of `blocks`, as Arrow record batches sorted by block.
    ///
    /// # Errors
    ///
    /// [`SynthError::Arrow`] if a batch cannot be built (a bug).
    pub fn tables(&self, blocks: Range<u64>) -> Result<Tables, SynthError> {
        let mut tables = Builders::default();
        for block in blocks {
            self.block(block, &mut tables);
        }
        tables.finish()
    }

    /// A chunk of `blocks` of `dataset`: its three tables as ZSTD-compressed Parquet files.
    ///
    /// # Errors
    ///
    /// [`SynthError`] if a table cannot be built or written (a bug).
    pub fn chunk(&self, dataset: &DatasetId, blocks: Range<u64>) -> Result<SynthChunk, SynthError> {
        let tables = self.tables(blocks.clone())?;
        let files = [tables.blocks, tables.transactions, tables.logs]
            .iter()
            .zip(FILE_NAMES)
            .map(|(batch, name)| Ok((name.to_string(), self.parquet(batch)?)))
            .collect::<Result<Vec<_>, SynthError>>()?;
        Ok(SynthChunk {
            id: chunk_id(dataset, &blocks),
            blocks,
            files,
        })
    }

    /// One table as a Parquet file.
    ///
    /// # Errors
    ///
    /// [`SynthError::Parquet`] if it cannot be encoded (a bug).
    pub fn parquet(&self, batch: &RecordBatch) -> Result<Bytes, SynthError> {
        let mut properties = WriterProperties::builder()
            .set_compression(self.config.compression)
            .set_max_row_group_row_count(Some(self.config.row_group_rows.max(1)))
            .set_data_page_row_count_limit(self.config.page_rows.max(1))
            .set_write_batch_size(self.config.page_rows.clamp(1, 1024))
            .set_statistics_enabled(EnabledStatistics::Page);
        // Page statistics (the page index) only where pages differ in range: a page's
        // min/max of random hashes prunes nothing, and for text columns they made most of
        // the page index a remote query reads.
        for field in batch.schema().fields() {
            if matches!(
                field.data_type(),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Binary
            ) {
                properties = properties.set_column_statistics_enabled(
                    ColumnPath::from(field.name().as_str()),
                    EnabledStatistics::Chunk,
                );
            }
        }
        let properties = properties.build();
        let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(properties))?;
        writer.write(batch)?;
        Ok(Bytes::from(writer.into_inner()?))
    }

    fn block(&self, block: u64, tables: &mut Builders) {
        let config = &self.config;
        let mut rng = fastrand::Rng::with_seed(mix(config.seed, block));
        let transactions = rng.u32(0..=config.transactions_per_block.saturating_mul(2));
        let base_fee = rng.u64(5..80) * 1_000_000_000;
        let mut gas_used = 0;
        let mut size = 540;
        for index in 0..transactions {
            let transfer = rng.u8(0..100) < 35;
            let created = !transfer && rng.u8(0..100) == 0;
            let to = if transfer {
                Some(address(config.seed, 1, rng.u64(0..SENDERS)))
            } else if created {
                None
            } else {
                Some(address(config.seed, 2, skewed(&mut rng, CONTRACTS)))
            };
            let input_len = if transfer {
                0
            } else {
                4 + 32 * skewed(&mut rng, 24) as usize
            };
            let gas = if transfer {
                21_000
            } else {
                rng.u64(40_000..600_000)
            };
            let succeeded = rng.u8(0..100) < 97;
            gas_used += gas;
            size += 110 + input_len as u64;
            let t = &mut tables.transactions;
            t.block_number.append_value(block);
            t.transaction_index.append_value(index);
            t.hash.append_value(random_hash(&mut rng));
            t.from
                .append_value(address(config.seed, 1, rng.u64(0..SENDERS)));
            t.to.append_option(to.as_deref());
            // Up to 20 ETH, in wei.
            let value: i128 = if transfer || rng.bool() {
                (rng.f64() * rng.f64() * 20e18) as i128
            } else {
                0
            };
            t.value.append_value(value);
            t.gas.append_value(gas);
            t.gas_price
                .append_value(i128::from(base_fee + rng.u64(0..3) * 1_000_000_000));
            t.nonce.append_value(rng.u64(0..20_000));
            let input: Vec<u8> = (0..input_len).map(|_| rng.u8(..)).collect();
            t.input.append_value(&input);
            t.status.append_value(u8::from(succeeded));

            if transfer || !succeeded {
                continue;
            }
            let logs = rng.u32(0..=config.logs_per_call.saturating_mul(2));
            for _ in 0..logs {
                let emitter = match &to {
                    Some(to) if rng.u8(0..100) < 70 => to.clone(),
                    _ => address(config.seed, 2, skewed(&mut rng, CONTRACTS)),
                };
                let topic = TOPICS[skewed(&mut rng, TOPICS.len() as u64) as usize];
                let l = &mut tables.logs;
                l.block_number.append_value(block);
                l.transaction_index.append_value(index);
                l.log_index.append_value(tables.next_log_index);
                tables.next_log_index += 1;
                l.address.append_value(emitter);
                l.topic0.append_value(topic);
                l.topic1.append_value(padded(&mut rng, config.seed));
                l.topic2
                    .append_option(rng.bool().then(|| padded(&mut rng, config.seed)));
                l.topic3
                    .append_option((rng.u8(0..10) == 0).then(|| random_hash(&mut rng)));
                let data: Vec<u8> = (0..32 * rng.usize(0..4)).map(|_| rng.u8(..)).collect();
                l.data.append_value(&data);
            }
        }
        tables.next_log_index = 0;
        let b = &mut tables.blocks;
        b.block_number.append_value(block);
        b.hash.append_value(block_hash(config.seed, block));
        b.parent_hash
            .append_value(block_hash(config.seed, block.wrapping_sub(1)));
        let seconds = i64::try_from(block).unwrap_or(i64::MAX / 2);
        b.timestamp.append_value(
            config
                .genesis_timestamp
                .saturating_add(seconds.saturating_mul(config.block_time))
                .saturating_mul(1_000_000),
        );
        b.miner
            .append_value(address(config.seed, 3, skewed(&mut rng, MINERS)));
        b.gas_used.append_value(gas_used);
        b.gas_limit.append_value(30_000_000.max(gas_used));
        b.base_fee_per_gas.append_value(i128::from(base_fee));
        b.size.append_value(u32::try_from(size).unwrap_or(u32::MAX));
        b.transaction_count.append_value(transactions);
    }
}

/// A seed for one block's generator.
fn mix(seed: u64, block: u64) -> u64 {
    let mut z = seed ^ block.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An index below `count`, small ones far more likely (a few popular contracts, most events
/// `Transfer`).
fn skewed(rng: &mut fastrand::Rng, count: u64) -> u64 {
    let x = rng.f64();
    ((x * x * x * count as f64) as u64).min(count.saturating_sub(1))
}

fn random_hash(rng: &mut fastrand::Rng) -> String {
    let bytes: [u8; 32] = std::array::from_fn(|_| rng.u8(..));
    format!("0x{}", hex::encode(bytes))
}

fn block_hash(seed: u64, block: u64) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(&block.to_le_bytes());
    format!("0x{}", hasher.finalize().to_hex())
}

/// The address number `index` of a kind (senders, contracts, miners).
fn address(seed: u64, kind: u64, index: u64) -> String {
    let words = [
        mix(seed ^ kind, index),
        mix(seed ^ kind, index ^ 0x5555_5555),
        mix(seed ^ kind, index ^ 0xaaaa_aaaa),
    ];
    let mut bytes = [0u8; 24];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    format!("0x{}", hex::encode(&bytes[..20]))
}

/// An address as a 32-byte topic.
fn padded(rng: &mut fastrand::Rng, seed: u64) -> String {
    let address = address(seed, 1, rng.u64(0..SENDERS));
    format!("0x{}{}", "0".repeat(24), &address[2..])
}

#[derive(Default)]
struct BlockColumns {
    block_number: UInt64Builder,
    hash: StringBuilder,
    parent_hash: StringBuilder,
    timestamp: TimestampMicrosecondBuilder,
    miner: StringBuilder,
    gas_used: UInt64Builder,
    gas_limit: UInt64Builder,
    base_fee_per_gas: Decimal128Builder,
    size: UInt32Builder,
    transaction_count: UInt32Builder,
}

#[derive(Default)]
struct TransactionColumns {
    block_number: UInt64Builder,
    transaction_index: UInt32Builder,
    hash: StringBuilder,
    from: StringBuilder,
    to: StringBuilder,
    value: Decimal128Builder,
    gas: UInt64Builder,
    gas_price: Decimal128Builder,
    nonce: UInt64Builder,
    input: BinaryBuilder,
    status: UInt8Builder,
}

#[derive(Default)]
struct LogColumns {
    block_number: UInt64Builder,
    transaction_index: UInt32Builder,
    log_index: UInt32Builder,
    address: StringBuilder,
    topic0: StringBuilder,
    topic1: StringBuilder,
    topic2: StringBuilder,
    topic3: StringBuilder,
    data: BinaryBuilder,
}

#[derive(Default)]
struct Builders {
    blocks: BlockColumns,
    transactions: TransactionColumns,
    logs: LogColumns,
    next_log_index: u32,
}

impl Builders {
    fn finish(mut self) -> Result<Tables, SynthError> {
        let b = &mut self.blocks;
        let blocks = batch(
            blocks_schema(),
            vec![
                Arc::new(b.block_number.finish()),
                Arc::new(b.hash.finish()),
                Arc::new(b.parent_hash.finish()),
                Arc::new(b.timestamp.finish().with_timezone(UTC)),
                Arc::new(b.miner.finish()),
                Arc::new(b.gas_used.finish()),
                Arc::new(b.gas_limit.finish()),
                Arc::new(wei(b.base_fee_per_gas.finish())?),
                Arc::new(b.size.finish()),
                Arc::new(b.transaction_count.finish()),
            ],
        )?;
        let t = &mut self.transactions;
        let transactions = batch(
            transactions_schema(),
            vec![
                Arc::new(t.block_number.finish()),
                Arc::new(t.transaction_index.finish()),
                Arc::new(t.hash.finish()),
                Arc::new(t.from.finish()),
                Arc::new(t.to.finish()),
                Arc::new(wei(t.value.finish())?),
                Arc::new(t.gas.finish()),
                Arc::new(wei(t.gas_price.finish())?),
                Arc::new(t.nonce.finish()),
                Arc::new(t.input.finish()),
                Arc::new(t.status.finish()),
            ],
        )?;
        let l = &mut self.logs;
        let logs = batch(
            logs_schema(),
            vec![
                Arc::new(l.block_number.finish()),
                Arc::new(l.transaction_index.finish()),
                Arc::new(l.log_index.finish()),
                Arc::new(l.address.finish()),
                Arc::new(l.topic0.finish()),
                Arc::new(l.topic1.finish()),
                Arc::new(l.topic2.finish()),
                Arc::new(l.topic3.finish()),
                Arc::new(l.data.finish()),
            ],
        )?;
        Ok(Tables {
            blocks,
            transactions,
            logs,
        })
    }
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, SynthError> {
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The time zone of `timestamp`.
const UTC: &str = "UTC";

/// The type of wei amounts: exact integers of up to 38 digits, like real chain data.
pub const WEI: DataType = DataType::Decimal128(38, 0);

fn wei(
    amounts: arrow::array::Decimal128Array,
) -> Result<arrow::array::Decimal128Array, SynthError> {
    Ok(amounts.with_precision_and_scale(38, 0)?)
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// Every table's schema, by table name (`blocks`, `transactions`, `logs`), for a catalog
/// ([`Catalog::with_schemas`](crate::Catalog::with_schemas)).
pub fn schemas() -> Vec<(String, SchemaRef)> {
    vec![
        ("blocks".to_string(), blocks_schema()),
        ("transactions".to_string(), transactions_schema()),
        ("logs".to_string(), logs_schema()),
    ]
}

/// The schema of the `blocks` table.
pub fn blocks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("block_number", DataType::UInt64, false),
        Field::new("hash", DataType::Utf8, false),
        Field::new("parent_hash", DataType::Utf8, false),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("miner", DataType::Utf8, false),
        Field::new("gas_used", DataType::UInt64, false),
        Field::new("gas_limit", DataType::UInt64, false),
        Field::new("base_fee_per_gas", WEI, false),
        Field::new("size", DataType::UInt32, false),
        Field::new("transaction_count", DataType::UInt32, false),
    ]))
}

/// The schema of the `transactions` table.
pub fn transactions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("block_number", DataType::UInt64, false),
        Field::new("transaction_index", DataType::UInt32, false),
        Field::new("hash", DataType::Utf8, false),
        Field::new("from", DataType::Utf8, false),
        Field::new("to", DataType::Utf8, true),
        Field::new("value", WEI, false),
        Field::new("gas", DataType::UInt64, false),
        Field::new("gas_price", WEI, false),
        Field::new("nonce", DataType::UInt64, false),
        Field::new("input", DataType::Binary, false),
        Field::new("status", DataType::UInt8, false),
    ]))
}

/// The schema of the `logs` table.
pub fn logs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("block_number", DataType::UInt64, false),
        Field::new("transaction_index", DataType::UInt32, false),
        Field::new("log_index", DataType::UInt32, false),
        Field::new("address", DataType::Utf8, false),
        Field::new("topic0", DataType::Utf8, false),
        Field::new("topic1", DataType::Utf8, false),
        Field::new("topic2", DataType::Utf8, true),
        Field::new("topic3", DataType::Utf8, true),
        Field::new("data", DataType::Binary, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::UInt64Type;

    #[test]
    fn a_block_is_the_same_whichever_chunk_holds_it() {
        let synth = Synth::new(SynthConfig::small());
        let whole = synth.tables(100..120).unwrap();
        let tail = synth.tables(110..120).unwrap();
        let rows = |batch: &RecordBatch, from: u64| {
            let numbers = batch.column(0).as_primitive::<UInt64Type>();
            (0..numbers.len())
                .filter(|&i| numbers.value(i) >= from)
                .count()
        };
        assert_eq!(rows(&whole.transactions, 110), tail.transactions.num_rows());
        assert_eq!(rows(&whole.logs, 110), tail.logs.num_rows());
        assert_eq!(whole.blocks.slice(10, 10), tail.blocks);
    }

    #[test]
    fn blocks_chain_by_parent_hash() {
        let tables = Synth::default().tables(5..7).unwrap();
        let hashes = tables.blocks.column(1).as_string::<i32>();
        let parents = tables.blocks.column(2).as_string::<i32>();
        assert_eq!(parents.value(1), hashes.value(0));
        assert_eq!(hashes.value(0).len(), 66);
    }

    #[test]
    fn realistic_sizes() {
        let synth = Synth::default();
        let tables = synth.tables(0..20).unwrap();
        let per_block = tables.transactions.num_rows() / 20;
        assert!(
            (75..=225).contains(&per_block),
            "{per_block} transactions per block"
        );
        assert!(tables.logs.num_rows() > tables.transactions.num_rows());
        let to = tables.transactions.column(4);
        assert!(to.null_count() < to.len() / 20, "few contract creations");
        let chunk = synth.chunk(&[0; 32], 0..20).unwrap();
        assert!(chunk.size() > 100_000, "{} bytes", chunk.size());
    }

    #[test]
    fn issue11_amounts_are_decimals_and_timestamps_parquet_timestamps() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let chunk = Synth::new(SynthConfig::small())
            .chunk(&[0; 32], 0..10)
            .unwrap();
        // The Parquet logical type of a column, as Debug text.
        let column = |file: usize, name: &str| {
            let reader = SerializedFileReader::new(chunk.files[file].1.clone()).unwrap();
            let schema = reader.metadata().file_metadata().schema_descr_ptr();
            let column = schema
                .columns()
                .iter()
                .find(|column| column.name() == name)
                .unwrap()
                .clone();
            format!("{:?}", column.logical_type_ref())
        };
        let timestamp = column(0, "timestamp");
        assert!(
            timestamp.contains("Timestamp")
                && timestamp.contains("true")
                && timestamp.contains("MICROS"),
            "{timestamp}"
        );
        for (file, name) in [(1, "value"), (1, "gas_price"), (0, "base_fee_per_gas")] {
            let decimal = column(file, name);
            assert!(
                decimal.contains("Decimal")
                    && decimal.contains("scale: 0")
                    && decimal.contains("precision: 38"),
                "{name}: {decimal}"
            );
        }
    }

    #[test]
    fn chunk_ids_are_stable_and_distinct() {
        assert_eq!(chunk_id(&[1; 32], &(0..10)), chunk_id(&[1; 32], &(0..10)));
        assert_ne!(chunk_id(&[1; 32], &(0..10)), chunk_id(&[1; 32], &(0..11)));
        assert_ne!(chunk_id(&[1; 32], &(0..10)), chunk_id(&[2; 32], &(0..10)));
    }
}
