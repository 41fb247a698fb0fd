//! API keys. The keys file holds only SHA-256 hashes of the keys, so a leaked file does not leak
//! keys; a new key is shown once, when `caption serve keys add` creates it.
//!
//! ```json
//! {"keys": [{"name": "alice", "sha256": "9f86d0...", "created": "2025-01-31T12:00:00Z"}]}
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use caption_data::time::now_rfc3339;

/// Every key starts with this, so that keys are recognisable in logs and secret scanners.
const KEY_PREFIX: &str = "cap_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Who or what the key is for; unique in the file, used in logs and rate limiting.
    pub name: String,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
    pub created: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{}: no keys file: create one with `caption serve keys add NAME --keys {}`, or set `auth: disabled` in serve.yaml", path.display(), path.display())]
    Missing { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a keys file: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{}: there is already a key named {name:?}: remove it first (`caption serve keys remove {name}`) or choose another name", path.display())]
    Duplicate { path: PathBuf, name: String },
    #[error("{}: no key named {name:?}", path.display())]
    Unknown { path: PathBuf, name: String },
    #[error("key name {0:?} is empty or has whitespace or control characters")]
    BadName(String),
    #[error("cannot generate a random key: {0}")]
    Random(String),
}

/// Who presented a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    /// The key's name in the keys file, for logs.
    pub name: String,
    /// The key's SHA-256 (hex). Requests, jobs and feedback belong to it rather than to the
    /// name, so that a key re-added under an old name sees nothing of the old key's.
    pub id: String,
}

/// The hashes of the accepted keys.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    keys: Vec<(String, [u8; 32])>,
}

impl KeyStore {
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let file = read(path, false)?;
        let mut keys = Vec::with_capacity(file.keys.len());
        for record in file.keys {
            let hash = parse_hex_hash(&record.sha256).ok_or_else(|| KeysError::Corrupt {
                path: path.to_path_buf(),
                message: format!("key {:?}: `sha256` is not 64 hex digits", record.name),
            })?;
            keys.push((record.name, hash));
        }
        Ok(KeyStore { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Who `presented` belongs to, if it is a key. Every stored hash is compared in full,
    /// whatever matches, so the time taken says nothing about the keys.
    pub fn verify(&self, presented: &str) -> Option<KeyIdentity> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (name, stored) in &self.keys {
            if constant_time_eq(&hash, stored) {
                found = Some(name);
            }
        }
        found.map(|name| KeyIdentity { name: name.clone(), id: hex(&hash) })
    }
}

/// The keys file as the server follows it: read again whenever it changes on disk (a key
/// added or removed with `caption serve keys` takes effect without a restart).
#[derive(Debug)]
pub struct WatchedKeys {
    path: PathBuf,
    current: RwLock<(KeyStore, Option<FileStamp>)>,
}

/// What tells a changed file: keys files are replaced by a rename, so the inode changes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp { modified: metadata.modified().ok(), len: metadata.len(), inode })
    }
}

impl WatchedKeys {
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let stamp = FileStamp::of(path);
        let store = KeyStore::load(path)?;
        Ok(WatchedKeys { path: path.to_path_buf(), current: RwLock::new((store, stamp)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file held no key when last read.
    pub fn is_empty(&self) -> bool {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).0.is_empty()
    }

    /// Who `presented` belongs to, by the keys file as it is now. A file that became unreadable
    /// keeps the last good keys (and says so); a deleted file accepts no key.
    pub fn verify(&self, presented: &str) -> Option<KeyIdentity> {
        self.refresh();
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).0.verify(presented)
    }

    fn refresh(&self) {
        let stamp = FileStamp::of(&self.path);
        if self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).1 == stamp {
            return;
        }
        let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.1 == stamp {
            return;
        }
        match KeyStore::load(&self.path) {
            Ok(store) => {
                eprintln!("caption serve: {} changed: {} key(s) now", self.path.display(), store.len());
                *current = (store, stamp);
            }
            Err(KeysError::Missing { .. }) => {
                eprintln!("caption serve: {} is gone: no key is accepted until it is back", self.path.display());
                *current = (KeyStore::default(), stamp);
            }
            Err(error) => {
                eprintln!("caption serve: {error}; keeping the keys read before");
                current.1 = stamp;
            }
        }
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference |= x ^ y;
    }
    // Keeps the compiler from turning the loop into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

fn parse_hex_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a key named `name`, stores its hash in `path` (created if absent) and returns the key:
/// the only time it is ever available.
pub fn add_key(path: &Path, name: &str) -> Result<String, KeysError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KeysError::BadName(name.to_string()));
    }
    let mut file = read(path, true)?;
    if file.keys.iter().any(|k| k.name == name) {
        return Err(KeysError::Duplicate { path: path.to_path_buf(), name: name.to_string() });
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| KeysError::Random(e.to_string()))?;
    let key = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let sha256 = hex(&Sha256::digest(key.as_bytes()));
    file.keys.push(KeyRecord { name: name.to_string(), sha256, created: now_rfc3339() });
    write(path, &file)?;
    Ok(key)
}

pub fn remove_key(path: &Path, name: &str) -> Result<(), KeysError> {
    let mut file = read(path, false)?;
    let before = file.keys.len();
    file.keys.retain(|k| k.name != name);
    if file.keys.len() == before {
        return Err(KeysError::Unknown { path: path.to_path_buf(), name: name.to_string() });
    }
    write(path, &file)
}

pub fn list_keys(path: &Path) -> Result<Vec<KeyRecord>, KeysError> {
    Ok(read(path, false)?.keys)
}

fn read(path: &Path, missing_is_empty: bool) -> Result<KeysFile, KeysError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| KeysError::Corrupt { path: path.to_path_buf(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing_is_empty => Ok(KeysFile::default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(KeysError::Missing { path: path.to_path_buf() }),
        Err(source) => Err(KeysError::Io { path: path.to_path_buf(), source }),
    }
}

/// Replaces the file through a temporary one (readable by its owner only) and a rename.
fn write(path: &Path, file: &KeysFile) -> Result<(), KeysError> {
    let io = |source| KeysError::Io { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let json = serde_json::to_string_pretty(file).expect("the keys file serialises");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options.open(&tmp).and_then(|mut f| {
        f.write_all(json.as_bytes())?;
        f.sync_all()
    });
    result.and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_keys_verify_and_only_their_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let alice = add_key(&path, "alice").unwrap();
        let bob = add_key(&path, "bob").unwrap();
        assert!(alice.starts_with(KEY_PREFIX) && alice != bob);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&alice) && text.contains(&hex(&Sha256::digest(alice.as_bytes()))));

        let store = KeyStore::load(&path).unwrap();
        let identity = store.verify(&alice).unwrap();
        assert_eq!((identity.name.as_str(), identity.id.clone()), ("alice", hex(&Sha256::digest(alice.as_bytes()))));
        assert_eq!(store.verify(&bob).unwrap().name, "bob");
        assert_eq!(store.verify("cap_wrong"), None);
        assert_eq!(store.verify(""), None);

        assert!(matches!(add_key(&path, "alice"), Err(KeysError::Duplicate { .. })));
        remove_key(&path, "alice").unwrap();
        assert_eq!(KeyStore::load(&path).unwrap().verify(&alice), None);
        assert!(matches!(remove_key(&path, "alice"), Err(KeysError::Unknown { .. })));
        // A re-added name is another key.
        let alice_again = add_key(&path, "alice").unwrap();
        assert_ne!(KeyStore::load(&path).unwrap().verify(&alice_again).unwrap().id, identity.id);
    }

    #[test]
    fn a_missing_or_corrupt_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        assert!(KeyStore::load(&path).unwrap_err().to_string().contains("caption serve keys add"));
        std::fs::write(&path, r#"{"keys": [{"name": "x", "sha256": "zz", "created": ""}]}"#).unwrap();
        assert!(KeyStore::load(&path).unwrap_err().to_string().contains("64 hex digits"));
    }

    #[test]
    fn watched_keys_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let alice = add_key(&path, "alice").unwrap();
        let watched = WatchedKeys::load(&path).unwrap();
        assert_eq!(watched.verify(&alice).unwrap().name, "alice");
        let bob = add_key(&path, "bob").unwrap();
        assert_eq!(watched.verify(&bob).unwrap().name, "bob", "an added key works at once");
        remove_key(&path, "alice").unwrap();
        assert_eq!(watched.verify(&alice), None, "a removed key stops working at once");
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(watched.verify(&bob).unwrap().name, "bob", "a broken file keeps the last good keys");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(watched.verify(&bob), None, "no file, no keys");
    }
}
