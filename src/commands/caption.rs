//! `caption caption`: captions for image files from a checkpoint, with confidences.

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use caption_data::image::{ImageConfig, decode_file, prepare};
use caption_model::{BeamSearchConfig, DecodeStrategy, DeviceSpec, LengthPenalty, TokenProbability, load_checkpoint};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct CaptionArgs {
    /// A checkpoint directory (`experiments/<run>/checkpoints/best`, or a registry version); a
    /// run directory stands for its best checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Beams per image (1 = greedy).
    #[arg(long, default_value_t = 3)]
    beam_size: usize,
    /// Captions per image, best first (at most the beam size).
    #[arg(long, default_value_t = 1)]
    num_captions: usize,
    /// Length penalty for ranking finished beams: none, average, or gnmt:ALPHA.
    #[arg(long, default_value = "none")]
    length_penalty: String,
    /// Never repeat a trigram within a caption.
    #[arg(long)]
    block_repeated_trigrams: bool,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Images (JPEG, PNG or WebP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Captioned {
    image: PathBuf,
    captions: Vec<ScoredCaption>,
}

#[derive(Serialize)]
struct ScoredCaption {
    text: String,
    /// exp(mean log-probability of the caption's tokens, `<eos>` included when emitted).
    confidence: f64,
    /// Whether the caption ended with `<eos>` rather than at the maximum length.
    finished: bool,
    /// Each scored token (the words, then `<eos>` when emitted) and its probability.
    tokens: Vec<TokenProbability>,
}

pub fn run(args: CaptionArgs) -> Result<()> {
    if args.num_captions == 0 || args.num_captions > args.beam_size {
        bail!("--num-captions must be between 1 and --beam-size ({})", args.beam_size);
    }
    let length_penalty: LengthPenalty =
        args.length_penalty.parse().map_err(|e| anyhow::anyhow!("--length-penalty {}: {e}", args.length_penalty))?;
    let strategy = if args.beam_size == 1 {
        DecodeStrategy::Greedy
    } else {
        DecodeStrategy::Beam(BeamSearchConfig {
            beam_size: args.beam_size,
            n_best: args.num_captions,
            length_penalty,
            block_repeated_trigrams: args.block_repeated_trigrams,
        })
    };
    let device: DeviceSpec = args.device.parse()?;
    device.check_available()?;
    let results = match device {
        DeviceSpec::Cpu => caption_images::<caption_model::FlexBackend>(&args, &strategy, &Default::default())?,
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => {
            caption_images::<caption_model::device::CudaBackend>(&args, &strategy, &device.cuda_device().expect("cuda"))?
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("checked by check_available"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for result in &results {
            for caption in &result.captions {
                println!("{}\t{:.3}\t{}", result.image.display(), caption.confidence, caption.text);
            }
        }
    }
    Ok(())
}

fn caption_images<B: Backend>(args: &CaptionArgs, strategy: &DecodeStrategy, device: &B::Device) -> Result<Vec<Captioned>> {
    let path = caption_train::run_dir::resolve_checkpoint(&args.checkpoint);
    let checkpoint = load_checkpoint::<B>(&path, device)?;
    let preprocess = match &checkpoint.meta.preprocess {
        Some(preprocess) => preprocess.clone(),
        None => {
            eprintln!(
                "warning: {} does not say how its images were prepared; using {}x{} with ImageNet normalisation",
                path.display(),
                ImageConfig::default().size,
                ImageConfig::default().size
            );
            ImageConfig::default()
        }
    };
    let size = preprocess.size as usize;
    let mut pixels = Vec::with_capacity(args.images.len() * 3 * size * size);
    for path in &args.images {
        let image = decode_file(path, preprocess.max_pixels)?;
        pixels.extend(prepare(&image, &preprocess, None).chw);
    }
    let images = Tensor::<B, 4>::from_data(TensorData::new(pixels, [args.images.len(), 3, size, size]), device);
    let hypotheses = checkpoint.model.decode(images, strategy).with_context(|| format!("decoding with {}", args.checkpoint.display()))?;
    Ok(args
        .images
        .iter()
        .zip(hypotheses)
        .map(|(image, list)| Captioned {
            image: image.clone(),
            captions: list
                .iter()
                .map(|h| ScoredCaption {
                    text: checkpoint.text.decode(&h.tokens),
                    confidence: h.confidence(),
                    finished: h.finished,
                    tokens: h.token_probabilities(&checkpoint.text),
                })
                .collect(),
        })
        .collect())
}
