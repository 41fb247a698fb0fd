//! The synthetic "shapes" captioning dataset: the project's embedded default, on which a small
//! CNN + attention-LSTM captioner trains in under ten minutes on two CPU cores and whose test
//! split it must then caption well (BLEU-4 >= 0.5, CIDEr-D >= 1.5).
//!
//! Each image is a plain, light background with one to three filled shapes: 4 kinds (circle,
//! square, triangle, star), 6 colours far apart in RGB, 2 sizes, in one of four layouts (a
//! single shape, two side by side, two stacked, a row of three). Each image has
//! [`CAPTIONS_PER_IMAGE`] captions over a [`VOCABULARY`] of 55 words, written like different
//! annotators would describe it: "a red circle to the left of a blue square", "a blue square to
//! the right of a red circle", "two shapes: a red circle and a blue square", ...
//!
//! Why it is built this way:
//! - Everything a caption says is visible in the picture (colours, kinds, sizes, left/right,
//!   above/below, counts), never in the file name, so a model can only score by looking.
//! - Shapes of a pair or row copy an earlier shape's colour and kind a quarter of the time, so
//!   that captions must count ("two red circles and a blue square in a row") rather than list.
//! - Positions, colours and the background are jittered, so images are not memorised, but
//!   shapes never touch and colours stay far apart, so every caption word can be learnt.
//! - The first caption of every image is the layout's canonical wording, as the most common
//!   phrasing among real annotators would be; the other four are drawn from 5 or 6 alternatives.
//!   The references then agree enough for BLEU and CIDEr to reward a correct description,
//!   while varying as real references do.
//! - Image `id` is drawn from its own random stream ([`SplitMix64::for_item`]) and its split
//!   from a low-discrepancy sequence over ids, so image 17 is the same whatever `n` is, and the
//!   split sizes are within a few images of the asked fractions for any `n`.
//!
//! On disk, in MS-COCO caption format so that the COCO loader reads it back (`DIR` being the
//! output folder): `DIR/images/{train,val,test}/synth_NNNNNN.png`,
//! `DIR/annotations/captions_{train,val,test}.json`, `DIR/README.md`, and `DIR/synth.json`
//! (parameters, generator version, counts), written last so that its presence marks a complete
//! dataset. The same parameters give byte-identical files
//! with the same build: nothing depends on the time, the output path or the thread schedule,
//! and the PNG encoder settings are fixed.

use crate::error::{DataError, Result};
use crate::fsutil::write_atomic;
use crate::rng::SplitMix64;
use crate::sample::Split;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bumped whenever the same parameters would give different files, so that a dataset made by
/// an older generator is not taken for a current one.
pub const GENERATOR_VERSION: u32 = 1;

pub const CAPTIONS_PER_IMAGE: usize = 5;

/// Every word a caption can contain, once punctuation (`,` and `:`) is dropped.
#[rustfmt::skip]
pub const VOCABULARY: [&str; 55] = [
    // articles and counts
    "a", "an", "one", "two", "three",
    // colours
    "red", "green", "blue", "yellow", "purple", "orange",
    // kinds
    "circle", "square", "triangle", "star", "circles", "squares", "triangles", "stars",
    // sizes
    "small", "large",
    // positions and relations
    "to", "the", "left", "of", "right", "and", "side", "by", "on", "next", "each", "other", "above",
    "below", "top", "at", "bottom", "under", "stacked", "vertically", "in", "row", "from", "between",
    "middle",
    // the rest
    "shapes", "pair", "both", "all", "picture", "single", "just", "plain", "background",
];

/// Marks a complete dataset and records what made it.
const MANIFEST_FILE: &str = "synth.json";

/// The generator's parameters (`data.synthetic` in an experiment config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Number of images over all splits; ids run from 1 to `n`.
    pub n: usize,
    pub seed: u64,
    /// Side of the square images, in pixels.
    pub image_size: u32,
    pub val_fraction: f64,
    pub test_fraction: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { n: 3000, seed: 42, image_size: 64, val_fraction: 0.1, test_fraction: 0.1 }
    }
}

impl SynthConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Config(m));
        if self.n == 0 {
            return bad("--n (`data.synthetic.n`) must be at least 1".into());
        }
        if !(16..=1024).contains(&self.image_size) {
            return bad(format!(
                "--image-size (`data.synthetic.image_size`) is {}; use 16..=1024 pixels (64 is the default)",
                self.image_size
            ));
        }
        for (option, key, value) in
            [("--val-fraction", "val_fraction", self.val_fraction), ("--test-fraction", "test_fraction", self.test_fraction)]
        {
            // Written so that NaN fails too.
            if !(0.0..1.0).contains(&value) {
                return bad(format!("{option} (`data.synthetic.{key}`) is {value}; it is a fraction in [0, 1)"));
            }
        }
        if self.val_fraction + self.test_fraction >= 1.0 {
            return bad(format!(
                "--val-fraction + --test-fraction is {}; it must stay below 1 to leave images for training",
                self.val_fraction + self.test_fraction
            ));
        }
        Ok(())
    }

    /// Same parameters, with the fractions compared to within float parsing error: they come
    /// back from `synth.json`, and serde_json's default float parsing may be one ulp off.
    fn same_as(&self, other: &SynthConfig) -> bool {
        self.n == other.n
            && self.seed == other.seed
            && self.image_size == other.image_size
            && (self.val_fraction - other.val_fraction).abs() < 1e-12
            && (self.test_fraction - other.test_fraction).abs() < 1e-12
    }
}

/// What [`generate`] made, or found already made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthSummary {
    pub out_dir: PathBuf,
    pub images_per_split: [(Split, usize); 3],
    /// Captions over all splits.
    pub captions: usize,
    /// Distinct caption words over all splits.
    pub vocabulary: usize,
    /// The folder already held this dataset and nothing was written.
    pub reused: bool,
}

/// Writes the dataset under `out_dir` (see the module docs for the layout).
///
/// If `out_dir` already holds a complete dataset with these parameters and this generator
/// version, nothing is written and the summary says `reused`. A non-empty `out_dir` that holds
/// anything else is refused unless `overwrite`, which regenerates in place: an earlier
/// dataset's images are removed, files that are not the generator's are left alone.
pub fn generate(out_dir: &Path, config: &SynthConfig, overwrite: bool) -> Result<SynthSummary> {
    config.validate()?;
    if let Some(existing) = prepare_out_dir(out_dir, config, overwrite)? {
        return Ok(existing);
    }
    let images_dir = out_dir.join("images");
    for split in Split::ALL {
        let dir = images_dir.join(split.as_str());
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    }

    let samples: Vec<(Split, Vec<String>)> = (1..=config.n)
        .into_par_iter()
        .map(|id| {
            let id = id as u64;
            let (image, captions, split) = render(config, id);
            let path = images_dir.join(split.as_str()).join(image_file_name(id));
            write_atomic(&path, &encode_png(&image, &path)?)?;
            Ok((split, captions))
        })
        .collect::<Result<_>>()?;

    let mut counts = SplitCounts::default();
    let mut words = BTreeSet::new();
    for (split, captions) in &samples {
        *counts.get_mut(*split) += 1;
        words.extend(captions.iter().flat_map(|caption| caption_words(caption)));
    }
    let annotations_dir = out_dir.join("annotations");
    for split in Split::ALL {
        let path = annotations_dir.join(format!("captions_{split}.json"));
        let json = serde_json::to_vec(&coco_file(config, split, &samples)).expect("plain structs serialise");
        write_atomic(&path, &json)?;
    }
    let manifest = Manifest {
        generator: "caption-data synthetic shapes".into(),
        generator_version: GENERATOR_VERSION,
        parameters: config.clone(),
        images: counts,
        captions: samples.len() * CAPTIONS_PER_IMAGE,
        vocabulary: words.len(),
    };
    write_atomic(&out_dir.join("README.md"), readme(&manifest).as_bytes())?;
    let json = serde_json::to_string_pretty(&manifest).expect("plain structs serialise") + "\n";
    write_atomic(&out_dir.join(MANIFEST_FILE), json.as_bytes())?;
    Ok(manifest.summary(out_dir, false))
}

/// Image `id` of the dataset `config` describes: the picture, its captions (canonical first)
/// and its split. Depends on `seed`, `image_size` and the fractions, not on `n`.
pub fn render(config: &SynthConfig, id: u64) -> (RgbImage, Vec<String>, Split) {
    let (scene, captions) = compose(config, id);
    (scene.draw(config.image_size), captions, split_of(config, id))
}

/// The command that regenerates the dataset `config` describes into `out_dir`. The fractions
/// appear only when they are not the defaults.
pub fn command_line(out_dir: &Path, config: &SynthConfig) -> String {
    let mut command = format!(
        "caption data synth --out {} --n {} --seed {} --image-size {}",
        shell_word(&out_dir.to_string_lossy()),
        config.n,
        config.seed,
        config.image_size
    );
    let defaults = SynthConfig::default();
    if config.val_fraction != defaults.val_fraction {
        command += &format!(" --val-fraction {}", config.val_fraction);
    }
    if config.test_fraction != defaults.test_fraction {
        command += &format!(" --test-fraction {}", config.test_fraction);
    }
    command
}

fn image_file_name(id: u64) -> String {
    format!("synth_{id:06}.png")
}

/// The scene of image `id` and its captions, from the image's own random stream.
fn compose(config: &SynthConfig, id: u64) -> (Scene, Vec<String>) {
    let mut rng = SplitMix64::for_item(config.seed, id);
    let scene = Scene::sample(&mut rng);
    let captions = describe(&scene.arrangement, &mut rng);
    (scene, captions)
}

/// The split of image `id`: the fractional parts of `id / golden ratio` (a Weyl sequence,
/// shifted by the seed) are spread evenly over [0, 1), so any run of ids splits in close to
/// the asked proportions, and an id's split does not depend on `n`.
fn split_of(config: &SynthConfig, id: u64) -> Split {
    const SPLIT_STREAM: u64 = 0x5350_4C49_5453_0001; // keeps the shift apart from image streams
    const INVERSE_GOLDEN_RATIO: u64 = 0x9E37_79B9_7F4A_7C15; // 2^64 / phi
    let shift = SplitMix64::new(config.seed ^ SPLIT_STREAM).next_u64();
    let position = id.wrapping_mul(INVERSE_GOLDEN_RATIO).wrapping_add(shift);
    let u = (position >> 11) as f64 / (1u64 << 53) as f64;
    if u < config.test_fraction {
        Split::Test
    } else if u < config.test_fraction + config.val_fraction {
        Split::Val
    } else {
        Split::Train
    }
}

// ---------------------------------------------------------------------------------------------
// Scenes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShapeKind {
    Circle,
    Square,
    Triangle,
    Star,
}

impl ShapeKind {
    const ALL: [ShapeKind; 4] = [ShapeKind::Circle, ShapeKind::Square, ShapeKind::Triangle, ShapeKind::Star];

    fn noun(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
            ShapeKind::Star => "star",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circles",
            ShapeKind::Square => "squares",
            ShapeKind::Triangle => "triangles",
            ShapeKind::Star => "stars",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
}

impl Colour {
    const ALL: [Colour; 6] = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow, Colour::Purple, Colour::Orange];

    fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
        }
    }

    /// At least 80 apart (Euclidean, 0..255 RGB) from each other and further from the light
    /// background; the per-shape jitter of ±12 per channel moves a colour by at most 21, so a
    /// painted colour is always nearest to its own name.
    fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [210, 45, 45],
            Colour::Green => [45, 155, 65],
            Colour::Blue => [45, 85, 215],
            Colour::Yellow => [230, 205, 25],
            Colour::Purple => [140, 60, 180],
            Colour::Orange => [245, 125, 25],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    Small,
    Large,
}

impl Size {
    fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    /// Side of the box the shape fits in, as a fraction of the image side. The same in every
    /// layout, so that "small" and "large" mean one thing; 0.27 is the most that lets three
    /// large shapes stand in a row without touching.
    fn extent(self) -> f64 {
        match self {
            Size::Small => 0.16,
            Size::Large => 0.27,
        }
    }
}

#[derive(Debug, Clone)]
struct Shape {
    kind: ShapeKind,
    colour: Colour,
    size: Size,
    /// Centre, as fractions of the image side (x to the right, y down).
    centre: [f64; 2],
    /// The colour actually painted: the named colour, jittered.
    rgb: [u8; 3],
}

impl Shape {
    /// Same kind and colour: what a caption cannot tell apart other than by size.
    fn looks_like(&self, other: &Shape) -> bool {
        self.kind == other.kind && self.colour == other.colour
    }

    /// "red circle"
    fn bare(&self) -> String {
        format!("{} {}", self.colour.name(), self.kind.noun())
    }

    /// "small red circle"
    fn sized(&self) -> String {
        format!("{} {}", self.size.name(), self.bare())
    }
}

/// The shapes of an image, in reading order (left to right, top to bottom).
#[derive(Debug, Clone)]
enum Arrangement {
    Single(Shape),
    SideBySide { left: Shape, right: Shape },
    Stacked { top: Shape, bottom: Shape },
    Row([Shape; 3]),
}

impl Arrangement {
    fn shapes(&self) -> Vec<&Shape> {
        match self {
            Arrangement::Single(shape) => vec![shape],
            Arrangement::SideBySide { left, right } => vec![left, right],
            Arrangement::Stacked { top, bottom } => vec![top, bottom],
            Arrangement::Row(row) => row.iter().collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct Scene {
    background: [u8; 3],
    arrangement: Arrangement,
}

/// Uniform in [-amplitude, amplitude).
fn jitter(rng: &mut SplitMix64, amplitude: f64) -> f64 {
    (rng.next_f64() * 2.0 - 1.0) * amplitude
}

impl Scene {
    /// Layouts: single 20%, side by side 30%, stacked 25%, row of three 25%. The jitter
    /// amplitudes keep every shape inside the image and apart from its neighbours for the
    /// largest extent, and keep pairs clearly horizontal or vertical.
    fn sample(rng: &mut SplitMix64) -> Scene {
        let grey = 226 + rng.below(24) as i32;
        let background = [0; 3].map(|_: u8| (grey + rng.below(9) as i32 - 4).clamp(0, 255) as u8);
        let arrangement = match rng.below(20) {
            0..=3 => {
                let centre = [0.5 + jitter(rng, 0.18), 0.5 + jitter(rng, 0.18)];
                Arrangement::Single(sample_shape(rng, centre, &[]))
            }
            4..=9 => {
                let y = 0.5 + jitter(rng, 0.2);
                let centre = [0.27 + jitter(rng, 0.06), y + jitter(rng, 0.04)];
                let left = sample_shape(rng, centre, &[]);
                let centre = [0.73 + jitter(rng, 0.06), y + jitter(rng, 0.04)];
                let right = sample_shape(rng, centre, std::slice::from_ref(&left));
                Arrangement::SideBySide { left, right }
            }
            10..=14 => {
                let x = 0.5 + jitter(rng, 0.2);
                let centre = [x + jitter(rng, 0.04), 0.27 + jitter(rng, 0.06)];
                let top = sample_shape(rng, centre, &[]);
                let centre = [x + jitter(rng, 0.04), 0.73 + jitter(rng, 0.06)];
                let bottom = sample_shape(rng, centre, std::slice::from_ref(&top));
                Arrangement::Stacked { top, bottom }
            }
            _ => {
                let y = 0.5 + jitter(rng, 0.2);
                let mut row: Vec<Shape> = Vec::with_capacity(3);
                for x in [0.17, 0.5, 0.83] {
                    let centre = [x + jitter(rng, 0.01), y + jitter(rng, 0.03)];
                    let shape = sample_shape(rng, centre, &row);
                    row.push(shape);
                }
                Arrangement::Row(row.try_into().expect("three shapes pushed"))
            }
        };
        Scene { background, arrangement }
    }
}

/// A shape at `centre`; with probability 1/4 it copies the kind and colour of one of the
/// `earlier` shapes of the image, so that counting matters.
fn sample_shape(rng: &mut SplitMix64, centre: [f64; 2], earlier: &[Shape]) -> Shape {
    let (kind, colour) = if !earlier.is_empty() && rng.below(4) == 0 {
        let model = &earlier[rng.below(earlier.len() as u64) as usize];
        (model.kind, model.colour)
    } else {
        (ShapeKind::ALL[rng.below(ShapeKind::ALL.len() as u64) as usize], Colour::ALL[rng.below(Colour::ALL.len() as u64) as usize])
    };
    let size = if rng.below(2) == 0 { Size::Small } else { Size::Large };
    let rgb = colour.rgb().map(|c| (c as i32 + rng.below(25) as i32 - 12).clamp(0, 255) as u8);
    Shape { kind, colour, size, centre, rgb }
}

// ---------------------------------------------------------------------------------------------
// Drawing

/// Per pixel, a `SUBSAMPLES` x `SUBSAMPLES` grid of points decides how much of it a shape
/// covers; edges are blended by that coverage (anti-aliasing).
const SUBSAMPLES: u32 = 4;

/// A shape's outline in pixel coordinates.
enum Outline {
    Disc { centre: [f64; 2], radius: f64 },
    Polygon(Vec<[f64; 2]>),
}

impl Outline {
    /// Every kind fits the shape's extent box; the square is drawn a little smaller than the
    /// box so that its area is close to the circle's.
    fn of(shape: &Shape, image_side: f64) -> Outline {
        let [cx, cy] = shape.centre.map(|c| c * image_side);
        let e = shape.size.extent() * image_side;
        match shape.kind {
            ShapeKind::Circle => Outline::Disc { centre: [cx, cy], radius: 0.5 * e },
            ShapeKind::Square => {
                let h = 0.42 * e;
                Outline::Polygon(vec![[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]])
            }
            ShapeKind::Triangle => {
                Outline::Polygon(vec![[cx, cy - 0.45 * e], [cx + 0.5 * e, cy + 0.45 * e], [cx - 0.5 * e, cy + 0.45 * e]])
            }
            ShapeKind::Star => {
                // Five points, the first straight up; inner radius half the outer one.
                let outer = 0.5 * e;
                let points = (0..10)
                    .map(|k| {
                        let radius = if k % 2 == 0 { outer } else { 0.5 * outer };
                        let angle = -std::f64::consts::FRAC_PI_2 + k as f64 * std::f64::consts::PI / 5.0;
                        [cx + radius * angle.cos(), cy + radius * angle.sin()]
                    })
                    .collect();
                Outline::Polygon(points)
            }
        }
    }

    /// [x_min, y_min, x_max, y_max]
    fn bounds(&self) -> [f64; 4] {
        match self {
            Outline::Disc { centre: [cx, cy], radius } => [cx - radius, cy - radius, cx + radius, cy + radius],
            Outline::Polygon(points) => {
                points.iter().fold([f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY], |[x0, y0, x1, y1], &[x, y]| {
                    [x0.min(x), y0.min(y), x1.max(x), y1.max(y)]
                })
            }
        }
    }

    fn contains(&self, x: f64, y: f64) -> bool {
        match self {
            Outline::Disc { centre: [cx, cy], radius } => (x - cx).powi(2) + (y - cy).powi(2) <= radius * radius,
            Outline::Polygon(points) => {
                // Even-odd rule: count the edges a ray to the right crosses (the star is concave).
                let mut inside = false;
                for (i, &[xi, yi]) in points.iter().enumerate() {
                    let [xj, yj] = points[(i + points.len() - 1) % points.len()];
                    if (yi > y) != (yj > y) && x < xi + (y - yi) * (xj - xi) / (yj - yi) {
                        inside = !inside;
                    }
                }
                inside
            }
        }
    }
}

impl Scene {
    fn draw(&self, image_size: u32) -> RgbImage {
        let mut image = RgbImage::from_pixel(image_size, image_size, Rgb(self.background));
        for shape in self.arrangement.shapes() {
            paint(&mut image, shape);
        }
        image
    }
}

fn paint(image: &mut RgbImage, shape: &Shape) {
    let side = image.width();
    let outline = Outline::of(shape, side as f64);
    let [x_min, y_min, x_max, y_max] = outline.bounds();
    let first = |v: f64| (v.floor().max(0.0) as u32).min(side);
    let end = |v: f64| (v.ceil().max(0.0) as u32).min(side);
    let step = 1.0 / SUBSAMPLES as f64;
    for y in first(y_min)..end(y_max) {
        for x in first(x_min)..end(x_max) {
            let mut covered = 0;
            for sy in 0..SUBSAMPLES {
                for sx in 0..SUBSAMPLES {
                    let px = x as f64 + (sx as f64 + 0.5) * step;
                    let py = y as f64 + (sy as f64 + 0.5) * step;
                    covered += u32::from(outline.contains(px, py));
                }
            }
            if covered == 0 {
                continue;
            }
            let coverage = covered as f64 / (SUBSAMPLES * SUBSAMPLES) as f64;
            let pixel = image.get_pixel_mut(x, y);
            for (channel, &ink) in pixel.0.iter_mut().zip(&shape.rgb) {
                *channel = (*channel as f64 * (1.0 - coverage) + ink as f64 * coverage).round() as u8;
            }
        }
    }
}

/// Fixed encoder settings: the same pixels give the same bytes (for one version of the `png`
/// crate; an upgrade of its compressor may change the bytes, not the pixels).
fn encode_png(image: &RgbImage, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Default, FilterType::Adaptive)
        .write_image(image.as_raw(), image.width(), image.height(), ExtendedColorType::Rgb8)
        .map_err(|e| DataError::Image { path: path.into(), message: format!("PNG encoding failed: {e}") })?;
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// Captions

/// "a red circle", "an orange star"
fn a(phrase: &str) -> String {
    let article = if phrase.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {phrase}")
}

/// "x", "x and y", "x, y and z"
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The shapes counted by look, in order of first appearance: "two red circles and a blue square".
fn counted(shapes: &[&Shape]) -> String {
    let mut groups: Vec<(&Shape, usize)> = Vec::new();
    for &shape in shapes {
        match groups.iter_mut().find(|(seen, _)| seen.looks_like(shape)) {
            Some((_, count)) => *count += 1,
            None => groups.push((shape, 1)),
        }
    }
    let phrases: Vec<String> = groups
        .iter()
        .map(|&(shape, count)| match count {
            1 => a(&shape.bare()),
            2 => format!("two {} {}", shape.colour.name(), shape.kind.plural()),
            _ => format!("three {} {}", shape.colour.name(), shape.kind.plural()),
        })
        .collect();
    list(&phrases)
}

/// The captions of an arrangement: its canonical wording, then 4 of its alternatives.
fn describe(arrangement: &Arrangement, rng: &mut SplitMix64) -> Vec<String> {
    let (canonical, mut alternatives) = wordings(arrangement);
    // A partial Fisher-Yates shuffle picks the alternatives without repeats.
    let picked = CAPTIONS_PER_IMAGE - 1;
    for i in 0..picked {
        let j = i + rng.below((alternatives.len() - i) as u64) as usize;
        alternatives.swap(i, j);
    }
    alternatives.truncate(picked);
    std::iter::once(canonical).chain(alternatives).collect()
}

/// Every way this arrangement is described: (canonical, alternatives). Each wording names
/// every shape's colour and kind; the sized ones name sizes too.
fn wordings(arrangement: &Arrangement) -> (String, Vec<String>) {
    match arrangement {
        Arrangement::Single(s) => (
            a(&s.sized()),
            vec![
                a(&s.bare()),
                format!("a picture of {}", a(&s.sized())),
                format!("a single {}", s.sized()),
                format!("just one {}", s.bare()),
                format!("{} on a plain background", a(&s.sized())),
            ],
        ),
        Arrangement::SideBySide { left: l, right: r } if l.looks_like(r) => {
            let (colour, kinds) = (l.colour.name(), l.kind.plural());
            let sized = if l.size == r.size {
                format!("two {} {colour} {kinds} side by side", l.size.name())
            } else {
                format!("{} to the left of {}", a(&l.sized()), a(&r.sized()))
            };
            (
                format!("two {colour} {kinds} side by side"),
                vec![
                    format!("two {colour} {kinds} next to each other"),
                    format!("a pair of {colour} {kinds}"),
                    sized,
                    format!("two {kinds}, both {colour}"),
                    format!("two {colour} {kinds}, one on the left and one on the right"),
                ],
            )
        }
        Arrangement::SideBySide { left: l, right: r } => (
            format!("{} to the left of {}", a(&l.bare()), a(&r.bare())),
            vec![
                format!("{} to the right of {}", a(&r.bare()), a(&l.bare())),
                format!("{} and {} side by side", a(&l.bare()), a(&r.bare())),
                format!("{} on the left and {} on the right", a(&l.sized()), a(&r.sized())),
                format!("two shapes: {} and {}", a(&l.bare()), a(&r.bare())),
                format!("{} next to {}", a(&l.bare()), a(&r.bare())),
                format!("{} on the right of {}", a(&r.sized()), a(&l.sized())),
            ],
        ),
        Arrangement::Stacked { top: t, bottom: b } if t.looks_like(b) => {
            let (colour, kinds) = (t.colour.name(), t.kind.plural());
            let sized = if t.size == b.size {
                format!("two {} {colour} {kinds} one above the other", t.size.name())
            } else {
                format!("{} above {}", a(&t.sized()), a(&b.sized()))
            };
            (
                format!("two {colour} {kinds} one above the other"),
                vec![
                    format!("two {colour} {kinds} stacked vertically"),
                    format!("a pair of {colour} {kinds}, one on top of the other"),
                    sized,
                    format!("two {kinds}, both {colour}, stacked vertically"),
                    format!("two {colour} {kinds}, one on top and one at the bottom"),
                ],
            )
        }
        Arrangement::Stacked { top: t, bottom: b } => (
            format!("{} above {}", a(&t.bare()), a(&b.bare())),
            vec![
                format!("{} below {}", a(&b.bare()), a(&t.bare())),
                format!("{} on top and {} at the bottom", a(&t.sized()), a(&b.sized())),
                format!("two shapes: {} on top of {}", a(&t.bare()), a(&b.bare())),
                format!("{} under {}", a(&b.sized()), a(&t.sized())),
                format!("{} and {} one above the other", a(&t.bare()), a(&b.bare())),
            ],
        ),
        Arrangement::Row(row) if row[0].looks_like(&row[1]) && row[1].looks_like(&row[2]) => {
            let (colour, kinds) = (row[0].colour.name(), row[0].kind.plural());
            let sized: Vec<String> = row.iter().map(|s| a(&s.sized())).collect();
            (
                format!("three {colour} {kinds} in a row"),
                vec![
                    format!("a row of three {colour} {kinds}"),
                    format!("three {kinds}, all {colour}"),
                    format!("three {colour} {kinds} next to each other"),
                    format!("from left to right: {}", list(&sized)),
                    format!("three {colour} {kinds} side by side"),
                ],
            )
        }
        Arrangement::Row(row) => {
            let bare: Vec<String> = row.iter().map(|s| a(&s.bare())).collect();
            let sized: Vec<String> = row.iter().map(|s| a(&s.sized())).collect();
            let [first, middle, last] = [&bare[0], &bare[1], &bare[2]];
            let between = if row[0].looks_like(&row[2]) {
                format!("{middle} between two {} {}", row[0].colour.name(), row[0].kind.plural())
            } else {
                format!("{middle} between {first} and {last}")
            };
            let shapes: Vec<&Shape> = row.iter().collect();
            (
                format!("{} in a row", counted(&shapes)),
                vec![
                    format!("three shapes in a row: {}", list(&bare)),
                    format!("from left to right: {}", list(&sized)),
                    between,
                    format!("{first} on the left, {middle} in the middle and {last} on the right"),
                    format!("three shapes: {}", counted(&shapes)),
                ],
            )
        }
    }
}

/// The words of a caption as the metrics see them: these captions are lower case and their
/// only punctuation is `,` and `:`, which PTB tokenisation drops.
fn caption_words(caption: &str) -> impl Iterator<Item = &str> {
    caption.split([' ', ',', ':']).filter(|word| !word.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Files

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitCounts {
    train: usize,
    val: usize,
    test: usize,
}

impl SplitCounts {
    fn get_mut(&mut self, split: Split) -> &mut usize {
        match split {
            Split::Train => &mut self.train,
            Split::Val => &mut self.val,
            Split::Test => &mut self.test,
        }
    }
}

/// `synth.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    generator: String,
    generator_version: u32,
    parameters: SynthConfig,
    images: SplitCounts,
    captions: usize,
    vocabulary: usize,
}

impl Manifest {
    fn summary(&self, out_dir: &Path, reused: bool) -> SynthSummary {
        SynthSummary {
            out_dir: out_dir.to_path_buf(),
            images_per_split: [(Split::Train, self.images.train), (Split::Val, self.images.val), (Split::Test, self.images.test)],
            captions: self.captions,
            vocabulary: self.vocabulary,
            reused,
        }
    }
}

/// Looks at `out_dir` before generating: `Some` when it already holds this dataset (and
/// `overwrite` is off), `None` when generation may go ahead, an error when the folder holds
/// something else.
fn prepare_out_dir(out_dir: &Path, config: &SynthConfig, overwrite: bool) -> Result<Option<SynthSummary>> {
    match std::fs::metadata(out_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DataError::io(out_dir, e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(DataError::invalid(out_dir, "exists and is not a directory; --out must name a folder"));
        }
        Ok(_) => {}
    }
    let mut entries = std::fs::read_dir(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    if entries.next().is_none() {
        return Ok(None);
    }
    if overwrite {
        remove_previous(out_dir)?;
        return Ok(None);
    }
    // An unreadable synth.json counts as none: the dataset it stood for is incomplete or foreign.
    let previous: Option<Manifest> = std::fs::read(out_dir.join(MANIFEST_FILE)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
    match previous {
        Some(manifest) if manifest.generator_version == GENERATOR_VERSION && manifest.parameters.same_as(config) => {
            Ok(Some(manifest.summary(out_dir, true)))
        }
        Some(manifest) => Err(DataError::invalid(
            out_dir,
            format!(
                "holds a synthetic dataset made by generator version {} as `{}`, not the one asked for \
                 (`{}`, version {GENERATOR_VERSION}); choose another folder or pass --overwrite to regenerate it",
                manifest.generator_version,
                command_line(out_dir, &manifest.parameters),
                command_line(out_dir, config)
            ),
        )),
        None => Err(DataError::invalid(
            out_dir,
            format!(
                "is not empty and holds no complete synthetic dataset (no readable {MANIFEST_FILE}); \
                 choose an empty or new folder, or pass --overwrite to generate into it anyway"
            ),
        )),
    }
}

/// Before regenerating in place: drops the completion marker first (so that an interrupted run
/// never looks complete), then the earlier images and leftover temporary files, so that a
/// smaller `n` leaves no stale images behind. Files the generator did not name are kept.
fn remove_previous(out_dir: &Path) -> Result<()> {
    let manifest = out_dir.join(MANIFEST_FILE);
    match std::fs::remove_file(&manifest) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(DataError::io(&manifest, e)),
        _ => {}
    }
    for split in Split::ALL {
        let dir = out_dir.join("images").join(split.as_str());
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            other => other.map_err(|e| DataError::io(&dir, e))?,
        };
        for entry in entries {
            let path = entry.map_err(|e| DataError::io(&dir, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let generated = name.starts_with("synth_") && name.ends_with(".png");
            let leftover = name.starts_with(".synth_") && name.ends_with(".tmp");
            if generated || leftover {
                std::fs::remove_file(&path).map_err(|e| DataError::io(&path, e))?;
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct CocoFile {
    info: CocoInfo,
    licenses: [CocoLicense; 1],
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

#[derive(Serialize)]
struct CocoInfo {
    description: String,
    version: String,
    contributor: &'static str,
}

#[derive(Serialize)]
struct CocoLicense {
    id: u32,
    name: &'static str,
    url: &'static str,
}

#[derive(Serialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    width: u32,
    height: u32,
    license: u32,
}

#[derive(Serialize)]
struct CocoAnnotation {
    id: u64,
    image_id: u64,
    caption: String,
}

/// One split's MS-COCO caption file; `samples[i]` is image `i + 1`. Caption ids are
/// `(image id - 1) * 5 + k + 1`, unique over all splits.
fn coco_file(config: &SynthConfig, split: Split, samples: &[(Split, Vec<String>)]) -> CocoFile {
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    for (index, (sample_split, captions)) in samples.iter().enumerate() {
        if *sample_split != split {
            continue;
        }
        let id = index as u64 + 1;
        images.push(CocoImage { id, file_name: image_file_name(id), width: config.image_size, height: config.image_size, license: 1 });
        for (k, caption) in captions.iter().enumerate() {
            annotations.push(CocoAnnotation {
                id: index as u64 * CAPTIONS_PER_IMAGE as u64 + k as u64 + 1,
                image_id: id,
                caption: caption.clone(),
            });
        }
    }
    CocoFile {
        info: CocoInfo {
            description: format!("Synthetic shapes captions ({split} split), made by `caption data synth`"),
            version: GENERATOR_VERSION.to_string(),
            contributor: "caption-data synthetic shapes generator",
        },
        licenses: [CocoLicense {
            id: 1,
            name: "Generated data, under the license of the caption project (MIT OR Apache-2.0)",
            url: "https://github.com/caption-rs/caption",
        }],
        images,
        annotations,
    }
}

/// The dataset's README. It names the folder `DIR` rather than its path, so that the same
/// parameters give the same bytes wherever the dataset is written.
fn readme(manifest: &Manifest) -> String {
    let config = &manifest.parameters;
    let counts = &manifest.images;
    format!(
        "# Synthetic shapes captioning dataset\n\
         \n\
         Made by the caption project's generator (`caption-data` `synth`, generator version \
         {version}). Each {size}x{size} RGB PNG shows one to three filled shapes (circle, square, \
         triangle, star; red, green, blue, yellow, purple, orange; small or large) on a plain light \
         background: one shape, two side by side, two stacked, or a row of three. Each image has \
         {per_image} reference captions describing colours, kinds, sizes, positions and counts, \
         over a vocabulary of {vocabulary} words. It is small on purpose, so that a CNN + \
         attention-LSTM captioner can be trained on it on a CPU.\n\
         \n\
         ## Regenerate\n\
         \n\
         From any folder, with `DIR` this dataset's folder:\n\
         \n\
         ```sh\n\
         {command}\n\
         ```\n\
         \n\
         The same parameters and generator version give byte-identical files.\n\
         \n\
         ## Contents\n\
         \n\
         | split | images | captions |\n\
         |-------|-------:|---------:|\n\
         | train | {train} | {train_captions} |\n\
         | val   | {val} | {val_captions} |\n\
         | test  | {test} | {test_captions} |\n\
         \n\
         - `images/{{train,val,test}}/synth_NNNNNN.png`: image `NNNNNN` (ids 1 to {n})\n\
         - `annotations/captions_{{train,val,test}}.json`: MS-COCO caption format; `file_name` is \
         relative to `images/<split>/`\n\
         - `synth.json`: the parameters, generator version and counts; written last, it marks a \
         complete dataset\n\
         \n\
         Parameters: n = {n}, seed = {seed}, image size = {size}, val fraction = {val_fraction}, \
         test fraction = {test_fraction}.\n",
        version = manifest.generator_version,
        size = config.image_size,
        per_image = CAPTIONS_PER_IMAGE,
        vocabulary = manifest.vocabulary,
        command = command_line(Path::new("DIR"), config),
        train = counts.train,
        val = counts.val,
        test = counts.test,
        train_captions = counts.train * CAPTIONS_PER_IMAGE,
        val_captions = counts.val * CAPTIONS_PER_IMAGE,
        test_captions = counts.test * CAPTIONS_PER_IMAGE,
        n = config.n,
        seed = config.seed,
        val_fraction = config.val_fraction,
        test_fraction = config.test_fraction,
    )
}

/// `word` as one shell word: unchanged when it needs no quoting, single-quoted otherwise.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "_-./,:=+@%".contains(c));
    if plain { word.to_string() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(n: usize, image_size: u32) -> SynthConfig {
        SynthConfig { n, image_size, ..SynthConfig::default() }
    }

    /// Every file under `dir`, keyed by its path relative to `dir`.
    fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, files);
                } else {
                    files.insert(path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(dir, dir, &mut files);
        files
    }

    fn png_count(dir: &Path) -> usize {
        read_tree(dir).keys().filter(|p| p.extension().is_some_and(|e| e == "png")).count()
    }

    fn nearest_colour(rgb: [u8; 3]) -> Colour {
        let distance = |c: Colour| c.rgb().iter().zip(rgb).map(|(&a, b)| (a as i32 - b as i32).pow(2)).sum::<i32>();
        Colour::ALL.into_iter().min_by_key(|&c| distance(c)).unwrap()
    }

    #[test]
    fn same_config_gives_byte_identical_files() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cfg = config(60, 32);
        let summary_a = generate(a.path(), &cfg, false).unwrap();
        let summary_b = generate(b.path(), &cfg, false).unwrap();
        assert_eq!(summary_a.images_per_split, summary_b.images_per_split);
        let (files_a, files_b) = (read_tree(a.path()), read_tree(b.path()));
        // 60 images, 3 annotation files, README.md, synth.json; no temporary files left.
        assert_eq!(files_a.len(), 60 + 3 + 2);
        assert!(files_a == files_b, "two runs with the same config wrote different files");
    }

    #[test]
    fn an_image_does_not_depend_on_n() {
        for id in [1, 7, 99] {
            assert_eq!(render(&config(100, 48), id), render(&config(5000, 48), id));
        }
        assert_ne!(render(&config(100, 48), 1).0, render(&config(100, 48), 2).0);
    }

    #[test]
    fn captions_name_what_is_drawn() {
        let cfg = config(1, 64);
        let mut layouts_seen = BTreeSet::new();
        let mut repeats_seen = 0;
        for id in 1..=600 {
            let (scene, captions) = compose(&cfg, id);
            let image = scene.draw(cfg.image_size);
            assert_eq!((image.width(), image.height()), (64, 64));
            assert_eq!(captions.len(), CAPTIONS_PER_IMAGE);
            assert_eq!(captions.iter().collect::<BTreeSet<_>>().len(), CAPTIONS_PER_IMAGE, "{captions:?}");
            let shapes = scene.arrangement.shapes();
            for caption in &captions {
                let words: Vec<&str> = caption_words(caption).collect();
                for shape in &shapes {
                    assert!(words.contains(&shape.colour.name()), "{caption:?} misses {shape:?}");
                    assert!(words.contains(&shape.kind.noun()) || words.contains(&shape.kind.plural()), "{caption:?} misses {shape:?}");
                }
                for size in [Size::Small, Size::Large] {
                    if words.contains(&size.name()) {
                        assert!(shapes.iter().any(|s| s.size == size), "{caption:?} names a size not drawn");
                    }
                }
            }
            // The picture shows the scene: each centre has the shape's colour, nearest to its name,
            // and shapes stay inside the image without touching.
            let side = cfg.image_size as f64;
            for shape in &shapes {
                let [x, y] = shape.centre.map(|c| (c * side) as u32);
                assert_eq!(image.get_pixel(x, y).0, shape.rgb, "image {id}");
                assert_eq!(nearest_colour(shape.rgb), shape.colour);
                let [x0, y0, x1, y1] = Outline::of(shape, side).bounds();
                assert!(x0 >= 0.0 && y0 >= 0.0 && x1 <= side && y1 <= side, "image {id}: {shape:?} leaves the image");
            }
            for (i, a) in shapes.iter().enumerate() {
                for b in &shapes[i + 1..] {
                    let [ax0, ay0, ax1, ay1] = Outline::of(a, side).bounds();
                    let [bx0, by0, bx1, by1] = Outline::of(b, side).bounds();
                    assert!(ax1 < bx0 || bx1 < ax0 || ay1 < by0 || by1 < ay0, "image {id}: shapes overlap");
                }
            }
            match &scene.arrangement {
                Arrangement::Single(_) => layouts_seen.insert("single"),
                Arrangement::SideBySide { left, right } => {
                    assert!(left.centre[0] < right.centre[0]);
                    if !left.looks_like(right) {
                        assert_eq!(captions[0], format!("{} to the left of {}", a(&left.bare()), a(&right.bare())));
                    }
                    layouts_seen.insert("side by side")
                }
                Arrangement::Stacked { top, bottom } => {
                    assert!(top.centre[1] < bottom.centre[1]);
                    if !top.looks_like(bottom) {
                        assert_eq!(captions[0], format!("{} above {}", a(&top.bare()), a(&bottom.bare())));
                    }
                    layouts_seen.insert("stacked")
                }
                Arrangement::Row(row) => {
                    assert!(row[0].centre[0] < row[1].centre[0] && row[1].centre[0] < row[2].centre[0]);
                    layouts_seen.insert("row")
                }
            };
            if shapes.iter().enumerate().any(|(i, s)| shapes[..i].iter().any(|t| t.looks_like(s))) {
                repeats_seen += 1;
                assert!(captions[0].starts_with("two ") || captions[0].contains(" two ") || captions[0].starts_with("three "));
            }
        }
        assert_eq!(layouts_seen.len(), 4);
        assert!(repeats_seen > 60, "only {repeats_seen} of 600 images repeat a shape");
    }

    #[test]
    fn captions_use_exactly_the_documented_vocabulary() {
        assert_eq!(VOCABULARY.iter().collect::<BTreeSet<_>>().len(), VOCABULARY.len(), "duplicate words");
        let cfg = SynthConfig::default();
        let mut used = BTreeSet::new();
        for id in 1..=3000 {
            for caption in render(&cfg, id).1 {
                for word in caption_words(&caption) {
                    assert!(VOCABULARY.contains(&word), "{word:?} (in {caption:?}) is not in VOCABULARY");
                    used.insert(word.to_string());
                }
            }
        }
        let unused: Vec<_> = VOCABULARY.iter().filter(|w| !used.contains(**w)).collect();
        assert!(unused.is_empty(), "never used: {unused:?}");
    }

    #[test]
    fn colours_stay_apart_after_jitter() {
        for (i, a) in Colour::ALL.iter().enumerate() {
            for b in &Colour::ALL[i + 1..] {
                let d2: i32 = a.rgb().iter().zip(b.rgb()).map(|(&x, y)| (x as i32 - y as i32).pow(2)).sum();
                assert!(d2 >= 80 * 80, "{a:?} and {b:?} are too close");
            }
        }
    }

    #[test]
    fn splits_follow_the_fractions() {
        for (n, val, test) in [(3000, 0.1, 0.1), (1000, 0.25, 0.05), (200, 0.0, 0.3)] {
            let cfg = SynthConfig { n, val_fraction: val, test_fraction: test, ..SynthConfig::default() };
            let mut counts = SplitCounts::default();
            for id in 1..=n as u64 {
                *counts.get_mut(split_of(&cfg, id)) += 1;
            }
            let close = |count: usize, fraction: f64| (count as f64 - fraction * n as f64).abs() <= 3.0;
            assert!(close(counts.val, val) && close(counts.test, test), "n={n}: {counts:?}");
            assert_eq!(counts.train + counts.val + counts.test, n);
        }
        let cfg = SynthConfig::default();
        assert!((1..50).all(|id| render(&config(50, 16), id).2 == split_of(&cfg, id)));
    }

    #[test]
    fn invalid_configs_are_refused_naming_the_option() {
        let cases = [
            (SynthConfig { n: 0, ..SynthConfig::default() }, "--n "),
            (config(10, 8), "--image-size"),
            (config(10, 2048), "--image-size"),
            (SynthConfig { val_fraction: 1.0, ..SynthConfig::default() }, "--val-fraction"),
            (SynthConfig { test_fraction: -0.1, ..SynthConfig::default() }, "--test-fraction"),
            (SynthConfig { test_fraction: f64::NAN, ..SynthConfig::default() }, "--test-fraction"),
            (SynthConfig { val_fraction: 0.5, test_fraction: 0.5, ..SynthConfig::default() }, "below 1"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("never-made");
        for (cfg, expected) in cases {
            let message = cfg.validate().unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} does not name {expected:?}");
            assert!(matches!(generate(&out, &cfg, true), Err(DataError::Config(_))));
        }
        assert!(!out.exists(), "an invalid config must not touch the disk");
        SynthConfig::default().validate().unwrap();
    }

    #[test]
    fn coco_files_list_every_image_with_its_captions() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(50, 32);
        let summary = generate(dir.path(), &cfg, false).unwrap();
        assert!(!summary.reused);
        assert_eq!(summary.captions, 50 * CAPTIONS_PER_IMAGE);
        assert!(summary.vocabulary > 20 && summary.vocabulary <= VOCABULARY.len());
        let mut images_seen = 0;
        let mut caption_ids = BTreeSet::new();
        for (split, count) in summary.images_per_split {
            let path = dir.path().join("annotations").join(format!("captions_{split}.json"));
            let file: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            assert!(file["info"].is_object() && file["licenses"].is_array());
            let images = file["images"].as_array().unwrap();
            assert_eq!(images.len(), count);
            for image in images {
                let id = image["id"].as_u64().unwrap();
                assert_eq!(image["file_name"], image_file_name(id).as_str());
                assert_eq!((image["width"].as_u64(), image["height"].as_u64()), (Some(32), Some(32)));
                let png = dir.path().join("images").join(split.as_str()).join(image_file_name(id));
                let decoded = image::open(&png).unwrap().into_rgb8();
                let (expected, captions, expected_split) = render(&cfg, id);
                assert_eq!((decoded, expected_split), (expected, split));
                let listed: Vec<&str> = file["annotations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["image_id"].as_u64() == Some(id))
                    .map(|a| a["caption"].as_str().unwrap())
                    .collect();
                assert_eq!(listed, captions);
            }
            for annotation in file["annotations"].as_array().unwrap() {
                assert!(caption_ids.insert(annotation["id"].as_u64().unwrap()), "caption ids repeat");
            }
            images_seen += images.len();
        }
        assert_eq!(images_seen, 50);
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap()).unwrap();
        assert_eq!(manifest.summary(dir.path(), false), summary);
        let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
        assert!(readme.contains("caption data synth --out DIR --n 50 --seed 42 --image-size 32"), "{readme}");
    }

    #[test]
    fn an_existing_dataset_is_reused_and_anything_else_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("shapes");
        let cfg = config(20, 16);
        assert!(!generate(&dir, &cfg, false).unwrap().reused);

        // Same parameters: nothing is written (a deleted image stays deleted).
        let image = read_tree(&dir).into_keys().find(|p| p.extension().is_some_and(|e| e == "png")).unwrap();
        std::fs::remove_file(dir.join(&image)).unwrap();
        let again = generate(&dir, &cfg, false).unwrap();
        assert!(again.reused);
        assert!(!dir.join(&image).exists());

        // Other parameters: refused, then regenerated with --overwrite, leaving no stale images.
        let smaller = config(10, 16);
        let message = generate(&dir, &smaller, false).unwrap_err().to_string();
        assert!(message.contains("--n 20") && message.contains("--overwrite"), "{message}");
        let summary = generate(&dir, &smaller, true).unwrap();
        assert!(!summary.reused);
        assert_eq!(png_count(&dir), 10);
        assert!(generate(&dir, &smaller, false).unwrap().reused);

        // A folder with other files, or no folder at all: refused unless --overwrite, which
        // keeps the files it did not make.
        let other = root.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "mine").unwrap();
        let message = generate(&other, &cfg, false).unwrap_err().to_string();
        assert!(message.contains("no complete synthetic dataset"), "{message}");
        generate(&other, &cfg, true).unwrap();
        assert_eq!(std::fs::read_to_string(other.join("notes.txt")).unwrap(), "mine");
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(generate(&file, &cfg, true).unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn command_line_regenerates_the_dataset() {
        let cfg = SynthConfig::default();
        assert_eq!(command_line(Path::new("data/shapes"), &cfg), "caption data synth --out data/shapes --n 3000 --seed 42 --image-size 64");
        let cfg = SynthConfig { val_fraction: 0.2, ..cfg };
        assert_eq!(
            command_line(Path::new("my data/it's"), &cfg),
            r"caption data synth --out 'my data/it'\''s' --n 3000 --seed 42 --image-size 64 --val-fraction 0.2"
        );
    }
}
