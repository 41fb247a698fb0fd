//! Image decoding and preprocessing: size checks before decoding (decompression bombs),
//! resizing (squash, or shorter side + centre crop), ImageNet normalisation, optional
//! train-time augmentation, and parallel batch loading.

use crate::error::{DataError, Result};
use crate::rng::SplitMix64;
pub use image::RgbImage;
use image::{ImageReader, imageops::FilterType};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

/// How an image is brought to `size` x `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Resize both sides to `size`, ignoring the aspect ratio (ImageCaptioning.pytorch's default).
    #[default]
    Squash,
    /// Resize the shorter side to `size`, then cut the centre square.
    CenterCrop,
}

/// Train-time augmentation. Colour jitter is deliberately absent: captions name colours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Resize to `size * crop_scale` and cut a random `size` square (1.0: no random crop).
    pub crop_scale: f64,
    /// Probability of a horizontal flip. Off by default: a flip turns "left of" into "right of".
    pub hflip: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig { crop_scale: 1.0, hflip: 0.0 }
    }
}

impl AugmentConfig {
    /// Whether an image is prepared differently each time it is drawn.
    pub fn is_random(&self) -> bool {
        self.crop_scale > 1.0 || self.hflip > 0.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// Side of the square network input, in pixels.
    pub size: u32,
    pub resize: ResizeMode,
    /// Per-channel RGB mean and standard deviation (ImageNet's by default), on 0..1 pixel values.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Images whose header claims more pixels than this are refused before being decoded.
    pub max_pixels: u64,
    pub augment: AugmentConfig,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            size: 224,
            resize: ResizeMode::Squash,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            max_pixels: 40_000_000,
            augment: AugmentConfig::default(),
        }
    }
}

impl ImageConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Config(m));
        if self.size == 0 || self.size > 4096 {
            return bad(format!("`data.image.size` is {}; use 1..=4096 (224 for ImageNet encoders)", self.size));
        }
        if self.std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            return bad("`data.image.std` values must be positive".into());
        }
        if !(1.0..=4.0).contains(&self.augment.crop_scale) {
            return bad(format!("`data.image.augment.crop_scale` is {}; use 1.0..=4.0", self.augment.crop_scale));
        }
        if !(0.0..=1.0).contains(&self.augment.hflip) {
            return bad(format!("`data.image.augment.hflip` is {}; it is a probability in 0..=1", self.augment.hflip));
        }
        if self.max_pixels == 0 {
            return bad("`data.image.max_pixels` must be positive".into());
        }
        Ok(())
    }
}

/// An image ready for a network: `3 x size x size` floats, channel-major (CHW).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    pub size: u32,
    pub chw: Vec<f32>,
}

/// Reads only the header and returns (width, height), refusing images over `max_pixels`.
pub fn probe_dimensions(path: &Path, max_pixels: u64) -> Result<(u32, u32)> {
    let reader = ImageReader::open(path).map_err(|e| DataError::io(path, e))?;
    probe_reader(reader, max_pixels).map_err(|message| DataError::Image { path: path.into(), message })
}

fn probe_reader<R: BufRead + Seek>(reader: ImageReader<R>, max_pixels: u64) -> std::result::Result<(u32, u32), String> {
    let reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not a recognised image (JPEG, PNG or WebP expected)".into());
    }
    let (w, h) = reader.into_dimensions().map_err(describe)?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(format!(
            "header says {w}x{h} = {pixels} pixels, over the limit of {max_pixels} (`data.image.max_pixels`); refusing to decode it"
        ));
    }
    Ok((w, h))
}

fn decode_reader<R: BufRead + Seek>(reader: ImageReader<R>, max_pixels: u64) -> std::result::Result<RgbImage, String> {
    let mut reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    // A second guard inside the decoder, should a header lie about the size.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(4).max(1 << 20));
    reader.limits(limits);
    Ok(reader.decode().map_err(describe)?.into_rgb8())
}

fn describe(e: image::ImageError) -> String {
    // Decoder messages sometimes span lines; errors are printed as one line.
    let one_line = |text: String| text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line(match e {
        image::ImageError::Limits(l) => format!("refused by the decoder's memory limit ({l})"),
        image::ImageError::Unsupported(u) => format!("unsupported image: {u}"),
        other => format!("cannot decode: {other} (is the file truncated or corrupt?)"),
    })
}

/// Decodes a file to RGB after checking its header size.
pub fn decode_file(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    probe_dimensions(path, max_pixels)?;
    let reader = ImageReader::open(path).map_err(|e| DataError::io(path, e))?;
    decode_reader(reader, max_pixels).map_err(|message| DataError::Image { path: path.into(), message })
}

/// Decodes image bytes (an upload, say) to RGB after checking the header size.
/// `name` is used in error messages only.
pub fn decode_bytes(bytes: &[u8], name: &str, max_pixels: u64) -> Result<RgbImage> {
    let err = |message| DataError::Image { path: name.into(), message };
    probe_reader(ImageReader::new(Cursor::new(bytes)), max_pixels).map_err(err)?;
    decode_reader(ImageReader::new(Cursor::new(bytes)), max_pixels).map_err(err)
}

/// Decodes uploaded image bytes for a network whose input side is `size`, refusing truncated
/// JPEGs (they would otherwise decode to a partly grey picture). A JPEG whose shorter side is at
/// least four times `size` is decoded at 1/2, 1/4 or 1/8 scale in the DCT, its shorter side
/// staying at least twice `size`: a fraction of the memory and time of a full decode, and the
/// resize to `size` still averages two or more decoded pixels per output pixel.
pub fn decode_upload(bytes: &[u8], name: &str, max_pixels: u64, size: u32) -> Result<RgbImage> {
    let err = |message| DataError::Image { path: name.into(), message };
    let (width, height) = probe_reader(ImageReader::new(Cursor::new(bytes)), max_pixels).map_err(err)?;
    if image::guess_format(bytes).ok() == Some(image::ImageFormat::Jpeg) {
        if !jpeg_is_complete(bytes) {
            return Err(err("truncated JPEG: the image data ends before its end-of-image marker".into()));
        }
        let denominator = dct_scale(width.min(height), size);
        if denominator > 1
            && let Some(image) = decode_jpeg_scaled(bytes, width, height, denominator).map_err(err)?
        {
            return Ok(image);
        }
    }
    decode_reader(ImageReader::new(Cursor::new(bytes)), max_pixels).map_err(err)
}

/// The largest of 8, 4, 2 that keeps `shorter_side / denominator >= 2 * size`; 1 if none does.
fn dct_scale(shorter_side: u32, size: u32) -> u32 {
    [8, 4, 2].into_iter().find(|d| shorter_side / d >= 2 * size.max(1)).unwrap_or(1)
}

/// Whether a JPEG's last scan is followed by its end-of-image marker. Inside entropy-coded data
/// 0xFF is always followed by 0x00 or a restart marker, so the last `FF DA` is the last scan's
/// start (an embedded thumbnail's markers come before the main image's).
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(start) => bytes[start..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// Decodes a JPEG at `1/denominator` scale; `None` for pixel formats other than 8-bit grey and
/// RGB (CMYK, 16-bit), which the full decoder handles.
fn decode_jpeg_scaled(bytes: &[u8], width: u32, height: u32, denominator: u32) -> std::result::Result<Option<RgbImage>, String> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    let requested = |side: u32| u16::try_from(side.div_ceil(denominator)).unwrap_or(u16::MAX);
    let (w, h) = decoder.scale(requested(width), requested(height)).map_err(|e| format!("cannot decode: {e}"))?;
    let pixels = decoder.decode().map_err(|e| format!("cannot decode: {e} (is the file truncated or corrupt?)"))?;
    let format = decoder.info().map(|info| info.pixel_format);
    let (w, h) = (u32::from(w), u32::from(h));
    let rgb = match format {
        Some(jpeg_decoder::PixelFormat::RGB24) => pixels,
        Some(jpeg_decoder::PixelFormat::L8) => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => return Ok(None),
    };
    RgbImage::from_raw(w, h, rgb).map(Some).ok_or_else(|| "cannot decode: the decoder returned fewer pixels than its size".into())
}

/// A JPEG of the image at `path` whose longer side is at most `side` pixels, for reports.
pub fn thumbnail_jpeg(path: &Path, side: u32, max_pixels: u64) -> Result<Vec<u8>> {
    let image = decode_file(path, max_pixels)?;
    let (w, h) = (image.width(), image.height());
    let scale = side as f64 / w.max(h).max(1) as f64;
    // Keep the aspect ratio; never enlarge.
    let image = if scale < 1.0 {
        image::imageops::thumbnail(&image, ((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1))
    } else {
        image
    };
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80)
        .encode_image(&image)
        .map_err(|e| DataError::Image { path: path.into(), message: format!("cannot encode a thumbnail: {e}") })?;
    Ok(bytes)
}

/// An image file's bytes as the model's input `3 x size x size`: [`decode_upload`], then
/// [`prepare`] without augmentation. Every captioning path (the CLI, the server) prepares images
/// here, so that they see the same pixels.
pub fn prepare_bytes(bytes: &[u8], name: &str, max_pixels: u64, config: &ImageConfig) -> Result<Vec<f32>> {
    let image = decode_upload(bytes, name, max_pixels, config.size)?;
    Ok(prepare(&image, config, None).chw)
}

/// Resizes, optionally augments, and normalises one decoded image.
/// `augment_seed` is `Some` only for training samples; evaluation is deterministic.
pub fn prepare(image: &RgbImage, config: &ImageConfig, augment_seed: Option<u64>) -> PreparedImage {
    let size = config.size;
    let augment = augment_seed.filter(|_| config.augment.crop_scale > 1.0 || config.augment.hflip > 0.0);
    let mut rng = augment.map(SplitMix64::new);
    let work = match rng.as_mut() {
        Some(rng) if config.augment.crop_scale > 1.0 => {
            let big = ((f64::from(size) * config.augment.crop_scale).round() as u32).max(size);
            let scaled = resize_to(image, big, config.resize);
            let x = rng.below(u64::from(scaled.width() - size + 1)) as u32;
            let y = rng.below(u64::from(scaled.height() - size + 1)) as u32;
            image::imageops::crop_imm(&scaled, x, y, size, size).to_image()
        }
        _ => resize_to(image, size, config.resize),
    };
    let flip = rng.as_mut().is_some_and(|rng| rng.next_f64() < config.augment.hflip);
    let work = if flip { image::imageops::flip_horizontal(&work) } else { work };
    PreparedImage { size, chw: normalise(&work, config) }
}

pub(crate) fn resize_to(image: &RgbImage, size: u32, mode: ResizeMode) -> RgbImage {
    let (w, h) = image.dimensions();
    match mode {
        ResizeMode::Squash => {
            if (w, h) == (size, size) {
                image.clone()
            } else {
                image::imageops::resize(image, size, size, FilterType::Triangle)
            }
        }
        ResizeMode::CenterCrop => {
            let scale = f64::from(size) / f64::from(w.min(h));
            let nw = ((f64::from(w) * scale).round() as u32).max(size);
            let nh = ((f64::from(h) * scale).round() as u32).max(size);
            let resized = if (nw, nh) == (w, h) { image.clone() } else { image::imageops::resize(image, nw, nh, FilterType::Triangle) };
            image::imageops::crop_imm(&resized, (nw - size) / 2, (nh - size) / 2, size, size).to_image()
        }
    }
}

fn normalise(image: &RgbImage, config: &ImageConfig) -> Vec<f32> {
    let (w, h) = image.dimensions();
    let plane = (w * h) as usize;
    let mut chw = vec![0f32; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = (f32::from(pixel[c]) / 255.0 - config.mean[c]) / config.std[c];
        }
    }
    chw
}

/// Loads and prepares many files in parallel, keeping their order. Each entry is the result for
/// that file, so one bad image does not hide the others.
pub fn load_batch(paths: &[&Path], config: &ImageConfig, augment_seeds: Option<&[u64]>) -> Vec<Result<PreparedImage>> {
    paths
        .par_iter()
        .enumerate()
        .map(|(i, path)| {
            let rgb = decode_file(path, config.max_pixels)?;
            Ok(prepare(&rgb, config, augment_seeds.map(|s| s[i])))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128]))
    }

    #[test]
    fn squash_and_centre_crop_give_the_requested_size() {
        let img = gradient(64, 32);
        for resize in [ResizeMode::Squash, ResizeMode::CenterCrop] {
            let cfg = ImageConfig { size: 16, resize, ..Default::default() };
            let out = prepare(&img, &cfg, None);
            assert_eq!(out.chw.len(), 3 * 16 * 16);
        }
    }

    #[test]
    fn normalisation_uses_mean_and_std() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 128]));
        let cfg = ImageConfig { size: 2, ..Default::default() };
        let out = prepare(&img, &cfg, None);
        assert!((out.chw[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((out.chw[4] - (0.0 - 0.456) / 0.224).abs() < 1e-6);
        assert!((out.chw[8] - (128.0 / 255.0 - 0.406) / 0.225).abs() < 1e-6);
    }

    #[test]
    fn augmentation_is_seeded() {
        let img = gradient(40, 40);
        let cfg = ImageConfig { size: 16, augment: AugmentConfig { crop_scale: 1.5, hflip: 0.5 }, ..Default::default() };
        let a = prepare(&img, &cfg, Some(1));
        assert_eq!(a, prepare(&img, &cfg, Some(1)));
        let differs = (2..20).any(|s| prepare(&img, &cfg, Some(s)) != a);
        assert!(differs, "different seeds never changed the crop");
        assert_eq!(prepare(&img, &cfg, None), prepare(&img, &cfg, None));
    }

    fn jpeg(image: &RgbImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(image).unwrap();
        bytes
    }

    #[test]
    fn large_jpegs_are_decoded_scaled_and_truncated_ones_refused() {
        let big = gradient(1000, 800);
        let bytes = jpeg(&big);
        // 800 / 2 = 400 >= 2 * 100; 800 / 4 = 200 >= 200: decoded at 1/4.
        let scaled = decode_upload(&bytes, "big.jpg", 1 << 30, 100).unwrap();
        assert_eq!(scaled.dimensions(), (250, 200));
        let full = decode_bytes(&bytes, "big.jpg", 1 << 30).unwrap();
        // The same picture: compare after bringing both to the network's size.
        let cfg = ImageConfig { size: 100, ..Default::default() };
        let (a, b) = (prepare(&scaled, &cfg, None).chw, prepare(&full, &cfg, None).chw);
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 0.1, "scaled decode differs by {worst} (normalised units)");
        // Small enough: decoded as is.
        assert_eq!(decode_upload(&bytes, "big.jpg", 1 << 30, 224).unwrap().dimensions(), (1000, 800));
        assert_eq!((dct_scale(6000, 224), dct_scale(1000, 224), dct_scale(447, 224)), (8, 2, 1));

        let err = decode_upload(&bytes[..bytes.len() / 3], "cut.jpg", 1 << 30, 100).unwrap_err().to_string();
        assert!(err.contains("cut.jpg") && err.contains("truncated"), "{err}");
        let err = decode_upload(&bytes[..bytes.len() - 2], "cut.jpg", 1 << 30, 224).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn bytes_that_are_not_an_image_are_a_clear_error() {
        let err = decode_bytes(b"hello world, not an image", "upload", 1000).unwrap_err();
        assert!(err.to_string().contains("upload"), "{err}");
    }
}
