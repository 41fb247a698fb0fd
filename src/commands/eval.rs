//! `caption eval`: decode a split with a checkpoint and write its scores and reports.

use crate::experiment_config;
use anyhow::{Context, Result, bail};
use caption_data::Split;
use caption_eval::meteor::Meteor;
use caption_model::{DecodingOverrides, DeviceSpec};
use caption_train::EvalJob;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint directory, or a run directory (its `checkpoints/best` is evaluated).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// train, val (or dev) or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// The experiment config whose `data:` section locates the split (default: the run's
    /// config.yaml when the checkpoint is inside a run directory).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config value: `--set data.images=/data/flickr8k/Images` (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub overrides: Vec<String>,
    /// Beam size (1: greedy). Default: the checkpoint's decoding (the config's
    /// `train.test_decode` for checkpoints that record none).
    #[arg(long)]
    pub beam_size: Option<usize>,
    /// Evaluate the first N images of the split only.
    #[arg(long, default_value_t = 0)]
    pub max_images: usize,
    /// METEOR's data (the pycocoevalcap 1.2 wheel or an installed package); default:
    /// `$CAPTION_METEOR_DATA`, then an installed pycocoevalcap; without it METEOR is left out.
    #[arg(long, value_name = "PATH")]
    pub meteor_data: Option<PathBuf>,
    /// Output folder (default: `<run>/eval/<split>` for a checkpoint of a run, else `eval-<split>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// For a frozen encoder: decode from the run's feature cache (`train.feature_cache_dir`), as
    /// validation does, instead of running the encoder on every image. Faster; the cache holds
    /// f16 features, so confidences (and rarely a caption) differ from the served ones in rounding.
    #[arg(long)]
    pub feature_cache: bool,
}

/// The run directory holding `checkpoint` (`<run>/checkpoints/<name>`), if it is one.
fn run_dir_of(checkpoint: &Path) -> Option<PathBuf> {
    let run = checkpoint.parent()?.parent()?;
    (checkpoint.parent()?.file_name()? == "checkpoints" && run.join("config.yaml").is_file()).then(|| run.to_path_buf())
}

pub fn run(args: EvalArgs) -> Result<()> {
    let Some(split) = Split::parse(&args.split) else {
        bail!("--split {}: expected train, val (or dev) or test", args.split);
    };
    let checkpoint = caption_train::run_dir::resolve_checkpoint(&args.checkpoint);
    // A missing or incomplete checkpoint is reported before anything else is loaded.
    caption_model::read_checkpoint_info(&checkpoint).with_context(|| format!("loading {}", checkpoint.display()))?;
    let run_dir = run_dir_of(&checkpoint);
    let config_path = match (&args.config, &run_dir) {
        (Some(path), _) => path.clone(),
        (None, Some(run)) => run.join("config.yaml"),
        (None, None) => bail!(
            "{} is not inside a run directory, so give --config FILE: its `data:` section says where the {} split is",
            checkpoint.display(),
            split
        ),
    };
    let config = experiment_config::load(&config_path, &args.overrides).with_context(|| format!("the config {}", config_path.display()))?;
    if args.beam_size == Some(0) {
        bail!("--beam-size must be at least 1 (1 is greedy decoding)");
    }
    // METEOR when its data can be found; never a different METEOR in its place.
    let meteor = match Meteor::locate(args.meteor_data.as_deref()) {
        Ok(meteor) => Some(meteor),
        Err(e) if args.meteor_data.is_some() => return Err(e).context("--meteor-data"),
        Err(e) => {
            eprintln!("warning: {e}; scoring without METEOR");
            None
        }
    };
    let out = match (&args.out, &run_dir) {
        (Some(out), _) => out.clone(),
        (None, Some(run)) => run.join("eval").join(split.as_str()),
        (None, None) => PathBuf::from(format!("eval-{split}")),
    };
    let device = match &args.device {
        Some(device) => device.parse::<DeviceSpec>()?,
        None => config.train.device,
    };
    // Asked for, a frozen encoder's features come from the feature cache, as in training (not for
    // a part of the split: the cache holds whole splits).
    let encoder_config = config.model.encoder_config();
    let feature_cache =
        (args.feature_cache && caption_train::trains_from_features(&config, encoder_config.num_stages()) && args.max_images == 0)
            .then(|| (config.train.feature_cache_dir.clone(), encoder_config));
    let job = EvalJob {
        checkpoint,
        data: config.data,
        split,
        max_images: args.max_images,
        decoding: DecodingOverrides { beam_size: args.beam_size, ..Default::default() },
        default_decoding: config.train.test_decoding(),
        batch_size: config.train.eval_batch_size,
        meteor,
        out: out.clone(),
        device,
        feature_cache,
    };
    let report = caption_train::evaluate_checkpoint(&job)?;
    println!("{} split, {} images, {} ({:.1}s)", report.split, report.images, job.checkpoint.display(), report.seconds);
    for (name, value) in &report.metrics {
        println!("  {name:<8} {value:.4}");
    }
    println!("wrote {}/{{metrics.json, per_image.json, results.json, report.md, report.html}}", out.display());
    Ok(())
}
