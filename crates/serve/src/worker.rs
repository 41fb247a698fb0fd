//! The model thread. burn's tensors and modules stay on one `std::thread` (they are not meant to
//! cross `.await` points); request handlers send it prepared images through a bounded channel
//! and get captions back through one-shot channels.
//!
//! Dynamic batching: the thread takes the first waiting image, then keeps taking images until it
//! has `max_batch` or `max_wait_ms` have passed since the first, and decodes the images that
//! share decoding options in one call. Images whose requests gave up (timed out, disconnected)
//! are dropped before decoding.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use burn::prelude::*;
use caption_data::image::ImageConfig;
use caption_model::{
    Attention, CaptionPipeline, CheckpointError, DecodingConfig, DecodingOverrides, DeviceSpec, SamplingConfig, TokenProbability,
    load_checkpoint,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::BatchingConfig;
use crate::metrics::Metrics;
use crate::registry::Version;

/// Decoding options of one request, with the defaults applied and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecodeOptions {
    /// 1 = greedy decoding.
    pub beam_size: usize,
    /// Beam search: the best `num_captions` beams; sampling: this many draws.
    pub num_captions: usize,
    /// Most words per caption (at most the model's own maximum).
    pub max_length: usize,
    /// Draw captions instead of searching for the likeliest.
    pub sampling: Option<SamplingOptions>,
    /// Give each token's attention over the encoder grid.
    pub attention: bool,
}

/// A request's sampling settings. The floats are kept as bits so that options can key the
/// cache and group requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SamplingOptions {
    temperature_bits: u64,
    pub top_k: usize,
    top_p_bits: u64,
    pub seed: u64,
    /// Whether the client chose the seed: only then is the result reproducible and cached.
    pub seeded: bool,
}

impl SamplingOptions {
    pub fn new(temperature: f64, top_k: usize, top_p: f64, seed: u64, seeded: bool) -> Self {
        SamplingOptions { temperature_bits: temperature.to_bits(), top_k, top_p_bits: top_p.to_bits(), seed, seeded }
    }

    pub fn temperature(&self) -> f64 {
        f64::from_bits(self.temperature_bits)
    }

    pub fn top_p(&self) -> f64 {
        f64::from_bits(self.top_p_bits)
    }
}

impl DecodeOptions {
    /// Whether the same image with these options always gets the same captions.
    pub fn cacheable(&self) -> bool {
        self.sampling.is_none_or(|s| s.seeded)
    }

    /// These options as changes to the checkpoint's decoding: its length penalty, trigram
    /// blocking and bad-ending rule stay.
    fn overrides(self) -> DecodingOverrides {
        let sampling = self.sampling.map(|sampling| SamplingConfig {
            temperature: sampling.temperature(),
            top_k: sampling.top_k,
            top_p: sampling.top_p(),
            seed: sampling.seed,
            num_samples: self.num_captions,
        });
        DecodingOverrides {
            beam_size: Some(self.beam_size),
            num_captions: Some(self.num_captions),
            max_length: Some(self.max_length),
            sampling,
            attention: Some(self.attention),
            ..Default::default()
        }
    }
}

/// One caption as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Caption {
    pub text: String,
    /// exp(mean token log-probability, `<eos>` included when emitted), in (0, 1].
    pub confidence: f64,
    /// Each scored token with its probability (the words, then `<eos>` when emitted): always
    /// computed, answered only when the request asks with `return_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<TokenProbability>>,
    /// Each scored token's attention over the encoder grid, when the request asks with
    /// `return_attention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Attention>,
}

/// The captions of one image, or why decoding failed.
pub type JobResult = Result<Vec<Caption>, String>;

struct Job {
    /// `3 x size x size`, normalised as the checkpoint expects.
    pixels: Vec<f32>,
    options: DecodeOptions,
    reply: oneshot::Sender<JobResult>,
}

/// What the server needs to know about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub version: Version,
    /// How to prepare images for it.
    pub preprocess: ImageConfig,
    /// The most words it writes per caption.
    pub max_length: usize,
    /// How it decodes unless a request says otherwise (the checkpoint's decoding).
    pub decoding: DecodingConfig,
    pub device: DeviceSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Device(#[from] caption_model::device::DeviceError),
    #[error("cannot start the model thread: {0}")]
    Thread(String),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    Overloaded,
    /// The model thread has stopped.
    Stopped,
}

/// A handle on the model thread; the thread stops once every handle is dropped and the queue
/// is empty.
#[derive(Debug)]
pub struct ModelWorker {
    pub info: ModelInfo,
    jobs: SyncSender<Job>,
}

impl ModelWorker {
    /// Loads `version` from `registry` on a new thread and starts decoding there. Returns once
    /// the model is loaded (or failed to load).
    pub fn start(
        registry: &Path,
        version: Version,
        device: DeviceSpec,
        batching: BatchingConfig,
        queue_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, WorkerError> {
        device.check_available()?;
        // Files changed since promotion are never served.
        crate::registry::verify(registry, &version)?;
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(queue_capacity);
        let (loaded_tx, loaded_rx) = std::sync::mpsc::sync_channel::<Result<Loaded, WorkerError>>(1);
        let dir = version.dir(registry);
        let settings = Settings { batching, metrics };
        std::thread::Builder::new()
            .name(format!("caption-model-{}", version.id))
            .spawn(move || match device {
                DeviceSpec::Cpu => run::<caption_model::FlexBackend>(&dir, &Default::default(), settings, queue, loaded_tx),
                #[cfg(feature = "cuda")]
                DeviceSpec::Cuda(_) => run::<caption_model::device::CudaBackend>(
                    &dir,
                    &device.cuda_device().expect("a CUDA device"),
                    settings,
                    queue,
                    loaded_tx,
                ),
                #[cfg(not(feature = "cuda"))]
                DeviceSpec::Cuda(_) => {
                    let _ = loaded_tx.send(Err(WorkerError::Thread(format!("{device} needs a build with `--features cuda`"))));
                }
            })
            .map_err(|e| WorkerError::Thread(e.to_string()))?;
        let Loaded { preprocess, max_length, decoding } =
            loaded_rx.recv().map_err(|_| WorkerError::Thread("the model thread stopped while loading".into()))??;
        Ok(ModelWorker { info: ModelInfo { version, preprocess, max_length, decoding, device }, jobs })
    }

    /// Queues one prepared image; the receiver gets its captions.
    pub fn submit(&self, pixels: Vec<f32>, options: DecodeOptions) -> Result<oneshot::Receiver<JobResult>, SubmitError> {
        let (reply, receiver) = oneshot::channel();
        match self.jobs.try_send(Job { pixels, options, reply }) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_)) => Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }
}

/// What the model thread reports once the checkpoint is loaded.
struct Loaded {
    preprocess: ImageConfig,
    max_length: usize,
    decoding: DecodingConfig,
}

struct Settings {
    batching: BatchingConfig,
    metrics: Arc<Metrics>,
}

/// The model thread's body.
fn run<B: Backend>(
    dir: &Path,
    device: &B::Device,
    settings: Settings,
    queue: Receiver<Job>,
    loaded: SyncSender<Result<Loaded, WorkerError>>,
) {
    let pipeline = match load_checkpoint::<B>(dir, device) {
        Ok(checkpoint) => CaptionPipeline::from_checkpoint(checkpoint, device),
        Err(error) => {
            let _ = loaded.send(Err(error.into()));
            return;
        }
    };
    let _ = loaded.send(Ok(Loaded {
        preprocess: pipeline.preprocess.clone(),
        max_length: pipeline.model.config().max_length,
        decoding: pipeline.decoding.clone(),
    }));
    drop(loaded);

    let max_wait = Duration::from_millis(settings.batching.max_wait_ms);
    while let Some(batch) = next_batch(&queue, settings.batching.max_batch, max_wait) {
        // Requests that gave up need no captions.
        let mut pending: Vec<Job> = batch.into_iter().filter(|job| !job.reply.is_closed()).collect();
        while let Some(options) = pending.first().map(|job| job.options) {
            // Sampling draws per row of the batch, so a sampled image is decoded alone: its
            // captions then depend on the image and the seed only, never on its batch-mates.
            let (group, rest): (Vec<Job>, Vec<Job>) = if options.sampling.is_some() {
                let mut jobs = pending.into_iter();
                (jobs.next().into_iter().collect(), jobs.collect())
            } else {
                pending.into_iter().partition(|job| job.options == options)
            };
            pending = rest;
            settings.metrics.observe_batch(group.len());
            let pixels: Vec<f32> = group.iter().flat_map(|job| job.pixels.iter().copied()).collect();
            // A panic inside burn must not take the thread (and every later request) down.
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_group(&pipeline, pixels, options)))
                .unwrap_or_else(|_| Err("the model failed while decoding (internal error)".to_string()));
            match decoded {
                Ok(captions) => {
                    for (job, captions) in group.into_iter().zip(captions) {
                        let _ = job.reply.send(Ok(captions));
                    }
                }
                Err(message) => {
                    for job in group {
                        let _ = job.reply.send(Err(message.clone()));
                    }
                }
            }
        }
    }
}

/// Waits for a job, then gathers more until the batch is full or `max_wait` has passed.
/// `None` once every sender is gone and the queue is empty.
fn next_batch(queue: &Receiver<Job>, max_batch: usize, max_wait: Duration) -> Option<Vec<Job>> {
    let first = queue.recv().ok()?;
    let deadline = Instant::now() + max_wait;
    let mut batch = vec![first];
    while batch.len() < max_batch {
        let left = deadline.saturating_duration_since(Instant::now());
        match queue.recv_timeout(left) {
            Ok(job) => batch.push(job),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

fn decode_group<B: Backend>(pipeline: &CaptionPipeline<B>, pixels: Vec<f32>, options: DecodeOptions) -> Result<Vec<Vec<Caption>>, String> {
    let decoding = options.overrides().apply(&pipeline.decoding).map_err(|e| e.to_string())?;
    let lists = pipeline.caption_images(pixels, &decoding).map_err(|e| e.to_string())?;
    Ok(lists
        .into_iter()
        .map(|list| {
            list.into_iter()
                .map(|c| Caption { text: c.text, confidence: c.confidence, tokens: Some(c.tokens), attention: c.attention })
                .collect()
        })
        .collect())
}
