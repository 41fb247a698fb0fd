//! The embedded store: one SQLite file (`<registry>/serve.sqlite3` unless `store_file` says
//! otherwise). Rows from schema 1 named keys by their name: they are marked `name:<name>` by the
//! upgrade, which no key's id matches.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use caption_data::time::now_rfc3339;

use super::{ClaimedJob, FeedbackWithImage, JobRecord, JobState, NewFeedback, Pruned, RequestRecord, Result, StoreError, StoreSize};

/// The database file's name in the registry when `store_file` is not set.
pub const DEFAULT_STORE_FILE: &str = "serve.sqlite3";

/// Bumped when the tables change; a file from a newer server is refused, not misread.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    bytes BLOB NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    image_sha256 TEXT NOT NULL,
    model TEXT NOT NULL,
    captions TEXT NOT NULL,
    created_at TEXT NOT NULL,
    client TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    client TEXT,
    state TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    options TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE INDEX IF NOT EXISTS requests_by_image ON requests(image_sha256, client);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT,
    image_sha256 TEXT NOT NULL,
    model TEXT,
    caption TEXT,
    rating INTEGER,
    correction TEXT,
    client TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_by_request ON feedback(request_id);
CREATE INDEX IF NOT EXISTS feedback_by_image ON feedback(image_sha256);
CREATE INDEX IF NOT EXISTS jobs_by_image ON jobs(image_sha256);
";

/// Schema 1 → 2: requests gain their key's id; keys were named by name before, which no id
/// matches, so the old rows stay nobody's.
const UPGRADE_FROM_1: &str = "
ALTER TABLE requests ADD COLUMN client TEXT;
UPDATE requests SET client = 'name:?';
UPDATE jobs SET client = 'name:' || client WHERE client IS NOT NULL;
UPDATE feedback SET client = 'name:' || client WHERE client IS NOT NULL;
";

/// The open database file. One connection behind a mutex: every operation is short, and
/// callers run them on blocking threads.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    connection: Mutex<Connection>,
    /// The file's identity when opened: a file deleted or replaced under a running server
    /// would take every later write with it.
    identity: Option<FileIdentity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<FileIdentity> {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let identity =
            FileIdentity { device: std::os::unix::fs::MetadataExt::dev(&metadata), inode: std::os::unix::fs::MetadataExt::ino(&metadata) };
        #[cfg(not(unix))]
        let identity = {
            let _ = &metadata;
            FileIdentity { device: 0, inode: 0 }
        };
        Some(identity)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database and its tables.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| error(path, format!("cannot create its folder: {e}")))?;
        }
        let connection = Connection::open(path).map_err(|e| error(path, format!("cannot open the database: {e}")))?;
        // Deleted rows give their pages back to the file system (on databases created from now on).
        connection.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(|e| error(path, format!("cannot open the database: {e}")))?;
        SqliteStore::prepare(path, connection)
    }

    /// Opens a database that must already exist (for export: a wrong path is an error, not a
    /// new empty file).
    pub fn open_existing(path: &Path) -> Result<SqliteStore> {
        if !path.is_file() {
            return Err(error(
                path,
                "no such file: it is the server's database (`store_file` in serve.yaml, `<registry>/serve.sqlite3` by default)".into(),
            ));
        }
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| error(path, format!("cannot open the database: {e}")))?;
        SqliteStore::prepare(path, connection)
    }

    fn prepare(path: &Path, connection: Connection) -> Result<SqliteStore> {
        let sql = |e: rusqlite::Error| error(path, format!("not a usable server database: {e}"));
        connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
        // WAL: readers do not block the writer; NORMAL sync keeps every committed transaction
        // across a process crash (a power cut may lose the last ones).
        connection.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(sql)?;
        if version > SCHEMA_VERSION {
            return Err(error(
                path,
                format!("written by a newer caption server (schema {version}, this one knows {SCHEMA_VERSION}); upgrade caption"),
            ));
        }
        if version == 1 {
            connection.execute_batch(UPGRADE_FROM_1).map_err(sql)?;
        }
        connection.execute_batch(SCHEMA).map_err(sql)?;
        connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql)?;
        Ok(SqliteStore { path: path.to_path_buf(), connection: Mutex::new(connection), identity: FileIdentity::of(path) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails when the database file is no longer where it was opened (deleted, or replaced):
    /// writes would then go to a file that nothing will read again.
    pub fn check_in_place(&self) -> Result<()> {
        if FileIdentity::of(&self.path) == self.identity && self.identity.is_some() {
            return Ok(());
        }
        Err(error(&self.path, "the database file was deleted or replaced while the server ran; restart the server".into()))
    }

    /// Drops recorded requests created before `requests_before` and finished jobs finished
    /// before `jobs_before` (RFC 3339 times), then images nothing points at any more. Requests
    /// that feedback names stay.
    pub fn prune(&self, requests_before: &str, jobs_before: &str) -> Result<Pruned> {
        let pruned = self.with(|c| {
            let tx = c.transaction()?;
            let requests = tx.execute(
                "DELETE FROM requests WHERE created_at < ?1 AND id NOT IN (SELECT request_id FROM feedback WHERE request_id IS NOT NULL)",
                params![requests_before],
            )?;
            let jobs = tx.execute("DELETE FROM jobs WHERE state IN ('succeeded', 'failed') AND finished_at < ?1", params![jobs_before])?;
            let images = delete_unused_images(&tx)?;
            tx.commit()?;
            Ok(Pruned { requests, jobs, images })
        })?;
        if pruned.images > 0 {
            self.with(|c| c.execute_batch("PRAGMA incremental_vacuum;"))?;
        }
        Ok(pruned)
    }

    /// The database's size on disk and its row counts.
    pub fn size(&self) -> Result<StoreSize> {
        let file_len = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        let bytes = file_len(&self.path) + file_len(Path::new(&wal));
        self.with(|c| {
            let count =
                |table: &str| c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| row.get::<_, i64>(0)).map(|n| n as u64);
            Ok(StoreSize { bytes, images: count("images")?, requests: count("requests")?, jobs: count("jobs")? })
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut connection = self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut connection).map_err(|e| error(&self.path, e.to_string()))
    }

    /// Puts jobs that were running when the server stopped back in the queue; returns how many.
    pub fn requeue_interrupted(&self) -> Result<usize> {
        self.with(|c| c.execute("UPDATE jobs SET state = 'queued', started_at = NULL WHERE state = 'running'", []))
    }

    /// Records captioned images (and their bytes) in one transaction, then prunes old requests
    /// beyond `retain` that no feedback points at.
    pub fn record_requests(&self, records: &[(RequestRecord, &str, &[u8])], retain: usize) -> Result<()> {
        self.check_in_place()?;
        let now = now_rfc3339();
        self.with(|c| {
            let tx = c.transaction()?;
            for (record, format, bytes) in records {
                tx.execute(
                    "INSERT OR IGNORE INTO images (sha256, format, bytes, stored_at) VALUES (?1, ?2, ?3, ?4)",
                    params![record.image_sha256, format, bytes, now],
                )?;
                tx.execute(
                    "INSERT OR REPLACE INTO requests (id, image_sha256, model, captions, created_at, client) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![record.id, record.image_sha256, record.model, record.captions.to_string(), now, record.client],
                )?;
            }
            let newest: i64 = tx.query_row("SELECT COALESCE(MAX(rowid), 0) FROM requests", [], |row| row.get(0))?;
            let cutoff = newest - retain as i64;
            if cutoff > 0 {
                let pruned: Vec<String> = tx
                    .prepare(
                        "DELETE FROM requests WHERE rowid <= ?1 AND NOT EXISTS (SELECT 1 FROM feedback WHERE feedback.request_id = requests.id)
                         RETURNING image_sha256",
                    )?
                    .query_map(params![cutoff], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                // Only the pruned requests' images can have become unused: no table scan per request.
                let mut unused = tx.prepare(
                    "DELETE FROM images WHERE sha256 = ?1
                       AND NOT EXISTS (SELECT 1 FROM requests WHERE requests.image_sha256 = images.sha256)
                       AND NOT EXISTS (SELECT 1 FROM feedback WHERE feedback.image_sha256 = images.sha256)
                       AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.image_sha256 = images.sha256 AND jobs.state IN ('queued', 'running'))",
                )?;
                for sha in &pruned {
                    unused.execute(params![sha])?;
                }
            }
            tx.commit()
        })
    }

    pub fn request(&self, id: &str) -> Result<Option<RequestRecord>> {
        self.with(|c| {
            c.query_row("SELECT id, image_sha256, model, captions, client FROM requests WHERE id = ?1", params![id], |row| {
                let captions: String = row.get(3)?;
                Ok(RequestRecord {
                    id: row.get(0)?,
                    image_sha256: row.get(1)?,
                    model: row.get(2)?,
                    captions: serde_json::from_str(&captions).unwrap_or(serde_json::Value::Null),
                    client: row.get(4)?,
                })
            })
            .optional()
        })
    }

    /// Whether `client` has a recorded request for the image `sha256` (whose bytes are then
    /// kept).
    pub fn captioned_by(&self, sha256: &str, client: Option<&str>) -> Result<bool> {
        self.with(|c| {
            c.query_row("SELECT 1 FROM requests WHERE image_sha256 = ?1 AND client IS ?2 LIMIT 1", params![sha256, client], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
        })
    }

    /// Queues a job with its image, unless `max_queued` jobs are already waiting (then
    /// `Ok(false)`).
    pub fn add_job(&self, job: &JobRecord, format: &str, image: &[u8], max_queued: usize) -> Result<bool> {
        self.check_in_place()?;
        let now = now_rfc3339();
        self.with(|c| {
            let tx = c.transaction()?;
            let waiting: i64 = tx.query_row("SELECT COUNT(*) FROM jobs WHERE state = 'queued'", [], |row| row.get(0))?;
            if waiting as usize >= max_queued {
                return Ok(false);
            }
            tx.execute(
                "INSERT OR IGNORE INTO images (sha256, format, bytes, stored_at) VALUES (?1, ?2, ?3, ?4)",
                params![job.image_sha256, format, image, now],
            )?;
            tx.execute(
                "INSERT INTO jobs (id, client, state, image_sha256, options, created_at) VALUES (?1, ?2, 'queued', ?3, ?4, ?5)",
                params![job.id, job.client, job.image_sha256, job.options.to_string(), job.created_at],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    pub fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.with(|c| {
            c.query_row(
                "SELECT id, client, state, image_sha256, options, created_at, started_at, finished_at, result, error FROM jobs WHERE id = ?1",
                params![id],
                |row| {
                    let state: String = row.get(2)?;
                    let options: String = row.get(4)?;
                    let result: Option<String> = row.get(8)?;
                    Ok(JobRecord {
                        id: row.get(0)?,
                        client: row.get(1)?,
                        state: JobState::parse(&state).unwrap_or(JobState::Failed),
                        image_sha256: row.get(3)?,
                        options: serde_json::from_str(&options).unwrap_or(serde_json::Value::Null),
                        created_at: row.get(5)?,
                        started_at: row.get(6)?,
                        finished_at: row.get(7)?,
                        result: result.and_then(|r| serde_json::from_str(&r).ok()),
                        error: row.get(9)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Marks up to `limit` of the oldest queued jobs running and returns them.
    pub fn claim_jobs(&self, limit: usize) -> Result<Vec<ClaimedJob>> {
        let now = now_rfc3339();
        self.with(|c| {
            let tx = c.transaction()?;
            let claimed = {
                let mut select = tx.prepare(
                    "SELECT jobs.id, jobs.options, images.bytes, jobs.client FROM jobs JOIN images ON images.sha256 = jobs.image_sha256
                     WHERE jobs.state = 'queued' ORDER BY jobs.rowid LIMIT ?1",
                )?;
                let rows = select.query_map(params![limit as i64], claimed_job)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            for job in &claimed {
                tx.execute("UPDATE jobs SET state = 'running', started_at = ?2 WHERE id = ?1", params![job.id, now])?;
            }
            tx.commit()?;
            Ok(claimed)
        })
    }

    /// See [`super::Store::claim_job`].
    pub fn claim_job(&self, id: &str) -> Result<Option<ClaimedJob>> {
        let now = now_rfc3339();
        self.with(|c| {
            let tx = c.transaction()?;
            let claimed = tx
                .query_row(
                    "SELECT jobs.id, jobs.options, images.bytes, jobs.client FROM jobs JOIN images ON images.sha256 = jobs.image_sha256
                     WHERE jobs.id = ?1 AND jobs.state IN ('queued', 'running')",
                    params![id],
                    claimed_job,
                )
                .optional()?;
            if claimed.is_some() {
                tx.execute("UPDATE jobs SET state = 'running', started_at = ?2 WHERE id = ?1", params![id, now])?;
            }
            tx.commit()?;
            Ok(claimed)
        })
    }

    /// See [`super::Store::remove_job`].
    pub fn remove_job(&self, id: &str) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM jobs WHERE id = ?1 AND state = 'queued'", params![id])?;
            delete_unused_images(&tx)?;
            tx.commit()
        })
    }

    /// Jobs per state (every state listed, 0 when none).
    pub fn job_counts(&self) -> Result<Vec<(JobState, u64)>> {
        let found = self.with(|c| {
            let mut select = c.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
            let rows = select.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let count = |state: JobState| found.iter().filter(|(s, _)| s == state.as_str()).map(|(_, n)| *n as u64).sum();
        Ok([JobState::Queued, JobState::Running, JobState::Succeeded, JobState::Failed].into_iter().map(|s| (s, count(s))).collect())
    }

    /// Puts a claimed job back in the queue (the model was busy or gone).
    pub fn requeue(&self, id: &str) -> Result<()> {
        self.with(|c| c.execute("UPDATE jobs SET state = 'queued', started_at = NULL WHERE id = ?1", params![id]).map(|_| ()))
    }

    /// Records a job's outcome: its result (JSON) or why it failed.
    pub fn finish_job(&self, id: &str, outcome: std::result::Result<serde_json::Value, String>) -> Result<()> {
        let now = now_rfc3339();
        let (state, result, error) = match outcome {
            Ok(result) => (JobState::Succeeded, Some(result.to_string()), None),
            Err(message) => (JobState::Failed, None, Some(message)),
        };
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = ?2, finished_at = ?3, result = ?4, error = ?5 WHERE id = ?1",
                params![id, state.as_str(), now, result, error],
            )
            .map(|_| ())
        })
    }

    /// Stores feedback; returns its id.
    pub fn add_feedback(&self, feedback: &NewFeedback) -> Result<i64> {
        self.check_in_place()?;
        let now = now_rfc3339();
        self.with(|c| {
            c.execute(
                "INSERT INTO feedback (request_id, image_sha256, model, caption, rating, correction, client, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    feedback.request_id,
                    feedback.image_sha256,
                    feedback.model,
                    feedback.caption,
                    feedback.rating,
                    feedback.correction,
                    feedback.client,
                    now
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Every feedback row with its image bytes, oldest first.
    pub fn feedback_with_images(&self) -> Result<Vec<FeedbackWithImage>> {
        self.with(|c| {
            let mut select = c.prepare(
                "SELECT feedback.id, feedback.image_sha256, images.format, images.bytes, feedback.caption, feedback.rating, feedback.correction
                 FROM feedback JOIN images ON images.sha256 = feedback.image_sha256 ORDER BY feedback.id",
            )?;
            let rows = select.query_map([], |row| {
                Ok(FeedbackWithImage {
                    id: row.get(0)?,
                    image_sha256: row.get(1)?,
                    format: row.get(2)?,
                    image: row.get(3)?,
                    caption: row.get(4)?,
                    rating: row.get(5)?,
                    correction: row.get(6)?,
                })
            })?;
            rows.collect()
        })
    }
}

/// A claimed job from a row of (id, options, image bytes, client).
fn claimed_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimedJob> {
    let options: String = row.get(1)?;
    Ok(ClaimedJob {
        id: row.get(0)?,
        options: serde_json::from_str(&options).unwrap_or(serde_json::Value::Null),
        image: row.get(2)?,
        client: row.get(3)?,
    })
}

/// Deletes images that no request, feedback or unfinished job points at; returns how many.
fn delete_unused_images(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM images WHERE sha256 NOT IN (SELECT image_sha256 FROM requests)
           AND sha256 NOT IN (SELECT image_sha256 FROM feedback)
           AND sha256 NOT IN (SELECT image_sha256 FROM jobs WHERE state IN ('queued', 'running'))",
        [],
    )
}

fn error(path: &Path, message: String) -> StoreError {
    StoreError { location: path.display().to_string(), message, unavailable: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The behaviour shared with the PostgreSQL store is tested on both in tests/stores.rs.

    #[test]
    fn jobs_interrupted_by_a_stop_are_queued_again_when_the_file_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.sqlite3");
        {
            let store = SqliteStore::open(&path).unwrap();
            let job = JobRecord {
                id: "j1".into(),
                client: Some("alice".into()),
                state: JobState::Queued,
                image_sha256: "img-j".into(),
                options: serde_json::json!({"beam_size": 2}),
                created_at: now_rfc3339(),
                started_at: None,
                finished_at: None,
                result: None,
                error: None,
            };
            assert!(store.add_job(&job, "png", b"job image", 10).unwrap());
            assert_eq!(store.claim_jobs(5).unwrap().len(), 1);
        }
        let store = SqliteStore::open_existing(&path).unwrap();
        assert_eq!(store.job("j1").unwrap().unwrap().state, JobState::Running);
        assert_eq!(store.requeue_interrupted().unwrap(), 1);
        let claimed = store.claim_jobs(1).unwrap();
        assert_eq!((claimed[0].options["beam_size"].clone(), claimed[0].image.as_slice()), (serde_json::json!(2), b"job image".as_slice()));
    }

    #[test]
    fn a_deleted_database_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        store.check_in_place().unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = store.check_in_place().unwrap_err().to_string();
        assert!(err.contains("deleted or replaced"), "{err}");
        let feedback = NewFeedback { image_sha256: "x".into(), rating: Some(1), ..Default::default() };
        assert!(store.add_feedback(&feedback).is_err());
    }

    #[test]
    fn a_schema_1_database_is_upgraded_and_its_rows_belong_to_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.sqlite3");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                &SCHEMA
                    .replace("    created_at TEXT NOT NULL,\n    client TEXT\n", "    created_at TEXT NOT NULL\n")
                    .replace("CREATE INDEX IF NOT EXISTS requests_by_image ON requests(image_sha256, client);", ""),
            )
            .unwrap();
            c.execute("INSERT INTO requests (id, image_sha256, model, captions, created_at) VALUES ('r', 'img', 'm', '[]', 't')", [])
                .unwrap();
            c.execute(
                "INSERT INTO jobs (id, client, state, image_sha256, options, created_at) VALUES ('j', 'alice', 'queued', 'img', '{}', 't')",
                [],
            )
            .unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let store = SqliteStore::open_existing(&path).unwrap();
        assert_eq!(store.request("r").unwrap().unwrap().client.as_deref(), Some("name:?"));
        assert_eq!(store.job("j").unwrap().unwrap().client.as_deref(), Some("name:alice"));
        assert!(!store.captioned_by("img", None).unwrap());
    }

    #[test]
    fn a_missing_or_foreign_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteStore::open_existing(&dir.path().join("nope.sqlite3")).unwrap_err().to_string();
        assert!(err.contains("nope.sqlite3") && err.contains("store_file"), "{err}");
        let junk = dir.path().join("junk.sqlite3");
        std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
        let err = SqliteStore::open_existing(&junk).unwrap_err().to_string();
        assert!(err.contains("junk.sqlite3") && err.contains("not a usable server database"), "{err}");
    }
}
