//! `caption`: the one command-line entry point of the workspace. Every step of an experiment
//! (data, and in later releases training, evaluation and serving) is a subcommand; the work
//! itself lives in the crates, this binary only parses arguments, loads configs and reports.

mod commands;
mod experiment_config;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "caption", version, about = "Image-captioning research toolkit: datasets, caption metrics, A/B comparison", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the synthetic dataset, inspect datasets.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Score generated captions against references with pycocoevalcap's metrics (no Java needed).
    Score(commands::score::ScoreArgs),
    /// Caption image files with a checkpoint (beam search, n-best, confidences).
    Caption(commands::caption::CaptionArgs),
    /// Compare two systems scored on the same images: paired bootstrap intervals, randomisation
    /// p-values, win/tie/loss; `--gate METRIC` makes the exit status a promotion gate.
    Compare(commands::compare::CompareArgs),
    /// Check a YAML config or print the defaults.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => commands::data::run(cmd).map(|()| 0),
        Command::Score(args) => commands::score::run(args).map(|()| 0),
        Command::Caption(args) => commands::caption::run(args).map(|()| 0),
        Command::Compare(args) => commands::compare::run(args),
        Command::Config(cmd) => commands::config::run(cmd).map(|()| 0),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(error) => {
            // One readable line (the causes joined by ": "), never a backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
