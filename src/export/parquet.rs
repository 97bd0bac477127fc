//! Parquet: `part-00000.parquet`, `part-00001.parquet`, ..., one row per item, zstd. A row
//! group holds [`ROW_GROUP_BYTES`] of values (or [`ROW_GROUP_ROWS`] items, or `--max-file-mb`
//! if less), so that streaming readers (Hugging Face `datasets`, DuckDB) hold one group at a
//! time; a file is closed, and the next begun, at the first row group that takes it past
//! `--max-file-mb`.
//!
//! Columns: `element`, `source`, `duration_s`, `sample_rate_hz`, `frames`, `config_hash`,
//! `input_hash`, `meta` (the item's `meta.json`, as text); one column per feature, named after
//! it (`log_mel`), holding the `.npy`'s values as nested float32 lists in the file's own
//! orientation (librosa's `[dim][frames]`; `[channel][dim][frames]` with `channels = "keep"`),
//! with `<feature>_shape`; per model, `<model>_segments` (a list of `{start, end}` seconds) and
//! `<model>_probs` for segment models, `<model>_labels` (`{label, score}`, best first) and
//! `<model>_scores` for label models, `<model>` (float32, flattened) and `<model>_shape` for
//! tensor and embedding models. The columns come from the first item exported; a later item
//! without one of them gets a null there, and one whose feature has another number of
//! dimensions is reported and left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::builder::{Float64Builder, Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, Float32Array, Float64Array, ListArray, RecordBatch, StringArray, StructArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Encoding, Type as PhysicalType, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::{parse_npy, DestFile, FormatWriter, Item, ItemProblem, Npy, Outputs};

/// A row group holds at most about this many bytes of values: a reader holds one group at a
/// time, and buffers of this size are reused by the allocator where 64 MiB ones went back to
/// the kernel and were faulted in again for every group (a third of the time, by `perf`).
pub const ROW_GROUP_BYTES: u64 = 8 << 20;
/// zstd's level: 1 compresses these values as well as 3 does, faster.
const ZSTD_LEVEL: i32 = 1;
/// A row group holds at most this many items.
pub const ROW_GROUP_ROWS: usize = 1024;

/// What a column holds.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A feature's `.npy` with this many dimensions.
    Feature { ndim: usize },
    /// A segments model: `<name>.json`'s segments.
    Segments,
    /// A labels model: `<name>.json`'s labels.
    Labels,
    /// A float32 `.npy` of any shape, flattened (probabilities, scores, tensors).
    Flat,
    /// The shape of a `.npy` (`<feature>_shape`, `<model>_shape`).
    Shape,
}

/// One column beyond the fixed ones: its name, kind and the output file it reads.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
    file: String,
}

/// One item's values for the dynamic columns (None: null).
enum Cell {
    Npy(Npy),
    Segments(Vec<(f64, f64)>),
    Labels(Vec<(String, f32)>),
    Shape(Vec<i64>),
}

/// One row, read.
struct Row {
    element: String,
    source: String,
    duration_s: Option<f64>,
    sample_rate_hz: Option<i64>,
    frames: Option<i64>,
    config_hash: String,
    input_hash: Option<String>,
    meta: String,
    cells: Vec<Option<Cell>>,
    bytes: u64,
}

/// The parts being written: rows are read, parsed and made into a row group's arrays on the
/// caller's thread while an encoder thread encodes and compresses the group before.
pub struct Parts {
    to: PathBuf,
    max_file_bytes: u64,
    columns: Option<Vec<Column>>,
    pending: Vec<Row>,
    pending_bytes: u64,
    encoder: Option<Encoder>,
}

/// The encoder thread and the channel that feeds it row groups.
struct Encoder {
    schema: SchemaRef,
    /// A row group, or `None`: finish the open file (a channel closed without it, when the
    /// export stops on an error, leaves the file unfinished, and so never renamed into place).
    groups: std::sync::mpsc::SyncSender<Option<RecordBatch>>,
    thread: std::thread::JoinHandle<Result<(u64, u64)>>,
}

/// What the encoder thread owns: the open file and the counts.
struct Files {
    to: PathBuf,
    max_file_bytes: u64,
    schema: SchemaRef,
    writer: Option<ArrowWriter<DestFile>>,
    next: usize,
    files: u64,
    bytes: u64,
}

impl Parts {
    /// Parts of at most about `max_file_bytes` each in `to`.
    pub fn new(to: &Path, max_file_bytes: u64) -> Parts {
        Parts {
            to: to.to_path_buf(),
            max_file_bytes: max_file_bytes.max(1),
            columns: None,
            pending: Vec::new(),
            pending_bytes: 0,
            encoder: None,
        }
    }

    /// Hands the pending rows to the encoder as one row group.
    fn flush(&mut self) -> Result<()> {
        let (Some(columns), false) = (&self.columns, self.pending.is_empty()) else {
            return Ok(());
        };
        if self.encoder.is_none() {
            let mut files = Files {
                to: self.to.clone(),
                max_file_bytes: self.max_file_bytes,
                schema: schema_of(columns),
                writer: None,
                next: 0,
                files: 0,
                bytes: 0,
            };
            // One group queued while one is encoded: memory stays at about three groups.
            let (groups, rx) = std::sync::mpsc::sync_channel::<Option<RecordBatch>>(1);
            let thread = std::thread::Builder::new()
                .name("parquet-encoder".into())
                .spawn(move || {
                    for group in rx {
                        match group {
                            Some(batch) => files.write(&batch)?,
                            None => {
                                files.close_file()?;
                                return Ok((files.files, files.bytes));
                            }
                        }
                    }
                    Ok((files.files, files.bytes))
                })
                .context("cannot start the Parquet encoder thread")?;
            self.encoder = Some(Encoder {
                schema: schema_of(columns),
                groups,
                thread,
            });
        }
        let rows = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let enc = self.encoder.as_ref().expect("started above");
        let batch = build_batch(&enc.schema, columns, rows)?;
        if enc.groups.send(Some(batch)).is_err() {
            // The encoder stopped on an error: that error is the one to report.
            return Err(self
                .join(false)
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the Parquet encoder stopped")));
        }
        Ok(())
    }

    /// Waits for the encoder to write what it was given, finishing the open file with
    /// `finish`: (files, bytes).
    fn join(&mut self, finish: bool) -> Result<(u64, u64)> {
        let Some(Encoder { groups, thread, .. }) = self.encoder.take() else {
            return Ok((0, 0));
        };
        if finish {
            // A send fails only if the encoder stopped; join then returns its error.
            let _ = groups.send(None);
        }
        drop(groups);
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the Parquet encoder thread panicked"))?
    }
}

impl Files {
    /// Writes `batch` as one row group, and closes the file once it is full.
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.writer.is_none() {
            let name = format!("part-{:05}.parquet", self.next);
            self.next += 1;
            let file = DestFile::create(&self.to, &name)?;
            let props = props(&self.schema)?;
            self.writer = Some(ArrowWriter::try_new(
                file,
                self.schema.clone(),
                Some(props),
            )?);
        }
        let w = self.writer.as_mut().expect("opened above");
        w.write(batch)?;
        w.flush()?;
        if w.bytes_written() as u64 >= self.max_file_bytes {
            self.close_file()?;
        }
        Ok(())
    }

    fn close_file(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let file = w.into_inner().context("cannot finish a Parquet file")?;
            self.bytes += file.finish()?;
            self.files += 1;
        }
        Ok(())
    }
}

/// The writer's settings for `schema`: zstd; float values byte-stream-split (their exponent
/// bytes then compress: 12% smaller than without) with no statistics (min/max of feature
/// values prune nothing); dictionaries off everywhere (values, ids and hashes are unique).
fn props(schema: &Schema) -> Result<WriterProperties> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(false);
    let descr = ArrowSchemaConverter::new().convert(schema)?;
    for c in descr.columns() {
        if c.physical_type() == PhysicalType::FLOAT {
            b = b
                .set_column_encoding(c.path().clone(), Encoding::BYTE_STREAM_SPLIT)
                .set_column_statistics_enabled(c.path().clone(), EnabledStatistics::None);
        }
    }
    Ok(b.build())
}

/// The dynamic columns of the first item.
fn columns_of(item: &Item) -> Vec<Column> {
    let mut cols = Vec::new();
    let mut push = |name: String, kind: Kind, file: &str| {
        cols.push(Column {
            name,
            kind,
            file: file.to_string(),
        })
    };
    if let Some(a) = &item.meta.audio {
        for (name, f) in &a.features {
            let ndim = f.shape.len();
            push(name.clone(), Kind::Feature { ndim }, &f.file);
            push(format!("{name}_shape"), Kind::Shape, &f.file);
        }
    }
    for m in item.meta.models.iter().flatten() {
        if !m.file.ends_with(".json") {
            push(m.name.clone(), Kind::Flat, &m.file);
            push(format!("{}_shape", m.name), Kind::Shape, &m.file);
            continue;
        }
        let (kind, list, values) = match m.segments {
            Some(_) => (Kind::Segments, "segments", "probs"),
            None => (Kind::Labels, "labels", "scores"),
        };
        push(format!("{}_{list}", m.name), kind, &m.file);
        if let Some(v) = &m.values {
            push(format!("{}_{values}", m.name), Kind::Flat, v);
        }
    }
    cols
}

fn float_list(depth: usize) -> DataType {
    let mut t = DataType::Float32;
    for _ in 0..depth {
        t = DataType::List(Arc::new(Field::new("item", t, true)));
    }
    t
}

fn segment_fields() -> Fields {
    Fields::from(vec![
        Field::new("start", DataType::Float64, false),
        Field::new("end", DataType::Float64, false),
    ])
}

fn label_fields() -> Fields {
    Fields::from(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ])
}

fn column_type(kind: &Kind) -> DataType {
    match kind {
        Kind::Feature { ndim } => float_list((*ndim).max(1)),
        Kind::Flat => float_list(1),
        Kind::Shape => DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
        Kind::Segments => DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(segment_fields()),
            true,
        ))),
        Kind::Labels => DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(label_fields()),
            true,
        ))),
    }
}

fn schema_of(columns: &[Column]) -> SchemaRef {
    let mut fields = vec![
        Field::new("element", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("duration_s", DataType::Float64, true),
        Field::new("sample_rate_hz", DataType::Int64, true),
        Field::new("frames", DataType::Int64, true),
        Field::new("config_hash", DataType::Utf8, false),
        Field::new("input_hash", DataType::Utf8, true),
        Field::new("meta", DataType::Utf8, false),
    ];
    for c in columns {
        fields.push(Field::new(&c.name, column_type(&c.kind), true));
    }
    Arc::new(Schema::new(fields))
}

/// Reads one item's cells for `columns`.
fn read_row(item: &Item, outputs: &Outputs, columns: &[Column]) -> Result<Row, ItemProblem> {
    let e = &item.row.element;
    // A `<name>_shape` column follows the column that read its file (see `columns_of`).
    let mut shapes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut cells = Vec::with_capacity(columns.len());
    let mut bytes = 0u64;
    for c in columns {
        if !item.row.outputs.contains(&c.file) {
            cells.push(None);
            continue;
        }
        let at = || outputs.location(e, &c.file);
        let cell = match &c.kind {
            Kind::Feature { .. } | Kind::Flat => {
                let npy = parse_npy(&outputs.read(e, &c.file)?).with_context(at)?;
                if let Kind::Feature { ndim } = c.kind {
                    if npy.shape.len() != ndim {
                        return Err(ItemProblem::Item(format!(
                            "{}: {} dimensions where the export's first item had {ndim} \
                             (export items of one config together)",
                            at(),
                            npy.shape.len()
                        )));
                    }
                }
                if npy.values.len() > i32::MAX as usize {
                    return Err(ItemProblem::Item(format!(
                        "{}: {} values, more than a Parquet list holds",
                        at(),
                        npy.values.len()
                    )));
                }
                bytes += 4 * npy.values.len() as u64;
                shapes.insert(&c.file, npy.shape.clone());
                Cell::Npy(npy)
            }
            Kind::Shape => {
                let shape = shapes.get(c.file.as_str()).ok_or_else(|| {
                    ItemProblem::Item(format!("{}: no values read before its shape", at()))
                })?;
                Cell::Shape(shape.iter().map(|&d| d as i64).collect())
            }
            Kind::Segments | Kind::Labels => {
                let v: serde_json::Value =
                    serde_json::from_slice(&outputs.read(e, &c.file)?).with_context(at)?;
                if c.kind == Kind::Segments {
                    let list = v["segments"].as_array().cloned().unwrap_or_default();
                    Cell::Segments(
                        list.iter()
                            .map(|s| {
                                (
                                    s["start"].as_f64().unwrap_or(f64::NAN),
                                    s["end"].as_f64().unwrap_or(f64::NAN),
                                )
                            })
                            .collect(),
                    )
                } else {
                    let list = v["labels"].as_array().cloned().unwrap_or_default();
                    Cell::Labels(
                        list.iter()
                            .map(|l| {
                                (
                                    l["label"].as_str().unwrap_or_default().to_string(),
                                    l["score"].as_f64().unwrap_or(f64::NAN) as f32,
                                )
                            })
                            .collect(),
                    )
                }
            }
        };
        cells.push(Some(cell));
    }
    let audio = item.meta.audio.as_ref();
    Ok(Row {
        element: e.clone(),
        source: item.row.source.clone(),
        duration_s: audio.map(|a| a.duration_s).or(item.row.duration_s),
        sample_rate_hz: audio.map(|a| i64::from(a.sample_rate_hz)),
        frames: audio.and_then(|a| a.frames).map(|f| f as i64),
        config_hash: item.row.config_hash.clone(),
        input_hash: item.row.input_hash.clone(),
        meta: String::from_utf8_lossy(&item.meta_bytes).into_owned(),
        cells,
        bytes,
    })
}

/// Nested lists of depth `shape.len()` per row (at least 1), from each row's flat values.
fn nested_floats(rows: &[Option<&Npy>], depth: usize) -> Result<ArrayRef> {
    let depth = depth.max(1);
    let mut values = Vec::new();
    for n in rows.iter().flatten() {
        values.extend_from_slice(&n.values);
    }
    let mut array: ArrayRef = Arc::new(Float32Array::from(values));
    // From the innermost level out: level k's lists each hold shape[k] of level k + 1's.
    for level in (0..depth).rev() {
        let mut lengths = Vec::new();
        for n in rows.iter() {
            match n {
                Some(n) => {
                    let shape: Vec<usize> = if n.shape.is_empty() {
                        vec![1]
                    } else {
                        n.shape.clone()
                    };
                    let count: usize = shape[..level].iter().product();
                    lengths.extend(std::iter::repeat_n(shape[level], count));
                }
                None if level == 0 => lengths.push(0),
                None => {}
            }
        }
        let nulls = (level == 0)
            .then(|| NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>()));
        let field = Arc::new(Field::new("item", array.data_type().clone(), true));
        array = Arc::new(ListArray::try_new(
            field,
            OffsetBuffer::from_lengths(lengths),
            array,
            nulls,
        )?);
    }
    Ok(array)
}

/// Each row's list length in column `i` (None: null), from `take`, which also appends the
/// cell's values to the column's child builders.
fn list_lengths(
    rows: &[Row],
    i: usize,
    mut take: impl FnMut(&Cell) -> Option<usize>,
) -> Vec<Option<usize>> {
    rows.iter()
        .map(|r| r.cells.get(i).and_then(Option::as_ref).and_then(&mut take))
        .collect()
}

/// A list-of-structs column: the structs' `children` (one array per field, all rows' entries
/// in a row), cut into lists of `lengths` (None: a null list).
fn struct_list(
    fields: Fields,
    children: Vec<ArrayRef>,
    lengths: Vec<Option<usize>>,
) -> Result<ArrayRef> {
    let structs = StructArray::try_new(fields, children, None)?;
    let valid = NullBuffer::from(lengths.iter().map(Option::is_some).collect::<Vec<_>>());
    Ok(Arc::new(ListArray::try_new(
        Arc::new(Field::new("item", structs.data_type().clone(), true)),
        OffsetBuffer::from_lengths(lengths.into_iter().map(|l| l.unwrap_or(0))),
        Arc::new(structs),
        Some(valid),
    )?))
}

fn build_batch(schema: &SchemaRef, columns: &[Column], rows: Vec<Row>) -> Result<RecordBatch> {
    let strings = |f: &dyn Fn(&Row) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let mut arrays: Vec<ArrayRef> = vec![
        strings(&|r| Some(&r.element)),
        strings(&|r| Some(&r.source)),
        Arc::new(rows.iter().map(|r| r.duration_s).collect::<Float64Array>()),
        {
            let mut b = Int64Builder::new();
            rows.iter().for_each(|r| b.append_option(r.sample_rate_hz));
            Arc::new(b.finish())
        },
        {
            let mut b = Int64Builder::new();
            rows.iter().for_each(|r| b.append_option(r.frames));
            Arc::new(b.finish())
        },
        strings(&|r| Some(&r.config_hash)),
        strings(&|r| r.input_hash.as_deref()),
        strings(&|r| Some(&r.meta)),
    ];
    for (i, c) in columns.iter().enumerate() {
        fn cell(r: &Row, i: usize) -> Option<&Cell> {
            r.cells.get(i).and_then(Option::as_ref)
        }
        let array: ArrayRef = match &c.kind {
            Kind::Feature { ndim } => {
                let npys: Vec<Option<&Npy>> = rows
                    .iter()
                    .map(|r| match cell(r, i) {
                        Some(Cell::Npy(n)) => Some(n),
                        _ => None,
                    })
                    .collect();
                nested_floats(&npys, *ndim)?
            }
            Kind::Flat => {
                let npys: Vec<Option<Npy>> = rows
                    .iter()
                    .map(|r| match cell(r, i) {
                        Some(Cell::Npy(n)) => Some(Npy {
                            shape: vec![n.values.len()],
                            values: n.values.clone(),
                        }),
                        _ => None,
                    })
                    .collect();
                nested_floats(&npys.iter().map(Option::as_ref).collect::<Vec<_>>(), 1)?
            }
            Kind::Shape => {
                let mut b = ListBuilder::new(Int64Builder::new());
                for r in &rows {
                    match cell(r, i) {
                        Some(Cell::Shape(s)) => {
                            b.values().append_slice(s);
                            b.append(true);
                        }
                        _ => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::Segments => {
                let mut starts = Float64Builder::new();
                let mut ends = Float64Builder::new();
                let lengths = list_lengths(&rows, i, |c| match c {
                    Cell::Segments(s) => {
                        for (a, b) in s {
                            starts.append_value(*a);
                            ends.append_value(*b);
                        }
                        Some(s.len())
                    }
                    _ => None,
                });
                let children: Vec<ArrayRef> =
                    vec![Arc::new(starts.finish()), Arc::new(ends.finish())];
                struct_list(segment_fields(), children, lengths)?
            }
            Kind::Labels => {
                let mut labels = StringBuilder::new();
                let mut scores = Vec::new();
                let lengths = list_lengths(&rows, i, |c| match c {
                    Cell::Labels(l) => {
                        for (name, score) in l {
                            labels.append_value(name);
                            scores.push(*score);
                        }
                        Some(l.len())
                    }
                    _ => None,
                });
                let children: Vec<ArrayRef> = vec![
                    Arc::new(labels.finish()),
                    Arc::new(Float32Array::from(scores)),
                ];
                struct_list(label_fields(), children, lengths)?
            }
        };
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

impl FormatWriter for Parts {
    fn add(&mut self, item: &Item, outputs: &Outputs) -> Result<(), ItemProblem> {
        if self.columns.is_none() {
            self.columns = Some(columns_of(item));
        }
        let columns = self.columns.as_ref().expect("set above");
        let row = read_row(item, outputs, columns)?;
        self.pending_bytes += row.bytes;
        self.pending.push(row);
        // A row group never outgrows a file: with a small --max-file-mb, files still split.
        let group_bytes = ROW_GROUP_BYTES.min(self.max_file_bytes);
        if self.pending_bytes >= group_bytes || self.pending.len() >= ROW_GROUP_ROWS {
            self.flush().map_err(ItemProblem::Fatal)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(u64, u64)> {
        self.flush()?;
        self.join(true)
    }
}

impl Drop for Parts {
    /// Stopped early: the encoder drops its unfinished file (the temp name goes).
    fn drop(&mut self) {
        let _ = self.join(false);
    }
}
