//! Query results as bytes: JSON, newline-delimited JSON, the Arrow IPC stream format, or a
//! text table; batch by batch, so a large result streams out without being held in memory
//! (except as a text table, whose column widths need every row).
//!
//! ```
//! use std::sync::Arc;
//! use chunk_query::arrow::array::{RecordBatch, UInt64Array};
//! use chunk_query::output::{Encoder, Format};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let batch = RecordBatch::try_from_iter([("n", Arc::new(UInt64Array::from(vec![1, 2])) as _)])?;
//! let mut encoder = Encoder::new(Format::Json, batch.schema())?;
//! let mut out = encoder.begin()?.to_vec();
//! out.extend_from_slice(&encoder.batch(&batch)?);
//! out.extend_from_slice(&encoder.finish()?);
//! assert_eq!(String::from_utf8(out)?, r#"[{"n":1},{"n":2}]"#);
//! # Ok(())
//! # }
//! ```

use std::str::FromStr;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::json::writer::{JsonArray, LineDelimited};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// A JSON array of row objects; binary values as hex strings. `json`.
    Json,
    /// One JSON object per row and line. `ndjson`.
    Ndjson,
    /// The Arrow IPC stream format: the schema, then each batch. `arrow`.
    ArrowIpc,
    /// An aligned text table. `table`.
    Table,
}

impl Format {
    /// The HTTP content type.
    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::ArrowIpc => "application/vnd.apache.arrow.stream",
            Format::Table => "text/plain; charset=utf-8",
        }
    }

    /// The name [`FromStr`] takes.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::ArrowIpc => "arrow",
            Format::Table => "table",
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "ndjson" | "jsonl" => Ok(Format::Ndjson),
            "arrow" | "ipc" | "arrow-ipc" => Ok(Format::ArrowIpc),
            "table" | "text" => Ok(Format::Table),
            other => Err(format!(
                "unknown format {other:?} (use json, ndjson, arrow or table)"
            )),
        }
    }
}

/// Turns a stream of record batches into bytes of one [`Format`]: [`Encoder::begin`], then
/// [`Encoder::batch`] for each batch, then [`Encoder::finish`].
pub struct Encoder {
    state: State,
}

enum State {
    Json { rows: usize },
    Ndjson,
    Ipc(Box<StreamWriter<Vec<u8>>>),
    Table(Vec<RecordBatch>),
}

impl Encoder {
    /// An encoder for batches of `schema`.
    ///
    /// # Errors
    ///
    /// Arrow's error if the schema cannot be encoded in the format.
    pub fn new(format: Format, schema: SchemaRef) -> Result<Self, ArrowError> {
        let state = match format {
            Format::Json => State::Json { rows: 0 },
            Format::Ndjson => State::Ndjson,
            Format::ArrowIpc => State::Ipc(Box::new(StreamWriter::try_new(Vec::new(), &schema)?)),
            Format::Table => State::Table(Vec::new()),
        };
        Ok(Self { state })
    }

    /// What comes before the first batch.
    ///
    /// # Errors
    ///
    /// Arrow's error.
    pub fn begin(&mut self) -> Result<Bytes, ArrowError> {
        Ok(match &mut self.state {
            State::Json { .. } => Bytes::from_static(b"["),
            State::Ipc(writer) => Bytes::from(std::mem::take(writer.get_mut())),
            State::Ndjson | State::Table(_) => Bytes::new(),
        })
    }

    /// One batch's bytes (nothing for a text table until [`Encoder::finish`]).
    ///
    /// # Errors
    ///
    /// Arrow's error if a value cannot be encoded.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        match &mut self.state {
            State::Json { rows } => {
                if batch.num_rows() == 0 {
                    return Ok(Bytes::new());
                }
                let mut writer = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, JsonArray>(Vec::new());
                writer.write(batch)?;
                writer.finish()?;
                let text = writer.into_inner();
                // `[row,row]`: keep the rows, joined to the previous batch's by a comma.
                let inner = text
                    .get(1..text.len().saturating_sub(1))
                    .unwrap_or_default();
                let mut out = Vec::with_capacity(inner.len() + 1);
                if *rows > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(inner);
                *rows += batch.num_rows();
                Ok(Bytes::from(out))
            }
            State::Ndjson => {
                let mut writer = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(Vec::new());
                writer.write(batch)?;
                writer.finish()?;
                Ok(Bytes::from(writer.into_inner()))
            }
            State::Ipc(writer) => {
                writer.write(batch)?;
                Ok(Bytes::from(std::mem::take(writer.get_mut())))
            }
            State::Table(batches) => {
                batches.push(batch.clone());
                Ok(Bytes::new())
            }
        }
    }

    /// What comes after the last batch.
    ///
    /// # Errors
    ///
    /// Arrow's error.
    pub fn finish(self) -> Result<Bytes, ArrowError> {
        match self.state {
            State::Json { .. } => Ok(Bytes::from_static(b"]")),
            State::Ndjson => Ok(Bytes::new()),
            State::Ipc(mut writer) => {
                writer.finish()?;
                Ok(Bytes::from(writer.into_inner()?))
            }
            State::Table(batches) => {
                let mut text = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
                text.push('\n');
                Ok(Bytes::from(text))
            }
        }
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let format = match self.state {
            State::Json { .. } => Format::Json,
            State::Ndjson => Format::Ndjson,
            State::Ipc(_) => Format::ArrowIpc,
            State::Table(_) => Format::Table,
        };
        f.debug_struct("Encoder").field("format", &format).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BinaryArray, StringArray, UInt64Array};

    use super::*;

    fn batch(from: u64) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "n",
                Arc::new(UInt64Array::from(vec![from, from + 1])) as arrow::array::ArrayRef,
            ),
            ("s", Arc::new(StringArray::from(vec![Some("a"), None])) as _),
            (
                "b",
                Arc::new(BinaryArray::from(vec![&b"\x01"[..], b""])) as _,
            ),
        ])
        .unwrap()
    }

    fn encode(format: Format, batches: &[RecordBatch]) -> Vec<u8> {
        let mut encoder = Encoder::new(format, batches[0].schema()).unwrap();
        let mut out = encoder.begin().unwrap().to_vec();
        for batch in batches {
            out.extend_from_slice(&encoder.batch(batch).unwrap());
        }
        out.extend_from_slice(&encoder.finish().unwrap());
        out
    }

    #[test]
    fn json_joins_batches_into_one_array() {
        let empty = batch(0).slice(0, 0);
        let out = encode(Format::Json, &[batch(1), empty, batch(3)]);
        let rows: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 4);
        assert_eq!(rows[1]["s"], serde_json::Value::Null);
        assert_eq!(rows[0]["b"], "01");
        assert_eq!(encode(Format::Json, &[batch(0).slice(0, 0)]), b"[]");
    }

    #[test]
    fn ndjson_is_one_row_per_line() {
        let out = String::from_utf8(encode(Format::Ndjson, &[batch(1), batch(3)])).unwrap();
        assert_eq!(out.lines().count(), 4);
    }

    #[test]
    fn arrow_ipc_reads_back() {
        let out = encode(Format::ArrowIpc, &[batch(1), batch(3)]);
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(out), None).unwrap();
        let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(batches, [batch(1), batch(3)]);
    }

    #[test]
    fn table_aligns_every_row() {
        let out = String::from_utf8(encode(Format::Table, &[batch(1), batch(3)])).unwrap();
        assert!(out.contains("| n | s | b  |"), "{out}");
        assert_eq!(out.lines().count(), 8);
    }

    #[test]
    fn formats_parse_by_name() {
        for format in [
            Format::Json,
            Format::Ndjson,
            Format::ArrowIpc,
            Format::Table,
        ] {
            assert_eq!(format.name().parse::<Format>(), Ok(format));
        }
        assert!("xml".parse::<Format>().is_err());
    }
}
