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

pub async fn require_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Result<Response, ApiError> {
    let client = match &state.keys {
        Some(keys) => {
            let presented = request
                .headers()
                .get(API_KEY_HEADER)
                .ok_or_else(|| ApiError::unauthorized("missing X-API-Key header: every /api/v1 request needs an API key"))?;
            let presented = presented.to_str().map_err(|_| ApiError::unauthorized("invalid API key"))?;
            let name = keys.verify(presented.trim()).ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
            format!("key:{name}")
        }
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
    Ok(next.run(request).await)
}
