//! The gate in front of `/api/v1`: an `X-API-Key` that matches a stored hash (unless auth is
//! disabled), then the client's rate limit. Clients are rate-limited by key, or by address
//! when auth is disabled; wrong keys are throttled by address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::state::AppState;

pub const API_KEY_HEADER: &str = "x-api-key";

/// Who is asking, for the handlers.
#[derive(Debug, Clone)]
pub struct Client {
    /// The API key's id (its SHA-256), or `None` when auth is disabled. Requests, jobs and
    /// feedback belong to it: another key's are answered as unknown ones are.
    pub owner: Option<String>,
}

/// The client's address: from the gateway's header when configured, else the connection's.
fn client_address(state: &AppState, request: &Request) -> String {
    let forwarded = state.config.rate_limit.client_address_header.as_deref().and_then(|name| {
        let value = request.headers().get(name)?.to_str().ok()?.trim();
        value.parse::<std::net::IpAddr>().ok()
    });
    let connected = || request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(address)| address.ip());
    match forwarded.or_else(connected) {
        Some(ip) => format!("ip:{ip}"),
        None => "anonymous".to_string(),
    }
}

pub async fn require_key(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let address = client_address(&state, &request);
    let owner = match &state.keys {
        Some(keys) => {
            // An address that sent too many wrong keys is not told whether its next one is right.
            if let Some(limiter) = &state.failed_keys
                && let Some(wait) = limiter.empty_for(&address).await?
            {
                return Err(ApiError::rate_limited(wait));
            }
            let presented = request.headers().get(API_KEY_HEADER).map(|value| value.to_str().map(str::trim));
            let identity = match presented {
                Some(Ok(presented)) => keys.verify(presented),
                _ => None,
            };
            match identity {
                Some(identity) => Some(identity.id),
                None => {
                    if let Some(limiter) = &state.failed_keys {
                        let _ = limiter.check(&address).await?;
                    }
                    return Err(match presented {
                        None => ApiError::unauthorized("missing X-API-Key header: every /api/v1 request needs an API key"),
                        Some(_) => ApiError::unauthorized("invalid API key"),
                    });
                }
            }
        }
        None => None,
    };
    let client = match &owner {
        Some(id) => format!("key:{id}"),
        None => address,
    };
    if let Some(limiter) = &state.limiter
        && let Err(wait) = limiter.check(&client).await?
    {
        return Err(ApiError::rate_limited(wait));
    }
    request.extensions_mut().insert(Client { owner });
    Ok(next.run(request).await)
}
