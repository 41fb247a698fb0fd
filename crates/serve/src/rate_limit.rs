//! Per-client token buckets: each client may make `burst` requests at once, refilled at
//! `requests_per_minute`. A refused request learns how long until its next token
//! (`Retry-After`). The buckets live in this process ([`RateLimiter`]), or in the shared Redis
//! ([`SharedRateLimiter`]), where one script reads and updates a bucket atomically so that the
//! limit holds over every replica.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;
use crate::redis_store::{RedisError, RedisStore};

/// Takes (`ARGV[3]` = 1) or only looks at (0) a token of bucket `KEYS[1]`, refilled at
/// `ARGV[1]` tokens a millisecond up to `ARGV[2]`; returns the milliseconds until a token is
/// available, 0 when one was (and, when taking, has been taken). Redis's clock, so that
/// replicas' clocks never disagree.
const TOKEN_BUCKET: &str = r"
local rate, burst, take = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(bucket[1]) or burst, tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  if take == 1 then tokens = tokens - 1 end
else
  wait = math.ceil((1 - tokens) / rate)
end
if take == 1 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
end
return wait
";

/// A client's rate limit, here or shared.
#[derive(Debug)]
pub enum ClientLimiter {
    Local(RateLimiter),
    Shared(SharedRateLimiter),
}

impl ClientLimiter {
    /// Takes a token from `client`'s bucket, or says how long until one is available.
    pub async fn check(&self, client: &str) -> Result<Result<(), Duration>, RedisError> {
        match self {
            ClientLimiter::Local(limiter) => Ok(limiter.check(client)),
            ClientLimiter::Shared(limiter) => limiter.run(client, true).await.map(|wait| wait.map_or(Ok(()), Err)),
        }
    }

    /// How long until `client`'s bucket has a token again, without taking one.
    pub async fn empty_for(&self, client: &str) -> Result<Option<Duration>, RedisError> {
        match self {
            ClientLimiter::Local(limiter) => Ok(limiter.empty_for(client)),
            ClientLimiter::Shared(limiter) => limiter.run(client, false).await,
        }
    }
}

/// Token buckets in Redis, one key per client.
#[derive(Debug)]
pub struct SharedRateLimiter {
    redis: RedisStore,
    /// Which limit (`requests`, `failed-keys`): part of every bucket's key.
    name: &'static str,
    per_millisecond: f64,
    burst: f64,
    script: redis::Script,
}

impl SharedRateLimiter {
    async fn run(&self, client: &str, take: bool) -> Result<Option<Duration>, RedisError> {
        let mut connection = self.redis.commands();
        let wait: u64 = self
            .script
            .key(self.redis.key(&format!("rate:{}:{client}", self.name)))
            .arg(self.per_millisecond)
            .arg(self.burst)
            .arg(u8::from(take))
            .invoke_async(&mut connection)
            .await
            .map_err(|e| self.redis.error(e))?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }
}

/// Beyond this many clients, buckets that have refilled completely are forgotten (they are
/// indistinguishable from new ones), so that many one-off clients cannot grow the map forever.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// The limiter of requests per client; `None` when the config turns rate limiting off.
    pub fn new(config: &RateLimitConfig) -> Option<Self> {
        RateLimiter::with_rate(config.requests_per_minute, config.burst)
    }

    /// The limiter of wrong keys per client address; `None` when the config turns it off.
    pub fn for_failed_keys(config: &RateLimitConfig) -> Option<Self> {
        RateLimiter::with_rate(config.failed_keys_per_minute, config.failed_keys_burst)
    }

    /// The same limit kept in the shared Redis, under `name`.
    pub fn shared(self, redis: RedisStore, name: &'static str) -> SharedRateLimiter {
        SharedRateLimiter {
            redis,
            name,
            per_millisecond: self.per_second / 1000.0,
            burst: self.burst,
            script: redis::Script::new(TOKEN_BUCKET),
        }
    }

    fn with_rate(per_minute: u32, burst: u32) -> Option<Self> {
        (per_minute > 0).then(|| RateLimiter {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a token from `client`'s bucket, or says how long until one is available.
    pub fn check(&self, client: &str) -> Result<(), Duration> {
        self.check_at(client, Instant::now())
    }

    /// How long until `client`'s bucket has a token again, without taking one; `None` when it
    /// has one now.
    pub fn empty_for(&self, client: &str) -> Option<Duration> {
        self.empty_for_at(client, Instant::now())
    }

    fn empty_for_at(&self, client: &str, now: Instant) -> Option<Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.get(client)?;
        let tokens = (bucket.tokens + now.saturating_duration_since(bucket.updated).as_secs_f64() * self.per_second).min(self.burst);
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / self.per_second))
    }

    fn check_at(&self, client: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_second < burst);
        }
        let bucket = buckets.entry(client.to_string()).or_insert(Bucket { tokens: self.burst, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_tokens_come_back_at_the_rate() {
        let limiter = RateLimiter::new(&RateLimitConfig { requests_per_minute: 60, burst: 2, ..Default::default() }).unwrap();
        let start = Instant::now();
        assert!(limiter.check_at("a", start).is_ok());
        assert!(limiter.check_at("a", start).is_ok());
        assert!(limiter.empty_for_at("a", start).is_some() && limiter.empty_for_at("b", start).is_none());
        let wait = limiter.check_at("a", start).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        // Other clients have their own buckets.
        assert!(limiter.check_at("b", start).is_ok());
        assert!(limiter.check_at("a", start + Duration::from_millis(1001)).is_ok());
        assert!(limiter.check_at("a", start + Duration::from_millis(1002)).is_err());
        assert!(RateLimiter::new(&RateLimitConfig { requests_per_minute: 0, burst: 1, ..Default::default() }).is_none());
    }
}
