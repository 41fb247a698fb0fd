//! Feedback on captions and its way back into training. `POST /api/v1/feedback` names an answer
//! by its `request_id` (every caption answer and finished job carries one while feedback is
//! enabled) or an image by the SHA-256 of its bytes, and gives a rating (1–5) of the caption,
//! a corrected caption, or both; it is stored durably before the 201 answer. [`export`] turns
//! the stored feedback into an MS-COCO caption dataset — images plus `captions_train.json` and
//! `captions_val.json` — that `data: {format: coco}` loads for fine-tuning.
//!
//! What becomes a training caption: every correction, and the rated caption itself when its
//! rating is at least `min_rating` (default 4). Low-rated captions without a correction are left
//! out (they say what is wrong, not what is right).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::api::{self, ApiError};
use crate::auth::Client;
use crate::state::AppState;
use crate::store::{NewFeedback, Store, StoreError, StoreLocation};

/// Longest correction accepted, in characters.
const MAX_CAPTION_CHARS: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    /// From a caption answer (or a finished job).
    request_id: Option<String>,
    /// SHA-256 (hex) of an image this server captioned.
    image_sha256: Option<String>,
    /// The caption being rated; by default the request's first caption.
    caption: Option<String>,
    /// 1 (wrong) .. 5 (right).
    rating: Option<u8>,
    /// What the caption should have said.
    correction: Option<String>,
}

/// `POST /api/v1/feedback`.
pub async fn create(State(state): State<Arc<AppState>>, Extension(client): Extension<Client>, body: Bytes) -> Result<Response, ApiError> {
    if !state.config.feedback.enabled {
        return Err(ApiError::not_found("feedback is disabled on this server (`feedback.enabled: false`)"));
    }
    api::writable_store(&state).await?;
    let request: FeedbackRequest = serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::unprocessable(format!("invalid feedback: {e}")),
        _ => ApiError::bad_request(format!("the body is not valid JSON: {e}")),
    })?;
    if let Some(rating) = request.rating
        && !(1..=5).contains(&rating)
    {
        return Err(ApiError::unprocessable(format!("`rating` is {rating}; use 1 (wrong) to 5 (right)")));
    }
    let correction = request.correction.as_deref().map(str::trim).filter(|c| !c.is_empty()).map(str::to_string);
    if request.correction.is_some() && correction.is_none() {
        return Err(ApiError::unprocessable("`correction` is empty: leave it out, or say what the caption should be"));
    }
    if request.rating.is_none() && correction.is_none() {
        return Err(ApiError::unprocessable("send a `rating` (1-5), a `correction`, or both"));
    }
    for (field, text) in [("correction", &correction), ("caption", &request.caption)] {
        if let Some(text) = text
            && text.chars().count() > MAX_CAPTION_CHARS
        {
            return Err(ApiError::unprocessable(format!("`{field}` is over {MAX_CAPTION_CHARS} characters")));
        }
    }

    let store = state.store.clone();
    let owner = client.owner;
    let id = tokio::task::spawn_blocking(move || -> Result<i64, ApiError> {
        let internal = |e: StoreError| api::store_error("cannot store the feedback", e);
        let mut feedback = NewFeedback {
            caption: request.caption.clone(),
            rating: request.rating,
            correction,
            client: owner.clone(),
            ..Default::default()
        };
        match (&request.request_id, &request.image_sha256) {
            (Some(request_id), _) => {
                // Another key's request is answered as an unknown one.
                let record = store.request(request_id).map_err(internal)?.filter(|record| record.client == owner).ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no request {request_id:?} of this API key is recorded here (it may be older than `feedback.retain_requests`)"
                    ))
                })?;
                if let Some(sha) = &request.image_sha256
                    && !sha.eq_ignore_ascii_case(&record.image_sha256)
                {
                    return Err(ApiError::unprocessable("`image_sha256` is not the image of `request_id`: send one of them"));
                }
                if feedback.caption.is_none() {
                    feedback.caption = record.captions.get(0).and_then(|c| c["text"].as_str()).map(str::to_string);
                }
                feedback.request_id = Some(record.id);
                feedback.image_sha256 = record.image_sha256;
                feedback.model = Some(record.model);
            }
            (None, Some(sha)) => {
                let sha = sha.to_ascii_lowercase();
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ApiError::unprocessable("`image_sha256` must be 64 hex digits (the SHA-256 of the image file)"));
                }
                if !store.captioned_by(&sha, owner.as_deref()).map_err(internal)? {
                    return Err(ApiError::not_found("no image with that SHA-256 was captioned for this API key (or it is no longer kept)"));
                }
                if feedback.rating.is_some() && feedback.caption.is_none() {
                    return Err(ApiError::unprocessable("a `rating` by `image_sha256` needs the `caption` it rates"));
                }
                feedback.image_sha256 = sha;
            }
            (None, None) => return Err(ApiError::unprocessable("name what the feedback is about: `request_id` or `image_sha256`")),
        }
        store.add_feedback(&feedback).map_err(internal)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((StatusCode::CREATED, Json(json!({"status": "success", "feedback": {"id": id}}))).into_response())
}

/// How stored feedback becomes a dataset.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// A rated caption without a correction is kept from this rating up.
    pub min_rating: u8,
    /// Share of images put in the val split (chosen by image hash, so stable across exports).
    pub val_fraction: f64,
    /// Replace the output folder's contents.
    pub overwrite: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { min_rating: 4, val_fraction: 0.1, overwrite: false }
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    pub feedback_rows: usize,
    pub train_images: usize,
    pub val_images: usize,
    pub captions: usize,
    /// Rated below `min_rating` with no correction.
    pub left_out: usize,
    /// The `data:` section that loads it.
    pub data_yaml: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {message}", path.display())]
    Output { path: PathBuf, message: String },
    #[error("{0}")]
    Options(String),
}

/// Writes `out/images/<sha256>.<ext>`, `out/captions_train.json`, `out/captions_val.json`
/// (MS-COCO caption format) and `out/data.yaml` from the feedback in the server's store (its
/// SQLite file or PostgreSQL database).
pub fn export(store: &StoreLocation, out: &Path, options: &ExportOptions) -> Result<ExportSummary, ExportError> {
    if !(0.0..1.0).contains(&options.val_fraction) {
        return Err(ExportError::Options(format!("--val-fraction is {}; use 0 <= f < 1", options.val_fraction)));
    }
    if !(1..=5).contains(&options.min_rating) {
        return Err(ExportError::Options(format!("--min-rating is {}; ratings are 1..=5", options.min_rating)));
    }
    let output = |path: &Path, message: String| ExportError::Output { path: path.to_path_buf(), message };
    let rows = Store::open_existing(store)?.feedback_with_images()?;
    if out.exists() {
        let non_empty = std::fs::read_dir(out).map_err(|e| output(out, e.to_string()))?.next().is_some();
        if non_empty && !options.overwrite {
            return Err(output(out, "exists and is not empty: choose another --out, or pass --overwrite to replace it".into()));
        }
        if non_empty {
            std::fs::remove_dir_all(out).map_err(|e| output(out, format!("cannot clear it: {e}")))?;
        }
    }

    // Per image, in order of first feedback: its format, bytes and distinct captions.
    struct Entry {
        format: String,
        bytes: Vec<u8>,
        captions: Vec<String>,
    }
    let mut order: Vec<String> = Vec::new();
    let mut images: BTreeMap<String, Entry> = BTreeMap::new();
    let mut left_out = 0;
    for row in &rows {
        let mut kept = Vec::new();
        if let Some(correction) = &row.correction {
            kept.push(correction.trim().to_string());
        }
        match (row.rating, &row.caption) {
            (Some(rating), Some(caption)) if rating >= options.min_rating && row.correction.is_none() => {
                kept.push(caption.trim().to_string())
            }
            (Some(_), _) if row.correction.is_none() => left_out += 1,
            _ => {}
        }
        kept.retain(|caption| !caption.is_empty());
        if kept.is_empty() {
            continue;
        }
        let entry = images.entry(row.image_sha256.clone()).or_insert_with(|| {
            order.push(row.image_sha256.clone());
            Entry { format: row.format.clone(), bytes: row.image.clone(), captions: Vec::new() }
        });
        for caption in kept {
            if !entry.captions.contains(&caption) {
                entry.captions.push(caption);
            }
        }
    }

    let images_dir = out.join("images");
    std::fs::create_dir_all(&images_dir).map_err(|e| output(&images_dir, e.to_string()))?;
    let mut splits = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    let mut annotation_id = 0u64;
    let mut summary = ExportSummary {
        feedback_rows: rows.len(),
        train_images: 0,
        val_images: 0,
        captions: 0,
        left_out,
        data_yaml: out.join("data.yaml"),
    };
    for (index, sha) in order.iter().enumerate() {
        let entry = &images[sha];
        let file_name = format!("{sha}.{}", entry.format);
        let path = images_dir.join(&file_name);
        caption_data::fsutil::write_atomic(&path, &entry.bytes).map_err(|e| output(&path, e.to_string()))?;
        let image_id = index as u64 + 1;
        // The hash's first 32 bits as a fraction: the same image lands in the same split in
        // every export.
        let position = u32::from_str_radix(&sha[..8], 16).unwrap_or(0) as f64 / (u32::MAX as f64 + 1.0);
        let is_val = position < options.val_fraction;
        let (split_images, split_annotations) = &mut splits[usize::from(is_val)];
        split_images.push(json!({"id": image_id, "file_name": file_name}));
        for caption in &entry.captions {
            annotation_id += 1;
            split_annotations.push(json!({"id": annotation_id, "image_id": image_id, "caption": caption}));
            summary.captions += 1;
        }
        if is_val {
            summary.val_images += 1;
        } else {
            summary.train_images += 1;
        }
    }
    let description = format!("caption feedback exported from {}", store.describe());
    for ((split_images, split_annotations), name) in splits.into_iter().zip(["captions_train.json", "captions_val.json"]) {
        let document = json!({
            "info": {"description": description, "date_created": caption_data::time::now_rfc3339()},
            "images": split_images,
            "annotations": split_annotations,
        });
        let path = out.join(name);
        let text = serde_json::to_string_pretty(&document).map_err(|e| output(&path, e.to_string()))?;
        caption_data::fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| output(&path, e.to_string()))?;
    }
    let data_yaml = format!(
        "# The `data:` section of an experiment config that trains on this export.\n\
         data:\n  format: coco\n  images: {images}\n  train: {{ annotations: {train} }}\n  val: {{ annotations: {val} }}\n",
        images = yaml_path(&images_dir),
        train = yaml_path(&out.join("captions_train.json")),
        val = yaml_path(&out.join("captions_val.json")),
    );
    caption_data::fsutil::write_atomic(&summary.data_yaml, data_yaml.as_bytes()).map_err(|e| output(&summary.data_yaml, e.to_string()))?;
    Ok(summary)
}

/// A path as a YAML scalar: a JSON string is valid YAML, whatever characters the path holds.
fn yaml_path(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap_or_default()
}
