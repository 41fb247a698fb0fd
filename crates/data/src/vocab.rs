//! Text to token ids and back. The default is a word vocabulary over the PTB tokens the
//! evaluation crate scores (so the model predicts exactly the units BLEU and CIDEr count);
//! a subword tokenizer (BPE or WordPiece trained on the captions, or a `tokenizer.json`)
//! is the alternative. Either is saved as JSON beside a checkpoint.

use crate::error::{DataError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const PAD: &str = "<pad>";
pub const BOS: &str = "<bos>";
pub const EOS: &str = "<eos>";
pub const UNK: &str = "<unk>";
/// Special tokens, in id order: `<pad>` is 0 so that zero-padded batches need no mapping.
pub const SPECIAL_TOKENS: [&str; 4] = [PAD, BOS, EOS, UNK];

/// Which text encoder to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// Whole PTB words with a minimum count (ImageCaptioning.pytorch's `prepro_labels.py`).
    #[default]
    Words,
    /// Byte-pair encoding trained on the training captions.
    Bpe,
    /// WordPiece trained on the training captions.
    Wordpiece,
    /// A Hugging Face `tokenizer.json` given by `vocab.tokenizer_file`.
    Pretrained,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VocabConfig {
    pub kind: TokenizerKind,
    /// Words seen fewer times than this in the training captions become `<unk>`.
    pub min_count: usize,
    /// Longest caption, in tokens (without `<bos>`/`<eos>`); longer ones are cut.
    pub max_length: usize,
    /// Target size for BPE / WordPiece training.
    pub subword_vocab_size: usize,
    /// `tokenizer.json` for `kind: pretrained`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer_file: Option<PathBuf>,
}

impl Default for VocabConfig {
    fn default() -> Self {
        VocabConfig { kind: TokenizerKind::Words, min_count: 5, max_length: 16, subword_vocab_size: 4000, tokenizer_file: None }
    }
}

impl VocabConfig {
    pub fn validate(&self) -> Result<()> {
        if self.max_length == 0 {
            return Err(DataError::Config("`data.vocab.max_length` must be at least 1".into()));
        }
        if self.min_count == 0 {
            return Err(DataError::Config("`data.vocab.min_count` must be at least 1".into()));
        }
        if self.kind == TokenizerKind::Pretrained && self.tokenizer_file.is_none() {
            return Err(DataError::Config("`data.vocab.tokenizer_file` is required when `data.vocab.kind` is pretrained".into()));
        }
        if matches!(self.kind, TokenizerKind::Bpe | TokenizerKind::Wordpiece) && self.subword_vocab_size < 8 {
            return Err(DataError::Config("`data.vocab.subword_vocab_size` must be at least 8".into()));
        }
        Ok(())
    }
}

/// The PTB tokens of a caption, lower-cased and without punctuation, exactly as the
/// metrics see them.
pub fn caption_words(caption: &str) -> Vec<String> {
    caption_tokenizer::tokenize_words(caption)
}

/// A word vocabulary: the special tokens, then words by descending count (ties alphabetical).
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    words: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// Counts words in `captions` and keeps those seen at least `min_count` times.
    pub fn build<'a>(captions: impl IntoIterator<Item = &'a str>, min_count: usize) -> Vocab {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for caption in captions {
            for word in caption_words(caption) {
                *counts.entry(word).or_default() += 1;
            }
        }
        let mut kept: Vec<(String, usize)> =
            counts.into_iter().filter(|(w, c)| *c >= min_count && !SPECIAL_TOKENS.contains(&w.as_str())).collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Vocab::from_words(kept.into_iter().map(|(w, _)| w))
    }

    fn from_words(words: impl IntoIterator<Item = String>) -> Vocab {
        let words: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).chain(words).collect();
        let index = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect();
        Vocab { words, index }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.len() <= SPECIAL_TOKENS.len()
    }

    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    pub fn words(&self) -> &[String] {
        &self.words
    }
}

/// Turns captions into ids and back, whichever tokenizer is behind it.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    kind: TokenizerKind,
    max_length: usize,
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Words(Vocab),
    Subword(Box<tokenizers::Tokenizer>),
}

/// What `vocab.json` holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabFile {
    format_version: u32,
    kind: TokenizerKind,
    max_length: usize,
    /// Word vocabularies: every token by id. Subword ones live in `tokenizer.json` beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    words: Option<Vec<String>>,
}

const VOCAB_FILE: &str = "vocab.json";
const TOKENIZER_FILE: &str = "tokenizer.json";

impl TextEncoder {
    /// Builds the encoder from training captions (or loads the pretrained tokenizer).
    pub fn build(config: &VocabConfig, train_captions: &[&str]) -> Result<TextEncoder> {
        config.validate()?;
        let inner = match config.kind {
            TokenizerKind::Words => Inner::Words(Vocab::build(train_captions.iter().copied(), config.min_count)),
            TokenizerKind::Bpe | TokenizerKind::Wordpiece => {
                Inner::Subword(Box::new(crate::subword::train(config.kind, config.subword_vocab_size, config.min_count, train_captions)?))
            }
            TokenizerKind::Pretrained => {
                let path = config.tokenizer_file.as_ref().expect("validated");
                Inner::Subword(Box::new(crate::subword::load(path)?))
            }
        };
        Ok(TextEncoder { kind: config.kind, max_length: config.max_length, inner })
    }

    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Number of ids the model must predict over.
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Words(v) => v.len(),
            Inner::Subword(t) => t.get_vocab_size(true),
        }
    }

    pub fn pad_id(&self) -> u32 {
        self.special_id(PAD)
    }
    pub fn bos_id(&self) -> u32 {
        self.special_id(BOS)
    }
    pub fn eos_id(&self) -> u32 {
        self.special_id(EOS)
    }
    pub fn unk_id(&self) -> u32 {
        self.special_id(UNK)
    }

    fn special_id(&self, token: &str) -> u32 {
        match &self.inner {
            Inner::Words(v) => v.id(token).expect("special tokens are always in a word vocabulary"),
            // Checked when the tokenizer was trained or loaded.
            Inner::Subword(t) => t.token_to_id(token).expect("special tokens checked at load"),
        }
    }

    /// Token ids of a caption, without `<bos>`/`<eos>`, cut to `max_length`.
    pub fn encode(&self, caption: &str) -> Vec<u32> {
        let mut ids: Vec<u32> = match &self.inner {
            Inner::Words(v) => {
                let unk = self.unk_id();
                caption_words(caption).iter().map(|w| v.id(w).unwrap_or(unk)).collect()
            }
            Inner::Subword(t) => {
                let text = caption_words(caption).join(" ");
                match t.encode(text.as_str(), false) {
                    Ok(enc) => enc.get_ids().to_vec(),
                    // The tokenizer was checked at load; an encoding failure leaves an unknown token.
                    Err(_) => vec![self.unk_id()],
                }
            }
        };
        ids.truncate(self.max_length);
        ids
    }

    /// The text of one token id: its word, or its subword piece as the tokenizer spells it
    /// (`<unk>` for an id outside the vocabulary).
    pub fn token_text(&self, id: u32) -> String {
        let text = match &self.inner {
            Inner::Words(v) => v.word(id).map(str::to_string),
            Inner::Subword(t) => t.id_to_token(id),
        };
        text.unwrap_or_else(|| UNK.to_string())
    }

    /// Text of a generated sequence: stops at `<eos>`, drops `<pad>`/`<bos>`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let (pad, bos, eos) = (self.pad_id(), self.bos_id(), self.eos_id());
        let content: Vec<u32> = ids.iter().copied().take_while(|&id| id != eos).filter(|&id| id != pad && id != bos).collect();
        match &self.inner {
            Inner::Words(v) => content.iter().filter_map(|&id| v.word(id)).collect::<Vec<_>>().join(" "),
            Inner::Subword(t) => t.decode(&content, true).unwrap_or_default(),
        }
    }

    /// Writes `vocab.json` (and `tokenizer.json` for subword encoders) into `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let words = match &self.inner {
            Inner::Words(v) => Some(v.words().to_vec()),
            Inner::Subword(t) => {
                let path = dir.join(TOKENIZER_FILE);
                let json = t.to_string(false).map_err(|e| DataError::Tokenizer(e.to_string()))?;
                crate::fsutil::write_atomic(&path, json.as_bytes())?;
                None
            }
        };
        let file = VocabFile { format_version: 1, kind: self.kind, max_length: self.max_length, words };
        let json = serde_json::to_vec_pretty(&file).expect("vocabulary serialises");
        crate::fsutil::write_atomic(&dir.join(VOCAB_FILE), &json)
    }

    /// Loads what `save` wrote.
    pub fn load(dir: &Path) -> Result<TextEncoder> {
        let path = dir.join(VOCAB_FILE);
        let file: VocabFile = crate::loaders::read_json(&path, "a caption vocabulary (vocab.json)")?;
        if file.format_version != 1 {
            return Err(DataError::invalid(&path, format!("format_version {} is not supported (expected 1)", file.format_version)));
        }
        let inner = match (file.kind, file.words) {
            (TokenizerKind::Words, Some(words)) => {
                if words.len() < SPECIAL_TOKENS.len() || words[..4] != SPECIAL_TOKENS.map(String::from) {
                    return Err(DataError::invalid(&path, "the first words must be <pad> <bos> <eos> <unk>"));
                }
                Inner::Words(Vocab::from_words(words.into_iter().skip(SPECIAL_TOKENS.len())))
            }
            (TokenizerKind::Words, None) => {
                return Err(DataError::invalid(&path, "a word vocabulary needs its `words` list"));
            }
            (_, _) => Inner::Subword(Box::new(crate::subword::load(&dir.join(TOKENIZER_FILE))?)),
        };
        Ok(TextEncoder { kind: file.kind, max_length: file.max_length, inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_vocab_counts_orders_and_cuts() {
        let caps = ["A red circle.", "a red square", "A blue circle", "a zebra"];
        let v = Vocab::build(caps, 2);
        assert_eq!(&v.words()[..4], &SPECIAL_TOKENS.map(String::from));
        assert_eq!(&v.words()[4..], &["a", "circle", "red"]);
    }

    #[test]
    fn encode_decode_round_trip_with_unknowns_and_max_length() {
        let config = VocabConfig { min_count: 1, max_length: 3, ..Default::default() };
        let enc = TextEncoder::build(&config, &["a red circle", "a blue square"]).unwrap();
        let ids = enc.encode("A red zebra circle");
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[2], enc.unk_id());
        let mut seq = enc.encode("a blue square");
        seq.push(enc.eos_id());
        seq.push(enc.id_of_test("red"));
        assert_eq!(enc.decode(&seq), "a blue square");
    }

    impl TextEncoder {
        fn id_of_test(&self, w: &str) -> u32 {
            match &self.inner {
                Inner::Words(v) => v.id(w).unwrap(),
                Inner::Subword(t) => t.token_to_id(w).unwrap(),
            }
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let config = VocabConfig { min_count: 1, ..Default::default() };
        let enc = TextEncoder::build(&config, &["a red circle", "two blue squares"]).unwrap();
        enc.save(dir.path()).unwrap();
        let back = TextEncoder::load(dir.path()).unwrap();
        assert_eq!(back.vocab_size(), enc.vocab_size());
        assert_eq!(back.encode("two red circles"), enc.encode("two red circles"));
    }

    #[test]
    fn corrupt_vocab_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(VOCAB_FILE), b"{\"format_version\": 1, \"kind\": \"words\"").unwrap();
        let err = TextEncoder::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("vocab.json"), "{err}");
    }
}
