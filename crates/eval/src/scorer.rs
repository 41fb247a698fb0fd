//! The scoring pipeline of pycocoevalcap's `COCOEvalCap.evaluate`, for BLEU, METEOR, ROUGE-L
//! and CIDEr-D.
//!
//! References and candidates are raw text keyed by image id; the caller fixes the image order,
//! which matters twice: it is the order of the two tokenizer runs (references in one run,
//! candidates in another) and the summation order of the corpus means.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::hash::{BuildHasher, Hash};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::TokenizedImage;
use crate::bleu::bleu;
use crate::cider::cider_d;
use crate::meteor::{Meteor, MeteorUnavailable};
use crate::rouge::rouge_l;
use crate::spice::Spice;
use crate::tokenizer::{count_extra_line_breaks, tokenize_captions};

/// A metric the crate computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum Metric {
    /// BLEU-1..4 (`Bleu_1`..`Bleu_4`).
    Bleu,
    /// METEOR 1.5 (`METEOR`). Needs pycocoevalcap's METEOR data (see [`crate::meteor`]).
    Meteor,
    /// ROUGE-L (`ROUGE_L`).
    Rouge,
    /// CIDEr-D (`CIDEr`).
    Cider,
    /// SPICE-rb (`SPICE-rb`): SPICE 1.0's scene-graph F-score with a rule-based parser instead
    /// of CoreNLP, an approximation of SPICE (see [`crate::spice`]). Needs the WordNet
    /// synonyms in pycocoevalcap's METEOR data. Never part of the default sets.
    Spice,
}

impl Metric {
    /// Every metric that needs nothing but the captions, in pycocoevalcap's reporting order.
    /// METEOR ([`Metric::Meteor`]) needs data files and runs only when asked for.
    pub const ALL: [Metric; 3] = [Metric::Bleu, Metric::Rouge, Metric::Cider];

    /// Every metric that reproduces pycocoevalcap, METEOR included, in pycocoevalcap's
    /// reporting order (the order of the reported scores whatever the order of the
    /// request). SPICE-rb ([`Metric::Spice`]), an approximation, runs only when asked for
    /// and is reported last, where pycocoevalcap reports SPICE.
    pub const REPORT_ORDER: [Metric; 4] = [Metric::Bleu, Metric::Meteor, Metric::Rouge, Metric::Cider];

    /// The order scores are computed and reported in.
    const COMPUTE_ORDER: [Metric; 5] = [Metric::Bleu, Metric::Meteor, Metric::Rouge, Metric::Cider, Metric::Spice];

    /// Every score name, in reporting order (SPICE-rb last, where pycocoevalcap reports SPICE).
    pub fn all_score_names() -> impl Iterator<Item = &'static str> {
        Metric::COMPUTE_ORDER.into_iter().flat_map(|metric| metric.score_names().iter().copied())
    }

    /// The score names this metric reports, as pycocoevalcap spells them.
    pub fn score_names(self) -> &'static [&'static str] {
        match self {
            Metric::Bleu => &["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"],
            Metric::Meteor => &["METEOR"],
            Metric::Rouge => &["ROUGE_L"],
            Metric::Cider => &["CIDEr"],
            Metric::Spice => &[crate::spice::SCORE_NAME],
        }
    }
}

/// Why a set of captions cannot be scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("no metric was requested")]
    NoMetrics,
    #[error("there are no images to score (the image order is empty)")]
    NoImages,
    #[error("image {image_id} appears more than once in the image order")]
    DuplicateImage { image_id: String },
    #[error("image {image_id} is in the image order but has no references")]
    MissingReferences { image_id: String },
    #[error("image {image_id} has an empty reference list; every scored image needs at least one reference")]
    EmptyReferences { image_id: String },
    #[error("image {image_id} is in the image order but has no candidate caption")]
    MissingCandidate { image_id: String },
    #[error("the candidate for image {image_id} has no references to be scored against")]
    CandidateWithoutReferences { image_id: String },
    #[error("the candidate for image {image_id} has references but the image is not in the image order")]
    CandidateNotInOrder { image_id: String },
    #[error("tokenized image {index} (0-based) has no references; every scored image needs at least one")]
    TokenizedImageWithoutReferences { index: usize },
    #[error(transparent)]
    MeteorUnavailable(#[from] MeteorUnavailable),
}

/// Named scores in pycocoevalcap's order (`Bleu_1`..`Bleu_4`, `ROUGE_L`, `CIDEr`); serialises
/// as a JSON object with those keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scores(Vec<(&'static str, f64)>);

impl Scores {
    /// The score called `name` (`"Bleu_4"`, `"CIDEr"`, ...), if it was computed.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
    }

    /// All scores in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.0.iter().copied()
    }

    fn push(&mut self, name: &'static str, value: f64) {
        self.0.push((name, value));
    }
}

impl Serialize for Scores {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Scores of tokenized images: the corpus, then each image in input order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricScores {
    pub corpus: Scores,
    pub per_image: Vec<Scores>,
}

/// Runs the requested metrics on already tokenized captions, as pycocoevalcap's scorers do
/// once `PTBTokenizer` has run. Requesting a metric twice computes it once. METEOR and
/// SPICE-rb, when requested, load their data as [`Meteor::locate`] finds it
/// (`CAPTION_METEOR_DATA` or an installed pycocoevalcap); use [`score_tokenized_with`] to
/// pass it loaded.
pub fn score_tokenized(images: &[TokenizedImage], metrics: &[Metric]) -> Result<MetricScores, EvalError> {
    score_tokenized_with(images, metrics, None)
}

/// [`score_tokenized`] with METEOR's data already loaded (`None`: located when METEOR or
/// SPICE-rb is requested; SPICE-rb uses METEOR's WordNet synonyms).
pub fn score_tokenized_with(images: &[TokenizedImage], metrics: &[Metric], meteor: Option<&Meteor>) -> Result<MetricScores, EvalError> {
    if metrics.is_empty() {
        return Err(EvalError::NoMetrics);
    }
    if images.is_empty() {
        return Err(EvalError::NoImages);
    }
    if let Some(index) = images.iter().position(|image| image.references.is_empty()) {
        return Err(EvalError::TokenizedImageWithoutReferences { index });
    }
    let located;
    let meteor = match meteor {
        Some(meteor) => Some(meteor),
        None if metrics.contains(&Metric::Meteor) => {
            located = Meteor::locate(None)?;
            Some(&located)
        }
        None => None,
    };
    let mut corpus = Scores::default();
    let mut per_image = vec![Scores::default(); images.len()];
    let spice = if metrics.contains(&Metric::Spice) {
        Some(match meteor {
            Some(meteor) => Spice::from_meteor(meteor),
            None => Spice::locate(None)?,
        })
    } else {
        None
    };
    for metric in Metric::COMPUTE_ORDER.into_iter().filter(|m| metrics.contains(m)) {
        match metric {
            Metric::Bleu => {
                let scores = bleu(images);
                let names = metric.score_names();
                for (k, &name) in names.iter().enumerate() {
                    corpus.push(name, scores.corpus[k]);
                    for (image, values) in per_image.iter_mut().zip(&scores.per_image) {
                        image.push(name, values[k]);
                    }
                }
            }
            Metric::Meteor => {
                let scores = meteor.expect("METEOR is loaded when requested").score(images);
                corpus.push("METEOR", scores.corpus);
                for (image, &value) in per_image.iter_mut().zip(&scores.per_image) {
                    image.push("METEOR", value);
                }
            }
            Metric::Rouge => {
                let scores = rouge_l(images);
                corpus.push("ROUGE_L", scores.corpus);
                for (image, &value) in per_image.iter_mut().zip(&scores.per_image) {
                    image.push("ROUGE_L", value);
                }
            }
            Metric::Cider => {
                let scores = cider_d(images);
                corpus.push("CIDEr", scores.corpus);
                for (image, value) in per_image.iter_mut().zip(&scores.per_image) {
                    image.push("CIDEr", value.score);
                }
            }
            Metric::Spice => {
                let scores = spice.as_ref().expect("SPICE-rb is loaded when requested").score(images);
                corpus.push(crate::spice::SCORE_NAME, scores.corpus);
                for (image, value) in per_image.iter_mut().zip(&scores.per_image) {
                    image.push(crate::spice::SCORE_NAME, value.f());
                }
            }
        }
    }
    Ok(MetricScores { corpus, per_image })
}

/// How many captions the Java tokenizer's line breaks shifted (see
/// [`crate::tokenizer::tokenize_captions`]). pycocoevalcap gives no sign of this; both are 0
/// unless a caption contains `\r`, `\x0b`, `\x0c`, U+0085, U+2028 or U+2029.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LineBreakShifts {
    /// Extra lines in the reference run: every later reference moved that many slots.
    pub references: usize,
    /// Extra lines in the candidate run.
    pub candidates: usize,
}

/// One image's tokenized captions and scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageEvaluation<K> {
    pub image_id: K,
    /// The candidate after tokenization, as the scorers saw it.
    pub candidate: String,
    /// The references after tokenization, as the scorers saw them.
    pub references: Vec<String>,
    pub scores: Scores,
}

/// Corpus and per-image scores of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation<K> {
    /// pycocoevalcap's `COCOEvalCap.eval`.
    pub corpus: Scores,
    /// pycocoevalcap's `evalImgs`, in the caller's image order.
    pub images: Vec<ImageEvaluation<K>>,
    pub line_break_shifts: LineBreakShifts,
}

/// Tokenizes and scores raw captions as `COCOEvalCap.evaluate` does.
///
/// `image_ids` is the image order (pycocoevalcap's `params['image_id']`); every image in it
/// needs references and exactly one candidate, and every candidate must belong to an image in
/// it. `references` may hold more images than are scored. METEOR, when requested, loads its
/// data as [`Meteor::locate`] finds it; use [`evaluate_with`] to pass it loaded.
pub fn evaluate<K, S1, S2>(
    image_ids: &[K],
    references: &HashMap<K, Vec<String>, S1>,
    candidates: &HashMap<K, String, S2>,
    metrics: &[Metric],
) -> Result<Evaluation<K>, EvalError>
where
    K: Eq + Hash + Clone + Display,
    S1: BuildHasher,
    S2: BuildHasher,
{
    evaluate_with(image_ids, references, candidates, metrics, None)
}

/// [`evaluate`] with METEOR's data already loaded (`None`: located when METEOR is requested).
pub fn evaluate_with<K, S1, S2>(
    image_ids: &[K],
    references: &HashMap<K, Vec<String>, S1>,
    candidates: &HashMap<K, String, S2>,
    metrics: &[Metric],
    meteor: Option<&Meteor>,
) -> Result<Evaluation<K>, EvalError>
where
    K: Eq + Hash + Clone + Display,
    S1: BuildHasher,
    S2: BuildHasher,
{
    if metrics.is_empty() {
        return Err(EvalError::NoMetrics);
    }
    if image_ids.is_empty() {
        return Err(EvalError::NoImages);
    }
    let mut in_order = HashSet::with_capacity(image_ids.len());
    for id in image_ids {
        if !in_order.insert(id) {
            return Err(EvalError::DuplicateImage { image_id: id.to_string() });
        }
    }
    // Report the smallest offending id so that the error does not depend on hash order.
    let stray_candidate = candidates
        .keys()
        .filter_map(|id| {
            if !references.contains_key(id) {
                Some(EvalError::CandidateWithoutReferences { image_id: id.to_string() })
            } else if !in_order.contains(id) {
                Some(EvalError::CandidateNotInOrder { image_id: id.to_string() })
            } else {
                None
            }
        })
        .min_by_key(|error| error.to_string());
    if let Some(error) = stray_candidate {
        return Err(error);
    }
    let mut raw_references: Vec<&[String]> = Vec::with_capacity(image_ids.len());
    let mut raw_candidates: Vec<&str> = Vec::with_capacity(image_ids.len());
    for id in image_ids {
        let refs = references.get(id).ok_or_else(|| EvalError::MissingReferences { image_id: id.to_string() })?;
        if refs.is_empty() {
            return Err(EvalError::EmptyReferences { image_id: id.to_string() });
        }
        let candidate = candidates.get(id).ok_or_else(|| EvalError::MissingCandidate { image_id: id.to_string() })?;
        raw_references.push(refs);
        raw_candidates.push(candidate);
    }

    // Two tokenizer runs, as pycocoevalcap: all references, then all candidates.
    let flat_references: Vec<&str> = raw_references.iter().flat_map(|refs| refs.iter().map(String::as_str)).collect();
    let mut tokenized_references = tokenize_captions(&flat_references).into_iter();
    let tokenized_candidates = tokenize_captions(&raw_candidates);
    let images: Vec<TokenizedImage> = raw_references
        .iter()
        .zip(tokenized_candidates)
        .map(|(refs, candidate)| TokenizedImage { candidate, references: tokenized_references.by_ref().take(refs.len()).collect() })
        .collect();
    let line_break_shifts =
        LineBreakShifts { references: count_extra_line_breaks(&flat_references), candidates: count_extra_line_breaks(&raw_candidates) };

    let scores = score_tokenized_with(&images, metrics, meteor)?;
    let images = image_ids
        .iter()
        .zip(images)
        .zip(scores.per_image)
        .map(|((id, image), scores)| ImageEvaluation {
            image_id: id.clone(),
            candidate: image.candidate,
            references: image.references,
            scores,
        })
        .collect();
    Ok(Evaluation { corpus: scores.corpus, images, line_break_shifts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(entries: &[(u32, &[&str])]) -> HashMap<u32, Vec<String>> {
        entries.iter().map(|(id, r)| (*id, r.iter().map(|s| s.to_string()).collect())).collect()
    }

    fn cands(entries: &[(u32, &str)]) -> HashMap<u32, String> {
        entries.iter().map(|(id, c)| (*id, c.to_string())).collect()
    }

    #[test]
    fn every_score_name_in_reporting_order() {
        let names: Vec<&str> = Metric::all_score_names().collect();
        assert_eq!(names, ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE-rb"]);
    }

    #[test]
    fn scores_raw_captions_with_pycocoevalcap_names() {
        let references = refs(&[(1, &["A dog runs on the grass.", "A brown dog running."]), (2, &["Two cats sleep."])]);
        let candidates = cands(&[(1, "A dog running on grass!"), (2, "A cat is sleeping.")]);
        let evaluation = evaluate(&[1, 2], &references, &candidates, &Metric::ALL).unwrap();
        let names: Vec<&str> = evaluation.corpus.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]);
        assert_eq!(evaluation.images[0].candidate, "a dog running on grass");
        assert_eq!(evaluation.images[0].references, ["a dog runs on the grass", "a brown dog running"]);
        assert_eq!(evaluation.line_break_shifts, LineBreakShifts::default());
        let json = serde_json::to_value(&evaluation).unwrap();
        assert!(json["corpus"]["CIDEr"].is_number());
        assert_eq!(json["images"][1]["image_id"], 2);
    }

    #[test]
    fn only_requested_metrics_in_canonical_order() {
        let references = refs(&[(1, &["a dog"]), (2, &["a cat"])]);
        let candidates = cands(&[(1, "a dog"), (2, "a cat")]);
        let evaluation = evaluate(&[2, 1], &references, &candidates, &[Metric::Cider, Metric::Rouge, Metric::Cider]).unwrap();
        let names: Vec<&str> = evaluation.corpus.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["ROUGE_L", "CIDEr"]);
        assert_eq!(evaluation.images[0].image_id, 2);
        assert_eq!(evaluation.corpus.get("ROUGE_L"), Some(1.0));
        assert_eq!(evaluation.corpus.get("Bleu_1"), None);
    }

    #[test]
    fn readable_errors() {
        let references = refs(&[(1, &["a dog"]), (2, &[])]);
        let err = evaluate(&[1], &references, &cands(&[(1, "x"), (3, "y")]), &Metric::ALL).unwrap_err();
        assert_eq!(err, EvalError::CandidateWithoutReferences { image_id: "3".into() });
        assert_eq!(err.to_string(), "the candidate for image 3 has no references to be scored against");
        let err = evaluate(&[1, 2], &references, &cands(&[(1, "x"), (2, "y")]), &Metric::ALL).unwrap_err();
        assert_eq!(err, EvalError::EmptyReferences { image_id: "2".into() });
        let err = evaluate(&[1], &references, &cands(&[(1, "x"), (2, "y")]), &Metric::ALL).unwrap_err();
        assert_eq!(err, EvalError::CandidateNotInOrder { image_id: "2".into() });
        let err = evaluate(&[1, 4], &references, &cands(&[(1, "x")]), &Metric::ALL).unwrap_err();
        assert_eq!(err, EvalError::MissingReferences { image_id: "4".into() });
        let err = evaluate(&[1], &references, &cands(&[]), &Metric::ALL).unwrap_err();
        assert_eq!(err, EvalError::MissingCandidate { image_id: "1".into() });
        let err = evaluate(&[1, 1], &references, &cands(&[(1, "x")]), &Metric::ALL).unwrap_err();
        assert_eq!(err, EvalError::DuplicateImage { image_id: "1".into() });
        assert_eq!(evaluate::<u32, _, _>(&[], &references, &cands(&[]), &Metric::ALL).unwrap_err(), EvalError::NoImages);
        assert_eq!(evaluate(&[1], &references, &cands(&[(1, "x")]), &[]).unwrap_err(), EvalError::NoMetrics);
        let images = [TokenizedImage { candidate: "x".into(), references: vec![] }];
        assert_eq!(score_tokenized(&images, &Metric::ALL).unwrap_err(), EvalError::TokenizedImageWithoutReferences { index: 0 });
    }

    #[test]
    fn single_image_has_zero_cider() {
        let references = refs(&[(7, &["a dog runs", "the dog is running"])]);
        let evaluation = evaluate(&[7], &references, &cands(&[(7, "a dog runs")]), &Metric::ALL).unwrap();
        assert_eq!(evaluation.corpus.get("CIDEr"), Some(0.0));
        assert!(evaluation.corpus.get("Bleu_1").unwrap() > 0.99);
    }

    #[test]
    fn empty_candidate() {
        let references = refs(&[(1, &["a dog runs"]), (2, &["a cat sleeps"])]);
        let evaluation = evaluate(&[1, 2], &references, &cands(&[(1, ""), (2, "a cat sleeps")]), &Metric::ALL).unwrap();
        let first = &evaluation.images[0].scores;
        for name in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
            assert_eq!(first.get(name), Some(0.0), "{name}");
        }
    }

    #[test]
    fn line_breaks_shift_captions_like_pycocoevalcap() {
        let references = refs(&[(1, &["a dog\rruns", "a dog"]), (2, &["a cat"])]);
        let evaluation = evaluate(&[1, 2], &references, &cands(&[(1, "a dog"), (2, "a cat")]), &[Metric::Rouge]).unwrap();
        assert_eq!(evaluation.images[0].references, ["a dog", "runs"]);
        assert_eq!(evaluation.images[1].references, ["a dog"]);
        assert_eq!(evaluation.line_break_shifts, LineBreakShifts { references: 1, candidates: 0 });
    }
}
