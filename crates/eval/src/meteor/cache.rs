//! METEOR's data prepared once into one binary file, so that a process loads it in
//! milliseconds instead of inflating and indexing the 272 MB paraphrase table every time.
//!
//! The file holds the jar's four text resources as they are and the indexed paraphrase table
//! ([`ParaphraseTable::write_binary`]). It is named after the SHA-256 of the data it was built
//! from (the wheel, or the jar and `paraphrase-en.gz`), which its header repeats, and lives in
//! the cache folder: `$CAPTION_CACHE_DIR`, else `$XDG_CACHE_HOME/caption`, else
//! `~/.cache/caption`, under `meteor/`. Hashing a 100 MB wheel takes longer than loading the
//! cache, so each source's hash is remembered with its size and modification time
//! (`meteor/sources/`); a source whose size or time changed is hashed again, and a changed
//! source therefore gets a new cache file. Files are written to a temporary name and renamed,
//! so a reader never sees half a file; a file that fails its checks is rebuilt.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::paraphrase::{Bytes, ParaphraseTable, read_bytes};

/// The environment variable naming the cache folder.
pub const CACHE_DIR_ENV_VAR: &str = "CAPTION_CACHE_DIR";

const MAGIC: &[u8; 16] = b"caption-meteor\0\x03";

/// What the cache holds: the jar's resources and the paraphrase table.
#[derive(Debug, PartialEq)]
pub(super) struct Prepared {
    pub function_words: String,
    pub prefixes: String,
    pub exceptions: String,
    pub synsets: String,
    pub paraphrases: ParaphraseTable,
}

/// How the data was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheUse {
    /// Read from this cache file.
    Loaded(PathBuf),
    /// Built from the source and written to this cache file.
    Built(PathBuf),
    /// Built from the source; there is no usable cache folder (the reason).
    Unavailable(String),
}

/// The cache folder for METEOR's data.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let root = var(CACHE_DIR_ENV_VAR).or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("caption")));
    let root = root.or_else(|| var("HOME").map(|d| d.join(".cache").join("caption")))?;
    Some(root.join("meteor"))
}

/// The prepared data for `sources` from the cache in `dir`, or built by `build` and cached.
pub(super) fn load_or_build<E>(
    dir: Option<&Path>,
    sources: &[&Path],
    build: impl FnOnce() -> Result<Prepared, E>,
) -> Result<(Prepared, CacheUse), E> {
    let Some(dir) = dir else {
        return Ok((build()?, CacheUse::Unavailable("no cache folder: set CAPTION_CACHE_DIR or HOME".into())));
    };
    let key = match sources_key(dir, sources) {
        Ok(key) => key,
        Err(e) => return Ok((build()?, CacheUse::Unavailable(format!("cannot read the sources: {e}")))),
    };
    let file = dir.join(format!("{key}.bin"));
    if let Ok(prepared) = read(&file, &key) {
        return Ok((prepared, CacheUse::Loaded(file)));
    }
    let prepared = build()?;
    let cache = match write(&file, &key, &prepared) {
        Ok(()) => CacheUse::Built(file),
        Err(e) => CacheUse::Unavailable(format!("cannot write {}: {e}", file.display())),
    };
    Ok((prepared, cache))
}

/// The SHA-256 naming the data built from `sources` (each file's hash, in order, hashed again).
fn sources_key(dir: &Path, sources: &[&Path]) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    for source in sources {
        hasher.update(source_hash(dir, source)?.as_bytes());
    }
    Ok(hex(&hasher.finalize()))
}

/// A source file's SHA-256, remembered under `dir/sources/` with its size and modification
/// time, and computed again when either changes.
fn source_hash(dir: &Path, source: &Path) -> std::io::Result<String> {
    let source = source.canonicalize()?;
    let metadata = std::fs::metadata(&source)?;
    let modified = metadata.modified()?.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let stamp_prefix = format!("{} {modified} ", metadata.len());
    let stamp = dir.join("sources").join(hex(&Sha256::digest(source.as_os_str().as_encoded_bytes())));
    if let Ok(text) = std::fs::read_to_string(&stamp)
        && let Some(hash) = text.strip_prefix(&stamp_prefix)
        && hash.len() == 64
    {
        return Ok(hash.to_string());
    }
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(&source)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let hash = hex(&hasher.finalize());
    // Remembering is an optimisation: a failure only means hashing again next time.
    let _ = write_atomically(&stamp, |out| out.write_all(format!("{stamp_prefix}{hash}").as_bytes()));
    Ok(hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read(file: &Path, key: &str) -> Result<Prepared, String> {
    let opened = std::fs::File::open(file).map_err(|e| e.to_string())?;
    // SAFETY: cache files are written under a temporary name and renamed into place, never
    // changed where they are, so the mapped bytes do not change while they are read. A file
    // that is not a whole cache file is refused by the checks below.
    let map = unsafe { memmap2::Mmap::map(&opened) }.map_err(|e| e.to_string())?;
    let mut input: &[u8] = &map;
    let header = MAGIC.len() + key.len();
    if input.len() < header + 8 || &input[..MAGIC.len()] != MAGIC || &input[MAGIC.len()..header] != key.as_bytes() {
        return Err("not a cache file of this data".into());
    }
    input = &input[header..];
    let mut text = || -> Result<String, String> { String::from_utf8(read_bytes(&mut input)?).map_err(|e| e.to_string()) };
    let (function_words, prefixes, exceptions, synsets) = (text()?, text()?, text()?, text()?);
    let offset = map.len() - input.len();
    let end = map.len().checked_sub(8).filter(|&end| end >= offset).ok_or("the file ends early")?;
    if map[end..] != END.to_le_bytes() {
        return Err("the file does not end where it should".into());
    }
    let paraphrases = ParaphraseTable::from_bytes(Bytes::Mapped { map, offset, end })?;
    Ok(Prepared { function_words, prefixes, exceptions, synsets, paraphrases })
}

const END: u64 = 0x454e_445f_4d45_5445;

fn write(file: &Path, key: &str, prepared: &Prepared) -> std::io::Result<()> {
    write_atomically(file, |out| {
        out.write_all(MAGIC)?;
        out.write_all(key.as_bytes())?;
        for text in [&prepared.function_words, &prepared.prefixes, &prepared.exceptions, &prepared.synsets] {
            out.write_all(&(text.len() as u64).to_le_bytes())?;
            out.write_all(text.as_bytes())?;
        }
        out.write_all(prepared.paraphrases.bytes())?;
        out.write_all(&END.to_le_bytes())
    })
}

/// Writes a temporary file beside `path` with `contents`, flushes it, and renames it into place.
fn write_atomically(
    path: &Path,
    contents: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = (|| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&temporary)?);
        contents(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared() -> Prepared {
        Prepared {
            function_words: "a\nthe\n".into(),
            prefixes: "Mr\n".into(),
            exceptions: "be\nwas were\n".into(),
            synsets: "dog\n1 2\n".into(),
            paraphrases: ParaphraseTable::read("0.1\na b\nc\n0.2\nx\ny z\n".as_bytes()).unwrap(),
        }
    }

    #[test]
    fn builds_once_then_loads_and_rebuilds_when_the_source_changes_or_the_file_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, source) = (dir.path().join("cache"), dir.path().join("data.whl"));
        std::fs::write(&source, "one").unwrap();
        let builds = std::cell::Cell::new(0);
        let load = || {
            load_or_build(Some(&cache), &[&source], || {
                builds.set(builds.get() + 1);
                Ok::<_, ()>(prepared())
            })
            .unwrap()
        };
        let (first, used) = load();
        let CacheUse::Built(file) = used else { panic!("{used:?}") };
        assert_eq!(first, prepared());
        assert_eq!(load(), (prepared(), CacheUse::Loaded(file.clone())));
        assert_eq!(builds.get(), 1);

        // The same bytes with a new time: hashed again, same file.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&source).unwrap().set_modified(later).unwrap();
        assert_eq!(load().1, CacheUse::Loaded(file.clone()));
        // Other bytes: another file.
        std::fs::write(&source, "two").unwrap();
        let (_, used) = load();
        assert!(matches!(&used, CacheUse::Built(other) if *other != file), "{used:?}");
        assert_eq!(builds.get(), 2);
        // A damaged file is built again.
        let CacheUse::Built(file) = used else { unreachable!() };
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(load().1, CacheUse::Built(file.clone()));
        assert_eq!(builds.get(), 3);
        assert!(std::fs::read_dir(file.parent().unwrap()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp-")));
    }

    #[test]
    fn round_trips_and_refuses_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.bin");
        let key = "0".repeat(64);
        write(&file, &key, &prepared()).unwrap();
        assert_eq!(read(&file, &key).unwrap(), prepared());
        assert!(read(&file, &"1".repeat(64)).is_err(), "another key's file was accepted");
        let bytes = std::fs::read(&file).unwrap();
        for cut in [bytes.len() - 1, bytes.len() / 2, 20] {
            std::fs::write(&file, &bytes[..cut]).unwrap();
            assert!(read(&file, &key).is_err(), "a file cut at {cut} bytes was accepted");
        }
    }
}
