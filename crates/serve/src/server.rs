//! Starting and stopping the service: loads the keys and the production model, builds the
//! router (routes, auth, timeouts, body limit, metrics, JSON errors) and serves it on a tokio
//! runtime of its own, so that callers (the CLI, tests) stay synchronous. A background task
//! follows the registry's `production` pointer and swaps in newly promoted versions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use caption_model::DeviceSpec;
use tokio::sync::oneshot;

use crate::api;
use crate::auth;
use crate::cache::LruCache;
use crate::config::{AuthMode, ServeConfig};
use crate::decode_budget::DecodeBudget;
use crate::error::ApiError;
use crate::inflight::InFlight;
use crate::keys::{KeysError, WatchedKeys};
use crate::metrics::Metrics;
use crate::queue::{JobQueue, READ_BLOCK};
use crate::rate_limit::{ClientLimiter, RateLimiter};
use crate::redis_store::{RedisError, RedisStore};
use crate::registry::{self, RegistryError, Version};
use crate::result_cache::ResultCache;
use crate::state::{AppState, ReloadFailure};
use crate::store::{DEFAULT_STORE_FILE, Store, StoreError, StoreLocation};
use crate::worker::{ModelWorker, WorkerError};

/// Where the keys are when `keys_file` is not set: beside the versions they guard.
pub const DEFAULT_KEYS_FILE: &str = "keys.json";

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub registry: PathBuf,
    pub config: ServeConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid serve config: {0}")]
    Config(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error("the server's database {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("cannot load model version {id}: {source}")]
    Model {
        id: String,
        #[source]
        source: WorkerError,
    },
    #[error("cannot listen on {address}: {source} (is another server using that port? choose another with --port, or 0 for any free one)")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the server's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A running server. Dropping it stops it (gracefully: requests in progress are answered).
#[derive(Debug)]
pub struct Server {
    address: SocketAddr,
    state: Arc<AppState>,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Loads everything, binds `host:port` and starts answering; returns once it listens.
    pub fn start(options: ServerOptions) -> Result<Server, ServeError> {
        let ServerOptions { registry, config } = options;
        config.validate().map_err(ServeError::Config)?;
        let device = config.device_spec().map_err(ServeError::Config)?;
        let keys = match config.auth {
            AuthMode::Enabled => {
                let path = config.keys_file.clone().unwrap_or_else(|| registry.join(DEFAULT_KEYS_FILE));
                let store = WatchedKeys::load(&path)?;
                if store.is_empty() {
                    return Err(ServeError::Config(format!(
                        "{} holds no keys, so every request would be refused: add one with `caption serve keys add NAME --keys {}`",
                        path.display(),
                        path.display()
                    )));
                }
                Some(store)
            }
            AuthMode::Disabled => None,
        };

        let fetcher = match config.image_url.enabled {
            true => Some(crate::fetch::ImageFetcher::new(&config.image_url).map_err(ServeError::Config)?),
            false => None,
        };

        let metrics = Arc::new(Metrics::default());
        let model = match registry::production(&registry)? {
            Some(version) => {
                let id = version.id.clone();
                let worker =
                    ModelWorker::start(&registry, version, device, config.batching.clone(), config.limits.queue_capacity, metrics.clone())
                        .map_err(|source| ServeError::Model { id, source })?;
                Some(Arc::new(worker))
            }
            None => None,
        };
        metrics.set_model(model.as_ref().map(|m| (m.info.version.name.as_str(), m.info.version.version, m.info.version.id.as_str())));

        // After the registry is known to exist: a mistyped --registry must not grow a database.
        let store_file = config.store_file.clone().unwrap_or_else(|| registry.join(DEFAULT_STORE_FILE));
        let store = Store::open(&StoreLocation::parse(&store_file))?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("caption-serve")
            .enable_io()
            .enable_time()
            .build()
            .map_err(ServeError::Runtime)?;
        let redis = match &config.redis.url {
            Some(url) => Some(runtime.block_on(RedisStore::connect(&config.redis, url, READ_BLOCK))?),
            None => None,
        };
        let queue = match &redis {
            Some(redis) => {
                let queue = JobQueue::new(redis.clone(), Duration::from_millis(config.redis.visibility_timeout_ms));
                runtime.block_on(queue.ensure_group())?;
                if !store.is_shared() {
                    eprintln!(
                        "caption serve: warning: jobs are queued in Redis but stored in a file only this server reads; replicas need a PostgreSQL `store_file`"
                    );
                }
                Some(Arc::new(queue))
            }
            None => {
                if store.is_shared() {
                    eprintln!(
                        "caption serve: jobs are taken from the shared database without a queue: run one server on it, or give every replica `redis.url`"
                    );
                }
                // Alone, this server ran every job marked running: none is running now.
                let requeued = store.requeue_interrupted()?;
                if requeued > 0 {
                    eprintln!("caption serve: {requeued} job(s) interrupted by the last stop are queued again");
                }
                None
            }
        };
        let limiter = |limiter: Option<RateLimiter>, name: &'static str| {
            limiter.map(|limiter| match &redis {
                Some(redis) => ClientLimiter::Shared(limiter.shared(redis.clone(), name)),
                None => ClientLimiter::Local(limiter),
            })
        };
        let cache = match &redis {
            Some(redis) if config.cache.entries > 0 => ResultCache::Redis { redis: redis.clone(), ttl_seconds: config.cache.ttl_seconds },
            _ => ResultCache::Local(LruCache::new(config.cache.entries)),
        };

        let state = Arc::new(AppState {
            limiter: limiter(RateLimiter::new(&config.rate_limit), "requests"),
            failed_keys: limiter(RateLimiter::for_failed_keys(&config.rate_limit), "failed-keys"),
            cache,
            in_flight: InFlight::default(),
            decode_budget: Arc::new(DecodeBudget::new(config.limits.max_decoding_pixels)),
            model: RwLock::new(model),
            keys,
            metrics,
            registry,
            config,
            store: Arc::new(store),
            redis,
            queue,
            jobs_wakeup: tokio::sync::Notify::new(),
            fetcher,
            reload_failure: RwLock::new(None),
        });

        let host = &state.config.host;
        // IPv6 addresses need brackets before the port.
        let address = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", state.config.port)
        } else {
            format!("{host}:{}", state.config.port)
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(&address))
            .map_err(|source| ServeError::Bind { address: address.clone(), source })?;
        let local = listener.local_addr().map_err(|source| ServeError::Bind { address, source })?;

        if state.config.reload_interval_ms > 0 {
            runtime.spawn(watch_production(state.clone(), device));
        }
        runtime.spawn(crate::jobs::run(state.clone()));
        runtime.spawn(prune_store(state.clone()));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let app = router(state.clone());
        let limits = crate::http::ConnectionLimits {
            header_timeout: Duration::from_millis(state.config.limits.header_timeout_ms),
            max_connections: state.config.limits.max_connections,
        };
        let serving = runtime.spawn(crate::http::serve(listener, app, limits, stopped));
        Ok(Server { address: local, state, runtime: Some(runtime), shutdown: Some(shutdown), serving: Some(serving) })
    }

    /// The address it listens on (with the port chosen when the config said 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The version serving requests, if any.
    pub fn model(&self) -> Option<Version> {
        self.state.model().map(|m| m.info.version.clone())
    }

    /// Serves until SIGINT (Ctrl-C) or SIGTERM, then stops gracefully.
    pub fn run_until_signal(mut self) -> std::io::Result<()> {
        let waited = match &self.runtime {
            Some(runtime) => runtime.block_on(shutdown_signal()),
            None => Ok(()),
        };
        self.stop_now();
        waited
    }

    /// Stops accepting connections, answers the requests in progress, and returns.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            if let Some(serving) = self.serving.take() {
                let _ = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), serving).await });
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Hot reload: polls the registry's `production` pointer and swaps in the version it names
/// once that version has loaded. A version that fails to load is reported once and not retried
/// until production changes again; the previous model keeps serving meanwhile.
async fn watch_production(state: Arc<AppState>, device: DeviceSpec) {
    let mut ticker = tokio::time::interval(Duration::from_millis(state.config.reload_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut memory = ReloadMemory::default();
    loop {
        ticker.tick().await;
        let shared = state.clone();
        // Reading the registry and loading weights block: off the async threads.
        memory = tokio::task::spawn_blocking(move || reload_if_changed(&shared, device, memory)).await.unwrap_or_default();
    }
}

/// What the reloader already reported, so that each problem is logged once.
#[derive(Debug, Default)]
struct ReloadMemory {
    /// A production version that failed to load.
    failed: Option<String>,
    /// The last registry error.
    error: Option<String>,
}

fn reload_if_changed(state: &AppState, device: DeviceSpec, mut memory: ReloadMemory) -> ReloadMemory {
    let production = match registry::production(&state.registry) {
        Ok(Some(version)) => version,
        // Nothing promoted (yet): keep serving whatever is loaded.
        Ok(None) => return memory,
        Err(error) => {
            let message = error.to_string();
            if memory.error.as_ref() != Some(&message) {
                eprintln!("caption serve: cannot read the registry's production version: {message}");
                memory.error = Some(message);
            }
            return memory;
        }
    };
    memory.error = None;
    let current = state.model().map(|m| m.info.version.id.clone());
    if current.as_ref() == Some(&production.id) {
        // A rollback to the version being served ends a failed reload.
        state.set_reload_failure(None);
        memory.failed = None;
        return memory;
    }
    if memory.failed.as_ref() == Some(&production.id) {
        return memory;
    }
    let id = production.id.clone();
    let config = &state.config;
    match ModelWorker::start(
        &state.registry,
        production,
        device,
        config.batching.clone(),
        config.limits.queue_capacity,
        state.metrics.clone(),
    ) {
        Ok(worker) => {
            state.replace_model(worker);
            state.set_reload_failure(None);
            eprintln!("caption serve: now serving {id} (was {})", current.as_deref().unwrap_or("none"));
            memory.failed = None;
        }
        Err(error) => {
            eprintln!(
                "caption serve: production is {id}, but it does not load: {error}; still serving {}",
                current.as_deref().unwrap_or("nothing")
            );
            state.set_reload_failure(Some(ReloadFailure { production: id.clone(), error: error.to_string() }));
            memory.failed = Some(id);
        }
    }
    memory
}

/// Retention: drops recorded requests older than `feedback.retain_hours` and finished jobs
/// older than `jobs.retain_hours`, with the images nothing else needs, every so often (a
/// quarter of the shorter retention, between 1 s and 1 min).
async fn prune_store(state: Arc<AppState>) {
    let hours = |h: f64| Duration::from_secs_f64((h * 3600.0).max(0.0));
    let (requests, jobs) = (hours(state.config.feedback.retain_hours), hours(state.config.jobs.retain_hours));
    let period = (requests.min(jobs) / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let store = state.store.clone();
        let now = std::time::SystemTime::now();
        let before = |age: Duration| caption_data::time::rfc3339(now.checked_sub(age).unwrap_or(std::time::UNIX_EPOCH));
        let (requests_before, jobs_before) = (before(requests), before(jobs));
        match tokio::task::spawn_blocking(move || store.prune(&requests_before, &jobs_before)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("caption serve: cannot prune the database: {e}"),
            Err(e) => eprintln!("caption serve: cannot prune the database: {e}"),
        }
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// The routes and their layers. `/api/v1` needs a key and is bounded in time; every answer is
/// counted in the metrics, and every error is JSON.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/v1/caption", post(api::caption))
        .route("/api/v1/caption/batch", post(api::caption_batch))
        .route("/api/v1/models", get(api::models))
        .route("/api/v1/jobs", post(crate::jobs::create))
        .route("/api/v1/jobs/{id}", get(crate::jobs::get))
        .route("/api/v1/feedback", post(crate::feedback::create))
        .route_layer(middleware::from_fn_with_state(state.clone(), with_timeout))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_key));
    Router::new()
        .route("/health", get(api::health))
        .route("/ready", get(api::ready))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(api::openapi))
        .merge(api)
        .fallback(api::not_found)
        .layer(middleware::from_fn(errors_as_json))
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .with_state(state)
}

async fn with_timeout(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let limit = Duration::from_millis(state.config.limits.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        // Dropping the handler drops its reply channels: the model thread skips its images.
        Err(_) => ApiError::timeout(limit).into_response(),
    }
}

async fn record_metrics(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    // Unmatched paths are one label, so that scanners cannot grow the metrics without bound.
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe_request(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// Turns the framework's own error answers (405 with an empty body, say) into the API's JSON
/// errors, keeping their status and headers such as `Allow`.
async fn errors_as_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let mut answer = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}
