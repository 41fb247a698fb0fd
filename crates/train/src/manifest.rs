//! `manifest.json`: where a run came from (command line, git commit, seed, versions, device,
//! dataset fingerprint, parameter counts) and every `--resume` of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use caption_data::fsutil::write_atomic;
use caption_data::{CaptionDataset, Sample, Split};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::run_dir::{BURN_VERSION, MANIFEST_FILE, rfc3339};

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

/// This session, as the manifest records it.
pub struct Session {
    pub command_line: Vec<String>,
    pub git_commit: Option<String>,
    pub device: caption_model::DeviceSpec,
    pub threads: usize,
}

impl Session {
    /// The session running now, in the repository around the current directory.
    pub fn current(command_line: Vec<String>, device: caption_model::DeviceSpec) -> Self {
        Session { command_line, git_commit: git_commit(Path::new(".")), device, threads: rayon::current_num_threads() }
    }
}

/// Writes the manifest of a new run; `parameters`: all, and trained.
pub fn record_start(
    run_dir: &Path,
    run_name: &str,
    seed: u64,
    session: &Session,
    dataset: DatasetFingerprint,
    parameters: (usize, usize),
) -> Result<()> {
    Manifest {
        run_name: run_name.to_string(),
        run_dir: run_dir.to_path_buf(),
        created: rfc3339(SystemTime::now()),
        command_line: session.command_line.clone(),
        git_commit: session.git_commit.clone(),
        seed,
        caption_version: env!("CARGO_PKG_VERSION").to_string(),
        burn_version: BURN_VERSION.to_string(),
        backend: session.device.backend_name().to_string(),
        device: session.device.to_string(),
        threads: session.threads,
        dataset,
        parameters: parameters.0,
        trainable_parameters: parameters.1,
        resumes: Vec::new(),
    }
    .write(run_dir)
}

/// Adds `session`, resuming after `from_epoch` / `from_step`, to a run's manifest; warns when
/// the dataset differs from the one the run started on.
pub fn record_resume(run_dir: &Path, session: &Session, from_epoch: usize, from_step: u64, dataset: DatasetFingerprint) -> Result<()> {
    let mut manifest = Manifest::read(run_dir)?;
    if dataset.sha256 != manifest.dataset.sha256 {
        println!(
            "warning: the dataset differs from the one this run started on (fingerprint {} now, {} then)",
            dataset.sha256, manifest.dataset.sha256
        );
    }
    manifest.resumes.push(ResumeRecord {
        time: rfc3339(SystemTime::now()),
        from_epoch,
        from_step,
        command_line: session.command_line.clone(),
        git_commit: session.git_commit.clone(),
        device: session.device.to_string(),
    });
    manifest.write(run_dir)
}
