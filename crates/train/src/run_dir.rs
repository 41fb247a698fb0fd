//! The run directory and what it records besides checkpoints: the manifest (provenance), the
//! metrics log, and helpers (timestamps, git commit, dataset fingerprint).
//!
//! ```text
//! experiments/<name>-<YYYYmmdd-HHMMSS>/
//!   config.yaml        the resolved config (file + overrides + defaults)
//!   manifest.json      git commit, seed, burn version, backend/device, dataset fingerprint, ...
//!   metrics.jsonl      one JSON object per logged step ("kind": "train") and validation ("kind": "val")
//!   tensorboard/       the same as TensorBoard event files (one per session), plus sample captions
//!   checkpoints/last/  the latest state (model + optimizer + training state): what --resume reads
//!   checkpoints/best/  the best model by `train.best_metric`
//!   eval/test/         metrics.json, per_image.json, results.json of the best checkpoint
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use caption_data::fsutil::write_atomic;
use caption_data::{CaptionDataset, Sample, Split};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const CONFIG_FILE: &str = "config.yaml";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const LAST: &str = "last";
pub const BEST: &str = "best";

/// TensorBoard event files (`tensorboard --logdir experiments/`).
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// The burn version this build is pinned to (`=0.21.0` in the workspace manifest).
pub const BURN_VERSION: &str = "0.21.0";

pub use caption_data::time::{compact_timestamp as timestamp, rfc3339};

/// The checkpoint a user names by `path`: a run directory stands for its `checkpoints/best`,
/// anything else is taken as a checkpoint directory (`caption eval --checkpoint`,
/// `train.init_from`).
pub fn resolve_checkpoint(path: &Path) -> PathBuf {
    let best = path.join(CHECKPOINTS_DIR).join(BEST);
    if best.is_dir() { best } else { path.to_path_buf() }
}

/// Creates `<output_dir>/<name>-<timestamp>/` (with a `-2`, `-3`, ... suffix if taken).
pub fn create_run_dir(output_dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(output_dir).with_context(|| format!("cannot create {}", output_dir.display()))?;
    let base = format!("{name}-{}", timestamp(SystemTime::now()));
    for attempt in 1.. {
        let dir = if attempt == 1 { output_dir.join(&base) } else { output_dir.join(format!("{base}-{attempt}")) };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create the run directory {}", dir.display())),
        }
    }
    unreachable!()
}

/// The commit checked out where the run starts, read from `.git` (no `git` process): the
/// first `.git` found walking up from `start`. `None` outside a repository.
pub fn git_commit(start: &Path) -> Option<String> {
    let start = start.canonicalize().ok()?;
    let git = start.ancestors().map(|dir| dir.join(".git")).find(|p| p.exists())?;
    let git = if git.is_file() {
        // A worktree or submodule: `gitdir: PATH`.
        let text = std::fs::read_to_string(&git).ok()?;
        let target = text.trim().strip_prefix("gitdir:")?.trim().to_string();
        let target = PathBuf::from(target);
        if target.is_absolute() { target } else { git.parent()?.join(target) }
    } else {
        git
    };
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref:") else {
        return is_hash(head).then(|| head.to_string());
    };
    let reference = reference.trim();
    // Worktrees keep refs in the common directory.
    let common = std::fs::read_to_string(git.join("commondir")).ok().map(|c| git.join(c.trim())).unwrap_or_else(|| git.clone());
    for dir in [&git, &common] {
        if let Ok(hash) = std::fs::read_to_string(dir.join(reference)) {
            let hash = hash.trim();
            if is_hash(hash) {
                return Some(hash.to_string());
            }
        }
        if let Ok(packed) = std::fs::read_to_string(dir.join("packed-refs")) {
            for line in packed.lines() {
                if let Some((hash, name)) = line.split_once(' ')
                    && name.trim() == reference
                    && is_hash(hash)
                {
                    return Some(hash.to_string());
                }
            }
        }
    }
    None
}

fn is_hash(text: &str) -> bool {
    text.len() >= 40 && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// A file the dataset was read from, with its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileHash {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

/// What identifies the data a run trained on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetFingerprint {
    /// SHA-256 over every sample (split, image id, file name, captions) in load order: equal
    /// fingerprints mean the same images and captions in the same splits.
    pub sha256: String,
    pub images: BTreeMap<String, usize>,
    pub captions: BTreeMap<String, usize>,
    /// The annotation files the config names (or the generated ones), hashed.
    pub annotation_files: Vec<FileHash>,
    pub vocab_size: usize,
}

pub fn fingerprint(dataset: &CaptionDataset, annotation_files: &[PathBuf], vocab_size: usize) -> Result<DatasetFingerprint> {
    let mut hasher = Sha256::new();
    let mut images = BTreeMap::new();
    let mut captions = BTreeMap::new();
    for sample in &dataset.samples {
        hash_sample(&mut hasher, sample);
        *images.entry(sample.split.as_str().to_string()).or_insert(0) += 1;
        *captions.entry(sample.split.as_str().to_string()).or_insert(0) += sample.captions.len();
    }
    let files = annotation_files
        .iter()
        .filter(|p| p.is_file())
        .map(|path| {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok(FileHash { path: path.clone(), bytes: bytes.len() as u64, sha256: hex(&Sha256::digest(&bytes)) })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(DatasetFingerprint { sha256: hex(&hasher.finalize()), images, captions, annotation_files: files, vocab_size })
}

fn hash_sample(hasher: &mut Sha256, sample: &Sample) {
    let mut field = |text: &str| {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    };
    field(sample.split.as_str());
    field(&sample.image_id);
    field(&sample.file_name);
    for caption in &sample.captions {
        field(caption);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The annotation files a data config reads.
pub fn annotation_files(data: &caption_data::DataConfig) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if data.format == caption_data::DataFormat::Synthetic {
        if let Some(root) = &data.root {
            for split in Split::ALL {
                files.push(root.join("annotations").join(format!("captions_{split}.json")));
            }
        }
        return files;
    }
    files.extend(data.annotations.clone());
    for split in Split::ALL {
        if let Some(src) = data.split(split) {
            files.extend(src.annotations.clone());
            files.extend(src.list.clone());
        }
    }
    files
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub run_name: String,
    pub run_dir: PathBuf,
    pub created: String,
    pub command_line: Vec<String>,
    pub git_commit: Option<String>,
    pub seed: u64,
    pub caption_version: String,
    pub burn_version: String,
    pub backend: String,
    pub device: String,
    pub threads: usize,
    pub dataset: DatasetFingerprint,
    pub parameters: usize,
    pub trainable_parameters: usize,
    /// One entry per `--resume`: when, from which step.
    #[serde(default)]
    pub resumes: Vec<ResumeRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeRecord {
    pub time: String,
    pub from_epoch: usize,
    pub from_step: u64,
    pub command_line: Vec<String>,
    pub git_commit: Option<String>,
    pub device: String,
}

impl Manifest {
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("the manifest serialises");
        write_atomic(&run_dir.join(MANIFEST_FILE), &json)?;
        Ok(())
    }

    pub fn read(run_dir: &Path) -> Result<Manifest> {
        let path = run_dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a run manifest", path.display()))
    }
}

/// Appends JSON lines to `metrics.jsonl`, flushed after each line.
pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log for appending. When resuming from `step`, lines the interrupted run wrote
    /// after that step (which the resumed run will write again) are dropped first.
    pub fn open(run_dir: &Path, resume_from_step: Option<u64>) -> Result<MetricsLog> {
        let path = run_dir.join(METRICS_FILE);
        if let Some(step) = resume_from_step
            && path.is_file()
        {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    // A torn last line (killed mid-write) is not valid JSON: drop it.
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .is_some_and(|v| v.get("step").and_then(serde_json::Value::as_u64).is_some_and(|s| s <= step))
                })
                .map(|line| format!("{line}\n"))
                .collect();
            write_atomic(&path, kept.as_bytes())?;
        }
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(MetricsLog { file })
    }

    pub fn write(&mut self, value: &serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_string(value).expect("a JSON value serialises");
        line.push('\n');
        self.file.write_all(line.as_bytes()).context("cannot write metrics.jsonl")?;
        self.file.flush().context("cannot write metrics.jsonl")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_log_drops_lines_after_the_resume_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), None).unwrap();
        for step in [10, 20, 30] {
            log.write(&serde_json::json!({"kind": "train", "step": step})).unwrap();
        }
        drop(log);
        std::fs::OpenOptions::new().append(true).open(dir.path().join(METRICS_FILE)).unwrap().write_all(b"{\"kind\": \"tr").unwrap();
        let mut log = MetricsLog::open(dir.path(), Some(20)).unwrap();
        log.write(&serde_json::json!({"kind": "train", "step": 30})).unwrap();
        let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        let steps: Vec<u64> =
            text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![10, 20, 30]);
    }
}
