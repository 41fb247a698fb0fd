//! Self-describing checkpoints: a directory that holds everything needed to caption images,
//! without the training config.
//!
//! ```text
//! checkpoint/
//!   model.safetensors   the captioner's tensors (burn-store paths, f32), incl. BatchNorm statistics
//!   config.json         the CaptionerConfig (encoder, decoder, vocabulary size, max length, special tokens)
//!   vocab.json          the text encoder (TextEncoder::save; subword ones add tokenizer.json)
//!   meta.json           format version, run name, step, epoch, metrics, creation time
//! ```
//!
//! [`save_checkpoint`] writes the files into a temporary directory beside the target
//! (`.NAME.tmp-PID-NANOS`), flushes every file and the directory to disk, then renames it into
//! place. An existing checkpoint at the target is first renamed aside (`.NAME.old-PID-NANOS`)
//! and removed once the new one is in place, so a reader sees the old checkpoint, or the new one,
//! never a mixture; if the process dies between the two renames, the previous checkpoint is
//! left under its `.old-` name. A target that exists but is not a checkpoint directory (and not
//! empty) is refused rather than replaced.
//!
//! [`load_checkpoint`] checks the format version, the config, the vocabulary against the config,
//! and that the weights fit the model exactly (no missing, extra or mis-shaped tensors); each
//! failure is a [`CheckpointError`] that names the file and says what to do.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use burn::prelude::*;
use burn_store::{ApplyError, ModuleSnapshot, ModuleStore, SafetensorsStore};
use caption_data::{DataError, TextEncoder};
use serde::{Deserialize, Serialize};

use crate::captioner::{Captioner, CaptionerConfig};
use crate::decoder::ConfigError;

/// The checkpoint layout this build writes and reads.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const META_FILE: &str = "meta.json";
/// Written by [`TextEncoder::save`].
pub const VOCAB_FILE: &str = "vocab.json";

/// What `meta.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// [`CHECKPOINT_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The training run's name.
    pub run_name: String,
    /// Optimiser steps taken.
    pub step: u64,
    /// Completed epochs, if the run counts them.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Evaluation results at this point (`"val/CIDEr": 0.93`, `"train/loss": 2.1`, ...).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Creation time, RFC 3339 in UTC (`2025-01-31T12:00:00Z`).
    pub created: String,
    /// Version of the `caption-model` crate that wrote it.
    #[serde(default)]
    pub writer: String,
    /// How images were prepared for the model in training (size, resize mode, normalisation),
    /// so that evaluation and serving feed it the same way without the training config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<caption_data::image::ImageConfig>,
    /// How captions are decoded unless a call says otherwise (the run's test decoding), so that
    /// `caption caption`, `caption eval` and the server write the captions that were scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding: Option<crate::DecodingConfig>,
}

impl CheckpointMeta {
    /// Metadata created now, for step `step` of run `run_name`.
    pub fn new(run_name: impl Into<String>, step: u64) -> Self {
        CheckpointMeta {
            format_version: CHECKPOINT_FORMAT_VERSION,
            run_name: run_name.into(),
            step,
            epoch: None,
            metrics: BTreeMap::new(),
            created: caption_data::time::now_rfc3339(),
            writer: format!("caption-model {}", env!("CARGO_PKG_VERSION")),
            preprocess: None,
            decoding: None,
        }
    }

    pub fn with_epoch(self, epoch: u64) -> Self {
        CheckpointMeta { epoch: Some(epoch), ..self }
    }

    /// The same metadata, recording how images are prepared for the model.
    pub fn with_preprocess(self, preprocess: caption_data::image::ImageConfig) -> Self {
        CheckpointMeta { preprocess: Some(preprocess), ..self }
    }

    /// The same metadata, recording how captions are decoded by default.
    pub fn with_decoding(self, decoding: crate::DecodingConfig) -> Self {
        CheckpointMeta { decoding: Some(decoding), ..self }
    }

    pub fn with_metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.insert(name.into(), value);
        self
    }
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint<B: Backend> {
    /// The model, with its [`CaptionerConfig`] (`model.config()`).
    pub model: Captioner<B>,
    pub text: TextEncoder,
    pub meta: CheckpointMeta,
}

const FILES: &str = "model.safetensors, config.json, vocab.json and meta.json";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: no checkpoint directory there; expected a directory with {FILES}", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: missing; a checkpoint directory holds {FILES}, so this one is incomplete (copied partially, or not a checkpoint): copy it again or point to another checkpoint", path.display())]
    MissingFile { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid {what}: {message}. The file is corrupt or truncated: copy the checkpoint again, or use another one", path.display())]
    Corrupt { path: PathBuf, what: &'static str, message: String },
    #[error("{}: checkpoint format version {found} is not supported (this build reads version {supported}): use the caption release that wrote it, or re-save the checkpoint with this one", path.display())]
    UnsupportedVersion { path: PathBuf, found: u64, supported: u32 },
    #[error("{}: {source}. Fix the file, or use the config.json the checkpoint was saved with", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error("{}: the weights do not fit the model described by config.json: {details}. The files come from different models, or config.json was edited: use the checkpoint's original files", path.display())]
    WeightsMismatch { path: PathBuf, details: String },
    #[error("{}: {source}", path.display())]
    Vocab {
        path: PathBuf,
        #[source]
        source: DataError,
    },
    #[error("{}: does not fit config.json: {message}. The vocabulary was replaced or comes from another run: use the checkpoint's original vocab.json", path.display())]
    VocabMismatch { path: PathBuf, message: String },
    #[error("{}: refusing to replace it with a checkpoint: it exists and is not a checkpoint directory (no {META_FILE} or {CONFIG_FILE}); choose another path", path.display())]
    NotACheckpoint { path: PathBuf },
    #[error("cannot write checkpoint {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
}

fn io_error(path: &Path, source: std::io::Error) -> CheckpointError {
    if source.kind() == std::io::ErrorKind::NotFound {
        CheckpointError::MissingFile { path: path.to_path_buf() }
    } else {
        CheckpointError::Io { path: path.to_path_buf(), source }
    }
}

/// Writes `model`, its config, `text` and `meta` as a checkpoint directory at `dir`, atomically
/// (see the module docs). The written `meta.json` gets `format_version`
/// [`CHECKPOINT_FORMAT_VERSION`], `created` now and `writer` this crate's version, whatever
/// `meta` held. Save the inference model (`model.valid()`) or the training one: the tensors are
/// the same.
pub fn save_checkpoint<B: Backend>(
    dir: &Path,
    model: &Captioner<B>,
    text: &TextEncoder,
    meta: &CheckpointMeta,
) -> Result<(), CheckpointError> {
    let write_error = |message: String| CheckpointError::Write { path: dir.to_path_buf(), message };
    model.config().check_text_encoder(text).map_err(|m| write_error(format!("the vocabulary does not fit the model: {m}")))?;
    if dir.exists() && !is_replaceable(dir) {
        return Err(CheckpointError::NotACheckpoint { path: dir.to_path_buf() });
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dir.file_name().ok_or_else(|| write_error("the path has no directory name".into()))?.to_string_lossy().into_owned();
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    let unique = format!("{}-{}", std::process::id(), SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    let tmp = parent.join(format!(".{name}.tmp-{unique}"));

    let written = write_files(&tmp, model, text, meta);
    if let Err(error) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(error);
    }

    // Swap the new directory in.
    let old = parent.join(format!(".{name}.old-{unique}"));
    let had_old = dir.exists();
    if had_old && let Err(e) = std::fs::rename(dir, &old) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(write_error(format!("cannot move the previous checkpoint aside: {e}")));
    }
    if let Err(e) = std::fs::rename(&tmp, dir) {
        if had_old {
            let _ = std::fs::rename(&old, dir);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(write_error(format!("cannot move the new checkpoint into place: {e}")));
    }
    sync_dir(parent);
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// An existing directory may be replaced if it is empty or looks like a checkpoint.
fn is_replaceable(dir: &Path) -> bool {
    if !dir.is_dir() {
        return false;
    }
    let empty = std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()).unwrap_or(false);
    empty || dir.join(META_FILE).is_file() || dir.join(CONFIG_FILE).is_file()
}

fn write_files<B: Backend>(tmp: &Path, model: &Captioner<B>, text: &TextEncoder, meta: &CheckpointMeta) -> Result<(), CheckpointError> {
    let write_error = |path: &Path, message: String| CheckpointError::Write { path: path.to_path_buf(), message };
    std::fs::create_dir(tmp).map_err(|e| write_error(tmp, e.to_string()))?;

    let weights = tmp.join(WEIGHTS_FILE);
    let mut store = SafetensorsStore::from_file(&weights)
        .metadata("caption_checkpoint_format_version", CHECKPOINT_FORMAT_VERSION.to_string())
        .overwrite(true);
    model.save_into(&mut store).map_err(|e| write_error(&weights, e.to_string()))?;
    sync_file(&weights).map_err(|e| write_error(&weights, e.to_string()))?;

    let config = model.config().to_json();
    write_synced(&tmp.join(CONFIG_FILE), config.as_bytes()).map_err(|e| write_error(&tmp.join(CONFIG_FILE), e.to_string()))?;

    let fresh = CheckpointMeta::new(meta.run_name.clone(), meta.step);
    let meta = CheckpointMeta { format_version: fresh.format_version, created: fresh.created, writer: fresh.writer, ..meta.clone() };
    let json = serde_json::to_string_pretty(&meta).expect("checkpoint metadata serialises");
    write_synced(&tmp.join(META_FILE), json.as_bytes()).map_err(|e| write_error(&tmp.join(META_FILE), e.to_string()))?;

    // Written atomically and synced by the data crate.
    text.save(tmp).map_err(|e| write_error(tmp, e.to_string()))?;
    sync_dir(tmp);
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new().read(true).open(path)?.sync_all()
}

/// Flushes a directory's entries (best effort: not every platform can open directories).
fn sync_dir(path: &Path) {
    if let Ok(dir) = std::fs::File::open(path) {
        let _ = dir.sync_all();
    }
}

/// Reads a checkpoint's config and metadata without its weights or vocabulary.
pub fn read_checkpoint_info(dir: &Path) -> Result<(CaptionerConfig, CheckpointMeta), CheckpointError> {
    if !dir.is_dir() {
        return Err(CheckpointError::NotFound { path: dir.to_path_buf() });
    }
    let meta = read_meta(&dir.join(META_FILE))?;
    let config = read_config(&dir.join(CONFIG_FILE))?;
    Ok((config, meta))
}

fn read_text(path: &Path) -> Result<String, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    String::from_utf8(bytes).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        what: "UTF-8 text file",
        message: e.to_string(),
    })
}

fn read_meta(path: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let text = read_text(path)?;
    let corrupt = |message: String| CheckpointError::Corrupt { path: path.to_path_buf(), what: "checkpoint metadata file", message };
    // The version first: a future layout may change every other field.
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    let version =
        value.get("format_version").and_then(serde_json::Value::as_u64).ok_or_else(|| corrupt("no `format_version` number".into()))?;
    if version != CHECKPOINT_FORMAT_VERSION as u64 {
        return Err(CheckpointError::UnsupportedVersion { path: path.to_path_buf(), found: version, supported: CHECKPOINT_FORMAT_VERSION });
    }
    serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
}

fn read_config(path: &Path) -> Result<CaptionerConfig, CheckpointError> {
    let text = read_text(path)?;
    let config = CaptionerConfig::from_json(&text).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        what: "captioner config",
        message: e.to_string(),
    })?;
    config.validate().map_err(|source| CheckpointError::Config { path: path.to_path_buf(), source })?;
    Ok(config)
}

/// Loads a checkpoint directory onto `device` (see the module docs for what is checked).
pub fn load_checkpoint<B: Backend>(dir: &Path, device: &B::Device) -> Result<Checkpoint<B>, CheckpointError> {
    let (config, meta) = read_checkpoint_info(dir)?;

    let vocab_path = dir.join(VOCAB_FILE);
    if !vocab_path.is_file() {
        return Err(CheckpointError::MissingFile { path: vocab_path });
    }
    let text = TextEncoder::load(dir).map_err(|source| CheckpointError::Vocab { path: vocab_path.clone(), source })?;
    config.check_text_encoder(&text).map_err(|message| CheckpointError::VocabMismatch { path: vocab_path, message })?;

    let config_path = dir.join(CONFIG_FILE);
    let mut model = config.init::<B>(device).map_err(|source| CheckpointError::Config { path: config_path, source })?;
    let weights = dir.join(WEIGHTS_FILE);
    load_weights(&mut model, &weights)?;
    Ok(Checkpoint { model, text, meta })
}

/// Loads `path` into `model`, requiring an exact fit.
fn load_weights<B: Backend>(model: &mut Captioner<B>, path: &Path) -> Result<(), CheckpointError> {
    let corrupt = |message: String| CheckpointError::Corrupt { path: path.to_path_buf(), what: "safetensors weights file", message };
    let size = std::fs::metadata(path).map_err(|e| io_error(path, e))?.len();
    if size < 8 {
        return Err(corrupt(format!("it is {size} bytes long, shorter than a safetensors header")));
    }
    let mut store = SafetensorsStore::from_file(path);
    let snapshots: Vec<_> = store.get_all_snapshots().map_err(|e| corrupt(e.to_string()))?.values().cloned().collect();
    let result = model.apply(snapshots, None, None, false);

    const SHOWN: usize = 5;
    let list = |what: &str, keys: &[String]| -> Option<String> {
        if keys.is_empty() {
            return None;
        }
        let shown: Vec<&str> = keys.iter().take(SHOWN).map(String::as_str).collect();
        let more = if keys.len() > SHOWN { format!(" and {} more", keys.len() - SHOWN) } else { String::new() };
        Some(format!("{} {what}: {}{more}", keys.len(), shown.join(", ")))
    };
    let mut mismatches = Vec::new();
    let mut unreadable = Vec::new();
    for error in &result.errors {
        match error {
            ApplyError::ShapeMismatch { path: key, expected, found } => {
                mismatches.push(format!("{key} is {:?} in the file, the model has {:?}", found.to_vec(), expected.to_vec()));
            }
            other => unreadable.push(other.to_string()),
        }
    }
    let mut problems = Vec::new();
    if !mismatches.is_empty() {
        let more = if mismatches.len() > SHOWN { format!(" and {} more", mismatches.len() - SHOWN) } else { String::new() };
        problems.push(format!("{} shape mismatches: {}{more}", mismatches.len(), mismatches[..mismatches.len().min(SHOWN)].join(", ")));
    }
    if !unreadable.is_empty() {
        return Err(corrupt(format!("cannot read tensors: {}", unreadable.into_iter().take(SHOWN).collect::<Vec<_>>().join("; "))));
    }
    let missing: Vec<String> = result.missing.iter().map(|(key, _)| key.clone()).collect();
    problems.extend(list("tensors missing from the file", &missing));
    problems.extend(list("tensors in the file that the model does not have", &result.unused));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckpointError::WeightsMismatch { path: path.to_path_buf(), details: problems.join("; ") })
    }
}
