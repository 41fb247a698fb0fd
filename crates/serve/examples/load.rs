//! Load benchmark of the captioning service, on loopback only: starts the real server in this
//! process on 127.0.0.1 with a checkpoint promoted into a temporary registry, then `--clients`
//! threads send `--requests` caption requests in all (each a different image, so the cache never
//! answers), and reports throughput and latency percentiles. Run it with dynamic batching on and
//! off (`--max-batch 1`) to see what batching buys. Bounded in count and time (`--seconds`).
//!
//! `--worst-case` sends instead, from every client at once, different small PNGs that claim the
//! most pixels the server accepts (`limits.max_pixels`, 6000 x 4000), and reports the process's
//! resident memory before, at its peak and after, with the answers that were captions and those
//! that were 503 (`limits.max_decoding_pixels`, which `--max-decoding-pixels` overrides). Memory
//! is kept as `caption serve` keeps it (`caption_model::allocator`).
//!
//! cargo run --release -p caption-serve --example load -- --checkpoint experiments/<run>/checkpoints/best \
//!     [--requests 400] [--clients 8] [--max-batch 8] [--max-wait-ms 5] [--seconds 120] \
//!     [--worst-case [--max-decoding-pixels N]]

use caption_serve_testkit as common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use caption_serve::config::{AuthMode, BatchingConfig, CacheConfig, RateLimitConfig};
use caption_serve::{ServeConfig, Server, ServerOptions, registry};
use serde_json::json;

struct Options {
    checkpoint: Option<PathBuf>,
    requests: usize,
    clients: usize,
    max_batch: usize,
    max_wait_ms: u64,
    seconds: u64,
    image_size: u32,
    worst_case: bool,
    max_decoding_pixels: Option<u64>,
}

fn options() -> Options {
    let mut o = Options {
        checkpoint: None,
        requests: 400,
        clients: 8,
        max_batch: 8,
        max_wait_ms: 5,
        seconds: 120,
        image_size: 64,
        worst_case: false,
        max_decoding_pixels: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--checkpoint" => o.checkpoint = Some(PathBuf::from(value())),
            "--requests" => o.requests = value().parse().expect("--requests N"),
            "--clients" => o.clients = value().parse().expect("--clients N"),
            "--max-batch" => o.max_batch = value().parse().expect("--max-batch N"),
            "--max-wait-ms" => o.max_wait_ms = value().parse().expect("--max-wait-ms N"),
            "--seconds" => o.seconds = value().parse().expect("--seconds N"),
            "--image-size" => o.image_size = value().parse().expect("--image-size N"),
            "--worst-case" => o.worst_case = true,
            "--max-decoding-pixels" => o.max_decoding_pixels = Some(value().parse().expect("--max-decoding-pixels N")),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn main() {
    caption_model::allocator::keep_freed_memory();
    let o = options();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let checkpoint = o.checkpoint.clone().unwrap_or_else(|| {
        // Without a trained checkpoint: a small random-weight one (the same work per image).
        let path = dir.path().join("checkpoint");
        common::write_checkpoint(&path, "random", 0.0);
        path
    });
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let version = registry::promote(&registry, &checkpoint, None).expect("promoting the checkpoint");
    let mut config = ServeConfig {
        host: "127.0.0.1".into(),
        port: 0,
        auth: AuthMode::Disabled,
        rate_limit: RateLimitConfig { requests_per_minute: 0, ..Default::default() },
        batching: BatchingConfig { max_batch: o.max_batch, max_wait_ms: o.max_wait_ms },
        cache: CacheConfig { entries: 0, ..Default::default() },
        ..Default::default()
    };
    if let Some(pixels) = o.max_decoding_pixels {
        config.limits.max_decoding_pixels = pixels;
    }
    let worst_case = o.worst_case.then(|| {
        // Most pixels accepted, in a file of tens of kilobytes: 6000 x 4000 at the default.
        let height = (config.limits.max_pixels / 6000) as u32;
        common::png(6000, height, [120, 30, 200])
    });
    let server = Server::start(ServerOptions { registry: registry.clone(), config }).expect("starting the server");
    let address = server.address();
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::get(address, "/ready", &[]).status != 200 {
        assert!(Instant::now() < deadline, "the model never loaded");
        std::thread::sleep(Duration::from_millis(20));
    }

    let rss_before = common::status_mib("VmRSS:");
    common::reset_peak_memory();
    let image_size = o.image_size;
    let load = common::load::run(address, o.clients, o.requests, o.seconds, move |i| match &worst_case {
        Some(png) => common::png_variant(png, &format!("request {i}")),
        None => common::png(image_size, image_size, [(i % 251) as u8, (i / 251 % 251) as u8, 90]),
    });
    let rss_peak = common::status_mib("VmHWM:");
    let rss_after = common::status_mib("VmRSS:");
    let metrics = common::get(address, "/metrics", &[]).text();
    // The mean batch size from the Prometheus histogram's sum and count.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let mean_batch = value("caption_batch_size_sum") / value("caption_batch_size_count");
    println!(
        "{}",
        json!({
            "model": version.id, "clients": o.clients, "max_batch": o.max_batch, "max_wait_ms": o.max_wait_ms,
            "image_size": if o.worst_case { "6000x4000 PNG".to_string() } else { o.image_size.to_string() },
            "succeeded": load.latencies.len(), "refused_503": load.refused, "failed": load.failed,
            "rss_before_mib": rss_before, "rss_peak_mib": rss_peak, "rss_after_mib": rss_after,
            "seconds": load.seconds, "requests_per_s": load.requests_per_second(),
            "answered_per_s": (load.latencies.len() + load.refused) as f64 / load.seconds,
            "p50_ms": load.percentile_ms(50.0), "p99_ms": load.percentile_ms(99.0),
            "mean_batch": mean_batch,
        })
    );
}
