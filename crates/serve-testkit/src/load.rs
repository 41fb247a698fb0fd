//! A load generator for the serving benchmarks: `clients` threads send caption requests (one
//! image each, chosen by the request's number) until `requests` are sent or `seconds` pass.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

/// What a load run saw.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Latencies of the answers that were captions, in seconds, sorted.
    pub latencies: Vec<f64>,
    /// Answered 503 with `Retry-After` (the server shed load).
    pub refused: usize,
    /// Any other answer.
    pub failed: usize,
    pub seconds: f64,
}

impl LoadResult {
    pub fn requests_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    /// The `p`th percentile latency, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)] * 1e3
    }
}

/// Sends `POST /api/v1/caption` with `image(i)` for request `i`, from `clients` threads at once.
pub fn run(
    address: SocketAddr,
    clients: usize,
    requests: usize,
    seconds: u64,
    image: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
) -> LoadResult {
    let image = Arc::new(image);
    let barrier = Arc::new(Barrier::new(clients));
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let (refused, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (image, barrier, next, latencies) = (image.clone(), barrier.clone(), next.clone(), latencies.clone());
            let (refused, failed) = (refused.clone(), failed.clone());
            std::thread::spawn(move || {
                barrier.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests || Instant::now() > stop_at {
                        break;
                    }
                    let body = json!({"image": crate::base64(&image(i))});
                    let sent = Instant::now();
                    let reply = crate::post_json(address, "/api/v1/caption", None, &body);
                    let seconds = sent.elapsed().as_secs_f64();
                    if reply.status == 200 {
                        latencies.lock().unwrap().push(seconds);
                    } else if reply.status == 503 && reply.header("retry-after").is_some() {
                        refused.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort_by(f64::total_cmp);
    LoadResult { latencies, refused: refused.load(Ordering::Relaxed), failed: failed.load(Ordering::Relaxed), seconds }
}
