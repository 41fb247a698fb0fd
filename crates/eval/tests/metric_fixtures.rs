//! BLEU-1..4, ROUGE-L and CIDEr-D against pycocoevalcap 1.2's own numbers on the three shared
//! scoring fixtures: per image and corpus, within 1e-12 (in practice bit for bit).

mod common;

use std::collections::HashMap;

use caption_eval::bleu::bleu;
use caption_eval::cider::cider_d;
use caption_eval::rouge::rouge_l;
use caption_eval::{Metric, TokenizedImage, evaluate};
use common::ScoringFixture;

const TOLERANCE: f64 = 1e-12;

/// Tracks agreement of one quantity: how many values are bit-identical, the largest error,
/// and the first few values beyond the tolerance.
struct Agreement {
    label: String,
    total: usize,
    exact: usize,
    max_abs_error: f64,
    failures: Vec<String>,
}

impl Agreement {
    fn new(label: impl Into<String>) -> Agreement {
        Agreement { label: label.into(), total: 0, exact: 0, max_abs_error: 0.0, failures: Vec::new() }
    }

    fn check(&mut self, what: &str, got: f64, want: f64) {
        self.total += 1;
        if got.to_bits() == want.to_bits() {
            self.exact += 1;
        }
        let error = (got - want).abs();
        self.max_abs_error = self.max_abs_error.max(error);
        if (error.is_nan() || error > TOLERANCE) && self.failures.len() < 10 {
            self.failures.push(format!("{what}: got {got:e}, want {want:e}"));
        }
    }

    fn finish(self) -> Result<(), String> {
        eprintln!("{}: {}/{} bit-identical, max abs error {:e}", self.label, self.exact, self.total, self.max_abs_error);
        if self.failures.is_empty() { Ok(()) } else { Err(format!("{}:\n  {}", self.label, self.failures.join("\n  "))) }
    }
}

fn tokenized_images(fixture: &ScoringFixture) -> Vec<TokenizedImage> {
    fixture.ordered().map(|(_, image)| TokenizedImage { candidate: image.cand_tok.clone(), references: image.refs_tok.clone() }).collect()
}

fn assert_all(results: Vec<Result<(), String>>) {
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "values beyond {TOLERANCE:e}:\n{}", failures.join("\n"));
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn bleu_matches_pycocoevalcap() {
    let mut results = Vec::new();
    for name in common::SCORING_FIXTURES {
        let fixture = common::scoring_fixture(name);
        let scores = bleu(&tokenized_images(&fixture));
        let mut per_image = Agreement::new(format!("{name} BLEU-1..4 per image"));
        for (k, ((id, image), (got, stats))) in fixture.ordered().zip(scores.per_image.iter().zip(&scores.per_image_stats)).enumerate() {
            let want = &image.scores;
            for (n, want) in [want.bleu_1, want.bleu_2, want.bleu_3, want.bleu_4].into_iter().enumerate() {
                per_image.check(&format!("image {k} ({id}) Bleu_{}", n + 1), got[n], want);
            }
            let want_stats = &want.bleu_stats;
            assert_eq!(
                (stats.testlen, stats.reflen, stats.guess, stats.correct),
                (want_stats.testlen, want_stats.reflen, want_stats.guess, want_stats.correct),
                "{name}: BLEU counts of image {id}"
            );
        }
        results.push(per_image.finish());
        let totals = &fixture.bleu_totals;
        let stats = scores.corpus_stats;
        assert_eq!(
            (stats.testlen, stats.reflen, stats.guess, stats.correct),
            (totals.testlen, totals.reflen, totals.guess, totals.correct),
            "{name}: corpus BLEU counts"
        );
        let mut corpus = Agreement::new(format!("{name} BLEU-1..4 corpus"));
        for n in 0..4 {
            corpus.check(&format!("Bleu_{}", n + 1), scores.corpus[n], fixture.corpus[&format!("Bleu_{}", n + 1)]);
        }
        results.push(corpus.finish());
    }
    assert_all(results);
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn rouge_l_matches_pycocoevalcap() {
    let mut results = Vec::new();
    for name in common::SCORING_FIXTURES {
        let fixture = common::scoring_fixture(name);
        let scores = rouge_l(&tokenized_images(&fixture));
        let mut per_image = Agreement::new(format!("{name} ROUGE-L per image"));
        for ((id, image), &got) in fixture.ordered().zip(&scores.per_image) {
            per_image.check(&format!("image {id}"), got, image.scores.rouge_l);
        }
        results.push(per_image.finish());
        let mut corpus = Agreement::new(format!("{name} ROUGE-L corpus"));
        corpus.check("ROUGE_L", scores.corpus, fixture.corpus["ROUGE_L"]);
        results.push(corpus.finish());
    }
    assert_all(results);
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn cider_d_matches_pycocoevalcap() {
    let mut results = Vec::new();
    for name in common::SCORING_FIXTURES {
        let fixture = common::scoring_fixture(name);
        let images = tokenized_images(&fixture);
        let scores = cider_d(&images);
        let mut per_image = Agreement::new(format!("{name} CIDEr-D per image"));
        let mut per_order = Agreement::new(format!("{name} CIDEr-D per-order terms"));
        for ((id, image), got) in fixture.ordered().zip(&scores.per_image) {
            per_image.check(&format!("image {id}"), got.score, image.scores.cider);
            for n in 0..4 {
                per_order.check(&format!("image {id} order {}", n + 1), got.per_order[n], image.scores.cider_per_n[n]);
            }
            assert_eq!(got.candidate_length, image.scores.cider_len_bigrams_hyp, "{name}: bigram length of image {id}");
        }
        results.push(per_image.finish());
        results.push(per_order.finish());
        let mut corpus = Agreement::new(format!("{name} CIDEr-D corpus"));
        corpus.check("CIDEr", scores.corpus, fixture.corpus["CIDEr"]);
        let log_n = caption_eval::cider::DocumentFrequencies::from_reference_sets(images.iter().map(|i| i.references.as_slice()))
            .log_num_documents();
        corpus.check("ln(number of images)", log_n, fixture.cider_log_num_images);
        results.push(corpus.finish());
    }
    assert_all(results);
}

/// Raw captions through the whole pipeline (two tokenizer runs, then the scorers).
#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn evaluate_reproduces_pycocoevalcap_from_raw_captions() {
    let mut results = Vec::new();
    for name in common::SCORING_FIXTURES {
        let fixture = common::scoring_fixture(name);
        let references: HashMap<String, Vec<String>> =
            fixture.images.iter().map(|(id, image)| (id.clone(), image.refs_raw.clone())).collect();
        let candidates: HashMap<String, String> = fixture.images.iter().map(|(id, image)| (id.clone(), image.cand_raw.clone())).collect();
        let evaluation = evaluate(&fixture.image_ids, &references, &candidates, &Metric::ALL).expect("valid input");
        let mut agreement = Agreement::new(format!("{name} evaluate(), all scores"));
        for (metric, value) in evaluation.corpus.iter() {
            agreement.check(&format!("corpus {metric}"), value, fixture.corpus[metric]);
        }
        for image in &evaluation.images {
            let want = &fixture.images[&image.image_id];
            assert_eq!(image.candidate, want.cand_tok, "{name}: tokenized candidate of {}", image.image_id);
            assert_eq!(image.references, want.refs_tok, "{name}: tokenized references of {}", image.image_id);
            let s = &want.scores;
            for (metric, want) in [
                ("Bleu_1", s.bleu_1),
                ("Bleu_2", s.bleu_2),
                ("Bleu_3", s.bleu_3),
                ("Bleu_4", s.bleu_4),
                ("ROUGE_L", s.rouge_l),
                ("CIDEr", s.cider),
            ] {
                agreement.check(&format!("image {} {metric}", image.image_id), image.scores.get(metric).unwrap(), want);
            }
        }
        results.push(agreement.finish());
    }
    assert_all(results);
}
