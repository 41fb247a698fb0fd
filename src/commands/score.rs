//! `caption score`: pycocoevalcap's numbers for a results file against reference captions,
//! without Java.

use anyhow::{Context, Result, bail};
use caption_data::Split;
use caption_data::loaders;
use caption_eval::meteor::{CacheUse, Meteor};
use caption_eval::{Evaluation, Metric};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ScoreArgs {
    /// Reference captions: MS-COCO caption JSON, Karpathy split JSON, or Flickr token.txt / results.csv.
    #[arg(long)]
    refs: PathBuf,
    /// Generated captions in the MS-COCO results format: `[{"image_id": ..., "caption": "..."}]`.
    #[arg(long)]
    results: PathBuf,
    /// Which format `--refs` is in (default: guessed from the file).
    #[arg(long, value_enum)]
    refs_format: Option<RefsFormat>,
    /// Karpathy refs: score only this split's images (`--split test`); default: every image.
    #[arg(long)]
    split: Option<String>,
    /// Metrics to compute, comma-separated (default: BLEU, METEOR if its data is found, ROUGE-L,
    /// CIDEr-D; `spice-rb` adds the SPICE approximation).
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<MetricArg>,
    /// METEOR's data: the pycocoevalcap 1.2 wheel (`pip download --no-deps pycocoevalcap==1.2`),
    /// a folder holding it, or an installed pycocoevalcap package folder. Default:
    /// `$CAPTION_METEOR_DATA`, then an installed pycocoevalcap.
    #[arg(long, value_name = "PATH")]
    meteor_data: Option<PathBuf>,
    /// Write per-image scores here: `.csv`, `.json` or `.parquet`.
    #[arg(long, value_name = "OUT")]
    per_image: Option<PathBuf>,
    /// Print the corpus scores as JSON with pycocoevalcap's key names.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum RefsFormat {
    Coco,
    Karpathy,
    Flickr,
}

#[derive(Clone, Copy, ValueEnum)]
enum MetricArg {
    /// BLEU-1..4
    Bleu,
    /// METEOR 1.5 (needs pycocoevalcap's METEOR data, see --meteor-data)
    Meteor,
    /// ROUGE-L
    #[value(alias = "rouge_l")]
    Rouge,
    /// CIDEr-D
    #[value(alias = "cider-d", alias = "cider_d")]
    Cider,
    /// SPICE-rb: SPICE-style scene-graph F1 with a rule-based parser, an approximation of SPICE
    /// reported under its own name (docs/spice.md); needs METEOR's WordNet data. Only when asked for.
    #[value(name = "spice-rb")]
    SpiceRb,
}

impl MetricArg {
    fn metric(self) -> Metric {
        match self {
            MetricArg::Bleu => Metric::Bleu,
            MetricArg::Meteor => Metric::Meteor,
            MetricArg::Rouge => Metric::Rouge,
            MetricArg::Cider => Metric::Cider,
            MetricArg::SpiceRb => Metric::Spice,
        }
    }
}

#[derive(Deserialize)]
struct ResultEntry {
    image_id: serde_json::Value,
    caption: String,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let explicit = !args.metrics.is_empty();
    let mut metrics: Vec<Metric> = if explicit { args.metrics.iter().map(|m| m.metric()).collect() } else { Metric::REPORT_ORDER.to_vec() };
    metrics.dedup();
    // METEOR's data loads while the captions are read.
    let wants_meteor = metrics.contains(&Metric::Meteor) || metrics.contains(&Metric::Spice);
    let (captions, located) = std::thread::scope(|scope| {
        let located = wants_meteor.then(|| scope.spawn(|| Meteor::locate(args.meteor_data.as_deref())));
        let captions = read_references(&args).and_then(|references| Ok((references, read_results(&args.results)?)));
        (captions, located.map(|thread| thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))))
    });
    let ((order, references), candidates) = captions?;
    // pycocoevalcap scores the ground-truth images that have a result, in ground-truth order.
    let image_ids: Vec<String> = order.into_iter().filter(|id| candidates.contains_key(id)).collect();
    if image_ids.is_empty() {
        bail!(
            "{}: none of its image ids appear in {} (are they the same split, and ids written the same way?)",
            args.results.display(),
            args.refs.display()
        );
    }
    // METEOR needs data pycocoevalcap ships; asked for by name it must be there, by default it
    // is left out with a warning (never replaced by a different METEOR).
    let meteor = match located {
        Some(Ok(meteor)) => {
            if let CacheUse::Built(file) = meteor.cache_use() {
                eprintln!("METEOR's data prepared once into {} (later runs load it in milliseconds)", file.display());
            }
            Some(meteor)
        }
        Some(Err(e)) if explicit || args.meteor_data.is_some() => return Err(e.into()),
        Some(Err(e)) => {
            eprintln!("warning: {e}; scoring without METEOR");
            metrics.retain(|m| *m != Metric::Meteor);
            None
        }
        None => None,
    };
    let evaluation = caption_eval::evaluate_with(&image_ids, &references, &candidates, &metrics, meteor.as_ref())
        .with_context(|| format!("cannot score {} against {}", args.results.display(), args.refs.display()))?;
    if let Some(out) = &args.per_image {
        write_per_image(out, &evaluation)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation.corpus)?);
    } else {
        println!("{} images scored", evaluation.images.len());
        for (name, value) in evaluation.corpus.iter() {
            println!("{name:<8} {value:.4}");
        }
    }
    // The process ends here: freeing METEOR's tables would take longer than exiting.
    std::mem::forget(meteor);
    let shifts = evaluation.line_break_shifts;
    if shifts.references + shifts.candidates > 0 {
        eprintln!(
            "warning: captions contain line breaks (\\r, U+2028, ...) that pycocoevalcap's tokenizer treats as new \
             lines, shifting later captions ({} in references, {} in results); these scores reproduce that",
            shifts.references, shifts.candidates
        );
    }
    Ok(())
}

/// Reference captions by image id.
type References = HashMap<String, Vec<String>>;

/// The references per image id, and the images in file order.
fn read_references(args: &ScoreArgs) -> Result<(Vec<String>, References)> {
    let path = &args.refs;
    let format = match args.refs_format {
        Some(format) => format,
        None => guess_format(path)?,
    };
    // Only captions are needed: image paths are resolved but never opened.
    let nowhere = Path::new("");
    let samples = match format {
        RefsFormat::Coco => loaders::coco::load(path, nowhere, Split::Test)?.0,
        RefsFormat::Karpathy => loaders::karpathy::load(path, nowhere, true)?.0,
        RefsFormat::Flickr => loaders::flickr::load(path, nowhere, &[])?.0,
    };
    let split = match &args.split {
        Some(name) => Some(Split::parse(name).with_context(|| format!("--split {name}: expected train, val or test"))?),
        None => None,
    };
    let mut order = Vec::with_capacity(samples.len());
    let mut references = HashMap::with_capacity(samples.len());
    for sample in samples {
        if split.is_some_and(|s| s != sample.split) {
            continue;
        }
        order.push(sample.image_id.clone());
        references.insert(sample.image_id, sample.captions);
    }
    Ok((order, references))
}

fn guess_format(path: &Path) -> Result<RefsFormat> {
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if extension == "txt" || extension == "csv" {
        return Ok(RefsFormat::Flickr);
    }
    // Peek at the JSON's shape: COCO has `annotations`, Karpathy has `images[].sentences`.
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
    if value.get("annotations").is_some() {
        Ok(RefsFormat::Coco)
    } else if value["images"].get(0).and_then(|i| i.get("sentences")).is_some() {
        Ok(RefsFormat::Karpathy)
    } else {
        bail!(
            "{}: neither MS-COCO caption JSON (`annotations`) nor Karpathy JSON (`images[].sentences`); pass --refs-format",
            path.display()
        )
    }
}

fn read_results(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let entries: Vec<ResultEntry> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not an MS-COCO results file (`[{{\"image_id\": ..., \"caption\": \"...\"}}]`)", path.display()))?;
    let mut candidates = HashMap::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let id = match &entry.image_id {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => bail!("{}: entry {index}: image_id {other} is neither a number nor a string", path.display()),
        };
        if candidates.insert(id.clone(), entry.caption).is_some() {
            bail!("{}: image {id} has more than one caption; the metrics score exactly one candidate per image", path.display());
        }
    }
    Ok(candidates)
}

fn write_per_image(path: &Path, evaluation: &Evaluation<String>) -> Result<()> {
    use polars::prelude::*;
    let ids: Vec<&str> = evaluation.images.iter().map(|i| i.image_id.as_str()).collect();
    let captions: Vec<&str> = evaluation.images.iter().map(|i| i.candidate.as_str()).collect();
    let mut columns: Vec<Column> = vec![Column::new("image_id".into(), ids), Column::new("candidate".into(), captions)];
    for (name, _) in evaluation.corpus.iter() {
        let values: Vec<f64> = evaluation.images.iter().map(|i| i.scores.get(name).unwrap_or(f64::NAN)).collect();
        columns.push(Column::new(name.into(), values));
    }
    let mut table = DataFrame::new_infer_height(columns)?;
    let mut bytes = Vec::new();
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "csv" => CsvWriter::new(&mut bytes).finish(&mut table)?,
        "json" => JsonWriter::new(&mut bytes).with_json_format(JsonFormat::Json).finish(&mut table)?,
        "parquet" => {
            ParquetWriter::new(&mut bytes).finish(&mut table)?;
        }
        _ => bail!("--per-image {}: use a .csv, .json or .parquet file name", path.display()),
    }
    caption_data::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}
