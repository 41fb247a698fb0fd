//! Checkpoint directories: exact round trips, atomic replacement, and clear errors for
//! incomplete, corrupt or mismatched checkpoints.

mod common;

use std::path::Path;

use burn::prelude::*;
use burn::tensor::Distribution;
use caption_data::{TextEncoder, VocabConfig};
use caption_model::checkpoint::{CONFIG_FILE, META_FILE, VOCAB_FILE, WEIGHTS_FILE};
use caption_model::decoder::DecoderConfig;
use caption_model::decoding::{BeamSearchConfig, DecodeStrategy, LengthPenalty};
use caption_model::{Captioner, CaptionerConfig, CheckpointError, CheckpointMeta, load_checkpoint, read_checkpoint_info, save_checkpoint};
use common::*;

const CAPTIONS: [&str; 4] = ["a red circle", "two blue squares", "a green triangle above a red circle", "three small shapes"];

fn text() -> TextEncoder {
    let config = VocabConfig { min_count: 1, max_length: 6, ..Default::default() };
    TextEncoder::build(&config, &CAPTIONS).unwrap()
}

fn model(decoder: DecoderConfig, text: &TextEncoder) -> Captioner<B> {
    CaptionerConfig::for_text_encoder(tiny_encoder(), decoder, text).init(&Default::default()).unwrap()
}

fn images(count: usize) -> Tensor<B, 4> {
    Tensor::random([count, 3, 64, 64], Distribution::Normal(0.0, 1.0), &Default::default())
}

fn inputs(text: &TextEncoder) -> Tensor<B, 2, Int> {
    let mut ids = vec![text.bos_id() as i64];
    ids.extend(text.encode("a red circle above two squares").iter().map(|&id| id as i64));
    let length = ids.len();
    int_tensor(ids, [1, length], &Default::default()).repeat_dim(0, 2)
}

fn save(dir: &Path, model: &Captioner<B>, text: &TextEncoder) {
    let meta = CheckpointMeta::new("tiny-run", 120).with_epoch(3).with_metric("val/CIDEr", 0.25);
    save_checkpoint(dir, model, text, &meta).unwrap();
}

#[test]
fn round_trip_reproduces_the_model_exactly() {
    let root = tempfile::tempdir().unwrap();
    let text = text();
    for (name, decoder) in decoder_configs() {
        let dir = root.path().join(name.replace([' ', ','], "_"));
        let original = model(decoder, &text);
        save(&dir, &original, &text);
        for file in [WEIGHTS_FILE, CONFIG_FILE, META_FILE, VOCAB_FILE] {
            assert!(dir.join(file).is_file(), "{name}: {file} missing");
        }

        let loaded = load_checkpoint::<B>(&dir, &Default::default()).unwrap();
        assert_eq!(loaded.model.config(), original.config(), "{name}");
        assert_eq!(loaded.meta.run_name, "tiny-run");
        assert_eq!((loaded.meta.step, loaded.meta.epoch), (120, Some(3)));
        assert_eq!(loaded.meta.metrics["val/CIDEr"], 0.25);
        assert_eq!(loaded.text.encode("two red squares"), text.encode("two red squares"));

        let images = images(2);
        let a = floats(original.forward(images.clone(), inputs(&text)).logits);
        let b = floats(loaded.model.forward(images.clone(), inputs(&text)).logits);
        assert_eq!(a, b, "{name}: logits differ after the round trip");
        let strategy =
            DecodeStrategy::Beam(BeamSearchConfig::new(3).with_n_best(2).with_length_penalty(LengthPenalty::Gnmt { alpha: 0.6 }));
        assert_eq!(
            caption_model::decoding::decode(&original.decoder, &original.encode(images.clone()), &original.constraints(), &strategy)
                .unwrap(),
            caption_model::decoding::decode(&loaded.model.decoder, &loaded.model.encode(images), &loaded.model.constraints(), &strategy)
                .unwrap(),
            "{name}"
        );

        let (config, meta) = read_checkpoint_info(&dir).unwrap();
        assert_eq!(&config, original.config());
        assert_eq!(meta, loaded.meta);
    }
}

#[test]
fn saving_again_replaces_the_checkpoint_and_leaves_no_temporaries() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("latest");
    let text = text();
    let first = model(tiny_lstm().into(), &text);
    save(&dir, &first, &text);
    let second = model(tiny_transformer().into(), &text);
    save_checkpoint(&dir, &second, &text, &CheckpointMeta::new("tiny-run", 240)).unwrap();

    let loaded = load_checkpoint::<B>(&dir, &Default::default()).unwrap();
    assert_eq!(loaded.meta.step, 240);
    assert_eq!(loaded.model.config(), second.config());
    let entries: Vec<String> =
        std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries, vec!["latest".to_string()]);

    // A directory that is not a checkpoint is not replaced.
    let other = root.path().join("photos");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("cat.jpg"), b"...").unwrap();
    let err = save_checkpoint(&other, &second, &text, &CheckpointMeta::new("tiny-run", 1)).unwrap_err();
    assert!(matches!(err, CheckpointError::NotACheckpoint { .. }), "{err}");
    assert!(other.join("cat.jpg").is_file());
}

/// A saved checkpoint to break.
fn saved() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    let text = text();
    save(&dir, &model(tiny_lstm().into(), &text), &text);
    (root, dir)
}

fn load_error(dir: &Path) -> CheckpointError {
    load_checkpoint::<B>(dir, &Default::default()).unwrap_err()
}

#[test]
fn a_truncated_weights_file_is_a_clear_error() {
    let (_root, dir) = saved();
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() / 2, 100, 4, 0] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = load_error(&dir);
        let message = err.to_string();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{keep} bytes: {message}");
        assert!(message.contains(WEIGHTS_FILE) && message.contains("copy the checkpoint again"), "{message}");
        println!("{keep} bytes: {message}");
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    for file in [CONFIG_FILE, WEIGHTS_FILE, META_FILE, VOCAB_FILE] {
        let (_root, dir) = saved();
        std::fs::remove_file(dir.join(file)).unwrap();
        let err = load_error(&dir);
        let message = err.to_string();
        assert!(matches!(err, CheckpointError::MissingFile { .. }), "{file}: {message}");
        assert!(message.contains(file) && message.contains("missing"), "{message}");
        println!("{message}");
    }
    let err = load_error(Path::new("/nonexistent/checkpoint"));
    assert!(matches!(err, CheckpointError::NotFound { .. }), "{err}");
}

#[test]
fn weights_of_another_shape_are_a_clear_error() {
    let (_root, dir) = saved();
    // config.json now describes a wider LSTM than the weights.
    let text = text();
    let wider = CaptionerConfig::for_text_encoder(tiny_encoder(), tiny_lstm().with_hidden_size(48), &text);
    std::fs::write(dir.join(CONFIG_FILE), wider.to_json()).unwrap();
    let err = load_error(&dir);
    let message = err.to_string();
    assert!(matches!(err, CheckpointError::WeightsMismatch { .. }), "{message}");
    println!("{message}");
    assert!(
        message.contains(WEIGHTS_FILE) && message.contains("init_h.weight is [64, 32] in the file, the model has [64, 48]"),
        "{message}"
    );

    // ... or another decoder altogether.
    let other = CaptionerConfig::for_text_encoder(tiny_encoder(), tiny_transformer(), &text);
    std::fs::write(dir.join(CONFIG_FILE), other.to_json()).unwrap();
    let message = load_error(&dir).to_string();
    assert!(message.contains("missing from the file") && message.contains("the model does not have"), "{message}");
}

#[test]
fn unknown_versions_and_bad_json_are_clear_errors() {
    let (_root, dir) = saved();
    let meta = std::fs::read_to_string(dir.join(META_FILE)).unwrap().replace("\"format_version\": 1", "\"format_version\": 7");
    std::fs::write(dir.join(META_FILE), meta).unwrap();
    let err = load_error(&dir);
    assert!(matches!(err, CheckpointError::UnsupportedVersion { found: 7, .. }), "{err}");
    assert!(err.to_string().contains("meta.json"), "{err}");

    let (_root, dir) = saved();
    std::fs::write(dir.join(CONFIG_FILE), "{\"encoder\": ").unwrap();
    let err = load_error(&dir);
    assert!(matches!(err, CheckpointError::Corrupt { .. }) && err.to_string().contains(CONFIG_FILE), "{err}");

    // A vocabulary of another size than the model's.
    let (_root, dir) = saved();
    let bigger =
        TextEncoder::build(&VocabConfig { min_count: 1, ..Default::default() }, &["many more words than before in this vocabulary"])
            .unwrap();
    bigger.save(&dir).unwrap();
    let err = load_error(&dir);
    assert!(matches!(err, CheckpointError::VocabMismatch { .. }) && err.to_string().contains(VOCAB_FILE), "{err}");
}
