//! `manifest.jsonl`: one line per item, a NeMo-style manifest (`audio_filepath`, `duration`)
//! that also names each feature file with its shape, and carries the models' segments and
//! labels. File paths (`features.<name>.path`, `models.<name>.file`) are relative to `out`,
//! the outputs folder (absolute) or object-store prefix the export read.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Map, Value};

use super::{DestFile, FormatWriter, Item, ItemProblem, Outputs};
use crate::item::Source;

/// The manifest being written.
pub struct Jsonl {
    file: DestFile,
    outputs_root: String,
}

impl Jsonl {
    /// Starts `to/manifest.jsonl`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn new(to: &Path, outputs: &Outputs) -> Result<Jsonl> {
        let outputs_root = match outputs {
            Outputs::Dir(d) => crate::item::absolute(d).display().to_string(),
            Outputs::Store { prefix, .. } => prefix.to_string(),
        };
        Ok(Jsonl {
            file: DestFile::create(to, "manifest.jsonl")?,
            outputs_root,
        })
    }
}

/// The manifest line of an item (what `export --format jsonl` writes).
pub fn line(item: &Item, outputs: &Outputs, outputs_root: &str) -> Result<Value, ItemProblem> {
    let meta = &item.meta;
    let e = &item.row.element;
    let mut features = Map::new();
    let mut sample_rate = Value::Null;
    let mut duration = item.row.duration_s.map_or(Value::Null, Value::from);
    if let Some(a) = &meta.audio {
        sample_rate = a.sample_rate_hz.into();
        duration = a.duration_s.into();
        for (name, f) in &a.features {
            if !item.row.outputs.contains(&f.file) {
                return Err(ItemProblem::Item(format!(
                    "feature {name}: {} is not among the outputs the ledger recorded",
                    f.file
                )));
            }
            // The manifest names files without reading them: each must be there, as long as
            // a float32 .npy of its shape (a missing, truncated or foreign file is reported).
            let want = crate::stage::sink::npy_header(&f.shape).len() as u64
                + 4 * f.shape.iter().product::<usize>() as u64;
            let got = outputs.size(e, &f.file)?;
            if got != want {
                return Err(ItemProblem::Item(format!(
                    "{}: {got} bytes where a float32 .npy of shape {:?} has {want}",
                    outputs.location(e, &f.file),
                    f.shape
                )));
            }
            features.insert(
                name.clone(),
                json!({ "path": format!("{e}/{}", f.file), "shape": f.shape, "dtype": f.dtype }),
            );
        }
    }
    let mut models = Map::new();
    let mut segments = Value::Null;
    for m in meta.models.iter().flatten() {
        let mut entry = Map::new();
        entry.insert("file".into(), format!("{e}/{}", m.file).into());
        if let Some(v) = &m.values {
            entry.insert("values".into(), format!("{e}/{v}").into());
        }
        if m.file.ends_with(".json") {
            let body: Value =
                serde_json::from_slice(&outputs.read(e, &m.file)?).map_err(|err| {
                    ItemProblem::Item(format!("{}: {err}", outputs.location(e, &m.file)))
                })?;
            for key in ["segments", "labels"] {
                if let Some(v) = body.get(key) {
                    let kept = match key {
                        "segments" => Value::Array(
                            v.as_array()
                                .into_iter()
                                .flatten()
                                .map(|s| json!({ "start": s["start"], "end": s["end"] }))
                                .collect(),
                        ),
                        _ => v.clone(),
                    };
                    if key == "segments" && segments.is_null() {
                        segments = kept.clone();
                    }
                    entry.insert(key.into(), kept);
                }
            }
        }
        models.insert(m.name.clone(), Value::Object(entry));
    }
    Ok(json!({
        "element": e,
        "source": item.row.source,
        // A local source as its path (a `file://` URI unwrapped), a remote one as its URL.
        "audio_filepath": Source::parse(&item.row.source)
            .map_or_else(|_| item.row.source.clone(), |s| s.to_string()),
        "duration": duration,
        "sample_rate_hz": sample_rate,
        "out": outputs_root,
        "features": features,
        "segments": segments,
        "models": models,
        "config_hash": item.row.config_hash,
        "input_hash": item.row.input_hash,
    }))
}

impl FormatWriter for Jsonl {
    fn add(&mut self, item: &Item, outputs: &Outputs) -> Result<(), ItemProblem> {
        let v = line(item, outputs, &self.outputs_root)?;
        let mut text = serde_json::to_vec(&v).map_err(|e| ItemProblem::Fatal(e.into()))?;
        text.push(b'\n');
        self.file
            .write_all(&text)
            .map_err(|e| ItemProblem::Fatal(anyhow::Error::new(e).context("manifest.jsonl")))?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(u64, u64)> {
        let bytes = self.file.finish()?;
        Ok((1, bytes))
    }
}
