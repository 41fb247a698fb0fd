//! Parity of the encoders with torchvision, measured on reference outputs that
//! `scripts/reference/torchvision_parity.py` computed with PyTorch + torchvision (CPU, eval
//! mode) and stored in `tests/fixtures/`:
//!
//! - MobileNetV2 with the shared ImageNet weights on three real Flickr8k photos (the weights and
//!   photos are read from the shared folder, `../shared` beside the repository);
//! - reduced ResNets (BasicBlock and Bottleneck) with random weights and BatchNorm statistics,
//!   loaded from torchvision `.pth` (zip) and `.safetensors` state dicts.
//!
//! Error measure: `max |burn - torch| / max |torch|` over a whole output tensor (relative to
//! the output's scale, as elementwise ratios are meaningless where ReLU outputs are zero);
//! required below 1e-4. Run with `--nocapture` to see the numbers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use caption_model::encoder::{EncoderConfig, EncoderKind, Finetune};
use caption_model::weights::{ImportOptions, ImportReport, WeightFormat, WeightsError, load_encoder_weights};
use caption_model::{Encoder, FlexBackend};
use safetensors::SafeTensors;

type B = FlexBackend;

const MAX_REL_ERROR: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

use caption_test_support::shared_dir as shared;

/// The tensors and metadata of one fixture file.
struct Fixture {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// What the reference script recorded (versions, config, photos).
    metadata: serde_json::Value,
}

impl Fixture {
    fn read(name: &str) -> Fixture {
        let path = fixtures().join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let reference = header.metadata().as_ref().and_then(|m| m.get("reference")).expect("fixture without `reference` metadata");
        let metadata = serde_json::from_str(reference).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let tensors = file
            .tensors()
            .into_iter()
            .map(|(key, view)| {
                assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}: {key} is not f32");
                let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                (key, (view.shape().to_vec(), values))
            })
            .collect();
        Fixture { tensors, metadata }
    }

    fn values(&self, key: &str) -> &[f32] {
        &self.tensors[key].1
    }

    fn tensor<const D: usize>(&self, key: &str) -> Tensor<B, D> {
        let (shape, values) = &self.tensors[key];
        Tensor::from_data(TensorData::new(values.clone(), shape.clone()), &Default::default())
    }
}

fn to_vec<const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// `(max |got - want|, that / max |want|)`.
fn errors(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "output sizes differ");
    let max_abs = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
    let scale = want.iter().map(|w| w.abs()).fold(0.0, f32::max);
    (max_abs, max_abs / scale.max(f32::MIN_POSITIVE))
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let (max_abs, rel) = errors(got, want);
    println!("{what}: max abs error {max_abs:.3e}, relative {rel:.3e}");
    assert!(rel <= MAX_REL_ERROR, "{what}: relative error {rel:.3e} (max abs {max_abs:.3e}) is over {MAX_REL_ERROR:e}");
}

/// Checks an encoder against an `_io` fixture: the feature map, the pooled vector, and that the
/// regions are the feature map's positions in row-major order.
fn check_outputs(what: &str, encoder: &Encoder<B>, io: &Fixture) {
    let input: Tensor<B, 4> = io.tensor("input");
    let map = encoder.feature_map(input.clone());
    assert_eq!(map.dims().to_vec(), io.tensors["features"].0, "{what}: feature map shape");
    assert_close(&format!("{what} features"), &to_vec(map.clone()), io.values("features"));
    let out = encoder.forward(input);
    assert_close(&format!("{what} pooled"), &to_vec(out.pooled), io.values("pooled"));
    let [batch, channels, height, width] = map.dims();
    assert_eq!(out.regions.dims(), [batch, height * width, channels]);
    let regions = to_vec(out.regions);
    let want = io.values("features");
    for (b, y, x, c) in [(0, 0, 0, 0), (batch - 1, height - 1, width - 1, channels - 1), (0, height / 2, width - 1, channels / 3)] {
        let region = regions[(b * height * width + y * width + x) * channels + c];
        let torch = want[((b * channels + c) * height + y) * width + x];
        assert!((region - torch).abs() <= MAX_REL_ERROR * torch.abs().max(1.0), "{what}: region ({y}, {x}) channel {c}");
    }
}

fn resnet_config(io: &Fixture) -> EncoderConfig {
    let config = &io.metadata["config"];
    let network = match config["block"].as_str().unwrap() {
        "basic" => EncoderKind::Resnet18,
        "bottleneck" => EncoderKind::Resnet50,
        other => panic!("unknown block {other}"),
    };
    let layers: Vec<usize> = serde_json::from_value(config["layers"].clone()).unwrap();
    EncoderConfig::new(network).with_layers(Some(layers.try_into().unwrap())).with_width(config["width"].as_u64().unwrap() as usize)
}

fn load(config: &EncoderConfig, path: &Path) -> Result<(Encoder<B>, ImportReport), WeightsError> {
    load_encoder_weights(config.init::<B>(&Default::default()).unwrap(), path, &ImportOptions::default())
}

fn check_resnet(name: &str, extension: &str, format: WeightFormat) {
    let io = Fixture::read(&format!("{name}_io.safetensors"));
    let config = resnet_config(&io);
    let path = fixtures().join(format!("{name}.{extension}"));
    let (encoder, report) = load(&config, &path).unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert_eq!(report.format, format);
    assert!(report.is_complete(), "{report}");
    // torchvision saves the classifier, which an encoder has no use for.
    assert_eq!(report.unused, ["fc.bias", "fc.weight"], "{report}");
    assert!(!report.ignored.is_empty() && report.ignored.iter().all(|k| k.ends_with(".num_batches_tracked")));
    // Every BatchNorm has four tensors besides its counter.
    assert_eq!(report.applied.iter().filter(|k| k.ends_with(".running_var")).count(), report.ignored.len());
    assert!(report.applied.iter().any(|k| k.ends_with("downsample.1.weight")), "{report}");
    check_outputs(&format!("{name}.{extension}"), &encoder, &io);
}

#[test]
fn resnet_basic_block_from_pth_matches_torchvision() {
    check_resnet("resnet_basic", "pth", WeightFormat::Pytorch);
}

#[test]
fn resnet_basic_block_from_safetensors_matches_torchvision() {
    check_resnet("resnet_basic", "safetensors", WeightFormat::Safetensors);
}

#[test]
fn resnet_bottleneck_from_pth_matches_torchvision() {
    check_resnet("resnet_bottleneck", "pth", WeightFormat::Pytorch);
}

#[test]
fn resnet_bottleneck_from_safetensors_matches_torchvision() {
    check_resnet("resnet_bottleneck", "safetensors", WeightFormat::Safetensors);
}

fn mobilenet_v2_weights() -> PathBuf {
    shared().join("weights/mobilenetv2_imagenet_features.safetensors")
}

fn load_mobilenet_v2() -> Encoder<B> {
    let config = EncoderConfig::new(EncoderKind::MobilenetV2);
    let (encoder, report) = load(&config, &mobilenet_v2_weights()).unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    // 312 tensors: 52 BatchNorms x 5 (one of them num_batches_tracked) + 52 convolutions.
    assert_eq!((report.applied.len(), report.ignored.len()), (260, 52), "{report}");
    assert!(report.is_complete() && report.unused.is_empty(), "{report}");
    // The shared file uses the flat layout of tonylins/pytorch-mobilenet-v2; keys stay the file's.
    assert!(report.renamed_layout.is_some(), "{report}");
    assert!(report.applied.contains(&"features.2.conv.7.running_var".to_string()), "{report}");
    encoder
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn mobilenet_v2_with_imagenet_weights_matches_torchvision_on_flickr8k_photos() {
    let io = Fixture::read("mobilenet_v2_flickr8k.safetensors");
    let encoder = load_mobilenet_v2();
    assert_eq!(io.tensors["features"].0, [3, 1280, 7, 7]);
    check_outputs("mobilenet_v2 (Flickr8k photos)", &encoder, &io);
}

#[test]
fn small_mobilenet_v2_in_torchvision_layout_from_pth_matches_torchvision() {
    let io = Fixture::read("mobilenet_v2_small_io.safetensors");
    let width_mult = io.metadata["config"]["width_mult"].as_f64().unwrap();
    let config = EncoderConfig::new(EncoderKind::MobilenetV2).with_width_mult(width_mult);
    let (encoder, report) = load(&config, &fixtures().join("mobilenet_v2_small.pth")).unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert!(report.is_complete() && report.renamed_layout.is_none(), "{report}");
    assert_eq!(report.unused, ["classifier.1.bias", "classifier.1.weight"], "{report}");
    assert!(report.applied.contains(&"features.2.conv.1.0.weight".to_string()), "{report}");
    assert!(report.applied.contains(&"features.1.conv.2.running_var".to_string()), "{report}");
    check_outputs("mobilenet_v2 x0.35 (.pth)", &encoder, &io);
}

/// caption-data's decoding and normalisation against torchvision's (PIL decode, ToTensor,
/// Normalize) on the same photos, and what the difference does to the features.
#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn preprocessing_matches_torchvision_on_flickr8k_photos() {
    use caption_data::image::{ImageConfig, decode_file, prepare};
    let io = Fixture::read("mobilenet_v2_flickr8k.safetensors");
    let photos: Vec<String> = serde_json::from_value(io.metadata["photos"].clone()).unwrap();
    let config = ImageConfig::default();
    let mut chw = Vec::new();
    for photo in &photos {
        let path = shared().join("data/flickr8k/Images").join(photo);
        let image = decode_file(&path, config.max_pixels).unwrap();
        chw.extend(prepare(&image, &config, None).chw);
    }
    // Differences in 8-bit levels: one level is 1 / 255 / std (~0.0175) after normalisation.
    let want = io.values("input");
    let plane = 224 * 224;
    let levels: Vec<f32> =
        chw.iter().zip(want).enumerate().map(|(i, (a, b))| (a - b).abs() * 255.0 * config.std[(i / plane) % 3]).collect();
    let max_levels = levels.iter().copied().fold(0.0, f32::max);
    let mean_levels = levels.iter().sum::<f32>() / levels.len() as f32;
    let identical = levels.iter().filter(|&&d| d < 0.5).count() as f32 / levels.len() as f32;
    println!(
        "preprocessing vs torchvision: {:.1}% of values identical, max {max_levels:.1} 8-bit levels, mean {mean_levels:.3} levels",
        100.0 * identical
    );
    // The normalisation is the same arithmetic; the JPEG decoders (the image crate's and PIL's
    // libjpeg-turbo) round the IDCT and chroma upsampling differently by a level or few.
    assert!(max_levels <= 6.0 && mean_levels <= 0.5, "caption-data's preprocessing is too far from torchvision's");

    let encoder = load_mobilenet_v2();
    let input = Tensor::<B, 4>::from_data(TensorData::new(chw, [photos.len(), 3, 224, 224]), &Default::default());
    let pooled = to_vec(encoder.forward(input).pooled);
    let (max_abs, rel) = errors(&pooled, io.values("pooled"));
    println!("pooled features from caption-data's preprocessing vs torchvision's pipeline: max abs {max_abs:.3e}, relative {rel:.3e}");
    assert!(rel <= 0.05, "end-to-end relative error {rel:.3e}");
}

#[test]
fn incompatible_weights_are_errors_naming_file_and_key() {
    let io = Fixture::read("resnet_basic_io.safetensors");
    let path = fixtures().join("resnet_basic.pth");

    // A wider network than the file's: shape mismatches.
    let wider = resnet_config(&io).with_width(16);
    let message = load(&wider, &path).unwrap_err().to_string();
    assert!(message.contains("resnet_basic.pth"), "{message}");
    assert!(message.contains("shape mismatch: conv1.weight is [8, 3, 7, 7] in the file, the encoder expects [16, 3, 7, 7]"), "{message}");

    // A deeper network than the file's: missing tensors, named as torchvision names them.
    let deeper = resnet_config(&io).with_layers(Some([2, 2, 1, 1]));
    let err = load(&deeper, &path).unwrap_err();
    let WeightsError::Incompatible(report) = &err else { panic!("{err}") };
    assert!(report.missing.contains(&"layer2.1.bn1.weight".to_string()), "{report}");
    assert!(err.to_string().contains("missing from the file: layer2.1."), "{err}");

    // Bottleneck weights for a BasicBlock network.
    let bottleneck = fixtures().join("resnet_bottleneck.safetensors");
    let message = load(&resnet_config(&io), &bottleneck).unwrap_err().to_string();
    assert!(message.contains("resnet_bottleneck.safetensors") && message.contains("shape mismatch"), "{message}");
}

#[test]
fn state_dict_nested_in_a_checkpoint_loads_with_its_prefix_stripped() {
    // The same tensors saved with an `encoder.` prefix (as inside a captioning model) load once
    // the prefix is named; keys without it would be reported as unused.
    let io = Fixture::read("resnet_basic_io.safetensors");
    let config = resnet_config(&io);
    let (encoder, _) = load(&config, &fixtures().join("resnet_basic.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.safetensors");
    caption_model::save_encoder_safetensors(&encoder, &plain).unwrap();
    let bytes = std::fs::read(&plain).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let prefixed: Vec<(String, safetensors::tensor::TensorView)> =
        file.tensors().into_iter().map(|(key, view)| (format!("encoder.{key}"), view)).collect();
    let nested = dir.path().join("nested.safetensors");
    safetensors::serialize_to_file(prefixed, None, &nested).unwrap();

    let options = ImportOptions { strip_prefix: Some("encoder.".into()), ..Default::default() };
    let (reloaded, report) = load_encoder_weights(config.init::<B>(&Default::default()).unwrap(), &nested, &options).unwrap();
    assert!(report.is_complete() && report.unused.is_empty(), "{report}");
    check_outputs("resnet_basic via prefixed safetensors", &reloaded, &io);
}

/// The full-size encoders have exactly torchvision's parameters: same names (burn's BatchNorm
/// `gamma`/`beta` written back as `weight`/`bias`, enum variants skipped), same shapes.
#[test]
fn full_size_encoders_have_torchvision_state_dict_keys_and_shapes() {
    use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot};
    let path = fixtures().join("torchvision_state_dict_keys.json");
    let all: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for network in EncoderKind::ALL {
        let want: std::collections::BTreeMap<String, Vec<usize>> = serde_json::from_value(all[network.name()].clone()).unwrap();
        let want: std::collections::BTreeMap<String, Vec<usize>> =
            want.into_iter().filter(|(key, _)| !key.ends_with(".num_batches_tracked")).collect();
        let encoder = EncoderConfig::new(network).init::<B>(&Default::default()).unwrap();
        let got: std::collections::BTreeMap<String, Vec<usize>> = encoder
            .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
            .into_iter()
            .map(|snapshot| (snapshot.full_path(), snapshot.shape.to_vec()))
            .collect();
        let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        assert!(missing.is_empty() && extra.is_empty(), "{network}: missing {missing:?}, not in torchvision {extra:?}");
        for (key, shape) in &want {
            assert_eq!(&got[key], shape, "{network}: shape of {key}");
        }
        println!("{network}: {} tensors, names and shapes as torchvision's", want.len());
    }
}

/// Which parameters (torchvision paths) require gradients.
#[derive(Default)]
struct RequiresGrad {
    path: Vec<String>,
    params: Vec<(String, bool)>,
}

impl<AB: Backend> ModuleVisitor<AB> for RequiresGrad {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }
    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let path = self.path.join(".");
        if !path.ends_with("running_mean") && !path.ends_with("running_var") {
            self.params.push((path, param.val().is_require_grad()));
        }
    }
}

#[test]
fn finetune_freezes_exactly_the_stages_the_config_names() {
    for (network, mode) in [
        (EncoderKind::Resnet18, Finetune::LastStages(2)),
        (EncoderKind::MobilenetV2, Finetune::LastStages(4)),
        (EncoderKind::Resnet18, Finetune::Frozen),
        (EncoderKind::Resnet18, Finetune::All),
    ] {
        let config = EncoderConfig::new(network).with_finetune(mode);
        let encoder = config.init::<Autodiff<B>>(&Default::default()).unwrap().apply_finetune(config.finetune);
        let mut visitor = RequiresGrad::default();
        encoder.visit(&mut visitor);
        assert!(!visitor.params.is_empty());
        for (path, requires_grad) in &visitor.params {
            assert_eq!(*requires_grad, config.is_trainable(path), "{network} {mode}: {path}");
        }
        let trained = visitor.params.iter().filter(|(_, g)| *g).count();
        println!("{network} {mode}: {trained} of {} parameter tensors trained", visitor.params.len());
    }
}
