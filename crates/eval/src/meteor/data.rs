//! Finding and reading METEOR's data: `meteor-1.5.jar` (read as a zip) and
//! `data/paraphrase-en.gz` beside it, either on disk or inside the pycocoevalcap wheel.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::read::MultiGzDecoder;
use zip::ZipArchive;

use super::paraphrase::ParaphraseTable;
use super::{DATA_ENV_VAR, MeteorUnavailable};

const JAR_NAME: &str = "meteor-1.5.jar";
const PARAPHRASE_NAME: &str = "paraphrase-en.gz";

/// Where the data is: `explicit`, else `$CAPTION_METEOR_DATA`, else an installed
/// pycocoevalcap.
pub(super) fn locate(explicit: Option<&Path>) -> Result<PathBuf, MeteorUnavailable> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(value) = std::env::var_os(DATA_ENV_VAR).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(value));
    }
    if let Some(dir) = python_package_dir() {
        return Ok(dir);
    }
    if let Some(dir) =
        site_packages_dirs().into_iter().map(|dir| dir.join("pycocoevalcap")).find(|dir| dir.join("meteor").join(JAR_NAME).is_file())
    {
        return Ok(dir);
    }
    Err(MeteorUnavailable::new(format!(
        "no METEOR data: no path was given, {DATA_ENV_VAR} is not set, and no installed \
         pycocoevalcap was found"
    )))
}

/// `python3 -c 'import pycocoevalcap, os; print(os.path.dirname(pycocoevalcap.__file__))'`.
fn python_package_dir() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args(["-c", "import pycocoevalcap, os; print(os.path.dirname(pycocoevalcap.__file__))"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    dir.join("meteor").join(JAR_NAME).is_file().then_some(dir)
}

/// The usual site-packages folders of Python 3 installations, virtual environments and conda.
fn site_packages_dirs() -> Vec<PathBuf> {
    let mut lib_dirs: Vec<PathBuf> = vec!["/usr/local/lib".into(), "/usr/lib".into()];
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            lib_dirs.insert(0, PathBuf::from(prefix).join("lib"));
        }
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        lib_dirs.push(PathBuf::from(home).join(".local/lib"));
    }
    let mut dirs = Vec::new();
    for lib in lib_dirs {
        let Ok(entries) = std::fs::read_dir(&lib) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> =
            entries.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("python3")).map(|e| e.path()).collect();
        pythons.sort();
        for python in pythons {
            dirs.push(python.join("site-packages"));
            dirs.push(python.join("dist-packages"));
        }
    }
    dirs.push("/usr/lib/python3/dist-packages".into());
    dirs
}

/// The data files, ready to be read.
pub(super) enum DataFiles {
    /// `meteor-1.5.jar` on disk, `data/paraphrase-en.gz` beside it.
    Jar { jar: PathBuf, paraphrase: PathBuf },
    /// The pycocoevalcap wheel and the names of the jar's and the paraphrase table's entries.
    Wheel { wheel: PathBuf, jar_entry: String, paraphrase_entry: String },
}

fn unavailable(path: &Path, what: impl std::fmt::Display) -> MeteorUnavailable {
    MeteorUnavailable::new(format!("{}: {what}", path.display()))
}

fn open_zip(path: &Path) -> Result<ZipArchive<BufReader<File>>, MeteorUnavailable> {
    let file = File::open(path).map_err(|e| unavailable(path, e))?;
    ZipArchive::new(BufReader::new(file)).map_err(|e| unavailable(path, format_args!("not a readable zip file ({e})")))
}

impl DataFiles {
    /// Resolves `path` (package folder, `meteor` folder, jar, wheel, or a folder with the
    /// wheel) to the jar and the paraphrase table.
    pub(super) fn open(path: &Path) -> Result<DataFiles, MeteorUnavailable> {
        if path.is_dir() {
            for candidate in
                [path.join(JAR_NAME), path.join("meteor").join(JAR_NAME), path.join("pycocoevalcap").join("meteor").join(JAR_NAME)]
            {
                if candidate.is_file() {
                    return DataFiles::open_file(&candidate);
                }
            }
            let mut wheels: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| unavailable(path, e))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.starts_with("pycocoevalcap-") && n.ends_with(".whl")
                    })
                })
                .collect();
            wheels.sort();
            return match wheels.pop() {
                Some(wheel) => DataFiles::open_file(&wheel),
                None => Err(unavailable(
                    path,
                    format_args!(
                        "this folder holds neither {JAR_NAME}, meteor/{JAR_NAME} nor a \
                         pycocoevalcap wheel"
                    ),
                )),
            };
        }
        if !path.exists() {
            return Err(unavailable(path, "no such file or folder"));
        }
        DataFiles::open_file(path)
    }

    fn open_file(path: &Path) -> Result<DataFiles, MeteorUnavailable> {
        let archive = open_zip(path)?;
        if archive.index_for_name("synonym/english.synsets").is_some() {
            let paraphrase = path.parent().unwrap_or(Path::new(".")).join("data").join(PARAPHRASE_NAME);
            if !paraphrase.is_file() {
                return Err(unavailable(&paraphrase, format_args!("the paraphrase table is missing (it belongs beside {JAR_NAME})")));
            }
            return Ok(DataFiles::Jar { jar: path.to_path_buf(), paraphrase });
        }
        let names: Vec<String> = archive.file_names().map(str::to_string).collect();
        let find = |suffix: &str| names.iter().filter(|n| n.ends_with(suffix)).min_by_key(|n| n.len()).cloned();
        let (Some(jar_entry), Some(paraphrase_entry)) =
            (find(&format!("meteor/{JAR_NAME}")), find(&format!("meteor/data/{PARAPHRASE_NAME}")))
        else {
            return Err(unavailable(
                path,
                format_args!(
                    "neither {JAR_NAME} nor a pycocoevalcap wheel with meteor/{JAR_NAME} and \
                     meteor/data/{PARAPHRASE_NAME}"
                ),
            ));
        };
        Ok(DataFiles::Wheel { wheel: path.to_path_buf(), jar_entry, paraphrase_entry })
    }

    /// The files the data is read from: the wheel, or the jar and the paraphrase table.
    pub(super) fn sources(&self) -> Vec<&Path> {
        match self {
            DataFiles::Jar { jar, paraphrase } => vec![jar, paraphrase],
            DataFiles::Wheel { wheel, .. } => vec![wheel],
        }
    }

    /// The jar or the wheel.
    pub(super) fn source(&self) -> &Path {
        match self {
            DataFiles::Jar { jar, .. } => jar,
            DataFiles::Wheel { wheel, .. } => wheel,
        }
    }

    pub(super) fn corrupt(&self, name: &str, what: impl std::fmt::Display) -> MeteorUnavailable {
        unavailable(self.source(), format_args!("{name}: {what}"))
    }

    /// Text files inside the jar, in the order of `names` (decoded as UTF-8, invalid bytes
    /// replaced, as Java's readers do).
    pub(super) fn jar_texts(&self, names: &[&str]) -> Result<Vec<String>, MeteorUnavailable> {
        let jar = match self {
            DataFiles::Jar { jar, .. } => std::fs::read(jar).map_err(|e| unavailable(jar, e))?,
            DataFiles::Wheel { wheel, jar_entry, .. } => {
                let mut bytes = Vec::new();
                open_zip(wheel)?
                    .by_name(jar_entry)
                    .and_then(|mut entry| entry.read_to_end(&mut bytes).map_err(Into::into))
                    .map_err(|e| unavailable(wheel, format_args!("cannot read {jar_entry}: {e}")))?;
                bytes
            }
        };
        let mut archive =
            ZipArchive::new(Cursor::new(jar.as_slice())).map_err(|e| self.corrupt(JAR_NAME, format_args!("not a readable jar ({e})")))?;
        let mut texts = Vec::with_capacity(names.len());
        for name in names {
            let mut bytes = Vec::new();
            archive
                .by_name(name)
                .and_then(|mut entry| entry.read_to_end(&mut bytes).map_err(Into::into))
                .map_err(|e| self.corrupt(name, format_args!("cannot read it from {JAR_NAME} ({e})")))?;
            texts.push(match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            });
        }
        Ok(texts)
    }

    /// Reads and indexes the paraphrase table.
    pub(super) fn paraphrase_table(&self) -> Result<ParaphraseTable, MeteorUnavailable> {
        const BUFFER: usize = 1 << 20;
        let result = match self {
            DataFiles::Jar { paraphrase, .. } => {
                let file = File::open(paraphrase).map_err(|e| unavailable(paraphrase, e))?;
                let gz = MultiGzDecoder::new(BufReader::with_capacity(BUFFER, file));
                ParaphraseTable::read(BufReader::with_capacity(BUFFER, gz))
            }
            DataFiles::Wheel { wheel, paraphrase_entry, .. } => {
                let mut archive = open_zip(wheel)?;
                let entry = archive.by_name(paraphrase_entry).map_err(|e| unavailable(wheel, format_args!("{paraphrase_entry}: {e}")))?;
                let gz = MultiGzDecoder::new(BufReader::with_capacity(BUFFER, entry));
                ParaphraseTable::read(BufReader::with_capacity(BUFFER, gz))
            }
        };
        result.map_err(|e| self.corrupt(PARAPHRASE_NAME, e))
    }
}
