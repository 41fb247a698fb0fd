//! The shared job queue (with `redis.url`): a Redis stream that every replica reads through one
//! consumer group, so that any replica runs any job. The database holds each job's state and
//! image; the stream only says which job to run.
//!
//! A delivered job stays pending under its replica's name until that replica acknowledges it
//! (after the outcome is written). While it runs, the replica renews its claim; a job whose
//! claim has not been renewed for `redis.visibility_timeout_ms` (its replica died) is claimed by
//! another replica and run again. The database's claim keeps a finished job from running twice.

use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamReadReply};

use crate::redis_store::{RedisError, RedisStore};

/// The consumer group of every replica.
const GROUP: &str = "replicas";

/// The message field naming the job.
const JOB_FIELD: &str = "job";

/// How long a read waits for new jobs.
pub const READ_BLOCK: Duration = Duration::from_millis(500);

/// A job handed to this replica: the stream entry and the job's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub entry: String,
    pub job: String,
}

#[derive(Debug)]
pub struct JobQueue {
    redis: RedisStore,
    stream: String,
    /// This replica's name in the group (unique per process).
    consumer: String,
    visibility: Duration,
}

impl JobQueue {
    pub fn new(redis: RedisStore, visibility: Duration) -> JobQueue {
        let stream = redis.key("jobs");
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        let consumer = format!("{host}-{}-{}", std::process::id(), &crate::store::new_id()[..8]);
        JobQueue { redis, stream, consumer, visibility }
    }

    /// How long a claim lasts unrenewed.
    pub fn visibility(&self) -> Duration {
        self.visibility
    }

    /// Creates the stream and the group unless they exist (also after Redis lost its data).
    pub async fn ensure_group(&self) -> Result<(), RedisError> {
        let mut connection = self.redis.commands();
        let created: redis::RedisResult<()> =
            redis::cmd("XGROUP").arg("CREATE").arg(&self.stream).arg(GROUP).arg("0").arg("MKSTREAM").query_async(&mut connection).await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(self.redis.error(e)),
            _ => Ok(()),
        }
    }

    /// Hands a stored job to the replicas.
    pub async fn push(&self, job: &str) -> Result<(), RedisError> {
        let mut connection = self.redis.commands();
        redis::cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg(JOB_FIELD)
            .arg(job)
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| self.redis.error(e))
    }

    /// Up to `count` jobs for this replica: first those whose replica stopped renewing them,
    /// then new ones (waiting up to [`READ_BLOCK`] for one).
    pub async fn take(&self, count: usize) -> Result<Vec<Delivery>, RedisError> {
        let reclaimed = self.reclaim(count).await?;
        if !reclaimed.is_empty() {
            return Ok(reclaimed);
        }
        let mut connection = self.redis.blocking();
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut connection)
            .await;
        let read = match read {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            read => read.map_err(|e| self.redis.error(e))?,
        };
        Ok(read
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .map(|id| delivery(id.id.clone(), id.get(JOB_FIELD)))
            .collect())
    }

    async fn reclaim(&self, count: usize) -> Result<Vec<Delivery>, RedisError> {
        let mut connection = self.redis.commands();
        let reply: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.visibility.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut connection)
            .await;
        match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(self.redis.error(e)),
            Ok(reply) => Ok(reply.claimed.into_iter().map(|id| delivery(id.id.clone(), id.get(JOB_FIELD))).collect()),
        }
    }

    /// Renews this replica's claim on a running job.
    pub async fn renew(&self, delivery: &Delivery) -> Result<(), RedisError> {
        let mut connection = self.redis.commands();
        redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(0)
            .arg(&delivery.entry)
            .arg("JUSTID")
            .query_async::<Vec<String>>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| self.redis.error(e))
    }

    /// Done with a job: its outcome is stored (or it was requeued as a new entry).
    pub async fn acknowledge(&self, delivery: &Delivery) -> Result<(), RedisError> {
        let mut connection = self.redis.commands();
        redis::pipe()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&delivery.entry)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(&delivery.entry)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| self.redis.error(e))
    }
}

/// An entry without a job field (not written by this server) gets an empty id, which no job
/// has: it is acknowledged and dropped.
fn delivery(entry: String, job: Option<String>) -> Delivery {
    Delivery { entry, job: job.unwrap_or_default() }
}
