//! The figure Show, Attend and Tell draws for a caption: the image as the model saw it, then one
//! panel per word with the model's attention over the image (the grid upsampled and smoothed,
//! the attended part bright, the rest dimmed), the word and its probability under each panel.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::{Rgb, RgbImage};

use crate::image::{ImageConfig, resize_to};

/// Side of each square panel, in pixels.
const PANEL: u32 = 192;
/// Space around and between panels.
const GAP: u32 = 8;
/// Height of the label line under each panel.
const LABEL: u32 = 26;
const FONT_SIZE: f32 = 17.0;
/// Panels per row of the figure.
const PER_ROW: u32 = 6;
/// How bright the least-attended part of a panel stays.
const FLOOR: f32 = 0.2;

/// The font of the labels, shipped with the code (assets/fonts/LICENSE).
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// One word of the caption and where the model looked when it chose it.
pub struct AttendedWord<'a> {
    pub text: &'a str,
    pub probability: f64,
    /// `rows x columns` weights over the encoder's grid, row-major from the top left.
    pub weights: &'a [f32],
}

/// The figure for `words`, attention over a `rows x columns` grid of `image` prepared as
/// `preprocess` says (so that the grid lies where the model saw it).
pub fn attention_figure(image: &RgbImage, preprocess: &ImageConfig, (rows, columns): (usize, usize), words: &[AttendedWord]) -> RgbImage {
    let view = resize_to(image, preprocess.size, preprocess.resize);
    let view = image::imageops::resize(&view, PANEL, PANEL, image::imageops::FilterType::Triangle);
    let font = FontRef::try_from_slice(FONT).expect("the bundled font parses");
    let panels = words.len() as u32 + 1;
    let per_row = panels.min(PER_ROW);
    let lines = panels.div_ceil(PER_ROW);
    let width = GAP + per_row * (PANEL + GAP);
    let height = GAP + lines * (PANEL + LABEL + GAP);
    let mut figure = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let place = |k: u32| (GAP + (k % PER_ROW) * (PANEL + GAP), GAP + (k / PER_ROW) * (PANEL + LABEL + GAP));
    let (x, y) = place(0);
    image::imageops::replace(&mut figure, &view, i64::from(x), i64::from(y));
    for (k, word) in words.iter().enumerate() {
        let (x, y) = place(k as u32 + 1);
        let map = attention_map(word.weights, rows, columns);
        let panel = RgbImage::from_fn(PANEL, PANEL, |px, py| {
            let light = FLOOR + (1.0 - FLOOR) * map[(py * PANEL + px) as usize];
            let Rgb(pixel) = *view.get_pixel(px, py);
            Rgb(pixel.map(|c| (f32::from(c) * light).round() as u8))
        });
        image::imageops::replace(&mut figure, &panel, i64::from(x), i64::from(y));
        let label = format!("{} ({:.2})", word.text, word.probability);
        draw_text(&mut figure, &font, &label, x, y + PANEL + 4, PANEL);
    }
    figure
}

/// A figure as JPEG bytes (quality 85), for pages that embed many.
pub fn jpeg(figure: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85).encode_image(figure).expect("JPEG encoding into memory");
    bytes
}

/// A figure as PNG bytes.
pub fn png(figure: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    figure.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("PNG encoding into memory");
    bytes
}

/// The weights upsampled to the panel (bilinear, between grid-cell centres), smoothed with a
/// Gaussian of half a cell, and scaled so the most attended pixel is 1.
fn attention_map(weights: &[f32], rows: usize, columns: usize) -> Vec<f32> {
    let cell = |r: usize, c: usize| weights.get(r * columns + c).copied().unwrap_or(0.0);
    let sample = |position: f32, cells: usize| {
        let at = (position * cells as f32 - 0.5).clamp(0.0, (cells - 1) as f32);
        let low = at.floor() as usize;
        (low, (low + 1).min(cells - 1), at - low as f32)
    };
    let mut map = Vec::with_capacity((PANEL * PANEL) as usize);
    for py in 0..PANEL {
        let (r0, r1, fy) = sample((py as f32 + 0.5) / PANEL as f32, rows.max(1));
        for px in 0..PANEL {
            let (c0, c1, fx) = sample((px as f32 + 0.5) / PANEL as f32, columns.max(1));
            let top = cell(r0, c0) * (1.0 - fx) + cell(r0, c1) * fx;
            let bottom = cell(r1, c0) * (1.0 - fx) + cell(r1, c1) * fx;
            map.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    let smoothed = image::imageops::blur(
        &image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(PANEL, PANEL, map).expect("panel-sized map"),
        PANEL as f32 / rows.max(columns).max(1) as f32 / 2.0,
    )
    .into_raw();
    let peak = smoothed.iter().copied().fold(0.0f32, f32::max);
    if peak > 0.0 { smoothed.into_iter().map(|v| v / peak).collect() } else { smoothed }
}

/// Draws `text` in black from `(x, y)` (its top), cut at `max_width` pixels.
fn draw_text(image: &mut RgbImage, font: &FontRef, text: &str, x: u32, y: u32, max_width: u32) {
    let font = font.as_scaled(PxScale::from(FONT_SIZE));
    let mut caret = x as f32;
    for ch in text.chars() {
        let glyph = font.scaled_glyph(ch);
        let advance = font.h_advance(glyph.id);
        if caret + advance > (x + max_width) as f32 {
            break;
        }
        let glyph = ab_glyph::Glyph { position: point(caret, y as f32 + font.ascent()), ..glyph };
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let (px, py) = (bounds.min.x as i64 + i64::from(gx), bounds.min.y as i64 + i64::from(gy));
                if px >= 0 && py >= 0 && (px as u32) < image.width() && (py as u32) < image.height() {
                    let Rgb(old) = *image.get_pixel(px as u32, py as u32);
                    let ink = |c: u8| (f32::from(c) * (1.0 - coverage)).round() as u8;
                    image.put_pixel(px as u32, py as u32, Rgb(old.map(ink)));
                }
            });
        }
        caret += advance;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_is_brightest_where_the_weight_is() {
        // All weight on the bottom-right cell of a 2 x 2 grid.
        let map = attention_map(&[0.0, 0.0, 0.0, 1.0], 2, 2);
        let at = |x: u32, y: u32| map[(y * PANEL + x) as usize];
        assert!((at(PANEL - 5, PANEL - 5) - 1.0).abs() < 0.05, "{}", at(PANEL - 5, PANEL - 5));
        assert!(at(5, 5) < 0.05, "{}", at(5, 5));
        assert!(at(PANEL - 5, PANEL - 5) > at(PANEL / 2, PANEL / 2));
    }

    #[test]
    fn the_figure_has_a_panel_per_word_and_ink_under_each() {
        let image = RgbImage::from_pixel(50, 40, Rgb([200, 180, 160]));
        let weights = [0.7, 0.1, 0.1, 0.1];
        let words: Vec<AttendedWord> =
            ["a", "dog", "<eos>"].iter().map(|&text| AttendedWord { text, probability: 0.5, weights: &weights }).collect();
        let figure = attention_figure(&image, &ImageConfig { size: 32, ..Default::default() }, (2, 2), &words);
        assert_eq!(figure.dimensions(), (GAP + 4 * (PANEL + GAP), GAP + PANEL + LABEL + GAP));
        for k in 1..4 {
            let (x, y) = (GAP + k * (PANEL + GAP), GAP + PANEL);
            let dark =
                (x..x + PANEL).flat_map(|px| (y..y + LABEL).map(move |py| (px, py))).any(|(px, py)| figure.get_pixel(px, py)[0] < 128);
            assert!(dark, "no label under panel {k}");
            // The attended top-left is brighter than the bottom-right.
            let bright = figure.get_pixel(x + 10, GAP + 10)[0];
            let dim = figure.get_pixel(x + PANEL - 10, GAP + PANEL - 10)[0];
            assert!(bright > dim, "panel {k}: {bright} vs {dim}");
        }
    }
}
