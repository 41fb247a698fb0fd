//! Asynchronous jobs, as the seed's queue had them: `POST /api/v1/jobs` checks the image and the
//! options, writes the job to the database and answers 202 with its id at once;
//! `GET /api/v1/jobs/{id}` tells its state and, once done, its captions. A background task takes
//! queued jobs oldest first (`jobs.concurrency` at a time, batched with the other requests by
//! the model thread) and writes each outcome back. Jobs survive a restart: ones that were running
//! when the server stopped are queued again at start-up. Jobs wait while no model is loaded.
//!
//! With `redis.url`, the database still holds each job, but replicas learn of jobs from the
//! shared queue ([`crate::queue`]): any replica runs any job, and the jobs of a replica that died
//! are run by another.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::{self, ApiError, ModelRef, RawOptions, Shape};
use crate::auth::Client;
use crate::queue::{Delivery, JobQueue};
use crate::state::AppState;
use crate::store::{ClaimedJob, JobRecord, JobState, new_id};

/// How often the runner looks at the queue when nothing woke it (jobs from before a restart,
/// jobs waiting for a model).
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// `POST /api/v1/jobs`: the same body as `POST /api/v1/caption`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    request: Request,
) -> Result<Response, ApiError> {
    api::writable_store(&state).await?;
    let upload = api::read_upload(&state, request, Shape::Single).await?;
    let (name, image) = upload.images.into_iter().next().ok_or_else(|| ApiError::unprocessable("no image in the request"))?;
    api::check_image(&image, &name, state.config.limits.max_pixels)?;
    // With a model loaded, bad options are refused now rather than failing the job later.
    if let Some(model) = state.model() {
        api::resolve_options(&state, &model, &upload.options)?;
    }
    let job = JobRecord {
        id: new_id(),
        client: client.owner,
        state: JobState::Queued,
        image_sha256: api::sha256_hex(&image),
        options: serde_json::to_value(&upload.options).map_err(|e| ApiError::internal(e.to_string()))?,
        created_at: caption_data::time::now_rfc3339(),
        started_at: None,
        finished_at: None,
        result: None,
        error: None,
    };
    let store = state.store.clone();
    let max_queued = state.config.jobs.max_queued;
    let format = api::image_extension(&image);
    let stored = job.clone();
    let accepted = tokio::task::spawn_blocking(move || store.add_job(&stored, format, &image, max_queued))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| api::store_error("cannot store the job", e))?;
    if !accepted {
        return Err(ApiError {
            retry_after: Some(5),
            ..ApiError::unavailable(format!("{max_queued} jobs are already waiting (`jobs.max_queued`): try again later"))
        });
    }
    if let Some(queue) = &state.queue
        && let Err(error) = queue.push(&job.id).await
    {
        // Not accepted, so not kept: the client was not given the id.
        let (store, id) = (state.store.clone(), job.id.clone());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.remove_job(&id)).await {
            eprintln!("caption serve: cannot remove job {} that the queue refused: {e}", job.id);
        }
        return Err(error.into());
    }
    state.jobs_wakeup.notify_one();
    let location = format!("/api/v1/jobs/{}", job.id);
    let mut response = (StatusCode::ACCEPTED, Json(json!({"status": "accepted", "job": job_json(&job)}))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /api/v1/jobs/{id}`. Another key's job is answered 404, as an unknown one.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let lookup = id.clone();
    let job = tokio::task::spawn_blocking(move || store.job(&lookup))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| api::store_error("cannot read the job", e))?;
    match job {
        Some(job) if job.client == client.owner => Ok(Json(json!({"status": "success", "job": job_json(&job)})).into_response()),
        _ => Err(ApiError::not_found(format!("no job {id:?} (job ids come from POST /api/v1/jobs, and only their submitter sees them)"))),
    }
}

fn job_json(job: &JobRecord) -> serde_json::Value {
    let mut value = json!({
        "id": job.id,
        "state": job.state,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "options": job.options,
    });
    if let Some(result) = &job.result {
        for key in ["captions", "model", "cached", "request_id"] {
            if let Some(field) = result.get(key) {
                value[key] = field.clone();
            }
        }
    }
    if let Some(error) = &job.error {
        value["error"] = json!(error);
    }
    value
}

/// The background runner: keeps up to `jobs.concurrency` jobs in flight, taken from the shared
/// queue when there is one, else from the store.
pub async fn run(state: Arc<AppState>) {
    match state.queue.clone() {
        Some(queue) => run_shared(state, queue).await,
        None => run_local(state).await,
    }
}

async fn run_local(state: Arc<AppState>) {
    let concurrency = state.config.jobs.concurrency;
    let mut running = tokio::task::JoinSet::new();
    loop {
        if state.model().is_some() && running.len() < concurrency {
            let store = state.store.clone();
            let room = concurrency - running.len();
            match tokio::task::spawn_blocking(move || store.claim_jobs(room)).await {
                Ok(Ok(jobs)) => {
                    for job in jobs {
                        running.spawn(run_one(state.clone(), job));
                    }
                }
                Ok(Err(e)) => eprintln!("caption serve: cannot read the job queue: {e}"),
                Err(e) => eprintln!("caption serve: cannot read the job queue: {e}"),
            }
        }
        if running.is_empty() {
            tokio::select! {
                _ = state.jobs_wakeup.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        } else {
            tokio::select! {
                _ = running.join_next() => {}
                _ = state.jobs_wakeup.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
}

async fn run_one(state: Arc<AppState>, job: ClaimedJob) {
    let outcome = caption_job(&state, &job).await;
    if let Err(e) = record_outcome(&state, &job.id, outcome).await {
        eprintln!("caption serve: cannot record the outcome of job {}: {e}", job.id);
    }
}

/// Writes a job's outcome; returns whether the model was busy (or gone), in which case the job
/// is queued again rather than failed: that is no fault of the job's.
async fn record_outcome(state: &AppState, id: &str, outcome: Result<serde_json::Value, ApiError>) -> Result<bool, String> {
    let busy = matches!(&outcome, Err(error) if error.status == StatusCode::SERVICE_UNAVAILABLE);
    if busy {
        // Not straight back: the queue would spin while the model is overloaded.
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let (store, id) = (state.store.clone(), id.to_string());
    tokio::task::spawn_blocking(move || match outcome {
        Err(_) if busy => store.requeue(&id),
        outcome => store.finish_job(&id, outcome.map_err(|e| e.message)),
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    Ok(busy)
}

/// A job's result: `{captions, model, cached, request_id}`, or why it failed.
async fn caption_job(state: &Arc<AppState>, job: &ClaimedJob) -> Result<serde_json::Value, ApiError> {
    let model = api::loaded_model(state)?;
    let raw: RawOptions =
        serde_json::from_value(job.options.clone()).map_err(|e| ApiError::internal(format!("stored options unreadable: {e}")))?;
    let options = api::resolve_options(state, &model, &raw)?;
    let images = vec![("image".to_string(), job.image.clone())];
    let owner = job.client.as_deref();
    let mut results = api::caption_images(state, &model, owner, &images, options).await?;
    let request_id = api::record_requests(state, &model, owner, &images, &results, Some(vec![job.id.clone()])).await.swap_remove(0);
    let (captions, cached) = results.pop().ok_or_else(|| ApiError::internal("no result for the image"))?;
    let captions = api::answered(captions, &raw);
    Ok(json!({"captions": captions, "model": ModelRef::from(&model.info.version), "cached": cached, "request_id": request_id}))
}

/// The runner of a replica: takes jobs from the shared queue (reclaimed ones first).
async fn run_shared(state: Arc<AppState>, queue: Arc<JobQueue>) {
    let concurrency = state.config.jobs.concurrency;
    let mut running = tokio::task::JoinSet::new();
    // Each outage is reported once, when it starts.
    let mut failing = false;
    loop {
        if state.model().is_none() || running.len() >= concurrency {
            tokio::select! {
                _ = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            continue;
        }
        match queue.take(concurrency - running.len()).await {
            Ok(deliveries) => {
                failing = false;
                for delivery in deliveries {
                    running.spawn(run_delivered(state.clone(), queue.clone(), delivery));
                }
            }
            Err(e) => {
                if !failing {
                    eprintln!("caption serve: cannot read the job queue: {e}");
                    failing = true;
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        while running.try_join_next().is_some() {}
    }
}

/// Runs one delivered job while renewing its claim, writes its outcome, then acknowledges it.
/// Nothing is acknowledged that is not written: a failure leaves the job to be delivered again.
async fn run_delivered(state: Arc<AppState>, queue: Arc<JobQueue>, delivery: Delivery) {
    let store = state.store.clone();
    let id = delivery.job.clone();
    let claimed = match tokio::task::spawn_blocking(move || store.claim_job(&id)).await {
        Ok(Ok(claimed)) => claimed,
        Ok(Err(e)) => return eprintln!("caption serve: cannot claim job {}: {e}", delivery.job),
        Err(e) => return eprintln!("caption serve: cannot claim job {}: {e}", delivery.job),
    };
    let Some(job) = claimed else {
        // Finished already (its acknowledgement was lost), or unknown.
        let _ = queue.acknowledge(&delivery).await;
        return;
    };
    let outcome = {
        let captioned = caption_job(&state, &job);
        tokio::pin!(captioned);
        let mut renew = tokio::time::interval(queue.visibility() / 3);
        renew.tick().await;
        loop {
            tokio::select! {
                outcome = &mut captioned => break outcome,
                _ = renew.tick() => {
                    if let Err(e) = queue.renew(&delivery).await {
                        eprintln!("caption serve: cannot renew the claim on job {}: {e}", job.id);
                    }
                }
            }
        }
    };
    let busy = match record_outcome(&state, &job.id, outcome).await {
        Ok(busy) => busy,
        Err(e) => return eprintln!("caption serve: cannot record the outcome of job {}: {e}", job.id),
    };
    // A busy model: the job goes to the back of the queue, for any replica.
    if busy && let Err(e) = queue.push(&job.id).await {
        return eprintln!("caption serve: cannot queue job {} again: {e}", job.id);
    }
    if let Err(e) = queue.acknowledge(&delivery).await {
        eprintln!("caption serve: cannot acknowledge job {}: {e}", job.id);
    }
}
