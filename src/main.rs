//! `caption`: the one command-line entry point of the workspace. Every step of an experiment
//! (data, training, scoring, comparison, promotion and serving) is a subcommand; the work
//! itself lives in the crates, this binary only parses arguments, loads configs and reports.

mod commands;
mod experiment_config;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "caption", version, about = "Image-captioning research toolkit: datasets, training, caption metrics, A/B comparison, serving", long_about = None)]
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
    /// Evaluate a checkpoint on a split: scores, per-image scores, report.md and report.html.
    Eval(commands::eval::EvalArgs),
    /// Caption image files with a checkpoint (beam search, n-best, confidences).
    Caption(commands::caption::CaptionArgs),
    /// Compare two systems scored on the same images: paired bootstrap intervals, randomisation
    /// p-values, win/tie/loss; `--gate METRIC` makes the exit status a promotion gate.
    Compare(commands::compare::CompareArgs),
    /// Train a captioner from an experiment config (`--resume RUN_DIR` continues a run).
    Train(commands::train::TrainArgs),
    /// Copy a checkpoint into a model registry as a new version and put it in production
    /// (`--gate-against production`: only if significantly better; exit status 10 otherwise).
    Promote(commands::serve::PromoteArgs),
    /// Move the registry's production pointer back to the previous version.
    Rollback(commands::serve::RollbackArgs),
    /// List the registry's versions with their metrics (`*` = production).
    Models(commands::serve::ModelsArgs),
    /// Serve the registry's production model over HTTP (`caption serve keys` manages API keys).
    Serve(commands::serve::ServeArgs),
    /// Check a YAML config or print the defaults.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
}

fn main() -> ExitCode {
    // Before any thread starts: the CPU backend's tensor buffers are reused instead of being
    // mapped and unmapped at every step (see caption_model::allocator).
    caption_model::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => commands::data::run(cmd).map(|()| 0),
        Command::Score(args) => commands::score::run(args).map(|()| 0),
        Command::Eval(args) => commands::eval::run(args).map(|()| 0),
        Command::Caption(args) => commands::caption::run(args).map(|()| 0),
        Command::Compare(args) => commands::compare::run(args),
        Command::Train(args) => commands::train::run(args).map(|()| 0),
        Command::Promote(args) => commands::serve::promote(args),
        Command::Rollback(args) => commands::serve::rollback(args).map(|()| 0),
        Command::Models(args) => commands::serve::models(args).map(|()| 0),
        Command::Serve(args) => commands::serve::serve(args).map(|()| 0),
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
