//! Captioning results kept for repeated requests: in this process (an LRU map, the embedded
//! default) or in the shared Redis, where every replica sees every result until its TTL
//! (`cache.ttl_seconds`) passes.

use sha2::{Digest, Sha256};

use crate::cache::LruCache;
use crate::redis_store::{RedisError, RedisStore};
use crate::worker::{Caption, DecodeOptions};

/// A cached result is only valid for the same image bytes, model version and options, and
/// only shown to the key that asked first (a hit would tell another key that the image was
/// captioned before).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The API key's id (`None` when auth is disabled).
    pub owner: Option<String>,
    /// SHA-256 of the image file's bytes.
    pub image: [u8; 32],
    /// The model version's id.
    pub model: String,
    pub options: DecodeOptions,
}

impl CacheKey {
    /// The key's fields, hashed: the name of its entry in Redis.
    fn digest(&self) -> String {
        let digest = Sha256::digest(format!("{self:?}").as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[derive(Debug)]
pub enum ResultCache {
    Local(LruCache<CacheKey, Vec<Caption>>),
    Redis { redis: RedisStore, ttl_seconds: u64 },
}

impl ResultCache {
    pub async fn get(&self, key: &CacheKey) -> Result<Option<Vec<Caption>>, RedisError> {
        match self {
            ResultCache::Local(cache) => Ok(cache.get(key)),
            ResultCache::Redis { redis, .. } => {
                let mut connection = redis.commands();
                let stored: Option<String> = redis::cmd("GET")
                    .arg(redis.key(&format!("cache:{}", key.digest())))
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| redis.error(e))?;
                // An entry this version cannot read is a miss (it is overwritten).
                Ok(stored.and_then(|text| serde_json::from_str(&text).ok()))
            }
        }
    }

    pub async fn insert(&self, key: CacheKey, captions: &[Caption]) -> Result<(), RedisError> {
        match self {
            ResultCache::Local(cache) => {
                cache.insert(key, captions.to_vec());
                Ok(())
            }
            ResultCache::Redis { redis, ttl_seconds } => {
                let text = serde_json::to_string(captions)
                    .map_err(|e| RedisError { location: redis.location.clone(), message: format!("cannot encode the result: {e}") })?;
                let mut connection = redis.commands();
                redis::cmd("SET")
                    .arg(redis.key(&format!("cache:{}", key.digest())))
                    .arg(text)
                    .arg("EX")
                    .arg(*ttl_seconds)
                    .query_async::<()>(&mut connection)
                    .await
                    .map_err(|e| redis.error(e))
            }
        }
    }
}
