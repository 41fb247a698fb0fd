//! `caption caption`: captions for image files from a checkpoint, with confidences.

use anyhow::{Context, Result};
use caption_model::{Caption, CaptionPipeline, DecodingOverrides, DeviceSpec, LengthPenalty, load_checkpoint};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct CaptionArgs {
    /// A checkpoint directory (`experiments/<run>/checkpoints/best`, or a registry version); a
    /// run directory stands for its best checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Beams per image (1 = greedy). Default: the checkpoint's decoding.
    #[arg(long)]
    beam_size: Option<usize>,
    /// Captions per image, best first (at most the beam size). Default: the checkpoint's.
    #[arg(long)]
    num_captions: Option<usize>,
    /// Length penalty for ranking finished beams: none, average, or gnmt:ALPHA. Default: the
    /// checkpoint's.
    #[arg(long)]
    length_penalty: Option<String>,
    /// Never repeat a trigram within a caption (`--block-repeated-trigrams=false` turns the
    /// checkpoint's setting off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    block_repeated_trigrams: Option<bool>,
    /// No caption ends with `a`, `the`, `with`, ... (`=false` turns the checkpoint's setting off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    block_bad_endings: Option<bool>,
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
    captions: Vec<Caption>,
}

pub fn run(args: CaptionArgs) -> Result<()> {
    let length_penalty = match &args.length_penalty {
        Some(text) => Some(text.parse::<LengthPenalty>().map_err(|e| anyhow::anyhow!("--length-penalty {text}: {e}"))?),
        None => None,
    };
    let overrides = DecodingOverrides {
        beam_size: args.beam_size,
        num_captions: args.num_captions,
        length_penalty,
        block_repeated_trigrams: args.block_repeated_trigrams,
        block_bad_endings: args.block_bad_endings,
        ..Default::default()
    };
    let device: DeviceSpec = args.device.parse()?;
    device.check_available()?;
    let results = match device {
        DeviceSpec::Cpu => caption_images::<caption_model::FlexBackend>(&args, &overrides, &Default::default())?,
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => {
            caption_images::<caption_model::device::CudaBackend>(&args, &overrides, &device.cuda_device().expect("cuda"))?
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

fn caption_images<B: burn::prelude::Backend>(
    args: &CaptionArgs,
    overrides: &DecodingOverrides,
    device: &B::Device,
) -> Result<Vec<Captioned>> {
    let path = caption_train::run_dir::resolve_checkpoint(&args.checkpoint);
    let checkpoint = load_checkpoint::<B>(&path, device)?;
    if checkpoint.meta.preprocess.is_none() {
        eprintln!("warning: {} does not say how its images were prepared; using training's default", path.display());
    }
    let pipeline = CaptionPipeline::from_checkpoint(checkpoint, device);
    let decoding = overrides.apply(&pipeline.decoding).context("decoding settings")?;
    let mut pixels = Vec::new();
    for image in &args.images {
        let bytes = std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
        pixels.extend(pipeline.prepare_image(&bytes, &image.display().to_string())?);
    }
    let captions = pipeline.caption_images(pixels, &decoding).with_context(|| format!("decoding with {}", args.checkpoint.display()))?;
    Ok(args.images.iter().zip(captions).map(|(image, captions)| Captioned { image: image.clone(), captions }).collect())
}
