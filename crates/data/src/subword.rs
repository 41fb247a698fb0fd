//! Subword tokenizers through the `tokenizers` crate. Captions are first split into the same
//! PTB words the metrics use, so subword pieces never straddle what BLEU counts as a word.

use crate::error::{DataError, Result};
use crate::vocab::{SPECIAL_TOKENS, TokenizerKind, caption_words};
use std::path::Path;
use tokenizers::decoders::bpe::BPEDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::{AddedToken, Tokenizer};

const END_OF_WORD: &str = "</w>";

fn special_tokens() -> Vec<AddedToken> {
    SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect()
}

/// Trains BPE or WordPiece on the training captions (already PTB-tokenised and lower-cased).
pub fn train(kind: TokenizerKind, vocab_size: usize, min_count: usize, captions: &[&str]) -> Result<Tokenizer> {
    let err = |e: tokenizers::Error| DataError::Tokenizer(format!("training {kind:?} failed: {e}"));
    let (mut tokenizer, mut trainer): (Tokenizer, TrainerWrapper) = match kind {
        TokenizerKind::Bpe => {
            let model = BPE::builder().end_of_word_suffix(END_OF_WORD.into()).unk_token("<unk>".into()).build().map_err(err)?;
            let mut t = Tokenizer::new(model);
            t.with_decoder(Some(BPEDecoder::new(END_OF_WORD.into())));
            let trainer = BpeTrainerBuilder::new()
                .vocab_size(vocab_size)
                .min_frequency(min_count as u64)
                .special_tokens(special_tokens())
                .end_of_word_suffix(END_OF_WORD.into())
                .show_progress(false)
                .build();
            (t, trainer.into())
        }
        TokenizerKind::Wordpiece => {
            let mut t = Tokenizer::new(WordPiece::builder().unk_token("<unk>".into()).build().map_err(err)?);
            t.with_decoder(Some(WordPieceDecoder::new("##".into(), false)));
            let trainer = WordPieceTrainerBuilder::new()
                .vocab_size(vocab_size)
                .min_frequency(min_count as u64)
                .special_tokens(special_tokens())
                .show_progress(false)
                .build();
            (t, trainer.into())
        }
        other => return Err(DataError::Tokenizer(format!("{other:?} is not a trainable tokenizer"))),
    };
    tokenizer.with_pre_tokenizer(Some(WhitespaceSplit));
    let texts: Vec<String> = captions.iter().map(|c| caption_words(c).join(" ")).collect();
    tokenizer.train(&mut trainer, texts.iter()).map_err(err)?;
    check_special_tokens(&tokenizer, Path::new("<trained tokenizer>"))?;
    Ok(tokenizer)
}

/// Loads a Hugging Face `tokenizer.json`; it must define the four special tokens.
pub fn load(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(DataError::invalid(path, "tokenizer file not found"));
    }
    let tokenizer = Tokenizer::from_file(path).map_err(|e| DataError::invalid(path, format!("not a readable tokenizer.json: {e}")))?;
    check_special_tokens(&tokenizer, path)?;
    Ok(tokenizer)
}

fn check_special_tokens(tokenizer: &Tokenizer, path: &Path) -> Result<()> {
    let missing: Vec<&str> = SPECIAL_TOKENS.iter().copied().filter(|t| tokenizer.token_to_id(t).is_none()).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DataError::invalid(path, format!("the tokenizer lacks the special token(s) {}; add them to its vocabulary", missing.join(" "))))
    }
}

#[cfg(test)]
mod tests {
    use crate::vocab::{TextEncoder, TokenizerKind, VocabConfig};

    const CAPTIONS: [&str; 6] = [
        "a red circle above a blue square",
        "a blue square below a red circle",
        "two green triangles",
        "a small red circle",
        "a large blue circle next to a green square",
        "the circles are red",
    ];

    #[test]
    fn bpe_and_wordpiece_train_and_round_trip() {
        for kind in [TokenizerKind::Bpe, TokenizerKind::Wordpiece] {
            let config = VocabConfig { kind, min_count: 1, subword_vocab_size: 60, ..Default::default() };
            let enc = TextEncoder::build(&config, &CAPTIONS).unwrap();
            assert!(enc.vocab_size() > 4 && enc.vocab_size() <= 60 + 4, "{kind:?}: {}", enc.vocab_size());
            let ids = enc.encode("a red circle above a blue square");
            assert_eq!(enc.decode(&ids), "a red circle above a blue square", "{kind:?}");
            let dir = tempfile::tempdir().unwrap();
            enc.save(dir.path()).unwrap();
            let back = TextEncoder::load(dir.path()).unwrap();
            assert_eq!(back.encode("two red squares"), enc.encode("two red squares"));
        }
    }
}
