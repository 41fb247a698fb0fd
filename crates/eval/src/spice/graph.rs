//! SPICE 1.0's scene graphs: concepts (word sets with WordNet synsets), node merging of
//! similar objects, tuple sets and their synonym-aware matching.

use super::lexicon::{CARDINALITY_WORDS, COLOR_WORDS, SIZE_WORDS};
use super::parse::Tuple;
use crate::meteor::SynonymDictionary;
use crate::meteor::synonym::intersect;

/// A concept: the words that name it and their WordNet synsets (sorted, no duplicates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concept {
    strings: Vec<String>,
    synsets: Vec<i32>,
}

impl Concept {
    fn new(word: &str, dict: &SynonymDictionary) -> Concept {
        let word = word.trim().to_lowercase();
        let synsets = dict.all_synsets(&word.replace(' ', "_"));
        Concept { strings: vec![word], synsets }
    }

    fn strings_intersect(&self, other: &Concept) -> bool {
        self.strings.iter().any(|s| other.strings.contains(s))
    }

    /// Shares a word or a synset.
    fn similar_to(&self, other: &Concept) -> bool {
        self.strings_intersect(other) || intersect(&self.synsets, &other.synsets)
    }

    /// 1 when a word is shared, else the Jaccard similarity of the synset sets.
    fn similarity(&self, other: &Concept) -> f64 {
        if self.strings_intersect(other) {
            return 1.0;
        }
        let (a, b) = (&self.synsets, &other.synsets);
        let (mut i, mut j, mut common) = (0, 0, 0usize);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    common += 1;
                    i += 1;
                    j += 1;
                }
            }
        }
        let union = a.len() + b.len() - common;
        if union == 0 { 0.0 } else { common as f64 / union as f64 }
    }

    fn merge(&mut self, other: Concept) {
        for s in other.strings {
            if let Err(at) = self.strings.binary_search(&s) {
                self.strings.insert(at, s);
            }
        }
        self.synsets.extend(other.synsets);
        self.synsets.sort_unstable();
        self.synsets.dedup();
    }

    /// The single word of an unmerged concept (a merged one prints as `a/b`).
    fn single_word(&self) -> Option<&str> {
        match self.strings.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    /// The concept's words joined by `/`, as SPICE prints them.
    pub fn text(&self) -> String {
        self.strings.join("/")
    }
}

#[derive(Debug, Clone)]
struct Node {
    object: Concept,
    attributes: Vec<Concept>,
}

#[derive(Debug, Clone)]
struct Edge {
    source: usize,
    target: usize,
    relation: Concept,
}

/// A scene graph built from tuples the way SPICE 1.0 builds it (concept merging on).
#[derive(Debug, Clone, Default)]
pub struct SceneGraph {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

impl SceneGraph {
    /// Adds one caption's tuples, in order.
    pub fn add_tuples(&mut self, tuples: &[Tuple], dict: &SynonymDictionary) {
        for tuple in tuples {
            match tuple {
                Tuple::Object(o) => {
                    self.node(Concept::new(o, dict));
                }
                Tuple::Attribute(o, a) => {
                    let node = self.node(Concept::new(o, dict));
                    self.add_attribute(node, Concept::new(a, dict));
                }
                Tuple::Relation { subject, predicate, object } => {
                    let source = self.node(Concept::new(subject, dict));
                    let target = self.node(Concept::new(object, dict));
                    self.add_relation(source, target, Concept::new(predicate, dict));
                }
            }
        }
    }

    /// The node of an equal concept, else the most similar node (merged with the concept),
    /// else a new node.
    fn node(&mut self, concept: Concept) -> usize {
        if let Some(i) = self.nodes.iter().position(|n| n.object == concept) {
            return i;
        }
        let mut best: Option<(usize, f64)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let similarity = node.object.similarity(&concept);
            if similarity > best.map_or(0.0, |(_, s)| s) {
                best = Some((i, similarity));
            }
        }
        match best {
            Some((i, _)) => {
                self.nodes[i].object.merge(concept);
                i
            }
            None => {
                self.nodes.push(Node { object: concept, attributes: Vec::new() });
                self.nodes.len() - 1
            }
        }
    }

    fn add_attribute(&mut self, node: usize, attribute: Concept) {
        let attributes = &mut self.nodes[node].attributes;
        if attributes.contains(&attribute) {
            return;
        }
        match attributes.iter_mut().find(|a| a.similar_to(&attribute)) {
            Some(existing) => existing.merge(attribute),
            None => attributes.push(attribute),
        }
    }

    fn add_relation(&mut self, source: usize, target: usize, relation: Concept) {
        if self.edges.iter().any(|e| e.source == source && e.target == target && e.relation == relation) {
            return;
        }
        match self.edges.iter_mut().find(|e| e.source == source && e.target == target && e.relation.similar_to(&relation)) {
            Some(edge) => edge.relation.merge(relation),
            None => self.edges.push(Edge { source, target, relation }),
        }
    }

    /// The graph's tuples: each object, each (object, attribute), each (source, relation,
    /// target).
    pub fn tuples(&self) -> Vec<Vec<&Concept>> {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.push(vec![&node.object]);
            for attribute in &node.attributes {
                out.push(vec![&node.object, attribute]);
            }
        }
        for edge in &self.edges {
            out.push(vec![&self.nodes[edge.source].object, &edge.relation, &self.nodes[edge.target].object]);
        }
        out
    }
}

/// A subset of tuples SPICE scores separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    All,
    Object,
    Attribute,
    Relation,
    Color,
    Cardinality,
    Size,
}

impl Category {
    pub const ALL: [Category; 7] =
        [Category::All, Category::Object, Category::Attribute, Category::Relation, Category::Color, Category::Cardinality, Category::Size];

    /// The name SPICE gives the subset in its JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Category::All => "All",
            Category::Object => "Object",
            Category::Attribute => "Attribute",
            Category::Relation => "Relation",
            Category::Color => "Color",
            Category::Cardinality => "Cardinality",
            Category::Size => "Size",
        }
    }

    fn contains(self, tuple: &[&Concept]) -> bool {
        let attribute_in = |list: &[&str]| tuple.len() == 2 && tuple[1].single_word().is_some_and(|w| list.contains(&w));
        match self {
            Category::All => true,
            Category::Object => tuple.len() == 1,
            Category::Attribute => tuple.len() == 2,
            Category::Relation => tuple.len() == 3,
            Category::Color => attribute_in(&COLOR_WORDS),
            Category::Cardinality => attribute_in(&CARDINALITY_WORDS),
            Category::Size => attribute_in(&SIZE_WORDS),
        }
    }
}

/// Counts of one image and one category: matched candidate tuples, candidate tuples and
/// reference tuples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub tp: usize,
    pub candidate: usize,
    pub reference: usize,
}

/// Matches the candidate's tuples against the references' (SPICE's default: element-wise
/// shared word or synset, first match, not one to one), for every category.
pub fn count_all(candidate: &SceneGraph, reference: &SceneGraph) -> [Counts; 7] {
    let test = candidate.tuples();
    let refs = reference.tuples();
    let matched: Vec<bool> =
        test.iter().map(|t| refs.iter().any(|r| r.len() == t.len() && r.iter().zip(t.iter()).all(|(a, b)| a.similar_to(b)))).collect();
    Category::ALL.map(|category| {
        // A tuple matches only tuples of its own length, and the categories are decided
        // by the tuple alone, so a match found in the full set is one in the subset.
        let mut counts = Counts::default();
        for (t, &m) in test.iter().zip(&matched) {
            if category.contains(t) {
                counts.candidate += 1;
                counts.tp += usize::from(m && subset_match(t, &refs, category));
            }
        }
        counts.reference = refs.iter().filter(|r| category.contains(r)).count();
        counts
    })
}

/// Whether `t` matches a reference tuple that is itself in `category`.
fn subset_match(t: &[&Concept], refs: &[Vec<&Concept>], category: Category) -> bool {
    match category {
        Category::All | Category::Object | Category::Attribute | Category::Relation => true,
        _ => refs.iter().any(|r| category.contains(r) && r.len() == t.len() && r.iter().zip(t.iter()).all(|(a, b)| a.similar_to(b))),
    }
}
