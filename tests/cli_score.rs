//! `caption score` end to end: MS-COCO refs and results files built from the shared
//! pycocoevalcap fixture must reproduce its corpus scores, and per-image tables must be written.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("CAPTION_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("fixtures/metrics");
    assert!(
        dir.is_dir(),
        "this test needs the pycocoevalcap reference outputs in the shared folder, expected at {} \
         (beside the repository checkout, or set CAPTION_SHARED_DIR); it is absent",
        dir.display()
    );
    dir
}

/// Writes the fixture's raw captions as an MS-COCO caption file and a results file.
fn coco_files(dir: &Path) -> (PathBuf, PathBuf, serde_json::Value) {
    let text = std::fs::read_to_string(fixtures_dir().join("coco_val_loo500.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    let mut results = Vec::new();
    for id in fixture["image_ids"].as_array().unwrap() {
        let id_text = id.as_str().unwrap();
        let image = &fixture["images"][id_text];
        let id: u64 = id_text.parse().unwrap();
        images.push(serde_json::json!({"id": id, "file_name": format!("COCO_val2014_{id:012}.jpg")}));
        for caption in image["refs_raw"].as_array().unwrap() {
            annotations.push(serde_json::json!({"id": annotations.len() + 1, "image_id": id, "caption": caption}));
        }
        results.push(serde_json::json!({"image_id": id, "caption": image["cand_raw"]}));
    }
    let refs = dir.join("captions_val2014.json");
    let res = dir.join("results.json");
    std::fs::write(&refs, serde_json::json!({"images": images, "annotations": annotations}).to_string()).unwrap();
    std::fs::write(&res, serde_json::Value::from(results).to_string()).unwrap();
    (refs, res, fixture["corpus"].clone())
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_caption")).args(args).output().unwrap()
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn score_reproduces_pycocoevalcap_corpus_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (refs, res, expected) = coco_files(dir.path());
    let per_image = dir.path().join("per_image.csv");
    let out = run(&[
        "score",
        "--refs",
        refs.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
        "--json",
        "--per-image",
        per_image.to_str().unwrap(),
        "--meteor-data",
        caption_test_support::meteor_data().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scores: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"] {
        let (got, want) = (scores[key].as_f64().unwrap(), expected[key].as_f64().unwrap());
        assert!((got - want).abs() <= 1e-12, "{key}: {got} vs pycocoevalcap {want}");
    }
    let table = std::fs::read_to_string(&per_image).unwrap();
    let mut lines = table.lines();
    assert_eq!(lines.next().unwrap(), "image_id,candidate,Bleu_1,Bleu_2,Bleu_3,Bleu_4,METEOR,ROUGE_L,CIDEr");
    assert_eq!(lines.count(), 500);
    assert!(table.contains("\n391895,"), "ground-truth order, first image first");
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn meteor_is_never_replaced_when_its_data_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (refs, res, _) = coco_files(dir.path());
    let nowhere = dir.path().join("no-meteor-here");
    let args = ["score", "--refs", refs.to_str().unwrap(), "--results", res.to_str().unwrap(), "--json"];
    // Asked for by name (or with a data path) and unavailable: an error that says how to get it.
    let mut explicit = args.to_vec();
    explicit.extend(["--metrics", "meteor", "--meteor-data", nowhere.to_str().unwrap()]);
    let out = run(&explicit);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("METEOR is unavailable") && err.contains("pip download --no-deps pycocoevalcap==1.2"), "{err}");
    // By default, without any data to find: scored without METEOR, and a warning says so.
    let out = Command::new(env!("CARGO_BIN_EXE_caption")).args(args).env("CAPTION_METEOR_DATA", &nowhere).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let scores: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(scores.get("METEOR").is_none() && scores.get("CIDEr").is_some(), "{scores}");
    assert!(err.contains("warning: METEOR is unavailable"), "{err}");
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn score_writes_parquet_and_json_and_selects_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (refs, res, expected) = coco_files(dir.path());
    for name in ["per_image.json", "per_image.parquet"] {
        let path = dir.path().join(name);
        let out = run(&[
            "score",
            "--refs",
            refs.to_str().unwrap(),
            "--results",
            res.to_str().unwrap(),
            "--json",
            "--metrics",
            "cider",
            "--per-image",
            path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let scores: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(scores.as_object().unwrap().len(), 1);
        assert!((scores["CIDEr"].as_f64().unwrap() - expected["CIDEr"].as_f64().unwrap()).abs() <= 1e-12);
        let bytes = std::fs::read(&path).unwrap();
        if name.ends_with(".parquet") {
            assert_eq!(&bytes[..4], b"PAR1");
        } else {
            let rows: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(rows.len(), 500);
            assert!(rows[0]["CIDEr"].is_f64());
        }
    }
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn results_for_unknown_images_or_twice_the_same_image_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (refs, _, _) = coco_files(dir.path());
    let res = dir.path().join("bad.json");
    std::fs::write(&res, r#"[{"image_id": 391895, "caption": "a"}, {"image_id": 1, "caption": "b"}]"#).unwrap();
    let out = run(&["score", "--refs", refs.to_str().unwrap(), "--results", res.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("image 1") && err.contains("reference"), "{err}");
    std::fs::write(&res, r#"[{"image_id": 391895, "caption": "a"}, {"image_id": 391895, "caption": "b"}]"#).unwrap();
    let out = run(&["score", "--refs", refs.to_str().unwrap(), "--results", res.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json: image 391895 has more than one caption"), "{err}");
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn compare_reports_significance_and_gates_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let (refs, res_a, _) = coco_files(dir.path());
    // System B copies a reference caption for every third image: clearly better.
    let mut results: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&res_a).unwrap()).unwrap();
    let coco: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&refs).unwrap()).unwrap();
    for (i, result) in results.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
        let id = &coco["images"][i]["id"];
        let reference = coco["annotations"].as_array().unwrap().iter().find(|a| &a["image_id"] == id).unwrap();
        result["caption"] = reference["caption"].clone();
    }
    let res_b = dir.path().join("results_b.json");
    std::fs::write(&res_b, serde_json::Value::from(results).to_string()).unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    for (res, out) in [(&res_a, &a), (&res_b, &b)] {
        let status =
            run(&["score", "--refs", refs.to_str().unwrap(), "--results", res.to_str().unwrap(), "--per-image", out.to_str().unwrap()])
                .status;
        assert!(status.success());
    }
    let report_dir = dir.path().join("report");
    let out = run(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--gate",
        "CIDEr",
        "--resamples",
        "2000",
        "--permutations",
        "2000",
        "--out",
        report_dir.to_str().unwrap(),
    ]);
    let markdown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "B should pass the gate: {markdown}{}", String::from_utf8_lossy(&out.stderr));
    assert!(markdown.lines().any(|l| l.starts_with("| CIDEr |") && l.ends_with("| B better |")), "{markdown}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(report_dir.join("compare.json")).unwrap()).unwrap();
    let cider = json["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "CIDEr").unwrap();
    // Unchanged images tie; a copied reference almost always beats the original caption.
    assert!(cider["ties"].as_u64().unwrap() >= 333, "{cider}");
    assert!(cider["wins"].as_u64().unwrap() >= 150 && cider["losses"].as_u64().unwrap() < 10, "{cider}");
    assert!(std::fs::read_to_string(report_dir.join("compare.html")).unwrap().contains("<table>"));

    // A against itself: no difference, so the gate says no (status 10, not an error).
    let out = run(&["compare", a.to_str().unwrap(), a.to_str().unwrap(), "--gate", "CIDEr", "--resamples", "500", "--permutations", "500"]);
    assert_eq!(out.status.code(), Some(10));
    // Same seed, same numbers.
    let first = run(&["compare", a.to_str().unwrap(), b.to_str().unwrap(), "--resamples", "500", "--permutations", "500"]);
    let again = run(&["compare", a.to_str().unwrap(), b.to_str().unwrap(), "--resamples", "500", "--permutations", "500"]);
    assert_eq!(first.stdout, again.stdout);
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn spice_rb_is_scored_under_its_own_name_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (refs, res, _) = coco_files(dir.path());
    let out = run(&[
        "score",
        "--refs",
        refs.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
        "--json",
        "--metrics",
        "cider,spice-rb",
        "--meteor-data",
        caption_test_support::meteor_data().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scores: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let spice = scores["SPICE-rb"].as_f64().unwrap();
    assert!(spice > 0.05 && spice < 0.5, "{scores}");
    assert!(scores.get("SPICE").is_none(), "an approximation is never reported as SPICE: {scores}");
    // It needs WordNet's synonyms: asked for without them, a clear error.
    let nowhere = dir.path().join("nothing");
    let out = run(&[
        "score",
        "--refs",
        refs.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
        "--metrics",
        "spice-rb",
        "--meteor-data",
        nowhere.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
}
