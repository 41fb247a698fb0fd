//! The HTTP handlers: request parsing (JSON with base64 images, or multipart uploads), decoding
//! options, the result cache, and the JSON answers. Every failure is an [`ApiError`]: a status
//! code and `{"status": "error", "message": "..."}`.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use caption_data::image::ImageConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Client;
pub use crate::error::ApiError;
use crate::registry::{self, Version};
use crate::result_cache::CacheKey;
use crate::state::AppState;
use crate::store::{RequestRecord, Store, StoreError, new_id};
use crate::worker::{Caption, DecodeOptions, ModelWorker, SamplingOptions, SubmitError};

/// `POST /api/v1/caption` as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptionRequest {
    /// Base64 (standard alphabet; a `data:` URL prefix and line breaks are accepted).
    image: Option<String>,
    /// Fetched by the server, when `image_url.enabled` (instead of `image`).
    image_url: Option<String>,
    num_captions: Option<usize>,
    beam_size: Option<usize>,
    max_length: Option<usize>,
    sampling: Option<RawSampling>,
    /// Each caption's tokens with their probabilities.
    return_tokens: Option<bool>,
    /// Each token's attention over the encoder grid.
    return_attention: Option<bool>,
}

/// `POST /api/v1/caption/batch` as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    images: Vec<String>,
    num_captions: Option<usize>,
    beam_size: Option<usize>,
    max_length: Option<usize>,
    sampling: Option<RawSampling>,
    /// Each caption's tokens with their probabilities.
    return_tokens: Option<bool>,
    /// Each token's attention over the encoder grid.
    return_attention: Option<bool>,
}

/// Decoding options as sent; unset ones take the server's defaults. Jobs store them so.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RawOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_captions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beam_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<RawSampling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_tokens: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_attention: Option<bool>,
}

/// `"sampling": {...}`: draw captions instead of searching (any subset of the fields; `{}` is
/// plain sampling at temperature 1). Without a `seed` each request draws anew and is not cached.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSampling {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub version: u32,
    pub id: String,
}

impl From<&Version> for ModelRef {
    fn from(version: &Version) -> Self {
        ModelRef { name: version.name.clone(), version: version.version, id: version.id.clone() }
    }
}

#[derive(Debug, Serialize)]
struct CaptionResponse {
    status: &'static str,
    captions: Vec<Caption>,
    model: ModelRef,
    cached: bool,
    /// What feedback names this answer by (absent when feedback is disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct BatchItem {
    captions: Vec<Caption>,
    cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct BatchResponse {
    status: &'static str,
    results: Vec<BatchItem>,
    model: ModelRef,
}

/// The images of a request (name for messages, bytes) and its options.
pub(crate) struct Upload {
    pub images: Vec<(String, Vec<u8>)>,
    pub options: RawOptions,
    /// `image_url`, fetched by [`read_upload`] into `images`.
    url: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Shape {
    Single,
    Batch,
}

pub async fn caption(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    request: Request,
) -> Result<Response, ApiError> {
    let model = loaded_model(&state)?;
    let upload = read_upload(&state, request, Shape::Single).await?;
    let options = resolve_options(&state, &model, &upload.options)?;
    let owner = client.owner.as_deref();
    let results = caption_images(&state, &model, owner, &upload.images, options).await?;
    let mut request_ids = record_requests(&state, &model, owner, &upload.images, &results, None).await;
    let (captions, cached) = results.into_iter().next().ok_or_else(|| ApiError::internal("no result for the image"))?;
    let captions = answered(captions, &upload.options);
    let request_id = request_ids.swap_remove(0);
    Ok(Json(CaptionResponse { status: "success", captions, model: ModelRef::from(&model.info.version), cached, request_id })
        .into_response())
}

pub async fn caption_batch(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    request: Request,
) -> Result<Response, ApiError> {
    let model = loaded_model(&state)?;
    let upload = read_upload(&state, request, Shape::Batch).await?;
    let limit = state.config.limits.max_batch_images;
    if upload.images.is_empty() {
        return Err(ApiError::unprocessable("`images` is empty: send at least one image"));
    }
    if upload.images.len() > limit {
        return Err(ApiError::unprocessable(format!(
            "{} images in one request; at most {limit} (`limits.max_batch_images`)",
            upload.images.len()
        )));
    }
    let options = resolve_options(&state, &model, &upload.options)?;
    let owner = client.owner.as_deref();
    let results = caption_images(&state, &model, owner, &upload.images, options).await?;
    let request_ids = record_requests(&state, &model, owner, &upload.images, &results, None).await;
    let results = results
        .into_iter()
        .zip(request_ids)
        .map(|((captions, cached), request_id)| BatchItem { captions: answered(captions, &upload.options), cached, request_id })
        .collect();
    Ok(Json(BatchResponse { status: "success", results, model: ModelRef::from(&model.info.version) }).into_response())
}

pub async fn health() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Ready while a model is loaded. When the registry's production version failed to load, the
/// previous one still serves and the answer says so (`"status": "stale"`), so that the replica
/// stays in service while the failure is visible.
pub async fn ready(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let model = loaded_model(&state)?;
    check_store(&state, Store::check_ready).await?;
    if let Some(redis) = &state.redis {
        redis.ping().await?;
    }
    let mut body = serde_json::json!({"status": "ready", "model": ModelRef::from(&model.info.version)});
    if let Some(failure) = state.reload_failure() {
        body["status"] = "stale".into();
        body["production"] = failure.production.into();
        body["reload_error"] = failure.error.into();
    }
    Ok(Json(body).into_response())
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    text.push_str(
        "# HELP caption_serving_production Whether the loaded model is the registry's production version (0 after a failed reload).\n",
    );
    text.push_str("# TYPE caption_serving_production gauge\n");
    text.push_str(&format!("caption_serving_production {}\n", u8::from(state.reload_failure().is_none())));
    // Job counts come from the database, so they include jobs from before a restart.
    let store = state.store.clone();
    if let Ok(Ok((counts, size))) = tokio::task::spawn_blocking(move || Ok::<_, StoreError>((store.job_counts()?, store.size()?))).await {
        text.push_str("# HELP caption_jobs Asynchronous jobs in the database, by state.\n# TYPE caption_jobs gauge\n");
        for (job_state, n) in counts {
            text.push_str(&format!("caption_jobs{{state=\"{}\"}} {n}\n", job_state.as_str()));
        }
        text.push_str("# HELP caption_store_bytes Size of the server's database on disk (with its write-ahead log).\n# TYPE caption_store_bytes gauge\n");
        text.push_str(&format!("caption_store_bytes {}\n", size.bytes));
        text.push_str("# HELP caption_store_rows Rows in the server's database, by table.\n# TYPE caption_store_rows gauge\n");
        for (table, n) in [("images", size.images), ("requests", size.requests), ("jobs", size.jobs)] {
            text.push_str(&format!("caption_store_rows{{table=\"{table}\"}} {n}\n"));
        }
    }
    text.push_str("# HELP caption_decoding_pixels Pixels of the images being decoded now (limits.max_decoding_pixels caps it).\n# TYPE caption_decoding_pixels gauge\n");
    text.push_str(&format!("caption_decoding_pixels {}\n", state.decode_budget.in_use()));
    text.push_str("# HELP caption_decodes_refused_total Images answered 503 because limits.max_decoding_pixels was reached.\n# TYPE caption_decodes_refused_total counter\n");
    text.push_str(&format!("caption_decodes_refused_total {}\n", state.decode_budget.refused()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

pub async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

/// `GET /api/v1/models`: the registry's versions, the production one and the loaded one.
pub async fn models(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let registry = state.registry.clone();
    let listing = tokio::task::spawn_blocking(move || {
        Ok::<_, registry::RegistryError>((registry::list(&registry)?, registry::production(&registry)?))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let (versions, production) = listing;
    let loaded = state.model().map(|m| ModelRef::from(&m.info.version));
    Ok(Json(serde_json::json!({
        "status": "success",
        "production": production.map(|v| v.id),
        "loaded": loaded,
        "versions": versions,
    }))
    .into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint: see GET /openapi.json")
}

/// 503 when the server's database can no longer be written (its file deleted or replaced):
/// nothing is acknowledged that a restart would lose.
pub(crate) async fn writable_store(state: &AppState) -> Result<(), ApiError> {
    check_store(state, Store::check_writable).await
}

/// 503 when `check` fails on the server's database (run off the async threads).
async fn check_store(state: &AppState, check: fn(&Store) -> crate::store::Result<()>) -> Result<(), ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || check(&store))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError { retry_after: e.unavailable.then_some(1), ..ApiError::unavailable(format!("the server's database {e}")) })
}

/// A failed store operation: 503 when the database could not be reached (retry), 500 otherwise.
pub(crate) fn store_error(context: &str, error: StoreError) -> ApiError {
    match error.unavailable {
        true => ApiError { retry_after: Some(1), ..ApiError::unavailable(format!("{context}: {error}; retry shortly")) },
        false => ApiError::internal(format!("{context}: {error}")),
    }
}

pub(crate) fn loaded_model(state: &AppState) -> Result<Arc<ModelWorker>, ApiError> {
    state.model().ok_or_else(|| {
        ApiError::unavailable(format!(
            "no model loaded: the registry {} has no production version; promote one with `caption promote`",
            state.registry.display()
        ))
    })
}

/// Applies the defaults and checks the options against the config and the model.
pub(crate) fn resolve_options(state: &AppState, model: &ModelWorker, raw: &RawOptions) -> Result<DecodeOptions, ApiError> {
    let decoding = &state.config.decoding;
    let attention = raw.return_attention.unwrap_or(false);
    let model_max = model.info.max_length;
    let max_length = raw.max_length.unwrap_or(model_max);
    if max_length == 0 || max_length > model_max {
        return Err(ApiError::unprocessable(format!("`max_length` is {max_length}; this model writes 1..={model_max} words")));
    }
    if let Some(sampling) = &raw.sampling {
        if raw.beam_size.is_some_and(|b| b != 1) {
            return Err(ApiError::unprocessable("`sampling` draws captions instead of a beam search: leave out `beam_size`"));
        }
        let num_captions = raw.num_captions.unwrap_or(decoding.default_num_captions);
        if num_captions == 0 || num_captions > decoding.max_beam_size {
            return Err(ApiError::unprocessable(format!(
                "`num_captions` is {num_captions}; draw 1..={} (`decoding.max_beam_size`)",
                decoding.max_beam_size
            )));
        }
        let temperature = sampling.temperature.unwrap_or(1.0);
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(ApiError::unprocessable(format!("`sampling.temperature` is {temperature}; it must be positive")));
        }
        let top_p = sampling.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::unprocessable(format!("`sampling.top_p` is {top_p}; use (0, 1]")));
        }
        let seed = sampling.seed.unwrap_or_else(|| u64::from_str_radix(&new_id()[..16], 16).unwrap_or(0));
        let sampling = SamplingOptions::new(temperature, sampling.top_k.unwrap_or(0), top_p, seed, sampling.seed.is_some());
        return Ok(DecodeOptions { beam_size: 1, num_captions, max_length, sampling: Some(sampling), attention });
    }
    let default_beam_size = decoding.default_beam_size.unwrap_or_else(|| model.info.decoding.beam_size().min(decoding.max_beam_size));
    let beam_size = raw.beam_size.unwrap_or(default_beam_size);
    if beam_size == 0 || beam_size > decoding.max_beam_size {
        return Err(ApiError::unprocessable(format!("`beam_size` is {beam_size}; use 1..={} (1 = greedy)", decoding.max_beam_size)));
    }
    let num_captions = raw.num_captions.unwrap_or(decoding.default_num_captions.min(beam_size));
    if num_captions == 0 || num_captions > beam_size {
        return Err(ApiError::unprocessable(format!("`num_captions` is {num_captions}; use 1..={beam_size} (at most `beam_size`)")));
    }
    Ok(DecodeOptions { beam_size, num_captions, max_length, sampling: None, attention })
}

/// Reads the body (bounded by `limits.max_body_bytes`) as JSON or multipart.
pub(crate) async fn read_upload(state: &AppState, request: Request, shape: Shape) -> Result<Upload, ApiError> {
    let limit = state.config.limits.max_body_bytes;
    let too_large = || ApiError::too_large(format!("the request body is over {limit} bytes (`limits.max_body_bytes`)"));
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let mime = content_type.split(';').next().unwrap_or("").trim().to_string();
    let (parts, body) = request.into_parts();
    let body_timeout = Duration::from_millis(state.config.limits.body_timeout_ms);
    let bytes = tokio::time::timeout(body_timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} ms (`limits.body_timeout_ms`)", body_timeout.as_millis()),
            )
        })?
        .map_err(|e| if is_length_limit(&e) { too_large() } else { ApiError::bad_request(format!("cannot read the request body: {e}")) })?;
    if mime == "application/json" || mime.ends_with("+json") {
        let mut upload = parse_json(&bytes, shape)?;
        if let Some(url) = upload.url.take() {
            let fetcher = state.fetcher.as_ref().ok_or_else(|| {
                ApiError::unprocessable("this server does not fetch images (`image_url.enabled` is off): send the file itself in `image`")
            })?;
            upload.images.push(("image_url".to_string(), fetcher.fetch(&url).await?));
        }
        Ok(upload)
    } else if mime == "multipart/form-data" {
        parse_multipart(Request::from_parts(parts, Body::from(bytes)), shape).await
    } else {
        let shown = if mime.is_empty() { "none".to_string() } else { mime };
        Err(ApiError::unsupported(format!("content type {shown}: send application/json (base64 images) or multipart/form-data (files)")))
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn parse_json(bytes: &Bytes, shape: Shape) -> Result<Upload, ApiError> {
    let classify = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => ApiError::unprocessable(format!("invalid request: {e}")),
        _ => ApiError::bad_request(format!("the body is not valid JSON: {e}")),
    };
    match shape {
        Shape::Single => {
            let request: CaptionRequest = serde_json::from_slice(bytes).map_err(classify)?;
            let options = RawOptions {
                num_captions: request.num_captions,
                beam_size: request.beam_size,
                max_length: request.max_length,
                sampling: request.sampling,
                return_tokens: request.return_tokens,
                return_attention: request.return_attention,
            };
            match (request.image, request.image_url) {
                (Some(image), None) => {
                    Ok(Upload { images: vec![("image".to_string(), decode_base64(&image, "image")?)], options, url: None })
                }
                (None, Some(url)) => Ok(Upload { images: Vec::new(), options, url: Some(url) }),
                (Some(_), Some(_)) => Err(ApiError::unprocessable("send `image` or `image_url`, not both")),
                (None, None) => Err(ApiError::unprocessable("missing `image` (the file in base64) or `image_url`")),
            }
        }
        Shape::Batch => {
            let request: BatchRequest = serde_json::from_slice(bytes).map_err(classify)?;
            let images = request
                .images
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    let name = format!("images[{i}]");
                    decode_base64(text, &name).map(|bytes| (name, bytes))
                })
                .collect::<Result<_, _>>()?;
            let options = RawOptions {
                num_captions: request.num_captions,
                beam_size: request.beam_size,
                max_length: request.max_length,
                sampling: request.sampling,
                return_tokens: request.return_tokens,
                return_attention: request.return_attention,
            };
            Ok(Upload { images, options, url: None })
        }
    }
}

fn decode_base64(text: &str, name: &str) -> Result<Vec<u8>, ApiError> {
    // `data:image/png;base64,....` as browsers produce it.
    let text = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, data)| data).unwrap_or(""),
        None => text,
    };
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(ApiError::bad_request(format!("`{name}` is empty: send the image file's bytes in base64")));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(compact.as_bytes()).map_err(|e| ApiError::bad_request(format!("`{name}` is not valid base64: {e}")))
}

async fn parse_multipart(request: Request, shape: Shape) -> Result<Upload, ApiError> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {}", e.body_text())))?;
    let mut images = Vec::new();
    let mut options = RawOptions::default();
    let field_error =
        |e: axum::extract::multipart::MultipartError| ApiError::new(e.status(), format!("invalid multipart body: {}", e.body_text()));
    while let Some(field) = multipart.next_field().await.map_err(field_error)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "image" | "images" => {
                if shape == Shape::Single && !images.is_empty() {
                    return Err(ApiError::unprocessable("more than one image: use /api/v1/caption/batch for several"));
                }
                let label = match shape {
                    Shape::Single => "image".to_string(),
                    Shape::Batch => format!("images[{}]", images.len()),
                };
                let bytes = field.bytes().await.map_err(field_error)?;
                images.push((label, bytes.to_vec()));
            }
            "sampling" => {
                let text = field.text().await.map_err(field_error)?;
                let sampling = serde_json::from_str(&text).map_err(|e| {
                    ApiError::unprocessable(format!(
                        "`sampling` is not a sampling object ({{\"temperature\", \"top_k\", \"top_p\", \"seed\"}}): {e}"
                    ))
                })?;
                options.sampling = Some(sampling);
            }
            "num_captions" | "beam_size" | "max_length" => {
                let text = field.text().await.map_err(field_error)?;
                let value = text
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| ApiError::unprocessable(format!("`{name}` is {text:?}; expected a whole number")))?;
                match name.as_str() {
                    "num_captions" => options.num_captions = Some(value),
                    "beam_size" => options.beam_size = Some(value),
                    _ => options.max_length = Some(value),
                }
            }
            "return_tokens" | "return_attention" => {
                let text = field.text().await.map_err(field_error)?;
                let value = text
                    .trim()
                    .parse::<bool>()
                    .map_err(|_| ApiError::unprocessable(format!("`{name}` is {text:?}; expected true or false")))?;
                if name == "return_tokens" {
                    options.return_tokens = Some(value);
                } else {
                    options.return_attention = Some(value);
                }
            }
            other => {
                return Err(ApiError::unprocessable(format!(
                    "unknown form field {other:?}: expected image, num_captions, beam_size, max_length, sampling, return_tokens or \
                     return_attention"
                )));
            }
        }
    }
    if images.is_empty() {
        return Err(ApiError::unprocessable("no `image` file in the form"));
    }
    Ok(Upload { images, options, url: None })
}

/// Captions every image: from the cache where possible, else by the request already decoding
/// the same image with the same options, else by decoding it. The images are prepared and
/// queued concurrently, so that the model thread decodes them in one batch. Results keep the
/// images' order; `true` marks an answer that was not decoded for this request.
pub(crate) async fn caption_images(
    state: &Arc<AppState>,
    model: &Arc<ModelWorker>,
    owner: Option<&str>,
    images: &[(String, Vec<u8>)],
    options: DecodeOptions,
) -> Result<Vec<(Vec<Caption>, bool)>, ApiError> {
    let answers = images.iter().map(|(name, bytes)| caption_image(state, model, owner, name, bytes, options));
    futures_util::future::try_join_all(answers).await
}

async fn caption_image(
    state: &Arc<AppState>,
    model: &Arc<ModelWorker>,
    owner: Option<&str>,
    name: &str,
    bytes: &[u8],
    options: DecodeOptions,
) -> Result<(Vec<Caption>, bool), ApiError> {
    // Unseeded sampling is new every time: never shared.
    if !options.cacheable() {
        state.metrics.cache_miss();
        return Ok((decode_image(state, model, name, bytes, options).await?, false));
    }
    let key =
        CacheKey { owner: owner.map(str::to_string), image: Sha256::digest(bytes).into(), model: model.info.version.id.clone(), options };
    if let Some(captions) = state.cache.get(&key).await? {
        state.metrics.cache_hit();
        return Ok((captions, true));
    }
    let (captions, decoded) = state.in_flight.run(&key, || decode_image(state, model, name, bytes, options)).await?;
    if decoded {
        state.metrics.cache_miss();
        // The captions are answered even when they cannot be cached.
        if let Err(e) = state.cache.insert(key, &captions).await {
            eprintln!("caption serve: cannot cache a result: {e}");
        }
    } else {
        state.metrics.cache_hit();
    }
    Ok((captions, !decoded))
}

/// Checks, decodes and prepares one image within the decoding budget, and has the model caption it.
async fn decode_image(
    state: &Arc<AppState>,
    model: &Arc<ModelWorker>,
    name: &str,
    bytes: &[u8],
    options: DecodeOptions,
) -> Result<Vec<Caption>, ApiError> {
    let max_pixels = state.config.limits.max_pixels;
    let (width, height) = check_image(bytes, name, max_pixels)?;
    let permit = state.decode_budget.try_acquire(u64::from(width) * u64::from(height)).ok_or_else(|| ApiError {
        retry_after: Some(1),
        ..ApiError::unavailable("the server is decoding as many image pixels as `limits.max_decoding_pixels` allows: retry shortly")
    })?;
    let preprocess = model.info.preprocess.clone();
    let (name, bytes) = (name.to_string(), bytes.to_vec());
    // Image decoding is CPU work: off the async threads.
    let pixels = tokio::task::spawn_blocking(move || {
        let prepared = prepare_image(&bytes, &name, max_pixels, &preprocess);
        drop(permit);
        prepared
    })
    .await
    .map_err(|e| ApiError::internal(format!("image preparation failed: {e}")))??;
    let receiver = model.submit(pixels, options).map_err(|e| match e {
        SubmitError::Overloaded => {
            ApiError { retry_after: Some(1), ..ApiError::unavailable("the server is busy: too many images are waiting for the model") }
        }
        SubmitError::Stopped => ApiError::unavailable("the model is not running"),
    })?;
    receiver.await.map_err(|_| ApiError::unavailable("the model stopped before answering"))?.map_err(ApiError::internal)
}

/// Records each captioned image (its bytes, captions and model version) under a request id, so
/// that feedback can name it; `ids` gives the ids (a job's), otherwise new ones are drawn. No ids
/// when feedback is disabled, or when the database fails: that is logged, and the captions are
/// still answered.
pub(crate) async fn record_requests(
    state: &Arc<AppState>,
    model: &ModelWorker,
    owner: Option<&str>,
    images: &[(String, Vec<u8>)],
    results: &[(Vec<Caption>, bool)],
    ids: Option<Vec<String>>,
) -> Vec<Option<String>> {
    if !state.config.feedback.enabled {
        return vec![None; images.len()];
    }
    let ids = ids.unwrap_or_else(|| images.iter().map(|_| new_id()).collect());
    let rows: Vec<(RequestRecord, &'static str, Vec<u8>)> = images
        .iter()
        .zip(results)
        .zip(&ids)
        .map(|(((_, bytes), (captions, _)), id)| {
            let record = RequestRecord {
                id: id.clone(),
                image_sha256: sha256_hex(bytes),
                model: model.info.version.id.clone(),
                captions: serde_json::to_value(answered(captions.clone(), &RawOptions::default())).unwrap_or_default(),
                client: owner.map(str::to_string),
            };
            (record, image_extension(bytes), bytes.clone())
        })
        .collect();
    let store = state.store.clone();
    let retain = state.config.feedback.retain_requests;
    let written = tokio::task::spawn_blocking(move || {
        let borrowed: Vec<(RequestRecord, &str, &[u8])> = rows.iter().map(|(r, f, b)| (r.clone(), *f, b.as_slice())).collect();
        store.record_requests(&borrowed, retain)
    })
    .await;
    let failure = match written {
        Ok(Ok(())) => return ids.into_iter().map(Some).collect(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    eprintln!("caption serve: cannot record the request for feedback: {failure}");
    vec![None; images.len()]
}

/// The captions as answered: with each one's tokens and their probabilities only when the
/// request asked for them (`return_tokens`).
pub(crate) fn answered(mut captions: Vec<Caption>, options: &RawOptions) -> Vec<Caption> {
    if !options.return_tokens.unwrap_or(false) {
        for caption in &mut captions {
            caption.tokens = None;
        }
    }
    captions
}

/// SHA-256 in lowercase hex: how feedback and the database name an image.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The file extension of an image that passed [`check_image`].
pub(crate) fn image_extension(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => "jpg",
        Ok(image::ImageFormat::Png) => "png",
        Ok(image::ImageFormat::WebP) => "webp",
        _ => "bin",
    }
}

/// Checks the type, the header's pixel count and (for JPEG) that the file is complete, without
/// decoding the pixels; returns (width, height).
pub(crate) fn check_image(bytes: &[u8], name: &str, max_pixels: u64) -> Result<(u32, u32), ApiError> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ApiError::unsupported(format!("{name}: cannot read it: {e}")))?;
    match reader.format() {
        None => return Err(ApiError::unsupported(format!("{name}: not an image (JPEG, PNG or WebP expected)"))),
        Some(image::ImageFormat::Jpeg | image::ImageFormat::Png | image::ImageFormat::WebP) => {}
        Some(other) => return Err(ApiError::unsupported(format!("{name}: {other:?} images are not supported; send JPEG, PNG or WebP"))),
    }
    let (width, height) = reader.into_dimensions().map_err(|e| ApiError::unsupported(format!("{name}: unreadable image header: {e}")))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ApiError::too_large(format!(
            "{name}: {width}x{height} = {pixels} pixels, over the limit of {max_pixels} (`limits.max_pixels`)"
        )));
    }
    if image::guess_format(bytes).ok() == Some(image::ImageFormat::Jpeg) && !caption_data::image::jpeg_is_complete(bytes) {
        return Err(ApiError::unsupported(format!("{name}: truncated JPEG (its data ends before the end-of-image marker)")));
    }
    Ok((width, height))
}

/// Decodes an image that passed [`check_image`] and prepares it as the checkpoint was trained.
fn prepare_image(bytes: &[u8], name: &str, max_pixels: u64, preprocess: &ImageConfig) -> Result<Vec<f32>, ApiError> {
    caption_data::image::prepare_bytes(bytes, name, max_pixels, preprocess).map_err(|e| ApiError::unsupported(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_accepts_data_urls_line_breaks_and_missing_padding() {
        assert_eq!(decode_base64("aGVsbG8=", "image").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVs\nbG8", "image").unwrap(), b"hello");
        assert_eq!(decode_base64("data:image/png;base64,aGVsbG8=", "image").unwrap(), b"hello");
        assert_eq!(decode_base64("***", "image").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(decode_base64(" ", "image").unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn images_are_checked_before_decoding() {
        let config = ImageConfig { size: 8, ..Default::default() };
        // What `decode_image` runs: the header checks, then the decode.
        let checked_and_prepared = |bytes: &[u8], max_pixels| {
            check_image(bytes, "image", max_pixels).and_then(|_| prepare_image(bytes, "image", max_pixels, &config))
        };
        let err = checked_and_prepared(b"plain text", 1000).unwrap_err();
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut png = Vec::new();
        image::RgbImage::from_pixel(40, 30, image::Rgb([1, 2, 3])).write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let err = checked_and_prepared(&png, 1000).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.message.contains("40x30"), "{}", err.message);
        assert_eq!(checked_and_prepared(&png, 1200).unwrap().len(), 3 * 8 * 8);
        let truncated = &png[..png.len() / 2];
        assert_eq!(checked_and_prepared(truncated, 1200).unwrap_err().status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
