//! `caption caption` end to end: a checkpoint written through the model crate's API (tiny, random
//! weights: the captions are words of its vocabulary, not good ones) captions real PNG files.

use caption_serve_testkit as common;

use std::path::Path;
use std::process::Command;

fn write_checkpoint(dir: &Path) -> caption_data::TextEncoder {
    common::write_checkpoint(dir, "tiny", 0.0)
}

fn caption(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_caption")).args(args).output().unwrap()
}

#[test]
fn captions_images_with_n_best_and_confidences() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let text = write_checkpoint(&checkpoint);
    let mut images = Vec::new();
    for (name, colour) in [("red.png", [220, 30, 30]), ("blue.jpg", [30, 30, 220])] {
        let path = dir.path().join(name);
        image::RgbImage::from_pixel(48, 40, image::Rgb(colour)).save(&path).unwrap();
        images.push(path.to_str().unwrap().to_string());
    }
    let mut args = vec!["caption", "--checkpoint", checkpoint.to_str().unwrap(), "--beam-size", "3", "--num-captions", "2", "--json"];
    args.extend(images.iter().map(String::as_str));
    let out = caption(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 2);
    for result in results {
        let captions = result["captions"].as_array().unwrap();
        assert_eq!(captions.len(), 2);
        for c in captions {
            let confidence = c["confidence"].as_f64().unwrap();
            assert!(confidence > 0.0 && confidence <= 1.0, "{c}");
            common::check_token_probabilities(c);
            for word in c["text"].as_str().unwrap().split_whitespace() {
                // An untrained model may well predict `<unk>`, itself a vocabulary token.
                assert!(word == "<unk>" || text.encode(word).iter().all(|&id| id != text.unk_id()), "{word} is not in the vocabulary");
            }
        }
    }
    // Greedy, plain text: one line per image.
    let mut args = vec!["caption", "--checkpoint", checkpoint.to_str().unwrap(), "--beam-size", "1"];
    args.extend(images.iter().map(String::as_str));
    let out = caption(&args);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn attention_figures_and_weights_are_written_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    write_checkpoint(&checkpoint);
    let figures = dir.path().join("figures");
    let mut images = Vec::new();
    for name in ["red.png", "sub/red.png"] {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(48, 40, image::Rgb([220, 30, 30])).save(&path).unwrap();
        images.push(path.to_str().unwrap().to_string());
    }
    let mut args = vec!["caption", "--checkpoint", checkpoint.to_str().unwrap(), "--json", "--attention", figures.to_str().unwrap()];
    args.extend(images.iter().map(String::as_str));
    let out = caption(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (result, file) in results.as_array().unwrap().iter().zip(["red.png", "red-2.png"]) {
        let caption = &result["captions"][0];
        let attention = &caption["attention"];
        let weights = attention["weights"].as_array().unwrap();
        assert_eq!(weights.len(), caption["tokens"].as_array().unwrap().len(), "{caption}");
        for row in weights {
            let sum: f64 = row.as_array().unwrap().iter().map(|w| w.as_f64().unwrap()).sum();
            assert!((sum - 1.0).abs() < 1e-4, "{row}");
        }
        // Two images of the same name get two figures: the image, then a panel per token.
        let figure = image::open(figures.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let panels = weights.len() as u32 + 1;
        assert_eq!(figure.width(), 8 + panels.min(6) * 200, "{file}");
    }
}

#[test]
fn a_truncated_checkpoint_or_a_bad_image_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    write_checkpoint(&checkpoint);
    let image = dir.path().join("x.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3])).save(&image).unwrap();
    let not_an_image = dir.path().join("notes.png");
    std::fs::write(&not_an_image, "plain text").unwrap();
    let out = caption(&["caption", "--checkpoint", checkpoint.to_str().unwrap(), not_an_image.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: ") && err.contains("notes.png") && err.trim_end().lines().count() == 1, "{err}");

    let weights = checkpoint.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let out = caption(&["caption", "--checkpoint", checkpoint.to_str().unwrap(), image.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("model.safetensors") && !err.contains("panicked"), "{err}");
}

#[test]
fn a_run_directory_stands_for_its_best_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    write_checkpoint(&run.join("checkpoints").join("best"));
    let image = dir.path().join("red.png");
    image::RgbImage::from_pixel(32, 32, image::Rgb([220, 30, 30])).save(&image).unwrap();
    let out = caption(&["caption", "--checkpoint", run.to_str().unwrap(), "--beam-size", "1", image.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// Without the `cuda` feature, or with it on a machine with no NVIDIA driver (CI), asking for
/// CUDA is one message that says what to do, not a panic from the backend's device thread.
#[test]
fn an_unusable_cuda_device_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    write_checkpoint(&checkpoint);
    let image = dir.path().join("red.png");
    image::RgbImage::from_pixel(32, 32, image::Rgb([220, 30, 30])).save(&image).unwrap();
    let out = caption(&["caption", "--checkpoint", checkpoint.to_str().unwrap(), "--device", "cuda:7", image.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // A machine with eight or more GPUs and a CUDA build: nothing to check here.
        return;
    }
    assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "{stderr}");
    assert!(stderr.contains("cuda:7"), "{stderr}");
    assert!(stderr.contains("--features cuda") || stderr.contains("--device cpu") || stderr.contains("CUDA device(s)"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
