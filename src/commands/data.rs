//! `caption data synth | stats | export-feedback`.

use crate::experiment_config;
use anyhow::{Context, Result, bail};
use caption_data::synth::{self, SynthConfig};
use caption_data::{CaptionDataset, DataConfig, DataFormat, ImageCheck, Split, SplitSource};
use caption_serve::feedback::ExportOptions;
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Write the synthetic shapes dataset (PNG images, 5 captions each, MS-COCO caption JSON).
    Synth(SynthArgs),
    /// Print dataset statistics: images and captions per split, caption lengths, vocabulary, OOV rate.
    Stats(StatsArgs),
    /// Turn the feedback a server collected into an MS-COCO caption dataset for fine-tuning:
    /// corrections, and captions rated at least --min-rating.
    ExportFeedback(ExportFeedbackArgs),
}

#[derive(Args)]
pub struct ExportFeedbackArgs {
    /// The registry the server ran on (its database is `<registry>/serve.sqlite3`).
    #[arg(long, required_unless_present = "store", conflicts_with = "store")]
    registry: Option<PathBuf>,
    /// The server's database, when serve.yaml set `store_file`: its file, or its PostgreSQL URL
    /// (postgres://user:password@host/db).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Output folder: images/, captions_train.json, captions_val.json, data.yaml.
    #[arg(long)]
    out: PathBuf,
    /// A rated caption without a correction is kept from this rating (1-5) up.
    #[arg(long, default_value_t = ExportOptions::default().min_rating)]
    min_rating: u8,
    /// Share of images in the val split (by image hash: stable from one export to the next).
    #[arg(long, default_value_t = ExportOptions::default().val_fraction)]
    val_fraction: f64,
    /// Replace whatever is in the output folder.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output folder.
    #[arg(long, default_value = "datasets/shapes")]
    out: PathBuf,
    /// Number of images over all splits.
    #[arg(long, default_value_t = SynthConfig::default().n)]
    n: usize,
    /// Same seed, same bytes.
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    seed: u64,
    /// Width and height of the images in pixels.
    #[arg(long, default_value_t = SynthConfig::default().image_size)]
    image_size: u32,
    /// Share of images in the val split.
    #[arg(long, default_value_t = SynthConfig::default().val_fraction)]
    val_fraction: f64,
    /// Share of images in the test split.
    #[arg(long, default_value_t = SynthConfig::default().test_fraction)]
    test_fraction: f64,
    /// Replace whatever is in the output folder.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Coco,
    Karpathy,
    Flickr,
}

#[derive(Args)]
pub struct StatsArgs {
    /// An experiment config; its `data:` section says what to load.
    #[arg(long, conflicts_with_all = ["format", "annotations", "images"])]
    config: Option<PathBuf>,
    /// Override a config value: `--set data.max_images_per_split=100` (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE", requires = "config")]
    overrides: Vec<String>,
    /// Without a config: the annotation format.
    #[arg(long, value_enum, requires_all = ["annotations", "images"])]
    format: Option<FormatArg>,
    /// Without a config: caption JSON (coco, karpathy) or caption file (flickr token.txt / results.csv).
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// Without a config: the image folder (karpathy: the root `filepath/filename` is under).
    #[arg(long)]
    images: Option<PathBuf>,
    /// coco: the split this annotation file holds.
    #[arg(long, default_value = "train")]
    split: String,
    /// flickr: list files of the splits (default: Flickr_8k.{train,dev,test}Images.txt beside the captions).
    #[arg(long)]
    train_list: Option<PathBuf>,
    /// flickr: the val (Flickr8k "dev") list file.
    #[arg(long)]
    val_list: Option<PathBuf>,
    /// flickr: the test list file.
    #[arg(long)]
    test_list: Option<PathBuf>,
    /// How much of each image to read: exists, header (default) or decode.
    #[arg(long, value_enum)]
    check_images: Option<CheckArg>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckArg {
    Exists,
    Header,
    Decode,
}

pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Synth(args) => synth(args),
        DataCommand::Stats(args) => stats(args),
        DataCommand::ExportFeedback(args) => export_feedback(args),
    }
}

fn export_feedback(args: ExportFeedbackArgs) -> Result<()> {
    let store = match (&args.store, &args.registry) {
        (Some(store), _) => store.clone(),
        (None, Some(registry)) => registry.join(caption_serve::store::DEFAULT_STORE_FILE),
        (None, None) => bail!("say where the feedback is: --registry DIR or --store FILE"),
    };
    let options = ExportOptions { min_rating: args.min_rating, val_fraction: args.val_fraction, overwrite: args.overwrite };
    let store = caption_serve::store::StoreLocation::parse(&store);
    let summary = caption_serve::feedback::export(&store, &args.out, &options)?;
    println!(
        "{}: {} train / {} val images, {} captions from {} feedback entries ({} rated below {} without a correction, left out)",
        args.out.display(),
        summary.train_images,
        summary.val_images,
        summary.captions,
        summary.feedback_rows,
        summary.left_out,
        args.min_rating
    );
    println!("train on it with the `data:` section in {}", summary.data_yaml.display());
    Ok(())
}

fn synth(args: SynthArgs) -> Result<()> {
    let config = SynthConfig {
        n: args.n,
        seed: args.seed,
        image_size: args.image_size,
        val_fraction: args.val_fraction,
        test_fraction: args.test_fraction,
    };
    let summary = synth::generate(&args.out, &config, args.overwrite)?;
    let counts: Vec<String> = summary.images_per_split.iter().map(|(split, n)| format!("{n} {split}")).collect();
    let verb = if summary.reused { "already there (same parameters)" } else { "written" };
    println!(
        "{}: {verb}: {} images, {} captions, {} words",
        summary.out_dir.display(),
        counts.join(" / "),
        summary.captions,
        summary.vocabulary
    );
    Ok(())
}

fn stats(args: StatsArgs) -> Result<()> {
    let mut data = match (&args.config, args.format) {
        (Some(path), _) => experiment_config::load(path, &args.overrides)?.data,
        (None, Some(format)) => data_config_from_flags(&args, format)?,
        (None, None) => bail!("say what to load: --config FILE, or --format with --annotations and --images"),
    };
    if let Some(check) = args.check_images {
        data.check_images = match check {
            CheckArg::Exists => ImageCheck::Exists,
            CheckArg::Header => ImageCheck::Header,
            CheckArg::Decode => ImageCheck::Decode,
        };
    }
    let dataset = CaptionDataset::load(&data)?;
    let stats = caption_data::stats::compute(&dataset)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!("{stats}");
    }
    Ok(())
}

fn data_config_from_flags(args: &StatsArgs, format: FormatArg) -> Result<DataConfig> {
    let annotations = args.annotations.clone().expect("clap requires --annotations");
    let images = args.images.clone().expect("clap requires --images");
    let mut config = DataConfig::default();
    match format {
        FormatArg::Coco => {
            let split = Split::parse(&args.split).with_context(|| format!("--split {}: expected train, val or test", args.split))?;
            let source = SplitSource { annotations: Some(annotations), images: Some(images), list: None };
            config.format = DataFormat::Coco;
            match split {
                Split::Train => config.train = Some(source),
                Split::Val => config.val = Some(source),
                Split::Test => config.test = Some(source),
            }
        }
        FormatArg::Karpathy => {
            config.format = DataFormat::Karpathy;
            config.annotations = Some(annotations);
            config.images = Some(images);
        }
        FormatArg::Flickr => {
            let dir = annotations.parent().unwrap_or(Path::new(".")).to_path_buf();
            let list = |given: &Option<PathBuf>, flickr8k_name: &str| -> Option<SplitSource> {
                let path = given.clone().or_else(|| Some(dir.join(flickr8k_name)).filter(|p| p.is_file()))?;
                Some(SplitSource { annotations: None, images: None, list: Some(path) })
            };
            config.format = DataFormat::Flickr;
            config.train = list(&args.train_list, "Flickr_8k.trainImages.txt");
            config.val = list(&args.val_list, "Flickr_8k.devImages.txt");
            config.test = list(&args.test_list, "Flickr_8k.testImages.txt");
            if config.train.is_none() && config.val.is_none() && config.test.is_none() {
                bail!(
                    "no split lists found beside {}: pass --train-list / --val-list / --test-list (one image name per line)",
                    annotations.display()
                );
            }
            config.annotations = Some(annotations);
            config.images = Some(images);
        }
    }
    Ok(config)
}
