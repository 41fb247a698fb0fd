//! Turning a decoder's step function into captions: greedy decoding, batched beam search and
//! sampling, for any [`CaptionDecoder`].
//!
//! # Length
//!
//! A caption has at most `max_length` words (tokens other than `<eos>`). Decoding starts from
//! `<bos>`; a hypothesis ends when it emits `<eos>` (`finished = true`; the `<eos>` is not in
//! [`Hypothesis::tokens`] but its log-probability is counted), or when it has `max_length`
//! words (`finished = false`: the caption is cut there, and no `<eos>` is scored). Every
//! hypothesis therefore terminates after at most `max_length` decoder steps, also for a model
//! that never emits `<eos>`.
//!
//! `<pad>` and `<bos>` are never generated (unless one of them is also `<eos>`): they are
//! removed from every choice, as blocked trigrams are.
//!
//! # Scores and confidence
//!
//! All log-probabilities are the model's own (`log_softmax` of its logits), whatever the
//! decoding method did to choose among tokens (banned tokens, temperature, top-k/top-p, trigram
//! blocking): the probability mass of tokens that cannot be chosen is not redistributed.
//! For a hypothesis with scored tokens `y_1 .. y_L` (its words, plus `<eos>` when finished):
//!
//! - `log_prob` = `Σ_t log p(y_t | y_<t, image)`;
//! - `score` (ranking in beam search) = `log_prob / lp(L)` under the [`LengthPenalty`]:
//!   `none`: `lp = 1`; `gnmt:α` (Wu et al., 2016, GNMT): `lp = ((5 + L) / 6)^α`;
//!   `average` (ruotianluo/ImageCaptioning.pytorch's `avg`): `lp = L`. Greedy decoding and
//!   sampling report `score = log_prob`;
//! - **confidence** = `exp(log_prob / L)`: the geometric mean of the per-token probabilities,
//!   `<eos>` included when emitted, in `(0, 1]`; see [`Hypothesis::confidence`].
//!
//! # Beam search
//!
//! All images' beams are decoded together: `images × beam_size` rows go through one decoder
//! step. Beams are expanded by cumulative `log_prob` (beams of one image always have the same
//! length, so any of the length penalties would order them the same); the best `2 × beam_size`
//! candidates of each image are examined in order, an `<eos>` candidate among the first
//! `beam_size` ends a hypothesis (an `<eos>` ranked lower is ignored, as in Hugging Face's
//! implementation), and the first `beam_size` other candidates become the next beams. An image is
//! done when it has `beam_size` ended hypotheses (early stopping) or at `max_length`, where its
//! remaining beams end unfinished. Ended hypotheses are ranked by `score`; the `n_best` first
//! are returned, best first. Done images leave the batch. Optionally, a token that would repeat a
//! trigram already in the hypothesis is blocked (Paulus et al., 2017).
//!
//! # Bad endings
//!
//! [`Constraints::no_eos_after`] lists token ids that a caption may not end with:
//! `<eos>` is removed from the choices of every hypothesis whose last word is one of them, as
//! ImageCaptioning.pytorch's `remove_bad_endings` does for `a`, `the`, `with`, ... (see
//! [`BAD_ENDINGS`]). Self-critical training on CIDEr-D tends to teach a model to stop after such
//! a word (`a girl in a pink shirt is standing on the`); this keeps the decoder going instead.
//! A hypothesis cut at `max_length` may still end with one.
//!
//! # Sampling
//!
//! Each row draws its next token from `softmax(log p / temperature)` restricted to the `top_k`
//! most likely tokens (if set) and then to the smallest set of most likely tokens whose tempered
//! probability reaches `top_p` (nucleus sampling; `1.0` = off). Row `r` (image `r / n`, sample
//! `r % n`) draws from its own SplitMix64 stream, `SplitMix64::for_item(seed, r)`, so results
//! are reproducible for a given seed and batch.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;
use caption_data::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::captioner::SpecialTokens;
use crate::decoder::{CaptionDecoder, DecoderState};
use crate::encoder::EncoderOutput;

/// ImageCaptioning.pytorch's list of words a caption should not end with (its `bad_endings`).
pub const BAD_ENDINGS: [&str; 14] = ["with", "in", "on", "of", "a", "at", "to", "for", "an", "this", "his", "her", "that", "the"];

/// The token ids of [`BAD_ENDINGS`] in `text`'s vocabulary: the words that are one token there.
pub fn bad_ending_ids(text: &caption_data::TextEncoder) -> Vec<u32> {
    BAD_ENDINGS
        .iter()
        .filter_map(|word| match text.encode(word)[..] {
            [id] if id != text.unk_id() => Some(id),
            _ => None,
        })
        .collect()
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("invalid decoding settings: {0}")]
    Invalid(String),
}

fn invalid<T>(message: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError::Invalid(message.into()))
}

/// How beam search normalises a hypothesis's log-probability by its length (see the module
/// docs). Written `none`, `average` or `gnmt:ALPHA` on the command line; in JSON as
/// `{"kind": "gnmt", "alpha": 0.6}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LengthPenalty {
    /// Rank by the total log-probability (favours short captions).
    #[default]
    None,
    /// `log_prob / ((5 + L) / 6)^alpha` (GNMT; `alpha = 0` is `None`, `1` close to `Average`).
    Gnmt { alpha: f64 },
    /// `log_prob / L`: the mean token log-probability.
    Average,
}

impl LengthPenalty {
    /// The ranking score of a hypothesis with total log-probability `log_prob` over `length`
    /// scored tokens.
    pub fn score(self, log_prob: f64, length: usize) -> f64 {
        let length = length.max(1) as f64;
        match self {
            LengthPenalty::None => log_prob,
            LengthPenalty::Gnmt { alpha } => log_prob / ((5.0 + length) / 6.0).powf(alpha),
            LengthPenalty::Average => log_prob / length,
        }
    }

    fn validate(self) -> Result<(), DecodeError> {
        match self {
            LengthPenalty::Gnmt { alpha } if !(alpha.is_finite() && alpha >= 0.0) => {
                invalid(format!("length penalty alpha is {alpha}; it must be 0 or more"))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for LengthPenalty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LengthPenalty::None => f.write_str("none"),
            LengthPenalty::Gnmt { alpha } => write!(f, "gnmt:{alpha}"),
            LengthPenalty::Average => f.write_str("average"),
        }
    }
}

impl FromStr for LengthPenalty {
    type Err = DecodeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        let penalty = match lower.as_str() {
            "none" => LengthPenalty::None,
            "average" | "avg" => LengthPenalty::Average,
            other => match other.strip_prefix("gnmt:").map(|alpha| alpha.trim().parse::<f64>()) {
                Some(Ok(alpha)) => LengthPenalty::Gnmt { alpha },
                _ => return invalid(format!("unknown length penalty {text:?}: expected none, average or gnmt:ALPHA (e.g. gnmt:0.6)")),
            },
        };
        penalty.validate()?;
        Ok(penalty)
    }
}

/// Beam search settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeamSearchConfig {
    /// Beams per image.
    pub beam_size: usize,
    /// Hypotheses returned per image, best first (at most `beam_size`).
    pub n_best: usize,
    pub length_penalty: LengthPenalty,
    /// Never emit a token that repeats a trigram already in the hypothesis.
    pub block_repeated_trigrams: bool,
}

impl Default for BeamSearchConfig {
    fn default() -> Self {
        BeamSearchConfig { beam_size: 3, n_best: 1, length_penalty: LengthPenalty::None, block_repeated_trigrams: false }
    }
}

impl BeamSearchConfig {
    pub fn new(beam_size: usize) -> Self {
        BeamSearchConfig { beam_size, ..Default::default() }
    }

    pub fn with_n_best(self, n_best: usize) -> Self {
        BeamSearchConfig { n_best, ..self }
    }

    pub fn with_length_penalty(self, length_penalty: LengthPenalty) -> Self {
        BeamSearchConfig { length_penalty, ..self }
    }

    pub fn with_block_repeated_trigrams(self, block_repeated_trigrams: bool) -> Self {
        BeamSearchConfig { block_repeated_trigrams, ..self }
    }

    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.beam_size == 0 {
            return invalid("`beam_size` must be at least 1");
        }
        if self.n_best == 0 || self.n_best > self.beam_size {
            return invalid(format!("`n_best` is {}; it must be between 1 and `beam_size` ({})", self.n_best, self.beam_size));
        }
        self.length_penalty.validate()
    }
}

/// Sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Divides the log-probabilities before the softmax: below 1 sharpens, above 1 flattens.
    pub temperature: f64,
    /// Sample among the `top_k` most likely tokens only; 0 = all.
    pub top_k: usize,
    /// Nucleus sampling: among the fewest most likely tokens whose probability reaches `top_p`;
    /// 1.0 = all.
    pub top_p: f64,
    pub seed: u64,
    /// Captions drawn per image.
    pub num_samples: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 0, num_samples: 1 }
    }
}

impl SamplingConfig {
    pub fn new(seed: u64) -> Self {
        SamplingConfig { seed, ..Default::default() }
    }

    pub fn with_temperature(self, temperature: f64) -> Self {
        SamplingConfig { temperature, ..self }
    }

    pub fn with_top_k(self, top_k: usize) -> Self {
        SamplingConfig { top_k, ..self }
    }

    pub fn with_top_p(self, top_p: f64) -> Self {
        SamplingConfig { top_p, ..self }
    }

    pub fn with_num_samples(self, num_samples: usize) -> Self {
        SamplingConfig { num_samples, ..self }
    }

    pub fn validate(&self) -> Result<(), DecodeError> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return invalid(format!("`temperature` is {}; it must be positive (use greedy decoding for temperature 0)", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid(format!("`top_p` is {}; it must be in (0, 1]", self.top_p));
        }
        if self.num_samples == 0 {
            return invalid("`num_samples` must be at least 1");
        }
        Ok(())
    }
}

/// How to decode. In JSON: `{"method": "greedy"}`, `{"method": "beam", "beam_size": 5, ...}`,
/// `{"method": "sample", "seed": 1, ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum DecodeStrategy {
    Greedy,
    Beam(BeamSearchConfig),
    Sample(SamplingConfig),
}

impl Default for DecodeStrategy {
    fn default() -> Self {
        DecodeStrategy::Beam(BeamSearchConfig::default())
    }
}

/// A decoded caption (see the module docs for the scores).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    /// The words' token ids, without `<bos>` and `<eos>` (give them to
    /// [`caption_data::TextEncoder::decode`]).
    pub tokens: Vec<u32>,
    /// Log-probability of each scored token: the words, then `<eos>` when `finished`.
    pub token_log_probs: Vec<f32>,
    /// Whether the caption ended with `<eos>` (otherwise it was cut at `max_length` words).
    pub finished: bool,
    /// Sum of `token_log_probs`.
    pub log_prob: f64,
    /// Ranking score: `log_prob` under the beam search's length penalty (`log_prob` for greedy
    /// decoding and sampling).
    pub score: f64,
    /// With [`Constraints::record_attention`], for decoders that attend over the encoder's grid:
    /// each scored token's attention weights over the `R` regions (row-major over the grid,
    /// summing to 1), taken at the step that chose the token; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attention: Vec<Vec<f32>>,
}

impl Hypothesis {
    fn new(path: Path, penalty: LengthPenalty) -> Self {
        let Path { tokens, log_probs: token_log_probs, finished, attention } = path;
        let log_prob = token_log_probs.iter().map(|&lp| lp as f64).sum();
        let score = penalty.score(log_prob, token_log_probs.len());
        Hypothesis { tokens, token_log_probs, finished, log_prob, score, attention }
    }

    /// Number of scored tokens `L`: the words, plus `<eos>` when finished.
    pub fn scored_length(&self) -> usize {
        self.token_log_probs.len()
    }

    /// `exp(log_prob / L)`: the geometric mean of the scored tokens' probabilities (`<eos>`
    /// included when emitted), in `[0, 1]`.
    pub fn confidence(&self) -> f64 {
        (self.log_prob / self.scored_length().max(1) as f64).exp()
    }

    /// Each scored token with the probability the model gave it: the caption's tokens, then
    /// `<eos>` when it was emitted (so that their geometric mean is [`Hypothesis::confidence`]).
    pub fn token_probabilities(&self, text: &caption_data::TextEncoder) -> Vec<TokenProbability> {
        let ids = self.tokens.iter().copied().chain(self.finished.then(|| text.eos_id()));
        ids.zip(&self.token_log_probs)
            .map(|(id, &log_prob)| TokenProbability { text: text.token_text(id), probability: f64::from(log_prob).exp() })
            .collect()
    }
}

/// One scored token of a caption and its probability under the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenProbability {
    /// The word (or subword piece; `<eos>` for the end of the caption).
    pub text: String,
    pub probability: f64,
}

/// What every strategy obeys: the special tokens, the longest caption, and the tokens a caption
/// may not end with (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constraints<'a> {
    pub tokens: SpecialTokens,
    /// Most words per caption.
    pub max_length: usize,
    /// Token ids after which `<eos>` is not allowed (empty: none).
    pub no_eos_after: &'a [u32],
    /// Keep each token's attention over the encoder grid ([`Hypothesis::attention`]).
    pub record_attention: bool,
}

impl Constraints<'static> {
    /// Captions of at most `max_length` words, with any ending.
    pub fn new(tokens: SpecialTokens, max_length: usize) -> Self {
        Constraints { tokens, max_length, no_eos_after: &[], record_attention: false }
    }
}

impl<'a> Constraints<'a> {
    /// The same constraints, with no caption ending in one of `no_eos_after`.
    pub fn with_no_eos_after(self, no_eos_after: &[u32]) -> Constraints<'_> {
        Constraints { no_eos_after, ..self }
    }

    /// The same constraints, keeping each token's attention when `record` is set.
    pub fn with_attention(self, record: bool) -> Constraints<'a> {
        Constraints { record_attention: record, ..self }
    }
}

/// Decodes with `strategy`: one list per image (greedy: one hypothesis; beam search: the
/// `n_best`, best first; sampling: `num_samples`, in drawing order).
pub fn decode<B: Backend, D: CaptionDecoder<B>>(
    decoder: &D,
    features: &EncoderOutput<B>,
    constraints: &Constraints,
    strategy: &DecodeStrategy,
) -> Result<Vec<Vec<Hypothesis>>, DecodeError> {
    match strategy {
        DecodeStrategy::Greedy => Ok(greedy(decoder, features, constraints)?.into_iter().map(|h| vec![h]).collect()),
        DecodeStrategy::Beam(config) => beam_search(decoder, features, constraints, config),
        DecodeStrategy::Sample(config) => sample(decoder, features, constraints, config),
    }
}

/// `<eos>` if a hypothesis whose last token is `last` may not end there, else nothing.
fn blocked_ending(last: Option<u32>, no_eos_after: &[u32], eos: u32) -> Option<u32> {
    last.filter(|t| no_eos_after.contains(t)).map(|_| eos)
}

/// `[rows, V]`: 0, and -inf at each row's blocked tokens (one list per row); `None` when no row
/// blocks any, so nothing needs adding.
fn blocked_mask<B: Backend, T: IntoIterator<Item = u32>>(
    blocked: impl Iterator<Item = T>,
    vocab: usize,
    device: &B::Device,
) -> Option<Tensor<B, 2>> {
    // Positions first: the dense mask is only built when something is blocked.
    let mut rows = 0;
    let mut positions = Vec::new();
    for tokens in blocked {
        positions.extend(tokens.into_iter().map(|token| rows * vocab + token as usize));
        rows += 1;
    }
    if positions.is_empty() {
        return None;
    }
    let mut mask = vec![0f32; rows * vocab];
    for at in positions {
        mask[at] = f32::NEG_INFINITY;
    }
    Some(Tensor::from_data(TensorData::new(mask, [rows, vocab]), device))
}

fn check_common<B: Backend, D: CaptionDecoder<B>>(decoder: &D, tokens: SpecialTokens, max_length: usize) -> Result<(), DecodeError> {
    if max_length == 0 {
        return invalid("`max_length` must be at least 1");
    }
    if let Some(positions) = decoder.max_positions()
        && positions < max_length
    {
        return invalid(format!("`max_length` is {max_length}, but the decoder takes at most {positions} positions"));
    }
    let vocab = decoder.vocab_size();
    if tokens.bos as usize >= vocab || tokens.eos as usize >= vocab {
        return invalid(format!("special tokens {tokens:?} do not fit a vocabulary of {vocab}"));
    }
    Ok(())
}

fn int_tensor<B: Backend>(values: Vec<i64>, device: &B::Device) -> Tensor<B, 1, Int> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

fn floats<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor data")
}

fn ints<B: Backend, const D: usize>(tensor: Tensor<B, D, Int>) -> Vec<i64> {
    tensor.into_data().convert::<i64>().to_vec::<i64>().expect("int tensor data")
}

/// The tokens decoding never generates: `<pad>` and `<bos>` (unless one is also `<eos>`).
fn banned_tokens(tokens: SpecialTokens) -> Vec<u32> {
    let mut banned: Vec<u32> = [tokens.pad, tokens.bos].into_iter().filter(|&t| t != tokens.eos).collect();
    banned.dedup();
    banned
}

/// `[1, V]`: 0, and -inf at the banned tokens; added to log-probabilities before choosing.
fn ban_mask<B: Backend>(tokens: SpecialTokens, vocab: usize, device: &B::Device) -> Tensor<B, 2> {
    let mut mask = vec![0f32; vocab];
    for token in banned_tokens(tokens) {
        mask[token as usize] = f32::NEG_INFINITY;
    }
    Tensor::from_data(TensorData::new(mask, [1, vocab]), device)
}

/// Row indices that repeat each of `rows` rows `times` times in a row.
fn repeat_rows(rows: usize, times: usize) -> Vec<i64> {
    (0..rows).flat_map(|row| std::iter::repeat_n(row as i64, times)).collect()
}

/// Greedy decoding: the most likely token at each step. One hypothesis per image.
pub fn greedy<B: Backend, D: CaptionDecoder<B>>(
    decoder: &D,
    features: &EncoderOutput<B>,
    constraints: &Constraints,
) -> Result<Vec<Hypothesis>, DecodeError> {
    let Constraints { tokens, max_length, .. } = *constraints;
    check_common(decoder, tokens, max_length)?;
    let ban = ban_mask::<B>(tokens, decoder.vocab_size(), &features.regions.device());
    Ok(single_paths(decoder, features, constraints, 1, |_, log_probs| {
        // Adding 0 keeps the chosen token's log-probability exactly the model's.
        let (values, indices) = (log_probs + ban.clone()).max_dim_with_indices(1);
        let values = floats(values);
        ints(indices).into_iter().zip(values).map(|(token, lp)| (token as u32, lp)).collect()
    }))
}

/// Sampling (see the module docs): `num_samples` hypotheses per image, in drawing order.
pub fn sample<B: Backend, D: CaptionDecoder<B>>(
    decoder: &D,
    features: &EncoderOutput<B>,
    constraints: &Constraints,
    config: &SamplingConfig,
) -> Result<Vec<Vec<Hypothesis>>, DecodeError> {
    let Constraints { tokens, max_length, .. } = *constraints;
    check_common(decoder, tokens, max_length)?;
    config.validate()?;
    let images = features.regions.dims()[0];
    let n = config.num_samples;
    let mut rngs: Vec<SplitMix64> = (0..images * n).map(|row| SplitMix64::for_item(config.seed, row as u64)).collect();
    let vocab = decoder.vocab_size();
    let banned = banned_tokens(tokens);
    let paths = single_paths(decoder, features, constraints, n, |rows, log_probs| {
        let values = floats(log_probs);
        rows.iter()
            .zip(values.chunks_exact(vocab))
            .map(|(&row, lps)| {
                let token = draw(lps, &banned, config, &mut rngs[row]).unwrap_or(tokens.eos as usize);
                (token as u32, lps[token])
            })
            .collect()
    });
    let mut paths = paths.into_iter();
    Ok((0..images).map(|_| paths.by_ref().take(n).collect()).collect())
}

/// Draws a token other than `banned` from one row's log-probabilities (see the module docs);
/// `None` when no such token has a finite log-probability.
fn draw(log_probs: &[f32], banned: &[u32], config: &SamplingConfig, rng: &mut SplitMix64) -> Option<usize> {
    let mut order: Vec<usize> = (0..log_probs.len()).filter(|&i| log_probs[i].is_finite() && !banned.contains(&(i as u32))).collect();
    // Most likely first; ties by id, so the order (and the draw) is deterministic.
    order.sort_by(|&a, &b| log_probs[b].total_cmp(&log_probs[a]).then(a.cmp(&b)));
    if config.top_k > 0 {
        order.truncate(config.top_k);
    }
    let best = *order.first()?;
    let max = log_probs[best] as f64;
    let mut weights: Vec<f64> = order.iter().map(|&i| ((log_probs[i] as f64 - max) / config.temperature).exp()).collect();
    if config.top_p < 1.0 {
        let total: f64 = weights.iter().sum();
        let mut cumulative = 0.0;
        let keep = weights
            .iter()
            .position(|w| {
                cumulative += w / total;
                cumulative >= config.top_p
            })
            .map_or(weights.len(), |last| last + 1);
        weights.truncate(keep);
    }
    let total: f64 = weights.iter().sum();
    let mut target = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return Some(order[i]);
        }
        target -= w;
    }
    Some(order[weights.len() - 1])
}

/// A hypothesis being extended.
#[derive(Debug, Clone, Default)]
struct Path {
    tokens: Vec<u32>,
    log_probs: Vec<f32>,
    finished: bool,
    /// Each scored token's attention (when recorded).
    attention: Vec<Vec<f32>>,
}

/// The rows of a step's attention `[rows, R]` on the host, when recorded and the decoder has it.
fn attention_rows<B: Backend>(step: &crate::decoder::DecoderStep<B>, record: bool) -> Option<(Vec<f32>, usize)> {
    let attention = step.attention.as_ref().filter(|_| record)?;
    let regions = attention.dims()[1];
    Some((floats(attention.clone()), regions))
}

fn row(rows: &Option<(Vec<f32>, usize)>, at: usize) -> Option<Vec<f32>> {
    rows.as_ref().map(|(values, regions)| values[at * regions..(at + 1) * regions].to_vec())
}

/// Decodes `copies` independent paths per image (rows `image * copies + c`); `pick` chooses
/// each active row's next token and its log-probability from the rows' log-probabilities
/// `[active, V]` (`<eos>` at -inf after a `no_eos_after` token), given the active rows' indices.
fn single_paths<B, D, F>(decoder: &D, features: &EncoderOutput<B>, constraints: &Constraints, copies: usize, mut pick: F) -> Vec<Hypothesis>
where
    B: Backend,
    D: CaptionDecoder<B>,
    F: FnMut(&[usize], Tensor<B, 2>) -> Vec<(u32, f32)>,
{
    let Constraints { tokens, max_length, no_eos_after, record_attention } = *constraints;
    let device = features.regions.device();
    let images = features.regions.dims()[0];
    let total = images * copies;
    if total == 0 {
        return Vec::new();
    }
    let mut state = decoder.init_state(features);
    if copies > 1 {
        state = state.select(int_tensor(repeat_rows(images, copies), &device));
    }
    let mut paths = vec![Path::default(); total];
    let mut active: Vec<usize> = (0..total).collect();
    let mut last: Vec<u32> = vec![tokens.bos; total];
    for step in 0..max_length {
        if active.is_empty() {
            break;
        }
        let input = int_tensor(active.iter().map(|&row| last[row] as i64).collect(), &device);
        let (step_output, next) = decoder.step(state, input);
        state = next;
        let attention = attention_rows(&step_output, record_attention);
        let mut log_probs = step_output.log_probs;
        // At step 0 `last` is `<bos>`, not a word.
        if step > 0
            && let Some(mask) = blocked_mask::<B, _>(
                active.iter().map(|&row| blocked_ending(Some(last[row]), no_eos_after, tokens.eos)),
                decoder.vocab_size(),
                &device,
            )
        {
            log_probs = log_probs + mask;
        }
        let picks = pick(&active, log_probs);
        let mut keep = Vec::with_capacity(active.len());
        for (local, (&row, (token, lp))) in active.iter().zip(picks).enumerate() {
            let path = &mut paths[row];
            path.log_probs.push(lp);
            path.attention.extend(self::row(&attention, local));
            if token == tokens.eos {
                path.finished = true;
            } else {
                path.tokens.push(token);
                last[row] = token;
                if step + 1 < max_length {
                    keep.push(local);
                }
            }
        }
        if keep.len() < active.len() && !keep.is_empty() {
            state = state.select(int_tensor(keep.iter().map(|&local| local as i64).collect(), &device));
        }
        active = keep.into_iter().map(|local| active[local]).collect();
    }
    paths.into_iter().map(|p| Hypothesis::new(p, LengthPenalty::None)).collect()
}

/// A live beam.
#[derive(Debug, Clone)]
struct Beam {
    tokens: Vec<u32>,
    log_probs: Vec<f32>,
    log_prob: f64,
    /// Each token's attention (when recorded).
    attention: Vec<Vec<f32>>,
}

impl Beam {
    fn hypothesis(&self, finished: bool, penalty: LengthPenalty) -> Hypothesis {
        let path = Path { tokens: self.tokens.clone(), log_probs: self.log_probs.clone(), finished, attention: self.attention.clone() };
        Hypothesis::new(path, penalty)
    }
}

/// Tokens that would repeat a trigram of `tokens` if appended.
fn blocked_by_trigrams(tokens: &[u32]) -> Vec<u32> {
    let n = tokens.len();
    if n < 2 {
        return Vec::new();
    }
    let (a, b) = (tokens[n - 2], tokens[n - 1]);
    tokens.windows(3).filter(|w| w[0] == a && w[1] == b).map(|w| w[2]).collect()
}

/// Batched beam search (see the module docs): the `n_best` hypotheses per image, best first.
pub fn beam_search<B: Backend, D: CaptionDecoder<B>>(
    decoder: &D,
    features: &EncoderOutput<B>,
    constraints: &Constraints,
    config: &BeamSearchConfig,
) -> Result<Vec<Vec<Hypothesis>>, DecodeError> {
    let Constraints { tokens, max_length, no_eos_after, record_attention } = *constraints;
    check_common(decoder, tokens, max_length)?;
    config.validate()?;
    let device = features.regions.device();
    let images = features.regions.dims()[0];
    if images == 0 {
        return Ok(Vec::new());
    }
    let k = config.beam_size;
    let vocab = decoder.vocab_size();
    let width = (2 * k).min(k * vocab);
    let penalty = config.length_penalty;

    let ban = ban_mask::<B>(tokens, vocab, &device);
    let mut state = decoder.init_state(features).select(int_tensor(repeat_rows(images, k), &device));
    // Images still searched, in row-block order (image `active[a]` owns rows a*k .. a*k + k),
    // and their beams by slot (`None`: an empty slot, whose row is never extended).
    let mut active: Vec<usize> = (0..images).collect();
    let first = Beam { tokens: Vec::new(), log_probs: Vec::new(), log_prob: 0.0, attention: Vec::new() };
    let mut beams: Vec<Vec<Option<Beam>>> =
        (0..images).map(|_| std::iter::once(Some(first.clone())).chain(std::iter::repeat_n(None, k - 1)).collect()).collect();
    let mut ended: Vec<Vec<Hypothesis>> = vec![Vec::new(); images];

    for step in 0..max_length {
        let rows = active.len() * k;
        let slots = || beams.iter().flat_map(|image| image.iter());
        let last: Vec<i64> =
            slots().map(|beam| beam.as_ref().and_then(|b| b.tokens.last()).copied().unwrap_or(tokens.bos) as i64).collect();
        let (step_output, next) = decoder.step(state, int_tensor(last, &device));
        state = next;
        let attention = attention_rows(&step_output, record_attention);
        let log_probs = step_output.log_probs;

        let base: Vec<f32> = slots().map(|beam| beam.as_ref().map_or(f32::NEG_INFINITY, |b| b.log_prob as f32)).collect();
        let mut scores = log_probs.clone() + Tensor::<B, 2>::from_data(TensorData::new(base, [rows, 1]), &device) + ban.clone();
        // Per beam: the tokens that would repeat a trigram, and `<eos>` after a bad ending.
        let blocked = slots().map(|beam| {
            let Some(beam) = beam else { return Vec::new() };
            let mut blocked = if config.block_repeated_trigrams { blocked_by_trigrams(&beam.tokens) } else { Vec::new() };
            blocked.extend(blocked_ending(beam.tokens.last().copied(), no_eos_after, tokens.eos));
            blocked
        });
        if let Some(mask) = blocked_mask::<B, _>(blocked, vocab, &device) {
            scores = scores + mask;
        }
        let (top_scores, top_indices) = scores.reshape([active.len(), k * vocab]).topk_with_indices(width, 1);
        let top_log_probs = floats(log_probs.reshape([active.len(), k * vocab]).gather(1, top_indices.clone()));
        let (top_scores, top_indices) = (floats(top_scores), ints(top_indices));

        let last_step = step + 1 == max_length;
        let mut next_active = Vec::with_capacity(active.len());
        let mut next_beams = Vec::with_capacity(active.len());
        let mut parents: Vec<i64> = Vec::with_capacity(rows);
        for (a, &image) in active.iter().enumerate() {
            let mut extended: Vec<(usize, Beam)> = Vec::with_capacity(k);
            for c in 0..width {
                let at = a * width + c;
                if !top_scores[at].is_finite() {
                    break; // sorted: only impossible candidates follow
                }
                let flat = top_indices[at] as usize;
                let (slot, token) = (flat / vocab, (flat % vocab) as u32);
                let Some(parent) = &beams[a][slot] else { continue };
                if token == tokens.eos && c >= k {
                    continue; // an `<eos>` ranked below the beam ends nothing
                }
                let lp = top_log_probs[at];
                let mut log_probs = parent.log_probs.clone();
                log_probs.push(lp);
                // The attention of the step that chose the token: its parent row's.
                let mut attended = parent.attention.clone();
                attended.extend(row(&attention, a * k + slot));
                if token == tokens.eos {
                    let path = Path { tokens: parent.tokens.clone(), log_probs, finished: true, attention: attended };
                    ended[image].push(Hypothesis::new(path, penalty));
                } else {
                    let mut words = parent.tokens.clone();
                    words.push(token);
                    extended.push((slot, Beam { tokens: words, log_probs, log_prob: parent.log_prob + lp as f64, attention: attended }));
                    if extended.len() == k {
                        break;
                    }
                }
            }
            if last_step {
                // Cut at max_length: the beams end unfinished.
                for (_, beam) in &extended {
                    ended[image].push(beam.hypothesis(false, penalty));
                }
            }
            let done = last_step || extended.is_empty() || ended[image].len() >= k;
            if done {
                if ended[image].is_empty() {
                    // Only when every continuation was impossible (non-finite scores): return
                    // the beams as they were, unfinished, rather than nothing.
                    for beam in beams[a].iter().flatten() {
                        ended[image].push(beam.hypothesis(false, penalty));
                    }
                }
                continue;
            }
            next_active.push(image);
            let mut slots = Vec::with_capacity(k);
            for j in 0..k {
                match extended.get(j) {
                    Some((slot, beam)) => {
                        parents.push((a * k + slot) as i64);
                        slots.push(Some(beam.clone()));
                    }
                    None => {
                        parents.push((a * k) as i64);
                        slots.push(None);
                    }
                }
            }
            next_beams.push(slots);
        }
        if next_active.is_empty() {
            break;
        }
        state = state.select(int_tensor(parents, &device));
        active = next_active;
        beams = next_beams;
    }

    Ok(ended
        .into_iter()
        .map(|mut hypotheses| {
            // Best first; ties by log-probability, then fewer tokens (stable for the rest).
            hypotheses.sort_by(|a, b| {
                b.score.total_cmp(&a.score).then(b.log_prob.total_cmp(&a.log_prob)).then(a.tokens.len().cmp(&b.tokens.len()))
            });
            hypotheses.truncate(config.n_best);
            hypotheses
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ending_ids_are_the_listed_words_in_the_vocabulary() {
        let captions = ["a dog on the grass", "a dog with a ball", "the cat sleeps"];
        let config = caption_data::VocabConfig { min_count: 1, max_length: 8, ..Default::default() };
        let text = caption_data::TextEncoder::build(&config, &captions).unwrap();
        let mut ids = bad_ending_ids(&text);
        ids.sort_unstable();
        let mut expected: Vec<u32> = ["a", "on", "the", "with"].iter().map(|w| text.encode(w)[0]).collect();
        expected.sort_unstable();
        assert_eq!(ids, expected);
    }

    #[test]
    fn length_penalties_follow_their_formulas() {
        assert_eq!(LengthPenalty::None.score(-6.0, 3), -6.0);
        assert_eq!(LengthPenalty::Average.score(-6.0, 3), -2.0);
        let gnmt = LengthPenalty::Gnmt { alpha: 1.0 }.score(-6.0, 7);
        assert!((gnmt - (-6.0 / 2.0)).abs() < 1e-12, "{gnmt}");
        assert_eq!(LengthPenalty::Gnmt { alpha: 0.0 }.score(-6.0, 7), -6.0);
        for text in ["none", "average", "gnmt:0.6"] {
            assert_eq!(text.parse::<LengthPenalty>().unwrap().to_string(), text);
        }
        assert!("gnmt:-1".parse::<LengthPenalty>().is_err());
        assert!("shortest".parse::<LengthPenalty>().unwrap_err().to_string().contains("gnmt:ALPHA"));
        let json = serde_json::to_string(&LengthPenalty::Gnmt { alpha: 0.6 }).unwrap();
        assert_eq!(serde_json::from_str::<LengthPenalty>(&json).unwrap(), LengthPenalty::Gnmt { alpha: 0.6 });
    }

    #[test]
    fn confidence_is_the_geometric_mean_probability() {
        let path =
            Path { tokens: vec![5, 6], log_probs: vec![0.5f32.ln(), 0.25f32.ln(), 1.0f32.ln()], finished: true, attention: Vec::new() };
        let h = Hypothesis::new(path, LengthPenalty::None);
        let expected = (0.5f64 * 0.25 * 1.0).powf(1.0 / 3.0);
        assert!((h.confidence() - expected).abs() < 1e-6, "{}", h.confidence());
        assert_eq!(h.scored_length(), 3);
    }

    #[test]
    fn trigram_blocking_finds_the_repeating_token() {
        assert_eq!(blocked_by_trigrams(&[4, 5, 6, 4, 5]), vec![6]);
        assert!(blocked_by_trigrams(&[4, 5, 6]).is_empty());
        assert_eq!(blocked_by_trigrams(&[7, 7, 7]), vec![7]);
    }

    #[test]
    fn draw_respects_top_k_and_top_p() {
        let lps: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let mut rng = SplitMix64::new(3);
        let top1 = SamplingConfig::new(0).with_top_k(1);
        assert!((0..50).all(|_| draw(&lps, &[], &top1, &mut rng) == Some(0)));
        let nucleus = SamplingConfig::new(0).with_top_p(0.8);
        assert!((0..200).all(|_| draw(&lps, &[], &nucleus, &mut rng).unwrap() < 2));
        let all = SamplingConfig::new(0);
        let seen: std::collections::HashSet<usize> = (0..500).filter_map(|_| draw(&lps, &[], &all, &mut rng)).collect();
        assert_eq!(seen.len(), 4);
        assert_eq!(draw(&[f32::NEG_INFINITY; 3], &[], &all, &mut rng), None);
        assert!((0..50).all(|_| draw(&lps, &[0, 1], &all, &mut rng).unwrap() >= 2));
        assert_eq!(banned_tokens(SpecialTokens { pad: 0, bos: 1, eos: 2 }), vec![0, 1]);
        assert_eq!(banned_tokens(SpecialTokens { pad: 2, bos: 1, eos: 2 }), vec![1]);
    }

    #[test]
    fn settings_are_checked() {
        assert!(BeamSearchConfig::new(0).validate().is_err());
        assert!(BeamSearchConfig::new(2).with_n_best(3).validate().unwrap_err().to_string().contains("n_best"));
        assert!(SamplingConfig::new(0).with_temperature(0.0).validate().is_err());
        assert!(SamplingConfig::new(0).with_top_p(0.0).validate().is_err());
        let json = r#"{"method": "beam", "beam_size": 5, "length_penalty": {"kind": "gnmt", "alpha": 0.6}}"#;
        let strategy: DecodeStrategy = serde_json::from_str(json).unwrap();
        assert_eq!(strategy, DecodeStrategy::Beam(BeamSearchConfig::new(5).with_length_penalty(LengthPenalty::Gnmt { alpha: 0.6 })));
    }
}
