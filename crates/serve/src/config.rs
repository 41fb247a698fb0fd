//! `serve.yaml`: everything the server can be told, strictly typed (unknown keys are errors),
//! with every default in the `Default` impls below. `configs/serve.yaml` shows them all.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on; `0.0.0.0` to accept connections from other machines.
    pub host: String,
    /// 0 picks a free port (printed at start-up).
    pub port: u16,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    pub device: String,
    /// Whether `/api/v1/*` requires an `X-API-Key` header.
    pub auth: AuthMode,
    /// The API keys (SHA-256 hashes, written by `caption serve keys add`). Relative paths are
    /// relative to this file; unset means `<registry>/keys.json`.
    pub keys_file: Option<PathBuf>,
    /// How often the registry's `production` pointer is checked; a new production version is
    /// loaded and swapped in without a restart. 0 = never (restart to change versions).
    pub reload_interval_ms: u64,
    pub rate_limit: RateLimitConfig,
    pub limits: LimitsConfig,
    pub batching: BatchingConfig,
    pub cache: CacheConfig,
    pub decoding: DecodingConfig,
    /// The server's database of jobs, recorded requests and feedback: a SQLite file (relative
    /// paths are relative to this file; unset means `<registry>/serve.sqlite3`), or a PostgreSQL
    /// database by URL (`postgres://user:password@host:5432/db`) that several replicas share.
    pub store_file: Option<PathBuf>,
    /// The Redis server that replicas share for the result cache, rate limits and job queue.
    pub redis: RedisConfig,
    pub jobs: JobsConfig,
    pub feedback: FeedbackConfig,
    pub image_url: ImageUrlConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            host: "127.0.0.1".to_string(),
            port: 8080,
            device: "cpu".to_string(),
            auth: AuthMode::Enabled,
            keys_file: None,
            reload_interval_ms: 2_000,
            rate_limit: RateLimitConfig::default(),
            limits: LimitsConfig::default(),
            batching: BatchingConfig::default(),
            cache: CacheConfig::default(),
            decoding: DecodingConfig::default(),
            store_file: None,
            redis: RedisConfig::default(),
            jobs: JobsConfig::default(),
            feedback: FeedbackConfig::default(),
            image_url: ImageUrlConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    Enabled,
    Disabled,
}

/// A token bucket per API key (per client address when auth is disabled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained rate; 0 turns rate limiting off.
    pub requests_per_minute: u32,
    /// Requests a client may make at once after being idle (the bucket's size).
    pub burst: u32,
    /// Wrong or missing API keys a client address may send per minute; past that (and
    /// `failed_keys_burst`), every request from that address is answered 429 until its bucket
    /// refills, right key or not, so that keys cannot be guessed. 0 turns this off.
    pub failed_keys_per_minute: u32,
    /// Wrong keys an address may send at once before it is throttled.
    pub failed_keys_burst: u32,
    /// Behind a gateway: the request header that carries the client's address (deploy/nginx.conf
    /// sets `X-Real-IP`), for the limits by address. Unset: the connection's address. Never set
    /// it where clients reach the server directly: they could name any address.
    pub client_address_header: Option<String>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_minute: 120,
            burst: 20,
            failed_keys_per_minute: 10,
            failed_keys_burst: 20,
            client_address_header: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body (base64 makes an image about a third larger).
    pub max_body_bytes: usize,
    /// Images whose header claims more pixels are refused before decoding (413). The default
    /// takes a 24-megapixel photo; the model sees a few hundred pixels a side, and large JPEGs
    /// are decoded at reduced scale.
    pub max_pixels: u64,
    /// Pixels (by the images' headers) being decoded at once, over all requests; an image that
    /// does not fit is answered 503 with `Retry-After`. Bounds the memory decoding takes (about
    /// 3 to 7 bytes a pixel while an image is decoded). At least `max_pixels`.
    pub max_decoding_pixels: u64,
    /// Most images in one `/api/v1/caption/batch` request.
    pub max_batch_images: usize,
    /// A request taking longer is answered 504.
    pub request_timeout_ms: u64,
    /// Images waiting for the model; beyond this, requests are answered 503 at once.
    pub queue_capacity: usize,
    /// A connection that has not sent a whole request head (line and headers) this long after
    /// connecting, or after its previous answer, is closed.
    pub header_timeout_ms: u64,
    /// A request body not received whole this long after its head is answered 408.
    pub body_timeout_ms: u64,
    /// Open connections at once; further ones wait in the operating system's queue until one
    /// closes.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 10 * 1024 * 1024,
            max_pixels: 24_000_000,
            max_decoding_pixels: 48_000_000,
            max_batch_images: 16,
            request_timeout_ms: 30_000,
            queue_capacity: 256,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 1_024,
        }
    }
}

/// Dynamic batching: images from concurrent requests are decoded together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Most images in one decode call.
    pub max_batch: usize,
    /// How long the first image of a batch waits for others.
    pub max_wait_ms: u64,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig { max_batch: 8, max_wait_ms: 5 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Results kept in this process (least recently used dropped first); 0 turns the cache off
    /// (in Redis too).
    pub entries: usize,
    /// With `redis.url`: how long a result stays in the shared cache.
    pub ttl_seconds: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { entries: 1024, ttl_seconds: 3600 }
    }
}

/// Several replicas behind a gateway: with `url` set, the result cache, the rate-limit buckets
/// and the job queue live in this Redis server, shared by every replica (pair it with a
/// PostgreSQL `store_file`). Unset: all three stay in the process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:password@]host:6379[/db]`.
    pub url: Option<String>,
    /// Prefix of every key, so that several services can share one Redis.
    pub key_prefix: String,
    /// A job whose replica has not renewed its claim for this long (the replica died) is run
    /// by another replica.
    pub visibility_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig { url: None, key_prefix: "caption".to_string(), visibility_timeout_ms: 30_000 }
    }
}

/// Decoding options of requests that leave them out, and their limits. Everything else (length
/// penalty, trigram blocking, bad endings) is the checkpoint's decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodingConfig {
    /// 1 = greedy decoding; `None`: the checkpoint's (capped at `max_beam_size`).
    pub default_beam_size: Option<usize>,
    pub max_beam_size: usize,
    /// Capped at the beam size.
    pub default_num_captions: usize,
}

impl Default for DecodingConfig {
    fn default() -> Self {
        DecodingConfig { default_beam_size: None, max_beam_size: 10, default_num_captions: 1 }
    }
}

/// Asynchronous jobs (`POST /api/v1/jobs`): queued in the database, run in the background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Jobs run at once (their images are batched with other requests).
    pub concurrency: usize,
    /// Jobs waiting; beyond this, new ones are answered 503.
    pub max_queued: usize,
    /// Finished jobs (and their images, unless feedback points at them) are deleted this long
    /// after they finished; their ids are then unknown (404).
    pub retain_hours: f64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { concurrency: 4, max_queued: 10_000, retain_hours: 24.0 }
    }
}

/// Feedback on captions (`POST /api/v1/feedback`), exported with `caption data export-feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// Whether captioned images and their captions are recorded (with a `request_id` in the
    /// answer) and feedback is accepted. Off: no image is kept and the endpoint answers 404.
    pub enabled: bool,
    /// Recorded requests (with their images) kept at most: the oldest go first, unless
    /// feedback points at them.
    pub retain_requests: usize,
    /// Recorded requests older than this are dropped (with their images, unless feedback or
    /// a job points at them): feedback can name an answer for this long.
    pub retain_hours: f64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig { enabled: true, retain_requests: 10_000, retain_hours: 24.0 }
    }
}

/// `{"image_url": ...}` requests: the server fetches the image itself. Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageUrlConfig {
    pub enabled: bool,
    /// Hosts that may be fetched from: exact names or addresses, `*.example.com` for its
    /// subdomains, or `*` for any public host. Required when enabled.
    pub allowed_hosts: Vec<String>,
    /// Fetch from private, loopback and link-local addresses too. Only for an internal image
    /// store you trust; never where clients come from the internet (they could reach your
    /// network and cloud metadata through the server).
    pub allow_private_addresses: bool,
    /// Largest image fetched.
    pub max_bytes: usize,
    /// Time limit of the whole fetch (connection, redirects, body).
    pub timeout_ms: u64,
    /// Redirects followed (each one checked like the first URL).
    pub max_redirects: usize,
}

impl Default for ImageUrlConfig {
    fn default() -> Self {
        ImageUrlConfig {
            enabled: false,
            allowed_hosts: Vec::new(),
            allow_private_addresses: false,
            max_bytes: 10 * 1024 * 1024,
            timeout_ms: 5_000,
            max_redirects: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl ServeConfig {
    /// Reads and checks a `serve.yaml`; a relative `keys_file` is resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        // An empty file is all defaults.
        let mut config: ServeConfig = if text.trim().is_empty() {
            ServeConfig::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [&mut config.keys_file, &mut config.store_file] {
            let is_url = file.as_ref().and_then(|f| f.to_str()).is_some_and(crate::store::is_postgres_url);
            if let Some(relative) = file.as_ref().filter(|f| f.is_relative() && !is_url) {
                *file = Some(base.join(relative));
            }
        }
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_path_buf(), message })?;
        Ok(config)
    }

    /// Checks values that parse but cannot work; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.limits.max_body_bytes == 0 {
            return Err("`limits.max_body_bytes` must be positive".into());
        }
        if self.limits.max_pixels == 0 {
            return Err("`limits.max_pixels` must be positive".into());
        }
        if self.limits.max_decoding_pixels < self.limits.max_pixels {
            return Err(format!(
                "`limits.max_decoding_pixels` is {}, below `limits.max_pixels` ({}): the largest image accepted could never be decoded",
                self.limits.max_decoding_pixels, self.limits.max_pixels
            ));
        }
        if self.limits.header_timeout_ms == 0 || self.limits.body_timeout_ms == 0 {
            return Err("`limits.header_timeout_ms` and `limits.body_timeout_ms` must be positive".into());
        }
        if self.limits.max_connections == 0 {
            return Err("`limits.max_connections` must be at least 1".into());
        }
        if self.limits.max_batch_images == 0 {
            return Err("`limits.max_batch_images` must be at least 1".into());
        }
        if self.limits.request_timeout_ms == 0 {
            return Err("`limits.request_timeout_ms` must be positive".into());
        }
        if self.limits.queue_capacity == 0 {
            return Err("`limits.queue_capacity` must be at least 1".into());
        }
        if self.batching.max_batch == 0 {
            return Err("`batching.max_batch` must be at least 1".into());
        }
        if self.decoding.max_beam_size == 0 {
            return Err("`decoding.max_beam_size` must be at least 1".into());
        }
        if let Some(beam_size) = self.decoding.default_beam_size
            && !(1..=self.decoding.max_beam_size).contains(&beam_size)
        {
            return Err(format!(
                "`decoding.default_beam_size` is {beam_size}; use 1..={} (`decoding.max_beam_size`), or null for the checkpoint's",
                self.decoding.max_beam_size
            ));
        }
        if self.decoding.default_num_captions == 0 || self.decoding.default_num_captions > self.decoding.max_beam_size {
            return Err(format!(
                "`decoding.default_num_captions` is {}; use 1..={} (`decoding.max_beam_size`)",
                self.decoding.default_num_captions, self.decoding.max_beam_size
            ));
        }
        if self.image_url.enabled {
            if self.image_url.allowed_hosts.iter().all(|h| h.trim().is_empty()) {
                return Err(
                    "`image_url.allowed_hosts` is empty: list the hosts images may be fetched from (or \"*\" for any public host)".into()
                );
            }
            if self.image_url.max_bytes == 0 || self.image_url.timeout_ms == 0 {
                return Err("`image_url.max_bytes` and `image_url.timeout_ms` must be positive".into());
            }
        }
        if self.jobs.concurrency == 0 {
            return Err("`jobs.concurrency` must be at least 1".into());
        }
        if let Some(url) = &self.redis.url
            && !url.starts_with("redis://")
        {
            return Err("`redis.url` must be a redis:// URL (redis://[:password@]host:6379[/db])".into());
        }
        if self.redis.key_prefix.trim().is_empty() {
            return Err("`redis.key_prefix` must not be empty".into());
        }
        // Claims are renewed at a third of it; below a second, renewals would crowd Redis.
        if self.redis.visibility_timeout_ms < 1_000 {
            return Err("`redis.visibility_timeout_ms` must be at least 1000".into());
        }
        if self.cache.ttl_seconds == 0 {
            return Err("`cache.ttl_seconds` must be positive (set `cache.entries: 0` to turn the cache off)".into());
        }
        for (key, hours) in [("feedback.retain_hours", self.feedback.retain_hours), ("jobs.retain_hours", self.jobs.retain_hours)] {
            if !(hours.is_finite() && hours > 0.0) {
                return Err(format!("`{key}` is {hours}; it must be a positive number of hours (0.5 = 30 minutes)"));
            }
        }
        if self.jobs.max_queued == 0 {
            return Err("`jobs.max_queued` must be at least 1".into());
        }
        if self.feedback.enabled && self.feedback.retain_requests == 0 {
            return Err("`feedback.retain_requests` must be at least 1 when feedback is enabled".into());
        }
        if self.rate_limit.requests_per_minute > 0 && self.rate_limit.burst == 0 {
            return Err("`rate_limit.burst` must be at least 1 when `rate_limit.requests_per_minute` is set".into());
        }
        if self.rate_limit.failed_keys_per_minute > 0 && self.rate_limit.failed_keys_burst == 0 {
            return Err("`rate_limit.failed_keys_burst` must be at least 1 when `rate_limit.failed_keys_per_minute` is set".into());
        }
        self.device_spec()?;
        Ok(())
    }

    /// The `device` setting, checked against what this build can drive.
    pub fn device_spec(&self) -> Result<caption_model::DeviceSpec, String> {
        let device: caption_model::DeviceSpec = self.device.parse().map_err(|e| format!("`device`: {e}"))?;
        device.check_compiled().map_err(|e| format!("`device`: {e}"))?;
        Ok(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(&path, "port: 9000\nbatching:\n  max_wiat_ms: 3\n").unwrap();
        let err = ServeConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("max_wiat_ms") && err.contains("serve.yaml"), "{err}");

        std::fs::write(&path, "decoding:\n  default_beam_size: 20\n").unwrap();
        let err = ServeConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("default_beam_size"), "{err}");

        std::fs::write(&path, "auth: disabled\nkeys_file: keys.json\n").unwrap();
        let config = ServeConfig::load(&path).unwrap();
        assert_eq!(config.auth, AuthMode::Disabled);
        assert_eq!(config.keys_file.unwrap(), dir.path().join("keys.json"));
        assert_eq!(config.batching, BatchingConfig::default());
    }

    #[test]
    fn scale_out_settings_are_checked_and_a_database_url_is_not_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(&path, "store_file: postgres://caption@db:5432/caption\nredis:\n  url: redis://cache:6379\n").unwrap();
        let config = ServeConfig::load(&path).unwrap();
        assert_eq!(config.store_file.unwrap(), PathBuf::from("postgres://caption@db:5432/caption"));
        for (yaml, key) in [
            ("redis:\n  url: http://cache:6379\n", "redis.url"),
            ("redis:\n  visibility_timeout_ms: 10\n", "visibility_timeout_ms"),
            ("cache:\n  ttl_seconds: 0\n", "ttl_seconds"),
        ] {
            std::fs::write(&path, yaml).unwrap();
            let err = ServeConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn the_example_config_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/serve.yaml");
        let config = ServeConfig::load(&path).unwrap();
        assert_eq!(config, ServeConfig::default());
    }
}
