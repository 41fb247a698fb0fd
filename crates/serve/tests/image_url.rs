//! `{"image_url": ...}` against an image host on loopback: off by default; when on, fetched
//! within the size, redirect and host limits; and loopback itself refused unless private
//! addresses are explicitly allowed (by literal address and after DNS).

use caption_serve_testkit as common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use caption_serve::config::{ImageUrlConfig, RateLimitConfig};
use caption_serve::{ServeConfig, Server, ServerOptions, keys};
use common::{base64, png, post_json};
use serde_json::json;

/// A tiny HTTP image host: `/red.png`, `/big.png` (over any small limit), `/missing`, `/loop`
/// (redirects to itself) and `/hop` (redirects to `/red.png`).
fn image_host() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let red = png(20, 20, [200, 10, 10]);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (head, body): (String, Vec<u8>) = match path.as_str() {
                "/red.png" => (format!("200 OK\r\nContent-Type: image/png\r\nContent-Length: {}", red.len()), red.clone()),
                "/big.png" => ("200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000".into(), vec![0u8; 100_000]),
                "/loop" => ("302 Found\r\nLocation: /loop\r\nContent-Length: 0".into(), Vec::new()),
                "/hop" => ("302 Found\r\nLocation: /red.png\r\nContent-Length: 0".into(), Vec::new()),
                _ => ("404 Not Found\r\nContent-Length: 0".into(), Vec::new()),
            };
            let _ = stream.write_all(format!("HTTP/1.1 {head}\r\nConnection: close\r\n\r\n").as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    address
}

fn start(dir: &std::path::Path, image_url: ImageUrlConfig) -> (Server, String) {
    let registry = common::registry_with_tiny_model(dir);
    let keys_file = dir.join("keys.json");
    let key = keys::add_key(&keys_file, "tester").unwrap();
    let config = ServeConfig {
        port: 0,
        keys_file: Some(keys_file),
        rate_limit: RateLimitConfig { requests_per_minute: 60_000, burst: 1_000, ..Default::default() },
        image_url,
        ..Default::default()
    };
    (Server::start(ServerOptions { registry, config }).unwrap(), key)
}

#[test]
fn image_urls_are_fetched_within_limits_when_enabled() {
    let host = image_host();
    let dir = tempfile::tempdir().unwrap();
    let config = ImageUrlConfig {
        enabled: true,
        allowed_hosts: vec!["127.0.0.1".into()],
        allow_private_addresses: true,
        max_bytes: 50_000,
        max_redirects: 2,
        ..Default::default()
    };
    let (server, key) = start(dir.path(), config);
    let address = server.address();
    let key = Some(key.as_str());
    let url = |path: &str| format!("http://{host}{path}");

    let fetched = post_json(address, "/api/v1/caption", key, &json!({"image_url": url("/red.png"), "beam_size": 1}));
    assert_eq!(fetched.status, 200, "{}", fetched.text());
    let uploaded =
        post_json(address, "/api/v1/caption", key, &json!({"image": base64(&png(20, 20, [200, 10, 10])), "beam_size": 1})).json();
    assert_eq!(fetched.json()["captions"], uploaded["captions"], "the fetched bytes are the image");
    assert_eq!(uploaded["cached"], true, "same bytes, same cache entry");
    assert_eq!(post_json(address, "/api/v1/caption", key, &json!({"image_url": url("/hop"), "beam_size": 1})).status, 200);

    let refused = [
        (url("/big.png"), 413, "image_url.max_bytes"),
        (url("/missing"), 422, "404"),
        (url("/loop"), 422, "redirects"),
        ("http://images.example.org/x.png".to_string(), 422, "allowed_hosts"),
        (format!("ftp://{host}/red.png"), 422, "only http and https"),
        ("not a url".to_string(), 422, "not a URL"),
    ];
    for (target, status, needle) in refused {
        let reply = post_json(address, "/api/v1/caption", key, &json!({"image_url": target}));
        assert_eq!(reply.status, status, "{target}: {}", reply.text());
        assert!(reply.error().contains(needle), "{target}: {}", reply.error());
    }
    let both = post_json(address, "/api/v1/caption", key, &json!({"image_url": url("/red.png"), "image": base64(b"x")}));
    assert_eq!(both.status, 422);

    // Jobs take URLs too; the image is fetched when the job is submitted.
    let job = post_json(address, "/api/v1/jobs", key, &json!({"image_url": url("/red.png")}));
    assert_eq!(job.status, 202, "{}", job.text());
}

#[test]
fn loopback_is_refused_by_address_and_after_dns_and_fetching_is_off_by_default() {
    let host = image_host();
    let dir = tempfile::tempdir().unwrap();
    let config = ImageUrlConfig { enabled: true, allowed_hosts: vec!["127.0.0.1".into(), "localhost".into()], ..Default::default() };
    let (server, key) = start(dir.path(), config);
    let key = Some(key.as_str());
    let by_address = post_json(server.address(), "/api/v1/caption", key, &json!({"image_url": format!("http://{host}/red.png")}));
    assert_eq!(by_address.status, 422);
    assert!(by_address.error().contains("not a public address"), "{}", by_address.error());
    let by_name =
        post_json(server.address(), "/api/v1/caption", key, &json!({"image_url": format!("http://localhost:{}/red.png", host.port())}));
    assert_eq!(by_name.status, 422);
    assert!(by_name.error().contains("not a public address"), "{}", by_name.error());
    server.stop();

    let dir = tempfile::tempdir().unwrap();
    let (server, key) = start(dir.path(), ImageUrlConfig::default());
    let reply = post_json(server.address(), "/api/v1/caption", Some(&key), &json!({"image_url": format!("http://{host}/red.png")}));
    assert_eq!(reply.status, 422);
    assert!(reply.error().contains("image_url.enabled"), "{}", reply.error());
}
