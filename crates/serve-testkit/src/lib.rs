//! Shared by the serving tests (the serving crate's and the CLI's): a tiny random-weight
//! checkpoint made through the model crate's API, PNG bytes, the server on a registry, and a
//! minimal HTTP/1.1 client over `TcpStream` (so that tests can send exactly the bytes they mean,
//! malformed ones included).

pub mod load;
pub mod servers;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use caption_data::image::ImageConfig;
use caption_data::{TextEncoder, VocabConfig};
use caption_model::{AttentionLstmConfig, CaptionerConfig, CheckpointMeta, EncoderConfig, EncoderKind, FlexBackend, save_checkpoint};

/// Writes a tiny checkpoint (ResNet layers [1,1,1,1] width 8, small attention LSTM, 32x32 input).
pub fn write_checkpoint(dir: &Path, run_name: &str, cider: f64) -> TextEncoder {
    let captions = ["a red circle", "two blue squares", "a green triangle above a red circle"];
    let text = TextEncoder::build(&VocabConfig { min_count: 1, max_length: 8, ..Default::default() }, &captions).unwrap();
    let encoder = EncoderConfig::new(EncoderKind::Resnet18).with_layers(Some([1, 1, 1, 1])).with_width(8);
    let decoder = AttentionLstmConfig::new().with_embedding_size(16).with_hidden_size(32).with_attention_size(16);
    let model = CaptionerConfig::for_text_encoder(encoder, decoder, &text).init::<FlexBackend>(&Default::default()).unwrap();
    let preprocess = ImageConfig { size: 32, ..Default::default() };
    let meta = CheckpointMeta::new(run_name, 7).with_preprocess(preprocess).with_metric("val/CIDEr", cider);
    save_checkpoint(dir, &model, &text, &meta).unwrap();
    text
}

/// `dir/registry` with the tiny checkpoint (written to `dir/checkpoint`) promoted as `tiny-v1`.
pub fn registry_with_tiny_model(dir: &Path) -> std::path::PathBuf {
    let checkpoint = dir.join("checkpoint");
    write_checkpoint(&checkpoint, "tiny", 0.5);
    let registry = dir.join("registry");
    caption_serve::registry::promote(&registry, &checkpoint, None).unwrap();
    registry
}

/// A `width x height` PNG of one colour.
pub fn png(width: u32, height: u32, colour: [u8; 3]) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(width, height, image::Rgb(colour))
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    bytes
}

pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The error message of an error answer, checking its shape.
    pub fn error(&self) -> String {
        let json = self.json();
        assert_eq!(json["status"], "error", "{json}");
        json["message"].as_str().unwrap_or_else(|| panic!("no message: {json}")).to_string()
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
pub fn send(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before reading a refused body.
    let _ = stream.write_all(body);
    // No half-close: the server would take it for the client going away.
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

pub fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(address, "GET", path, headers, b"")
}

pub fn post_json(address: SocketAddr, path: &str, key: Option<&str>, body: &serde_json::Value) -> Reply {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(key) = key {
        headers.push(("X-API-Key", key));
    }
    send(address, "POST", path, &headers, body.to_string().as_bytes())
}

/// A multipart/form-data body with `files` (field name, bytes) and text `fields`.
pub fn multipart(files: &[(&str, &[u8])], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "caption-test-boundary-7d9a";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    for (name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// CRC-32 as PNG chunks use it (ISO 3309, reflected, 0xEDB88320).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// `png` with a `tEXt` chunk holding `text` after its header: another file (another hash, so
/// neither the cache nor request merging answers it), the same pixels.
pub fn png_variant(png: &[u8], text: &str) -> Vec<u8> {
    let header_end = 8 + 25;
    let mut chunk = b"tEXt".to_vec();
    chunk.extend_from_slice(b"Comment\0");
    chunk.extend_from_slice(text.as_bytes());
    let mut out = png[..header_end].to_vec();
    out.extend_from_slice(&((chunk.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    out.extend_from_slice(&png[header_end..]);
    out
}

/// A `VmRSS:`-style line of /proc/self/status, in MiB (Linux).
pub fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

/// Resets the process's peak resident size (`VmHWM`) to its current size (Linux).
pub fn reset_peak_memory() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Checks a caption's `tokens` (as `return_tokens` and `caption caption --json` give them):
/// probabilities in (0, 1] whose geometric mean is the caption's confidence, and texts that
/// spell the caption (special tokens aside, `<eos>` last if anywhere).
pub fn check_token_probabilities(caption: &serde_json::Value) {
    let tokens = caption["tokens"].as_array().unwrap_or_else(|| panic!("no tokens: {caption}"));
    assert!(!tokens.is_empty(), "{caption}");
    let mut log_sum = 0.0;
    for token in tokens {
        let p = token["probability"].as_f64().unwrap();
        assert!(p > 0.0 && p <= 1.0, "{token}");
        log_sum += p.ln();
    }
    let geometric_mean = (log_sum / tokens.len() as f64).exp();
    let confidence = caption["confidence"].as_f64().unwrap();
    assert!((geometric_mean - confidence).abs() < 1e-6 * confidence.max(1e-3), "{geometric_mean} vs {confidence}: {caption}");
    let texts: Vec<&str> = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    if let Some(at) = texts.iter().position(|t| *t == "<eos>") {
        assert_eq!(at, texts.len() - 1, "<eos> before the end: {caption}");
    }
    let words: Vec<&str> = texts.iter().copied().filter(|t| !matches!(*t, "<eos>" | "<pad>" | "<bos>")).collect();
    assert_eq!(words.join(" "), caption["text"].as_str().unwrap(), "{caption}");
}

/// A server config for tests with API keys: any free port, `keys_file`, and rate limits too
/// generous to matter unless a test is about them.
pub fn keyed_config(keys_file: &Path) -> caption_serve::ServeConfig {
    caption_serve::ServeConfig {
        port: 0,
        keys_file: Some(keys_file.to_path_buf()),
        rate_limit: caption_serve::config::RateLimitConfig { requests_per_minute: 60_000, burst: 1_000, ..Default::default() },
        ..Default::default()
    }
}

/// The real server on `registry` with `config`.
pub fn serve(registry: &Path, config: &caption_serve::ServeConfig) -> caption_serve::Server {
    caption_serve::Server::start(caption_serve::ServerOptions { registry: registry.to_path_buf(), config: config.clone() }).unwrap()
}

/// Polls a job until it is finished (succeeded or failed) and returns it; panics after 30 s.
pub fn wait_for_job(address: SocketAddr, id: &str, key: &str) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let job = get(address, &format!("/api/v1/jobs/{id}"), &[("X-API-Key", key)]).json()["job"].clone();
        if job["state"] == "succeeded" || job["state"] == "failed" {
            return job;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "job {id} still {}", job["state"]);
        std::thread::sleep(Duration::from_millis(50));
    }
}
