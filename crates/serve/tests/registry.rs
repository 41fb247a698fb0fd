//! The model registry on disk: promotion copies and records, production moves atomically,
//! rollback walks back through the promotions, and bad input leaves the registry untouched.

use caption_serve_testkit as common;

use caption_serve::registry::{self, Action, RegistryError};

#[test]
fn promotions_are_immutable_versions_and_rollback_walks_back() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    let checkpoint = dir.path().join("ckpt");
    common::write_checkpoint(&checkpoint, "my run/3", 0.81);

    let v1 = registry::promote(&registry, &checkpoint, None).unwrap();
    assert_eq!((v1.id.as_str(), v1.name.as_str(), v1.version), ("my-run-3-v1", "my-run-3", 1));
    assert_eq!(v1.metrics["val/CIDEr"], 0.81);
    assert_eq!((v1.run_name.as_str(), v1.step), ("my run/3", 7));
    assert!(v1.source.is_absolute() && v1.source.ends_with("ckpt"));
    assert!(!v1.promoted_by.is_empty() && v1.promoted_at.ends_with('Z'));
    let copied = v1.dir(&registry);
    for file in ["model.safetensors", "config.json", "vocab.json", "meta.json", "version.json"] {
        let path = copied.join(file);
        assert!(std::fs::metadata(&path).unwrap().permissions().readonly(), "{} is writable", path.display());
    }
    assert_eq!(std::fs::read_to_string(registry.join("production")).unwrap(), "my-run-3-v1\n");

    // Changing the source afterwards does not change the version.
    std::fs::write(checkpoint.join("meta.json"), "{}").unwrap();
    assert_eq!(registry::production(&registry).unwrap().unwrap(), v1);
    common::write_checkpoint(&checkpoint, "my run/3", 0.9);

    let v2 = registry::promote(&registry, &checkpoint, None).unwrap();
    let other = registry::promote(&registry, &checkpoint, Some("other")).unwrap();
    let v3 = registry::promote(&registry, &checkpoint, None).unwrap();
    assert_eq!((v2.id.as_str(), other.id.as_str(), v3.id.as_str()), ("my-run-3-v2", "other-v1", "my-run-3-v3"));
    let ids: Vec<String> = registry::list(&registry).unwrap().into_iter().map(|v| v.id).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(registry::production(&registry).unwrap().unwrap().id, "my-run-3-v3");

    // Back through the promotions, one at a time, until there is nothing left.
    assert_eq!(registry::rollback(&registry).unwrap().id, "other-v1");
    assert_eq!(registry::rollback(&registry).unwrap().id, "my-run-3-v2");
    assert_eq!(registry::rollback(&registry).unwrap().id, "my-run-3-v1");
    let err = registry::rollback(&registry).unwrap_err();
    assert!(matches!(err, RegistryError::NothingToRollBack { .. }), "{err}");
    assert_eq!(registry::production(&registry).unwrap().unwrap().id, "my-run-3-v1");
    // A promotion after rollbacks stacks on the current production version.
    registry::promote(&registry, &checkpoint, Some("other")).unwrap();
    assert_eq!(registry::rollback(&registry).unwrap().id, "my-run-3-v1");

    let history = registry::history(&registry).unwrap();
    let actions: Vec<Action> = history.iter().map(|h| h.action).collect();
    assert_eq!(actions.iter().filter(|a| **a == Action::Promote).count(), 5);
    assert_eq!(actions.iter().filter(|a| **a == Action::Rollback).count(), 4);
    assert_eq!(history[1].previous.as_deref(), Some("my-run-3-v1"));
}

#[test]
fn bad_checkpoints_and_names_are_refused_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    let checkpoint = dir.path().join("ckpt");
    common::write_checkpoint(&checkpoint, "tiny", 0.5);
    registry::promote(&registry, &checkpoint, None).unwrap();

    let err = registry::promote(&registry, &dir.path().join("missing"), None).unwrap_err().to_string();
    assert!(err.contains("missing") && err.contains("no checkpoint directory"), "{err}");
    let err = registry::promote(&registry, &checkpoint, Some("../escape")).unwrap_err().to_string();
    assert!(err.contains("../escape"), "{err}");

    // Truncated weights: caught by loading the copy, and nothing is left behind.
    let weights = checkpoint.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = registry::promote(&registry, &checkpoint, None).unwrap_err().to_string();
    assert!(err.starts_with("not promoted") && err.contains("model.safetensors"), "{err}");
    let entries: Vec<String> =
        std::fs::read_dir(registry.join("versions")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries, ["tiny-v1"]);
    assert_eq!(registry::production(&registry).unwrap().unwrap().id, "tiny-v1");
    assert!(matches!(registry::rollback(&registry), Err(RegistryError::NothingToRollBack { .. })));

    // A production pointer edited into a path is refused, not followed.
    std::fs::write(registry.join("production"), "../../etc-v1\n").unwrap();
    let err = registry::production(&registry).unwrap_err().to_string();
    assert!(err.contains("not a version id"), "{err}");

    let err = registry::list(&dir.path().join("none")).unwrap_err().to_string();
    assert!(err.contains("no model registry") && err.contains("caption promote"), "{err}");
}
