//! The real server over loopback against what a hostile or careless client tries: slow request
//! heads, guessed keys, truncated images, tampered model versions, a deleted database, storage
//! that would grow without bound, and identical requests sent at once.

use caption_serve_testkit as common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caption_serve::config::{AuthMode, RateLimitConfig};
use caption_serve::{ServeConfig, Server, ServerOptions, keys, registry};
use common::{base64, get, png, post_json};
use serde_json::{Value, json};

struct Fixture {
    dir: tempfile::TempDir,
    registry: PathBuf,
    keys_file: PathBuf,
    key: String,
    server: Server,
}

impl Fixture {
    fn address(&self) -> SocketAddr {
        self.server.address()
    }

    fn key(&self) -> Option<&str> {
        Some(self.key.as_str())
    }
}

/// A registry with the tiny model in production, one key, and a server with `configure`d settings.
fn start(configure: impl FnOnce(&mut ServeConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry_with_tiny_model(dir.path());
    let keys_file = dir.path().join("keys.json");
    let key = keys::add_key(&keys_file, "tester").unwrap();
    let mut config = ServeConfig { port: 0, keys_file: Some(keys_file.clone()), ..Default::default() };
    config.rate_limit = RateLimitConfig { requests_per_minute: 60_000, burst: 1_000, ..Default::default() };
    configure(&mut config);
    let server = Server::start(ServerOptions { registry: registry.clone(), config }).unwrap();
    Fixture { dir, registry, keys_file, key, server }
}

/// A value from the Prometheus text, by the start of its line.
fn metric(address: SocketAddr, line_start: &str) -> f64 {
    let text = get(address, "/metrics", &[]).text();
    let line = text.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("no {line_start} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Whether the server closed `stream` (end of stream or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // An answer (408, say) before closing is fine.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_request_heads_are_cut_off_and_connections_are_capped() {
    let fixture = start(|config| {
        config.limits.header_timeout_ms = 500;
        config.limits.max_connections = 8;
    });
    let address = fixture.address();
    // Thirty connections that start a request head and never finish it.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..30)
        .map(|_| {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(b"POST /api/v1/caption HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
            stream
        })
        .collect();
    for stream in &mut slow {
        assert!(closed_within(stream, Duration::from_secs(10)), "a slow connection was held");
    }
    // Eight at a time, 500 ms each: about two seconds for thirty, not forever.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(get(address, "/health", &[]).status, 200);

    // A client trickling its head byte by byte is cut off too.
    let mut trickle = TcpStream::connect(address).unwrap();
    let started = Instant::now();
    for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if trickle.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(closed_within(&mut trickle, Duration::from_secs(5)));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[test]
fn a_body_that_does_not_arrive_is_answered_408() {
    let fixture = start(|config| config.limits.body_timeout_ms = 300);
    let mut stream = TcpStream::connect(fixture.address()).unwrap();
    let head = format!(
        "POST /api/v1/caption HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nX-API-Key: {}\r\nContent-Length: 5000\r\n\r\n{{\"image\": \"",
        fixture.key
    );
    stream.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("limits.body_timeout_ms"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[test]
fn connections_over_the_cap_wait_for_a_free_one() {
    let fixture = start(|config| {
        config.limits.header_timeout_ms = 30_000;
        config.limits.max_connections = 3;
    });
    let address = fixture.address();
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(address).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // The fourth is not served while three connections are open...
    let mut fourth = TcpStream::connect(address).unwrap();
    fourth.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    fourth.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut answer = Vec::new();
    assert!(fourth.read_to_end(&mut answer).is_err() && answer.is_empty(), "served over the cap");
    // ... and is, once one closes.
    drop(idle);
    fourth.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    fourth.read_to_end(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn guessing_keys_is_throttled_and_the_keys_file_is_followed() {
    let fixture = start(|config| config.rate_limit.failed_keys_burst = 5);
    let address = fixture.address();
    let models = |key: &str| get(address, "/api/v1/models", &[("X-API-Key", key)]);
    for i in 0..5 {
        assert_eq!(models(&format!("cap_guess{i}")).status, 401);
    }
    // Throttled now, right key or not: the address cannot learn which guess was right.
    let throttled = models("cap_guess-again");
    assert_eq!(throttled.status, 429);
    assert!(throttled.header("retry-after").is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    assert_eq!(models(&fixture.key).status, 429);

    // A key added to the file works without a restart; a removed one stops working.
    let fixture = start(|_| {});
    let address = fixture.address();
    let models = |key: &str| get(address, "/api/v1/models", &[("X-API-Key", key)]);
    let added = keys::add_key(&fixture.keys_file, "added").unwrap();
    assert_eq!(models(&added).status, 200);
    keys::remove_key(&fixture.keys_file, "tester").unwrap();
    assert_eq!(models(&fixture.key).status, 401);
    assert_eq!(models(&added).status, 200);
}

#[test]
fn behind_a_gateway_wrong_keys_are_throttled_per_client_address() {
    // Without `client_address_header`, a client cannot escape the throttle by naming an address.
    let fixture = start(|config| config.rate_limit.failed_keys_burst = 2);
    let address = fixture.address();
    let guess = |from: &str| get(address, "/api/v1/models", &[("X-API-Key", "cap_guess"), ("X-Real-IP", from)]).status;
    assert_eq!((guess("10.0.0.1"), guess("10.0.0.2")), (401, 401));
    assert_eq!(guess("10.0.0.3"), 429);

    // With it (behind nginx, which sets the header), each client has its own bucket: one
    // client guessing keys does not lock out the others, who all arrive from the gateway.
    let fixture = start(|config| {
        config.rate_limit.failed_keys_burst = 2;
        config.rate_limit.client_address_header = Some("x-real-ip".into());
    });
    let address = fixture.address();
    let models = |key: &str, from: &str| get(address, "/api/v1/models", &[("X-API-Key", key), ("X-Real-IP", from)]).status;
    assert_eq!((models("cap_guess", "10.0.0.1"), models("cap_guess", "10.0.0.1")), (401, 401));
    assert_eq!(models(&fixture.key, "10.0.0.1"), 429);
    assert_eq!(models(&fixture.key, "10.0.0.2"), 200);
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]));
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85).encode_image(&image).unwrap();
    bytes
}

#[test]
fn truncated_images_are_refused_and_the_schema_holds() {
    let fixture = start(|_| {});
    let address = fixture.address();
    let whole = jpeg(320, 240);
    assert_eq!(post_json(address, "/api/v1/caption", fixture.key(), &json!({"image": base64(&whole)})).status, 200);
    let cut = &whole[..whole.len() / 3];
    for route in ["/api/v1/caption", "/api/v1/jobs"] {
        let reply = post_json(address, route, fixture.key(), &json!({"image": base64(cut)}));
        assert_eq!(reply.status, 415, "{route}: {}", reply.text());
        assert!(reply.error().contains("truncated"), "{}", reply.error());
    }
    // A large JPEG is decoded at reduced scale: captioned, not refused.
    let large = jpeg(2400, 1800);
    assert_eq!(post_json(address, "/api/v1/caption", fixture.key(), &json!({"image": base64(&large)})).status, 200);

    let openapi = get(address, "/openapi.json", &[]).json();
    let properties = &openapi["paths"]["/api/v1/caption"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"];
    assert!(properties["image_url"]["description"].as_str().unwrap().contains("image_url.enabled"), "{properties}");

    // Sampled captions come best first, as the schema says of every caption list.
    for seed in 0..4 {
        let body = json!({"image": base64(&png(20, 20, [9, 80, 160])), "num_captions": 5, "sampling": {"seed": seed, "temperature": 2.0}});
        let captions = post_json(address, "/api/v1/caption", fixture.key(), &body).json()["captions"].clone();
        let confidences: Vec<f64> = captions.as_array().unwrap().iter().map(|c| c["confidence"].as_f64().unwrap()).collect();
        assert!(confidences.windows(2).all(|w| w[0] >= w[1]), "seed {seed}: {confidences:?}");
    }
}

#[test]
fn identical_concurrent_requests_are_decoded_once() {
    let fixture = start(|_| {});
    let address = fixture.address();
    let body = json!({"image": base64(&png(40, 40, [200, 100, 50])), "beam_size": 3});
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (barrier, body, key) = (barrier.clone(), body.clone(), fixture.key.clone());
            std::thread::spawn(move || {
                barrier.wait();
                post_json(address, "/api/v1/caption", Some(&key), &body).json()
            })
        })
        .collect();
    let replies: Vec<Value> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(replies.iter().all(|r| r["captions"] == replies[0]["captions"]));
    assert_eq!(replies.iter().filter(|r| r["cached"] == false).count(), 1, "{replies:?}");
    assert_eq!(metric(address, "caption_cache_misses_total"), 1.0);
    assert_eq!(metric(address, "caption_batch_size_count"), 1.0, "the model decoded the image once");
}

/// Overwrites `len` bytes in the middle of `path` (a read-only registry file) with other bytes.
fn tamper(path: &Path, len: usize) {
    let mut permissions = std::fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(path, permissions).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    let start = bytes.len() / 2;
    for (i, byte) in bytes[start..start + len].iter_mut().enumerate() {
        *byte = byte.wrapping_add(1 + (i % 200) as u8);
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn tampered_versions_are_never_served() {
    let fixture = start(|config| {
        config.auth = AuthMode::Disabled;
        config.reload_interval_ms = 20;
    });
    let address = fixture.address();
    let registry = &fixture.registry;
    let v1 = registry::production(registry).unwrap().unwrap();
    assert!(v1.files.contains_key("model.safetensors"), "{:?}", v1.files);
    let checkpoint = fixture.dir.path().join("checkpoint");
    let v2 = registry::promote(registry, &checkpoint, None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(address, "/ready", &[]).json()["model"]["id"] != "tiny-v2" {
        assert!(Instant::now() < deadline, "tiny-v2 never served");
        std::thread::sleep(Duration::from_millis(20));
    }

    // v1's weights changed in place (same size): a rollback to it is refused, production stays.
    tamper(&v1.dir(registry).join("model.safetensors"), 2_000);
    let err = registry::rollback(registry).unwrap_err().to_string();
    assert!(err.contains("tiny-v1") && err.contains("model.safetensors") && err.contains("SHA-256"), "{err}");
    assert_eq!(registry::production(registry).unwrap().unwrap().id, "tiny-v2");

    // Production pointed at it by hand: the server keeps serving v2 and says it is stale.
    std::fs::write(registry.join("production"), "tiny-v1\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let ready = get(address, "/ready", &[]).json();
        if ready["status"] == "stale" {
            break ready;
        }
        assert!(Instant::now() < deadline, "the failed reload never showed: {ready}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((ready["model"]["id"].as_str(), ready["production"].as_str()), (Some("tiny-v2"), Some("tiny-v1")));
    assert!(ready["reload_error"].as_str().unwrap().contains("SHA-256"), "{ready}");
    assert_eq!(metric(address, "caption_serving_production"), 0.0);
    let reply = post_json(address, "/api/v1/caption", None, &json!({"image": base64(&png(16, 16, [1, 2, 3]))}));
    assert_eq!(reply.json()["model"]["id"], "tiny-v2");

    // Back to a sound version: stale no more.
    std::fs::write(registry.join("production"), "tiny-v2\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(address, "/ready", &[]).json()["status"] != "ready" {
        assert!(Instant::now() < deadline, "still stale");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(address, "caption_serving_production"), 1.0);

    // A truncated version cannot be rolled back to either, and a restart on a damaged
    // production version is a clear error.
    let v3 = registry::promote(registry, &checkpoint, None).unwrap();
    let weights = v2.dir(registry).join("model.safetensors");
    tamper(&weights, 16);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    assert!(registry::rollback(registry).unwrap_err().to_string().contains("tiny-v2"));
    assert_eq!(registry::production(registry).unwrap().unwrap().id, v3.id);
    std::fs::write(registry.join("production"), "tiny-v2\n").unwrap();
    let config = ServeConfig { port: 0, auth: AuthMode::Disabled, ..Default::default() };
    let err = Server::start(ServerOptions { registry: registry.clone(), config }).unwrap_err().to_string();
    assert!(err.contains("tiny-v2") && err.contains("damaged"), "{err}");
}

#[test]
fn a_deleted_database_makes_the_server_unready_instead_of_losing_work() {
    let fixture = start(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let mut config = ServeConfig { port: 0, keys_file: Some(fixture.keys_file.clone()), ..Default::default() };
    config.store_file = Some(store_dir.join("serve.sqlite3"));
    let server = Server::start(ServerOptions { registry: fixture.registry.clone(), config }).unwrap();
    let address = server.address();
    let image = json!({"image": base64(&png(16, 16, [4, 5, 6]))});
    assert_eq!(get(address, "/ready", &[]).status, 200);
    assert_eq!(post_json(address, "/api/v1/jobs", fixture.key(), &image).status, 202);

    std::fs::remove_dir_all(&store_dir).unwrap();
    let ready = get(address, "/ready", &[]);
    assert_eq!(ready.status, 503);
    assert!(ready.error().contains("deleted or replaced"), "{}", ready.error());
    assert_eq!(post_json(address, "/api/v1/jobs", fixture.key(), &image).status, 503, "a job it could not keep");
    let feedback = json!({"image_sha256": "0".repeat(64), "rating": 3});
    assert_eq!(post_json(address, "/api/v1/feedback", fixture.key(), &feedback).status, 503);
    assert_eq!(get(address, "/health", &[]).status, 200, "alive, just not ready");
}

#[test]
fn stored_requests_are_bounded_by_count() {
    let fixture = start(|config| config.feedback.retain_requests = 3);
    let address = fixture.address();
    let mut rated = String::new();
    for i in 0..10u8 {
        let reply = post_json(address, "/api/v1/caption", fixture.key(), &json!({"image": base64(&png(12, 12, [i, 1, 2]))})).json();
        if i == 0 {
            rated = reply["request_id"].as_str().unwrap().to_string();
            let feedback = json!({"request_id": rated, "correction": "a dark square"});
            assert_eq!(post_json(address, "/api/v1/feedback", fixture.key(), &feedback).status, 201);
        }
    }
    // The newest three, plus the one feedback names.
    assert_eq!(metric(address, "caption_store_rows{table=\"requests\"}"), 4.0);
    assert_eq!(metric(address, "caption_store_rows{table=\"images\"}"), 4.0);
    assert!(metric(address, "caption_store_bytes") > 0.0);
    assert_eq!(post_json(address, "/api/v1/feedback", fixture.key(), &json!({"request_id": rated, "rating": 5})).status, 201);
}

#[test]
fn stored_requests_and_finished_jobs_expire() {
    let fixture = start(|config| {
        config.feedback.retain_hours = 0.001; // 3.6 s
        config.jobs.retain_hours = 0.001;
    });
    let address = fixture.address();
    let reply = post_json(address, "/api/v1/caption", fixture.key(), &json!({"image": base64(&png(12, 12, [0, 1, 2]))})).json();
    let rated = reply["request_id"].as_str().unwrap().to_string();
    let feedback = json!({"request_id": rated, "correction": "a dark square"});
    assert_eq!(post_json(address, "/api/v1/feedback", fixture.key(), &feedback).status, 201);
    post_json(address, "/api/v1/caption", fixture.key(), &json!({"image": base64(&png(12, 12, [9, 1, 2]))}));
    let job = post_json(address, "/api/v1/jobs", fixture.key(), &json!({"image": base64(&png(12, 12, [50, 1, 2]))})).json();
    let job_url = format!("/api/v1/jobs/{}", job["job"]["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = get(address, &job_url, &[("X-API-Key", &fixture.key)]);
        // Finished, then forgotten.
        if reply.status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the job never expired: {}", reply.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(address, "caption_store_rows{table=\"requests\"}") != 1.0 {
        assert!(Instant::now() < deadline, "old requests were never pruned");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(address, "caption_store_rows{table=\"images\"}"), 1.0);
    assert_eq!(metric(address, "caption_store_rows{table=\"jobs\"}"), 0.0);
    let feedback = json!({"request_id": rated, "rating": 5});
    assert_eq!(post_json(address, "/api/v1/feedback", fixture.key(), &feedback).status, 201, "what feedback names stays");
}
