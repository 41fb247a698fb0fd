//! Measures SPICE-rb against real SPICE 1.0 output and against Flickr8k-Expert judgments.
//!
//! ```text
//! cargo run --release -p caption-eval --example spice_report -- \
//!     [FIXTURES_DIR] [METEOR_DATA] [--dump N] [--split K]
//! ```
//!
//! FIXTURES_DIR holds `spice_coco_fakecap_half.json`, `flickr8k_expert.json` and
//! `flickr8k_expert_tau_reference.json` (default `../shared/fixtures/metrics` from the
//! workspace); METEOR_DATA as for `Meteor::locate` (default: `target/meteor-data`).
//! `--split K` also prints the COCO table for images 0..K and K..500 separately (fixture
//! order), for tuning on one part and checking on the other. `SPICE_DIFF=Category[:cand|ref|tp]`
//! lists the images (`#k`) whose tuple counts differ from real SPICE's.
//! `SPICE_COUNTS=FILE` writes our tuples and per-category counts per image (JSON lines).

use std::path::PathBuf;
use std::time::Instant;

use caption_eval::TokenizedImage;
use caption_eval::spice::{Category, ImageScores, Spice};
use serde_json::Value;

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// Kendall tau-b and tau-c as scipy computes them (ties by exact equality), O(n^2).
fn kendall(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len();
    let mut s: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            let a = (x[i] - x[j]).partial_cmp(&0.0).unwrap() as i64;
            let b = (y[i] - y[j]).partial_cmp(&0.0).unwrap() as i64;
            s += a * b;
        }
    }
    let ties = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (mut t, mut distinct, mut i) = (0i64, 0usize, 0);
        while i < v.len() {
            let mut j = i;
            while j < v.len() && v[j] == v[i] {
                j += 1;
            }
            let k = (j - i) as i64;
            t += k * (k - 1) / 2;
            distinct += 1;
            i = j;
        }
        (t, distinct)
    };
    let (tx, dx) = ties(x);
    let (ty, dy) = ties(y);
    let n0 = (n * (n - 1) / 2) as i64;
    let tau_b = s as f64 / (((n0 - tx) as f64) * ((n0 - ty) as f64)).sqrt();
    let m = dx.min(dy) as f64;
    let tau_c = 2.0 * s as f64 / ((n * n) as f64 * (m - 1.0) / m);
    (tau_b, tau_c)
}

/// The per-category agreement table over the images in `range`.
fn table(per_image: &[ImageScores], entries: &[Value], range: std::ops::Range<usize>) {
    println!(
        "{:<12} {:>6} {:>7} {:>7} {:>7} {:>8} {:>8} | {:>6} {:>6} {:>6} {:>6} {:>5} {:>5} | {:>5} {:>5}",
        "category", "n", "pearson", "tau_b", "MAE", "mean_rb", "mean_sp", "cand", "cand_sp", "ref", "ref_sp", "tp", "tp_sp", "r_c", "r_r"
    );
    for category in Category::ALL {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let (mut cx, mut cy, mut rx, mut ry) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut tx, mut ty) = (Vec::new(), Vec::new());
        for (ours, e) in per_image[range.clone()].iter().zip(&entries[range.clone()]) {
            let theirs = &e["spice"][category.name()];
            let o = ours.get(category);
            let tp = theirs["tp"].as_f64().unwrap();
            cx.push((o.tp + o.fp) as f64);
            cy.push(tp + theirs["fp"].as_f64().unwrap());
            rx.push((o.tp + o.fn_) as f64);
            ry.push(tp + theirs["fn"].as_f64().unwrap());
            tx.push(o.tp as f64);
            ty.push(tp);
            if let Some(f) = theirs["f"].as_f64()
                && !o.f.is_nan()
            {
                x.push(o.f);
                y.push(f);
            }
        }
        let mae = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).sum::<f64>() / x.len() as f64;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "{:<12} {:>6} {:>7.3} {:>7.3} {:>7.4} {:>8.4} {:>8.4} | {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>5.2} {:>5.2} | {:>5.2} {:>5.2}",
            category.name(),
            x.len(),
            pearson(&x, &y),
            kendall(&x, &y).0,
            mae,
            mean(&x),
            mean(&y),
            mean(&cx),
            mean(&cy),
            mean(&rx),
            mean(&ry),
            mean(&tx),
            mean(&ty),
            pearson(&cx, &cy),
            pearson(&rx, &ry),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dump = args.iter().position(|a| a == "--dump").and_then(|i| args.get(i + 1)).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    let split = args.iter().position(|a| a == "--split").and_then(|i| args.get(i + 1)).and_then(|n| n.parse::<usize>().ok());
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !matches!(args[i - 1].as_str(), "--dump" | "--split")))
        .map(|(_, a)| a)
        .collect();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fixtures = positional.first().map(PathBuf::from).unwrap_or_else(|| workspace.join("../shared/fixtures/metrics"));
    let data = positional.get(1).map(PathBuf::from).unwrap_or_else(|| workspace.join("target/meteor-data"));
    let start = Instant::now();
    let spice = Spice::load(&data).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("loaded synonyms in {:.2} s", start.elapsed().as_secs_f64());

    // (a) Real SPICE 1.0 on 500 COCO images.
    let real: Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("spice_coco_fakecap_half.json")).expect("fixture")).expect("json");
    let entries = real["images"].as_array().expect("images");
    let images: Vec<TokenizedImage> = entries
        .iter()
        .map(|e| TokenizedImage {
            candidate: e["test"].as_str().unwrap().to_string(),
            references: e["refs"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect(),
        })
        .collect();
    let start = Instant::now();
    let scores = spice.score(&images);
    eprintln!("scored {} COCO images in {:.3} s", images.len(), start.elapsed().as_secs_f64());
    let real_corpus = real["meta"]["corpus_SPICE_this_half"].as_f64().unwrap();
    println!("COCO fakecap half (500 images): SPICE-rb corpus {:.4}, real SPICE {:.4}", scores.corpus, real_corpus);
    table(&scores.per_image, entries, 0..entries.len());
    if let Some(k) = split.filter(|&k| k > 0 && k < entries.len()) {
        // A hold-out: tune on the first K images (fixture order), check on the rest.
        for range in [0..k, k..entries.len()] {
            let real: Vec<f64> = entries[range.clone()].iter().map(|e| e["spice"]["All"]["f"].as_f64().unwrap()).collect();
            let ours: Vec<f64> = scores.per_image[range.clone()].iter().map(|s| s.f()).collect();
            println!(
                "\nimages {}-{}: SPICE-rb corpus {:.4}, real SPICE {:.4} ({:+.4})",
                range.start,
                range.end - 1,
                caption_eval::numpy_mean::numpy_mean(&ours),
                caption_eval::numpy_mean::numpy_mean(&real),
                caption_eval::numpy_mean::numpy_mean(&ours) - caption_eval::numpy_mean::numpy_mean(&real),
            );
            table(&scores.per_image, entries, range);
        }
    }
    if let Ok(path) = std::env::var("SPICE_COUNTS") {
        // One JSON line per image: our tuples and per-category counts, for offline analysis.
        let mut out = String::new();
        for (k, image) in images.iter().enumerate() {
            let (cand, refs) = spice.graph_tuples(&image.candidate, &image.references);
            let counts: serde_json::Map<String, Value> = Category::ALL
                .into_iter()
                .map(|c| {
                    let s = scores.per_image[k].get(c);
                    (c.name().to_string(), serde_json::json!([s.tp, s.fp, s.fn_]))
                })
                .collect();
            out.push_str(&serde_json::json!({"k": k, "cand": cand, "refs": refs, "counts": counts}).to_string());
            out.push('\n');
        }
        std::fs::write(&path, out).expect("write SPICE_COUNTS");
    }
    if let Ok(cat) = std::env::var("SPICE_DIFF") {
        // Candidates whose tuple count in a category differs from real SPICE's.
        let (cat, side) = cat.split_once(':').unwrap_or((cat.as_str(), "cand"));
        let category = Category::ALL.into_iter().find(|c| c.name() == cat).expect("category");
        for (k, e) in entries.iter().enumerate() {
            let o = scores.per_image[k].get(category);
            let t = &e["spice"][category.name()];
            let real_cand = t["tp"].as_u64().unwrap() + t["fp"].as_u64().unwrap();
            let real_ref = t["tp"].as_u64().unwrap() + t["fn"].as_u64().unwrap();
            let ours = (o.tp + o.fp) as u64;
            let ours_ref = (o.tp + o.fn_) as u64;
            let (cand, refs) = spice.graph_tuples(&images[k].candidate, &images[k].references);
            if side == "tp" && o.tp as u64 != t["tp"].as_u64().unwrap() {
                println!("#{k} tp {} vs {}: {} | {} || {}", o.tp, t["tp"], images[k].candidate, cand.join(" "), refs.join(" "));
            }
            if side == "cand" && ours != real_cand {
                println!("#{k} {ours} vs {real_cand}: {} | {}", images[k].candidate, cand.join(" "));
            }
            if side == "ref" && ours_ref != real_ref {
                let filtered: Vec<&String> = refs
                    .iter()
                    .filter(|t| match category {
                        Category::Object => !t.contains(", "),
                        Category::Relation => t.matches(", ").count() == 2,
                        _ => t.matches(", ").count() == 1,
                    })
                    .collect();
                println!("#{k} {ours_ref} vs {real_ref}: {} | {:?}", images[k].references.join(" // "), filtered);
            }
        }
    }
    for (k, e) in entries.iter().enumerate().take(dump) {
        let image = &images[k];
        let (cand, refs) = spice.graph_tuples(&image.candidate, &image.references);
        let o = scores.per_image[k].get(Category::All);
        let t = &e["spice"]["All"];
        println!(
            "\n#{k} {} | ours tp {} cand {} ref {} f {:.3} | real tp {} cand {} ref {} f {:.3}",
            image.candidate,
            o.tp,
            o.tp + o.fp,
            o.tp + o.fn_,
            o.f,
            t["tp"],
            t["tp"].as_u64().unwrap() + t["fp"].as_u64().unwrap(),
            t["tp"].as_u64().unwrap() + t["fn"].as_u64().unwrap(),
            t["f"].as_f64().unwrap()
        );
        println!("  tags: {}", spice.explain(&image.candidate));
        println!("  cand: {}", cand.join(" "));
        for r in &image.references {
            println!("  ref: {r}\n    {}", spice.explain(r));
        }
        println!("  refs: {}", refs.join(" "));
    }

    if let Ok(tokens) = std::env::var("SPICE_BENCH") {
        // Speed: the first 5,000 images of Flickr8k.token.txt, leave-one-out (caption #0
        // against #1-#4), tokenized beforehand.
        let text = std::fs::read_to_string(&tokens).expect("Flickr8k.token.txt");
        let mut by_image: Vec<(String, Vec<String>)> = Vec::new();
        for line in text.lines() {
            let Some((key, caption)) = line.split_once('\t') else {
                continue;
            };
            let image = key.split('#').next().unwrap_or(key).to_string();
            match by_image.last_mut() {
                Some((id, captions)) if *id == image => captions.push(caption.to_string()),
                _ => by_image.push((image, vec![caption.to_string()])),
            }
        }
        by_image.truncate(5000);
        let flat: Vec<&str> = by_image.iter().flat_map(|(_, c)| c.iter().map(String::as_str)).collect();
        let mut tokenized = caption_eval::tokenizer::tokenize_captions(&flat).into_iter();
        let images: Vec<TokenizedImage> = by_image
            .iter()
            .map(|(_, c)| {
                let mut all: Vec<String> = tokenized.by_ref().take(c.len()).collect();
                let candidate = all.remove(0);
                TokenizedImage { candidate, references: all }
            })
            .collect();
        for _ in 0..3 {
            let start = Instant::now();
            let scores = spice.score(&images);
            println!(
                "bench: {} Flickr8k images (1 candidate, 4 references) in {:.3} s, SPICE-rb {:.4}",
                images.len(),
                start.elapsed().as_secs_f64(),
                scores.corpus
            );
        }
    }

    // (b) Flickr8k-Expert: Kendall tau-c against the 3 expert scores (flattened).
    let expert: Value = serde_json::from_slice(&std::fs::read(fixtures.join("flickr8k_expert.json")).expect("fixture")).expect("json");
    let pairs = expert.as_array().expect("pairs");
    let images: Vec<TokenizedImage> = pairs
        .iter()
        .map(|p| TokenizedImage {
            candidate: p["cand_tok"].as_str().unwrap().to_string(),
            references: p["refs_tok"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect(),
        })
        .collect();
    let start = Instant::now();
    let scores = spice.score(&images);
    let elapsed = start.elapsed().as_secs_f64();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (s, p) in scores.per_image.iter().zip(pairs) {
        for h in p["human_scores"].as_array().unwrap() {
            x.push(s.f());
            y.push(h.as_f64().unwrap());
        }
    }
    let (tau_b, tau_c) = kendall(&x, &y);
    println!(
        "\nFlickr8k-Expert ({} pairs, {} points, scored in {elapsed:.3} s): SPICE-rb tau_c x100 = {:.2}, tau_b x100 = {:.2} (published SPICE 44.9)",
        pairs.len(),
        x.len(),
        100.0 * tau_c,
        100.0 * tau_b
    );
}
