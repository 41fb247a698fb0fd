//! The real server on 127.0.0.1 (port 0), loaded from a registry holding a tiny random-weight
//! checkpoint, exercised over HTTP: every endpoint, every error code, auth, rate limits,
//! batching, caching and timeouts.

use caption_serve_testkit as common;

use std::net::SocketAddr;
use std::path::Path;

use caption_serve::config::{AuthMode, BatchingConfig, LimitsConfig, RateLimitConfig};
use caption_serve::{ServeConfig, Server, ServerOptions, keys, registry};
use common::{base64, get, multipart, png, post_json, send};
use serde_json::json;

struct Fixture {
    _dir: tempfile::TempDir,
    server: Server,
    key: String,
}

impl Fixture {
    fn address(&self) -> SocketAddr {
        self.server.address()
    }
}

/// A registry with one promoted tiny model, a key, and a server on it.
fn start(configure: impl FnOnce(&mut ServeConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry_with_tiny_model(dir.path());
    let keys_file = dir.path().join("keys.json");
    let key = keys::add_key(&keys_file, "tester").unwrap();
    let mut config = ServeConfig { port: 0, keys_file: Some(keys_file), ..Default::default() };
    // Generous unless a test is about rate limits.
    config.rate_limit = RateLimitConfig { requests_per_minute: 60_000, burst: 1_000, ..Default::default() };
    configure(&mut config);
    let server = Server::start(ServerOptions { registry, config }).unwrap();
    Fixture { _dir: dir, server, key }
}

#[test]
fn captions_images_and_answers_every_error_with_its_code() {
    let fixture = start(|config| {
        config.limits = LimitsConfig { max_body_bytes: 64 * 1024, max_pixels: 100 * 100, max_batch_images: 3, ..Default::default() };
    });
    let address = fixture.address();
    let key = Some(fixture.key.as_str());
    let red = png(48, 40, [220, 30, 30]);

    // Liveness, readiness, the API description.
    assert_eq!(get(address, "/health", &[]).json()["status"], "ok");
    let ready = get(address, "/ready", &[]);
    assert_eq!((ready.status, ready.json()["model"]["id"].as_str()), (200, Some("tiny-v1")));
    let openapi = get(address, "/openapi.json", &[]).json();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    assert!(openapi["paths"]["/api/v1/caption/batch"]["post"].is_object());

    // One image, beam search with two captions.
    let reply = post_json(address, "/api/v1/caption", key, &json!({"image": base64(&red), "beam_size": 3, "num_captions": 2}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["status"], "success");
    assert_eq!(body["model"], json!({"name": "tiny", "version": 1, "id": "tiny-v1"}));
    assert_eq!(body["cached"], false);
    let captions = body["captions"].as_array().unwrap();
    assert_eq!(captions.len(), 2);
    for caption in captions {
        let confidence = caption["confidence"].as_f64().unwrap();
        assert!(confidence > 0.0 && confidence <= 1.0, "{caption}");
        assert!(caption["text"].is_string());
    }
    // The same image and options again: from the cache, same captions.
    let again = post_json(address, "/api/v1/caption", key, &json!({"image": base64(&red), "beam_size": 3, "num_captions": 2})).json();
    assert_eq!((again["cached"].as_bool(), &again["captions"]), (Some(true), &body["captions"]));
    // Other options are another cache entry; greedy gives one caption, at most max_length words.
    let greedy = post_json(address, "/api/v1/caption", key, &json!({"image": base64(&red), "beam_size": 1, "max_length": 2})).json();
    assert_eq!(greedy["cached"], false);
    assert_eq!(greedy["captions"].as_array().unwrap().len(), 1);
    assert!(greedy["captions"][0]["text"].as_str().unwrap().split_whitespace().count() <= 2);

    // A multipart upload of the same image with the same options is a cache hit too.
    let (content_type, form) = multipart(&[("image", &red)], &[("beam_size", "3"), ("num_captions", "2")]);
    let reply = send(address, "POST", "/api/v1/caption", &[("Content-Type", &content_type), ("X-API-Key", &fixture.key)], &form);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["cached"], true);

    // A batch: results in order, the known image cached.
    let blue = png(30, 30, [20, 20, 200]);
    let reply = post_json(
        address,
        "/api/v1/caption/batch",
        key,
        &json!({"images": [base64(&blue), base64(&red)], "beam_size": 3, "num_captions": 2}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let results = reply.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2);
    assert_eq!((results[0]["cached"].as_bool(), results[1]["cached"].as_bool()), (Some(false), Some(true)));
    assert_eq!(results[1]["captions"], body["captions"]);
    let (content_type, form) = multipart(&[("images", &blue), ("images", &red)], &[]);
    let reply = send(address, "POST", "/api/v1/caption/batch", &[("Content-Type", &content_type), ("X-API-Key", &fixture.key)], &form);
    assert_eq!((reply.status, reply.json()["results"].as_array().unwrap().len()), (200, 2), "{}", reply.text());

    // 401: no key, a wrong key.
    let reply = post_json(address, "/api/v1/caption", None, &json!({"image": base64(&red)}));
    assert_eq!(reply.status, 401);
    assert!(reply.error().contains("X-API-Key"));
    let reply = post_json(address, "/api/v1/caption", Some("cap_not-a-key"), &json!({"image": base64(&red)}));
    assert_eq!((reply.status, reply.error()), (401, "invalid API key".to_string()));
    assert_eq!(get(address, "/api/v1/models", &[]).status, 401);

    // 400: malformed JSON, bad base64, an empty image.
    let reply =
        send(address, "POST", "/api/v1/caption", &[("Content-Type", "application/json"), ("X-API-Key", &fixture.key)], b"{\"image\": ");
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("not valid JSON"));
    let reply = post_json(address, "/api/v1/caption", key, &json!({"image": "***not base64***"}));
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("base64"));
    assert_eq!(post_json(address, "/api/v1/caption", key, &json!({"image": ""})).status, 400);

    // 413: a body over the limit (refused on its Content-Length, and while streaming), an image
    // whose header claims too many pixels.
    let big = vec![b'a'; 100 * 1024];
    let reply = send(address, "POST", "/api/v1/caption", &[("Content-Type", "application/json"), ("X-API-Key", &fixture.key)], &big);
    assert_eq!(reply.status, 413);
    assert!(reply.error().contains("max_body_bytes"));
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let headers = [("Content-Type", "application/json"), ("X-API-Key", fixture.key.as_str()), ("Transfer-Encoding", "chunked")];
    let reply = send(address, "POST", "/api/v1/caption", &headers, &chunked);
    assert_eq!(reply.status, 413, "{}", reply.text());
    let huge = png(200, 100, [1, 2, 3]);
    let reply = post_json(address, "/api/v1/caption", key, &json!({"image": base64(&huge)}));
    assert_eq!(reply.status, 413);
    assert!(reply.error().contains("200x100"));

    // 415: not an image, a GIF, a body that is neither JSON nor multipart.
    let reply = post_json(address, "/api/v1/caption", key, &json!({"image": base64(b"just some text")}));
    assert_eq!(reply.status, 415);
    assert!(reply.error().contains("not an image"));
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
    assert_eq!(post_json(address, "/api/v1/caption", key, &json!({"image": base64(gif)})).status, 415);
    let reply = send(address, "POST", "/api/v1/caption", &[("Content-Type", "image/png"), ("X-API-Key", &fixture.key)], &red);
    assert_eq!(reply.status, 415);
    assert!(reply.error().contains("application/json"));

    // 422: valid JSON, bad content.
    for (request, needle) in [
        (json!({"image": base64(&red), "beam_size": 0}), "beam_size"),
        (json!({"image": base64(&red), "beam_size": 11}), "beam_size"),
        (json!({"image": base64(&red), "beam_size": 2, "num_captions": 3}), "num_captions"),
        (json!({"image": base64(&red), "max_length": 0}), "max_length"),
        (json!({"image": base64(&red), "max_length": 100}), "max_length"),
        (json!({"image": base64(&red), "beam": 3}), "unknown field"),
        (json!({"image": 5}), "invalid type"),
        (json!({"picture": base64(&red)}), "unknown field"),
    ] {
        let reply = post_json(address, "/api/v1/caption", key, &request);
        assert_eq!(reply.status, 422, "{request}: {}", reply.text());
        assert!(reply.error().contains(needle), "{request}: {}", reply.text());
    }
    let four = json!({"images": [base64(&red), base64(&red), base64(&red), base64(&red)]});
    let reply = post_json(address, "/api/v1/caption/batch", key, &four);
    assert_eq!(reply.status, 422);
    assert!(reply.error().contains("max_batch_images"));
    assert_eq!(post_json(address, "/api/v1/caption/batch", key, &json!({"images": []})).status, 422);
    let (content_type, form) = multipart(&[("image", &red)], &[("beam_size", "three")]);
    let reply = send(address, "POST", "/api/v1/caption", &[("Content-Type", &content_type), ("X-API-Key", &fixture.key)], &form);
    assert_eq!(reply.status, 422);

    // The framework's own errors are JSON too.
    let reply = get(address, "/nowhere", &[]);
    assert_eq!(reply.status, 404);
    reply.error();
    let reply = get(address, "/api/v1/caption", &[("X-API-Key", &fixture.key)]);
    assert_eq!(reply.status, 405);
    reply.error();
    assert!(reply.header("allow").is_some_and(|allow| allow.contains("POST")));

    // The metrics saw all of this.
    let metrics = get(address, "/metrics", &[]);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let text = metrics.text();
    for needle in [
        "caption_http_requests_total{route=\"/api/v1/caption\",status=\"200\"} 4",
        "caption_http_requests_total{route=\"/api/v1/caption\",status=\"401\"}",
        "caption_http_requests_total{route=\"/api/v1/caption\",status=\"422\"}",
        "caption_http_request_duration_seconds_bucket{route=\"/api/v1/caption\",status=\"200\",le=\"+Inf\"} 4",
        "caption_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
        "caption_batch_size_count",
        "caption_cache_hits_total 3",
        "caption_model_info{name=\"tiny\",version=\"1\",id=\"tiny-v1\"} 1",
        "caption_model_loaded 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[test]
fn a_key_over_its_rate_limit_is_told_when_to_retry() {
    let fixture = start(|config| config.rate_limit = RateLimitConfig { requests_per_minute: 6, burst: 2, ..Default::default() });
    let address = fixture.address();
    let headers = [("X-API-Key", fixture.key.as_str())];
    assert_eq!(get(address, "/api/v1/models", &headers).status, 200);
    assert_eq!(get(address, "/api/v1/models", &headers).status, 200);
    let reply = get(address, "/api/v1/models", &headers);
    assert_eq!(reply.status, 429);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    assert!(reply.error().contains("rate limit"));
    // Unauthenticated routes are not limited.
    assert_eq!(get(address, "/health", &[]).status, 200);
}

#[test]
fn concurrent_requests_are_decoded_in_batches() {
    let fixture = start(|config| {
        config.batching = BatchingConfig { max_batch: 8, max_wait_ms: 500 };
        config.cache.entries = 0;
    });
    let address = fixture.address();
    let key = fixture.key.clone();
    let threads: Vec<_> = (0..4u8)
        .map(|i| {
            let key = key.clone();
            std::thread::spawn(move || {
                let image = png(32, 32, [i * 60, 10, 10]);
                post_json(address, "/api/v1/caption", Some(&key), &json!({"image": base64(&image), "beam_size": 2}))
            })
        })
        .collect();
    for thread in threads {
        let reply = thread.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["cached"], false);
    }
    let metrics = get(address, "/metrics", &[]).text();
    let value = |name: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {metrics}")).trim().parse().unwrap()
    };
    // Four images in fewer than four decode calls.
    let (calls, images) = (value("caption_batch_size_count "), value("caption_batch_size_sum "));
    assert_eq!(images, 4.0);
    assert!(calls < 4.0, "{calls} decode calls for 4 concurrent images:\n{metrics}");
}

#[test]
fn a_request_over_the_time_limit_is_answered_504() {
    let fixture = start(|config| {
        // The model thread waits longer for company than requests may take.
        config.batching = BatchingConfig { max_batch: 8, max_wait_ms: 2_000 };
        config.limits.request_timeout_ms = 100;
    });
    let reply = post_json(fixture.address(), "/api/v1/caption", Some(&fixture.key), &json!({"image": base64(&png(8, 8, [0, 0, 0]))}));
    assert_eq!(reply.status, 504);
    assert!(reply.error().contains("100 ms"));
}

#[test]
fn without_a_production_version_the_server_is_live_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let config = ServeConfig { port: 0, auth: AuthMode::Disabled, ..Default::default() };
    let server = Server::start(ServerOptions { registry: registry.clone(), config }).unwrap();
    let address = server.address();
    assert_eq!(get(address, "/health", &[]).status, 200);
    let reply = get(address, "/ready", &[]);
    assert_eq!(reply.status, 503);
    assert!(reply.error().contains("caption promote"));
    let reply = post_json(address, "/api/v1/caption", None, &json!({"image": base64(&png(8, 8, [0, 0, 0]))}));
    assert_eq!(reply.status, 503);
    let models = get(address, "/api/v1/models", &[]).json();
    assert_eq!(models, json!({"status": "success", "production": null, "loaded": null, "versions": []}));
    assert!(get(address, "/metrics", &[]).text().contains("caption_model_loaded 0"));
}

#[test]
fn models_lists_versions_and_a_rollback_is_served_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    for (run, cider) in [("first", 0.4), ("second", 0.6)] {
        let checkpoint = dir.path().join(run);
        common::write_checkpoint(&checkpoint, run, cider);
        registry::promote(&registry, &checkpoint, Some("lstm")).unwrap();
    }
    let config = ServeConfig { port: 0, auth: AuthMode::Disabled, ..Default::default() };
    let serve = |registry: &Path| Server::start(ServerOptions { registry: registry.to_path_buf(), config: config.clone() }).unwrap();

    let server = serve(&registry);
    let models = get(server.address(), "/api/v1/models", &[]).json();
    assert_eq!(models["production"], "lstm-v2");
    assert_eq!(models["loaded"]["id"], "lstm-v2");
    let versions = models["versions"].as_array().unwrap();
    assert_eq!(versions.iter().map(|v| v["id"].as_str().unwrap()).collect::<Vec<_>>(), ["lstm-v1", "lstm-v2"]);
    assert_eq!(versions[1]["metrics"]["val/CIDEr"], 0.6);
    assert_eq!(versions[0]["run_name"], "first");
    let image = base64(&png(16, 16, [9, 9, 9]));
    assert_eq!(post_json(server.address(), "/api/v1/caption", None, &json!({"image": image})).json()["model"]["id"], "lstm-v2");
    server.stop();

    assert_eq!(registry::rollback(&registry).unwrap().id, "lstm-v1");
    let server = serve(&registry);
    let models = get(server.address(), "/api/v1/models", &[]).json();
    assert_eq!((models["production"].as_str(), models["loaded"]["id"].as_str()), (Some("lstm-v1"), Some("lstm-v1")));
    assert_eq!(post_json(server.address(), "/api/v1/caption", None, &json!({"image": image})).json()["model"]["version"], 1);
}

#[test]
fn start_up_problems_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry_with_tiny_model(dir.path());

    // Auth on, no keys file.
    let config = ServeConfig { port: 0, ..Default::default() };
    let err = Server::start(ServerOptions { registry: registry.clone(), config }).unwrap_err().to_string();
    assert!(err.contains("keys.json") && err.contains("caption serve keys add"), "{err}");

    // No registry at all.
    let config = ServeConfig { port: 0, auth: AuthMode::Disabled, ..Default::default() };
    let err = Server::start(ServerOptions { registry: dir.path().join("nothing"), config: config.clone() }).unwrap_err().to_string();
    assert!(err.contains("no model registry"), "{err}");

    // The port is taken.
    let first = Server::start(ServerOptions { registry: registry.clone(), config: config.clone() }).unwrap();
    let taken = ServeConfig { port: first.address().port(), ..config };
    let err = Server::start(ServerOptions { registry, config: taken }).unwrap_err().to_string();
    assert!(err.contains("cannot listen") && err.contains("--port"), "{err}");
}

/// Polls `/ready` until it names `id` (or `None`: until it is 503); false after 20 s.
fn wait_for_model(address: SocketAddr, id: Option<&str>) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let reply = get(address, "/ready", &[]);
        let serving = (reply.status == 200).then(|| reply.json()["model"]["id"].as_str().map(str::to_string)).flatten();
        if serving.as_deref() == id {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[test]
fn promotions_and_rollbacks_are_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let config = ServeConfig { port: 0, auth: AuthMode::Disabled, reload_interval_ms: 20, ..Default::default() };
    let server = Server::start(ServerOptions { registry: registry.clone(), config }).unwrap();
    let address = server.address();
    assert!(wait_for_model(address, None));

    // The first promotion makes an empty server ready.
    let checkpoint = dir.path().join("checkpoint");
    common::write_checkpoint(&checkpoint, "tiny", 0.5);
    registry::promote(&registry, &checkpoint, None).unwrap();
    assert!(wait_for_model(address, Some("tiny-v1")), "tiny-v1 never served");
    let image = json!({"image": base64(&png(16, 16, [5, 5, 5]))});
    assert_eq!(post_json(address, "/api/v1/caption", None, &image).json()["model"]["id"], "tiny-v1");

    registry::promote(&registry, &checkpoint, None).unwrap();
    assert!(wait_for_model(address, Some("tiny-v2")), "tiny-v2 never served");
    let reply = post_json(address, "/api/v1/caption", None, &image).json();
    // A new version does not answer from the previous version's cache.
    assert_eq!((reply["model"]["id"].as_str(), reply["cached"].as_bool()), (Some("tiny-v2"), Some(false)));
    assert!(get(address, "/metrics", &[]).text().contains("caption_model_info{name=\"tiny\",version=\"2\",id=\"tiny-v2\"} 1"));

    registry::rollback(&registry).unwrap();
    assert!(wait_for_model(address, Some("tiny-v1")), "the rollback to tiny-v1 was never served");
    // Back on v1, its cached result is valid again.
    assert_eq!(post_json(address, "/api/v1/caption", None, &image).json()["cached"], true);
}

#[test]
fn a_promotion_under_continuous_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let checkpoint = dir.path().join("checkpoint");
    common::write_checkpoint(&checkpoint, "tiny", 0.5);
    registry::promote(&registry, &checkpoint, None).unwrap();
    let config = ServeConfig {
        port: 0,
        auth: AuthMode::Disabled,
        reload_interval_ms: 20,
        // The load is the point here, not the limit.
        rate_limit: RateLimitConfig { requests_per_minute: 0, ..Default::default() },
        ..Default::default()
    };
    let server = Server::start(ServerOptions { registry: registry.clone(), config }).unwrap();
    let address = server.address();
    assert!(wait_for_model(address, Some("tiny-v1")));

    // One client sends requests back to back (bounded in count and time) while v2 is promoted.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut replies: Vec<(u16, String)> = Vec::new();
            for i in 0..5_000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) || std::time::Instant::now() > deadline {
                    break;
                }
                // Different pixels each time, so that the model (not the cache) answers.
                let image = json!({"image": base64(&png(16, 16, [(i % 251) as u8, (i / 251 % 251) as u8, 7]))});
                let reply = post_json(address, "/api/v1/caption", None, &image);
                let id = if reply.status == 200 { reply.json()["model"]["id"].as_str().unwrap_or("").to_string() } else { reply.text() };
                replies.push((reply.status, id));
            }
            replies
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    registry::promote(&registry, &checkpoint, None).unwrap();
    assert!(wait_for_model(address, Some("tiny-v2")), "tiny-v2 never served");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let replies = client.join().unwrap();

    let failures: Vec<&(u16, String)> = replies.iter().filter(|(status, _)| *status != 200).collect();
    assert!(failures.is_empty(), "{} of {} requests failed: {:?}", failures.len(), replies.len(), &failures[..failures.len().min(3)]);
    let first_v2 = replies.iter().position(|(_, id)| id == "tiny-v2").expect("no response from tiny-v2");
    assert!(first_v2 > 0, "no response from tiny-v1 before the promotion");
    assert!(replies[..first_v2].iter().all(|(_, id)| id == "tiny-v1"), "unexpected version before the swap");
    assert!(replies[first_v2..].iter().all(|(_, id)| id == "tiny-v2"), "responses went back to tiny-v1 after the swap");
}

#[test]
fn sampling_draws_captions_reproducibly_with_a_seed() {
    let fixture = start(|_| {});
    let address = fixture.address();
    let key = Some(fixture.key.as_str());
    let image = base64(&png(32, 32, [120, 40, 200]));
    let sample = |sampling: serde_json::Value, extra: serde_json::Value| {
        let mut body = json!({"image": image, "sampling": sampling, "num_captions": 3});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post_json(address, "/api/v1/caption", key, &body)
    };

    let first = sample(json!({"seed": 7, "temperature": 1.5}), json!({}));
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    assert_eq!(first["captions"].as_array().unwrap().len(), 3, "num_captions draws");
    let again = sample(json!({"seed": 7, "temperature": 1.5}), json!({})).json();
    assert_eq!((again["cached"].as_bool(), &again["captions"]), (Some(true), &first["captions"]));
    // Seeds change the draws (the tiny random model spreads its probability widely).
    let drawn: std::collections::BTreeSet<String> =
        (0..6).map(|seed| sample(json!({"seed": seed, "temperature": 1.5}), json!({})).json()["captions"].to_string()).collect();
    assert!(drawn.len() > 1, "{drawn:?}");
    // Without a seed: drawn afresh, never from the cache.
    for _ in 0..2 {
        assert_eq!(sample(json!({}), json!({})).json()["cached"], false);
    }
    // Nucleus and top-k narrow the choice; top_k 1 is greedy decoding.
    let greedy = post_json(address, "/api/v1/caption", key, &json!({"image": image, "beam_size": 1})).json();
    let top1 = sample(json!({"top_k": 1, "seed": 3}), json!({"num_captions": 1})).json();
    assert_eq!(top1["captions"][0]["text"], greedy["captions"][0]["text"]);

    for (sampling, extra, needle) in [
        (json!({"temperature": 0}), json!({}), "temperature"),
        (json!({"top_p": 1.5}), json!({}), "top_p"),
        (json!({"seed": 1}), json!({"beam_size": 3}), "beam_size"),
        (json!({"seed": 1}), json!({"num_captions": 0}), "num_captions"),
        (json!({"temprature": 1}), json!({}), "unknown field"),
    ] {
        let reply = sample(sampling.clone(), extra);
        assert_eq!(reply.status, 422, "{sampling}: {}", reply.text());
        assert!(reply.error().contains(needle), "{sampling}: {}", reply.error());
    }
}

#[test]
fn tokens_probabilities_and_attention_are_answered_when_asked_for() {
    let fixture = start(|_| {});
    let address = fixture.address();
    let key = Some(fixture.key.as_str());
    let image = base64(&png(30, 30, [90, 160, 20]));
    let asked =
        post_json(address, "/api/v1/caption", key, &json!({"image": image, "beam_size": 3, "num_captions": 2, "return_tokens": true}));
    assert_eq!(asked.status, 200, "{}", asked.text());
    let asked = asked.json();
    for caption in asked["captions"].as_array().unwrap() {
        common::check_token_probabilities(caption);
    }
    // The same answer from the cache without them, unless asked again.
    let plain = post_json(address, "/api/v1/caption", key, &json!({"image": image, "beam_size": 3, "num_captions": 2})).json();
    assert_eq!(plain["cached"], true);
    assert!(plain["captions"].as_array().unwrap().iter().all(|c| c.get("tokens").is_none()), "{plain}");
    assert_eq!(plain["captions"][0]["text"], asked["captions"][0]["text"]);
    // Batches, multipart forms and sampling too.
    let batch = post_json(address, "/api/v1/caption/batch", key, &json!({"images": [image], "return_tokens": true})).json();
    common::check_token_probabilities(&batch["results"][0]["captions"][0]);
    let (content_type, body) = multipart(&[("image", &png(20, 20, [1, 2, 3]))], &[("return_tokens", "true")]);
    let form =
        send(address, "POST", "/api/v1/caption", &[("Content-Type", content_type.as_str()), ("X-API-Key", fixture.key.as_str())], &body);
    common::check_token_probabilities(&form.json()["captions"][0]);
    let sampled = json!({"image": image, "num_captions": 3, "sampling": {"seed": 5}, "return_tokens": true});
    for caption in post_json(address, "/api/v1/caption", key, &sampled).json()["captions"].as_array().unwrap() {
        common::check_token_probabilities(caption);
    }
    // A job keeps the option: its captions come with their tokens once it is done.
    let job = post_json(address, "/api/v1/jobs", key, &json!({"image": image, "beam_size": 2, "return_tokens": true})).json();
    let done = common::wait_for_job(address, job["job"]["id"].as_str().unwrap(), &fixture.key);
    assert_eq!(done["state"], "succeeded", "{done}");
    common::check_token_probabilities(&done["captions"][0]);
    // Attention: for each scored token, weights over the grid that sum to 1; only when asked.
    let attended = post_json(address, "/api/v1/caption", key, &json!({"image": image, "return_tokens": true, "return_attention": true}));
    assert_eq!(attended.status, 200, "{}", attended.text());
    let caption = &attended.json()["captions"][0];
    let attention = &caption["attention"];
    let cells = attention["rows"].as_u64().unwrap() * attention["columns"].as_u64().unwrap();
    let weights = attention["weights"].as_array().unwrap();
    assert_eq!(weights.len(), caption["tokens"].as_array().unwrap().len(), "{caption}");
    for row in weights {
        let row: Vec<f64> = row.as_array().unwrap().iter().map(|w| w.as_f64().unwrap()).collect();
        assert_eq!(row.len() as u64, cells);
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{row:?}");
    }
    assert!(asked["captions"].as_array().unwrap().iter().all(|c| c.get("attention").is_none()), "{asked}");
    let (content_type, body) = multipart(&[("image", &png(20, 20, [1, 2, 3]))], &[("return_attention", "true")]);
    let form =
        send(address, "POST", "/api/v1/caption", &[("Content-Type", content_type.as_str()), ("X-API-Key", fixture.key.as_str())], &body);
    assert!(form.json()["captions"][0]["attention"]["weights"].is_array(), "{}", form.text());
    let (content_type, body) = multipart(&[("image", &png(20, 20, [1, 2, 3]))], &[("return_tokens", "maybe")]);
    let bad =
        send(address, "POST", "/api/v1/caption", &[("Content-Type", content_type.as_str()), ("X-API-Key", fixture.key.as_str())], &body);
    assert_eq!(bad.status, 422);
}
