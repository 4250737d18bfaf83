//! [`Metrics`]: request counts and latency per route and status, rendered in the Prometheus
//! text format by `GET /metrics` (with the actors' counters).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// (method, route, status): the labels of a counter.
type Labels = (String, String, u16);

/// Counters of the requests served.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Labels → (count, seconds).
    requests: Mutex<BTreeMap<Labels, (u64, f64)>>,
}

/// The routes, as metric labels.
const ROUTES: &[&str] = &[
    "/health",
    "/metrics",
    "/openapi.json",
    "/chat/message",
    "/vision/chat",
    "/vision/generate",
    "/vision/stats",
    "/train/interaction",
    "/train/stats",
    "/memory/store",
    "/memory/recall",
    "/memory/stats",
    "/ws/chat",
    "/api/version",
    "/api/tags",
    "/api/show",
    "/api/ps",
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/embeddings",
];

/// The route template of a path, so that labels stay few: `/vision/image/{filename}`, and
/// `other` for every unknown path.
pub fn route_of(path: &str) -> String {
    if path.starts_with("/vision/image/") {
        "/vision/image/{filename}".into()
    } else if path.starts_with("/v1/models/") {
        "/v1/models/{id}".into()
    } else if ROUTES.contains(&path) {
        path.to_string()
    } else {
        "other".into()
    }
}

impl Metrics {
    pub fn observe(&self, method: &str, path: &str, status: u16, elapsed: Duration) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let e = m
            .entry((method.to_string(), route_of(path), status))
            .or_default();
        e.0 += 1;
        e.1 += elapsed.as_secs_f64();
    }

    /// The Prometheus text exposition of the request counters.
    pub fn render(&self) -> String {
        let m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::from(
            "# HELP thau_http_requests_total HTTP requests served.\n# TYPE thau_http_requests_total counter\n",
        );
        for ((method, route, status), (n, _)) in m.iter() {
            out.push_str(&format!(
                "thau_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP thau_http_request_seconds_sum Time spent serving requests.\n# TYPE thau_http_request_seconds_sum counter\n");
        for ((method, route, status), (_, s)) in m.iter() {
            out.push_str(&format!(
                "thau_http_request_seconds_sum{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {s:.6}\n"
            ));
        }
        out
    }
}
