//! Caption metrics that give the same numbers as pycocoevalcap 1.2, in pure Rust.
//!
//! This crate scores text and nothing else: given reference captions and candidate captions
//! per image, it reproduces pycocoevalcap's PTB tokenization and its BLEU-1..4, ROUGE-L and
//! CIDEr-D scores (corpus and per image) to the last bit, quirks included, as documented in
//! the shared `SPEC.md`, and METEOR 1.5 ([`meteor`], which needs pycocoevalcap's data
//! files), plus SPICE-rb ([`spice`]), a rule-based approximation of SPICE 1.0 reported under
//! its own name. It depends on neither the model nor the training code; training uses it for
//! CIDEr-D rewards ([`cider::CiderD::with_corpus_df`]) and evaluation for reports.
//!
//! Entry points: [`evaluate`] for raw captions keyed by image id, [`score_tokenized`] for
//! captions already tokenized, and the per-metric modules for their details.

pub mod bleu;
pub mod cider;
pub mod compare;
mod fast_hash;
pub mod meteor;
mod ngrams;
pub mod numpy_mean;
mod python_float;
pub mod report;
pub mod rouge;
pub mod scorer;
pub mod spice;
/// pycocoevalcap's PTB tokenization (its own crate, which the vocabulary uses too).
pub use caption_tokenizer as tokenizer;

use serde::Serialize;

pub use scorer::{
    EvalError, Evaluation, ImageEvaluation, LineBreakShifts, Metric, MetricScores, Scores, evaluate, evaluate_with, score_tokenized,
    score_tokenized_with,
};

/// One image's captions after tokenization, as every scorer receives them: words separated by
/// spaces, exactly one candidate, and the references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenizedImage {
    pub candidate: String,
    pub references: Vec<String>,
}
