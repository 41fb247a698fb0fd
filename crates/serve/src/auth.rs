//! The gate in front of `/api/v1`: an `X-API-Key` that matches a stored hash (unless auth is
//! disabled), then the client's rate limit. Clients are rate-limited by key name, or by address
//! when auth is disabled.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::ApiError;
use crate::server::AppState;

pub const API_KEY_HEADER: &str = "x-api-key";

/// Who is asking, for the handlers: the API key's name, or `None` when auth is disabled.
/// Jobs and feedback remember it; a job is shown only to the key that submitted it.
#[derive(Debug, Clone)]
pub struct Client {
    pub key: Option<String>,
}

pub async fn require_key(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let key_name = match &state.keys {
        Some(keys) => {
            let presented = request
                .headers()
                .get(API_KEY_HEADER)
                .ok_or_else(|| ApiError::unauthorized("missing X-API-Key header: every /api/v1 request needs an API key"))?;
            let presented = presented.to_str().map_err(|_| ApiError::unauthorized("invalid API key"))?;
            Some(keys.verify(presented.trim()).map(str::to_string).ok_or_else(|| ApiError::unauthorized("invalid API key"))?)
        }
        None => None,
    };
    let client = match &key_name {
        Some(name) => format!("key:{name}"),
        None => match request.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(address)) => format!("ip:{}", address.ip()),
            None => "anonymous".to_string(),
        },
    };
    if let Some(limiter) = &state.limiter
        && let Err(wait) = limiter.check(&client)
    {
        return Err(ApiError::rate_limited(wait));
    }
    request.extensions_mut().insert(Client { key: key_name });
    Ok(next.run(request).await)
}
