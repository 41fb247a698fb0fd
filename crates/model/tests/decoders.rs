//! The decoders at tiny sizes: teacher forcing trains (gradients reach every parameter),
//! incremental steps agree with teacher forcing, padding does not leak, and the doubly
//! stochastic regulariser follows its formula.

mod common;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use caption_model::decoder::{CaptionDecoder, Decoder, doubly_stochastic_penalty};
use caption_model::decoding::{BeamSearchConfig, DecodeStrategy};
use caption_model::encoder::EncoderOutput;
use caption_model::{Captioner, CaptionerConfig};
use common::*;

type AD = Autodiff<B>;

/// Inputs `<bos> w..` and targets `w.. <eos>`, right-padded with 0.
fn batch<BB: Backend>(device: &BB::Device) -> (Tensor<BB, 2, Int>, Tensor<BB, 2, Int>) {
    let inputs = int_tensor(vec![1, 5, 6, 7, 8, 1, 9, 10, 0, 0], [2, 5], device);
    let targets = int_tensor(vec![5, 6, 7, 8, 2, 9, 10, 2, 0, 0], [2, 5], device);
    (inputs, targets)
}

/// Parameters without a gradient.
struct WithoutGrad<'a, A: AutodiffBackend> {
    grads: &'a A::Gradients,
    path: Vec<String>,
    missing: Vec<String>,
    seen: usize,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for WithoutGrad<'_, A> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        self.seen += 1;
        if param.val().grad(self.grads).is_none() {
            self.missing.push(self.path.join("."));
        }
    }
}

/// How many parameters `decoder` has, and the paths of those `grads` holds no gradient for.
fn parameters_without_gradient(decoder: &Decoder<AD>, grads: &<AD as AutodiffBackend>::Gradients) -> (usize, Vec<String>) {
    let mut visitor = WithoutGrad::<AD> { grads, path: Vec::new(), missing: Vec::new(), seen: 0 };
    decoder.visit(&mut visitor);
    (visitor.seen, visitor.missing)
}

#[test]
fn teacher_forcing_trains_every_decoder_parameter() {
    let device = Default::default();
    for (name, config) in decoder_configs() {
        let decoder: Decoder<AD> = config.init(FEATURES, VOCAB, &device).unwrap();
        let features = features::<AD>(2, &device);
        let (inputs, targets) = batch::<AD>(&device);
        let out = decoder.forward(&features, inputs);
        assert_eq!(out.logits.dims(), [2, 5, VOCAB], "{name}");
        let loss = CrossEntropyLossConfig::new()
            .with_pad_tokens(Some(vec![0]))
            .init(&device)
            .forward(out.logits.reshape([10, VOCAB]), targets.clone().reshape([10]));
        let loss = match out.alphas {
            Some(alphas) => {
                assert_eq!(alphas.dims(), [2, 5, REGIONS], "{name}");
                loss + doubly_stochastic_penalty(alphas, Some(targets.equal_elem(0)), 1.0)
            }
            None => loss,
        };
        let value = loss.clone().into_scalar().elem::<f32>();
        assert!(value.is_finite() && value > 0.0, "{name}: loss {value}");
        let (seen, missing) = parameters_without_gradient(&decoder, &loss.backward());
        assert!(seen > 8, "{name}: {seen} parameters");
        assert!(missing.is_empty(), "{name}: no gradient for {missing:?}");
    }
}

/// Under autodiff burn always applies dropout; `without_dropout` scores like inference (what the
/// self-critical loss needs) while its gradients still reach the original decoder's parameters.
#[test]
fn without_dropout_scores_like_inference_and_still_trains() {
    let device = Default::default();
    for (name, config) in decoder_configs() {
        let decoder: Decoder<AD> = config.init(FEATURES, VOCAB, &device).unwrap();
        let features = features::<AD>(2, &device);
        let (inputs, targets) = batch::<AD>(&device);
        let plain = EncoderOutput { regions: features.regions.clone().inner(), pooled: features.pooled.clone().inner() };
        let inference = floats(decoder.valid().forward(&plain, inputs.clone().inner()).logits);
        let largest_difference = |logits: Vec<f32>| logits.iter().zip(&inference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);

        let with_dropout = decoder.forward(&features, inputs.clone()).logits;
        assert!(largest_difference(floats(with_dropout.inner())) > 1e-3, "{name}: dropout should change the training logits");

        let logits = decoder.without_dropout().forward(&features, inputs).logits;
        assert!(largest_difference(floats(logits.clone().inner())) < 1e-5, "{name}: without dropout the logits are the inference ones");
        let loss = CrossEntropyLossConfig::new()
            .with_pad_tokens(Some(vec![0]))
            .init(&device)
            .forward(logits.reshape([10, VOCAB]), targets.reshape([10]));
        let (_, missing) = parameters_without_gradient(&decoder, &loss.backward());
        assert!(missing.is_empty(), "{name}: no gradient for {missing:?}");
    }
}

#[test]
fn steps_agree_with_teacher_forcing() {
    let device = Default::default();
    for (name, config) in decoder_configs() {
        let decoder: Decoder<B> = config.init(FEATURES, VOCAB, &device).unwrap();
        let features = features::<B>(2, &device);
        let (inputs, _) = batch::<B>(&device);
        let expected = floats(log_softmax(decoder.forward(&features, inputs.clone()).logits, 2)); // [2, 5, V]
        let mut state = decoder.init_state(&features);
        for t in 0..5 {
            let tokens = inputs.clone().narrow(1, t, 1).reshape([2]);
            let (step, next) = decoder.step(state, tokens);
            state = next;
            let got = floats(step.log_probs);
            for row in 0..2 {
                for v in 0..VOCAB {
                    let (a, b) = (got[row * VOCAB + v], expected[(row * 5 + t) * VOCAB + v]);
                    assert!((a - b).abs() < 1e-4, "{name}: row {row} step {t} token {v}: step {a} vs forward {b}");
                }
            }
        }
    }
}

#[test]
fn trailing_padding_does_not_change_earlier_logits() {
    let device = Default::default();
    for (name, config) in decoder_configs() {
        let decoder: Decoder<B> = config.init(FEATURES, VOCAB, &device).unwrap();
        let features = features::<B>(1, &device);
        let short = int_tensor(vec![1, 9, 10], [1, 3], &device);
        let padded = int_tensor(vec![1, 9, 10, 0, 0], [1, 5], &device);
        let a = floats(decoder.forward(&features, short).logits);
        let b = floats(decoder.forward(&features, padded).logits.narrow(1, 0, 3));
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
}

#[test]
fn doubly_stochastic_penalty_follows_its_formula() {
    let device = Default::default();
    // Two captions of two steps over three regions.
    let alphas =
        Tensor::<B, 3>::from_data(TensorData::new(vec![0.5f32, 0.5, 0.0, 0.2, 0.2, 0.6, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0], [2, 2, 3]), &device);
    // Caption 0: Σ_t α = [0.7, 0.7, 0.6] -> 0.09 + 0.09 + 0.16 = 0.34. Caption 1: [1, 0, 1] -> 1.
    let all = doubly_stochastic_penalty(alphas.clone(), None, 2.0).into_scalar().elem::<f32>();
    assert!((all - 2.0 * (0.34 + 1.0) / 2.0).abs() < 1e-5, "{all}");
    // Masking caption 1's second step: [1, 0, 0] -> 2.
    let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![false, false, false, true], [2, 2]), &device);
    let masked = doubly_stochastic_penalty(alphas, Some(mask), 1.0).into_scalar().elem::<f32>();
    assert!((masked - (0.34 + 2.0) / 2.0).abs() < 1e-5, "{masked}");
}

#[test]
fn a_captioner_trains_end_to_end_and_decodes_as_an_inference_model() {
    let device = Default::default();
    for (name, decoder) in decoder_configs() {
        let config =
            CaptionerConfig::new(tiny_encoder().with_finetune(caption_model::Finetune::LastStages(1)), decoder, VOCAB).with_max_length(6);
        let model: Captioner<AD> = config.init(&device).unwrap();
        let images = Tensor::<AD, 4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let (inputs, targets) = batch::<AD>(&device);
        let out = model.forward(images, inputs);
        let loss = CrossEntropyLossConfig::new()
            .with_pad_tokens(Some(vec![0]))
            .init(&device)
            .forward(out.logits.reshape([10, VOCAB]), targets.reshape([10]));
        let grads = loss.backward();
        // The decoder and the fine-tuned last stage learn; the frozen stem does not.
        let mut decoder_grads = WithoutGrad::<AD> { grads: &grads, path: Vec::new(), missing: Vec::new(), seen: 0 };
        model.decoder.visit(&mut decoder_grads);
        assert!(decoder_grads.missing.is_empty(), "{name}: {:?}", decoder_grads.missing);
        let mut encoder_grads = WithoutGrad::<AD> { grads: &grads, path: Vec::new(), missing: Vec::new(), seen: 0 };
        model.encoder.visit(&mut encoder_grads);
        assert!(encoder_grads.missing.iter().any(|p| p.contains("conv1")), "{name}: {:?}", encoder_grads.missing);
        assert!(
            !encoder_grads.missing.iter().any(|p| p.contains("layer4") && !p.contains("running")),
            "{name}: {:?}",
            encoder_grads.missing
        );

        let inference: Captioner<B> = model.valid();
        let images = Tensor::<B, 4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let strategy = DecodeStrategy::Beam(BeamSearchConfig::new(2));
        let captions =
            caption_model::decoding::decode(&inference.decoder, &inference.encode(images.clone()), &inference.constraints(), &strategy)
                .unwrap();
        assert_eq!(captions.len(), 2, "{name}");
        assert!(captions.iter().flatten().all(|h| h.tokens.len() <= 6), "{name}");
        assert_eq!(
            captions,
            caption_model::decoding::decode(&inference.decoder, &inference.encode(images), &inference.constraints(), &strategy).unwrap(),
            "{name}: decoding is not deterministic"
        );
    }
}
