//! What `GET /metrics` reports, in Prometheus' text format: requests and their latency by route
//! and status, the sizes of the batches the model decoded, cache hits and misses, and the model
//! version loaded.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Latency buckets, in seconds.
const LATENCY_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Batch size buckets, in images.
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, u16), Histogram>,
    batches: Option<Histogram>,
    cache_hits: u64,
    cache_misses: u64,
    /// (name, version, id) of the loaded model.
    model: Option<(String, u32, String)>,
}

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; the last is above every bound).
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    fn observe(&mut self, value: f64) {
        let bucket = self.bounds.iter().position(|&bound| value <= bound).unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count());
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count());
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        let mut inner = self.lock();
        inner.requests.entry((route.to_string(), status)).or_insert_with(|| Histogram::new(LATENCY_BOUNDS)).observe(seconds);
    }

    pub fn observe_batch(&self, images: usize) {
        self.lock().batches.get_or_insert_with(|| Histogram::new(BATCH_BOUNDS)).observe(images as f64);
    }

    pub fn cache_hit(&self) {
        self.lock().cache_hits += 1;
    }

    pub fn cache_miss(&self) {
        self.lock().cache_misses += 1;
    }

    pub fn set_model(&self, model: Option<(&str, u32, &str)>) {
        self.lock().model = model.map(|(name, version, id)| (name.to_string(), version, id.to_string()));
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        out.push_str("# HELP caption_http_requests_total HTTP requests answered, by route and status code.\n");
        out.push_str("# TYPE caption_http_requests_total counter\n");
        for ((route, status), histogram) in &inner.requests {
            let _ = writeln!(out, "caption_http_requests_total{{route=\"{}\",status=\"{status}\"}} {}", escape(route), histogram.count());
        }
        out.push_str("# HELP caption_http_request_duration_seconds Time from request to response, by route and status code.\n");
        out.push_str("# TYPE caption_http_request_duration_seconds histogram\n");
        for ((route, status), histogram) in &inner.requests {
            histogram.render(
                &mut out,
                "caption_http_request_duration_seconds",
                &format!("route=\"{}\",status=\"{status}\"", escape(route)),
            );
        }
        out.push_str("# HELP caption_batch_size Images per decode call of the model.\n");
        out.push_str("# TYPE caption_batch_size histogram\n");
        inner.batches.clone().unwrap_or_else(|| Histogram::new(BATCH_BOUNDS)).render(&mut out, "caption_batch_size", "");
        out.push_str("# HELP caption_cache_hits_total Images answered from the result cache.\n");
        out.push_str("# TYPE caption_cache_hits_total counter\n");
        let _ = writeln!(out, "caption_cache_hits_total {}", inner.cache_hits);
        out.push_str("# HELP caption_cache_misses_total Images that had to be decoded.\n");
        out.push_str("# TYPE caption_cache_misses_total counter\n");
        let _ = writeln!(out, "caption_cache_misses_total {}", inner.cache_misses);
        out.push_str("# HELP caption_model_loaded Whether a model version is loaded (1) or not (0).\n");
        out.push_str("# TYPE caption_model_loaded gauge\n");
        let _ = writeln!(out, "caption_model_loaded {}", u8::from(inner.model.is_some()));
        out.push_str("# HELP caption_model_info The model version loaded.\n");
        out.push_str("# TYPE caption_model_info gauge\n");
        if let Some((name, version, id)) = &inner.model {
            let _ = writeln!(out, "caption_model_info{{name=\"{}\",version=\"{version}\",id=\"{}\"}} 1", escape(name), escape(id));
        }
        out
    }
}

/// Escapes a Prometheus label value.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labelled() {
        let metrics = Metrics::default();
        metrics.observe_request("/api/v1/caption", 200, 0.003);
        metrics.observe_request("/api/v1/caption", 200, 0.2);
        metrics.observe_batch(3);
        metrics.cache_hit();
        metrics.set_model(Some(("tiny", 2, "tiny-v2")));
        let text = metrics.render();
        assert!(text.contains("caption_http_requests_total{route=\"/api/v1/caption\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("caption_http_request_duration_seconds_bucket{route=\"/api/v1/caption\",status=\"200\",le=\"0.005\"} 1"));
        assert!(text.contains("caption_http_request_duration_seconds_bucket{route=\"/api/v1/caption\",status=\"200\",le=\"0.25\"} 2"));
        assert!(text.contains("caption_batch_size_bucket{le=\"4\"} 1") && text.contains("caption_batch_size_count 1"));
        assert!(
            text.contains("caption_cache_hits_total 1")
                && text.contains("caption_model_info{name=\"tiny\",version=\"2\",id=\"tiny-v2\"} 1")
        );
    }
}
