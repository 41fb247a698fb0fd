//! `caption config check | defaults`.

use crate::experiment_config::{self, ExperimentConfig};
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Load a config as a run would (types, unknown keys, required keys, overrides) and report.
    Check {
        /// The YAML config file.
        file: PathBuf,
        /// Override a value: `--set data.vocab.min_count=3` (repeatable; the value is YAML).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        overrides: Vec<String>,
        /// Print the resolved config (file + overrides + defaults) as YAML.
        #[arg(long)]
        print: bool,
    },
    /// Print every option with its default value as YAML.
    Defaults,
}

pub fn run(command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Check { file, overrides, print } => {
            let config = experiment_config::load(&file, &overrides)?;
            if print {
                print!("{}", config.to_yaml()?);
            } else {
                println!("{}: ok", file.display());
            }
        }
        ConfigCommand::Defaults => print!("{}", ExperimentConfig::default().to_yaml()?),
    }
    Ok(())
}
