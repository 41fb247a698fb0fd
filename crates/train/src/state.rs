//! `checkpoints/last`: a model checkpoint (`caption_model::checkpoint`) plus what resuming needs,
//! swapped into place as one directory.
//!
//! ```text
//! checkpoints/last/
//!   model.safetensors, config.json, vocab.json, meta.json   (caption_model::save_checkpoint;
//!                                                            meta.json's `preprocess` says how
//!                                                            images are prepared)
//!   optimizer.mpk      AdamW's state (burn's NamedMpkFileRecorder, full precision)
//!   train_state.json   epoch, batch within it, step, best score, patience counter, parameter order
//! ```
//!
//! The directory is assembled under `checkpoints/.last.staging-PID`, every file flushed, then
//! swapped in: the previous `last` is renamed to `.last.old-PID`, the staging directory to
//! `last`, and the old one removed. A kill between the two renames leaves no `last` but a
//! complete `.last.old-PID`, which [`recover_last`] puts back; a kill earlier leaves the previous
//! `last` intact. So `last` is always one consistent state: model, optimizer and counters from
//! the same step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Record, Recorder};
use caption_data::TextEncoder;
use caption_data::fsutil::write_atomic;
use caption_model::{Captioner, CheckpointMeta, save_checkpoint};
use serde::{Deserialize, Serialize};

pub const OPTIMIZER_FILE: &str = "optimizer"; // the recorder adds `.mpk`
pub const TRAIN_STATE_FILE: &str = "train_state.json";
const TRAIN_STATE_VERSION: u32 = 1;

/// The best validation so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub metric: String,
    pub value: f64,
    /// Completed epochs when it was reached.
    pub epoch: usize,
    pub step: u64,
}

/// Where training stands (`train_state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub format_version: u32,
    /// The epoch in progress (0-based), or the number of completed epochs when
    /// `batch_in_epoch` is 0.
    pub epoch: usize,
    /// Batches of `epoch` already trained on.
    pub batch_in_epoch: usize,
    /// Optimiser steps taken.
    pub step: u64,
    pub best: Option<Best>,
    /// Validations since the best one (early stopping stops at `train.patience`).
    pub bad_validations: usize,
    pub stopped_early: bool,
    /// Training is over (epochs done or stopped early); only the test evaluation may remain.
    pub finished: bool,
    /// Seconds spent training so far (over all sessions).
    pub train_seconds: f64,
    /// The ids of the model's float parameters in visiting order when the optimizer state was
    /// saved: the optimizer state is keyed by them, a reloaded model has new ones.
    pub param_ids: Vec<u64>,
}

impl TrainState {
    pub fn new() -> Self {
        TrainState {
            format_version: TRAIN_STATE_VERSION,
            epoch: 0,
            batch_in_epoch: 0,
            step: 0,
            best: None,
            bad_validations: 0,
            stopped_early: false,
            finished: false,
            train_seconds: 0.0,
            param_ids: Vec::new(),
        }
    }

    pub fn read(dir: &Path) -> Result<TrainState> {
        let path = dir.join(TRAIN_STATE_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {} (is this the `checkpoints/last` of a training run?)", path.display()))?;
        let state: TrainState = serde_json::from_str(&text).with_context(|| format!("{}: not a training state", path.display()))?;
        if state.format_version != TRAIN_STATE_VERSION {
            bail!("{}: format_version {} is not supported (expected {TRAIN_STATE_VERSION})", path.display(), state.format_version);
        }
        Ok(state)
    }

    /// Rewrites `train_state.json` alone (atomically), for changes that do not touch the model.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("the training state serialises");
        write_atomic(&dir.join(TRAIN_STATE_FILE), &json)?;
        Ok(())
    }
}

impl Default for TrainState {
    fn default() -> Self {
        Self::new()
    }
}

/// The ids of a module's float parameters, in visiting order.
pub fn param_ids<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl<B: Backend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.id);
        }
    }
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    ids.0
}

/// Re-keys optimizer state saved for parameters `old` to the parameters `new` (same order).
/// (`R` is the optimizer's record, a map from parameter ids to per-parameter state.)
pub fn remap_record<T, R>(record: R, old: &[u64], new: &[ParamId]) -> Result<R>
where
    R: IntoIterator<Item = (ParamId, T)> + FromIterator<(ParamId, T)>,
{
    if old.len() != new.len() {
        bail!("the optimizer state was saved for {} parameters, the model has {}", old.len(), new.len());
    }
    let map: HashMap<u64, ParamId> = old.iter().copied().zip(new.iter().copied()).collect();
    record
        .into_iter()
        .map(|(id, value)| match map.get(&id.val()) {
            Some(&new_id) => Ok((new_id, value)),
            None => bail!("the optimizer state names parameter {} that the saved parameter order does not list", id.val()),
        })
        .collect()
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

fn sync_dir(path: &Path) {
    if let Ok(dir) = std::fs::File::open(path) {
        let _ = dir.sync_all();
    }
}

/// Writes `checkpoints/last` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn save_last<B: Backend, R: Record<B>>(
    checkpoints: &Path,
    model: &Captioner<B>,
    text: &TextEncoder,
    meta: &CheckpointMeta,
    optimizer: R,
    state: &TrainState,
) -> Result<()> {
    let last = checkpoints.join(crate::run_dir::LAST);
    let pid = std::process::id();
    let staging = checkpoints.join(format!(".last.staging-{pid}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    save_checkpoint(&staging, model, text, meta).with_context(|| format!("writing {}", staging.display()))?;
    let optimizer_path = staging.join(OPTIMIZER_FILE);
    Recorder::<B>::record(&recorder(), optimizer, optimizer_path.clone())
        .map_err(|e| anyhow::anyhow!("cannot write {}.mpk: {e:?}", optimizer_path.display()))?;
    let mpk = optimizer_path.with_extension("mpk");
    std::fs::File::open(&mpk).and_then(|f| f.sync_all()).with_context(|| format!("cannot flush {}", mpk.display()))?;
    state.write(&staging)?;
    sync_dir(&staging);

    let old = checkpoints.join(format!(".last.old-{pid}"));
    let had_last = last.exists();
    if had_last {
        std::fs::rename(&last, &old).with_context(|| format!("cannot move {} aside", last.display()))?;
    }
    if let Err(e) = std::fs::rename(&staging, &last) {
        if had_last {
            let _ = std::fs::rename(&old, &last);
        }
        return Err(e).with_context(|| format!("cannot move the new checkpoint into {}", last.display()));
    }
    sync_dir(checkpoints);
    if had_last {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Finds `checkpoints/last` after an interruption. A kill between the two renames of a swap
/// leaves `last` (or `best`) missing and its complete previous version under `.NAME.old-*`:
/// that is put back. Every other leftover of an interrupted write (dot-named temporaries) is
/// removed.
pub fn recover_last(checkpoints: &Path) -> Result<PathBuf> {
    let entries: Vec<PathBuf> = std::fs::read_dir(checkpoints)
        .with_context(|| format!("cannot read {}", checkpoints.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for (target, marker) in [(crate::run_dir::LAST, TRAIN_STATE_FILE), (crate::run_dir::BEST, caption_model::checkpoint::META_FILE)] {
        let path = checkpoints.join(target);
        if path.exists() {
            continue;
        }
        let prefix = format!(".{target}.old-");
        if let Some(old) = entries.iter().find(|p| name(p).starts_with(&prefix) && p.join(marker).is_file()) {
            std::fs::rename(old, &path).with_context(|| format!("cannot restore {} as {}", old.display(), path.display()))?;
        }
    }
    for entry in &entries {
        if name(entry).starts_with('.') && entry.exists() {
            let _ = if entry.is_dir() { std::fs::remove_dir_all(entry) } else { std::fs::remove_file(entry) };
        }
    }
    let last = checkpoints.join(crate::run_dir::LAST);
    if !last.is_dir() {
        bail!("{}: no `last` checkpoint; the run was interrupted before its first checkpoint, so start it again", checkpoints.display());
    }
    Ok(last)
}

/// Loads the optimizer state of `checkpoints/last`.
pub fn load_optimizer<B: Backend, R: Record<B>>(last: &Path, device: &B::Device) -> Result<R> {
    let path = last.join(OPTIMIZER_FILE);
    Recorder::<B>::load(&recorder(), path.clone(), device)
        .map_err(|e| anyhow::anyhow!("cannot read the optimizer state {}.mpk: {e:?}", path.display()))
}
