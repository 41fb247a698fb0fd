//! API keys. The keys file holds only SHA-256 hashes of the keys, so a leaked file does not leak
//! keys; a new key is shown once, when `caption serve keys add` creates it.
//!
//! ```json
//! {"keys": [{"name": "alice", "sha256": "9f86d0...", "created": "2025-01-31T12:00:00Z"}]}
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The hashes of the accepted keys, loaded once at start-up.
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

    /// The name of the key `presented`, if it is one. Every stored hash is compared in full,
    /// whatever matches, so the time taken says nothing about the keys.
    pub fn verify(&self, presented: &str) -> Option<&str> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (name, stored) in &self.keys {
            if constant_time_eq(&hash, stored) {
                found = Some(name.as_str());
            }
        }
        found
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
        assert_eq!(store.verify(&alice), Some("alice"));
        assert_eq!(store.verify(&bob), Some("bob"));
        assert_eq!(store.verify("cap_wrong"), None);
        assert_eq!(store.verify(""), None);

        assert!(matches!(add_key(&path, "alice"), Err(KeysError::Duplicate { .. })));
        remove_key(&path, "alice").unwrap();
        assert_eq!(KeyStore::load(&path).unwrap().verify(&alice), None);
        assert!(matches!(remove_key(&path, "alice"), Err(KeysError::Unknown { .. })));
    }

    #[test]
    fn a_missing_or_corrupt_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        assert!(KeyStore::load(&path).unwrap_err().to_string().contains("caption serve keys add"));
        std::fs::write(&path, r#"{"keys": [{"name": "x", "sha256": "zz", "created": ""}]}"#).unwrap();
        assert!(KeyStore::load(&path).unwrap_err().to_string().contains("64 hex digits"));
    }
}
