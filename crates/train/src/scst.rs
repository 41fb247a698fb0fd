//! Self-critical sequence training (Rennie et al., 2017): after `scst.after_epoch` epochs of
//! cross-entropy, the captioner is trained to maximise the CIDEr-D of its own samples.
//!
//! Per step, for every image of the batch: draw `samples_per_image` captions from the model
//! (dropout off, temperature `scst.temperature`), reward each with its CIDEr-D against the
//! image's references, using document frequencies counted once over the training split (as
//! ImageCaptioning.pytorch's `cider_df`), and subtract a baseline: the reward of the greedy
//! caption (`baseline: greedy`, the original paper) or the mean reward of the image's other
//! samples (`baseline: mean`, Luo 2020). The loss is the REINFORCE estimate
//! `-(r - b) · log p(w_t | w_<t, I)` summed over each sample's tokens (its `<eos>` included)
//! and averaged over all tokens, as ImageCaptioning.pytorch's `RewardCriterion`; the
//! log-probabilities come from one teacher-forced pass over the samples, with dropout off as
//! when they were drawn, so the gradient is exactly that of the sampled tokens' probability.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use caption_data::TextEncoder;
use caption_eval::cider::CiderD;
use caption_eval::tokenizer::tokenize_caption;
use caption_model::{Hypothesis, SamplingConfig, SpecialTokens};
use serde::{Deserialize, Serialize};

/// What the reward of a sample is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The reward of the image's greedy caption.
    #[default]
    Greedy,
    /// The mean reward of the image's other samples (needs `samples_per_image` ≥ 2).
    Mean,
}

/// `scst:` self-critical sequence training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScstConfig {
    pub enabled: bool,
    /// Cross-entropy epochs before SCST starts (SCST trains epochs `after_epoch + 1` onwards).
    pub after_epoch: usize,
    pub samples_per_image: usize,
    pub baseline: Baseline,
    /// Constant learning rate of the SCST epochs (ImageCaptioning.pytorch uses 2e-5 to 5e-5).
    pub lr: f64,
    /// Sampling temperature of the rewarded captions.
    pub temperature: f64,
}

impl Default for ScstConfig {
    fn default() -> Self {
        ScstConfig { enabled: false, after_epoch: 10, samples_per_image: 5, baseline: Baseline::Greedy, lr: 5e-5, temperature: 1.0 }
    }
}

impl ScstConfig {
    pub fn validate(&self, epochs: usize) -> anyhow::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.samples_per_image == 0 {
            anyhow::bail!("`scst.samples_per_image` must be at least 1");
        }
        if self.baseline == Baseline::Mean && self.samples_per_image < 2 {
            anyhow::bail!("`scst.baseline: mean` needs `scst.samples_per_image` of at least 2 (the other samples are the baseline)");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            anyhow::bail!("`scst.lr` is {}; it must be positive", self.lr);
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            anyhow::bail!("`scst.temperature` is {}; it must be positive", self.temperature);
        }
        if self.after_epoch >= epochs {
            anyhow::bail!(
                "`scst.after_epoch` is {}, but `train.epochs` is {epochs}: SCST would never run (it trains epochs after `after_epoch`)",
                self.after_epoch
            );
        }
        Ok(())
    }

    /// Whether epoch `epoch` (0-based) is trained with SCST.
    pub fn active(&self, epoch: usize) -> bool {
        self.enabled && epoch >= self.after_epoch
    }
}

/// The reward: CIDEr-D with the training split's document frequencies, against each training
/// image's tokenized references.
pub struct Reward {
    scorer: CiderD,
    /// Per training image (the train set's order), its references, PTB-tokenized.
    references: Vec<Vec<String>>,
}

impl Reward {
    /// `references`: every training image's raw reference captions.
    pub fn new<'a>(references: impl IntoIterator<Item = &'a [String]>) -> Self {
        let references: Vec<Vec<String>> = references.into_iter().map(|refs| refs.iter().map(|r| tokenize_caption(r)).collect()).collect();
        let scorer = CiderD::with_corpus_df(&references);
        Reward { scorer, references }
    }

    /// CIDEr-D of `caption` for training image `image`.
    pub fn score(&self, image: usize, caption: &str) -> f64 {
        let references = &self.references[image];
        if references.is_empty() {
            return 0.0;
        }
        self.scorer.score_candidate(&tokenize_caption(caption), references).score
    }
}

/// The sampled captions of one step, with what the loss needs.
pub struct Rollout {
    /// For each sample row, the batch image it describes.
    pub row_image: Vec<i64>,
    /// Decoder inputs `[rows, T]` (`<bos>` and the words) and targets (the words, then
    /// `<eos>` when the sample ended), right-padded.
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
    pub length: usize,
    /// Per row: reward minus baseline.
    pub advantages: Vec<f32>,
    pub mean_reward: f64,
    pub mean_baseline: f64,
}

/// The sampling configuration of a step (seeded per step, so a resumed run draws the same).
pub fn sampling(config: &ScstConfig, seed: u64) -> SamplingConfig {
    SamplingConfig::new(seed).with_num_samples(config.samples_per_image).with_temperature(config.temperature)
}

/// Scores the samples (one list per batch image) and lays them out for the teacher-forced
/// pass; `images[i]` is batch image `i`'s index in the training set, `greedy` its greedy
/// caption (with `baseline: greedy`).
pub fn rollout(
    config: &ScstConfig,
    reward: &Reward,
    text: &TextEncoder,
    tokens: SpecialTokens,
    images: &[usize],
    samples: &[Vec<Hypothesis>],
    greedy: Option<&[Hypothesis]>,
) -> Rollout {
    let mut rows: Vec<(usize, &Hypothesis)> = Vec::new();
    let mut advantages = Vec::new();
    let (mut reward_sum, mut baseline_sum) = (0.0, 0.0);
    for (slot, (&image, hypotheses)) in images.iter().zip(samples).enumerate() {
        let rewards: Vec<f64> = hypotheses.iter().map(|h| reward.score(image, &text.decode(&h.tokens))).collect();
        let total: f64 = rewards.iter().sum();
        let greedy_reward = match (config.baseline, greedy) {
            (Baseline::Greedy, Some(greedy)) => reward.score(image, &text.decode(&greedy[slot].tokens)),
            _ => 0.0,
        };
        for (h, &r) in hypotheses.iter().zip(&rewards) {
            let baseline = match config.baseline {
                Baseline::Greedy => greedy_reward,
                Baseline::Mean => (total - r) / (rewards.len() - 1).max(1) as f64,
            };
            rows.push((slot, h));
            advantages.push((r - baseline) as f32);
            reward_sum += r;
            baseline_sum += baseline;
        }
    }
    let length = rows.iter().map(|(_, h)| h.tokens.len() + usize::from(h.finished)).max().unwrap_or(1).max(1);
    let mut inputs = vec![tokens.pad as i64; rows.len() * length];
    let mut targets = vec![tokens.pad as i64; rows.len() * length];
    for (r, (_, h)) in rows.iter().enumerate() {
        let base = r * length;
        inputs[base] = tokens.bos as i64;
        for (t, &id) in h.tokens.iter().enumerate() {
            targets[base + t] = id as i64;
            if t + 1 < length {
                inputs[base + t + 1] = id as i64;
            }
        }
        if h.finished {
            targets[base + h.tokens.len()] = tokens.eos as i64;
        }
    }
    let n = rows.len().max(1) as f64;
    Rollout {
        row_image: rows.iter().map(|(slot, _)| *slot as i64).collect(),
        inputs,
        targets,
        length,
        advantages,
        mean_reward: reward_sum / n,
        mean_baseline: baseline_sum / n,
    }
}

/// The REINFORCE loss of a rollout (see the module docs) given the decoder's logits
/// `[rows, T, V]` for its inputs.
pub fn policy_loss<B: Backend>(logits: Tensor<B, 3>, rollout: &Rollout, pad: u32) -> Tensor<B, 1> {
    let device = logits.device();
    let [rows, length, vocab] = logits.dims();
    let n = rows * length;
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(rollout.targets.clone(), [n, 1]), &device);
    let keep = targets.clone().not_equal_elem(pad as i64).float().reshape([rows, length]);
    let log_probs = log_softmax(logits.reshape([n, vocab]), 1).gather(1, targets).reshape([rows, length]);
    let advantages = Tensor::<B, 2>::from_data(TensorData::new(rollout.advantages.clone(), [rows, 1]), &device);
    let tokens = keep.clone().sum();
    (log_probs * keep * advantages).sum().neg() / tokens.clamp_min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::ElementConversion;
    use caption_data::VocabConfig;

    fn hypothesis(tokens: Vec<u32>, finished: bool) -> Hypothesis {
        // Only the tokens and `finished` matter to the rollout.
        let n = tokens.len() + usize::from(finished);
        Hypothesis { tokens, token_log_probs: vec![-1.0; n], finished, log_prob: -(n as f64), score: -(n as f64), attention: Vec::new() }
    }

    #[test]
    fn rewards_baselines_and_layout() {
        let captions = ["a red circle", "a blue square", "a red square"];
        let text = TextEncoder::build(&VocabConfig { min_count: 1, max_length: 8, ..Default::default() }, &captions).unwrap();
        let references: Vec<Vec<String>> = vec![vec!["a red circle".into()], vec!["a blue square".into()]];
        let reward = Reward::new(references.iter().map(Vec::as_slice));
        let right = text.encode("a red circle");
        let wrong = text.encode("a blue square");
        assert!(reward.score(0, "a red circle") > reward.score(0, "a blue square"));

        let config = ScstConfig { enabled: true, samples_per_image: 2, baseline: Baseline::Mean, ..Default::default() };
        let samples = vec![vec![hypothesis(right.clone(), true), hypothesis(wrong.clone(), false)]];
        let tokens = SpecialTokens::of(&text);
        let rollout = rollout(&config, &reward, &text, tokens, &[0], &samples, None);
        assert_eq!(rollout.row_image, vec![0, 0]);
        // The right caption beats the mean of the others (the wrong one), and vice versa.
        assert!(rollout.advantages[0] > 0.0 && rollout.advantages[1] < 0.0, "{:?}", rollout.advantages);
        assert!((rollout.advantages[0] + rollout.advantages[1]).abs() < 1e-6);
        assert_eq!(rollout.length, 4);
        let row = |r: usize| (&rollout.inputs[r * 4..r * 4 + 4], &rollout.targets[r * 4..r * 4 + 4]);
        let ids = |v: &[u32]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        let (inputs, targets) = row(0);
        assert_eq!(inputs, [&[tokens.bos as i64][..], &ids(&right)].concat());
        assert_eq!(targets, [ids(&right), vec![tokens.eos as i64]].concat());
        // An unfinished sample has no <eos> target: its last word is not rewarded as an ending.
        let (_, targets) = row(1);
        assert_eq!(targets, [ids(&wrong), vec![tokens.pad as i64]].concat());
    }

    #[test]
    fn loss_pushes_up_positive_advantages() {
        type B = caption_model::FlexBackend;
        let device = Default::default();
        // One row, two steps, vocabulary 3, targets 1 then 2; advantage +1.
        let rollout = Rollout {
            row_image: vec![0],
            inputs: vec![1, 1],
            targets: vec![1, 2],
            length: 2,
            advantages: vec![1.0],
            mean_reward: 1.0,
            mean_baseline: 0.0,
        };
        let logits = Tensor::<B, 3>::from_floats([[[0.0, 0.5, 0.0], [0.2, 0.0, 0.1]]], &device);
        let loss = policy_loss(logits.clone(), &rollout, 0).into_scalar().elem::<f32>() as f64;
        let lsm = |row: [f64; 3], t: usize| row[t] - row.iter().map(|x| x.exp()).sum::<f64>().ln();
        let expected = -(lsm([0.0, 0.5, 0.0], 1) + lsm([0.2, 0.0, 0.1], 2)) / 2.0;
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
        let negative = Rollout { advantages: vec![-1.0], ..rollout };
        let flipped = policy_loss(logits, &negative, 0).into_scalar().elem::<f32>() as f64;
        assert!((flipped + expected).abs() < 1e-5);
    }
}
