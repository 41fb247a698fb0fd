//! The server's durable state: asynchronous jobs, the images and captions of recent requests
//! (so that feedback can point at them), and the feedback itself. Everything a restart must not
//! lose is written here before the client is answered. One SQLite file by default
//! (`<registry>/serve.sqlite3` unless `store_file` says otherwise, [`sqlite`]); a PostgreSQL
//! database when `store_file` is a `postgres://` URL, so that replicas share it ([`postgres`]).
//!
//! ```text
//! images    sha256 → the image file's bytes and format (jpg, png, webp)
//! requests  one captioned image: id (returned as `request_id`), image, model version, captions,
//!           the API key's id that asked
//! jobs      queued → running → succeeded | failed, with the options, the result and the key's id
//! feedback  a rating and/or a correction of a request's (or an image's) caption, and the key's id
//! ```
//!
//! `client` columns hold the API key's id (its SHA-256), NULL when auth is disabled; a key sees
//! only rows with its own id.
//!
//! Requests beyond the newest `feedback.retain_requests` are pruned unless feedback points at
//! them; images go when nothing points at them any more.

pub mod postgres;
pub mod sqlite;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::postgres::PostgresStore;
pub use self::sqlite::{DEFAULT_STORE_FILE, SqliteStore};

#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct StoreError {
    /// The file, or the database's URL without its password.
    pub location: String,
    pub message: String,
    /// The database could not be reached (a server down, a full pool): the request may be
    /// retried, and is answered 503 rather than 500.
    pub unavailable: bool,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<JobState> {
        Some(match text {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }
}

/// One captioned image, as recorded for feedback.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub id: String,
    pub image_sha256: String,
    /// The model version's id.
    pub model: String,
    /// The captions as answered (JSON array of `{text, confidence}`).
    pub captions: serde_json::Value,
    /// The API key's id that asked (`None` when auth is disabled).
    pub client: Option<String>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    /// The API key's id that submitted it (`None` when auth is disabled).
    pub client: Option<String>,
    pub state: JobState,
    pub image_sha256: String,
    /// The decoding options as sent (JSON object).
    pub options: serde_json::Value,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// On success: `{captions, model}` (JSON).
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// A job taken off the queue to run now: its options and image.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    /// The API key's id that submitted it.
    pub client: Option<String>,
    pub options: serde_json::Value,
    pub image: Vec<u8>,
}

/// Feedback as received (already checked by the handler).
#[derive(Debug, Clone, Default)]
pub struct NewFeedback {
    pub request_id: Option<String>,
    pub image_sha256: String,
    pub model: Option<String>,
    pub caption: Option<String>,
    pub rating: Option<u8>,
    pub correction: Option<String>,
    pub client: Option<String>,
}

/// One feedback row with its image, for export.
#[derive(Debug, Clone)]
pub struct FeedbackWithImage {
    pub id: i64,
    pub image_sha256: String,
    pub format: String,
    pub image: Vec<u8>,
    pub caption: Option<String>,
    pub rating: Option<u8>,
    pub correction: Option<String>,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub requests: usize,
    pub jobs: usize,
    pub images: usize,
}

/// How big the store is, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSize {
    /// The database file and its write-ahead log.
    pub bytes: u64,
    pub images: u64,
    pub requests: u64,
    pub jobs: u64,
}

/// A random 128-bit id in hex, for requests and jobs.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // The OS's generator does not fail on the platforms served; a fixed id would be worse
    // than a crash, so fall back to the clock and the process id.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the store is: `store_file` (or `--store`) names a file, or a PostgreSQL database by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    File(PathBuf),
    /// `postgres://` or `postgresql://`.
    Postgres(String),
}

impl StoreLocation {
    /// A `postgres://` or `postgresql://` URL is a database; anything else a file.
    pub fn parse(text: &Path) -> StoreLocation {
        match text.to_str() {
            Some(url) if is_postgres_url(url) => StoreLocation::Postgres(url.to_string()),
            _ => StoreLocation::File(text.to_path_buf()),
        }
    }

    /// For messages: the path, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::File(path) => path.display().to_string(),
            StoreLocation::Postgres(url) => postgres::redact(url),
        }
    }
}

/// Whether `text` is a PostgreSQL URL (`store_file` paths stay paths).
pub fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// The open store. Every operation blocks (callers run them on blocking threads).
#[derive(Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

/// Calls the same method on whichever store is open.
macro_rules! each_store {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Opens (creating the file or applying the migrations if needed) the store.
    pub fn open(location: &StoreLocation) -> Result<Store> {
        Ok(match location {
            StoreLocation::File(path) => Store::Sqlite(SqliteStore::open(path)?),
            StoreLocation::Postgres(url) => Store::Postgres(PostgresStore::open(url)?),
        })
    }

    /// Opens a store that must already hold the server's tables (for export: a wrong path is
    /// an error, not a new empty store).
    pub fn open_existing(location: &StoreLocation) -> Result<Store> {
        Ok(match location {
            StoreLocation::File(path) => Store::Sqlite(SqliteStore::open_existing(path)?),
            StoreLocation::Postgres(url) => Store::Postgres(PostgresStore::open_existing(url)?),
        })
    }

    /// Whether several servers may share this store (a database server, not a file).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Fails when writes would succeed and still be lost: the file was deleted or replaced.
    /// (A database server that cannot be reached fails the write itself.)
    pub fn check_writable(&self) -> Result<()> {
        match self {
            Store::Sqlite(store) => store.check_in_place(),
            Store::Postgres(_) => Ok(()),
        }
    }

    /// For readiness: writable, and the database server answers now.
    pub fn check_ready(&self) -> Result<()> {
        match self {
            Store::Sqlite(store) => store.check_in_place(),
            Store::Postgres(store) => store.check_reachable(),
        }
    }

    /// See [`SqliteStore::prune`].
    pub fn prune(&self, requests_before: &str, jobs_before: &str) -> Result<Pruned> {
        each_store!(self, store => store.prune(requests_before, jobs_before))
    }

    pub fn size(&self) -> Result<StoreSize> {
        each_store!(self, store => store.size())
    }

    /// Puts jobs that were running when the server stopped back in the queue; returns how many.
    pub fn requeue_interrupted(&self) -> Result<usize> {
        each_store!(self, store => store.requeue_interrupted())
    }

    /// Records captioned images (and their bytes), then prunes old requests beyond `retain`
    /// that no feedback points at.
    pub fn record_requests(&self, records: &[(RequestRecord, &str, &[u8])], retain: usize) -> Result<()> {
        each_store!(self, store => store.record_requests(records, retain))
    }

    pub fn request(&self, id: &str) -> Result<Option<RequestRecord>> {
        each_store!(self, store => store.request(id))
    }

    /// Whether `client` has a recorded request for the image `sha256`.
    pub fn captioned_by(&self, sha256: &str, client: Option<&str>) -> Result<bool> {
        each_store!(self, store => store.captioned_by(sha256, client))
    }

    /// Queues a job with its image, unless `max_queued` jobs are already waiting (then
    /// `Ok(false)`).
    pub fn add_job(&self, job: &JobRecord, format: &str, image: &[u8], max_queued: usize) -> Result<bool> {
        each_store!(self, store => store.add_job(job, format, image, max_queued))
    }

    /// Deletes a queued job that could not be handed to the queue (its client was answered
    /// 503, not 202).
    pub fn remove_job(&self, id: &str) -> Result<()> {
        each_store!(self, store => store.remove_job(id))
    }

    pub fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        each_store!(self, store => store.job(id))
    }

    /// Marks up to `limit` of the oldest queued jobs running and returns them.
    pub fn claim_jobs(&self, limit: usize) -> Result<Vec<ClaimedJob>> {
        each_store!(self, store => store.claim_jobs(limit))
    }

    /// Marks one job running and returns it, unless it has finished (or is unknown): a job
    /// delivered again by the shared queue after its runner died, or after its outcome was
    /// written but not acknowledged.
    pub fn claim_job(&self, id: &str) -> Result<Option<ClaimedJob>> {
        each_store!(self, store => store.claim_job(id))
    }

    /// Jobs per state (every state listed, 0 when none).
    pub fn job_counts(&self) -> Result<Vec<(JobState, u64)>> {
        each_store!(self, store => store.job_counts())
    }

    /// Puts a claimed job back in the queue (the model was busy or gone).
    pub fn requeue(&self, id: &str) -> Result<()> {
        each_store!(self, store => store.requeue(id))
    }

    /// Records a job's outcome: its result (JSON) or why it failed.
    pub fn finish_job(&self, id: &str, outcome: std::result::Result<serde_json::Value, String>) -> Result<()> {
        each_store!(self, store => store.finish_job(id, outcome))
    }

    /// Stores feedback; returns its id.
    pub fn add_feedback(&self, feedback: &NewFeedback) -> Result<i64> {
        each_store!(self, store => store.add_feedback(feedback))
    }

    /// Every feedback row with its image bytes, oldest first.
    pub fn feedback_with_images(&self) -> Result<Vec<FeedbackWithImage>> {
        each_store!(self, store => store.feedback_with_images())
    }
}
