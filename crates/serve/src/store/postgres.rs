//! The shared store: the same tables in a PostgreSQL database (`store_file: postgres://…`), so
//! that every replica reads the jobs, requests and feedback any of them wrote. Connections come
//! from a small pool; the schema is versioned by the SQL files in `crates/serve/migrations/postgres`,
//! applied in order at start-up under an advisory lock (replicas starting together apply each
//! once), and a database written by a newer server is refused.

use std::time::Duration;

use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use r2d2_postgres::r2d2;

use caption_data::time::now_rfc3339;

use super::{ClaimedJob, FeedbackWithImage, JobRecord, JobState, NewFeedback, Pruned, RequestRecord, Result, StoreError, StoreSize};

/// The migrations, oldest first: (version, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "schema", include_str!("../../migrations/postgres/0001_schema.sql"))];

/// The advisory lock held while migrations are applied ("caption" in ASCII).
const MIGRATION_LOCK: i64 = 0x0063_6170_7469_6f6e;

/// Connections kept per server process.
const POOL_SIZE: u32 = 8;

/// How long a connection (new or from the pool) may take before the database counts as
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// A pool of connections to one database.
pub struct PostgresStore {
    /// The URL without its password.
    location: String,
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("location", &self.location).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects and applies the migrations the database lacks.
    pub fn open(url: &str) -> Result<PostgresStore> {
        let store = PostgresStore::connect(url)?;
        store.migrate()?;
        Ok(store)
    }

    /// Connects to a database that must already hold the server's tables.
    pub fn open_existing(url: &str) -> Result<PostgresStore> {
        let store = PostgresStore::connect(url)?;
        let exists: bool = store.with(|c| c.query_one("SELECT to_regclass('caption_migrations') IS NOT NULL", &[])?.try_get(0))?;
        if !exists {
            return Err(store
                .error("holds no caption tables: it is the database a server was started with (`store_file` / `--store`)".into(), false));
        }
        store.migrate()?;
        Ok(store)
    }

    fn connect(url: &str) -> Result<PostgresStore> {
        let location = redact(url);
        let invalid = |message: String| StoreError { location: location.clone(), message, unavailable: false };
        let mut config: postgres::Config = url.parse().map_err(|e| invalid(format!("not a usable PostgreSQL URL: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(PostgresConnectionManager::new(config, NoTls))
            .map_err(|e| StoreError {
                location: location.clone(),
                message: format!("cannot connect: {e} (is PostgreSQL running there, and are the user, password and database right?)"),
                unavailable: true,
            })?;
        Ok(PostgresStore { location, pool })
    }

    /// Applies the migrations this database lacks, in one transaction.
    fn migrate(&self) -> Result<()> {
        let known = MIGRATIONS.iter().map(|(version, ..)| *version).max().unwrap_or(0);
        let newest = self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS caption_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
            )?;
            let applied: Vec<i32> = tx.query("SELECT version FROM caption_migrations", &[])?.iter().map(|row| row.get(0)).collect();
            let newest = applied.iter().copied().max().unwrap_or(0);
            if newest > known {
                return Ok(newest);
            }
            for (version, name, sql) in MIGRATIONS {
                if !applied.contains(version) {
                    tx.batch_execute(sql)?;
                    tx.execute(
                        "INSERT INTO caption_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                        &[version, name, &now_rfc3339()],
                    )?;
                }
            }
            tx.commit()?;
            Ok(newest)
        })?;
        if newest > known {
            return Err(self
                .error(format!("written by a newer caption server (migration {newest}, this one knows {known}); upgrade caption"), false));
        }
        Ok(())
    }

    /// Fails when the database cannot be reached now.
    pub fn check_reachable(&self) -> Result<()> {
        self.with(|c| c.batch_execute("SELECT 1"))
    }

    fn with<T>(&self, f: impl FnOnce(&mut postgres::Client) -> std::result::Result<T, postgres::Error>) -> Result<T> {
        let mut connection = self.pool.get().map_err(|e| self.error(format!("cannot reach the database: {e}"), true))?;
        f(&mut connection).map_err(|e| {
            // Errors without a database's answer are the connection's: the server is down or gone.
            let unavailable = e.as_db_error().is_none() || e.is_closed();
            self.error(e.to_string(), unavailable)
        })
    }

    fn error(&self, message: String, unavailable: bool) -> StoreError {
        StoreError { location: self.location.clone(), message, unavailable }
    }

    /// See [`super::Store::prune`].
    pub fn prune(&self, requests_before: &str, jobs_before: &str) -> Result<Pruned> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let requests = tx.execute(
                "DELETE FROM requests WHERE created_at < $1 AND id NOT IN (SELECT request_id FROM feedback WHERE request_id IS NOT NULL)",
                &[&requests_before],
            )?;
            let jobs = tx.execute("DELETE FROM jobs WHERE state IN ('succeeded', 'failed') AND finished_at < $1", &[&jobs_before])?;
            let images = delete_unused_images(&mut tx)?;
            tx.commit()?;
            Ok(Pruned { requests: requests as usize, jobs: jobs as usize, images: images as usize })
        })
    }

    /// The database's size and the tables' row counts.
    pub fn size(&self) -> Result<StoreSize> {
        self.with(|c| {
            let mut count = |table: &str| -> std::result::Result<u64, postgres::Error> {
                Ok(c.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?.get::<_, i64>(0) as u64)
            };
            let (images, requests, jobs) = (count("images")?, count("requests")?, count("jobs")?);
            let bytes: i64 = c.query_one("SELECT pg_database_size(current_database())", &[])?.get(0);
            Ok(StoreSize { bytes: bytes as u64, images, requests, jobs })
        })
    }

    pub fn requeue_interrupted(&self) -> Result<usize> {
        self.with(|c| c.execute("UPDATE jobs SET state = 'queued', started_at = NULL WHERE state = 'running'", &[]).map(|n| n as usize))
    }

    pub fn record_requests(&self, records: &[(RequestRecord, &str, &[u8])], retain: usize) -> Result<()> {
        let now = now_rfc3339();
        self.with(|c| {
            let mut tx = c.transaction()?;
            for (record, format, bytes) in records {
                tx.execute(
                    "INSERT INTO images (sha256, format, bytes, stored_at) VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING",
                    &[&record.image_sha256, format, bytes, &now],
                )?;
                tx.execute(
                    "INSERT INTO requests (id, image_sha256, model, captions, created_at, client) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (id) DO UPDATE SET image_sha256 = EXCLUDED.image_sha256, model = EXCLUDED.model,
                        captions = EXCLUDED.captions, created_at = EXCLUDED.created_at, client = EXCLUDED.client",
                    &[&record.id, &record.image_sha256, &record.model, &record.captions.to_string(), &now, &record.client],
                )?;
            }
            let newest: i64 = tx.query_one("SELECT COALESCE(MAX(seq), 0) FROM requests", &[])?.get(0);
            let cutoff = newest - retain as i64;
            if cutoff > 0 {
                let pruned: Vec<String> = tx
                    .query(
                        "DELETE FROM requests WHERE seq <= $1 AND NOT EXISTS (SELECT 1 FROM feedback WHERE feedback.request_id = requests.id)
                         RETURNING image_sha256",
                        &[&cutoff],
                    )?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                // Only the pruned requests' images can have become unused: no table scan per request.
                if !pruned.is_empty() {
                    tx.execute(
                        "DELETE FROM images WHERE sha256 = ANY($1)
                           AND NOT EXISTS (SELECT 1 FROM requests WHERE requests.image_sha256 = images.sha256)
                           AND NOT EXISTS (SELECT 1 FROM feedback WHERE feedback.image_sha256 = images.sha256)
                           AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.image_sha256 = images.sha256 AND jobs.state IN ('queued', 'running'))",
                        &[&pruned],
                    )?;
                }
            }
            tx.commit()
        })
    }

    pub fn request(&self, id: &str) -> Result<Option<RequestRecord>> {
        self.with(|c| {
            let row = c.query_opt("SELECT id, image_sha256, model, captions, client FROM requests WHERE id = $1", &[&id])?;
            Ok(row.map(|row| RequestRecord {
                id: row.get(0),
                image_sha256: row.get(1),
                model: row.get(2),
                captions: serde_json::from_str(row.get(3)).unwrap_or(serde_json::Value::Null),
                client: row.get(4),
            }))
        })
    }

    pub fn captioned_by(&self, sha256: &str, client: Option<&str>) -> Result<bool> {
        self.with(|c| {
            let sql = "SELECT 1 FROM requests WHERE image_sha256 = $1 AND client IS NOT DISTINCT FROM $2 LIMIT 1";
            Ok(c.query_opt(sql, &[&sha256, &client])?.is_some())
        })
    }

    pub fn add_job(&self, job: &JobRecord, format: &str, image: &[u8], max_queued: usize) -> Result<bool> {
        let now = now_rfc3339();
        self.with(|c| {
            let mut tx = c.transaction()?;
            let waiting: i64 = tx.query_one("SELECT COUNT(*) FROM jobs WHERE state = 'queued'", &[])?.get(0);
            if waiting as usize >= max_queued {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO images (sha256, format, bytes, stored_at) VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING",
                &[&job.image_sha256, &format, &image, &now],
            )?;
            tx.execute(
                "INSERT INTO jobs (id, client, state, image_sha256, options, created_at) VALUES ($1, $2, 'queued', $3, $4, $5)",
                &[&job.id, &job.client, &job.image_sha256, &job.options.to_string(), &job.created_at],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    pub fn remove_job(&self, id: &str) -> Result<()> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("DELETE FROM jobs WHERE id = $1 AND state = 'queued'", &[&id])?;
            delete_unused_images(&mut tx)?;
            tx.commit()
        })
    }

    pub fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.with(|c| {
            let row = c.query_opt(
                "SELECT id, client, state, image_sha256, options, created_at, started_at, finished_at, result, error FROM jobs WHERE id = $1",
                &[&id],
            )?;
            Ok(row.map(|row| JobRecord {
                id: row.get(0),
                client: row.get(1),
                state: JobState::parse(row.get(2)).unwrap_or(JobState::Failed),
                image_sha256: row.get(3),
                options: serde_json::from_str(row.get(4)).unwrap_or(serde_json::Value::Null),
                created_at: row.get(5),
                started_at: row.get(6),
                finished_at: row.get(7),
                result: row.get::<_, Option<String>>(8).and_then(|r| serde_json::from_str(&r).ok()),
                error: row.get(9),
            }))
        })
    }

    /// Oldest first; replicas claiming at once skip each other's rows.
    pub fn claim_jobs(&self, limit: usize) -> Result<Vec<ClaimedJob>> {
        let sql = "WITH claimed AS (
                UPDATE jobs SET state = 'running', started_at = $2 WHERE id IN (
                    SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)
                RETURNING id, options, client, image_sha256, seq)
            SELECT claimed.id, claimed.options, images.bytes, claimed.client FROM claimed
            JOIN images ON images.sha256 = claimed.image_sha256 ORDER BY claimed.seq";
        self.with(|c| Ok(c.query(sql, &[&(limit as i64), &now_rfc3339()])?.iter().map(claimed_job).collect()))
    }

    pub fn claim_job(&self, id: &str) -> Result<Option<ClaimedJob>> {
        let sql = "WITH claimed AS (
                UPDATE jobs SET state = 'running', started_at = $2 WHERE id = $1 AND state IN ('queued', 'running')
                RETURNING id, options, client, image_sha256)
            SELECT claimed.id, claimed.options, images.bytes, claimed.client FROM claimed
            JOIN images ON images.sha256 = claimed.image_sha256";
        self.with(|c| Ok(c.query_opt(sql, &[&id, &now_rfc3339()])?.as_ref().map(claimed_job)))
    }

    pub fn job_counts(&self) -> Result<Vec<(JobState, u64)>> {
        let found: Vec<(String, i64)> = self.with(|c| {
            Ok(c.query("SELECT state, COUNT(*) FROM jobs GROUP BY state", &[])?.iter().map(|row| (row.get(0), row.get(1))).collect())
        })?;
        let count = |state: JobState| found.iter().filter(|(s, _)| s == state.as_str()).map(|(_, n)| *n as u64).sum();
        Ok([JobState::Queued, JobState::Running, JobState::Succeeded, JobState::Failed].into_iter().map(|s| (s, count(s))).collect())
    }

    pub fn requeue(&self, id: &str) -> Result<()> {
        self.with(|c| c.execute("UPDATE jobs SET state = 'queued', started_at = NULL WHERE id = $1", &[&id]).map(|_| ()))
    }

    pub fn finish_job(&self, id: &str, outcome: std::result::Result<serde_json::Value, String>) -> Result<()> {
        let (state, result, error) = match outcome {
            Ok(result) => (JobState::Succeeded, Some(result.to_string()), None),
            Err(message) => (JobState::Failed, None, Some(message)),
        };
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = $2, finished_at = $3, result = $4, error = $5 WHERE id = $1",
                &[&id, &state.as_str(), &now_rfc3339(), &result, &error],
            )
            .map(|_| ())
        })
    }

    pub fn add_feedback(&self, feedback: &NewFeedback) -> Result<i64> {
        let rating = feedback.rating.map(i16::from);
        self.with(|c| {
            let row = c.query_one(
                "INSERT INTO feedback (request_id, image_sha256, model, caption, rating, correction, client, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    &feedback.request_id,
                    &feedback.image_sha256,
                    &feedback.model,
                    &feedback.caption,
                    &rating,
                    &feedback.correction,
                    &feedback.client,
                    &now_rfc3339(),
                ],
            )?;
            Ok(row.get(0))
        })
    }

    pub fn feedback_with_images(&self) -> Result<Vec<FeedbackWithImage>> {
        self.with(|c| {
            let rows = c.query(
                "SELECT feedback.id, feedback.image_sha256, images.format, images.bytes, feedback.caption, feedback.rating, feedback.correction
                 FROM feedback JOIN images ON images.sha256 = feedback.image_sha256 ORDER BY feedback.id",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|row| FeedbackWithImage {
                    id: row.get(0),
                    image_sha256: row.get(1),
                    format: row.get(2),
                    image: row.get(3),
                    caption: row.get(4),
                    rating: row.get::<_, Option<i16>>(5).and_then(|r| u8::try_from(r).ok()),
                    correction: row.get(6),
                })
                .collect())
        })
    }
}

fn claimed_job(row: &postgres::Row) -> ClaimedJob {
    ClaimedJob {
        id: row.get(0),
        options: serde_json::from_str(row.get(1)).unwrap_or(serde_json::Value::Null),
        image: row.get(2),
        client: row.get(3),
    }
}

/// Deletes images that no request, feedback or unfinished job points at; returns how many.
fn delete_unused_images(tx: &mut postgres::Transaction<'_>) -> std::result::Result<u64, postgres::Error> {
    tx.execute(
        "DELETE FROM images WHERE sha256 NOT IN (SELECT image_sha256 FROM requests)
           AND sha256 NOT IN (SELECT image_sha256 FROM feedback)
           AND sha256 NOT IN (SELECT image_sha256 FROM jobs WHERE state IN ('queued', 'running'))",
        &[],
    )
}

/// A database URL for messages and logs: its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(a PostgreSQL URL that does not parse)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://caption:s3cret@db:5432/caption"), "postgres://caption:***@db:5432/caption");
        assert_eq!(redact("postgresql://db/caption"), "postgresql://db/caption");
        let err = PostgresStore::open("postgres://caption:s3cret@127.0.0.1:1/caption").unwrap_err();
        assert!(err.unavailable && !err.to_string().contains("s3cret") && err.to_string().contains("cannot connect"), "{err}");
    }
}
