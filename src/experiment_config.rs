//! The experiment config: one YAML file, strictly typed, every default in a `Default` impl of
//! the crate that owns the section (`caption config defaults` prints them all).
//!
//! Loading reports errors as `file:line:column: key.path: problem`, and `--set key.path=value`
//! overrides are applied to the parsed YAML tree before it is typed, so they are checked by
//! exactly the same rules as the file.

use anyhow::{Context, Result, anyhow, bail};
use caption_train::RunConfig;
use serde_norway::Value;
use std::path::Path;

/// The experiment config is the training crate's run config (`name`, `seed`, `data`, `model`,
/// `train`, `scst`): every command reads the sections it needs from it.
pub type ExperimentConfig = RunConfig;

/// Reads `path`, applies the `--set` overrides, and checks the result.
pub fn load(path: &Path, overrides: &[String]) -> Result<ExperimentConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    // Type the file on its own first, so that its mistakes come with line and column.
    let from_file: ExperimentConfig = from_yaml_text(&text).map_err(|message| anyhow!("{}:{message}", path.display()))?;
    let config = if overrides.is_empty() {
        from_file
    } else {
        let mut tree: Value = serde_norway::from_str(&text).with_context(|| format!("{}: not valid YAML", path.display()))?;
        for assignment in overrides {
            apply_override(&mut tree, assignment)?;
        }
        serde_path_to_error::deserialize(tree)
            .map_err(|e| anyhow!("{} with --set overrides: {}: {}", path.display(), key_path(e.path()), e.inner()))?
    };
    config.validate().with_context(|| format!("{}", path.display()))?;
    Ok(config)
}

/// Types YAML text, returning `line:column: key.path: problem` on failure.
fn from_yaml_text(text: &str) -> std::result::Result<ExperimentConfig, String> {
    let deserializer = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let location = e.inner().location().map(|l| format!("{}:{}: ", l.line(), l.column())).unwrap_or_else(|| " ".into());
        format!("{location}{}: {}", key_path(e.path()), strip_location(&e.inner().to_string()))
    })
}

fn key_path(path: &serde_path_to_error::Path) -> String {
    let path = path.to_string();
    if path == "." { "(top level)".into() } else { path }
}

/// serde_norway appends " at line L column C" to its messages; the location is already in front.
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// Applies `key.path=value` to the YAML tree; the value is parsed as YAML (numbers, booleans,
/// lists), intermediate mappings are created as needed.
fn apply_override(tree: &mut Value, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("--set {assignment}: expected key.path=value");
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {assignment}: the key must be a dotted path like data.vocab.min_count");
    }
    let value: Value = if raw.trim().is_empty() {
        Value::String(String::new())
    } else {
        serde_norway::from_str(raw).with_context(|| format!("--set {assignment}: value is not valid YAML"))?
    };
    let mut node = tree;
    for part in key.split('.') {
        if node.is_null() {
            *node = Value::Mapping(Default::default());
        }
        let Value::Mapping(map) = node else {
            bail!("--set {assignment}: `{part}` is inside a value that is not a mapping");
        };
        node = map.entry(Value::String(part.to_string())).or_insert(Value::Null);
    }
    *node = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, overrides: &[&str]) -> Result<ExperimentConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        load(&path, &overrides)
    }

    const FLICKR: &str = "name: t\ndata:\n  format: flickr\n  annotations: a.txt\n  images: imgs\n";

    #[test]
    fn unknown_key_names_line_key_and_allowed_values() {
        let err = load_text("name: t\ndata:\n  format: flickr\n  vocabb: {}\n", &[]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("config.yaml:4:"), "{msg}");
        assert!(msg.contains("unknown field `vocabb`"), "{msg}");
        assert!(msg.contains("expected one of"), "{msg}");
    }

    #[test]
    fn wrong_enum_value_lists_the_allowed_ones() {
        let msg = format!("{:#}", load_text("data:\n  format: cocoa\n", &[]).unwrap_err());
        assert!(msg.contains("data.format"), "{msg}");
        assert!(msg.contains("coco") && msg.contains("karpathy") && msg.contains("flickr"), "{msg}");
    }

    #[test]
    fn overrides_change_values_and_are_checked() {
        let config = load_text(FLICKR, &["data.vocab.min_count=3", "seed=7"]).unwrap();
        assert_eq!(config.data.vocab.min_count, 3);
        assert_eq!(config.seed, 7);
        let msg = format!("{:#}", load_text(FLICKR, &["data.vocab.min_cnt=3"]).unwrap_err());
        assert!(msg.contains("data.vocab") && msg.contains("min_cnt"), "{msg}");
        let msg = format!("{:#}", load_text(FLICKR, &["seed"]).unwrap_err());
        assert!(msg.contains("key.path=value"), "{msg}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let msg = format!("{:#}", load_text("data:\n  format: flickr\n  images: x\n", &[]).unwrap_err());
        assert!(msg.contains("data.annotations"), "{msg}");
    }

    #[test]
    fn unknown_train_key_is_named_with_its_line() {
        let msg = format!("{:#}", load_text("name: t\ntrain:\n  epochs: 2\n  learning_rate: 0.1\n", &[]).unwrap_err());
        assert!(msg.contains("config.yaml:4:"), "{msg}");
        assert!(msg.contains("train") && msg.contains("unknown field `learning_rate`"), "{msg}");
        assert!(msg.contains("expected one of") && msg.contains("`lr`"), "{msg}");
        let msg = format!("{:#}", load_text(FLICKR, &["train.best_metric=BLEU"]).unwrap_err());
        assert!(msg.contains("best_metric") && msg.contains("CIDEr"), "{msg}");
    }

    #[test]
    fn defaults_round_trip_through_yaml() {
        let yaml = ExperimentConfig::default().to_yaml().unwrap();
        let back: ExperimentConfig = from_yaml_text(&yaml).unwrap();
        assert_eq!(back, ExperimentConfig::default());
    }
}
