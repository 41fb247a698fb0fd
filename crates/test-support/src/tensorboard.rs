//! Reads a TensorBoard directory back with the official `tensorboard` Python package
//! (`scripts/reference/read_tensorboard.py`), so the tests check what TensorBoard itself sees.
//! `.ci/run` installs the package in `target/tb-venv`; `CAPTION_TENSORBOARD_PYTHON` names
//! another interpreter that has it; `CAPTION_SKIP_TENSORBOARD=1` skips these checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Board {
    pub scalars: BTreeMap<String, Vec<(u64, f64)>>,
    pub text: BTreeMap<String, Vec<(u64, String)>>,
}

/// The checkout: this crate is `crates/test-support` in it.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap_or(Path::new(".")).to_path_buf()
}

/// The interpreter to read with, or `None` when told to skip.
fn python() -> Option<PathBuf> {
    if std::env::var("CAPTION_SKIP_TENSORBOARD").as_deref() == Ok("1") {
        eprintln!("skipping the TensorBoard read-back: CAPTION_SKIP_TENSORBOARD=1");
        return None;
    }
    if let Some(path) = std::env::var_os("CAPTION_TENSORBOARD_PYTHON").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let venv = workspace().join("target/tb-venv/bin/python");
    if venv.is_file() {
        return Some(venv);
    }
    panic!(
        "reading TensorBoard files back needs the `tensorboard` Python package: run \
         `python3 -m venv target/tb-venv && target/tb-venv/bin/pip install tensorboard` in the \
         workspace (as .ci/run does), or set CAPTION_TENSORBOARD_PYTHON, or \
         CAPTION_SKIP_TENSORBOARD=1 to skip"
    );
}

/// Everything TensorBoard reads from `dir`, or `None` when skipping.
pub fn read(dir: &Path) -> Option<Board> {
    let python = python()?;
    let script = workspace().join("scripts/reference/read_tensorboard.py");
    let out = Command::new(&python).arg(&script).arg(dir).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(out.status.success(), "{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("read_tensorboard.py prints JSON");
    let scalars = json["scalars"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tag, points)| {
            let points = points.as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap())).collect();
            (tag.clone(), points)
        })
        .collect();
    let text = json["text"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tag, points)| {
            let points = points.as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_str().unwrap().to_string())).collect();
            (tag.clone(), points)
        })
        .collect();
    Some(Board { scalars, text })
}
