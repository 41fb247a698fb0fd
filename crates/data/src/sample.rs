//! The one sample type every loader produces.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The three splits a captioning experiment uses. Karpathy's `restval` is folded into
/// `Train` or dropped by the loader, so it never appears here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Parses the names datasets use for a split: Flickr's `dev` and COCO's `validation` mean `val`.
    pub fn parse(name: &str) -> Option<Split> {
        match name.to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "val" | "valid" | "validation" | "dev" => Some(Split::Val),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One image with its human reference captions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The dataset's own id: COCO's integer id written in decimal, or the Flickr file stem.
    pub image_id: String,
    /// File name as the annotations give it (relative to the image directory).
    pub file_name: String,
    /// Where the image is on disk.
    pub image_path: PathBuf,
    /// Raw reference captions, in annotation order.
    pub captions: Vec<String>,
    pub split: Split,
}

impl Sample {
    /// The id as MS-COCO results files write it: a JSON number where the id is numeric.
    pub fn image_id_json(&self) -> serde_json::Value {
        match self.image_id.parse::<u64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::from(self.image_id.clone()),
        }
    }
}
