//! `caption caption`: captions for image files from a checkpoint, with confidences.

use anyhow::{Context, Result, bail};
use caption_data::attention_figure::png;
use caption_data::fsutil::write_atomic;
use caption_data::image::{ImageConfig, decode_file};
use caption_model::{Caption, CaptionPipeline, DecodingOverrides, DeviceSpec, LengthPenalty, load_checkpoint};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

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
    /// Write one PNG per image into DIR: the image, then each word of the best caption with
    /// where the model looked (its attention over the image) and the word's probability.
    /// With `--json`, each caption also gets its tokens' attention weights.
    #[arg(long, value_name = "DIR")]
    attention: Option<PathBuf>,
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
        attention: args.attention.is_some().then_some(true),
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
    let results: Vec<Captioned> =
        args.images.iter().zip(captions).map(|(image, captions)| Captioned { image: image.clone(), captions }).collect();
    if let Some(dir) = &args.attention {
        write_figures(dir, &results, &pipeline.preprocess)?;
    }
    Ok(results)
}

/// One attention figure per image (of its best caption) in `dir`, named after the image file.
fn write_figures(dir: &Path, results: &[Captioned], preprocess: &ImageConfig) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--attention: cannot create {}", dir.display()))?;
    let mut names = std::collections::HashSet::new();
    for result in results {
        let Some(caption) = result.captions.first() else { continue };
        if caption.attention.is_none() {
            bail!("--attention: this checkpoint's decoder has no attention over the image");
        }
        let image = decode_file(&result.image, preprocess.max_pixels)?;
        let figure = caption.attention_figure(&image, preprocess).expect("the caption has attention");
        let stem = result.image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let name = (1..).map(|k| if k == 1 { format!("{stem}.png") } else { format!("{stem}-{k}.png") }).find(|n| names.insert(n.clone()));
        let path = dir.join(name.expect("a free name"));
        write_atomic(&path, &png(&figure))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
