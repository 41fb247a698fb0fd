//! One checkpoint, one decoding, the same captions everywhere: `caption caption --json`,
//! `caption eval`'s results and the server's `POST /api/v1/caption/batch` give identical captions
//! and confidences for the same images, decoding as the checkpoint records (a beam search with a
//! length penalty, trigram blocking and no bad endings, none of them defaults).

use caption_serve_testkit as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use caption_data::image::ImageConfig;
use caption_data::{CaptionDataset, DataConfig, Split, TextEncoder, VocabConfig};
use caption_model::{
    AttentionLstmConfig, BeamSearchConfig, CaptionerConfig, CheckpointMeta, DecodeStrategy, DecodingConfig, EncoderConfig, EncoderKind,
    FlexBackend, LengthPenalty, save_checkpoint,
};

fn decoding() -> DecodingConfig {
    let beam = BeamSearchConfig::new(4).with_length_penalty(LengthPenalty::Average).with_block_repeated_trigrams(true);
    DecodingConfig::new(DecodeStrategy::Beam(beam)).with_block_bad_endings(true)
}

/// A tiny random-weight checkpoint that records [`decoding`].
fn write_checkpoint(dir: &Path) {
    let captions = ["a red circle", "two blue squares", "a green triangle above a red circle", "the square is on the left of a circle"];
    let text = TextEncoder::build(&VocabConfig { min_count: 1, max_length: 12, ..Default::default() }, &captions).unwrap();
    let encoder = EncoderConfig::new(EncoderKind::Resnet18).with_layers(Some([1, 1, 1, 1])).with_width(8);
    let decoder = AttentionLstmConfig::new().with_embedding_size(16).with_hidden_size(32).with_attention_size(16);
    // Seeded, so that the random model writes the same (non-empty) captions on every run.
    <FlexBackend as burn::prelude::Backend>::seed(&Default::default(), 11);
    let model = CaptionerConfig::for_text_encoder(encoder, decoder, &text).init::<FlexBackend>(&Default::default()).unwrap();
    let meta = CheckpointMeta::new("tiny", 7).with_preprocess(ImageConfig { size: 32, ..Default::default() }).with_decoding(decoding());
    save_checkpoint(dir, &model, &text, &meta).unwrap();
}

/// A synthetic dataset and a config whose `data:` section finds it.
fn write_data_config(dir: &Path) -> (PathBuf, DataConfig) {
    let yaml = format!("data:\n  format: synthetic\n  root: {}/shapes\n  synthetic: {{n: 40, seed: 5, image_size: 48}}\n", dir.display());
    let path = dir.join("data.yaml");
    std::fs::write(&path, &yaml).unwrap();
    #[derive(serde::Deserialize)]
    struct Only {
        data: DataConfig,
    }
    let config: Only = serde_norway::from_str(&yaml).unwrap();
    (path, config.data)
}

/// (caption, confidence) per image.
type Captions = Vec<(String, f64)>;

fn caption(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_caption")).args(args).output().unwrap();
    assert!(out.status.success(), "caption {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn from_cli(checkpoint: &Path, images: &[PathBuf]) -> Captions {
    let mut args = vec!["caption", "--checkpoint", checkpoint.to_str().unwrap(), "--json"];
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    let results: serde_json::Value = serde_json::from_str(&caption(&args)).unwrap();
    results.as_array().unwrap().iter().map(|r| best(&r["captions"])).collect()
}

fn from_eval(checkpoint: &Path, config: &Path, out: &Path) -> Captions {
    let args = ["eval", "--checkpoint", checkpoint.to_str().unwrap(), "--config", config.to_str().unwrap(), "--split", "test"];
    caption(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    let read = |name: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap() };
    let metrics = read("metrics.json");
    assert_eq!(metrics["decoding"], serde_json::to_value(decoding()).unwrap(), "eval decoded otherwise: {metrics}");
    let results = read("results.json");
    let rows = read("per_image.json");
    let results = results.as_array().unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(results.len(), rows.len());
    results
        .iter()
        .zip(rows)
        .map(|(result, row)| {
            assert_eq!(result["caption"], row["candidate"]);
            (result["caption"].as_str().unwrap().to_string(), row["confidence"].as_f64().unwrap())
        })
        .collect()
}

fn from_server(checkpoint: &Path, dir: &Path, images: &[PathBuf]) -> Captions {
    let registry = dir.join("registry");
    caption(&["promote", checkpoint.to_str().unwrap(), "--registry", registry.to_str().unwrap()]);
    let keys_file = dir.join("keys.json");
    let key = caption_serve::keys::add_key(&keys_file, "ci").unwrap();
    let server = common::serve(&registry, &common::keyed_config(&keys_file));
    let encoded: Vec<String> = images.iter().map(|p| common::base64(&std::fs::read(p).unwrap())).collect();
    let reply = common::post_json(server.address(), "/api/v1/caption/batch", Some(&key), &serde_json::json!({"images": encoded}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = reply.json();
    reply["results"].as_array().unwrap().iter().map(|r| best(&r["captions"])).collect()
}

fn best(captions: &serde_json::Value) -> (String, f64) {
    let first = &captions.as_array().unwrap()[0];
    (first["text"].as_str().unwrap().to_string(), first["confidence"].as_f64().unwrap())
}

#[test]
fn cli_eval_and_server_write_the_same_captions() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    write_checkpoint(&checkpoint);
    let (config, data) = write_data_config(dir.path());
    let evaluated = from_eval(&checkpoint, &config, &dir.path().join("eval"));

    let dataset = CaptionDataset::load(&data).unwrap();
    let images: Vec<PathBuf> = dataset.split(Split::Test).map(|s| s.image_path.clone()).collect();
    assert!(images.len() >= 3, "{} test images", images.len());
    assert_eq!(evaluated.len(), images.len());
    let cli = from_cli(&checkpoint, &images);
    let served = from_server(&checkpoint, dir.path(), &images);
    assert!(evaluated.iter().any(|(caption, _)| !caption.is_empty()), "only empty captions: {evaluated:?}");
    assert_eq!(cli, evaluated, "caption caption and caption eval differ");
    assert_eq!(served, evaluated, "the server and caption eval differ");

    // The recorded decoding matters: the default one (beam 3, no rules) writes other captions or
    // confidences here, so the identity above is not an accident of defaults.
    let mut args = vec!["caption", "--checkpoint", checkpoint.to_str().unwrap(), "--json", "--beam-size", "3"];
    args.extend(["--length-penalty", "none", "--block-repeated-trigrams=false", "--block-bad-endings=false"]);
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    let results: serde_json::Value = serde_json::from_str(&caption(&args)).unwrap();
    let plain: Captions = results.as_array().unwrap().iter().map(|r| best(&r["captions"])).collect();
    assert_ne!(plain, evaluated, "the recorded decoding changed nothing on these images");
}
