//! SPICE-rb: a SPICE-style scene-graph F-score with a rule-based parser, in pure Rust.
//!
//! SPICE 1.0 (Anderson et al., ECCV 2016), as pycocoevalcap runs it, parses every caption
//! with Stanford CoreNLP into a scene graph of objects, attributes and relations, merges the
//! references' graphs per image, and scores the candidate's tuples against the references'
//! with WordNet synonym matching (P, R, F1 per image; corpus = mean per-image F1). It needs
//! Java and CoreNLP's model jars. This module keeps SPICE's graph building, matching and
//! scoring (see `SPICE_NOTES.md`: concept merging, synonym matching, the All / Object /
//! Attribute / Relation / Color / Cardinality / Size subsets, NaN for empty reference
//! subsets) and replaces CoreNLP with a rule-based parser ([`Spice::parse`]): it is an
//! approximation of SPICE, not SPICE, and reports under its own name, [`SCORE_NAME`]
//! (`SPICE-rb`). How close it comes is measured in `docs/spice.md`.
//!
//! Its only data is WordNet's synonym sets as METEOR 1.5 ships them (the same
//! `english.synsets` and `english.exceptions` real SPICE reads from `Meteor-1.5.jar`), found
//! like METEOR's ([`crate::meteor::Meteor::locate`]).

mod graph;
mod lexicon;
mod parse;

use rayon::prelude::*;
use std::path::Path;

use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::TokenizedImage;
use crate::meteor::{self, Meteor, MeteorUnavailable, SynonymDictionary};
pub use graph::{Category, Counts};
use graph::{SceneGraph, count_all};
use lexicon::Lexicon;
use parse::Morphology;
pub use parse::Tuple;

/// The name the score is reported under: not `SPICE`, which it only approximates.
pub const SCORE_NAME: &str = "SPICE-rb";

/// Precision, recall and F1 of one image in one category, with the counts behind them.
/// `pr`, `re` and `f` are NaN in a category (other than `All`) where the references have no
/// tuple, as in SPICE's output (`null`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CategoryScore {
    pub pr: f64,
    pub re: f64,
    pub f: f64,
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
}

impl CategoryScore {
    fn new(counts: Counts, allow_nan: bool) -> CategoryScore {
        let Counts { tp, candidate, reference } = counts;
        let (pr, re, f) = if allow_nan && reference == 0 {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            let pr = if candidate > 0 { tp as f64 / candidate as f64 } else { 0.0 };
            let re = if reference > 0 { tp as f64 / reference as f64 } else { 0.0 };
            let f = if pr > 0.0 && re > 0.0 { 2.0 * pr * re / (pr + re) } else { 0.0 };
            (pr, re, f)
        };
        CategoryScore { pr, re, f, tp, fp: candidate - tp, fn_: reference - tp }
    }
}

impl Serialize for CategoryScore {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let nan_null = |v: f64| (!v.is_nan()).then_some(v);
        let mut s = serializer.serialize_struct("CategoryScore", 6)?;
        s.serialize_field("pr", &nan_null(self.pr))?;
        s.serialize_field("re", &nan_null(self.re))?;
        s.serialize_field("f", &nan_null(self.f))?;
        s.serialize_field("tp", &self.tp)?;
        s.serialize_field("fp", &self.fp)?;
        s.serialize_field("fn", &self.fn_)?;
        s.end()
    }
}

/// One image's scores in every category, in [`Category::ALL`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageScores {
    pub categories: [CategoryScore; 7],
}

impl ImageScores {
    pub fn get(&self, category: Category) -> &CategoryScore {
        let index = Category::ALL.iter().position(|c| *c == category).expect("every category is listed");
        &self.categories[index]
    }

    /// The `All` F1: the image's score.
    pub fn f(&self) -> f64 {
        self.categories[0].f
    }
}

impl Serialize for ImageScores {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(7))?;
        for (category, score) in Category::ALL.iter().zip(&self.categories) {
            map.serialize_entry(category.name(), score)?;
        }
        map.end()
    }
}

/// Scores of a set of images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpiceScores {
    /// The mean of the per-image `All` F1 (numpy's summation, as pycocoevalcap).
    pub corpus: f64,
    pub per_image: Vec<ImageScores>,
}

/// The scorer: WordNet synonyms loaded, ready to score many images.
#[derive(Debug, Clone)]
pub struct Spice {
    synonyms: SynonymDictionary,
}

impl Spice {
    /// Finds METEOR's data as [`Meteor::locate`] does (explicit path, `CAPTION_METEOR_DATA`,
    /// installed pycocoevalcap) and loads its WordNet synonyms.
    pub fn locate(explicit: Option<&Path>) -> Result<Spice, MeteorUnavailable> {
        Ok(Spice::new(meteor::locate_synonyms(explicit)?))
    }

    /// Loads the WordNet synonyms from METEOR's data at `path` (any path [`Meteor::load`]
    /// accepts).
    pub fn load(path: &Path) -> Result<Spice, MeteorUnavailable> {
        Ok(Spice::new(meteor::load_synonyms(path)?))
    }

    /// Shares METEOR's already loaded synonyms (copied).
    pub fn from_meteor(meteor: &Meteor) -> Spice {
        Spice::new(meteor.synonyms().clone())
    }

    pub fn new(synonyms: SynonymDictionary) -> Spice {
        Spice { synonyms }
    }

    fn morphology(&self) -> Morphology<'_> {
        Morphology { dict: &self.synonyms, lexicon: Lexicon::get() }
    }

    /// The tuples of one tokenized (lowercase, space-separated) caption, in extraction
    /// order, duplicates included.
    pub fn parse(&self, caption: &str) -> Vec<Tuple> {
        parse::parse(caption, &self.morphology())
    }

    /// The tagger's reading of a caption (`word/Tag/lemma`), for debugging the parser.
    pub fn explain(&self, caption: &str) -> String {
        parse::debug_tags(caption, &self.morphology())
    }

    fn graph<S: AsRef<str>>(&self, captions: &[S]) -> SceneGraph {
        let morphology = self.morphology();
        let mut graph = SceneGraph::default();
        for caption in captions {
            graph.add_tuples(&parse::parse(caption.as_ref(), &morphology), &self.synonyms);
        }
        graph
    }

    /// The scene graphs' tuples as SPICE prints them (`(man, ride, horse)`, merged concepts
    /// as `a/b`): the candidate's, then the references' merged graph.
    pub fn graph_tuples<S: AsRef<str>>(&self, candidate: &str, references: &[S]) -> (Vec<String>, Vec<String>) {
        let print = |graph: &SceneGraph| {
            graph
                .tuples()
                .iter()
                .map(|t| {
                    let words: Vec<String> = t.iter().map(|c| c.text()).collect();
                    format!("({})", words.join(", "))
                })
                .collect()
        };
        (print(&self.graph(&[candidate])), print(&self.graph(references)))
    }

    /// One image: the candidate's graph against the references' merged graph.
    pub fn image_scores<S: AsRef<str>>(&self, candidate: &str, references: &[S]) -> ImageScores {
        let candidate = self.graph(&[candidate]);
        let reference = self.graph(references);
        let counts = count_all(&candidate, &reference);
        let mut categories = [CategoryScore::new(Counts::default(), false); 7];
        for (k, c) in counts.into_iter().enumerate() {
            categories[k] = CategoryScore::new(c, k != 0);
        }
        ImageScores { categories }
    }

    /// Scores every image (in parallel) and the corpus (mean per-image `All` F1).
    pub fn score(&self, images: &[TokenizedImage]) -> SpiceScores {
        let per_image: Vec<ImageScores> = images.par_iter().map(|image| self.image_scores(&image.candidate, &image.references)).collect();
        let fs: Vec<f64> = per_image.iter().map(ImageScores::f).collect();
        SpiceScores { corpus: if fs.is_empty() { f64::NAN } else { crate::numpy_mean::numpy_mean(&fs) }, per_image }
    }
}
