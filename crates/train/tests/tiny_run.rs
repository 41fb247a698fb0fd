//! Tiny training runs end to end: a few synthetic images, a tiny model, 2 epochs. Checks the run
//! directory (config, manifest, metrics log, checkpoints, test evaluation) and that a run
//! interrupted at an epoch boundary or mid-epoch resumes to exactly the uninterrupted result.

use std::path::{Path, PathBuf};

use caption_data::{DataConfig, DataFormat};
use caption_model::{AttentionLstmConfig, DecoderConfig};
use caption_model::{FlexBackend, load_checkpoint};
use caption_train::{RunConfig, TrainJob, TrainState, train};

use caption_test_support::tensorboard;

/// The backend's random generator (initialisation, dropout) is global to the process: runs in
/// parallel threads would draw from it in an unpredictable interleaving, so that no run would
/// be reproducible. Every test that trains holds this lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tiny_config(root: &Path) -> RunConfig {
    let mut config = RunConfig { name: "tiny".into(), seed: 7, ..Default::default() };
    config.data = DataConfig { format: DataFormat::Synthetic, root: Some(root.join("shapes")), ..Default::default() };
    config.data.synthetic.n = 48;
    config.data.synthetic.image_size = 64;
    config.data.vocab.max_length = 20;
    config.data.image.size = 64;
    config.model.encoder.layers = Some([1, 1, 1, 1]);
    config.model.encoder.width = 4;
    config.model.encoder.finetune = caption_model::Finetune::All;
    config.model.decoder =
        AttentionLstmConfig::new().with_embedding_size(8).with_hidden_size(16).with_attention_size(8).with_dropout(0.1).into();
    let train = &mut config.train;
    train.output_dir = root.join("experiments");
    train.epochs = 2;
    train.batch_size = 8;
    train.captions_per_image = 2;
    train.lr = 1e-2;
    train.warmup_steps = 2;
    train.log_every = 2;
    train.eval_batch_size = 8;
    train.attention_regularizer = 0.1;
    config
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn last_train_loss(run_dir: &Path) -> (u64, f64) {
    let lines = read_lines(&run_dir.join("metrics.jsonl"));
    let last = lines.iter().rev().find(|l| l["kind"] == "train").unwrap();
    (last["step"].as_u64().unwrap(), last["loss"].as_f64().unwrap())
}

fn val_lines(run_dir: &Path) -> Vec<(u64, f64)> {
    read_lines(&run_dir.join("metrics.jsonl"))
        .iter()
        .filter(|l| l["kind"] == "val")
        .map(|l| (l["epoch"].as_u64().unwrap(), l["CIDEr"].as_f64().unwrap()))
        .collect()
}

/// Every tensor of a checkpoint's `model.safetensors`, by name (the file's header order, and its
/// metadata's, varies from one write to the next: compare the tensors, not the bytes).
fn tensors(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            let offsets = &info["data_offsets"];
            let (start, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
            (name, data[start..end].to_vec())
        })
        .collect()
}

fn same_weights(a: &Path, b: &Path) -> bool {
    let (a, b) = (tensors(a), tensors(b));
    for (name, value) in &a {
        if b.get(name) != Some(value) {
            eprintln!("tensor {name} differs");
        }
    }
    !a.is_empty() && a == b
}

#[test]
fn tiny_run_writes_the_run_directory() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let config = tiny_config(root.path());
    let summary = train(TrainJob::new(config.clone())).unwrap();
    let run = &summary.run_dir;
    assert!(run.file_name().unwrap().to_string_lossy().starts_with("tiny-"), "{}", run.display());
    assert_eq!((summary.epochs_completed, summary.interrupted), (2, false));

    // config.yaml is the resolved config.
    let yaml = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    let back: RunConfig = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(back, config);

    let manifest = read_json(&run.join("manifest.json"));
    assert_eq!(manifest["seed"], 7);
    assert_eq!(manifest["burn_version"], "0.21.0");
    assert_eq!(manifest["backend"], "flex");
    assert_eq!(manifest["device"], "cpu");
    assert_eq!(manifest["dataset"]["sha256"].as_str().unwrap().len(), 64);
    let images = &manifest["dataset"]["images"];
    let train_images = images["train"].as_u64().unwrap();
    assert!(train_images > 30 && images["val"].as_u64().unwrap() > 0, "{images}");
    assert_eq!(manifest["dataset"]["annotation_files"].as_array().unwrap().len(), 3);
    assert!(manifest["parameters"].as_u64().unwrap() > 0);

    // A line per logged step and per validation, steps increasing.
    let lines = read_lines(&run.join("metrics.jsonl"));
    let steps_per_epoch = train_images.div_ceil(8);
    let train_lines: Vec<_> = lines.iter().filter(|l| l["kind"] == "train").collect();
    assert!(train_lines.len() >= 2, "{lines:?}");
    for line in &train_lines {
        for key in ["epoch", "loss", "lr", "grad_norm", "images_per_s"] {
            assert!(line[key].is_number(), "{key} missing in {line}");
        }
    }
    assert_eq!(val_lines(run).len(), 2);
    assert_eq!(last_train_loss(run).0, 2 * steps_per_epoch);
    assert!(lines.iter().filter(|l| l["kind"] == "val").all(|l| l["Bleu_4"].is_number() && l["CIDEr"].is_number()));

    // TensorBoard reads the same numbers (as float32) and the sample captions.
    if let Some(board) = tensorboard::read(&run.join("tensorboard")) {
        let logged: Vec<(u64, f64)> = train_lines.iter().map(|l| (l["step"].as_u64().unwrap(), l["loss"].as_f64().unwrap())).collect();
        let charted = &board.scalars["train/loss"];
        assert_eq!(charted.len(), logged.len(), "{charted:?} vs {logged:?}");
        for ((step, value), (logged_step, logged_value)) in charted.iter().zip(&logged) {
            assert_eq!((*step, *value), (*logged_step, *logged_value as f32 as f64));
        }
        for tag in ["train/lr", "train/grad_norm", "train/cross_entropy", "val/Bleu_4", "val/CIDEr", "val/ROUGE_L"] {
            assert!(board.scalars.contains_key(tag), "{tag} missing: {:?}", board.scalars.keys());
        }
        let val_cider: Vec<f64> = val_lines(run).iter().map(|&(_, v)| v as f32 as f64).collect();
        assert_eq!(board.scalars["val/CIDEr"].iter().map(|&(_, v)| v).collect::<Vec<_>>(), val_cider);
        let samples = &board.text["val/samples"];
        assert_eq!(samples.len(), 2);
        assert!(samples[0].1.starts_with("| image | model | reference |"), "{}", samples[0].1);
    }

    // Checkpoints load, and carry the preprocessing.
    for name in ["last", "best"] {
        let dir = run.join("checkpoints").join(name);
        let checkpoint = load_checkpoint::<FlexBackend>(&dir, &Default::default()).unwrap();
        let preprocess = checkpoint.meta.preprocess.expect("preprocess in meta.json");
        assert_eq!((preprocess.size, preprocess.mean, preprocess.std), (64, config.data.image.mean, config.data.image.std));
        assert_eq!(checkpoint.meta.run_name, "tiny");
        assert!(checkpoint.meta.metrics.contains_key("val/CIDEr"), "{:?}", checkpoint.meta.metrics);
    }
    let last = run.join("checkpoints/last");
    assert!(last.join("optimizer.mpk").is_file());
    let state = TrainState::read(&last).unwrap();
    assert!(state.finished && state.epoch == 2 && state.step == 2 * steps_per_epoch);

    // Test evaluation of the best checkpoint.
    let metrics = read_json(&run.join("eval/test/metrics.json"));
    assert_eq!(metrics["checkpoint"], "checkpoints/best");
    for key in ["Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"] {
        assert!(metrics["metrics"][key].is_number(), "{key}: {metrics}");
    }
    let rows = read_json(&run.join("eval/test/per_image.json"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len() as u64, images["test"].as_u64().unwrap());
    for key in ["image_id", "candidate", "Bleu_1", "Bleu_4", "CIDEr"] {
        assert!(!rows[0][key].is_null(), "{key}: {}", rows[0]);
    }
    assert!(summary.test.unwrap().get("CIDEr").is_some());
    // The reports people read: scores, examples with their pictures inlined.
    let markdown = std::fs::read_to_string(run.join("eval/test/report.md")).unwrap();
    assert!(markdown.contains("| CIDEr |") && markdown.contains("## Worst"), "{markdown}");
    let html = std::fs::read_to_string(run.join("eval/test/report.html")).unwrap();
    assert!(html.contains("<img src=\"data:image/jpeg;base64,") && html.contains("<svg"), "no thumbnails or chart in report.html");
    // The attention LSTM's figures for the best and worst images.
    assert!(html.contains("Where the model looked") && html.contains("alt=\"attention, image "), "no attention figures in report.html");
}

/// Interrupts a run (as a kill would, right after a `last` checkpoint), resumes it, and checks it
/// ends exactly where the uninterrupted run ends.
fn interrupted_run_matches(root: &Path, checkpoint_every: usize, interrupt_at: u64) {
    let mut config = tiny_config(root);
    config.train.checkpoint_every = checkpoint_every;
    config.train.test = false;
    config.train.output_dir = root.join("straight");
    let straight = train(TrainJob::new(config.clone())).unwrap();

    config.train.output_dir = root.join("resumed");
    let first = train(TrainJob { interrupt_after_step: Some(interrupt_at), ..TrainJob::new(config.clone()) }).unwrap();
    assert!(first.interrupted && first.steps >= interrupt_at && first.steps < straight.steps, "{first:?}");
    let state = TrainState::read(&first.run_dir.join("checkpoints/last")).unwrap();
    assert!(!state.finished && state.step == first.steps, "{state:?}");
    let resumed = train(TrainJob { resume: Some(first.run_dir.clone()), ..TrainJob::new(config) }).unwrap();
    assert_eq!(resumed.run_dir, first.run_dir);
    assert!(!resumed.interrupted);
    assert_eq!((resumed.epochs_completed, resumed.steps), (straight.epochs_completed, straight.steps));

    let (a, b): (PathBuf, PathBuf) = (straight.run_dir.clone(), resumed.run_dir.clone());
    assert_eq!(last_train_loss(&a), last_train_loss(&b));
    assert_eq!(val_lines(&a), val_lines(&b));
    assert!(same_weights(&a.join("checkpoints/last"), &b.join("checkpoints/last")), "final weights differ");
    // The resumed log has no duplicate steps.
    let steps: Vec<u64> =
        read_lines(&b.join("metrics.jsonl")).iter().filter(|l| l["kind"] == "train").map(|l| l["step"].as_u64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    let manifest = read_json(&b.join("manifest.json"));
    assert_eq!(manifest["resumes"].as_array().unwrap().len(), 1);
}

#[test]
fn resume_at_an_epoch_boundary_continues_exactly() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    // Interrupt after the first epoch's checkpoint.
    interrupted_run_matches(root.path(), 0, 1);
}

#[test]
fn resume_mid_epoch_continues_exactly() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    interrupted_run_matches(root.path(), 2, 2);
}

#[test]
fn config_errors_are_clear() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny_config(root.path());
    config.train.best_metric = "bleu".into();
    let err = format!("{:#}", train(TrainJob::new(config)).unwrap_err());
    assert!(err.contains("train.best_metric") && err.contains("CIDEr"), "{err}");

    let err = serde_norway::from_str::<RunConfig>("train:\n  epochs: 2\n  learning_rate: 0.1\n").unwrap_err().to_string();
    assert!(err.contains("unknown field `learning_rate`") && err.contains("lr"), "{err}");
}

#[test]
fn scst_epochs_train_on_cider_rewards() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny_config(root.path());
    config.train.test = false;
    config.scst = caption_train::ScstConfig { enabled: true, after_epoch: 1, samples_per_image: 2, ..Default::default() };
    let summary = train(TrainJob::new(config.clone())).unwrap();
    assert_eq!(summary.epochs_completed, 2);
    let lines = read_lines(&summary.run_dir.join("metrics.jsonl"));
    let train_lines: Vec<_> = lines.iter().filter(|l| l["kind"] == "train").collect();
    // Epoch 1 is cross-entropy, epoch 2 self-critical at the SCST learning rate.
    let first = train_lines.iter().find(|l| l["epoch"] == 1).unwrap();
    assert!(first["cross_entropy"].is_number() && first.get("scst_reward").is_none(), "{first}");
    let second: Vec<_> = train_lines.iter().filter(|l| l["epoch"] == 2).collect();
    assert!(!second.is_empty());
    for line in &second {
        let reward = line["scst_reward"].as_f64().unwrap();
        assert!(reward.is_finite() && reward >= 0.0 && line["scst_baseline"].is_number(), "{line}");
        assert_eq!(line["lr"].as_f64().unwrap(), config.scst.lr);
        assert!(line.get("cross_entropy").is_none(), "{line}");
    }
    assert_eq!(val_lines(&summary.run_dir).len(), 2);

    // `scst.after_epoch` must leave epochs to train.
    config.scst.after_epoch = 2;
    let err = format!("{:#}", train(TrainJob::new(config)).unwrap_err());
    assert!(err.contains("scst.after_epoch"), "{err}");
}

/// The largest difference between two checkpoints' weights, read as f32 (every tensor of a
/// captioner is f32); panics when they hold different tensors.
fn largest_weight_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let floats = |bytes: &[u8]| bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
    a.iter().flat_map(|(name, value)| floats(value).into_iter().zip(floats(&b[name]))).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn init_from_starts_from_a_checkpoint() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny_config(root.path());
    config.model.encoder.finetune = caption_model::Finetune::Frozen;
    config.train.feature_cache_dir = root.path().join("features");
    config.train.epochs = 1;
    config.train.test = false;
    let first = train(TrainJob::new(config.clone())).unwrap();

    // Self-critical training from the first run's best checkpoint, at a learning rate too small
    // to move any weight: the second run ends where the first one's best checkpoint is.
    let mut second = config.clone();
    second.seed = 8; // a fresh model would be another one
    second.train.output_dir = root.path().join("second");
    second.train.init_from = Some(first.run_dir.clone());
    second.scst = caption_train::ScstConfig { enabled: true, after_epoch: 0, samples_per_image: 2, lr: 1e-30, ..Default::default() };
    let summary = train(TrainJob::new(second.clone())).unwrap();
    let lines = read_lines(&summary.run_dir.join("metrics.jsonl"));
    assert!(lines.iter().any(|l| l["kind"] == "train" && l["scst_reward"].is_number()), "no SCST step was logged");
    let difference = largest_weight_difference(&first.run_dir.join("checkpoints/best"), &summary.run_dir.join("checkpoints/last"));
    assert!(difference < 1e-6, "the second run did not start from the first one's weights (difference {difference})");
    assert_eq!(val_lines(&summary.run_dir)[0].1, val_lines(&first.run_dir)[0].1);

    // Another architecture, or no checkpoint there: a clear error naming the setting.
    let mut other = second.clone();
    if let DecoderConfig::AttentionLstm(lstm) = &mut other.model.decoder {
        lstm.hidden_size = 12;
    }
    let err = format!("{:#}", train(TrainJob::new(other)).unwrap_err());
    assert!(err.contains("train.init_from") && err.contains("model:"), "{err}");
    let mut missing = second;
    missing.train.init_from = Some(root.path().join("no-such-run"));
    let err = format!("{:#}", train(TrainJob::new(missing)).unwrap_err());
    assert!(err.contains("train.init_from") && err.contains("no-such-run"), "{err}");
}

#[test]
fn frozen_encoder_trains_from_cached_features() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny_config(root.path());
    config.model.encoder.finetune = caption_model::Finetune::Frozen;
    config.train.feature_cache_dir = root.path().join("features");
    let first = train(TrainJob::new(config.clone())).unwrap();
    let folders: Vec<PathBuf> = std::fs::read_dir(root.path().join("features")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(folders.len(), 1, "one folder per encoder: {folders:?}");
    for split in ["train", "val", "test"] {
        let header = read_json(&folders[0].join(format!("{split}.json")));
        let shape: Vec<u64> = header["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        // A 64 px image through a width-4 ResNet: 32 channels on a 2 x 2 grid.
        assert_eq!(shape[1..], [32, 2, 2], "{header}");
        let bytes = std::fs::metadata(folders[0].join(format!("{split}.f16"))).unwrap().len();
        assert_eq!(bytes, shape.iter().product::<u64>() * 2);
    }
    let written = std::fs::metadata(folders[0].join("train.f16")).unwrap().modified().unwrap();

    // A second run with the same encoder reads the cache (same seed: the same encoder weights)
    // and trains to the same weights.
    config.train.output_dir = root.path().join("second");
    let second = train(TrainJob::new(config.clone())).unwrap();
    assert_eq!(std::fs::metadata(folders[0].join("train.f16")).unwrap().modified().unwrap(), written, "the cache was rewritten");
    let (a, b) = (first.run_dir.join("checkpoints/last"), second.run_dir.join("checkpoints/last"));
    assert!(same_weights(&a, &b), "the run from cached features trained to other weights");
    assert_eq!(first.test.unwrap().metrics, second.test.unwrap().metrics);

    // Another encoder (another seed, other weights) gets its own folder.
    config.seed = 8;
    config.train.output_dir = root.path().join("third");
    train(TrainJob::new(config)).unwrap();
    assert_eq!(std::fs::read_dir(root.path().join("features")).unwrap().count(), 2);
}

#[test]
fn encoder_fine_tuning_starts_at_its_epoch_with_its_own_rate() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let encoder =
        |dir: &Path| -> Vec<(String, Vec<u8>)> { tensors(dir).into_iter().filter(|(name, _)| name.starts_with("encoder.")).collect() };
    let mut config = tiny_config(root.path());
    config.train.test = false;
    config.train.epochs = 2;
    config.train.finetune_after_epoch = 1;
    config.train.encoder_lr = Some(1e-3);
    config.train.output_dir = root.path().join("delayed");
    let delayed = train(TrainJob { interrupt_after_step: Some(1), ..TrainJob::new(config.clone()) }).unwrap();
    let after_first_epoch = encoder(&delayed.run_dir.join("checkpoints/last"));

    // The same seed with a frozen encoder: after one epoch its weights are the initial ones.
    let mut frozen = config.clone();
    frozen.model.encoder.finetune = caption_model::Finetune::Frozen;
    frozen.train.finetune_after_epoch = 0;
    frozen.train.epochs = 1;
    frozen.train.output_dir = root.path().join("frozen");
    frozen.train.feature_cache_dir = root.path().join("features");
    let initial = encoder(&train(TrainJob::new(frozen)).unwrap().run_dir.join("checkpoints/last"));
    assert_eq!(after_first_epoch, initial, "the encoder changed before `finetune_after_epoch`");

    // The second epoch fine-tunes it.
    let resumed = train(TrainJob { resume: Some(delayed.run_dir.clone()), ..TrainJob::new(config.clone()) }).unwrap();
    assert_eq!(resumed.epochs_completed, 2);
    assert_ne!(encoder(&resumed.run_dir.join("checkpoints/last")), initial, "the encoder was never fine-tuned");

    let mut bad = config;
    bad.train.finetune_after_epoch = 2;
    let err = format!("{:#}", train(TrainJob::new(bad)).unwrap_err());
    assert!(err.contains("finetune_after_epoch"), "{err}");
}
