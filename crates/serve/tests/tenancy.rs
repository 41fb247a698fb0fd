//! What one API key can see of another's, on the real server over loopback: requests, jobs,
//! feedback and images belong to the key itself (its hash), so another key's are answered as
//! unknown ones are, and a key re-added under an old name starts with nothing.

use caption_serve_testkit as common;

use caption_serve::feedback::{self, ExportOptions};
use caption_serve::keys;
use caption_serve::store::StoreLocation;
use common::{base64, get, keyed_config as config, png, post_json, serve, wait_for_job};
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn another_keys_requests_jobs_images_and_cache_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry_with_tiny_model(dir.path());
    let keys_file = dir.path().join("keys.json");
    let alice = keys::add_key(&keys_file, "alice").unwrap();
    let mallory = keys::add_key(&keys_file, "mallory").unwrap();
    let server = serve(&registry, &config(&keys_file));
    let address = server.address();
    let red = png(24, 24, [220, 30, 30]);

    let answer = post_json(address, "/api/v1/caption", Some(&alice), &json!({"image": base64(&red)})).json();
    let request_id = answer["request_id"].as_str().unwrap().to_string();
    let job = post_json(address, "/api/v1/jobs", Some(&alice), &json!({"image": base64(&red), "beam_size": 1})).json();
    let job_id = job["job"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_for_job(address, &job_id, &alice)["state"], "succeeded");

    // Every way of naming alice's answer is, for mallory, the same 404 as a name never used.
    let unknown = post_json(address, "/api/v1/feedback", Some(&mallory), &json!({"request_id": "0".repeat(32), "rating": 1}));
    assert_eq!(unknown.status, 404);
    for id in [&request_id, &job_id] {
        let reply = post_json(address, "/api/v1/feedback", Some(&mallory), &json!({"request_id": id, "rating": 1, "correction": "spam"}));
        assert_eq!((reply.status, reply.error()), (404, unknown.error().replace(&"0".repeat(32), id)));
    }
    let image_unknown =
        post_json(address, "/api/v1/feedback", Some(&mallory), &json!({"image_sha256": "1".repeat(64), "correction": "spam"}));
    let image_known =
        post_json(address, "/api/v1/feedback", Some(&mallory), &json!({"image_sha256": sha256_hex(&red), "correction": "spam"}));
    assert_eq!(image_unknown.status, 404);
    assert_eq!((image_known.status, image_known.error()), (image_unknown.status, image_unknown.error()));
    let job_reply = get(address, &format!("/api/v1/jobs/{job_id}"), &[("X-API-Key", mallory.as_str())]);
    let no_job = get(address, &format!("/api/v1/jobs/{}", "0".repeat(32)), &[("X-API-Key", mallory.as_str())]);
    assert_eq!(job_reply.status, 404);
    assert_eq!(job_reply.error(), no_job.error().replace(&"0".repeat(32), &job_id));

    // Mallory's own caption of the same image is not a cache hit: the cache would tell that
    // someone captioned it before.
    let mine = post_json(address, "/api/v1/caption", Some(&mallory), &json!({"image": base64(&red)})).json();
    assert_eq!((mine["cached"].as_bool(), &mine["captions"]), (Some(false), &answer["captions"]));
    // Now it is mallory's image too, and feedback on it is hers.
    let own = json!({"image_sha256": sha256_hex(&red), "correction": "a red tile"});
    assert_eq!(post_json(address, "/api/v1/feedback", Some(&mallory), &own).status, 201);
    // Alice still rates her own answers.
    assert_eq!(
        post_json(address, "/api/v1/feedback", Some(&alice), &json!({"request_id": request_id, "correction": "a red square"})).status,
        201
    );
    server.stop();

    // Export: alice's correction and mallory's own; none of mallory's attempts on alice's answers.
    let out = dir.path().join("export");
    let summary = feedback::export(
        &StoreLocation::File(registry.join("serve.sqlite3")),
        &out,
        &ExportOptions { val_fraction: 0.0, ..Default::default() },
    )
    .unwrap();
    assert_eq!((summary.feedback_rows, summary.captions, summary.left_out), (2, 2, 0));

    // Alice's key removed and a new one added under her name: the new key sees nothing of the old.
    keys::remove_key(&keys_file, "alice").unwrap();
    let new_alice = keys::add_key(&keys_file, "alice").unwrap();
    let server = serve(&registry, &config(&keys_file));
    let address = server.address();
    assert_eq!(get(address, &format!("/api/v1/jobs/{job_id}"), &[("X-API-Key", new_alice.as_str())]).status, 404);
    assert_eq!(post_json(address, "/api/v1/feedback", Some(&new_alice), &json!({"request_id": request_id, "rating": 5})).status, 404);
    assert_eq!(get(address, "/api/v1/models", &[("X-API-Key", alice.as_str())]).status, 401, "the removed key");
}
