//! Readers for the annotation formats researchers have on disk. Each returns samples whose
//! image paths are resolved but not yet checked; `CaptionDataset::load` checks them.

pub mod coco;
pub mod flickr;
pub mod karpathy;

use crate::error::{DataError, Result};
use std::path::Path;

/// Reads a text file, turning invalid UTF-8 into an error that names the line and byte.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        DataError::Line {
            path: path.to_path_buf(),
            line,
            message: format!("not valid UTF-8 (byte {at}); re-encode the file as UTF-8 (for example with `iconv -f latin1 -t utf-8`)"),
        }
    })
}

/// Parses a JSON file into `T`, naming the file and what it should have been on failure.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<T> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|source| DataError::Json { path: path.to_path_buf(), what, source })
}

/// The image id the Flickr and Karpathy-Flickr loaders share: the file name without extension.
pub(crate) fn file_stem_id(file_name: &str) -> String {
    Path::new(file_name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| file_name.to_string())
}
