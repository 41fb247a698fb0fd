//! METEOR 1.5 against pycocoevalcap 1.2's own numbers (the jar's per-image scores and
//! statistics lines, and its corpus score) on the three shared scoring fixtures.
//!
//! METEOR's data is not part of the repository. These tests read it from the path in
//! `CAPTION_METEOR_DATA` (the pycocoevalcap 1.2 wheel, or a folder holding it), else in
//! `target/meteor-data` (where `.ci/run` downloads it), else an installed pycocoevalcap:
//!
//! ```text
//! pip download --no-deps pycocoevalcap==1.2 -d target/meteor-data
//! export CAPTION_METEOR_DATA=target/meteor-data/pycocoevalcap-1.2-py3-none-any.whl
//! ```
//!
//! Without it they fail, unless `CAPTION_SKIP_METEOR=1` is set.

mod common;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use caption_eval::meteor::Meteor;
use caption_eval::{Metric, TokenizedImage, evaluate_with};
use serde::Deserialize;

const TOLERANCE: f64 = 1e-6;

/// The loaded METEOR, or `None` when the tests are told to skip it.
fn meteor() -> &'static Meteor {
    static METEOR: OnceLock<Meteor> = OnceLock::new();
    METEOR.get_or_init(|| {
        let start = Instant::now();
        let meteor = Meteor::load(&caption_test_support::meteor_data()).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("loaded METEOR data from {} in {:.2} s", meteor.source().display(), start.elapsed().as_secs_f64());
        meteor
    })
}

#[derive(Deserialize)]
struct Fixture {
    corpus: HashMap<String, f64>,
    image_ids: Vec<String>,
    images: HashMap<String, Image>,
}

#[derive(Deserialize)]
struct Image {
    refs_raw: Vec<String>,
    cand_raw: String,
    refs_tok: Vec<String>,
    cand_tok: String,
    scores: Scores,
}

#[derive(Deserialize)]
struct Scores {
    #[serde(rename = "METEOR")]
    meteor: f64,
    meteor_stats: String,
}

fn fixture(name: &str) -> Fixture {
    serde_json::from_slice(&common::read_fixture(name)).unwrap_or_else(|e| panic!("cannot parse fixture {name}: {e}"))
}

fn tokenized(fixture: &Fixture) -> Vec<TokenizedImage> {
    fixture
        .image_ids
        .iter()
        .map(|id| {
            let image = &fixture.images[id];
            TokenizedImage { candidate: image.cand_tok.clone(), references: image.refs_tok.clone() }
        })
        .collect()
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn meteor_matches_pycocoevalcap() {
    let meteor = meteor();
    let mut failures = Vec::new();
    for name in common::SCORING_FIXTURES {
        let fixture = fixture(name);
        let images = tokenized(&fixture);
        let start = Instant::now();
        let scores = meteor.score(&images);
        let elapsed = start.elapsed().as_secs_f64();
        let (mut within, mut exact, mut same_stats, mut max_error) = (0, 0, 0, 0.0f64);
        for (k, id) in fixture.image_ids.iter().enumerate() {
            let want = &fixture.images[id].scores;
            let got = scores.per_image[k];
            let error = (got - want.meteor).abs();
            max_error = max_error.max(error);
            within += usize::from(error <= TOLERANCE);
            exact += usize::from(got.to_bits() == want.meteor.to_bits());
            let stats = scores.per_image_stats[k].to_jar_line();
            same_stats += usize::from(stats == want.meteor_stats);
            if (error > TOLERANCE || stats != want.meteor_stats) && failures.len() < 20 {
                failures.push(format!(
                    "{name} image {id}: METEOR {got} (want {})\n    stats {stats}\n    want  {}",
                    want.meteor, want.meteor_stats
                ));
            }
        }
        let corpus_want = fixture.corpus["METEOR"];
        let corpus_error = (scores.corpus - corpus_want).abs();
        eprintln!(
            "{name}: {} images in {elapsed:.3} s; per image: {within} within {TOLERANCE:e}, \
             {exact} bit-identical, {same_stats} identical statistics lines, max abs error \
             {max_error:e}; corpus {} (want {corpus_want}, error {corpus_error:e})",
            images.len(),
            scores.corpus
        );
        if corpus_error > TOLERANCE {
            failures.push(format!("{name}: corpus METEOR {} (want {corpus_want})", scores.corpus));
        }
    }
    assert!(failures.is_empty(), "METEOR differs from pycocoevalcap:\n{}", failures.join("\n"));
}

/// METEOR's data prepared into the cache (the first load) and mapped from it (every later
/// one) scores exactly as the data read from the wheel does.
#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn cached_data_scores_as_the_wheel_does() {
    use caption_eval::meteor::CacheUse;
    let cache = tempfile::tempdir().unwrap();
    let data = caption_test_support::meteor_data();
    let built = Meteor::load_with_cache(&data, Some(cache.path())).unwrap_or_else(|e| panic!("{e}"));
    let loaded = Meteor::load_with_cache(&data, Some(cache.path())).unwrap_or_else(|e| panic!("{e}"));
    let uncached = Meteor::load_with_cache(&data, None).unwrap_or_else(|e| panic!("{e}"));
    let CacheUse::Built(file) = built.cache_use() else { panic!("first load: {:?}", built.cache_use()) };
    assert_eq!(loaded.cache_use(), &CacheUse::Loaded(file.clone()));
    let fixture = fixture(common::SCORING_FIXTURES[0]);
    let images = tokenized(&fixture);
    let want = uncached.score(&images);
    assert_eq!(built.score(&images), want);
    assert_eq!(loaded.score(&images), want);
}

/// Raw captions through the whole pipeline (tokenizer runs, then METEOR next to BLEU), with
/// pycocoevalcap's score names and order.
#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn evaluate_reports_meteor_from_raw_captions() {
    let meteor = meteor();
    for name in common::SCORING_FIXTURES {
        let fixture = fixture(name);
        let references: HashMap<String, Vec<String>> =
            fixture.images.iter().map(|(id, image)| (id.clone(), image.refs_raw.clone())).collect();
        let candidates: HashMap<String, String> = fixture.images.iter().map(|(id, image)| (id.clone(), image.cand_raw.clone())).collect();
        let evaluation =
            evaluate_with(&fixture.image_ids, &references, &candidates, &[Metric::Cider, Metric::Meteor, Metric::Bleu], Some(meteor))
                .unwrap();
        let names: Vec<&str> = evaluation.corpus.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "CIDEr"]);
        let got = evaluation.corpus.get("METEOR").unwrap();
        let want = fixture.corpus["METEOR"];
        assert!((got - want).abs() <= TOLERANCE, "{name}: corpus METEOR {got}, want {want}");
        for image in &evaluation.images {
            let got = image.scores.get("METEOR").unwrap();
            let want = fixture.images[&image.image_id].scores.meteor;
            assert!((got - want).abs() <= TOLERANCE, "{name} image {}: METEOR {got}, want {want}", image.image_id);
        }
    }
}
