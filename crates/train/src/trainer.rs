//! The training loop, top to bottom (see [`run`]): set the run up, then epoch after epoch train
//! (one [`crate::step`] per batch), validate (keeping the best checkpoint, stopping early) and
//! write `checkpoints/last` (also every `checkpoint_every` steps); at the end, test the best
//! checkpoint.
//!
//! Determinism: initialisation is seeded by `seed`, the data order and caption choice by
//! `(seed, epoch)`, dropout by `(seed, step)` (the backend is reseeded before every step). A
//! resumed run therefore continues exactly where the interrupted one was.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, Optimizer};
use burn::prelude::*;
use caption_data::image::ImageConfig;
use caption_data::rng::SplitMix64;
use caption_data::{CaptionDataset, Sample, Split, TextEncoder};
use caption_model::{CaptionPipeline, Captioner, DeviceSpec, load_checkpoint, save_checkpoint};

use crate::config::RunConfig;
use crate::data::{BatchPlan, HostBatch, ImageSource, TrainSet};
use crate::evaluate::{EvalInputs, ReportLabel, SplitRun, TestReport, decode_images, evaluate_split, format_report, score, texts};
use crate::features::{self, FeatureSet};
use crate::manifest::{self, Session, annotation_files, fingerprint};
use crate::progress::EpochProgress;
use crate::run_dir::{self, BEST, CHECKPOINTS_DIR, CONFIG_FILE, MetricsLog, TENSORBOARD_DIR, create_run_dir};
use crate::scst;
use crate::setup::{
    adamw, checkpoint_meta, count_parameters, image_cache_bytes, learning_rate, new_model, preprocess_config, sample_table, samples_of,
    set_threads, trains_from_features,
};
use crate::state::{Best, TrainState, load_optimizer, param_ids, recover_last, remap_record, save_last};
use crate::step::{StepStats, StepValues, scst_step, sync_running_statistics, train_step};
use crate::tensorboard::EventWriter;

const DROPOUT_STREAM: u64 = 0x4452_4F50_0000_0004;
const SCST_STREAM: u64 = 0x5343_5354_0000_0005;

/// What to run.
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub config: RunConfig,
    /// The text of `config.yaml` (the resolved experiment config); the run config serialised
    /// when `None`.
    pub config_yaml: Option<String>,
    /// Overrides `train.device`.
    pub device: Option<DeviceSpec>,
    /// Continue the run in this directory from its `checkpoints/last`.
    pub resume: Option<PathBuf>,
    /// Recorded in the manifest.
    pub command_line: Vec<String>,
    /// Stop (as a kill would) right after `checkpoints/last` is written at this step or later:
    /// lets tests interrupt a run at a known point.
    pub interrupt_after_step: Option<u64>,
}

impl TrainJob {
    pub fn new(config: RunConfig) -> Self {
        TrainJob { config, config_yaml: None, device: None, resume: None, command_line: Vec::new(), interrupt_after_step: None }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub epochs_completed: usize,
    pub steps: u64,
    pub best: Option<Best>,
    pub stopped_early: bool,
    /// `true` when the run stopped at [`TrainJob::interrupt_after_step`].
    pub interrupted: bool,
    pub test: Option<TestReport>,
    /// Training time over all sessions (validation included, test evaluation excluded).
    pub train_seconds: f64,
}

/// Runs (or resumes) a training job on the device it names.
pub fn train(job: TrainJob) -> Result<TrainSummary> {
    job.config.validate()?;
    let device = job.device.unwrap_or(job.config.train.device);
    device.check_available()?;
    set_threads(&job.config.train);
    match device {
        DeviceSpec::Cpu => run::<caption_model::FlexBackend>(job, device, Default::default()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => run::<caption_model::device::CudaBackend>(job, device, device.cuda_device().expect("a CUDA device")),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("checked by check_available"),
    }
}

/// A run, top to bottom.
fn run<B: Backend>(job: TrainJob, device_spec: DeviceSpec, device: B::Device) -> Result<TrainSummary> {
    let session_start = Instant::now();
    let config = &job.config;
    let load_start = Instant::now();
    let dataset = CaptionDataset::load(&config.data).context("loading the dataset")?;
    let splits = Splits::of(&dataset, config)?;
    let mut run = Run::<B>::start_or_resume(&job, &splits, device, device_spec)?;
    let inputs = Inputs::prepare(config, &splits, &run.text, &run.model, &run.device)?;
    record_provenance(&job, &run, &dataset, device_spec)?;
    run.open_logs()?;
    run.announce(&splits, &inputs, device_spec, load_start);

    // SCST rewards: CIDEr-D with the training split's document frequencies.
    let reward = config.scst.enabled.then(|| scst::Reward::new(splits.train.iter().map(|s| s.captions.as_slice())));
    let mut interrupted = false;
    while !run.state.finished && run.state.epoch < config.train.epochs {
        if run.train_epoch(&inputs.train, reward.as_ref())? {
            interrupted = true;
            break;
        }
        let stop = run.validate(&inputs, &splits.val)?;
        if run.end_epoch(stop)? {
            interrupted = true;
            break;
        }
    }
    let train_seconds = if run.resumed || run.state.step > 0 { run.state.train_seconds } else { 0.0 };

    let test = if interrupted {
        println!("interrupted after step {} (checkpoints/last written)", run.state.step);
        None
    } else {
        let state = &run.state;
        let early = if state.stopped_early { " (stopped early)" } else { "" };
        println!("training done: {} epochs, {} steps, {:.1}s of training{early}", state.epoch, state.step, train_seconds);
        run.test(&inputs, &splits.test)?
    };
    println!("run directory: {} (session {:.1}s)", run.run_dir.display(), session_start.elapsed().as_secs_f64());
    Ok(TrainSummary {
        run_dir: run.run_dir.clone(),
        epochs_completed: run.state.epoch,
        steps: run.state.step,
        best: run.state.best.clone(),
        stopped_early: run.state.stopped_early,
        interrupted,
        test,
        train_seconds,
    })
}

/// The samples of each split the run uses.
struct Splits<'d> {
    train: Vec<&'d Sample>,
    /// The first `train.max_val_images` (0: all).
    val: Vec<&'d Sample>,
    test: Vec<&'d Sample>,
}

impl<'d> Splits<'d> {
    fn of(dataset: &'d CaptionDataset, config: &RunConfig) -> Result<Self> {
        if !dataset.report.is_clean() {
            println!("data: {}", dataset.report);
        }
        let train = samples_of(dataset, Split::Train, 0);
        if train.is_empty() {
            bail!("the dataset has no training images");
        }
        let val = samples_of(dataset, Split::Val, config.train.max_val_images);
        Ok(Splits { train, val, test: samples_of(dataset, Split::Test, 0) })
    }
}

/// What the model reads: with a frozen encoder and no augmentation, cached encoder features
/// (computed once per encoder); otherwise images, the training ones in memory when they fit.
/// Validation and test images are never augmented.
struct Inputs<'d> {
    train: TrainSet<'d>,
    /// How validation and test images are prepared (and checkpoints record).
    eval_image: ImageConfig,
    val_source: ImageSource<'d>,
    test_source: ImageSource<'d>,
    val_features: Option<FeatureSet>,
    test_features: Option<FeatureSet>,
}

impl<'d> Inputs<'d> {
    fn prepare<B: Backend>(
        config: &RunConfig,
        splits: &Splits<'d>,
        text: &TextEncoder,
        model: &Captioner<Autodiff<B>>,
        device: &B::Device,
    ) -> Result<Self> {
        let train_config = &config.train;
        let stages = model.encoder.num_stages();
        let use_features = trains_from_features(config, stages);
        if train_config.feature_cache && config.model.encoder.finetune.first_trainable_stage(stages) >= stages && !use_features {
            println!("features: not cached, because augmentation is on (data.image.augment)");
        }
        let cache_bytes = image_cache_bytes(train_config, use_features);
        let eval_image = preprocess_config(&config.data.image);
        let mut train = TrainSet::new(ImageSource::new(splits.train.clone(), &config.data.image, cache_bytes)?, text);
        let val_source = ImageSource::new(splits.val.clone(), &eval_image, cache_bytes)?;
        let test_source = ImageSource::new(splits.test.clone(), &eval_image, 0)?;
        let (mut val_features, mut test_features) = (None, None);
        if use_features {
            let encoder = model.encoder.valid();
            let key = features::cache_key(&config.model.encoder_config(), &encoder, &eval_image)?;
            let dir = &train_config.feature_cache_dir;
            let batch = train_config.eval_batch_size;
            train.features = Some(features::load_or_compute(dir, &key, "train", &encoder, &train.images, batch, device)?);
            if !val_source.is_empty() {
                val_features = Some(features::load_or_compute(dir, &key, "val", &encoder, &val_source, batch, device)?);
            }
            if train_config.test && !test_source.is_empty() {
                test_features = Some(features::load_or_compute(dir, &key, "test", &encoder, &test_source, batch, device)?);
            }
        }
        Ok(Inputs { train, eval_image, val_source, test_source, val_features, test_features })
    }

    fn val(&self) -> EvalInputs<'_> {
        match &self.val_features {
            Some(set) => EvalInputs::Features(set),
            None => EvalInputs::Images(&self.val_source),
        }
    }

    fn test(&self) -> EvalInputs<'_> {
        match &self.test_features {
            Some(set) => EvalInputs::Features(set),
            None => EvalInputs::Images(&self.test_source),
        }
    }
}

/// `config.yaml` and the manifest of a new run; a resumed run's manifest gains this session.
fn record_provenance<B: Backend>(job: &TrainJob, run: &Run<B>, dataset: &CaptionDataset, device: DeviceSpec) -> Result<()> {
    let config = &job.config;
    let session = Session::current(job.command_line.clone(), device);
    let dataset = fingerprint(dataset, &annotation_files(&config.data), run.text.vocab_size())?;
    if run.resumed {
        return manifest::record_resume(&run.run_dir, &session, run.state.epoch, run.state.step, dataset);
    }
    let yaml = match &job.config_yaml {
        Some(yaml) => yaml.clone(),
        None => config.to_yaml()?,
    };
    caption_data::fsutil::write_atomic(&run.run_dir.join(CONFIG_FILE), yaml.as_bytes())?;
    let parameters = count_parameters::<Autodiff<B>, _>(&run.model);
    manifest::record_start(&run.run_dir, &config.name, config.seed, &session, dataset, parameters)
}

/// AdamW over the captioner.
type TrainOptimizer<B> = OptimizerAdaptor<AdamW, Captioner<Autodiff<B>>, Autodiff<B>>;

/// What the loop changes and writes to.
struct Run<'j, B: Backend> {
    job: &'j TrainJob,
    config: &'j RunConfig,
    device: B::Device,
    resumed: bool,
    run_dir: PathBuf,
    checkpoints: PathBuf,
    text: TextEncoder,
    model: Captioner<Autodiff<B>>,
    optimizer: TrainOptimizer<B>,
    state: TrainState,
    /// `train.fixed_shapes` on this session's device.
    fixed_shapes: bool,
    log: Option<MetricsLog>,
    board: Option<EventWriter>,
    /// The last validation's scores, recorded in checkpoints.
    last_val: Vec<(String, f64)>,
    /// Training time of earlier sessions.
    seconds_before: f64,
    train_start: Instant,
}

impl<'j, B: Backend> Run<'j, B> {
    /// A new run directory with a new model, or the run to resume with its `checkpoints/last`
    /// (model, optimizer state, training state).
    fn start_or_resume(job: &'j TrainJob, splits: &Splits, device: B::Device, device_spec: DeviceSpec) -> Result<Self> {
        type A<B> = Autodiff<B>;
        let config = &job.config;
        let (run_dir, text, model, state, last) = match &job.resume {
            None => {
                let (text, model) = new_model::<B>(config, &splits.train, &device)?;
                let run_dir = create_run_dir(&config.train.output_dir, &config.name)?;
                (run_dir, text, model, TrainState::new(), None)
            }
            Some(dir) => {
                let last = recover_last(&dir.join(CHECKPOINTS_DIR))?;
                let state = TrainState::read(&last)?;
                let checkpoint = load_checkpoint::<A<B>>(&last, &device).with_context(|| format!("loading {}", last.display()))?;
                if checkpoint.model.config() != &config.model.captioner_config(&checkpoint.text) {
                    bail!("{}: the checkpoint's model differs from the `model:` section of the run's config.yaml", last.display());
                }
                (dir.clone(), checkpoint.text, checkpoint.model, state, Some(last))
            }
        };
        let checkpoints = run_dir.join(CHECKPOINTS_DIR);
        std::fs::create_dir_all(&checkpoints).with_context(|| format!("cannot create {}", checkpoints.display()))?;
        let mut optimizer = adamw(&config.train).init::<A<B>, Captioner<A<B>>>();
        if let Some(last) = &last {
            let record = load_optimizer::<A<B>, _>(last, &device)?;
            optimizer = optimizer.load_record(remap_record(record, &state.param_ids, &param_ids::<A<B>, _>(&model))?);
        }
        let seconds_before = state.train_seconds;
        Ok(Run {
            job,
            config,
            device,
            resumed: last.is_some(),
            run_dir,
            checkpoints,
            text,
            model,
            optimizer,
            state,
            fixed_shapes: config.train.fixed_shapes.on(device_spec),
            log: None,
            board: None,
            last_val: Vec::new(),
            seconds_before,
            train_start: Instant::now(),
        })
    }

    /// `metrics.jsonl` and this session's TensorBoard event file.
    fn open_logs(&mut self) -> Result<()> {
        self.log = Some(MetricsLog::open(&self.run_dir, self.resumed.then_some(self.state.step))?);
        let dir = self.run_dir.join(TENSORBOARD_DIR);
        let mut board = EventWriter::create(&dir).map_err(|e| board_error(&dir, e))?;
        if self.resumed {
            // Steps after the checkpoint are trained again: TensorBoard drops their first logging.
            board.add_session_start(self.state.step + 1).map_err(|e| board_error(&dir, e))?;
        }
        self.board = Some(board);
        self.train_start = Instant::now();
        Ok(())
    }

    fn announce(&self, splits: &Splits, inputs: &Inputs, device: DeviceSpec, load_start: Instant) {
        let steps_per_epoch = inputs.train.batches_per_epoch(self.config.train.batch_size);
        let (parameters, trainable) = count_parameters::<Autodiff<B>, _>(&self.model);
        let source = if inputs.train.features.is_some() {
            ", from cached encoder features"
        } else if inputs.train.images.is_cached() {
            ", images cached in memory"
        } else {
            ""
        };
        println!(
            "{} run {} on {} ({} threads): {} train / {} val / {} test images, vocabulary {}, {} parameters ({} trained), {} steps per epoch{}; data ready in {:.1}s",
            if self.resumed { "resuming" } else { "starting" },
            self.run_dir.display(),
            device,
            rayon::current_num_threads(),
            inputs.train.len(),
            splits.val.len(),
            splits.test.len(),
            self.text.vocab_size(),
            parameters,
            trainable,
            steps_per_epoch,
            source,
            load_start.elapsed().as_secs_f64()
        );
        if self.resumed {
            println!("resuming after epoch {} batch {} (step {})", self.state.epoch, self.state.batch_in_epoch, self.state.step);
        }
    }

    /// Trains the rest of the current epoch, batches prepared on another thread. `true` when the
    /// run was interrupted in it ([`TrainJob::interrupt_after_step`]).
    fn train_epoch(&mut self, train_set: &TrainSet, reward: Option<&scst::Reward>) -> Result<bool> {
        let (config, train_config) = (self.config, &self.config.train);
        let epoch = self.state.epoch;
        let steps_per_epoch = train_set.batches_per_epoch(train_config.batch_size);
        let order = train_set.epoch_order(config.seed, epoch);
        let plan = BatchPlan {
            seed: config.seed,
            epoch,
            order: &order,
            batch_size: train_config.batch_size,
            captions_per_image: train_config.captions_per_image,
            fixed_shapes: self.fixed_shapes,
        };
        let first_batch = self.state.batch_in_epoch;
        let epoch_start = Instant::now();
        let mut window = Window::new(self.state.step);
        let (mut epoch_loss, mut epoch_steps) = (0.0, 0usize);
        let progress = EpochProgress::start(epoch + 1, train_config.epochs, steps_per_epoch, first_batch);
        let mut shown_loss = String::new();
        let interrupted = std::thread::scope(|scope| -> Result<bool> {
            let batches = train_set.prefetch(scope, plan, first_batch..steps_per_epoch);
            for index in first_batch..steps_per_epoch {
                let batch = batches.recv().context("the batch loader stopped")??;
                let images = batch.images;
                let (lr, stats) = self.step(batch, reward, steps_per_epoch)?;
                self.state.batch_in_epoch = index + 1;
                window.add(stats, images);
                progress.step(|| shown_loss.clone());
                let last_of_epoch = index + 1 == steps_per_epoch;
                if self.state.step.is_multiple_of(train_config.log_every as u64) || last_of_epoch {
                    let means = window.take(self.state.step)?;
                    epoch_loss += means.values.loss * means.steps as f64;
                    epoch_steps += means.steps;
                    shown_loss = format!("loss {:.4}", means.values.loss);
                    self.log_training(&progress, &means, lr, steps_per_epoch)?;
                }
                if train_config.checkpoint_every > 0
                    && self.state.step.is_multiple_of(train_config.checkpoint_every as u64)
                    && !last_of_epoch
                {
                    // Never write a checkpoint whose weights a non-finite loss has spoiled.
                    window.check()?;
                    self.save_last()?;
                    if self.interrupt_now() {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        });
        progress.finish();
        if interrupted? {
            return Ok(true);
        }
        self.state.epoch = epoch + 1;
        self.state.batch_in_epoch = 0;
        let seconds = epoch_start.elapsed().as_secs_f64();
        println!("epoch {} done: mean loss {:.4}, {:.1}s", epoch + 1, epoch_loss / epoch_steps.max(1) as f64, seconds);
        Ok(false)
    }

    /// One optimiser step on `batch`, cross-entropy or self-critical; returns its learning rate.
    fn step(&mut self, batch: HostBatch, reward: Option<&scst::Reward>, steps_per_epoch: usize) -> Result<(f64, StepStats<B>)> {
        let (config, train_config) = (self.config, &self.config.train);
        let (epoch, step) = (self.state.epoch, self.state.step);
        // Before `finetune_after_epoch`, the whole encoder is frozen.
        let stages = self.model.encoder.num_stages();
        let first_trained =
            if epoch < train_config.finetune_after_epoch { stages } else { config.model.encoder.finetune.first_trainable_stage(stages) };
        B::seed(&self.device, SplitMix64::for_item(config.seed ^ DROPOUT_STREAM, step).next_u64());
        let model = self.model.clone();
        let (lr, (next, stats)) = match reward {
            Some(reward) if config.scst.active(epoch) => {
                let seed = SplitMix64::for_item(config.seed ^ SCST_STREAM, step).next_u64();
                let lr = config.scst.lr;
                let scst = scst_step::<B, _>(
                    model,
                    &mut self.optimizer,
                    batch,
                    lr,
                    train_config,
                    &config.scst,
                    reward,
                    &self.text,
                    seed,
                    first_trained,
                    &self.device,
                )?;
                (lr, scst)
            }
            _ => {
                let total_steps = (steps_per_epoch * train_config.epochs) as u64;
                let lr = learning_rate(train_config, step, steps_per_epoch, total_steps);
                (lr, train_step::<B, _>(model, &mut self.optimizer, batch, lr, train_config, first_trained, &self.device)?)
            }
        };
        self.model = next;
        self.state.step += 1;
        Ok((lr, stats))
    }

    /// The means of the steps since the last logging: printed, to `metrics.jsonl` and
    /// TensorBoard.
    fn log_training(&mut self, progress: &EpochProgress, means: &WindowMeans, lr: f64, steps_per_epoch: usize) -> Result<()> {
        let train_config = &self.config.train;
        let (values, step) = (&means.values, self.state.step);
        let detail = match means.reward {
            Some((reward, baseline)) => format!("scst reward {reward:.4} baseline {baseline:.4}"),
            None => format!("ce {:.4} att {:.4}", values.cross_entropy, values.attention),
        };
        progress.println(&format!(
            "epoch {}/{} step {}/{} loss {:.4} ({detail}) lr {:.2e} grad-norm {:.3} {:.0} img/s",
            self.state.epoch + 1,
            train_config.epochs,
            step,
            steps_per_epoch * train_config.epochs,
            values.loss,
            lr,
            values.grad_norm,
            means.images_per_s
        ));
        let mut line = serde_json::json!({
            "kind": "train", "epoch": self.state.epoch + 1, "step": step, "loss": values.loss, "lr": lr,
            "grad_norm": values.grad_norm, "images_per_s": means.images_per_s, "elapsed_s": self.elapsed(),
        });
        let mut scalars = vec![
            ("train/loss", values.loss),
            ("train/lr", lr),
            ("train/grad_norm", values.grad_norm),
            ("train/images_per_s", means.images_per_s),
        ];
        match means.reward {
            Some((reward, baseline)) => {
                line["scst_reward"] = serde_json::json!(reward);
                line["scst_baseline"] = serde_json::json!(baseline);
                scalars.extend([("train/scst_reward", reward), ("train/scst_baseline", baseline)]);
            }
            None => {
                line["cross_entropy"] = serde_json::json!(values.cross_entropy);
                line["attention_reg"] = serde_json::json!(values.attention);
                scalars.extend([("train/cross_entropy", values.cross_entropy), ("train/attention_reg", values.attention)]);
            }
        }
        self.log.as_mut().expect("logs are open").write(&line)?;
        for (tag, value) in scalars {
            self.board_do(|board| board.add_scalar(tag, value, step))?;
        }
        Ok(())
    }

    /// After `val_every` epochs and the last: decodes and scores the val split, keeps
    /// `checkpoints/best`; `true` when the run should stop early.
    fn validate(&mut self, inputs: &Inputs, samples: &[&Sample]) -> Result<bool> {
        let train_config = &self.config.train;
        let epoch = self.state.epoch;
        if samples.is_empty() || !(epoch.is_multiple_of(train_config.val_every) || epoch == train_config.epochs) {
            return Ok(false);
        }
        let start = Instant::now();
        let pipeline = CaptionPipeline::new(
            self.model.valid(),
            self.text.clone(),
            inputs.eval_image.clone(),
            train_config.test_decoding(),
            &self.device,
        );
        let decoding = train_config.validation_decoding();
        let candidates = texts(&decode_images(&pipeline, inputs.val(), &decoding, train_config.eval_batch_size)?);
        let evaluation = score(samples, &candidates)?;
        self.last_val = evaluation.corpus.iter().map(|(n, v)| (n.to_string(), v)).collect();
        let value = evaluation.corpus.get(&train_config.best_metric).unwrap_or(f64::NAN);
        let improved = self.state.best.as_ref().is_none_or(|b| value > b.value);
        let mut stop = false;
        if improved {
            let state = &mut self.state;
            state.best = Some(Best { metric: train_config.best_metric.clone(), value, epoch, step: state.step });
            state.bad_validations = 0;
            let meta = checkpoint_meta(self.config, &self.state, &self.last_val);
            save_checkpoint(&self.checkpoints.join(BEST), &pipeline.model, &self.text, &meta).context("writing checkpoints/best")?;
        } else {
            self.state.bad_validations += 1;
            stop = train_config.patience > 0 && self.state.bad_validations >= train_config.patience;
        }
        let seconds = start.elapsed().as_secs_f64();
        let shown: Vec<String> = self.last_val.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        let verdict = match (&self.state.best, improved) {
            (_, true) => "  (best so far)".to_string(),
            (best, false) => format!(
                "  (best {:.4} at epoch {})",
                best.as_ref().map(|b| b.value).unwrap_or(f64::NAN),
                best.as_ref().map(|b| b.epoch).unwrap_or(0)
            ),
        };
        let (images, described) = (samples.len(), decoding.describe());
        println!("validation after epoch {epoch} ({images} images, {described}, {seconds:.1}s): {}{verdict}", shown.join(", "));
        if let Some(example) = candidates.first() {
            println!("  e.g. image {}: {example}", samples[0].image_id);
        }
        let mut line = serde_json::json!({
            "kind": "val", "epoch": epoch, "step": self.state.step, "images": images,
            "best": improved, "seconds": seconds, "elapsed_s": self.elapsed(),
        });
        for (name, value) in &self.last_val {
            line[name.as_str()] = serde_json::json!(value);
        }
        self.log.as_mut().expect("logs are open").write(&line)?;
        let step = self.state.step;
        for (name, value) in self.last_val.clone() {
            self.board_do(|board| board.add_scalar(&format!("val/{name}"), value, step))?;
        }
        let table = sample_table(samples, &candidates, train_config.num_examples);
        self.board_do(|board| board.add_text("val/samples", &table, step))?;
        if stop {
            println!("early stopping: no improvement of {} in {} validations", train_config.best_metric, self.state.bad_validations);
        }
        Ok(stop)
    }

    /// Marks the run finished after its last epoch (or an early stop) and writes
    /// `checkpoints/last`; `true` when the run is interrupted here.
    fn end_epoch(&mut self, stop: bool) -> Result<bool> {
        if stop || self.state.epoch == self.config.train.epochs {
            self.state.finished = true;
            self.state.stopped_early = stop;
        }
        self.save_last()?;
        Ok(self.interrupt_now() && !self.state.finished)
    }

    /// Writes `checkpoints/last`: the model, the optimizer and the training state.
    fn save_last(&mut self) -> Result<()> {
        self.board_do(|board| board.flush())?;
        self.state.train_seconds = self.elapsed();
        self.state.param_ids = param_ids::<Autodiff<B>, _>(&self.model).iter().map(|id| id.val()).collect();
        sync_running_statistics(&self.model);
        let meta = checkpoint_meta(self.config, &self.state, &self.last_val);
        save_last(&self.checkpoints, &self.model, &self.text, &meta, self.optimizer.to_record(), &self.state)
    }

    /// The test evaluation of `checkpoints/best` (`checkpoints/last` when there is none), into
    /// `eval/test/`.
    fn test(&self, inputs: &Inputs, samples: &[&Sample]) -> Result<Option<TestReport>> {
        let train_config = &self.config.train;
        if !train_config.test || samples.is_empty() {
            return Ok(None);
        }
        let best = self.checkpoints.join(BEST);
        let (dir, label) =
            if best.is_dir() { (best, "checkpoints/best") } else { (self.checkpoints.join(run_dir::LAST), "checkpoints/last") };
        let start = Instant::now();
        let checkpoint = load_checkpoint::<B>(&dir, &self.device).with_context(|| format!("loading {}", dir.display()))?;
        let label = ReportLabel {
            title: self.config.name.clone(),
            split: "test".into(),
            checkpoint: label.into(),
            epoch: checkpoint.meta.epoch,
            step: checkpoint.meta.step,
        };
        // The encoder is frozen when features are cached, so the best checkpoint's encoder is the
        // one that computed them.
        let pipeline = CaptionPipeline::from_checkpoint(checkpoint, &self.device);
        let decoding = train_config.test_decoding();
        let out = self.run_dir.join("eval").join("test");
        let split =
            SplitRun { inputs: inputs.test(), samples, decoding: &decoding, batch_size: train_config.eval_batch_size, meteor: None };
        let (report, captions) = evaluate_split(&pipeline, split, label, start, &out)?;
        print!("{}", format_report(&report, samples, &texts(&captions), train_config.num_examples));
        println!("wrote {}", out.display());
        Ok(Some(report))
    }

    /// Whether the job asked to stop once this step's `checkpoints/last` is written.
    fn interrupt_now(&self) -> bool {
        self.job.interrupt_after_step.is_some_and(|s| self.state.step >= s)
    }

    /// Training seconds over all sessions.
    fn elapsed(&self) -> f64 {
        self.seconds_before + self.train_start.elapsed().as_secs_f64()
    }

    fn board_do(&mut self, write: impl FnOnce(&mut EventWriter) -> std::io::Result<()>) -> Result<()> {
        let board = self.board.as_mut().expect("logs are open");
        write(board).map_err(|e| board_error(board.path(), e))
    }
}

fn board_error(dir: &Path, error: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot write TensorBoard events in {}: {error}", dir.display())
}

/// The steps since the last logging, their statistics summed on the device.
struct Window<B: Backend> {
    sums: Option<Tensor<B, 1>>,
    /// SCST steps' rewards and baselines, summed.
    rewards: Option<(f64, f64)>,
    /// The step before the window's first.
    after_step: u64,
    steps: usize,
    images: usize,
    start: Instant,
}

/// What a log line reports: the means over a [`Window`].
struct WindowMeans {
    values: StepValues,
    reward: Option<(f64, f64)>,
    steps: usize,
    images_per_s: f64,
}

impl<B: Backend> Window<B> {
    fn new(after_step: u64) -> Self {
        Window { sums: None, rewards: None, after_step, steps: 0, images: 0, start: Instant::now() }
    }

    fn add(&mut self, stats: StepStats<B>, images: usize) {
        self.sums = Some(match self.sums.take() {
            Some(sums) => sums + stats.values,
            None => stats.values,
        });
        if let Some((reward, baseline)) = stats.reward {
            let (r, b) = self.rewards.unwrap_or((0.0, 0.0));
            self.rewards = Some((r + reward, b + baseline));
        }
        self.steps += 1;
        self.images += images;
    }

    /// The sums read back (waits for the device); an error when a loss or gradient was not
    /// finite.
    fn read(&self) -> Result<StepValues> {
        let sums = self.sums.clone().map(StepValues::read).unwrap_or_default();
        if !sums.is_finite() {
            let (first, last) = (self.after_step + 1, self.after_step + self.steps as u64);
            let fix = if self.rewards.is_some() { "lower `scst.lr`" } else { "lower `train.lr` or check the data" };
            bail!(
                "the loss is not finite in steps {first}-{last} (summed: loss {}, cross-entropy {}, attention {}, gradient norm {}); {fix}",
                sums.loss,
                sums.cross_entropy,
                sums.attention,
                sums.grad_norm
            );
        }
        Ok(sums)
    }

    /// Fails as [`Window::read`] does.
    fn check(&self) -> Result<()> {
        self.read().map(|_| ())
    }

    /// The window's means (waits for the device), and a new window after `step`.
    fn take(&mut self, step: u64) -> Result<WindowMeans> {
        let values = self.read()?.mean(self.steps);
        let seconds = self.start.elapsed().as_secs_f64().max(1e-9);
        let n = self.steps.max(1) as f64;
        let means = WindowMeans {
            values,
            reward: self.rewards.map(|(r, b)| (r / n, b / n)),
            steps: self.steps,
            images_per_s: self.images as f64 / seconds,
        };
        *self = Window::new(step);
        Ok(means)
    }
}
