//! The run directory: its layout, creating it, and the metrics log (the manifest is in
//! [`crate::manifest`]).
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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use caption_data::fsutil::write_atomic;

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
