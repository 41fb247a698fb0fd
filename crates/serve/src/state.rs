//! What the handlers share: the settings, the loaded model, the keys, limits, cache, database
//! and metrics. Its own module, so that handlers and the server depend on it and not on each
//! other.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::config::ServeConfig;
use crate::decode_budget::DecodeBudget;
use crate::inflight::InFlight;
use crate::keys::WatchedKeys;
use crate::metrics::Metrics;
use crate::queue::JobQueue;
use crate::rate_limit::ClientLimiter;
use crate::redis_store::RedisStore;
use crate::result_cache::{CacheKey, ResultCache};
use crate::store::Store;
use crate::worker::{Caption, ModelWorker};

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub config: ServeConfig,
    pub registry: PathBuf,
    /// `None` when the registry has no production version.
    pub(crate) model: RwLock<Option<Arc<ModelWorker>>>,
    /// `None` when auth is disabled.
    pub keys: Option<WatchedKeys>,
    /// `None` when rate limiting is off.
    pub limiter: Option<ClientLimiter>,
    /// Wrong keys per client address; `None` when that throttle is off.
    pub failed_keys: Option<ClientLimiter>,
    pub cache: ResultCache,
    /// Identical requests being decoded now, merged.
    pub in_flight: InFlight<CacheKey, Vec<Caption>>,
    /// Pixels of the images being decoded now (`limits.max_decoding_pixels`).
    pub decode_budget: Arc<DecodeBudget>,
    pub metrics: Arc<Metrics>,
    /// Jobs, recorded requests and feedback.
    pub store: Arc<Store>,
    /// The Redis that replicas share (`redis.url`); `None`: everything stays in the process.
    pub redis: Option<RedisStore>,
    /// The shared job queue (with `redis`); `None`: jobs are taken from the store.
    pub queue: Option<Arc<JobQueue>>,
    /// Tells the job runner that a job was queued.
    pub jobs_wakeup: tokio::sync::Notify,
    /// `None` unless `image_url.enabled`.
    pub fetcher: Option<crate::fetch::ImageFetcher>,
    /// Set while the registry's production version could not be loaded (another is served).
    pub(crate) reload_failure: RwLock<Option<ReloadFailure>>,
}

/// A production version that failed to load, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadFailure {
    pub production: String,
    pub error: String,
}

impl AppState {
    /// The model serving requests now.
    pub fn model(&self) -> Option<Arc<ModelWorker>> {
        self.model.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Serves `worker` from now on. Requests holding the previous model finish with it; its
    /// thread stops once they have.
    /// The production version that failed to load, while the server serves another one.
    pub fn reload_failure(&self) -> Option<ReloadFailure> {
        self.reload_failure.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub(crate) fn set_reload_failure(&self, failure: Option<ReloadFailure>) {
        *self.reload_failure.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = failure;
    }

    pub(crate) fn replace_model(&self, worker: ModelWorker) {
        let version = &worker.info.version;
        self.metrics.set_model(Some((version.name.as_str(), version.version, version.id.as_str())));
        *self.model.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(worker));
    }
}
