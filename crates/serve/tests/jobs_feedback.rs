//! Asynchronous jobs and feedback on the real server over loopback: jobs are answered 202,
//! wait for a model, survive restarts and are shown only to their submitter; feedback is
//! stored, checked, and exports as an MS-COCO caption dataset that the data crate loads.

use caption_serve_testkit as common;

use std::net::SocketAddr;
use std::path::Path;

use caption_data::{CaptionDataset, DataConfig, DataFormat, Split, SplitSource};
use caption_serve::feedback::{self, ExportOptions};
use caption_serve::store::StoreLocation;
use caption_serve::{keys, registry};
use common::{base64, get, keyed_config as config, png, post_json, send, serve, wait_for_job};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn get_job(address: SocketAddr, id: &str, key: &str) -> common::Reply {
    get(address, &format!("/api/v1/jobs/{id}"), &[("X-API-Key", key)])
}

#[test]
fn jobs_wait_for_a_model_survive_restarts_and_are_private_to_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let keys_file = dir.path().join("keys.json");
    let alice = keys::add_key(&keys_file, "alice").unwrap();
    let bob = keys::add_key(&keys_file, "bob").unwrap();
    let config = config(&keys_file);
    let red = png(40, 30, [220, 30, 30]);

    // No model yet: the job is accepted and waits in the queue.
    let server = serve(&registry, &config);
    let address = server.address();
    let reply = post_json(address, "/api/v1/jobs", Some(&alice), &json!({"image": base64(&red), "beam_size": 2}));
    assert_eq!(reply.status, 202, "{}", reply.text());
    let accepted = reply.json();
    assert_eq!((accepted["status"].as_str(), accepted["job"]["state"].as_str()), (Some("accepted"), Some("queued")));
    let id = accepted["job"]["id"].as_str().unwrap().to_string();
    assert_eq!(reply.header("location"), Some(format!("/api/v1/jobs/{id}").as_str()));
    assert_eq!(get_job(address, &id, &alice).json()["job"]["state"], "queued");
    assert_eq!(get_job(address, &id, &bob).status, 404, "another key's job is not shown");
    assert_eq!(get(address, &format!("/api/v1/jobs/{id}"), &[]).status, 401);
    assert_eq!(get_job(address, "no-such-job", &alice).status, 404);
    // Bad input is refused at once, with the same codes as /api/v1/caption.
    assert_eq!(post_json(address, "/api/v1/jobs", Some(&alice), &json!({"image": base64(b"not an image")})).status, 415);
    assert_eq!(post_json(address, "/api/v1/jobs", Some(&alice), &json!({"picture": "x"})).status, 422);
    let headers = [("Content-Type", "application/json"), ("X-API-Key", alice.as_str())];
    assert_eq!(send(address, "POST", "/api/v1/jobs", &headers, b"{not json").status, 400);
    server.stop();

    // Restarted with a model: the queued job runs.
    let checkpoint = dir.path().join("checkpoint");
    common::write_checkpoint(&checkpoint, "tiny", 0.5);
    registry::promote(&registry, &checkpoint, None).unwrap();
    let server = serve(&registry, &config);
    let address = server.address();
    let job = wait_for_job(address, &id, &alice);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["model"]["id"], "tiny-v1");
    assert_eq!(job["options"], json!({"beam_size": 2}));
    assert_eq!(job["request_id"], id.as_str(), "a job's result is named by its id in feedback");
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    let captions = job["captions"].as_array().unwrap();
    assert_eq!(captions.len(), 1);
    // The same image and options as a direct request: the same caption.
    let direct = post_json(address, "/api/v1/caption", Some(&alice), &json!({"image": base64(&red), "beam_size": 2})).json();
    assert_eq!(direct["captions"], job["captions"]);
    // With a model loaded, options it cannot honour are refused up front.
    assert_eq!(post_json(address, "/api/v1/jobs", Some(&alice), &json!({"image": base64(&red), "beam_size": 99})).status, 422);
    // Several jobs at once all finish.
    let ids: Vec<String> = (0..6u8)
        .map(|i| {
            let image = png(16, 16, [i * 40, 10, 200]);
            post_json(address, "/api/v1/jobs", Some(&bob), &json!({"image": base64(&image), "beam_size": 1})).json()["job"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for other in &ids {
        assert_eq!(wait_for_job(address, other, &bob)["state"], "succeeded");
    }
    let metrics = get(address, "/metrics", &[]).text();
    assert!(metrics.contains("caption_jobs{state=\"succeeded\"} 7") && metrics.contains("caption_jobs{state=\"queued\"} 0"), "{metrics}");
    server.stop();

    // Finished jobs are still there after another restart, unchanged.
    let server = serve(&registry, &config);
    let again = get_job(server.address(), &id, &alice).json()["job"].clone();
    assert_eq!(again, job);
    assert!(registry.join("serve.sqlite3").is_file());
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn load_export(out: &Path) -> CaptionDataset {
    let split = |name: &str| Some(SplitSource { annotations: Some(out.join(name)), ..Default::default() });
    let config = DataConfig {
        format: DataFormat::Coco,
        images: Some(out.join("images")),
        train: split("captions_train.json"),
        val: split("captions_val.json"),
        ..Default::default()
    };
    CaptionDataset::load(&config).unwrap()
}

#[test]
fn feedback_is_checked_stored_and_exported_as_a_dataset_the_loaders_read() {
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry_with_tiny_model(dir.path());
    let keys_file = dir.path().join("keys.json");
    let plain_key = keys::add_key(&keys_file, "tester").unwrap();
    let key = Some(plain_key.as_str());
    let server = serve(&registry, &config(&keys_file));
    let address = server.address();
    let (red, green, blue) = (png(24, 24, [220, 30, 30]), png(24, 24, [30, 200, 30]), png(24, 24, [30, 30, 220]));

    // Every answer is named by a request id.
    let single = post_json(address, "/api/v1/caption", key, &json!({"image": base64(&red)})).json();
    let red_request = single["request_id"].as_str().unwrap().to_string();
    assert_eq!(red_request.len(), 32);
    let batch = post_json(address, "/api/v1/caption/batch", key, &json!({"images": [base64(&green), base64(&blue)]})).json();
    let green_request = batch["results"][0]["request_id"].as_str().unwrap().to_string();
    let blue_request = batch["results"][1]["request_id"].as_str().unwrap().to_string();
    assert_ne!(green_request, blue_request);

    let feedback = |body: Value| post_json(address, "/api/v1/feedback", key, &body);
    let created = feedback(json!({"request_id": red_request, "caption": "a red square", "rating": 5}));
    assert_eq!(created.status, 201, "{}", created.text());
    assert!(created.json()["feedback"]["id"].is_i64());
    assert_eq!(feedback(json!({"request_id": green_request, "rating": 2, "correction": "a green square"})).status, 201);
    assert_eq!(feedback(json!({"request_id": blue_request, "rating": 1})).status, 201, "kept, but not exported");
    assert_eq!(feedback(json!({"image_sha256": sha256_hex(&red).to_uppercase(), "correction": "a square that is red"})).status, 201);

    // What is refused, and how.
    let refused = [
        (json!({"request_id": "unknown", "rating": 3}), 404),
        (json!({"image_sha256": "0".repeat(64), "correction": "x"}), 404),
        (json!({"image_sha256": "abc", "correction": "x"}), 422),
        (json!({"image_sha256": sha256_hex(&red), "rating": 4}), 422),
        (json!({"request_id": red_request, "rating": 0}), 422),
        (json!({"request_id": red_request, "correction": "  "}), 422),
        (json!({"request_id": red_request}), 422),
        (json!({"rating": 3}), 422),
        (json!({"request_id": red_request, "rating": 3, "stars": 5}), 422),
    ];
    for (body, status) in refused {
        let reply = feedback(body.clone());
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert_eq!(reply.json()["status"], "error");
    }
    assert_eq!(post_json(address, "/api/v1/feedback", None, &json!({"request_id": red_request, "rating": 3})).status, 401);
    let headers = [("Content-Type", "application/json"), ("X-API-Key", plain_key.as_str())];
    assert_eq!(send(address, "POST", "/api/v1/feedback", &headers, b"{\"rating\":").status, 400);
    server.stop();

    // Exported: red with its rated caption and its correction, green with its correction; blue's
    // low rating alone says nothing to train on.
    let store_file = registry.join("serve.sqlite3");
    let out = dir.path().join("export");
    let options = ExportOptions { val_fraction: 0.0, ..Default::default() };
    let summary = feedback::export(&StoreLocation::File(store_file.clone()), &out, &options).unwrap();
    assert_eq!((summary.feedback_rows, summary.train_images, summary.val_images), (4, 2, 0));
    assert_eq!((summary.captions, summary.left_out), (3, 1));
    let dataset = load_export(&out);
    let train: Vec<_> = dataset.split(Split::Train).collect();
    assert_eq!(train.len(), 2);
    assert_eq!(train[0].captions, ["a red square", "a square that is red"]);
    assert_eq!(train[1].captions, ["a green square"]);
    assert_eq!(std::fs::read(&train[0].image_path).unwrap(), red, "the image is the uploaded file");
    assert!(std::fs::read_to_string(&summary.data_yaml).unwrap().contains("format: coco"));

    // An existing export is not overwritten by accident; a val share moves whole images.
    let err = feedback::export(&StoreLocation::File(store_file.clone()), &out, &options).unwrap_err().to_string();
    assert!(err.contains("--overwrite"), "{err}");
    let everything_val = ExportOptions { val_fraction: 0.999_999, overwrite: true, ..Default::default() };
    let summary = feedback::export(&StoreLocation::File(store_file.clone()), &out, &everything_val).unwrap();
    assert_eq!((summary.train_images, summary.val_images), (0, 2));
    assert_eq!(load_export(&out).count(Split::Val), 2);
    let err = feedback::export(&StoreLocation::File(dir.path().join("missing.sqlite3")), &dir.path().join("x"), &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.sqlite3"), "{err}");
}

#[test]
fn with_feedback_disabled_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry_with_tiny_model(dir.path());
    let keys_file = dir.path().join("keys.json");
    let key = keys::add_key(&keys_file, "tester").unwrap();
    let mut config = config(&keys_file);
    config.feedback.enabled = false;
    let server = serve(&registry, &config);
    let reply = post_json(server.address(), "/api/v1/caption", Some(&key), &json!({"image": base64(&png(8, 8, [1, 2, 3]))})).json();
    assert_eq!(reply["status"], "success");
    assert!(reply.get("request_id").is_none());
    let reply = post_json(server.address(), "/api/v1/feedback", Some(&key), &json!({"image_sha256": "0".repeat(64), "correction": "x"}));
    assert_eq!(reply.status, 404);
    assert!(reply.error().contains("feedback.enabled"));
}
