//! `caption train --benchmark N`: the throughput of a config's training steps, with nothing
//! written but the feature cache.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::prelude::*;
use caption_data::{CaptionDataset, Split};
use caption_model::{Captioner, DeviceSpec};
use serde::Serialize;

use crate::config::RunConfig;
use crate::data::{BatchPlan, ImageSource, TrainSet};
use crate::features;
use crate::setup::{adamw, image_cache_bytes, new_model, preprocess_config, samples_of, set_threads, trains_from_features};
use crate::step::{StepValues, train_step};
use crate::trainer::TrainJob;

/// Training throughput of a config on a device (`caption train --benchmark N`).
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub device: String,
    pub threads: usize,
    /// Timed optimiser steps (after one untimed warm-up step).
    pub steps: usize,
    /// Seconds the warm-up step took: the cold start (first allocations and, on CUDA, kernel
    /// compilation and autotuning not yet in the kernel caches), reported apart from the steady state.
    pub warmup_s: f64,
    pub images_per_s: f64,
    pub caption_pairs_per_s: f64,
    /// Whether the steps ran on cached encoder features.
    pub from_features: bool,
    pub vocab_size: usize,
    /// Mean padded caption length of the timed batches (tokens per row, `<bos>` included).
    pub mean_row_length: f64,
    /// Whether the batches had fixed shapes (`train.fixed_shapes`).
    pub fixed_shapes: bool,
}

/// Measures `steps` cross-entropy training steps of `job`'s config (nothing is written but the
/// feature cache, which a frozen encoder fills as a run would).
pub fn benchmark(job: TrainJob, steps: usize) -> Result<Throughput> {
    job.config.validate()?;
    if steps == 0 {
        bail!("--benchmark needs at least 1 step");
    }
    let device = job.device.unwrap_or(job.config.train.device);
    device.check_available()?;
    set_threads(&job.config.train);
    match device {
        DeviceSpec::Cpu => bench::<caption_model::FlexBackend>(&job.config, steps, device, Default::default()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => {
            bench::<caption_model::device::CudaBackend>(&job.config, steps, device, device.cuda_device().expect("a CUDA device"))
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("checked by check_available"),
    }
}

fn bench<B: Backend>(config: &RunConfig, steps: usize, device_spec: DeviceSpec, device: B::Device) -> Result<Throughput> {
    let train_config = &config.train;
    let dataset = CaptionDataset::load(&config.data).context("loading the dataset")?;
    let train_samples = samples_of(&dataset, Split::Train, 0);
    if train_samples.is_empty() {
        bail!("the dataset has no training images");
    }
    let plan_fixed = train_config.fixed_shapes.on(device_spec);
    let (text, mut model) = new_model::<B>(config, &train_samples, &device)?;
    let mut optimizer = adamw(train_config).init::<Autodiff<B>, Captioner<Autodiff<B>>>();
    let first_trained = config.model.encoder.finetune.first_trainable_stage(model.encoder.num_stages());
    let use_features = trains_from_features(config, model.encoder.num_stages());
    let cache_bytes = image_cache_bytes(train_config, use_features);
    let mut train_set = TrainSet::new(ImageSource::new(train_samples, &config.data.image, cache_bytes)?, &text);
    if use_features {
        let encoder = model.encoder.valid();
        let eval_image = preprocess_config(&config.data.image);
        let key = features::cache_key(&config.model.encoder_config(), &encoder, &eval_image)?;
        let set = features::load_or_compute(
            &train_config.feature_cache_dir,
            &key,
            "train",
            &encoder,
            &train_set.images,
            train_config.eval_batch_size,
            &device,
        )?;
        train_set.features = Some(set);
    }
    let order = train_set.epoch_order(config.seed, 0);
    let batches = train_set.batches_per_epoch(train_config.batch_size);
    let plan = BatchPlan {
        seed: config.seed,
        epoch: 0,
        order: &order,
        batch_size: train_config.batch_size,
        captions_per_image: train_config.captions_per_image,
        fixed_shapes: plan_fixed,
    };
    // The loop runs as training does: batches prepared on another thread, the device read
    // once at the end. The first step (kernel selection, allocations) is not timed.
    let (mut images, mut pairs, mut lengths) = (0usize, 0usize, 0usize);
    let mut start = Instant::now();
    let mut warmup_s = 0.0;
    std::thread::scope(|scope| -> Result<()> {
        let prepared = train_set.prefetch(scope, plan, (0..=steps).map(|step| step % batches));
        for step in 0..=steps {
            let batch = prepared.recv().context("the batch loader stopped")??;
            let (batch_images, batch_pairs, batch_length) = (batch.images, batch.rows(), batch.length);
            let (next, stats) =
                train_step::<B, _>(model.clone(), &mut optimizer, batch, train_config.lr, train_config, first_trained, &device)?;
            model = next;
            if step == 0 || step == steps {
                let values = StepValues::read(stats.values);
                if !values.is_finite() {
                    bail!("the loss is not finite at benchmark step {step}; lower `train.lr`");
                }
            }
            if step == 0 {
                warmup_s = start.elapsed().as_secs_f64();
                start = Instant::now();
            } else {
                images += batch_images;
                pairs += batch_pairs;
                lengths += batch_length;
            }
        }
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    Ok(Throughput {
        device: device_spec.to_string(),
        threads: rayon::current_num_threads(),
        steps,
        warmup_s,
        images_per_s: images as f64 / seconds,
        caption_pairs_per_s: pairs as f64 / seconds,
        from_features: use_features,
        vocab_size: text.vocab_size(),
        mean_row_length: lengths as f64 / steps as f64,
        fixed_shapes: plan_fixed,
    })
}
