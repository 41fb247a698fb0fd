//! `caption compare A B`: is system B better than system A on the same images, and by how much
//! with what confidence? Reads per-image scores (`caption score --per-image X.json`, or an
//! evaluation folder holding `per_image.json`), prints Markdown, optionally writes Markdown,
//! HTML and JSON, and can serve as a promotion gate through its exit status.

use anyhow::{Context, Result, bail};
use caption_data::rng::SplitMix64;
use caption_eval::compare::{CompareOptions, MetricComparison, compare_metric};
use clap::Args;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Exit status of `--gate` when B is not significantly better (errors exit with 1).
pub const NOT_BETTER_EXIT: u8 = 10;

#[derive(Args)]
pub struct CompareArgs {
    /// Baseline: per-image scores JSON, or a folder with `per_image.json`.
    a: PathBuf,
    /// Candidate: per-image scores of the same images.
    b: PathBuf,
    /// Metrics to compare (default: every metric both files have).
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// Paired-bootstrap resamples.
    #[arg(long, default_value_t = 10_000)]
    resamples: usize,
    /// Approximate-randomisation permutations.
    #[arg(long, default_value_t = 10_000)]
    permutations: usize,
    /// Significance level (two-sided); the interval is at 1 - alpha.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Seed of the resampling (same seed, same intervals and p-values).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of images shown where the two systems differ most.
    #[arg(long, default_value_t = 10)]
    examples: usize,
    /// Exit with status 0 only if B is significantly better than A on this metric (else 10).
    #[arg(long, value_name = "METRIC")]
    gate: Option<String>,
    /// Also write compare.md, compare.html and compare.json into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One system's per-image rows, keyed by image id.
struct PerImage {
    path: PathBuf,
    order: Vec<String>,
    candidates: HashMap<String, String>,
    scores: HashMap<String, HashMap<String, f64>>,
    metrics: Vec<String>,
}

#[derive(Serialize)]
struct Example {
    image_id: String,
    metric: String,
    score_a: f64,
    score_b: f64,
    caption_a: String,
    caption_b: String,
}

#[derive(Serialize)]
struct Report {
    a: PathBuf,
    b: PathBuf,
    images: usize,
    options: CompareOptions,
    seed: u64,
    metrics: Vec<MetricComparison>,
    examples: Vec<Example>,
}

/// The promotion gate of `caption promote --gate-against`: compares the evaluation folders `a`
/// (the version in production) and `b` (the candidate) with the default settings above, writes
/// compare.md/html/json into `out`, and says whether B is significantly better on `metric`.
pub fn gate(a: &Path, b: &Path, metric: &str, out: &Path) -> Result<bool> {
    let args = CompareArgs {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        metrics: Vec::new(),
        resamples: 10_000,
        permutations: 10_000,
        alpha: 0.05,
        seed: 42,
        examples: 10,
        gate: Some(metric.to_string()),
        out: Some(out.to_path_buf()),
    };
    Ok(run(args)? == 0)
}

pub fn run(args: CompareArgs) -> Result<u8> {
    if !(args.alpha > 0.0 && args.alpha < 0.5) {
        bail!("--alpha {} must be between 0 and 0.5", args.alpha);
    }
    if args.resamples < 100 || args.permutations < 100 {
        bail!("--resamples and --permutations must be at least 100 (10,000 is the default)");
    }
    let a = read_per_image(&args.a)?;
    let b = read_per_image(&args.b)?;
    let common: Vec<String> = a.order.iter().filter(|id| b.scores.contains_key(*id)).cloned().collect();
    if common.len() != a.order.len() || common.len() != b.order.len() {
        bail!(
            "{} has {} images and {} has {}, {} in common: compare evaluations of the same split",
            a.path.display(),
            a.order.len(),
            b.path.display(),
            b.order.len(),
            common.len()
        );
    }
    let metrics: Vec<String> = if args.metrics.is_empty() {
        a.metrics.iter().filter(|m| b.metrics.contains(m)).cloned().collect()
    } else {
        for m in &args.metrics {
            if !a.metrics.contains(m) || !b.metrics.contains(m) {
                bail!("--metrics {m}: not in both files (A has {}, B has {})", a.metrics.join(", "), b.metrics.join(", "));
            }
        }
        args.metrics.clone()
    };
    if metrics.is_empty() {
        bail!("the two files share no metric column");
    }
    if let Some(gate) = &args.gate
        && !metrics.contains(gate)
    {
        bail!("--gate {gate}: not among the compared metrics ({})", metrics.join(", "));
    }
    let options = CompareOptions { bootstrap_resamples: args.resamples, permutations: args.permutations, alpha: args.alpha };
    let mut rng = SplitMix64::new(args.seed);
    let column = |p: &PerImage, metric: &str| -> Vec<f64> { common.iter().map(|id| p.scores[id][metric]).collect() };
    let comparisons: Vec<MetricComparison> =
        metrics.iter().map(|m| compare_metric(m, &column(&a, m), &column(&b, m), &options, &mut || rng.next_u64())).collect();

    // Where they differ most, on the gate metric (or the last one, CIDEr in the usual order).
    let focus = args.gate.clone().unwrap_or_else(|| metrics.last().cloned().unwrap_or_default());
    let mut ranked: Vec<&String> = common.iter().collect();
    ranked.sort_by(|x, y| {
        let delta = |id: &String| (b.scores[id][&focus] - a.scores[id][&focus]).abs();
        delta(y).total_cmp(&delta(x)).then_with(|| x.cmp(y))
    });
    let examples: Vec<Example> = ranked
        .into_iter()
        .take(args.examples)
        .map(|id| Example {
            image_id: id.clone(),
            metric: focus.clone(),
            score_a: a.scores[id][&focus],
            score_b: b.scores[id][&focus],
            caption_a: a.candidates.get(id).cloned().unwrap_or_default(),
            caption_b: b.candidates.get(id).cloned().unwrap_or_default(),
        })
        .collect();

    let report = Report { a: a.path, b: b.path, images: common.len(), options, seed: args.seed, metrics: comparisons, examples };
    let markdown = markdown(&report);
    print!("{markdown}");
    if let Some(dir) = &args.out {
        caption_data::fsutil::write_atomic(&dir.join("compare.md"), markdown.as_bytes())?;
        caption_data::fsutil::write_atomic(&dir.join("compare.html"), html(&report).as_bytes())?;
        caption_data::fsutil::write_atomic(&dir.join("compare.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    match &args.gate {
        Some(gate) => {
            let passed = report.metrics.iter().any(|m| &m.metric == gate && m.b_significantly_better);
            Ok(if passed { 0 } else { NOT_BETTER_EXIT })
        }
        None => Ok(0),
    }
}

/// Numeric per-image fields that are not scores: the caption's confidence is the model's own
/// opinion, not a metric to compare.
const NOT_SCORES: [&str; 2] = ["image_id", "confidence"];

fn read_per_image(path: &Path) -> Result<PerImage> {
    let file = if path.is_dir() { path.join("per_image.json") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&text).with_context(|| {
        format!("{}: not per-image scores (a JSON array of {{\"image_id\", \"candidate\", <metric>: number}})", file.display())
    })?;
    let mut order = Vec::with_capacity(rows.len());
    let mut candidates = HashMap::new();
    let mut scores = HashMap::new();
    let mut metrics: Vec<String> = Vec::new();
    for (index, row) in rows.into_iter().enumerate() {
        let id = match row.get("image_id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => bail!("{}: row {index} has no image_id", file.display()),
        };
        let mut row_scores = HashMap::new();
        for (key, value) in &row {
            if let Some(x) = value.as_f64().filter(|_| !NOT_SCORES.contains(&key.as_str())) {
                row_scores.insert(key.clone(), x);
                if index == 0 {
                    metrics.push(key.clone());
                }
            }
        }
        if let Some(missing) = metrics.iter().find(|m| !row_scores.contains_key(*m)) {
            bail!("{}: row {index} (image {id}) has no {missing} score", file.display());
        }
        if let Some(c) = row.get("candidate").and_then(|c| c.as_str()) {
            candidates.insert(id.clone(), c.to_string());
        }
        if scores.insert(id.clone(), row_scores).is_some() {
            bail!("{}: image {id} appears twice", file.display());
        }
        order.push(id);
    }
    if order.is_empty() {
        bail!("{}: no images", file.display());
    }
    // Keep pycocoevalcap's reporting order where the names are known.
    metrics.sort_by_key(|m| caption_eval::Metric::all_score_names().position(|k| k == m).unwrap_or(usize::MAX));
    Ok(PerImage { path: file, order, candidates, scores, metrics })
}

fn verdict(m: &MetricComparison) -> &'static str {
    if m.b_significantly_better {
        "B better"
    } else if m.b_significantly_worse {
        "B worse"
    } else {
        "no significant difference"
    }
}

fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let level = 100.0 * (1.0 - report.options.alpha);
    let _ = writeln!(out, "# A/B comparison\n");
    let _ = writeln!(out, "- A: `{}`\n- B: `{}`", report.a.display(), report.b.display());
    let _ = writeln!(
        out,
        "- {} images; paired bootstrap ({} resamples) {level:.0}% interval of B - A; approximate randomisation ({} permutations); seed {}\n",
        report.images, report.options.bootstrap_resamples, report.options.permutations, report.seed
    );
    let _ = writeln!(out, "| metric | A | B | B - A | {level:.0}% interval | p | win / tie / loss | verdict |");
    let _ = writeln!(out, "|---|---:|---:|---:|---|---:|---|---|");
    for m in &report.metrics {
        let _ = writeln!(
            out,
            "| {} | {:.4} | {:.4} | {:+.4} | [{:+.4}, {:+.4}] | {:.4} | {} / {} / {} | {} |",
            m.metric,
            m.mean_a,
            m.mean_b,
            m.difference,
            m.interval.0,
            m.interval.1,
            m.p_value,
            m.wins,
            m.ties,
            m.losses,
            verdict(m)
        );
    }
    let _ = writeln!(
        out,
        "\nScores are means of per-image scores (the corpus score for ROUGE-L and CIDEr-D; for BLEU, the mean per-image BLEU).\n"
    );
    if !report.examples.is_empty() {
        let _ = writeln!(out, "## Where they differ most ({})\n", report.examples[0].metric);
        let _ = writeln!(out, "| image | A | caption A | B | caption B |\n|---|---:|---|---:|---|");
        for e in &report.examples {
            let _ = writeln!(
                out,
                "| {} | {:.3} | {} | {:.3} | {} |",
                e.image_id,
                e.score_a,
                e.caption_a.replace('|', "\\|"),
                e.score_b,
                e.caption_b.replace('|', "\\|")
            );
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn html(report: &Report) -> String {
    let level = 100.0 * (1.0 - report.options.alpha);
    let mut rows = String::new();
    for m in &report.metrics {
        let class = if m.b_significantly_better {
            "better"
        } else if m.b_significantly_worse {
            "worse"
        } else {
            "same"
        };
        let _ = write!(
            rows,
            "<tr class=\"{class}\"><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:+.4}</td><td>[{:+.4}, {:+.4}]</td><td>{:.4}</td><td>{} / {} / {}</td><td>{}</td></tr>",
            escape(&m.metric),
            m.mean_a,
            m.mean_b,
            m.difference,
            m.interval.0,
            m.interval.1,
            m.p_value,
            m.wins,
            m.ties,
            m.losses,
            verdict(m)
        );
    }
    let mut examples = String::new();
    for e in &report.examples {
        let _ = write!(
            examples,
            "<tr><td>{}</td><td>{:.3}</td><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
            escape(&e.image_id),
            e.score_a,
            escape(&e.caption_a),
            e.score_b,
            escape(&e.caption_b)
        );
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>A/B comparison</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
tr.better td{{background:#e6f4ea}}tr.worse td{{background:#fce8e6}}code{{background:#f4f4f4}}</style></head><body>\
<h1>A/B comparison</h1><p>A: <code>{}</code><br>B: <code>{}</code></p>\
<p>{} images; paired bootstrap ({} resamples), {level:.0}% interval of B &minus; A; approximate randomisation ({} permutations); seed {}.</p>\
<table><tr><th>metric</th><th>A</th><th>B</th><th>B &minus; A</th><th>{level:.0}% interval</th><th>p</th><th>win / tie / loss</th><th>verdict</th></tr>{rows}</table>\
<p>Scores are means of per-image scores (the corpus score for ROUGE-L and CIDEr-D; for BLEU, the mean per-image BLEU).</p>\
<h2>Where they differ most</h2><table><tr><th>image</th><th>A</th><th>caption A</th><th>B</th><th>caption B</th></tr>{examples}</table>\
</body></html>\n",
        escape(&report.a.display().to_string()),
        escape(&report.b.display().to_string()),
        report.images,
        report.options.bootstrap_resamples,
        report.options.permutations,
        report.seed
    )
}
