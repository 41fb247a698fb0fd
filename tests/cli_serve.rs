//! `caption promote`, `caption models`, `caption rollback`, `caption serve keys` and
//! `caption serve` end to end, with a tiny random-weight checkpoint written through the model
//! crate's API. The server runs as a child process on a free port and is stopped with SIGTERM.

use caption_serve_testkit as common;
use caption_serve_testkit::servers::ServeProcess;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A tiny random-weight checkpoint whose `val/CIDEr` is 0.7.
fn write_checkpoint(dir: &Path, run_name: &str) {
    common::write_checkpoint(dir, run_name, 0.7);
}

fn caption(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caption")).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The one error line of a failed command.
fn error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1 && !stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn promote_list_and_roll_back_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    write_checkpoint(&run.join("checkpoints").join("best"), "tiny");
    let other = dir.path().join("other");
    write_checkpoint(&other, "another run");
    let registry = dir.path().join("registry");
    let reg = registry.to_str().unwrap();

    // A run directory means its best checkpoint.
    let out = stdout(&caption(&["promote", run.to_str().unwrap(), "--registry", reg]));
    assert!(out.contains("promoted tiny-v1") && out.contains("best"), "{out}");
    let out = stdout(&caption(&["promote", other.to_str().unwrap(), "--registry", reg, "--name", "tiny"]));
    assert!(out.contains("promoted tiny-v2"), "{out}");

    let listing: serde_json::Value = serde_json::from_str(&stdout(&caption(&["models", "--registry", reg, "--json"]))).unwrap();
    assert_eq!(listing["production"], "tiny-v2");
    assert_eq!(listing["versions"].as_array().unwrap().len(), 2);
    assert_eq!(listing["versions"][1]["run_name"], "another run");
    let table = stdout(&caption(&["models", "--registry", reg]));
    assert!(table.lines().any(|l| l.starts_with("* tiny-v2") && l.contains("val/CIDEr=0.7000")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("  tiny-v1")), "{table}");

    let out = stdout(&caption(&["rollback", "--registry", reg]));
    assert!(out.contains("production is now tiny-v1"), "{out}");
    let err = error_line(&caption(&["rollback", "--registry", reg]));
    assert!(err.contains("nothing to roll back to"), "{err}");

    let err = error_line(&caption(&["promote", dir.path().join("missing").to_str().unwrap(), "--registry", reg]));
    assert!(err.contains("missing"), "{err}");
    let err = error_line(&caption(&["models", "--registry", dir.path().join("nothing").to_str().unwrap()]));
    assert!(err.contains("no model registry"), "{err}");
}

#[test]
fn keys_are_printed_once_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let key = stdout(&caption(&["serve", "keys", "add", "alice", "--keys", keys.to_str().unwrap()])).trim().to_string();
    assert!(key.starts_with("cap_") && key.len() > 40, "{key}");
    let stored = std::fs::read_to_string(&keys).unwrap();
    assert!(stored.contains("alice") && !stored.contains(&key), "{stored}");
    let err = error_line(&caption(&["serve", "keys", "add", "alice", "--keys", keys.to_str().unwrap()]));
    assert!(err.contains("already a key named"), "{err}");
    assert!(stdout(&caption(&["serve", "keys", "list", "--keys", keys.to_str().unwrap()])).starts_with("alice\t"));
    stdout(&caption(&["serve", "keys", "remove", "alice", "--keys", keys.to_str().unwrap()]));
    assert_eq!(stdout(&caption(&["serve", "keys", "list", "--keys", keys.to_str().unwrap()])), "");
}

/// One HTTP/1.1 request (`Connection: close`); returns the status and the body.
fn http(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    stream.write_all(format!("{head}\r\n").as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
}

#[test]
fn serve_answers_over_http_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    write_checkpoint(&checkpoint, "tiny");
    let registry = dir.path().join("registry");
    stdout(&caption(&["promote", checkpoint.to_str().unwrap(), "--registry", registry.to_str().unwrap()]));
    // Keys default to <registry>/keys.json.
    let keys = registry.join("keys.json");
    let key = stdout(&caption(&["serve", "keys", "add", "ci", "--keys", keys.to_str().unwrap()])).trim().to_string();

    let mut command = Command::new(env!("CARGO_BIN_EXE_caption"));
    command.args(["serve", "--registry", registry.to_str().unwrap(), "--port", "0"]);
    let server = ServeProcess::start(command);
    let (address, log) = (server.address, server.log());
    assert!(log.contains("serving tiny-v1"), "{log}");

    let (status, body) = http(address, "GET", "/ready", &[], b"");
    assert_eq!(status, 200, "{body}");
    let mut png = Vec::new();
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 40, 40]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let boundary = "cli-serve-test";
    let mut form =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"red.png\"\r\nContent-Type: image/png\r\n\r\n")
            .into_bytes();
    form.extend_from_slice(&png);
    form.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"num_captions\"\r\n\r\n2\r\n--{boundary}--\r\n").as_bytes(),
    );
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let (status, body) = http(address, "POST", "/api/v1/caption", &[("Content-Type", &content_type), ("X-API-Key", &key)], &form);
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((reply["model"]["id"].as_str(), reply["captions"].as_array().map(Vec::len)), (Some("tiny-v1"), Some(2)), "{reply}");
    let (status, _) = http(address, "POST", "/api/v1/caption", &[("Content-Type", &content_type)], &form);
    assert_eq!(status, 401);

    // SIGTERM (as `docker stop` sends it) stops the server cleanly.
    let terminated = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().is_ok_and(|s| s.success());
    let (status, log) = server.wait();
    if terminated {
        assert!(status.success() && log.contains("stopped"), "{status:?}\n{log}");
    }
}

#[test]
fn serve_refuses_bad_settings_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.yaml");
    std::fs::write(&config, "port: 0\nbatching:\n  max_batch: 0\n").unwrap();
    let registry = dir.path().to_str().unwrap();
    let err = error_line(&caption(&["serve", "--registry", registry, "--config", config.to_str().unwrap()]));
    assert!(err.contains("max_batch"), "{err}");
    std::fs::write(&config, "prot: 8080\n").unwrap();
    let err = error_line(&caption(&["serve", "--registry", registry, "--config", config.to_str().unwrap()]));
    assert!(err.contains("prot") && err.contains("serve.yaml"), "{err}");
    let err = error_line(&caption(&["serve"]));
    assert!(err.contains("--registry"), "{err}");
}

#[test]
fn feedback_exports_as_a_dataset_that_data_stats_reads() {
    use caption_serve::store::{NewFeedback, RequestRecord, Store, StoreLocation};
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    {
        let store = Store::open(&StoreLocation::File(registry.join("serve.sqlite3"))).unwrap();
        let image = common::png(12, 12, [200, 20, 20]);
        let record = RequestRecord {
            id: "r1".into(),
            image_sha256: "ab".repeat(32),
            model: "tiny-v1".into(),
            captions: serde_json::json!([{"text": "a circle", "confidence": 0.4}]),
            client: None,
        };
        store.record_requests(&[(record, "png", &image)], 10).unwrap();
        let correction = NewFeedback {
            request_id: Some("r1".into()),
            image_sha256: "ab".repeat(32),
            rating: Some(2),
            correction: Some("a red square".into()),
            ..Default::default()
        };
        store.add_feedback(&correction).unwrap();
    }
    let out = dir.path().join("export");
    let (registry_arg, out_arg) = (registry.to_str().unwrap(), out.to_str().unwrap());
    let printed = stdout(&caption(&["data", "export-feedback", "--registry", registry_arg, "--out", out_arg, "--val-fraction", "0"]));
    assert!(printed.contains("1 train / 0 val images, 1 captions from 1 feedback entries"), "{printed}");
    let annotations = out.join("captions_train.json");
    let images = out.join("images");
    let stats = stdout(&caption(&[
        "data",
        "stats",
        "--format",
        "coco",
        "--annotations",
        annotations.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--json",
    ]));
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(stats.to_string().contains("\"captions\":1"), "{stats}");

    let err = error_line(&caption(&["data", "export-feedback", "--registry", registry_arg, "--out", out_arg]));
    assert!(err.contains("--overwrite"), "{err}");
    let missing = dir.path().join("elsewhere");
    let err = error_line(&caption(&["data", "export-feedback", "--registry", missing.to_str().unwrap(), "--out", out_arg]));
    assert!(err.contains("serve.sqlite3"), "{err}");
}
