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
//! preprocessing and this format's version. A split's header lists the image files (with their
//! sizes and modification times); a split whose images changed is recomputed. Files are written
//! to a temporary name and renamed, so a killed run never leaves a half-written cache.

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
}

/// What identifies an image file's content cheaply: its path, size and modification time.
fn image_stamp(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{} {size} {mtime}", path.display())
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
    let images: Vec<String> = source.samples.iter().map(|s| image_stamp(&s.image_path)).collect();
    if let Some(set) = read(&header_path, &data_path, key, &images)? {
        println!("features: {split} from the cache {} ({} images)", folder.display(), set.len());
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
    write(&folder, &header_path, &data_path, key, &images, &set)?;
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

fn read(header_path: &Path, data_path: &Path, key: &str, images: &[String]) -> Result<Option<FeatureSet>> {
    let Ok(text) = std::fs::read_to_string(header_path) else { return Ok(None) };
    let Ok(header) = serde_json::from_str::<Header>(&text) else {
        println!("features: {} is not a feature cache header; recomputing", header_path.display());
        return Ok(None);
    };
    if header.format_version != FORMAT_VERSION || header.key != key || header.dtype != "f16" {
        return Ok(None);
    }
    if header.images != images {
        println!("features: the images of {} changed since it was cached; recomputing", header_path.display());
        return Ok(None);
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
    Ok(Some(FeatureSet { shape: [c, h, w], data }))
}

fn write(folder: &Path, header_path: &Path, data_path: &Path, key: &str, images: &[String], set: &FeatureSet) -> Result<()> {
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
}
