//! METEOR 1.5 exactly as pycocoevalcap 1.2 runs it
//! (`java -jar meteor-1.5.jar - - -stdio -l en -norm`): English normalization, exact, stem,
//! synonym and paraphrase matching, the beam-search alignment with its quirks, the best
//! reference per image and the corpus score from summed statistics (not the mean of the
//! per-image scores).
//!
//! METEOR needs data that this crate does not ship: WordNet synsets, function words and
//! non-breaking prefixes (inside `meteor-1.5.jar`) and the 62 MB paraphrase table
//! (`data/paraphrase-en.gz`), all in the PyPI package `pycocoevalcap==1.2`. [`Meteor::locate`]
//! finds them from an explicit path, the `CAPTION_METEOR_DATA` environment variable or an
//! installed pycocoevalcap; the path may be the pycocoevalcap package folder, its `meteor`
//! folder, `meteor-1.5.jar`, the wheel file, or a folder holding the wheel (what
//! `pip download --no-deps pycocoevalcap==1.2 -d DIR` leaves).

mod align;
pub mod cache;
mod data;
pub mod normalize;
pub mod paraphrase;
mod stats;
pub mod stem;
pub mod synonym;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::TokenizedImage;
use crate::fast_hash::FastSet;
use align::{Sentence, WordMemo, align};
pub use cache::CacheUse;
use normalize::{NonbreakingPrefixes, java_lines, java_trim, normalize_line, string_tokens};
use paraphrase::ParaphraseTable;
pub use stats::MeteorStats;
pub use synonym::SynonymDictionary;

/// The environment variable naming METEOR's data (see [`Meteor::locate`]).
pub const DATA_ENV_VAR: &str = "CAPTION_METEOR_DATA";

/// METEOR cannot run: its data is missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "METEOR is unavailable: {reason} (pip download --no-deps pycocoevalcap==1.2, then \
     --meteor-data PATH or CAPTION_METEOR_DATA)"
)]
pub struct MeteorUnavailable {
    pub reason: String,
}

impl MeteorUnavailable {
    fn new(reason: impl Into<String>) -> MeteorUnavailable {
        MeteorUnavailable { reason: reason.into() }
    }
}

/// Finds METEOR's data as [`Meteor::locate`] does and loads only its WordNet synonym
/// dictionary (`synonym/english.exceptions` and `synonym/english.synsets` inside
/// `meteor-1.5.jar`), without the paraphrase table.
pub fn locate_synonyms(explicit: Option<&Path>) -> Result<SynonymDictionary, MeteorUnavailable> {
    load_synonyms(&data::locate(explicit)?)
}

/// Loads only the WordNet synonym dictionary from METEOR's data at `path` (any path
/// [`Meteor::load`] accepts).
pub fn load_synonyms(path: &Path) -> Result<SynonymDictionary, MeteorUnavailable> {
    let files = data::DataFiles::open(path)?;
    let texts = files.jar_texts(&[EXCEPTIONS, SYNSETS])?;
    SynonymDictionary::parse(&texts[0], &texts[1]).map_err(|e| files.corrupt(SYNSETS, e))
}

const FUNCTION_WORDS: &str = "function/english.words";
const PREFIXES: &str = "nonbreaking/english.prefixes";
const EXCEPTIONS: &str = "synonym/english.exceptions";
const SYNSETS: &str = "synonym/english.synsets";

/// METEOR 1.5 with its English resources loaded; build it once and score many times.
#[derive(Debug)]
pub struct Meteor {
    function_words: FastSet<String>,
    prefixes: NonbreakingPrefixes,
    synonyms: SynonymDictionary,
    paraphrases: ParaphraseTable,
    source: PathBuf,
    cache: CacheUse,
}

/// The jar's resources and the paraphrase table, read from METEOR's data files (the paraphrase
/// table on a second thread).
fn prepare(files: &data::DataFiles) -> Result<cache::Prepared, MeteorUnavailable> {
    std::thread::scope(|scope| {
        let paraphrases = scope.spawn(|| files.paraphrase_table());
        let texts = files.jar_texts(&[FUNCTION_WORDS, PREFIXES, EXCEPTIONS, SYNSETS]);
        let paraphrases = paraphrases.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        let [function_words, prefixes, exceptions, synsets]: [String; 4] =
            texts?.try_into().map_err(|_| MeteorUnavailable::new("METEOR's jar texts"))?;
        Ok(cache::Prepared { function_words, prefixes, exceptions, synsets, paraphrases })
    })
}

/// METEOR scores of a set of images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeteorScores {
    /// pycocoevalcap's `METEOR`: the score of the summed statistics.
    pub corpus: f64,
    /// Per image, in input order: the score against the best reference.
    pub per_image: Vec<f64>,
    /// Per image: the jar's statistics against the best reference.
    pub per_image_stats: Vec<MeteorStats>,
    /// The summed statistics (chunks of perfect images left out, as the jar does).
    pub corpus_stats: MeteorStats,
}

impl Meteor {
    /// Finds and loads METEOR's data from, in this order: `explicit` (a path given by the
    /// caller, e.g. `--meteor-data`), the `CAPTION_METEOR_DATA` environment variable, an
    /// installed pycocoevalcap (`python3 -c 'import pycocoevalcap'`, then the usual
    /// site-packages folders).
    pub fn locate(explicit: Option<&Path>) -> Result<Meteor, MeteorUnavailable> {
        Meteor::load(&data::locate(explicit)?)
    }

    /// Loads METEOR's data from `path`: the pycocoevalcap package folder, its `meteor` folder,
    /// `meteor-1.5.jar` (with `data/paraphrase-en.gz` beside it), the pycocoevalcap 1.2 wheel,
    /// or a folder holding that wheel.
    pub fn load(path: &Path) -> Result<Meteor, MeteorUnavailable> {
        Meteor::load_with_cache(path, cache::cache_dir().as_deref())
    }

    /// [`Meteor::load`], keeping the prepared data in `cache_dir` (`None`: not at all) instead
    /// of the user's cache folder ([`cache::cache_dir`]).
    pub fn load_with_cache(path: &Path, cache_dir: Option<&Path>) -> Result<Meteor, MeteorUnavailable> {
        let files = data::DataFiles::open(path)?;
        let (prepared, cache) = cache::load_or_build(cache_dir, &files.sources(), || prepare(&files))?;
        let cache::Prepared { function_words, prefixes, exceptions, synsets, paraphrases } = prepared;
        let synonyms = SynonymDictionary::parse(&exceptions, &synsets).map_err(|e| files.corrupt(SYNSETS, e))?;
        Ok(Meteor {
            function_words: java_lines(&function_words).map(str::to_string).collect(),
            prefixes: NonbreakingPrefixes::parse(&prefixes),
            synonyms,
            paraphrases,
            source: files.source().to_path_buf(),
            cache,
        })
    }

    /// Whether the data came from the cache, was built into it, or could not be cached.
    pub fn cache_use(&self) -> &CacheUse {
        &self.cache
    }

    /// A METEOR with made-up resources, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(function_words: &[&str], exceptions: &str, synsets: &str, paraphrases: &str) -> Meteor {
        Meteor {
            function_words: function_words.iter().map(|w| w.to_string()).collect(),
            prefixes: NonbreakingPrefixes::parse("Mr\nv\n"),
            synonyms: SynonymDictionary::parse(exceptions, synsets).unwrap(),
            paraphrases: ParaphraseTable::read(paraphrases.as_bytes()).unwrap(),
            source: PathBuf::from("test"),
            cache: CacheUse::Unavailable("made up".into()),
        }
    }

    /// The WordNet synonym dictionary (SPICE matches with the same synsets).
    pub fn synonyms(&self) -> &SynonymDictionary {
        &self.synonyms
    }

    /// Where the data was loaded from (the jar or the wheel).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Normalizes and lowercases a line as `-norm` does, then splits it into words.
    pub fn words(&self, line: &str) -> Vec<String> {
        string_tokens(&normalize_line(line, &self.prefixes).to_lowercase()).map(str::to_string).collect()
    }

    /// The statistics pycocoevalcap gets for one image: the jar's `SCORE` line for the
    /// candidate against its references, keeping the best reference (first on ties).
    /// pycocoevalcap's line format is reproduced: `|||` is removed from the candidate and
    /// double spaces halved, and a reference containing `|||` splits into several.
    pub fn image_stats<S: AsRef<str>>(&self, candidate: &str, references: &[S]) -> MeteorStats {
        self.image_stats_with(&mut WordMemo::default(), candidate, references)
    }

    /// [`Meteor::image_stats`], with the facts of words already seen.
    fn image_stats_with<S: AsRef<str>>(&self, memo: &mut WordMemo, candidate: &str, references: &[S]) -> MeteorStats {
        let candidate = candidate.replace("|||", "").replace("  ", " ");
        let references: Vec<&str> = references.iter().map(AsRef::as_ref).collect();
        let line = format!("SCORE ||| {} ||| {}", references.join(" ||| "), candidate);
        let mut fields: Vec<&str> = line.split("|||").collect();
        while fields.last().is_some_and(|f| f.is_empty()) {
            fields.pop();
        }
        if fields.len() < 3 {
            return MeteorStats::default();
        }
        let hyp_words = self.words(java_trim(fields[fields.len() - 1]));
        let hyp = self.sentence(&hyp_words, memo);
        let mut best: Option<(f64, MeteorStats)> = None;
        for reference in &fields[1..fields.len() - 1] {
            let ref_words = self.words(java_trim(reference));
            let stats = align(&hyp, &self.sentence(&ref_words, memo));
            let score = stats.score();
            if best.is_none_or(|(best_score, _)| score > best_score) {
                best = Some((score, stats));
            }
        }
        best.map(|(_, stats)| stats).unwrap_or_default()
    }

    /// Statistics of a hypothesis against a single reference, both already normalized
    /// words (`MeteorScorer.getMeteorStats(ArrayList, ArrayList)`).
    pub fn pair_stats<S: AsRef<str>>(&self, hypothesis: &[S], reference: &[S]) -> MeteorStats {
        let hyp: Vec<&str> = hypothesis.iter().map(AsRef::as_ref).collect();
        let reference: Vec<&str> = reference.iter().map(AsRef::as_ref).collect();
        let mut memo = WordMemo::default();
        align(&Sentence::new(&hyp, self, &mut memo), &Sentence::new(&reference, self, &mut memo))
    }

    fn sentence(&self, words: &[String], memo: &mut WordMemo) -> Sentence<'_> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        Sentence::new(&words, self, memo)
    }

    /// pycocoevalcap's `Meteor().compute_score`: per-image scores and the corpus score of the
    /// summed statistics. Images are scored in parallel.
    pub fn score(&self, images: &[TokenizedImage]) -> MeteorScores {
        let per_image_stats = self.all_image_stats(images);
        let mut corpus_stats = MeteorStats::default();
        for stats in &per_image_stats {
            corpus_stats.add(stats);
        }
        MeteorScores {
            corpus: corpus_stats.score(),
            per_image: per_image_stats.iter().map(MeteorStats::score).collect(),
            per_image_stats,
            corpus_stats,
        }
    }

    fn all_image_stats(&self, images: &[TokenizedImage]) -> Vec<MeteorStats> {
        // A few chunks per thread, each remembering the words it has seen (the results do not
        // depend on it); collected in image order.
        let chunk = images.len().div_ceil(4 * rayon::current_num_threads()).max(1);
        images
            .par_chunks(chunk)
            .flat_map_iter(|part| {
                let mut memo = WordMemo::default();
                part.iter().map(|image| self.image_stats_with(&mut memo, &image.candidate, &image.references)).collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_data_says_how_to_get_it() {
        let error = Meteor::load(Path::new("/nonexistent/meteor-data")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "METEOR is unavailable: /nonexistent/meteor-data: no such file or folder (pip \
             download --no-deps pycocoevalcap==1.2, then --meteor-data PATH or \
             CAPTION_METEOR_DATA)"
        );
        let dir = std::env::temp_dir();
        let error = Meteor::load(&dir).unwrap_err();
        assert!(error.to_string().contains("neither meteor-1.5.jar"), "{error}");
    }

    #[test]
    fn best_reference_and_pycocoevalcap_line_format() {
        let meteor = Meteor::for_tests(&["a"], "", "", "");
        // The first of equally good references wins; `|||` splits a reference in two.
        let stats = meteor.image_stats("a dog", &["a cat", "a dog ||| a dog runs"]);
        assert_eq!(stats.reference_length, 2);
        assert_eq!(stats.score(), 1.0);
        // `|||` is removed from the candidate.
        let stats = meteor.image_stats("a ||| dog", &["a dog"]);
        assert_eq!(stats.test_length, 2);
        assert_eq!(meteor.words("A well-known DOG."), ["a", "well", "known", "dog", "."]);
    }
}
