//! `caption train`: train a captioner from an experiment config, or resume an interrupted run.

use crate::experiment_config;
use anyhow::{Context, Result, bail};
use caption_model::DeviceSpec;
use caption_train::TrainJob;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    /// The experiment config (YAML); not used with --resume, which reads the run's config.yaml.
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Override a value: `--set train.epochs=5` (repeatable; the value is YAML).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    overrides: Vec<String>,
    /// cpu, cuda or cuda:N (default: `train.device`; CUDA needs a build with `--features cuda`).
    #[arg(long)]
    device: Option<String>,
    /// Continue an interrupted run from RUN_DIR/checkpoints/last (model, optimizer, epoch, data order).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Measure training throughput over N steps instead of training (writes no run directory).
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    benchmark: Option<usize>,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let (config, config_yaml) = match (&args.resume, &args.config) {
        (Some(run_dir), _) => {
            if !args.overrides.is_empty() {
                bail!(
                    "--set cannot be combined with --resume: a run continues with the config it started with ({})",
                    run_dir.join("config.yaml").display()
                );
            }
            let path = run_dir.join("config.yaml");
            if !path.is_file() {
                bail!("{}: no config.yaml there; --resume takes a run directory (experiments/<name>-<YYYYmmdd-HHMMSS>)", run_dir.display());
            }
            (experiment_config::load(&path, &[]).context("the run's config")?, None)
        }
        (None, Some(path)) => {
            let config = experiment_config::load(path, &args.overrides)?;
            let yaml = config.to_yaml()?;
            (config, Some(yaml))
        }
        (None, None) => bail!("give --config FILE (or --resume RUN_DIR)"),
    };
    let device = args.device.as_deref().map(str::parse::<DeviceSpec>).transpose()?;
    let job = TrainJob {
        config,
        config_yaml,
        device,
        resume: args.resume.clone(),
        command_line: std::env::args().collect(),
        interrupt_after_step: None,
    };
    if let Some(steps) = args.benchmark {
        let result = caption_train::benchmark(job, steps)?;
        println!(
            "training throughput on {} ({} threads{}{}): {:.1} images/s, {:.1} caption pairs/s over {} steps (batches prepared on another thread, as in training)",
            result.device,
            result.threads,
            if result.from_features { ", cached encoder features" } else { "" },
            if result.fixed_shapes { ", fixed shapes" } else { "" },
            result.images_per_s,
            result.caption_pairs_per_s,
            result.steps,
        );
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    caption_train::train(job)?;
    Ok(())
}
