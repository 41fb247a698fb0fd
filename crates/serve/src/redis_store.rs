//! The Redis server that replicas share (`redis.url`): its connections, its key names, and how
//! its failures are answered. The result cache ([`crate::result_cache`]), the rate-limit
//! buckets ([`crate::rate_limit`]) and the job queue ([`crate::queue`]) keep their data here.
//!
//! Two connections, each reconnecting by itself when Redis returns: one for short commands, one
//! for the job queue's blocking reads (a blocked read would hold up every command queued behind
//! it on a shared connection).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;
use crate::error::ApiError;

/// The longest a command may take before Redis counts as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to the shared Redis.
#[derive(Clone)]
pub struct RedisStore {
    /// The URL without its password, for messages.
    pub location: String,
    /// Prefix of every key (`redis.key_prefix`), so that several services can share a server.
    prefix: String,
    commands: ConnectionManager,
    blocking: ConnectionManager,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("location", &self.location).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the shared Redis at {location}: {message}")]
pub struct RedisError {
    pub location: String,
    pub message: String,
}

impl RedisStore {
    /// Connects (both connections) and checks that the server answers.
    pub async fn connect(config: &RedisConfig, url: &str, block_for: Duration) -> Result<RedisStore, RedisError> {
        let location = crate::store::postgres::redact(url);
        let failed = |message: String| RedisError { location: location.clone(), message };
        let client = redis::Client::open(url).map_err(|e| failed(format!("not a usable Redis URL: {e}")))?;
        let manager = |response: Duration| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(RESPONSE_TIMEOUT))
                .set_response_timeout(Some(response))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_with_config(client.clone(), config)
        };
        let unreachable = |e: redis::RedisError| failed(format!("cannot connect: {e} (is Redis running there?)"));
        let commands = manager(RESPONSE_TIMEOUT).await.map_err(unreachable)?;
        let blocking = manager(RESPONSE_TIMEOUT + block_for).await.map_err(unreachable)?;
        let store = RedisStore { location: location.clone(), prefix: config.key_prefix.clone(), commands, blocking };
        store.ping().await?;
        Ok(store)
    }

    /// A key under this service's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The connection for short commands (cheap to clone).
    pub fn commands(&self) -> ConnectionManager {
        self.commands.clone()
    }

    /// The connection for blocking reads.
    pub fn blocking(&self) -> ConnectionManager {
        self.blocking.clone()
    }

    /// Fails when Redis does not answer now.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut connection = self.commands();
        redis::cmd("PING").query_async::<String>(&mut connection).await.map(|_| ()).map_err(|e| self.error(e))
    }

    pub fn error(&self, error: redis::RedisError) -> RedisError {
        RedisError { location: self.location.clone(), message: error.to_string() }
    }
}

impl From<RedisError> for ApiError {
    /// The request may succeed once Redis is back: 503 with a short `Retry-After`.
    fn from(error: RedisError) -> ApiError {
        ApiError { retry_after: Some(1), ..ApiError::unavailable(format!("{error}; retry shortly")) }
    }
}
