//! Putting a trained captioner in front of users: a registry of immutable model versions with a
//! `production` pointer that promotion and rollback move atomically, and an HTTP service (axum)
//! that captions uploaded images with the production version. The service checks API keys and
//! per-key rate limits, bounds bodies, pixels and time, groups concurrent requests into batched
//! decodes on one model thread, caches results, and reports Prometheus metrics. Asynchronous
//! jobs, recorded requests and feedback live in one SQLite file, so they survive restarts, and
//! feedback exports as a caption dataset for fine-tuning. Replicas behind a gateway share a
//! PostgreSQL store and a Redis server (result cache, rate limits, job queue) instead.

pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod decode_budget;
pub mod error;
pub mod feedback;
pub mod fetch;
pub mod http;
pub mod inflight;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod queue;
pub mod rate_limit;
pub mod redis_store;
pub mod registry;
pub mod result_cache;
pub mod server;
pub mod state;
pub mod store;
pub mod worker;

pub use config::{AuthMode, ServeConfig};
pub use keys::{KeyIdentity, KeyStore, KeysError, WatchedKeys};
pub use registry::{RegistryError, Version, list, production, promote, rollback};
pub use server::{ServeError, Server, ServerOptions};
