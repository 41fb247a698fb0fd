//! Training captioners: `caption train` runs [`train`] on a [`TrainJob`].
//!
//! A run lives in a directory (see [`run_dir`]): the resolved config, a manifest of where it
//! came from, a metrics log, `checkpoints/{last,best}` ([`state`] for what `last` adds to a
//! model checkpoint so that `--resume` continues exactly), and the test evaluation
//! (`eval/test/{metrics,per_image,results}.json`). The loop itself is in [`trainer`], one step in
//! [`step`], the set-up in [`setup`], the provenance in [`manifest`].

pub mod benchmark;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod features;
pub mod manifest;
pub mod progress;
pub mod run_dir;
pub mod scst;
pub mod setup;
pub mod state;
pub mod step;
pub mod tensorboard;
pub mod trainer;

pub use benchmark::{Throughput, benchmark};
pub use config::{EncoderSection, ModelConfig, RunConfig, Schedule, TrainConfig};
pub use evaluate::{EvalJob, TestReport, evaluate_checkpoint};
pub use scst::{Baseline, ScstConfig};
pub use setup::{learning_rate, preprocess_config, trains_from_features};
pub use state::{Best, TrainState};
pub use trainer::{TrainJob, TrainSummary, train};
