//! The model registry: a directory of immutable versions and a pointer to the one in production.
//!
//! ```text
//! registry/
//!   versions/<name>-v<N>/   a copied checkpoint directory + version.json (never changed again)
//!   production              one line: the id of the production version (`tiny-v2`)
//!   history.json            every promotion and rollback, oldest first
//!   .lock                   held while the registry is being changed
//! ```
//!
//! [`promote`] copies a checkpoint into a temporary directory inside `versions/`, loads the copy
//! (so a checkpoint that would not serve is never promoted), renames it into place and then
//! replaces `production` through a temporary file and a rename, so a server reading the
//! registry sees the old production version or the new one, never a half-written one.
//! [`rollback`] moves `production` back to the version that was in production before the
//! current one: promotions push onto a stack replayed from `history.json`, rollbacks pop it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use caption_model::{CheckpointError, FlexBackend, load_checkpoint};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use caption_data::time::now_rfc3339;

pub const VERSIONS_DIR: &str = "versions";
pub const PRODUCTION_FILE: &str = "production";
pub const HISTORY_FILE: &str = "history.json";
pub const VERSION_FILE: &str = "version.json";
const LOCK_FILE: &str = ".lock";
const MAX_NAME_LEN: usize = 64;

/// What `version.json` holds: one promoted checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// `<name>-v<version>`: the directory under `versions/` and what `production` names.
    pub id: String,
    pub name: String,
    /// 1 for the first version promoted under `name`, then 2, 3, ...
    pub version: u32,
    /// The checkpoint directory it was copied from (absolute, at promotion time).
    pub source: PathBuf,
    /// `$USER` of whoever promoted it.
    pub promoted_by: String,
    /// RFC 3339, UTC.
    pub promoted_at: String,
    /// The checkpoint's training run and step.
    pub run_name: String,
    pub step: u64,
    /// The checkpoint's metrics (`"val/CIDEr": 0.93`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// SHA-256 (hex) of every checkpoint file, by path relative to the version's directory,
    /// taken at promotion; checked whenever the version is loaded. Empty for versions promoted
    /// before it was recorded (those are loaded unchecked, with a warning).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

impl Version {
    /// The version's checkpoint directory in `registry`.
    pub fn dir(&self, registry: &Path) -> PathBuf {
        registry.join(VERSIONS_DIR).join(&self.id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Promote,
    Rollback,
}

/// One line of `history.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub action: Action,
    /// The version in production after this change.
    pub version: String,
    /// The version in production before it, if any.
    pub previous: Option<String>,
    pub at: String,
    pub by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{}: no model registry there: `caption promote CHECKPOINT --registry {}` creates one", path.display(), path.display())]
    NoRegistry { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not promoted: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("model name {name:?} {reason}; use letters, digits, '.', '_' and '-' (at most {MAX_NAME_LEN}, not starting with '.' or '-')")]
    BadName { name: String, reason: &'static str },
    #[error("{}: {message}. The registry was edited by hand or a write was interrupted: repair that file or promote again", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{}: version {id} is damaged: {message}. It is not served; roll back or promote another version", path.display())]
    Damaged { id: String, path: PathBuf, message: String },
    #[error("{}: no version is in production yet: promote one with `caption promote`", registry.display())]
    NoProduction { registry: PathBuf },
    #[error("{}: nothing to roll back to: {current} is the first version put in production (or every earlier one was rolled back already)", registry.display())]
    NothingToRollBack { registry: PathBuf, current: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.to_path_buf(), source }
}

/// Checks a model name as given to `--name`.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let bad = |reason| Err(RegistryError::BadName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("is too long");
    }
    if name.starts_with(['.', '-']) {
        return bad("starts with '.' or '-'");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return bad("has characters other than letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// A usable model name made from a run name (`my run/3` → `my-run-3`).
fn name_from_run(run_name: &str) -> String {
    let cleaned: String =
        run_name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    let trimmed = cleaned.trim_start_matches(['.', '-']);
    let name: String = trimmed.chars().take(MAX_NAME_LEN).collect();
    if name.is_empty() { "model".to_string() } else { name }
}

/// Holds the registry's lock file while alive (released by the OS if the process dies).
struct RegistryLock(#[allow(dead_code)] std::fs::File);

fn lock(registry: &Path) -> Result<RegistryLock, RegistryError> {
    let path = registry.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
    // Waits for another promotion or rollback to finish.
    file.lock().map_err(io(&path))?;
    Ok(RegistryLock(file))
}

/// Copies `checkpoint` into `registry` as the next version of `name` (by default the
/// checkpoint's run name) and puts it in production; see the module docs. The registry
/// directory is created if needed.
pub fn promote(registry: &Path, checkpoint: &Path, name: Option<&str>) -> Result<Version, RegistryError> {
    if !checkpoint.is_dir() {
        return Err(CheckpointError::NotFound { path: checkpoint.to_path_buf() }.into());
    }
    let (_, meta) = caption_model::read_checkpoint_info(checkpoint)?;
    let name = match name {
        Some(name) => name.to_string(),
        None => name_from_run(&meta.run_name),
    };
    validate_name(&name)?;

    let versions = registry.join(VERSIONS_DIR);
    std::fs::create_dir_all(&versions).map_err(io(&versions))?;
    let _lock = lock(registry)?;

    let number = list(registry)?.iter().filter(|v| v.name == name).map(|v| v.version).max().unwrap_or(0) + 1;
    let id = format!("{name}-v{number}");
    let version = Version {
        id: id.clone(),
        name,
        version: number,
        source: std::path::absolute(checkpoint).unwrap_or_else(|_| checkpoint.to_path_buf()),
        promoted_by: current_user(),
        promoted_at: now_rfc3339(),
        run_name: meta.run_name.clone(),
        step: meta.step,
        metrics: meta.metrics.clone(),
        files: BTreeMap::new(),
    };

    let tmp = versions.join(format!(".{id}.tmp-{}", std::process::id()));
    let staged = stage_version(&tmp, checkpoint, version);
    if staged.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let version = staged?;
    let target = version.dir(registry);
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(RegistryError::Io { path: target, source: e });
    }
    sync_dir(&versions);

    let previous = read_production_id(registry)?;
    set_production(registry, &version.id)?;
    append_history(
        registry,
        HistoryEntry { action: Action::Promote, version: version.id.clone(), previous, at: now_rfc3339(), by: current_user() },
    )?;
    Ok(version)
}

/// Copies the checkpoint, records its files' hashes in `version.json`, checks that the copy
/// loads, and makes the files read-only (versions are immutable).
fn stage_version(tmp: &Path, checkpoint: &Path, mut version: Version) -> Result<Version, RegistryError> {
    copy_dir(checkpoint, tmp)?;
    version.files = hash_files(tmp)?;
    let json = serde_json::to_string_pretty(&version).expect("a version record serialises");
    write_synced(&tmp.join(VERSION_FILE), json.as_bytes())?;
    // Load what will be served, not the source: a partial copy is caught here.
    load_checkpoint::<FlexBackend>(tmp, &Default::default())?;
    make_read_only(tmp)?;
    sync_dir(tmp);
    Ok(version)
}

/// SHA-256 of every file under `dir` but `version.json`, by relative path with `/`.
fn hash_files(dir: &Path) -> Result<BTreeMap<String, String>, RegistryError> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), RegistryError> {
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
                continue;
            }
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let name: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            let name = name.join("/");
            if name != VERSION_FILE {
                let mut file = std::fs::File::open(&path).map_err(io(&path))?;
                let mut hasher = Sha256::new();
                std::io::copy(&mut file, &mut hasher).map_err(io(&path))?;
                out.insert(name, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect());
            }
        }
        Ok(())
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files)?;
    Ok(files)
}

/// Checks that `version`'s files are the ones promoted: same names, same SHA-256. A version
/// promoted before hashes were recorded passes with a warning.
pub fn verify(registry: &Path, version: &Version) -> Result<(), RegistryError> {
    let dir = version.dir(registry);
    if version.files.is_empty() {
        eprintln!("caption: version {} has no recorded file hashes (promoted by an older caption); loading it unchecked", version.id);
        return Ok(());
    }
    let found = hash_files(&dir).map_err(|e| damaged(version, &dir, format!("cannot read its files ({e})")))?;
    for (name, expected) in &version.files {
        match found.get(name) {
            None => return Err(damaged(version, &dir.join(name), "the file is missing".into())),
            Some(actual) if actual != expected => {
                return Err(damaged(version, &dir.join(name), format!("SHA-256 {actual}, but {expected} was recorded at promotion")));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|name| !version.files.contains_key(*name)) {
        return Err(damaged(version, &dir.join(extra), "a file that was not promoted".into()));
    }
    Ok(())
}

fn damaged(version: &Version, path: &Path, message: String) -> RegistryError {
    RegistryError::Damaged { id: version.id.clone(), path: path.to_path_buf(), message }
}

/// Verifies `version` and loads it as the server would: what a rollback checks before moving
/// the pointer.
fn check_loads(registry: &Path, version: &Version) -> Result<(), RegistryError> {
    verify(registry, version)?;
    load_checkpoint::<FlexBackend>(&version.dir(registry), &Default::default())?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), RegistryError> {
    std::fs::create_dir(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if source.is_dir() {
            copy_dir(&source, &target)?;
        } else {
            std::fs::copy(&source, &target).map_err(io(&source))?;
            sync_file(&target)?;
        }
    }
    Ok(())
}

fn make_read_only(dir: &Path) -> Result<(), RegistryError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            make_read_only(&path)?;
        } else {
            let mut permissions = std::fs::metadata(&path).map_err(io(&path))?.permissions();
            permissions.set_readonly(true);
            std::fs::set_permissions(&path, permissions).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Moves production back to the version before the current one (see the module docs) and
/// returns it.
pub fn rollback(registry: &Path) -> Result<Version, RegistryError> {
    require_registry(registry)?;
    let _lock = lock(registry)?;
    let current = read_production_id(registry)?.ok_or_else(|| RegistryError::NoProduction { registry: registry.to_path_buf() })?;
    let history = read_history(registry)?;
    let mut stack = production_stack(&history);
    if stack.last() != Some(&current) {
        return Err(RegistryError::Corrupt {
            path: registry.join(HISTORY_FILE),
            message: format!(
                "production is {current}, but the history's last production version is {}",
                stack.last().map(String::as_str).unwrap_or("none")
            ),
        });
    }
    stack.pop();
    let target =
        stack.pop().ok_or_else(|| RegistryError::NothingToRollBack { registry: registry.to_path_buf(), current: current.clone() })?;
    let version = read_version(registry, &target)?;
    // A version that would not serve is never put back in production.
    check_loads(registry, &version)?;
    set_production(registry, &version.id)?;
    append_history(
        registry,
        HistoryEntry {
            action: Action::Rollback,
            version: version.id.clone(),
            previous: Some(current),
            at: now_rfc3339(),
            by: current_user(),
        },
    )?;
    Ok(version)
}

/// The production versions in order, replaying promotions (push) and rollbacks (pop).
fn production_stack(history: &[HistoryEntry]) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    for entry in history {
        match entry.action {
            Action::Promote => stack.push(entry.version.clone()),
            Action::Rollback => {
                stack.pop();
                // The version rolled back to is already below; keep the stack honest if not.
                if stack.last() != Some(&entry.version) {
                    stack.push(entry.version.clone());
                }
            }
        }
    }
    stack
}

/// Every version in the registry, in promotion order.
pub fn list(registry: &Path) -> Result<Vec<Version>, RegistryError> {
    require_registry(registry)?;
    let versions_dir = registry.join(VERSIONS_DIR);
    let mut versions = Vec::new();
    if !versions_dir.is_dir() {
        return Ok(versions);
    }
    for entry in std::fs::read_dir(&versions_dir).map_err(io(&versions_dir))? {
        let entry = entry.map_err(io(&versions_dir))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        // Skips staging directories of promotions in progress or interrupted.
        if file_name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        versions.push(read_version(registry, &file_name)?);
    }
    versions.sort_by(|a, b| (&a.promoted_at, &a.name, a.version).cmp(&(&b.promoted_at, &b.name, b.version)));
    Ok(versions)
}

/// The version in production, if one was promoted.
pub fn production(registry: &Path) -> Result<Option<Version>, RegistryError> {
    require_registry(registry)?;
    match read_production_id(registry)? {
        Some(id) => read_version(registry, &id).map(Some),
        None => Ok(None),
    }
}

/// The promotions and rollbacks so far, oldest first.
pub fn history(registry: &Path) -> Result<Vec<HistoryEntry>, RegistryError> {
    require_registry(registry)?;
    read_history(registry)
}

fn require_registry(registry: &Path) -> Result<(), RegistryError> {
    if registry.is_dir() { Ok(()) } else { Err(RegistryError::NoRegistry { path: registry.to_path_buf() }) }
}

fn read_version(registry: &Path, id: &str) -> Result<Version, RegistryError> {
    let path = registry.join(VERSIONS_DIR).join(id).join(VERSION_FILE);
    let corrupt = |message: String| RegistryError::Corrupt { path: path.clone(), message };
    let text = std::fs::read_to_string(&path).map_err(|e| corrupt(format!("cannot read it ({e})")))?;
    let version: Version = serde_json::from_str(&text).map_err(|e| corrupt(format!("not a version record: {e}")))?;
    if version.id != id {
        return Err(corrupt(format!("it says it is {}, but its directory is {id}", version.id)));
    }
    Ok(version)
}

fn read_production_id(registry: &Path) -> Result<Option<String>, RegistryError> {
    let path = registry.join(PRODUCTION_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RegistryError::Io { path, source: e }),
    };
    let id = text.trim().to_string();
    // The id becomes a path: refuse anything that could leave versions/.
    let well_formed = id.rsplit_once("-v").is_some_and(|(name, n)| validate_name(name).is_ok() && n.parse::<u32>().is_ok());
    if !well_formed {
        return Err(RegistryError::Corrupt { path, message: format!("{id:?} is not a version id (NAME-vN)") });
    }
    Ok(Some(id))
}

fn set_production(registry: &Path, id: &str) -> Result<(), RegistryError> {
    replace_file(&registry.join(PRODUCTION_FILE), format!("{id}\n").as_bytes())
}

fn read_history(registry: &Path) -> Result<Vec<HistoryEntry>, RegistryError> {
    let path = registry.join(HISTORY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|e| RegistryError::Corrupt { path, message: format!("not a promotion history: {e}") })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(RegistryError::Io { path, source: e }),
    }
}

fn append_history(registry: &Path, entry: HistoryEntry) -> Result<(), RegistryError> {
    let mut history = read_history(registry)?;
    history.push(entry);
    let json = serde_json::to_string_pretty(&history).expect("the history serialises");
    replace_file(&registry.join(HISTORY_FILE), json.as_bytes())
}

/// Writes `bytes` to a temporary file beside `path`, flushes it and renames it over `path`.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RegistryError::Io { path: path.to_path_buf(), source: e }
    })?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let mut file = std::fs::File::create(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn sync_file(path: &Path) -> Result<(), RegistryError> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io(path))
}

/// Flushes a directory's entries (best effort: not every platform can open directories).
fn sync_dir(path: &Path) {
    if let Ok(dir) = std::fs::File::open(path) {
        let _ = dir.sync_all();
    }
}

fn current_user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_derived_from_run_names() {
        assert!(validate_name("tiny-lstm_2.1").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "-x", "sp ace"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(name_from_run("my run/3"), "my-run-3");
        assert_eq!(name_from_run("///"), "model");
    }

    #[test]
    fn the_stack_replays_promotions_and_rollbacks() {
        let entry =
            |action, version: &str| HistoryEntry { action, version: version.into(), previous: None, at: String::new(), by: String::new() };
        let history = vec![
            entry(Action::Promote, "a-v1"),
            entry(Action::Promote, "a-v2"),
            entry(Action::Promote, "a-v3"),
            entry(Action::Rollback, "a-v2"),
        ];
        assert_eq!(production_stack(&history), vec!["a-v1", "a-v2"]);
    }
}
