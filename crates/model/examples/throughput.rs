//! Throughput of the model on the current device (a benchmark, not a test): encoder inference
//! in images/s, and teacher-forced decoder training (forward, cross-entropy, backward, AdamW
//! step) in caption pairs/s.
//!
//! ```text
//! cargo run --release -p caption-model --example throughput -- \
//!     [--device cpu|cuda[:N]] [--encoder resnet18|resnet34|resnet50|resnet101|mobilenet_v2] \
//!     [--batch 8] [--size 224] [--decoder lstm|transformer] [--decoder-batch 32] \
//!     [--vocab 5000] [--length 16] [--iters 5]
//! ```
//! (`--features cuda` for `--device cuda`.) Prints one JSON line per measurement; the first
//! iteration of each is a warm-up and is not timed. `scripts/reference/throughput.py` measures
//! the same models with PyTorch.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::{Distribution, backend::AutodiffBackend};
use caption_model::{
    AttentionLstmConfig, CaptionDecoder, DecoderConfig, DeviceSpec, EncoderConfig, EncoderKind, EncoderOutput, TransformerDecoderConfig,
};
use std::time::Instant;

struct Options {
    device: DeviceSpec,
    encoder: EncoderKind,
    batch: usize,
    size: usize,
    decoder: String,
    decoder_batch: usize,
    vocab: usize,
    length: usize,
    iters: usize,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        device: DeviceSpec::Cpu,
        encoder: EncoderKind::Resnet18,
        batch: 8,
        size: 224,
        decoder: "lstm".into(),
        decoder_batch: 32,
        vocab: 5000,
        length: 16,
        iters: 5,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else { return Err(format!("{} needs a value", pair[0])) };
        let number = || value.parse::<usize>().map_err(|_| format!("{flag} {value}: expected a number"));
        match flag.as_str() {
            "--device" => options.device = value.parse().map_err(|e| format!("{e}"))?,
            "--encoder" => {
                options.encoder = serde_json::from_value(serde_json::Value::String(value.clone()))
                    .map_err(|_| format!("--encoder {value}: expected resnet18, resnet34, resnet50, resnet101 or mobilenet_v2"))?
            }
            "--batch" => options.batch = number()?,
            "--size" => options.size = number()?,
            "--decoder" if value == "lstm" || value == "transformer" => options.decoder = value.clone(),
            "--decoder" => return Err(format!("--decoder {value}: expected lstm or transformer")),
            "--decoder-batch" => options.decoder_batch = number()?,
            "--vocab" => options.vocab = number()?,
            "--length" => options.length = number()?,
            "--iters" => options.iters = number()?.max(1),
            other => return Err(format!("unknown option {other}")),
        }
    }
    options.device.check_available().map_err(|e| e.to_string())?;
    Ok(options)
}

fn main() {
    // As the `caption` binary does (see caption_model::allocator).
    caption_model::allocator::keep_freed_memory();
    let options = match parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    // Backends are types: each arm instantiates the benchmark for one (a concrete type, so the
    // autodiff backend's device is the inner one's).
    match options.device {
        DeviceSpec::Cpu => {
            type F = caption_model::FlexBackend;
            encoder_inference::<F>(&options, &Default::default());
            decoder_training::<burn::backend::Autodiff<F>>(&options, &Default::default());
        }
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => {
            type C = caption_model::device::CudaBackend;
            let device = options.device.cuda_device().expect("a cuda device");
            encoder_inference::<C>(&options, &device);
            decoder_training::<burn::backend::Autodiff<C>>(&options, &device);
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("checked by check_available"),
    }
}

fn encoder_inference<B: Backend>(options: &Options, device: &B::Device) {
    let device_name = options.device.to_string();
    // Eval mode, no autodiff.
    let encoder = EncoderConfig::new(options.encoder).init::<B>(device).expect("encoder config");
    let images = Tensor::<B, 4>::random([options.batch, 3, options.size, options.size], Distribution::Normal(0.0, 1.0), device);
    let mut seconds = 0.0;
    for iteration in 0..=options.iters {
        let start = Instant::now();
        let output = encoder.forward(images.clone());
        let _ = output.pooled.into_data();
        B::sync(device).expect("device sync");
        if iteration > 0 {
            seconds += start.elapsed().as_secs_f64();
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "measure": "encoder_inference", "device": device_name, "encoder": options.encoder,
            "batch": options.batch, "size": options.size, "images_per_s": (options.batch * options.iters) as f64 / seconds,
        })
    );
}

/// Decoder training from features of the encoder's shape (7x7 grid at 224 px).
fn decoder_training<A: AutodiffBackend>(options: &Options, device: &A::Device) {
    let device_name = options.device.to_string();
    let channels = EncoderConfig::new(options.encoder).out_channels();
    let grid = options.size / 32;
    let decoder_config: DecoderConfig = if options.decoder == "lstm" {
        AttentionLstmConfig::new().into()
    } else {
        TransformerDecoderConfig::new().with_max_positions(options.length + 1).into()
    };
    let mut decoder = decoder_config.init::<A>(channels, options.vocab, device).expect("decoder config");
    let mut optimizer = AdamWConfig::new().with_weight_decay(0.01).init();
    let loss = CrossEntropyLossConfig::new().init(device);
    let n = options.decoder_batch;
    let features_map = Tensor::<A, 4>::random([n, channels, grid, grid], Distribution::Uniform(0.0, 2.0), device);
    let tokens = Tensor::<A, 2, Int>::random([n, options.length + 1], Distribution::Uniform(4.0, options.vocab as f64), device);
    let inputs = tokens.clone().slice([0..n, 0..options.length]);
    let targets = tokens.slice([0..n, 1..options.length + 1]).reshape([n * options.length]);
    let mut seconds = 0.0;
    for iteration in 0..=options.iters {
        let start = Instant::now();
        let features = EncoderOutput::from_feature_map(features_map.clone());
        let logits = decoder.forward(&features, inputs.clone()).logits.reshape([n * options.length, options.vocab]);
        let value = loss.forward(logits, targets.clone());
        let grads = GradientsParams::from_grads(value.backward(), &decoder);
        decoder = optimizer.step(1e-4, decoder, grads);
        // GPU backends run asynchronously: wait for the step before stopping the clock.
        A::sync(device).expect("device sync");
        if iteration > 0 {
            seconds += start.elapsed().as_secs_f64();
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "measure": "decoder_training", "device": device_name, "decoder": options.decoder,
            "features": [grid * grid, channels], "batch": n, "length": options.length, "vocab": options.vocab,
            "caption_pairs_per_s": (n * options.iters) as f64 / seconds,
        })
    );
}
