//! One error type for everything the data crate reads, each variant naming the file at fault.

use std::path::PathBuf;

/// What went wrong while reading a dataset, a vocabulary or an image.
///
/// Every variant carries the path it concerns so that the CLI can print one readable line
/// ("`<file>`: what is wrong; what to do") instead of a backtrace.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON for {what}: {source}")]
    Json {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Line { path: PathBuf, line: usize, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error(
        "{count} image(s) listed in the annotations are missing or unreadable (first: {first}); fix the paths under `data.images`, or set `data.on_missing: skip` to train without them"
    )]
    MissingImages { count: usize, first: String },
    #[error("invalid data config: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Invalid { path: path.into(), message: message.into() }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
