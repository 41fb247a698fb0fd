//! A rule-based scene-graph parser for (PTB-tokenized, lowercase) caption English.
//!
//! SPICE 1.0 parses captions with Stanford CoreNLP (PCFG parser, Universal Dependencies) and
//! turns dependency patterns into tuples. This parser gets the same kinds of tuples without a
//! statistical model: a lexicon-and-context part-of-speech tagger, a noun-phrase chunker and
//! a left-to-right pass that links noun phrases through the verbs, prepositions and copulas
//! between them:
//!
//! * every noun-phrase head is an object (`a dog` → `(dog)`);
//! * adjectives and compound nouns are attributes (`a red bus` → `(bus, red)`,
//!   `a tennis racket` → `(racket, tennis)`), numbers are attributes of plural heads
//!   (`two dogs` → `(dog, two)`), quantifier phrases too (`a couple of dogs`);
//! * verbs with an object or a prepositional object are relations
//!   (`a man riding a horse` → `(man, ride, horse)`, `a cat sitting on a mat` →
//!   `(cat, sit on, mat)`), prepositions after a noun are relations between the nouns
//!   (`a dog on the beach` → `(dog, on, beach)`, `in front of`, `next to` as one relation),
//!   the possessive `'s` is `have`;
//! * a verb with a subject and no object is an attribute (`a woman is smiling` →
//!   `(woman, smile)`), so are predicate adjectives and nouns (`the man is tall`).

use super::lexicon::{Lexicon, MULTIWORD_PREPOSITIONS};
use crate::meteor::SynonymDictionary;

/// One tuple of a caption's scene graph, with lemmatized words.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tuple {
    /// An object: `(dog)`.
    Object(String),
    /// An attribute of an object: `(dog, brown)`.
    Attribute(String, String),
    /// A relation between two objects, in SPICE's printed order: `(man, ride, horse)` is
    /// `Relation { subject: "man", predicate: "ride", object: "horse" }`.
    Relation { subject: String, predicate: String, object: String },
}

impl Tuple {
    /// The tuple's words in SPICE's printed order.
    pub fn words(&self) -> Vec<&str> {
        match self {
            Tuple::Object(o) => vec![o],
            Tuple::Attribute(o, a) => vec![o, a],
            Tuple::Relation { subject, predicate, object } => vec![subject, predicate, object],
        }
    }
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({})", self.words().join(", "))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Base,
    Third,
    Ing,
    Past,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Det,
    Num,
    Adj,
    Noun,
    Pron,
    Prep,
    Conj,
    Be,
    Aux,
    Sub,
    Rel,
    Adv,
    To,
    Poss,
    There,
    Particle,
    Verb(Form),
    Other,
}

#[derive(Debug, Clone)]
struct Tok {
    word: String,
    lemma: String,
    tag: Tag,
    plural: bool,
}

/// What the lexicon alone says of a word, before context decides.
#[derive(Debug, Clone)]
enum Lex {
    Closed(Tag),
    /// `that`, `'s`, `her`, `to`, `one`, `there` and the particles: decided in context.
    Special,
    Open(Open),
}

#[derive(Debug, Clone)]
struct Open {
    adjective: bool,
    /// Lemma and form when the word is a form of a listed verb.
    verb: Option<(String, Form)>,
    noun_dominant: bool,
    ing_noun: bool,
    adverb: bool,
}

impl Lex {
    /// Whether the word can head or modify a noun phrase as a noun.
    fn nominal(&self) -> bool {
        match self {
            Lex::Open(open) => {
                !open.adverb
                    && match &open.verb {
                        None => !open.adjective,
                        Some((_, Form::Ing)) => open.ing_noun,
                        Some((_, Form::Past)) => false,
                        Some(_) => true,
                    }
            }
            Lex::Closed(Tag::Num) => true,
            _ => false,
        }
    }

    fn adjective(&self) -> bool {
        matches!(self, Lex::Open(open) if open.adjective)
    }

    fn closed(&self, tag: Tag) -> bool {
        matches!(self, Lex::Closed(t) if *t == tag)
    }

    fn verbal(&self) -> bool {
        match self {
            Lex::Open(open) => open.verb.is_some() && !open.adjective,
            Lex::Closed(Tag::Be | Tag::Aux | Tag::Adv) => true,
            _ => false,
        }
    }
}

/// Words that are adjectives before a noun and nouns otherwise.
const NOUN_OR_ADJECTIVE: &[&str] = &[
    "light",
    "orange",
    "top",
    "front",
    "back",
    "bottom",
    "side",
    "left",
    "right",
    "middle",
    "gold",
    "silver",
    "cream",
    "chocolate",
    "plastic",
    "metal",
    "glass",
    "wood",
    "stone",
    "brick",
    "steel",
    "paper",
    "leather",
    "evening",
    "morning",
    "night",
    "baby",
    "adult",
    "teen",
    "toy",
    "female",
    "male",
    "human",
    "olive",
    "lime",
    "rose",
    "coral",
    "navy",
    "tan",
    "red",
    "white",
    "black",
    "blue",
    "green",
    "yellow",
    "brown",
    "gray",
    "grey",
    "pink",
    "purple",
    "fake",
    "dark",
    "square",
    "first",
    "second",
    "last",
    "other",
    "inside",
    "outside",
    "commercial",
    "professional",
    "giant",
    "individual",
    "double",
    "single",
];

/// Adverb-list words that are nouns after a determiner or adjective.
const ADVERB_OR_NOUN: &[&str] = &["back", "side", "home", "high", "low", "overhead", "midair"];

/// `-ly` words that are not adverbs.
const LY_NOUNS: &[&str] = &[
    "family",
    "belly",
    "lily",
    "fly",
    "jelly",
    "rally",
    "ally",
    "bully",
    "holly",
    "trolly",
    "butterfly",
    "dragonfly",
    "firefly",
    "reply",
    "supply",
    "assembly",
    "italy",
    "july",
    "sally",
    "billy",
    "molly",
    "polly",
    "dolly",
    "gully",
    "tally",
    "wally",
    "kelly",
];

/// Plural nouns that WordNet's suffix rules would wrongly reduce.
const KEEP_PLURAL: &[&str] = &["people", "glasses"];

/// `each other`, `one another`: no object.
const RECIPROCALS: &[&str] = &["each other", "one another"];

const MIDDLE_NOUNS: &[&str] = &["front", "top", "back", "side", "place", "addition", "spite", "behalf", "case", "means"];

/// The lemmatizer: WordNet's exception lists and suffix rules (METEOR's data), verb
/// lemmas preferring the verb lexicon.
pub(super) struct Morphology<'a> {
    pub(super) dict: &'a SynonymDictionary,
    pub(super) lexicon: &'static Lexicon,
}

impl Morphology<'_> {
    /// The lemma of a noun and whether it is plural.
    fn noun(&self, word: &str) -> (String, bool) {
        let lex = self.lexicon;
        if lex.plural_nouns.contains(word) || KEEP_PLURAL.contains(&word) {
            return (word.to_string(), true);
        }
        if matches!(word, "men" | "feet" | "mice" | "lice")
            && let Some(base) = self.dict.exception_bases(word).first()
        {
            return (base.clone(), true);
        }
        if word.len() <= 3 || word.ends_with("ss") || ((word.ends_with("us") || word.ends_with("is")) && self.dict.contains(word)) {
            return (word.to_string(), false);
        }
        let looks_plural = word.ends_with('s')
            || word.ends_with("men")
            || word.ends_with("ren")
            || matches!(word, "feet" | "teeth" | "mice" | "geese" | "lice" | "data" | "media");
        if !looks_plural {
            return (word.to_string(), false);
        }
        if let Some(base) = self.dict.exception_bases(word).first() {
            return (base.clone(), base != word);
        }
        // WordNet's noun rules, with the sibilant ones first (`bunches` is `bunch`, not the
        // surname `bunche`).
        const RULES: [(&str, &str); 8] =
            [("ches", "ch"), ("shes", "sh"), ("xes", "x"), ("zes", "z"), ("s", ""), ("ses", "s"), ("men", "man"), ("ies", "y")];
        for (suffix, replacement) in RULES {
            if let Some(stem) = word.strip_suffix(suffix) {
                let candidate = format!("{stem}{replacement}");
                if self.dict.contains(&candidate) {
                    return (candidate, true);
                }
            }
        }
        // Unknown plural-looking words: strip a final `s` when the word is not in WordNet
        // itself (spelling variants, rare nouns).
        if word.ends_with('s') && !self.dict.contains(word) {
            if let Some(stem) = word.strip_suffix("ies") {
                return (format!("{stem}y"), true);
            }
            if let Some(stem) = word.strip_suffix('s') {
                return (stem.to_string(), true);
            }
        }
        (word.to_string(), false)
    }

    /// The lemma and form of a verb form whose lemma is a listed verb.
    fn verb(&self, word: &str) -> Option<(String, Form)> {
        let lex = self.lexicon;
        let form_of = |w: &str| {
            if w.ends_with("ing") {
                Form::Ing
            } else if w.ends_with('s') {
                Form::Third
            } else {
                Form::Past
            }
        };
        if let Some(base) = lex.irregular_verbs.get(word) {
            let form = match word {
                "has" | "does" | "goes" => Form::Third,
                _ if word == *base => Form::Base,
                _ => form_of(word),
            };
            return Some((base.to_string(), form));
        }
        if lex.verbs.contains(word) {
            return Some((word.to_string(), Form::Base));
        }
        let form = if word.ends_with("ing") {
            Form::Ing
        } else if word.ends_with("ed") {
            Form::Past
        } else if word.ends_with('s') {
            Form::Third
        } else {
            return None;
        };
        if word.len() <= 3 {
            return None;
        }
        for base in self.dict.exception_bases(word) {
            if lex.verbs.contains(base.as_str()) {
                return Some((base.clone(), form));
            }
        }
        const RULES: [(&str, &str); 8] =
            [("ies", "y"), ("es", "e"), ("es", ""), ("s", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")];
        let mut candidates: Vec<String> = Vec::new();
        for (suffix, replacement) in RULES {
            if let Some(stem) = word.strip_suffix(suffix) {
                candidates.push(format!("{stem}{replacement}"));
                // Doubled final consonant: sitting → sit, stopped → stop.
                let bytes = stem.as_bytes();
                if replacement.is_empty()
                    && bytes.len() >= 3
                    && bytes[bytes.len() - 1] == bytes[bytes.len() - 2]
                    && !b"aeiouslz".contains(&bytes[bytes.len() - 1])
                {
                    candidates.push(stem[..stem.len() - 1].to_string());
                }
            }
        }
        candidates.into_iter().find(|c| lex.verbs.contains(c.as_str())).map(|c| (c, form))
    }

    fn lex(&self, word: &str) -> Lex {
        let lex = self.lexicon;
        if matches!(word, "that" | "'s" | "her" | "to" | "one" | "there" | "like") || lex.particles.contains(word) {
            return Lex::Special;
        }
        if word.bytes().all(|b| b.is_ascii_digit()) && !word.is_empty() {
            return Lex::Closed(Tag::Num);
        }
        for (set, tag) in [
            (&lex.determiners, Tag::Det),
            (&lex.be, Tag::Be),
            (&lex.auxiliaries, Tag::Aux),
            (&lex.conjunctions, Tag::Conj),
            (&lex.numbers, Tag::Num),
            (&lex.prepositions, Tag::Prep),
            (&lex.pronouns, Tag::Pron),
            (&lex.relatives, Tag::Rel),
            (&lex.subordinators, Tag::Sub),
        ] {
            if set.contains(word) {
                return Lex::Closed(tag);
            }
        }
        if matches!(word, "has" | "have" | "had") {
            return Lex::Special;
        }
        let adjective = lex.adjectives.contains(word)
            || (word.contains('-') && (word.ends_with("ed") || word.rsplit('-').next().is_some_and(|last| lex.adjectives.contains(last))))
            || ((word.ends_with("ful")
                || word.ends_with("ical")
                || word.ends_with("ous")
                || word.ends_with("less")
                || word.ends_with("ible")
                || word.ends_with("able"))
                && word.len() > 5
                && !lex.verbs.contains(word));
        let adverb = !adjective && (lex.adverbs.contains(word) || (word.ends_with("ly") && word.len() > 4 && !LY_NOUNS.contains(&word)));
        let mut verb = if adjective && !lex.verbs.contains(word) { None } else { self.verb(word) };
        let mut adjective = adjective;
        if verb.is_none() && !adjective && word.ends_with("ed") && word.len() > 4 && !lex.ed_non_verbs.contains(word) {
            adjective = true;
        }
        if adjective && verb.as_ref().is_some_and(|(_, f)| *f == Form::Base) {
            // `open`, `clean`: adjectives first; the verb reading is rare in captions.
            verb = None;
        }
        let noun_dominant = verb.as_ref().is_some_and(|(lemma, _)| lex.noun_dominant_verbs.contains(lemma.as_str()));
        Lex::Open(Open { adjective, verb, noun_dominant, ing_noun: lex.ing_nouns.contains(word), adverb })
    }
}

/// Tokens after multi-word prepositions are joined, with the nouns inside them
/// (`front` in `in front of`), which stay objects.
fn join_multiword(words: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::with_capacity(words.len());
    let mut middle = Vec::new();
    let mut i = 0;
    'outer: while i < words.len() {
        for reciprocal in [["each", "other"], ["one", "another"]] {
            if words[i..].starts_with(&reciprocal) {
                out.push(reciprocal.join(" "));
                i += 2;
                continue 'outer;
            }
        }
        let after_determiner = i > 0 && Lexicon::get().determiners.contains(words[i - 1]);
        for mwp in MULTIWORD_PREPOSITIONS {
            if !after_determiner && words.len() - i >= mwp.len() && words[i..i + mwp.len()] == **mwp {
                // `next to`, `close to`: only as prepositions before a noun phrase.
                out.push(mwp.join(" "));
                if mwp.len() == 3 && MIDDLE_NOUNS.contains(&mwp[1]) {
                    middle.push(mwp[1].to_string());
                }
                i += mwp.len();
                continue 'outer;
            }
        }
        out.push(words[i].to_string());
        i += 1;
    }
    (out, middle)
}

fn tag(words: &[String], morph: &Morphology) -> Vec<Tok> {
    let lex = morph.lexicon;
    let lexes: Vec<Lex> = words
        .iter()
        .map(|w| {
            if RECIPROCALS.contains(&w.as_str()) {
                Lex::Closed(Tag::Other)
            } else if w.contains(' ') {
                Lex::Closed(Tag::Prep)
            } else {
                morph.lex(w)
            }
        })
        .collect();
    let mut toks: Vec<Tok> = Vec::with_capacity(words.len());
    // `a man and a woman walk`: a coordinated subject takes the plural verb form.
    let mut coordinated = false;
    for i in 0..words.len() {
        let word = words[i].as_str();
        let prev = toks.last().map(|t: &Tok| t.tag);
        let prev_plural = toks.last().is_some_and(|t| t.tag == Tag::Noun && t.plural);
        let prev_word = toks.last().map(|t| t.word.as_str());
        let next = lexes.get(i + 1);
        let next_word = words.get(i + 1).map(String::as_str);
        let next_nominal = next.is_some_and(|n| n.nominal() || n.adjective())
            || next_word.is_some_and(|w| matches!(w, "one" | "her"))
            || (next.is_some_and(|n| n.closed(Tag::Conj)) && lexes.get(i + 2).is_some_and(|n| n.adjective() || n.nominal()));
        let next_noun_phrase = next.is_some_and(|n| n.nominal() || n.adjective() || n.closed(Tag::Det) || n.closed(Tag::Num));
        let mut lemma = word.to_string();
        let mut plural = false;
        let tag = match &lexes[i] {
            _ if RECIPROCALS.contains(&word) => Tag::Other,
            Lex::Closed(tag) => *tag,
            Lex::Special => match word {
                "that" => {
                    if matches!(prev, Some(Tag::Noun | Tag::Pron)) || next.is_some_and(|n| n.verbal()) {
                        Tag::Rel
                    } else {
                        Tag::Det
                    }
                }
                "'s" => {
                    if matches!(prev, Some(Tag::Pron | Tag::There | Tag::Rel | Tag::Det))
                        || next.is_some_and(
                            |n| matches!(n, Lex::Open(o) if matches!(o.verb, Some((_, Form::Ing | Form::Past))) && !o.adjective),
                        )
                    {
                        lemma = "be".into();
                        Tag::Be
                    } else {
                        Tag::Poss
                    }
                }
                "her" => {
                    if next_nominal {
                        Tag::Det
                    } else {
                        Tag::Pron
                    }
                }
                "to" => {
                    if next.is_some_and(|n| n.closed(Tag::Be) || matches!(n, Lex::Open(o) if matches!(o.verb, Some((_, Form::Base)))))
                        && (matches!(prev, Some(Tag::Verb(_) | Tag::Adj | Tag::Adv))
                            || lexes.get(i + 2).is_none_or(|n| n.closed(Tag::Det) || n.closed(Tag::Prep) || n.closed(Tag::Pron)))
                    {
                        Tag::To
                    } else {
                        Tag::Prep
                    }
                }
                "one" => {
                    if next_nominal {
                        Tag::Num
                    } else {
                        Tag::Pron
                    }
                }
                "there" => {
                    if next.is_some_and(|n| n.closed(Tag::Be)) || next_word == Some("'s") {
                        Tag::There
                    } else {
                        Tag::Adv
                    }
                }
                "like" => Tag::Prep,
                "has" | "have" | "had" => {
                    lemma = "have".into();
                    if next.is_some_and(|n| {
                        n.closed(Tag::Be) || matches!(n, Lex::Open(o) if matches!(o.verb, Some((_, Form::Past))) && !o.adjective)
                    }) {
                        Tag::Aux
                    } else if word == "has" {
                        Tag::Verb(Form::Third)
                    } else if word == "have" {
                        Tag::Verb(Form::Base)
                    } else {
                        Tag::Verb(Form::Past)
                    }
                }
                _ => {
                    // A particle: right after a verb and not before a noun phrase.
                    if matches!(prev, Some(Tag::Verb(_))) && !next_noun_phrase {
                        Tag::Particle
                    } else if matches!(prev, Some(Tag::Det | Tag::Adj)) && word == "back" {
                        Tag::Noun
                    } else {
                        Tag::Prep
                    }
                }
            },
            Lex::Open(open) => {
                let after_modifier = matches!(prev, Some(Tag::Det | Tag::Adj | Tag::Num | Tag::Poss));
                let after_subject = matches!(prev, Some(Tag::Noun | Tag::Rel | Tag::Pron))
                    || (prev == Some(Tag::Adv) && toks.len() >= 2 && matches!(toks[toks.len() - 2].tag, Tag::Noun | Tag::Pron));
                if open.adverb {
                    if after_modifier && ADVERB_OR_NOUN.contains(&word) { Tag::Noun } else { Tag::Adv }
                } else if open.adjective {
                    if NOUN_OR_ADJECTIVE.contains(&word) && !next_nominal && (after_modifier || prev == Some(Tag::Noun)) {
                        Tag::Noun
                    } else {
                        Tag::Adj
                    }
                } else if let Some((verb_lemma, form)) = &open.verb {
                    let verb = |toks_lemma: &mut String, f: Form| {
                        *toks_lemma = verb_lemma.clone();
                        Tag::Verb(f)
                    };
                    match form {
                        Form::Ing => {
                            if open.ing_noun && !matches!(prev, Some(Tag::Be)) {
                                Tag::Noun
                            } else if after_modifier || prev == Some(Tag::Prep) && !next_noun_phrase {
                                if next_nominal { Tag::Adj } else { Tag::Noun }
                            } else {
                                verb(&mut lemma, Form::Ing)
                            }
                        }
                        Form::Past => {
                            let in_phrase = after_modifier
                                || (prev == Some(Tag::Noun) && toks.len() >= 2 && matches!(toks[toks.len() - 2].tag, Tag::Det | Tag::Adj));
                            if in_phrase && next.is_some_and(|n| n.nominal()) && !next.is_some_and(|n| n.closed(Tag::Num)) {
                                Tag::Adj
                            } else {
                                verb(&mut lemma, Form::Past)
                            }
                        }
                        Form::Third => {
                            let singular_subject = after_subject && !prev_plural;
                            if singular_subject && (!open.noun_dominant || prev_word.is_some_and(|w| lex.pronouns.contains(w))) {
                                verb(&mut lemma, Form::Third)
                            } else {
                                let (l, p) = morph.noun(word);
                                lemma = l;
                                plural = p;
                                Tag::Noun
                            }
                        }
                        Form::Base => {
                            let verbal_context = matches!(prev, Some(Tag::To | Tag::Aux))
                                || (prev == Some(Tag::Pron) && prev_word.is_some_and(|w| matches!(w, "they" | "we" | "i" | "you")))
                                || ((prev_plural || (coordinated && prev == Some(Tag::Noun))) && !open.noun_dominant)
                                || (prev == Some(Tag::Rel) && toks.len() >= 2 && toks[toks.len() - 2].plural);
                            if verbal_context { verb(&mut lemma, Form::Base) } else { Tag::Noun }
                        }
                    }
                } else {
                    Tag::Noun
                }
            }
        };
        match tag {
            Tag::Conj if prev == Some(Tag::Noun) => coordinated = true,
            Tag::Verb(_) | Tag::Be | Tag::Aux | Tag::Prep | Tag::Sub | Tag::Rel => coordinated = false,
            _ => {}
        }
        if tag == Tag::Noun && lemma == word {
            let (l, p) = morph.noun(word);
            lemma = l;
            plural = p;
        }
        toks.push(Tok { word: word.to_string(), lemma, tag, plural });
    }
    toks
}

/// A noun phrase: its head's lemma.
#[derive(Debug, Clone)]
struct Np {
    head: String,
}

#[derive(Debug, Clone)]
enum Item {
    Np(usize),
    Adjs(Vec<String>),
    Verb { lemma: String, form: Form },
    Prep(String),
    Be,
    Aux,
    Conj,
    Sub,
    Rel,
    To,
    Poss,
    There,
    Adv,
    Other,
}

/// Builds noun phrases, emits their objects and attributes, and returns the item sequence.
fn chunk(toks: &[Tok], lexicon: &Lexicon, nps: &mut Vec<Np>, out: &mut Vec<Tuple>) -> Vec<Item> {
    let mut items = Vec::new();
    let mut i = 0;
    let mut subject_np: Option<usize> = None;
    let mut last_np: Option<usize> = None;
    let mut quantifier: Option<String> = None;
    while i < toks.len() {
        let tok = &toks[i];
        match tok.tag {
            Tag::Det | Tag::Num | Tag::Adj | Tag::Noun => {
                // Collect the phrase: determiners first, then numbers, adjectives and nouns;
                // `and`/`or` only between adjectives (`black and white dog`), adverbs only
                // before adjectives (`a very large dog`).
                let start = i;
                let mut j = i;
                while j < toks.len() {
                    let t = toks[j].tag;
                    let ok = match t {
                        Tag::Det => j == start,
                        Tag::Num | Tag::Adj | Tag::Noun => true,
                        Tag::Conj => {
                            j > start
                                && matches!(toks[j - 1].tag, Tag::Adj | Tag::Num)
                                && toks.get(j + 1).is_some_and(|n| matches!(n.tag, Tag::Adj | Tag::Num))
                        }
                        Tag::Adv => j > start && toks.get(j + 1).is_some_and(|n| n.tag == Tag::Adj),
                        _ => false,
                    };
                    if !ok {
                        break;
                    }
                    j += 1;
                }
                let head = (start..j).rev().find(|&k| toks[k].tag == Tag::Noun);
                let Some(head) = head else {
                    let adjs: Vec<String> = toks[start..j].iter().filter(|t| t.tag == Tag::Adj).map(|t| t.lemma.clone()).collect();
                    items.push(if adjs.is_empty() { Item::Other } else { Item::Adjs(adjs) });
                    i = j.max(i + 1);
                    continue;
                };
                let end = head + 1;
                // Quantifier phrases (`a couple of dogs`, `lots of food`): the quantity noun
                // stays an object, the quantified phrase gets the quantifier instead of an
                // `of` relation.
                let det = toks[start].word.as_str();
                let quantity = (end - start == 2 && matches!(det, "a" | "an") && lexicon.quantity_nouns.contains(toks[head].word.as_str()))
                    || (end - start == 1 && lexicon.plural_quantity_words.contains(toks[head].word.as_str()));
                if quantity
                    && toks.get(end).is_some_and(|t| t.word == "of")
                    && toks.get(end + 1).is_some_and(|t| matches!(t.tag, Tag::Det | Tag::Num | Tag::Adj | Tag::Noun | Tag::Adv))
                {
                    let phrase: Vec<&str> = toks[start..=end].iter().map(|t| t.word.as_str()).collect();
                    quantifier = Some(phrase.join(" "));
                    out.push(Tuple::Object(toks[head].lemma.clone()));
                    i = end + 1;
                    continue;
                }
                let id = emit_np(&toks[start..end], quantifier.take().as_deref(), nps, out);
                items.push(Item::Np(id));
                last_np = Some(id);
                subject_np.get_or_insert(id);
                i = end;
                continue;
            }
            Tag::Pron => {
                let referent = match tok.word.as_str() {
                    "it" | "them" | "itself" => last_np,
                    "he" | "she" | "they" | "him" | "her" | "himself" | "herself" | "themselves" => subject_np,
                    _ => None,
                };
                if tok.word == "each" || toks.get(i + 1).is_some_and(|t| t.word == "other") {
                    items.push(Item::Other);
                } else {
                    items.push(referent.map_or(Item::Other, Item::Np));
                }
            }
            Tag::Verb(form) => {
                let mut lemma = tok.lemma.clone();
                if let Some(next) = toks.get(i + 1)
                    && next.tag == Tag::Particle
                {
                    lemma = format!("{lemma} {}", next.word);
                    i += 1;
                }
                items.push(Item::Verb { lemma, form });
            }
            Tag::Particle => items.push(Item::Adv),
            Tag::Prep => items.push(Item::Prep(tok.word.clone())),
            Tag::Be => items.push(Item::Be),
            Tag::Aux => items.push(Item::Aux),
            Tag::Conj => items.push(Item::Conj),
            Tag::Sub => items.push(Item::Sub),
            Tag::Rel => items.push(Item::Rel),
            Tag::To => items.push(Item::To),
            Tag::Poss => items.push(Item::Poss),
            Tag::There => items.push(Item::There),
            Tag::Adv => items.push(Item::Adv),
            Tag::Other => items.push(Item::Other),
        }
        i += 1;
    }
    items
}

/// Emits a noun phrase's attributes and object; returns its id.
fn emit_np(toks: &[Tok], quantifier: Option<&str>, nps: &mut Vec<Np>, out: &mut Vec<Tuple>) -> usize {
    let head = toks.last().expect("a noun phrase has a head");
    let mut plural = head.plural;
    let numbers: Vec<&Tok> = toks.iter().filter(|t| t.tag == Tag::Num).collect();
    if numbers.iter().any(|t| t.word != "one") && Lexicon::get().invariant_plurals.contains(head.word.as_str()) {
        plural = true;
    }
    for tok in &toks[..toks.len() - 1] {
        match tok.tag {
            Tag::Adj => out.push(Tuple::Attribute(head.lemma.clone(), tok.lemma.clone())),
            Tag::Noun => out.push(Tuple::Attribute(head.lemma.clone(), tok.lemma.clone())),
            _ => {}
        }
    }
    if plural {
        if let Some(number) = numbers.last() {
            out.push(Tuple::Attribute(head.lemma.clone(), number.word.clone()));
        } else if let Some(q) = quantifier {
            out.push(Tuple::Attribute(head.lemma.clone(), q.to_string()));
        }
    }
    out.push(Tuple::Object(head.lemma.clone()));
    nps.push(Np { head: head.lemma.clone() });
    nps.len() - 1
}

#[derive(Debug, Clone)]
enum Gov {
    Noun(usize),
    Verb(usize),
    Subjects(Vec<usize>),
    /// `by` after a passive verb: the agent is the subject.
    Agent(usize),
}

#[derive(Debug, Clone)]
enum Role {
    None,
    Subject,
    Object(usize),
    PrepObject(Gov, String),
    Predicate(Vec<usize>),
}

#[derive(Debug, Clone)]
struct VerbState {
    pred: String,
    form: Form,
    subjects: Vec<usize>,
    nsubj: bool,
    passive: bool,
    passive_subjects: Vec<usize>,
    has_object: bool,
    /// A participle right after a caption-opening bare noun phrase (see `link`): no subject,
    /// and nothing later takes one from it.
    fragment: bool,
}

fn relation(nps: &[Np], s: usize, pred: &str, o: usize) -> Tuple {
    let pred = pred.strip_prefix("be ").unwrap_or(pred).to_string();
    Tuple::Relation { subject: nps[s].head.clone(), predicate: pred, object: nps[o].head.clone() }
}

/// Links the items into relations and predicate attributes. `bare_start`: the caption opens
/// with a noun phrase that has no determiner or number (`man riding a wave ...`).
///
/// CoreNLP's PCFG does not parse such a fragment as a noun modified by a participle when the
/// participle follows the opening phrase directly: SPICE 1.0 then extracts no relation from the
/// participle (`young boy holding a banana` gives `(boy) (boy, young) (banana)`, no
/// `(boy, hold, banana)`), while `a young boy holding a banana`, `boy is holding ...`, `boy that
/// is holding ...` and `group of boys holding ...` keep it. Measured on the 500 real SPICE
/// outputs (`docs/spice.md`): the candidate relation count then equals SPICE's on 104 of the
/// 167 such captions (15 before). `standing` is not such a participle there (CoreNLP reads
/// `giraffe standing` differently), so it keeps its relations.
fn link(items: &[Item], nps: &[Np], bare_start: bool, out: &mut Vec<Tuple>) {
    let mut verbs: Vec<VerbState> = Vec::new();
    let mut clause_subjects: Vec<usize> = Vec::new();
    let mut main_subjects: Vec<usize> = Vec::new();
    let mut be_subjects: Vec<usize> = Vec::new();
    let mut expletive = false;
    let mut last_np: Option<usize> = None;
    let mut last_role = Role::None;
    let mut roles: Vec<Role> = vec![Role::None; nps.len()];
    let mut pending: Option<(Option<Gov>, String)> = None;
    let mut rel_antecedent: Vec<usize> = Vec::new();
    let mut infinitive = false;
    let mut after_sub = false;
    // The previous item that is not an adverb.
    let mut prev: Option<&Item> = None;

    // Subjects a verb or copula right after noun phrase `n` would have.
    let anchor = |n: usize, roles: &[Role], verbs: &[VerbState], clause: &[usize]| -> Vec<usize> {
        let mut n = n;
        for _ in 0..16 {
            match &roles[n] {
                Role::Subject => {
                    return if clause.contains(&n) { clause.to_vec() } else { vec![n] };
                }
                Role::PrepObject(Gov::Noun(g), _) => n = *g,
                Role::PrepObject(Gov::Verb(v), _) | Role::Object(v) if verbs[*v].fragment => {
                    return Vec::new();
                }
                Role::PrepObject(Gov::Verb(v), _) | Role::Object(v) => {
                    let s = &verbs[*v].subjects;
                    return if s.is_empty() { vec![n] } else { s.clone() };
                }
                Role::PrepObject(Gov::Subjects(s), _) | Role::Predicate(s) => {
                    return if s.is_empty() { vec![n] } else { s.clone() };
                }
                _ => return vec![n],
            }
        }
        vec![n]
    };

    for item in items {
        match item {
            Item::Np(n) => {
                let n = *n;
                let role = if let Some((gov, prep)) = pending.take() {
                    match &gov {
                        Some(Gov::Noun(g)) if *g != n => {
                            out.push(relation(nps, *g, &prep, n));
                        }
                        Some(Gov::Noun(_)) => {}
                        Some(Gov::Verb(v)) => {
                            let verb = &mut verbs[*v];
                            verb.has_object = true;
                            // `a ball kicked by a boy`: the agent is not part of the predicate.
                            let pred =
                                if prep == "by" && verb.form == Form::Past { verb.pred.clone() } else { format!("{} {prep}", verb.pred) };
                            for &s in &verb.subjects {
                                if s != n {
                                    out.push(relation(nps, s, &pred, n));
                                }
                            }
                        }
                        Some(Gov::Subjects(ss)) => {
                            for &s in ss {
                                if s != n {
                                    out.push(relation(nps, s, &prep, n));
                                }
                            }
                        }
                        Some(Gov::Agent(v)) => {
                            let verb = &mut verbs[*v];
                            verb.has_object = true;
                            for &o in &verb.passive_subjects {
                                if o != n {
                                    out.push(relation(nps, n, &verb.pred, o));
                                }
                            }
                        }
                        None => {}
                    }
                    match gov {
                        Some(g) => Role::PrepObject(g, prep),
                        None => Role::None,
                    }
                } else {
                    match prev {
                        Some(Item::Verb { .. }) => {
                            let v = verbs.len() - 1;
                            let verb = &mut verbs[v];
                            verb.has_object = true;
                            if !infinitive {
                                for &s in &verb.subjects {
                                    if s != n {
                                        out.push(relation(nps, s, &verb.pred, n));
                                    }
                                }
                            }
                            Role::Object(v)
                        }
                        Some(Item::Be) if expletive => {
                            expletive = false;
                            clause_subjects = vec![n];
                            Role::Subject
                        }
                        Some(Item::Be) => {
                            for &s in &be_subjects {
                                if s != n {
                                    out.push(Tuple::Attribute(nps[s].head.clone(), nps[n].head.clone()));
                                }
                            }
                            Role::Predicate(be_subjects.clone())
                        }
                        Some(Item::Poss) => {
                            if let Some(p) = last_np {
                                out.push(relation(nps, p, "have", n));
                                let role = roles[p].clone();
                                if matches!(role, Role::Subject) {
                                    // The possessed phrase is the subject, not the possessor.
                                    for subjects in [&mut clause_subjects, &mut main_subjects] {
                                        for s in subjects.iter_mut() {
                                            if *s == p {
                                                *s = n;
                                            }
                                        }
                                    }
                                } else {
                                    replay(&role, n, nps, &mut verbs, &mut clause_subjects, out);
                                }
                                role
                            } else {
                                Role::None
                            }
                        }
                        Some(Item::Conj | Item::Np(_)) if !after_sub => {
                            let role = last_role.clone();
                            replay(&role, n, nps, &mut verbs, &mut clause_subjects, out);
                            if matches!(role, Role::None) {
                                clause_subjects = vec![n];
                                Role::Subject
                            } else {
                                role
                            }
                        }
                        _ => {
                            clause_subjects = vec![n];
                            if main_subjects.is_empty() {
                                main_subjects = vec![n];
                            }
                            Role::Subject
                        }
                    }
                };
                if matches!(role, Role::Subject) && main_subjects.is_empty() {
                    main_subjects = clause_subjects.clone();
                }
                roles[n] = role.clone();
                last_role = role;
                last_np = Some(n);
                after_sub = false;
                prev = Some(item);
                continue;
            }
            Item::Verb { lemma, form } => {
                let (subjects, nsubj, passive) = match prev {
                    Some(Item::Np(n)) => {
                        let subjects = match (&roles[*n], form) {
                            (Role::Object(_), Form::Third | Form::Past) => vec![*n],
                            _ => anchor(*n, &roles, &verbs, &clause_subjects),
                        };
                        (subjects, matches!(form, Form::Third | Form::Base), false)
                    }
                    Some(Item::Rel) => (rel_antecedent.clone(), true, false),
                    Some(Item::Be) => {
                        let passive = *form == Form::Past;
                        (be_subjects.clone(), !passive, passive)
                    }
                    Some(Item::Aux) => (be_subjects.clone(), true, false),
                    Some(Item::Conj) => match verbs.last() {
                        Some(v) => (v.subjects.clone(), v.nsubj, false),
                        None => (Vec::new(), false, false),
                    },
                    Some(Item::Verb { .. }) => (Vec::new(), false, false),
                    _ => (Vec::new(), false, false),
                };
                infinitive = matches!(prev, Some(Item::To));
                let fragment = bare_start
                    && *form == Form::Ing
                    && lemma != "stand"
                    && matches!(prev, Some(Item::Np(0)))
                    && matches!(items.first(), Some(Item::Np(0)));
                let subjects = if infinitive || after_sub || fragment { Vec::new() } else { subjects };
                verbs.push(VerbState {
                    pred: lemma.clone(),
                    form: *form,
                    subjects: if passive { Vec::new() } else { subjects.clone() },
                    nsubj: nsubj && !infinitive,
                    passive,
                    passive_subjects: if passive { subjects } else { Vec::new() },
                    has_object: false,
                    fragment,
                });
                after_sub = false;
            }
            Item::Prep(p) => {
                let gov = match prev {
                    Some(Item::Verb { .. }) => {
                        let v = verbs.len() - 1;
                        if verbs[v].passive {
                            (p == "by").then_some(Gov::Agent(v))
                        } else if infinitive {
                            None
                        } else {
                            Some(Gov::Verb(v))
                        }
                    }
                    Some(Item::Np(n)) => Some(Gov::Noun(*n)),
                    Some(Item::Be) if !expletive => Some(Gov::Subjects(be_subjects.clone())),
                    Some(Item::Prep(_)) => pending.as_ref().and_then(|(g, _)| g.clone()),
                    _ => None,
                };
                pending = Some((gov, p.clone()));
            }
            Item::Be | Item::Aux => match prev {
                Some(Item::Np(n)) => {
                    be_subjects = anchor(*n, &roles, &verbs, &clause_subjects);
                }
                Some(Item::Rel) => be_subjects = rel_antecedent.clone(),
                Some(Item::There) => {
                    expletive = true;
                    be_subjects = Vec::new();
                }
                Some(Item::Be | Item::Aux) => {}
                _ => be_subjects = clause_subjects.clone(),
            },
            Item::Adjs(adjs) => {
                let subjects = match prev {
                    Some(Item::Be) => be_subjects.clone(),
                    Some(Item::Conj) => match &last_role {
                        Role::Predicate(s) => s.clone(),
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                for &s in &subjects {
                    for a in adjs {
                        out.push(Tuple::Attribute(nps[s].head.clone(), a.clone()));
                    }
                }
                if !subjects.is_empty() {
                    last_role = Role::Predicate(subjects);
                }
            }
            Item::Rel => {
                rel_antecedent = match (last_np, &last_role) {
                    (Some(n), Role::Subject) if clause_subjects.contains(&n) => clause_subjects.clone(),
                    (Some(n), _) => vec![n],
                    (None, _) => Vec::new(),
                };
            }
            Item::Sub => {
                after_sub = true;
                pending = None;
            }
            Item::Conj | Item::To | Item::Poss | Item::There | Item::Other => {}
            Item::Adv => continue,
        }
        if !matches!(item, Item::Prep(_)) {
            pending = None;
        }
        prev = Some(item);
    }
    // Verbs with a subject and no object: `(woman, smile)`.
    for verb in &verbs {
        if verb.nsubj && !verb.has_object && verb.pred != "be" && !verb.pred.starts_with("be ") {
            for &s in &verb.subjects {
                out.push(Tuple::Attribute(nps[s].head.clone(), verb.pred.clone()));
            }
        }
    }
}

/// Gives noun phrase `n` the same role as a coordinated or possessed phrase.
fn replay(role: &Role, n: usize, nps: &[Np], verbs: &mut [VerbState], clause_subjects: &mut Vec<usize>, out: &mut Vec<Tuple>) {
    match role {
        Role::Subject => {
            if !clause_subjects.contains(&n) {
                clause_subjects.push(n);
            }
        }
        Role::Object(v) => {
            for &s in &verbs[*v].subjects {
                if s != n {
                    out.push(relation(nps, s, &verbs[*v].pred, n));
                }
            }
        }
        Role::PrepObject(gov, prep) => match gov {
            Gov::Noun(g) => {
                if *g != n {
                    out.push(relation(nps, *g, prep, n));
                }
            }
            Gov::Verb(v) => {
                let pred = format!("{} {prep}", verbs[*v].pred);
                for &s in &verbs[*v].subjects {
                    if s != n {
                        out.push(relation(nps, s, &pred, n));
                    }
                }
            }
            Gov::Subjects(ss) => {
                for &s in ss {
                    if s != n {
                        out.push(relation(nps, s, prep, n));
                    }
                }
            }
            Gov::Agent(v) => {
                for &o in &verbs[*v].passive_subjects {
                    if o != n {
                        out.push(relation(nps, n, &verbs[*v].pred, o));
                    }
                }
            }
        },
        Role::Predicate(ss) => {
            for &s in ss {
                if s != n {
                    out.push(Tuple::Attribute(nps[s].head.clone(), nps[n].head.clone()));
                }
            }
        }
        Role::None => {}
    }
}

/// `giraffe standing in front of a fence`, `brown bear standing ...`: in a caption that opens
/// with a bare noun phrase of adjectives and nouns, CoreNLP tags a directly following
/// `standing` as the phrase's head noun (the phrase's words become its modifiers), and SPICE 1.0
/// builds the graph around an object `standing`: `(standing) (standing, giraffe) (front)
/// (fence) ...`. On the 44 such captions of the real SPICE outputs, SPICE found one attribute
/// more than the participle reading gives in 37, and missed the subject noun (`docs/spice.md`).
fn standing_compound(toks: &mut [Tok]) {
    let Some(i) = toks.iter().position(|t| !matches!(t.tag, Tag::Adj | Tag::Noun)) else {
        return;
    };
    if i > 0 && toks[i - 1].tag == Tag::Noun && toks[i].word == "standing" && matches!(toks[i].tag, Tag::Verb(Form::Ing)) {
        toks[i].tag = Tag::Noun;
        toks[i].lemma = "standing".to_string();
        toks[i].plural = false;
    }
}

/// Parses one tokenized caption into its tuples, in extraction order (duplicates kept; the
/// scene graph merges them).
pub(super) fn parse(caption: &str, morph: &Morphology) -> Vec<Tuple> {
    let words: Vec<&str> = caption.split_whitespace().collect();
    if words.is_empty() {
        return Vec::new();
    }
    let (joined, middle_nouns) = join_multiword(&words);
    let mut toks = tag(&joined, morph);
    let bare_start = toks.first().is_some_and(|t| !matches!(t.tag, Tag::Det | Tag::Num | Tag::Pron | Tag::There));
    if bare_start {
        standing_compound(&mut toks);
    }
    let mut nps = Vec::new();
    let mut nominal = Vec::new();
    let items = chunk(&toks, morph.lexicon, &mut nps, &mut nominal);
    let mut out = Vec::new();
    link(&items, &nps, bare_start, &mut out);
    out.extend(nominal);
    out.extend(middle_nouns.into_iter().map(Tuple::Object));
    out
}

/// The tagger's view of a caption, for debugging: `word/TAG/lemma`.
pub(super) fn debug_tags(caption: &str, morph: &Morphology) -> String {
    let words: Vec<&str> = caption.split_whitespace().collect();
    let (joined, _) = join_multiword(&words);
    tag(&joined, morph)
        .iter()
        .map(|t| format!("{}/{:?}/{}{}", t.word, t.tag, t.lemma, if t.plural { "/pl" } else { "" }))
        .collect::<Vec<_>>()
        .join(" ")
}
