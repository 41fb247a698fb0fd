//! `caption train` end to end: a tiny run killed with SIGKILL after its first checkpoint resumes
//! with `--resume` and finishes; config mistakes are reported clearly.

use caption_model::{FlexBackend, load_checkpoint};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caption_test_support::tensorboard;

/// A tiny config: 48 synthetic images, a tiny ResNet and LSTM, 10 short epochs.
fn write_config(dir: &Path) -> PathBuf {
    let root = dir.display();
    let text = format!(
        "name: tiny
seed: 3
data:
  format: synthetic
  root: {root}/shapes
  synthetic: {{n: 48, seed: 3, image_size: 64}}
  vocab: {{min_count: 1, max_length: 20}}
  image: {{size: 64}}
model:
  encoder: {{network: resnet18, layers: [1, 1, 1, 1], width: 4, finetune: all}}
  decoder: {{kind: attention_lstm, embedding_size: 8, hidden_size: 16, attention_size: 8, dropout: 0.1}}
train:
  output_dir: {root}/experiments
  epochs: 10
  batch_size: 8
  captions_per_image: 2
  lr: 0.01
  warmup_steps: 2
  log_every: 2
  eval_batch_size: 8
  patience: 0
"
    );
    let path = dir.join("tiny.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn caption() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_caption"));
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

fn run_dirs(experiments: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(experiments).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect()).unwrap_or_default()
}

#[test]
fn killed_run_resumes_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let experiments = dir.path().join("experiments");

    let mut child = caption().args(["train", "--config", config.to_str().unwrap()]).stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let run_dir = loop {
        if let Some(run) = run_dirs(&experiments).into_iter().find(|r| r.join("checkpoints/last/train_state.json").is_file()) {
            break run;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("caption train exited ({status}) before writing a checkpoint: {stderr}");
        }
        assert!(Instant::now() < deadline, "no checkpoint after 120 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(child.try_wait().unwrap().is_none(), "the run finished before it could be killed");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("checkpoints/last/train_state.json")).unwrap()).unwrap();
    assert_eq!(killed_at["finished"], false, "{killed_at}");

    let out = caption().args(["train", "--resume", run_dir.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "resume failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("resuming"), "{stdout}");
    assert!(stdout.contains("Test evaluation") && stdout.contains("CIDEr"), "{stdout}");

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("checkpoints/last/train_state.json")).unwrap()).unwrap();
    assert_eq!((state["finished"].as_bool(), state["epoch"].as_u64()), (Some(true), Some(10)), "{state}");
    for name in ["last", "best"] {
        load_checkpoint::<FlexBackend>(&run_dir.join("checkpoints").join(name), &Default::default())
            .unwrap_or_else(|e| panic!("checkpoints/{name}: {e}"));
    }
    assert!(run_dir.join("eval/test/per_image.json").is_file());
    // One line per step logged, never twice, across the kill.
    let steps: Vec<u64> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["kind"] == "train")
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["resumes"].as_array().unwrap().len(), 1);
    // TensorBoard shows each step once: the resumed session's start marker drops the steps
    // that the killed session logged after its last checkpoint.
    if let Some(board) = tensorboard::read(&run_dir.join("tensorboard")) {
        let charted: Vec<u64> = board.scalars["train/loss"].iter().map(|&(step, _)| step).collect();
        assert_eq!(charted, steps, "TensorBoard's steps differ from metrics.jsonl's");
    }
    // `caption eval` on the finished run: its best checkpoint on the val split, with the run's config.
    let out = caption().args(["eval", "--checkpoint", run_dir.to_str().unwrap(), "--split", "val", "--beam-size", "2"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "caption eval failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("val split") && stdout.contains("CIDEr"), "{stdout}");
    let eval_dir = run_dir.join("eval/val");
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(eval_dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["split"], "val");
    assert!(
        metrics["metrics"]["Bleu_4"].is_number()
            && metrics["decoding"]["strategy"]["method"] == "beam"
            && metrics["decoding"]["strategy"]["beam_size"] == 2,
        "{metrics}"
    );
    for file in ["per_image.json", "results.json", "report.md", "report.html"] {
        assert!(eval_dir.join(file).is_file(), "{file} missing");
    }
    // Not a checkpoint: one clear line.
    let out =
        caption().args(["eval", "--checkpoint", dir.path().to_str().unwrap(), "--config", config.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1, "{stderr}");
    std::fs::remove_dir_all(&eval_dir).unwrap();

    // The promotion gate: with nothing in production the run is promoted; the same checkpoint
    // again is not significantly better than itself, so it is not promoted (exit status 10).
    let registry = dir.path().join("registry");
    let gate = ["promote", run_dir.to_str().unwrap(), "--registry", registry.to_str().unwrap(), "--gate-against", "production"];
    let out = caption().args(gate).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("nothing in production") && stdout.contains("promoted tiny-v1"), "{stdout}");
    let out = caption().args(gate).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(10), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("not promoted") && stdout.contains("tiny-v1"), "{stdout}");
    let models =
        String::from_utf8_lossy(&caption().args(["models", "--registry", registry.to_str().unwrap(), "--json"]).output().unwrap().stdout)
            .into_owned();
    assert!(models.contains("tiny-v1") && !models.contains("tiny-v2"), "{models}");
    let gates: Vec<_> = std::fs::read_dir(registry.join("gates")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(gates.len(), 1, "{gates:?}");
    assert!(gates[0].join("compare.md").is_file() && gates[0].join("candidate/per_image.json").is_file());

    // No leftovers of the atomic swaps.
    let leftovers: Vec<_> = std::fs::read_dir(run_dir.join("checkpoints")).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn unknown_train_key_is_reported_with_file_line_and_allowed_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let text = std::fs::read_to_string(&config).unwrap().replace("  lr: 0.01", "  learning_rate: 0.01");
    std::fs::write(&config, text).unwrap();
    let out = caption().args(["train", "--config", config.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tiny.yaml:") && stderr.contains("train") && stderr.contains("unknown field `learning_rate`"), "{stderr}");
    assert!(stderr.contains("expected one of") && stderr.contains("`lr`"), "{stderr}");
    assert!(!dir.path().join("experiments").exists(), "a run directory was created for a bad config");

    let out = caption().args(["train", "--resume", dir.path().to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no config.yaml"));
}

#[test]
fn benchmark_reports_throughput_without_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let out = caption().args(["train", "--config", config.to_str().unwrap(), "--benchmark", "3"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!((json["steps"].as_u64(), json["device"].as_str()), (Some(3), Some("cpu")), "{json}");
    let (images, pairs) = (json["images_per_s"].as_f64().unwrap(), json["caption_pairs_per_s"].as_f64().unwrap());
    // Two captions per image in this config.
    assert!(images > 0.0 && (pairs / images - 2.0).abs() < 1e-9, "{json}");
    assert!(stdout.contains("caption pairs/s"), "{stdout}");
    assert!(!dir.path().join("experiments").exists(), "a benchmark wrote a run directory");
}

/// A frozen encoder: `caption eval --feature-cache` decodes from the feature cache training
/// filled, so greedy decoding of the val split gives exactly the run's own validation scores at
/// its best epoch.
#[test]
fn eval_of_a_frozen_encoder_reads_the_feature_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let text = std::fs::read_to_string(&config).unwrap().replace("finetune: all", "finetune: frozen").replace("epochs: 10", "epochs: 2");
    let text = text + &format!("  feature_cache_dir: {}/features\n  test: false\n", dir.path().display());
    std::fs::write(&config, text).unwrap();
    let out = caption().args(["train", "--config", config.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_dir = run_dirs(&dir.path().join("experiments")).pop().unwrap();
    let best = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|l| l["kind"] == "val" && l["best"] == true)
        .unwrap();

    let eval = ["eval", "--checkpoint", run_dir.to_str().unwrap(), "--split", "val", "--beam-size", "1", "--feature-cache"];
    let out = caption().args(eval).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "caption eval failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("features: val from the cache"), "{stdout}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("eval/val/metrics.json")).unwrap()).unwrap();
    for name in ["Bleu_4", "CIDEr", "ROUGE_L"] {
        assert_eq!(metrics["metrics"][name], best[name], "{name}: eval {metrics} vs validation {best}");
    }
}
