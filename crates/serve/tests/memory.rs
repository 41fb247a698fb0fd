//! Memory under worst-case images, on the real server over loopback: 64 clients at once each
//! send a different small PNG that claims the most pixels the server accepts (24 megapixels,
//! which no decoder can shrink while reading). The server's resident memory must stay bounded:
//! images that do not fit the decoding budget are answered 503 with `Retry-After`. Alone in its
//! test binary, so that the process's peak memory is this test's.

use caption_serve_testkit as common;

use std::sync::{Arc, Barrier};

use caption_serve::config::{AuthMode, RateLimitConfig};
use caption_serve::{ServeConfig, Server, ServerOptions};
use common::{base64, get, png, post_json};
use serde_json::json;

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "reads the process's memory from /proc")]
fn memory_stays_bounded_under_64_concurrent_worst_case_images() {
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry_with_tiny_model(dir.path());
    let config = ServeConfig {
        port: 0,
        auth: AuthMode::Disabled,
        rate_limit: RateLimitConfig { requests_per_minute: 0, ..Default::default() },
        ..Default::default()
    };
    let max_pixels = config.limits.max_pixels;
    let server = Server::start(ServerOptions { registry, config }).unwrap();
    let address = server.address();
    assert_eq!(post_json(address, "/api/v1/caption", None, &json!({"image": base64(&png(16, 16, [1, 2, 3]))})).status, 200);

    // 6000 x 4000 = the default limit, in a file of a few tens of kilobytes.
    assert_eq!(max_pixels, 24_000_000);
    let worst = png(6000, 4000, [120, 30, 200]);
    let bodies: Vec<String> =
        (0..64).map(|i| json!({"image": base64(&common::png_variant(&worst, &format!("client {i}")))}).to_string()).collect();
    assert!(bodies[0].len() < 1 << 20, "{} bytes", bodies[0].len());
    drop(worst);

    let rss_before = common::status_mib("VmRSS:");
    // Resets the peak (VmHWM) to the current size, so that the peak read below is the load's.
    common::reset_peak_memory();
    let barrier = Arc::new(Barrier::new(bodies.len()));
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let headers = [("Content-Type", "application/json")];
                let reply = common::send(address, "POST", "/api/v1/caption", &headers, body.as_bytes());
                (reply.status, reply.header("retry-after").map(str::to_string))
            })
        })
        .collect();
    let replies: Vec<(u16, Option<String>)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let peak = common::status_mib("VmHWM:");
    let succeeded = replies.iter().filter(|(status, _)| *status == 200).count();
    let refused = replies.iter().filter(|(status, retry)| *status == 503 && retry.is_some()).count();
    eprintln!("RSS before {rss_before:.0} MiB, peak {peak:.0} MiB; {succeeded} captioned, {refused} told to retry");
    assert_eq!(succeeded + refused, replies.len(), "{replies:?}");
    assert!(succeeded >= 1, "none was captioned");
    assert!(peak - rss_before < 768.0, "the peak grew by {:.0} MiB", peak - rss_before);
    let metrics = get(address, "/metrics", &[]).text();
    assert!(metrics.contains(&format!("caption_decodes_refused_total {refused}")), "{metrics}");
    assert!(metrics.contains("caption_decoding_pixels 0"), "{metrics}");
}
