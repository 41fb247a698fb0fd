//! Training progress for people: on a terminal, a bar per epoch (steps, loss, rate, time left)
//! with the periodic log lines printed above it; anywhere else (a log file, CI, a pipe) only the
//! plain log lines.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// One epoch's progress.
pub struct EpochProgress {
    bar: Option<ProgressBar>,
}

impl EpochProgress {
    /// Progress over `steps` batches of epoch `epoch` (1-based) of `epochs`, `done` of them
    /// already trained (a resumed epoch).
    pub fn start(epoch: usize, epochs: usize, steps: usize, done: usize) -> Self {
        if !std::io::stdout().is_terminal() {
            return EpochProgress { bar: None };
        }
        let bar = ProgressBar::new(steps as u64).with_position(done as u64);
        let style = ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} steps {msg} [{elapsed_precise} < {eta_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(format!("{epoch}/{epochs}"));
        EpochProgress { bar: Some(bar) }
    }

    /// One more batch done; `message` (the loss, say) is shown beside the bar.
    pub fn step(&self, message: impl FnOnce() -> String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message());
            bar.inc(1);
        }
    }

    /// Prints a log line (above the bar on a terminal).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// Removes the bar, so that what follows prints normally.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
