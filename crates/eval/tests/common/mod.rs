//! Access to the shared pycocoevalcap fixtures (`/work/shared/fixtures/metrics` in the
//! development checkout, `../shared/fixtures/metrics` next to the repository in CI).

#![allow(dead_code)] // each test crate uses a different part of this module

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The pycocoevalcap fixtures in the shared folder (tests that read them are ignored when it
/// is absent).
pub fn fixtures_dir() -> PathBuf {
    caption_test_support::shared_dir().join("fixtures/metrics")
}

pub fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// One scoring fixture: pycocoevalcap's corpus and per-image scores for a set of images.
#[derive(Deserialize)]
pub struct ScoringFixture {
    pub corpus: HashMap<String, f64>,
    pub bleu_totals: BleuTotals,
    pub cider_log_num_images: f64,
    pub image_ids: Vec<String>,
    pub images: HashMap<String, FixtureImage>,
}

#[derive(Deserialize)]
pub struct BleuTotals {
    pub testlen: usize,
    pub reflen: usize,
    pub guess: [usize; 4],
    pub correct: [usize; 4],
}

#[derive(Deserialize)]
pub struct FixtureImage {
    pub refs_raw: Vec<String>,
    pub cand_raw: String,
    pub refs_tok: Vec<String>,
    pub cand_tok: String,
    pub scores: FixtureScores,
}

#[derive(Deserialize)]
pub struct FixtureScores {
    #[serde(rename = "Bleu_1")]
    pub bleu_1: f64,
    #[serde(rename = "Bleu_2")]
    pub bleu_2: f64,
    #[serde(rename = "Bleu_3")]
    pub bleu_3: f64,
    #[serde(rename = "Bleu_4")]
    pub bleu_4: f64,
    pub bleu_stats: BleuTotals,
    #[serde(rename = "ROUGE_L")]
    pub rouge_l: f64,
    #[serde(rename = "CIDEr")]
    pub cider: f64,
    pub cider_per_n: [f64; 4],
    pub cider_len_bigrams_hyp: usize,
}

pub const SCORING_FIXTURES: [&str; 3] = ["coco_val_loo500.json", "flickr8k_test_loo.json", "edge_cases.json"];

pub fn scoring_fixture(name: &str) -> ScoringFixture {
    serde_json::from_slice(&read_fixture(name)).unwrap_or_else(|e| panic!("cannot parse fixture {name}: {e}"))
}

impl ScoringFixture {
    /// The images in pycocoevalcap's order.
    pub fn ordered(&self) -> impl Iterator<Item = (&String, &FixtureImage)> {
        self.image_ids.iter().map(|id| (id, &self.images[id]))
    }
}
