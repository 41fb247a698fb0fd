//! Evaluation reports a person reads: `report.md` and a self-contained `report.html` (images
//! inlined as data URIs, charts as inline SVG, no scripts or external files) with the corpus
//! scores, the best and worst captioned images, a sample of the rest, the caption-length
//! distribution of the model against the references, and how much of the vocabulary the model
//! uses. The numbers come from an [`crate::Evaluation`]; this module only lays them out, so it
//! knows nothing of models or images beyond an optional thumbnail per image.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use crate::tokenizer::tokenize_caption;

/// One scored image.
#[derive(Debug, Clone)]
pub struct ReportImage {
    pub image_id: String,
    /// The generated caption, as generated.
    pub candidate: String,
    /// The reference captions, as written.
    pub references: Vec<String>,
    /// Per-image scores, pycocoevalcap's names.
    pub scores: Vec<(String, f64)>,
    /// An image to show (`data:image/jpeg;base64,...`), if any.
    pub thumbnail: Option<String>,
    /// The caption's scored tokens (the words, then `<eos>`) with the model's probability of
    /// each, when known.
    pub tokens: Vec<(String, f64)>,
    /// Where the model looked for each word (a figure, `data:image/...`), if any.
    pub attention: Option<String>,
}

impl ReportImage {
    fn score(&self, name: &str) -> Option<f64> {
        self.scores.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }
}

/// What the report is about.
#[derive(Debug, Clone)]
pub struct ReportHeader {
    pub title: String,
    /// `key: value` lines shown under the title (checkpoint, split, decoding, ...).
    pub facts: Vec<(String, String)>,
    /// Corpus scores, pycocoevalcap's names and order.
    pub corpus: Vec<(String, f64)>,
}

/// The score images are ranked by: CIDEr-D when present, otherwise the first one.
fn ranking_metric(images: &[ReportImage]) -> Option<String> {
    let first = images.first()?;
    if first.score("CIDEr").is_some() { Some("CIDEr".into()) } else { first.scores.first().map(|(n, _)| n.clone()) }
}

/// Images sorted best first by the ranking metric (ties by id, so the order is stable).
fn ranked(images: &[ReportImage]) -> (Option<String>, Vec<&ReportImage>) {
    let metric = ranking_metric(images);
    let mut order: Vec<&ReportImage> = images.iter().collect();
    if let Some(metric) = &metric {
        order.sort_by(|a, b| {
            let (x, y) = (a.score(metric).unwrap_or(f64::NAN), b.score(metric).unwrap_or(f64::NAN));
            y.total_cmp(&x).then_with(|| a.image_id.cmp(&b.image_id))
        });
    }
    (metric, order)
}

/// Every `len / count`-th image in input order: a sample spread over the whole split.
fn spread_sample(images: &[ReportImage], count: usize) -> Vec<&ReportImage> {
    if images.is_empty() || count == 0 {
        return Vec::new();
    }
    let stride = (images.len() / count.min(images.len())).max(1);
    images.iter().step_by(stride).take(count).collect()
}

/// The report's example sections, titled: the best and the worst `examples` images by the
/// ranking metric (when there is one), then a sample across the split.
fn sections(images: &[ReportImage], examples: usize) -> Vec<(String, Vec<&ReportImage>)> {
    let (metric, order) = ranked(images);
    let mut sections = Vec::new();
    if let Some(metric) = &metric {
        let best: Vec<&ReportImage> = order.iter().take(examples).copied().collect();
        let worst: Vec<&ReportImage> = order.iter().rev().take(examples).copied().collect();
        sections.push((format!("Best {} by {metric}", best.len()), best));
        sections.push((format!("Worst {} by {metric}", worst.len()), worst));
    }
    sections.push(("A sample across the split".to_string(), spread_sample(images, examples)));
    sections
}

/// The ids of the images the report shows (best, worst and sample), so that a caller can make
/// thumbnails for those alone.
pub fn featured_ids(images: &[ReportImage], examples: usize) -> HashSet<String> {
    sections(images, examples).into_iter().flat_map(|(_, list)| list.into_iter().map(|i| i.image_id.clone())).collect()
}

/// Images whose attention figures the report shows: the best and the worst few.
pub fn attention_ids(images: &[ReportImage], each: usize) -> HashSet<String> {
    let (_, order) = ranked(images);
    order.iter().take(each).chain(order.iter().rev().take(each)).map(|i| i.image_id.clone()).collect()
}

/// Words seen at least this often are listed among the least sure ones.
const MIN_WORD_COUNT: usize = 5;
/// How many least sure words are listed.
const LEAST_SURE_WORDS: usize = 20;

/// The words the model is least sure of over the split: mean probability it gave the word where
/// it wrote it, and how often it did (words written at least [`MIN_WORD_COUNT`] times).
fn least_sure_words(images: &[ReportImage]) -> Vec<(String, f64, usize)> {
    let mut totals: HashMap<&str, (f64, usize)> = HashMap::new();
    for (word, probability) in images.iter().flat_map(|i| i.tokens.iter()) {
        if word.starts_with('<') && word.ends_with('>') {
            continue;
        }
        let total = totals.entry(word).or_default();
        total.0 += probability;
        total.1 += 1;
    }
    let mut words: Vec<(String, f64, usize)> = totals
        .into_iter()
        .filter(|&(_, (_, count))| count >= MIN_WORD_COUNT)
        .map(|(word, (sum, count))| (word.to_string(), sum / count as f64, count))
        .collect();
    words.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    words.truncate(LEAST_SURE_WORDS);
    words
}

/// Caption lengths in PTB tokens (as the metrics count them).
fn length(caption: &str) -> usize {
    tokenize_caption(caption).split_whitespace().count()
}

/// `length -> (fraction of candidates, fraction of references)`.
fn length_histogram(images: &[ReportImage]) -> BTreeMap<usize, (f64, f64)> {
    let mut counts: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    let mut references = 0usize;
    for image in images {
        counts.entry(length(&image.candidate)).or_default().0 += 1;
        for reference in &image.references {
            counts.entry(length(reference)).or_default().1 += 1;
            references += 1;
        }
    }
    let (n, r) = (images.len().max(1) as f64, references.max(1) as f64);
    counts.into_iter().map(|(len, (c, rf))| (len, (c as f64 / n, rf as f64 / r))).collect()
}

/// What the model says and how varied it is.
struct VocabularyUse {
    candidate_words: usize,
    reference_words: usize,
    /// Words the model uses that no reference of the split contains.
    unseen: usize,
    distinct_captions: usize,
    mean_candidate_length: f64,
    mean_reference_length: f64,
    most_common: Vec<(String, usize)>,
}

fn vocabulary_use(images: &[ReportImage]) -> VocabularyUse {
    let mut candidate_counts: HashMap<String, usize> = HashMap::new();
    let mut reference_words: HashSet<String> = HashSet::new();
    let (mut candidate_tokens, mut reference_tokens, mut references) = (0usize, 0usize, 0usize);
    for image in images {
        for word in tokenize_caption(&image.candidate).split_whitespace() {
            *candidate_counts.entry(word.to_string()).or_default() += 1;
            candidate_tokens += 1;
        }
        for reference in &image.references {
            for word in tokenize_caption(reference).split_whitespace() {
                reference_words.insert(word.to_string());
                reference_tokens += 1;
            }
            references += 1;
        }
    }
    let mut most_common: Vec<(String, usize)> = candidate_counts.iter().map(|(w, &c)| (w.clone(), c)).collect();
    most_common.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    most_common.truncate(15);
    let distinct: HashSet<&str> = images.iter().map(|i| i.candidate.as_str()).collect();
    VocabularyUse {
        candidate_words: candidate_counts.len(),
        reference_words: reference_words.len(),
        unseen: candidate_counts.keys().filter(|w| !reference_words.contains(*w)).count(),
        distinct_captions: distinct.len(),
        mean_candidate_length: candidate_tokens as f64 / images.len().max(1) as f64,
        mean_reference_length: reference_tokens as f64 / references.max(1) as f64,
        most_common,
    }
}

/// The vocabulary section's rows, for both reports.
fn vocabulary_facts(images: &[ReportImage]) -> Vec<(&'static str, String)> {
    let v = vocabulary_use(images);
    vec![
        (
            "distinct words",
            format!("model {}, references {} ({} model words appear in no reference)", v.candidate_words, v.reference_words, v.unseen),
        ),
        ("distinct captions", format!("{} of {}", v.distinct_captions, images.len())),
        ("mean length", format!("model {:.2}, references {:.2}", v.mean_candidate_length, v.mean_reference_length)),
        ("most used by the model", v.most_common.iter().map(|(w, c)| format!("{w} ({c})")).collect::<Vec<_>>().join(", ")),
    ]
}

fn scores_line(image: &ReportImage) -> String {
    image.scores.iter().map(|(n, v)| format!("{n} {v:.3}")).collect::<Vec<_>>().join(", ")
}

/// The Markdown report; `examples` images in each of the best, worst and sample sections.
pub fn markdown(header: &ReportHeader, images: &[ReportImage], examples: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", header.title);
    for (key, value) in &header.facts {
        let _ = writeln!(out, "- **{key}**: {value}");
    }
    let _ = writeln!(out, "- **images**: {}\n", images.len());
    out += "| metric | score |\n|---|---:|\n";
    for (name, value) in &header.corpus {
        let _ = writeln!(out, "| {name} | {value:.4} |");
    }
    for (title, list) in sections(images, examples) {
        let _ = writeln!(out, "\n## {title}\n");
        for image in list {
            let _ = writeln!(out, "**{}** ({})  \nmodel: {}  ", image.image_id, scores_line(image), image.candidate);
            for reference in &image.references {
                let _ = writeln!(out, "ref: {reference}  ");
            }
            out.push('\n');
        }
    }

    let _ = writeln!(out, "## Caption length (PTB tokens)\n\n| length | model | references |\n|---:|---:|---:|");
    for (len, (c, r)) in length_histogram(images) {
        let _ = writeln!(out, "| {len} | {:.1}% | {:.1}% |", c * 100.0, r * 100.0);
    }
    out += "\n## Vocabulary\n\n";
    for (name, value) in vocabulary_facts(images) {
        let _ = writeln!(out, "- {name}: {value}");
    }
    let words = least_sure_words(images);
    if !words.is_empty() {
        let _ = writeln!(out, "\n## Least sure words\n\n| word | mean probability | times |\n|---|---:|---:|");
        for (word, probability, count) in &words {
            let _ = writeln!(out, "| {} | {probability:.3} | {count} |", word.replace('|', "\\|"));
        }
    }
    out
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            _ => out.push(c),
        }
    }
    out
}

/// The attention figures, best first, each under its caption and scores.
fn html_attention(out: &mut String, images: &[ReportImage]) {
    let (_, order) = ranked(images);
    let shown: Vec<&&ReportImage> = order.iter().filter(|i| i.attention.as_deref().is_some_and(|s| s.starts_with("data:image/"))).collect();
    if shown.is_empty() {
        return;
    }
    out.push_str("<h2>Where the model looked</h2><p>Each word of the caption with the model's attention over the image and the word's probability (best and worst images).</p>\n");
    for image in shown {
        let _ = writeln!(
            out,
            "<figure class=\"wide\"><figcaption><span class=\"id\">{}</span> <span class=\"model\">{}</span> <span class=\"scores\">{}</span></figcaption><img src=\"{}\" alt=\"attention, image {}\"></figure>",
            escape(&image.image_id),
            escape(&image.candidate),
            escape(&scores_line(image)),
            escape(image.attention.as_deref().unwrap_or_default()),
            escape(&image.image_id)
        );
    }
}

fn html_cards(out: &mut String, title: &str, list: &[&ReportImage]) {
    let _ = writeln!(out, "<h2>{}</h2>\n<div class=\"cards\">", escape(title));
    for image in list {
        out.push_str("<figure>");
        if let Some(src) = &image.thumbnail {
            // Only data URIs are written here; anything else would make the page depend on files.
            if src.starts_with("data:image/") {
                let _ = write!(out, "<img src=\"{}\" alt=\"image {}\">", escape(src), escape(&image.image_id));
            }
        }
        let _ = write!(
            out,
            "<figcaption><div class=\"id\">{}</div><div class=\"model\">{}</div><div class=\"scores\">{}</div><ul>",
            escape(&image.image_id),
            escape(&image.candidate),
            escape(&scores_line(image))
        );
        for reference in &image.references {
            let _ = write!(out, "<li>{}</li>", escape(reference));
        }
        out.push_str("</ul></figcaption></figure>\n");
    }
    out.push_str("</div>\n");
}

/// Paired bars (model, references) per caption length, as inline SVG.
fn length_chart(histogram: &BTreeMap<usize, (f64, f64)>) -> String {
    let peak = histogram.values().map(|&(c, r)| c.max(r)).fold(0.0, f64::max).max(1e-9);
    let (bar, gap, height) = (9.0, 6.0, 160.0);
    let width = histogram.len() as f64 * (2.0 * bar + gap) + 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" role=\"img\" aria-label=\"caption length histogram\">",
        height + 30.0
    );
    for (i, (len, (c, r))) in histogram.iter().enumerate() {
        let x = 20.0 + i as f64 * (2.0 * bar + gap);
        for (k, (value, class)) in [(*c, "m"), (*r, "r")].into_iter().enumerate() {
            let h = value / peak * height;
            let _ = write!(
                svg,
                "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{h:.1}\"><title>{len} tokens: {:.1}%</title></rect>",
                x + k as f64 * bar,
                height - h,
                value * 100.0
            );
        }
        let _ = write!(svg, "<text x=\"{:.1}\" y=\"{:.0}\">{len}</text>", x + bar, height + 16.0);
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1em}
figure{margin:0;border:1px solid #ddd;border-radius:6px;padding:.6em;background:#fafafa}figure img{width:100%;border-radius:4px}
figure.wide{margin:0 0 1em}figure.wide img{width:auto;max-width:100%}
.id{color:#777;font-size:.85em}.model{font-weight:600;margin:.2em 0}.scores{color:#555;font-size:.85em}ul{padding-left:1.2em;margin:.3em 0;color:#444}
rect.m{fill:#3b6fb6}rect.r{fill:#c9a227}text{font-size:10px;text-anchor:middle;fill:#555}.legend span{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em}";

/// The self-contained HTML report (see the module docs).
pub fn html(header: &ReportHeader, images: &[ReportImage], examples: usize) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n<table>",
        escape(&header.title),
        escape(&header.title)
    );
    for (key, value) in &header.facts {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(key), escape(value));
    }
    let _ = writeln!(out, "<tr><th>images</th><td>{}</td></tr></table>", images.len());
    out.push_str("<h2>Scores</h2><table><tr><th>metric</th><th>score</th></tr>");
    for (name, value) in &header.corpus {
        let _ = write!(out, "<tr><td>{}</td><td class=\"n\">{value:.4}</td></tr>", escape(name));
    }
    out.push_str("</table>\n");
    for (title, list) in sections(images, examples) {
        html_cards(&mut out, &title, &list);
    }

    let histogram = length_histogram(images);
    let _ = writeln!(
        out,
        "<h2>Caption length (PTB tokens)</h2><p class=\"legend\"><span style=\"background:#3b6fb6\"></span>model<span style=\"background:#c9a227\"></span>references (share of captions)</p>{}",
        length_chart(&histogram)
    );
    html_attention(&mut out, images);
    let words = least_sure_words(images);
    if !words.is_empty() {
        let _ = write!(
            out,
            "<h2>Least sure words</h2><p>Mean probability the model gave each word where it wrote it (words written at least \
             {MIN_WORD_COUNT} times).</p><table><tr><th>word</th><th>mean probability</th><th>times</th></tr>"
        );
        for (word, probability, count) in &words {
            let _ = write!(out, "<tr><td>{}</td><td class=\"n\">{probability:.3}</td><td class=\"n\">{count}</td></tr>", escape(word));
        }
        out.push_str("</table>\n");
    }
    out.push_str("<h2>Vocabulary</h2><table>");
    for (name, value) in vocabulary_facts(images) {
        let _ = write!(out, "<tr><th>{name}</th><td>{}</td></tr>", escape(&value));
    }
    out.push_str("</table>\n");
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, candidate: &str, cider: f64) -> ReportImage {
        ReportImage {
            image_id: id.into(),
            candidate: candidate.into(),
            references: vec!["a red circle".into(), "a circle that is red".into()],
            scores: vec![("Bleu_4".into(), 0.5), ("CIDEr".into(), cider)],
            thumbnail: Some("data:image/png;base64,AAAA".into()),
            tokens: candidate.split(' ').map(|w| (w.to_string(), if w == "circle" { 0.2 } else { 0.9 })).collect(),
            attention: None,
        }
    }

    fn header() -> ReportHeader {
        ReportHeader {
            title: "Test <split>".into(),
            facts: vec![("checkpoint".into(), "runs/x".into())],
            corpus: vec![("CIDEr".into(), 1.25)],
        }
    }

    #[test]
    fn ranks_and_summarises() {
        let images = vec![image("1", "a red circle", 2.0), image("2", "a blue <b>square</b>", 0.1), image("3", "a red circle", 1.0)];
        let md = markdown(&header(), &images, 1);
        let best = md.find("## Best 1 by CIDEr").unwrap();
        let worst = md.find("## Worst 1 by CIDEr").unwrap();
        assert!(md[best..worst].contains("**1**") && md[worst..].contains("**2**"), "{md}");
        assert!(md.contains("| CIDEr | 1.2500 |"));
        assert!(md.contains("distinct captions: 2 of 3"), "{md}");
        // "a red circle" is 3 tokens for the model twice, once 4 (PTB drops < and > ... keeps words).
        assert!(md.contains("| 3 | 66.7% |"), "{md}");

        let featured = featured_ids(&images, 1);
        assert!(featured.contains("1") && featured.contains("2"), "{featured:?}");

        let html = html(&header(), &images, 1);
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
        assert!(html.contains("Test &lt;split&gt;") && !html.contains("<b>square</b>"), "text is escaped");
        assert!(html.contains("src=\"data:image/png;base64,AAAA\""));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn lists_the_least_sure_words_and_shows_attention_figures() {
        let mut images: Vec<ReportImage> = (0..6).map(|k| image(&k.to_string(), "a red circle", k as f64)).collect();
        images[5].attention = Some("data:image/jpeg;base64,BBBB".into());
        let md = markdown(&header(), &images, 2);
        let table = &md[md.find("## Least sure words").unwrap()..];
        assert!(table.find("| circle | 0.200 | 6 |").unwrap() < table.find("| a | 0.900 | 6 |").unwrap(), "{table}");
        let html = html(&header(), &images, 2);
        assert!(html.contains("Where the model looked") && html.contains("src=\"data:image/jpeg;base64,BBBB\""), "{html}");
        assert!(html.contains("<td>circle</td><td class=\"n\">0.200</td>"), "{html}");
        assert_eq!(attention_ids(&images, 1), ["5".to_string(), "0".to_string()].into_iter().collect());
    }

    #[test]
    fn handles_an_empty_split() {
        let md = markdown(&header(), &[], 5);
        assert!(md.contains("images**: 0"));
        let html = html(&header(), &[], 5);
        assert!(html.ends_with("</html>\n"));
    }
}
