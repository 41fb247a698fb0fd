//! End-to-end tests of `caption data ...` and `caption config ...`: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn caption(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caption"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the caption binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "caption failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

use caption_test_support::shared_dir;

fn split<'a>(stats: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    stats["splits"].as_array().unwrap().iter().find(|s| s["split"] == name).unwrap_or_else(|| panic!("no {name} in {stats}"))
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn stats_on_flickr8k_counts_train_dev_and_reports_missing_test_images() {
    let root = shared_dir().join("data/flickr8k");
    let annotations = root.join("Flickr8k.token.txt");
    let images = root.join("Images");
    let out = caption(&[
        "data",
        "stats",
        "--format",
        "flickr",
        "--annotations",
        annotations.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--json",
    ]);
    let stats: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(split(&stats, "train")["images"], 6000);
    assert_eq!(split(&stats, "train")["captions"], 30000);
    assert_eq!(split(&stats, "val")["images"], 1000);
    assert_eq!(split(&stats, "val")["captions"], 5000);
    assert_eq!(split(&stats, "train")["captions_per_image_min"], 5);
    assert_eq!(stats["report"]["missing_images"], 1000);
    let vocab1 = stats["vocab_size_min_count_1"].as_u64().unwrap();
    let vocab5 = stats["vocab_size_min_count_5"].as_u64().unwrap();
    assert!(vocab1 > 6000 && vocab5 > 2000 && vocab5 < vocab1, "{vocab1} {vocab5}");
    let oov = split(&stats, "val")["oov_rate"].as_f64().unwrap();
    assert!(oov > 0.0 && oov < 0.05, "{oov}");
    let median = split(&stats, "train")["length_percentiles"][2].as_f64().unwrap();
    assert!((9.0..=13.0).contains(&median), "{median}");

    // The table names the same counts.
    let table = stdout(&caption(&[
        "data",
        "stats",
        "--format",
        "flickr",
        "--annotations",
        annotations.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--check-images",
        "exists",
    ]));
    assert!(table.contains("1000 missing image(s) (1000 test)"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("train") && l.contains(" 6000 ") && l.contains(" 30000 ")), "{table}");
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn stats_on_coco_mini() {
    let root = shared_dir().join("data/coco-mini");
    let out = caption(&[
        "data",
        "stats",
        "--format",
        "coco",
        "--annotations",
        root.join("annotations/captions_train2017.json").to_str().unwrap(),
        "--images",
        root.join("train2017").to_str().unwrap(),
        "--json",
    ]);
    let stats: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(split(&stats, "train")["images"], 80);
    assert_eq!(split(&stats, "train")["captions"], 400);
    assert_eq!(stats["report"]["missing_images"], 0);
}

fn read_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn synth_with_one_seed_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        stdout(&caption(&["data", "synth", "--out", out.to_str().unwrap(), "--n", "60", "--seed", seed, "--image-size", "32"]));
        read_tree(&out)
    };
    let a = run("a", "7");
    let b = run("b", "7");
    let c = run("c", "8");
    assert!(a.len() >= 60 + 3 + 2, "{} files", a.len());
    assert!(a == b, "same seed, different bytes");
    assert!(a != c, "different seeds, same bytes");
}

#[test]
fn shapes_config_generates_the_synthetic_set_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shapes");
    let set_root = format!("data.root={}", root.display());
    let args = ["data", "stats", "--config", "configs/shapes.yaml", "--set", &set_root, "--set", "data.synthetic.n=100", "--json"];
    let stats: serde_json::Value = serde_json::from_str(&stdout(&caption(&args))).unwrap();
    let images: u64 = ["train", "val", "test"].iter().map(|s| split(&stats, s)["images"].as_u64().unwrap()).sum();
    assert_eq!(images, 100);
    assert_eq!(split(&stats, "train")["captions_per_image_min"], 5);
    assert!(root.join("synth.json").is_file());
}

#[test]
fn every_config_in_the_repository_checks() {
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")).unwrap() {
        let path = entry.unwrap().path();
        // serve.yaml configures `caption serve`, not an experiment.
        if path.extension().is_some_and(|e| e == "yaml") && !path.ends_with("serve.yaml") {
            let out = stdout(&caption(&["config", "check", path.to_str().unwrap()]));
            assert!(out.trim_end().ends_with(": ok"), "{out}");
        }
    }
}

#[test]
fn resolved_config_is_printable_with_overrides() {
    let out = stdout(&caption(&["config", "check", "configs/shapes.yaml", "--set", "data.vocab.min_count=2", "--print"]));
    assert!(out.contains("min_count: 2"), "{out}");
    assert!(out.contains("max_pixels:"), "defaults are printed too: {out}");
    let defaults = stdout(&caption(&["config", "defaults"]));
    assert!(defaults.contains("on_missing: skip"), "{defaults}");
}
