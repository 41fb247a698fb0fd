//! The feature cache: with a frozen encoder, every epoch would run the same CNN on the same
//! images, so the grid features of each split are computed once, stored as f16 on disk and read
//! back by every later run with the same encoder (ImageCaptioning.pytorch's precomputed
//! `_att`/`_fc` folders, made automatically).
//!
//! ```text
//! <train.feature_cache_dir>/<key>/
//!   train.json, train.f16    header (format, shape, image paths) and the features
//!   val.json,   val.f16      [n, C, H, W] little-endian f16, image i at i * C * H * W
//!   test.json,  test.f16
//! ```
//!
//! `<key>` is the SHA-256 of everything the features depend on: the encoder's architecture,
//! its weights (every tensor of its record, BatchNorm statistics included), the image
//! preprocessing and this format's version. A split's header lists the image files (path, size
//! and modification time) and the SHA-256 of each file's bytes. A split whose files carry the
//! stamps of the header is read at once; when only the stamps moved (a copied or re-extracted
//! dataset), the files are hashed and the cache is still used if their bytes are the same;
//! otherwise the split is recomputed. A split with exactly another split's images (Flickr8k's dev
//! list serving as val and test) reads that split's features instead of computing them again.
//! Files are written to a temporary name and renamed, so a killed run never leaves a
//! half-written cache.

use std::cell::OnceCell;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use caption_data::fsutil::write_atomic;
use caption_data::image::ImageConfig;
use caption_model::{Encoder, EncoderConfig, EncoderOutput};
use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::ImageSource;

/// Bumped when the same inputs would give different files.
const FORMAT_VERSION: u32 = 1;

/// One split's cached feature maps, in the order of its samples.
pub struct FeatureSet {
    /// `[C, H, W]` of one image's feature map.
    pub shape: [usize; 3],
    /// f16 bit patterns, `len * C * H * W` of them.
    data: Vec<u16>,
}

impl FeatureSet {
    pub fn len(&self) -> usize {
        self.data.len() / self.image_len().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Floats per image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The feature maps of `indices`, concatenated as f32 (`[indices.len(), C, H, W]`).
    pub fn gather(&self, indices: &[usize]) -> Vec<f32> {
        let n = self.image_len();
        let mut out = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            out.extend(self.data[i * n..(i + 1) * n].iter().map(|&bits| f16::from_bits(bits).to_f32()));
        }
        out
    }

    /// The encoder output of `indices` on `device`.
    pub fn encoder_output<B: Backend>(&self, indices: &[usize], device: &B::Device) -> EncoderOutput<B> {
        let [c, h, w] = self.shape;
        let map = Tensor::<B, 4>::from_data(TensorData::new(self.gather(indices), [indices.len(), c, h, w]), device);
        EncoderOutput::from_feature_map(map)
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Header {
    format_version: u32,
    key: String,
    dtype: String,
    /// `[n, C, H, W]`.
    shape: [usize; 4],
    /// Per image: `path size mtime_seconds`.
    images: Vec<String>,
    /// Per image: the SHA-256 of the file's bytes (absent from caches written before it was kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    content: Vec<String>,
}

/// What identifies an image file's content cheaply: its path, size and modification time.
fn image_stamp(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let mtime =
        meta.and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0);
    format!("{} {size} {mtime}", path.display())
}

/// The SHA-256 of each file's bytes, hex; an unreadable file hashes to an empty string, which
/// matches no cache.
fn content_hashes(paths: &[&Path]) -> Vec<String> {
    paths
        .par_iter()
        .map(|path| match std::fs::read(path) {
            Ok(bytes) => Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect(),
            Err(_) => String::new(),
        })
        .collect()
}

/// Feeds every float tensor of a module (parameters and BatchNorm statistics, in visiting
/// order, with their shapes) to a hash. Parameter ids are left out: they are random.
struct HashTensors<'a>(&'a mut Sha256);

impl<B: Backend> ModuleVisitor<B> for HashTensors<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        for dim in value.dims() {
            self.0.update((dim as u64).to_le_bytes());
        }
        let data = value.into_data().convert::<f32>();
        self.0.update(data.as_bytes());
    }
}

/// The cache key of an encoder (architecture and weights) with a preprocessing.
pub fn cache_key<B: Backend>(config: &EncoderConfig, encoder: &Encoder<B>, preprocess: &ImageConfig) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(format!("caption feature cache v{FORMAT_VERSION}\n"));
    hasher.update(serde_json::to_vec(config)?);
    hasher.update(serde_json::to_vec(preprocess)?);
    encoder.visit(&mut HashTensors(&mut hasher));
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The features of `source` under `dir/<key>/<split>.*`: read when present and current,
/// otherwise computed with `encoder` (an inference module: eval-mode BatchNorm) and written.
pub fn load_or_compute<B: Backend>(
    dir: &Path,
    key: &str,
    split: &str,
    encoder: &Encoder<B>,
    source: &ImageSource,
    batch_size: usize,
    device: &B::Device,
) -> Result<FeatureSet> {
    let folder = dir.join(key);
    let header_path = folder.join(format!("{split}.json"));
    let data_path = folder.join(format!("{split}.f16"));
    let paths: Vec<&Path> = source.samples.iter().map(|s| s.image_path.as_path()).collect();
    let stamps: Vec<String> = paths.iter().map(|p| image_stamp(p)).collect();
    // Hashing reads every image, so it is done at most once: when a stamp moved, or to write.
    let content = OnceCell::new();
    if let Some(set) = lookup(&folder, split, key, &stamps, &paths, &content)? {
        return Ok(set);
    }
    let start = Instant::now();
    let size = source.config.size as usize;
    let indices: Vec<usize> = (0..source.len()).collect();
    let mut shape = [0usize; 3];
    let mut data: Vec<u16> = Vec::new();
    for chunk in indices.chunks(batch_size.max(1)) {
        let pixels = source.pixels(chunk, None)?;
        let batch = Tensor::<B, 4>::from_data(TensorData::new(pixels, [chunk.len(), 3, size, size]), device);
        let map = encoder.feature_map(batch);
        let [_, c, h, w] = map.dims();
        shape = [c, h, w];
        let values = map.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("reading encoder features: {e:?}"))?;
        data.extend(values.iter().map(|&v| f16::from_f32(v).to_bits()));
    }
    let set = FeatureSet { shape, data };
    let content = content.get_or_init(|| content_hashes(&paths));
    write(&folder, &header_path, &data_path, key, &stamps, content, &set)?;
    println!(
        "features: {split}, {} images of {}x{}x{} computed in {:.1}s and cached in {}",
        set.len(),
        shape[0],
        shape[1],
        shape[2],
        start.elapsed().as_secs_f64(),
        folder.display()
    );
    Ok(set)
}

/// The cached features of `paths` in `folder`: this split's own cache, else the cache of another
/// split with the same images; `None` when neither is current.
/// `stamps` are the images' stamps; `content` their hashes, computed on first need.
fn lookup(
    folder: &Path,
    split: &str,
    key: &str,
    stamps: &[String],
    paths: &[&Path],
    content: &OnceCell<Vec<String>>,
) -> Result<Option<FeatureSet>> {
    let own = folder.join(format!("{split}.json"));
    if let Some(set) = read(&own, &folder.join(format!("{split}.f16")), key, stamps, paths, content, true)? {
        println!("features: {split} from the cache {} ({} images)", folder.display(), set.len());
        return Ok(Some(set));
    }
    let mut others: Vec<PathBuf> =
        std::fs::read_dir(folder).map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    others.retain(|p| p.extension().is_some_and(|e| e == "json") && *p != own);
    others.sort();
    for header_path in others {
        let other = header_path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        if let Some(set) = read(&header_path, &header_path.with_extension("f16"), key, stamps, paths, content, false)? {
            println!("features: {split} has the images of {other}; reading its cache {} ({} images)", folder.display(), set.len());
            return Ok(Some(set));
        }
    }
    Ok(None)
}

/// One split's cache file, if it holds the features of `paths`: their stamps match the header's,
/// or their bytes match its content hashes (the header then takes the new stamps). Says why the
/// split's `own` cache is not used; another split's cache is only a candidate.
fn read(
    header_path: &Path,
    data_path: &Path,
    key: &str,
    stamps: &[String],
    paths: &[&Path],
    content: &OnceCell<Vec<String>>,
    own: bool,
) -> Result<Option<FeatureSet>> {
    let Ok(text) = std::fs::read_to_string(header_path) else { return Ok(None) };
    let Ok(mut header) = serde_json::from_str::<Header>(&text) else {
        println!("features: {} is not a feature cache header; recomputing", header_path.display());
        return Ok(None);
    };
    if header.format_version != FORMAT_VERSION || header.key != key || header.dtype != "f16" {
        return Ok(None);
    }
    let restamped = header.images != stamps;
    if restamped {
        // Hashed only for a list of the same length: a split of other images is not hashed for nothing.
        let same_bytes = header.images.len() == stamps.len()
            && !header.content.is_empty()
            && *content.get_or_init(|| content_hashes(paths)) == header.content;
        if !same_bytes {
            if own {
                println!("features: the images of {} changed since it was cached; recomputing", header_path.display());
            }
            return Ok(None);
        }
    }
    let [n, c, h, w] = header.shape;
    let expected = n * c * h * w;
    let file = match std::fs::File::open(data_path) {
        Ok(file) => file,
        Err(_) => return Ok(None),
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    if length != expected as u64 * 2 {
        println!("features: {} has {length} bytes, {} expected; recomputing", data_path.display(), expected * 2);
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(expected * 2);
    BufReader::new(file).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", data_path.display()))?;
    let data = bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    if restamped {
        // Same bytes under new dates: next time the stamps alone will do. A cache on read-only
        // storage keeps its old stamps and is hashed again next time.
        println!("features: the image files of {} have new dates but the same bytes; using the cache", header_path.display());
        header.images = stamps.to_vec();
        if let Ok(text) = serde_json::to_vec_pretty(&header) {
            let _ = write_atomic(header_path, &text);
        }
    }
    Ok(Some(FeatureSet { shape: [c, h, w], data }))
}

fn write(
    folder: &Path,
    header_path: &Path,
    data_path: &Path,
    key: &str,
    images: &[String],
    content: &[String],
    set: &FeatureSet,
) -> Result<()> {
    std::fs::create_dir_all(folder).with_context(|| format!("cannot create the feature cache {}", folder.display()))?;
    // The data first, then the header that vouches for it: a header never points at a partial file.
    let tmp: PathBuf = folder.join(format!(".{}.{}.tmp", data_path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
        for bits in &set.data {
            out.write_all(&bits.to_le_bytes())?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, data_path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write the feature cache {}: {e}", data_path.display());
    }
    let [c, h, w] = set.shape;
    let header = Header {
        format_version: FORMAT_VERSION,
        key: key.to_string(),
        dtype: "f16".into(),
        shape: [set.len(), c, h, w],
        images: images.to_vec(),
        content: content.to_vec(),
    };
    write_atomic(header_path, &serde_json::to_vec_pretty(&header)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_converts_f16_back_to_f32() {
        let values = [0.5f32, -2.0, 3.25, 1e-3, 7.0, 8.0];
        let set = FeatureSet { shape: [3, 1, 1], data: values.iter().map(|&v| f16::from_f32(v).to_bits()).collect() };
        assert_eq!(set.len(), 2);
        let back = set.gather(&[1, 0]);
        assert_eq!(back[..3], [f16::from_f32(1e-3).to_f32(), 7.0, 8.0]);
        assert_eq!(back[3..], [0.5, -2.0, 3.25]);
    }

    /// Two image files and a cache of their (made-up) features under `val`.
    fn cached_val(dir: &Path) -> (Vec<PathBuf>, FeatureSet) {
        let paths: Vec<PathBuf> = ["a.jpg", "b.jpg"].iter().map(|name| dir.join(name)).collect();
        std::fs::write(&paths[0], b"first image").unwrap();
        std::fs::write(&paths[1], b"second image").unwrap();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let set = FeatureSet { shape: [2, 1, 1], data: (1..=4).map(|v| f16::from_f32(v as f32).to_bits()).collect() };
        let folder = dir.join("key");
        let stamps: Vec<String> = refs.iter().map(|p| image_stamp(p)).collect();
        write(&folder, &folder.join("val.json"), &folder.join("val.f16"), "key", &stamps, &content_hashes(&refs), &set).unwrap();
        (paths, set)
    }

    fn set_mtime(path: &Path, seconds: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds)).unwrap();
    }

    #[test]
    fn a_split_with_the_images_of_another_reads_its_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, set) = cached_val(dir.path());
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let folder = dir.path().join("key");
        let test = find(&folder, "test", "key", &refs).unwrap().expect("test has val's images");
        assert_eq!(test.gather(&[0, 1]), set.gather(&[0, 1]));
        // Other images, or the same ones in another order, are not val's.
        assert!(find(&folder, "test", "key", &[refs[1], refs[0]]).unwrap().is_none());
        assert!(find(&folder, "test", "other key", &refs).unwrap().is_none());
    }

    #[test]
    fn new_dates_on_the_same_bytes_keep_the_cache_and_new_bytes_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, set) = cached_val(dir.path());
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let folder = dir.path().join("key");
        let stamps = |header: &Path| read_header(header).images;
        let old = stamps(&folder.join("val.json"));

        // A copied dataset: every file has a new date, the bytes are the same.
        set_mtime(&paths[0], 1_000_000);
        set_mtime(&paths[1], 2_000_000);
        let val = find(&folder, "val", "key", &refs).unwrap().expect("same bytes: the cache holds");
        assert_eq!(val.gather(&[1]), set.gather(&[1]));
        let new = stamps(&folder.join("val.json"));
        assert_ne!(new, old, "the header keeps the stamps it no longer matches");
        assert!(new[0].ends_with(" 1000000"), "{new:?}");

        // New bytes of the same length under a new date: recomputed. (Same length and same date
        // would pass, as with make: the stamps are trusted when they match.)
        std::fs::write(&paths[1], b"SECOND IMAGE").unwrap();
        set_mtime(&paths[1], 3_000_000);
        assert!(find(&folder, "val", "key", &refs).unwrap().is_none());
    }

    #[test]
    fn a_cache_without_content_hashes_is_used_only_with_its_stamps() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, _) = cached_val(dir.path());
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let header_path = dir.path().join("key").join("val.json");
        let mut header = read_header(&header_path);
        header.content.clear();
        std::fs::write(&header_path, serde_json::to_vec(&header).unwrap()).unwrap();
        assert!(find(&dir.path().join("key"), "val", "key", &refs).unwrap().is_some());
        set_mtime(&paths[0], 1_000_000);
        assert!(find(&dir.path().join("key"), "val", "key", &refs).unwrap().is_none());
    }

    /// `lookup` as `load_or_compute` calls it.
    fn find(folder: &Path, split: &str, key: &str, paths: &[&Path]) -> Result<Option<FeatureSet>> {
        let stamps: Vec<String> = paths.iter().map(|p| image_stamp(p)).collect();
        lookup(folder, split, key, &stamps, paths, &OnceCell::new())
    }

    fn read_header(path: &Path) -> Header {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}
