//! The web page (`GET /`): chat with streamed answers and inline pictures, the memory
//! inspector and the learning dashboard — plain HTML, CSS and JS compiled into the binary
//! ([`ASSETS`]), so `thau serve` needs no files and no network. The page speaks only the
//! public API: `/ws/chat`, `/memory/{store}/items`, `/train/stats` and `/events`.

use warp::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use warp::{Filter, Rejection};

/// Every asset: (path under `/`, content type, bytes).
pub const ASSETS: [(&str, &str, &str); 3] = [
    (
        "",
        "text/html; charset=utf-8",
        include_str!("web/index.html"),
    ),
    (
        "static/app.js",
        "text/javascript; charset=utf-8",
        include_str!("web/app.js"),
    ),
    (
        "static/app.css",
        "text/css; charset=utf-8",
        include_str!("web/app.css"),
    ),
];

/// Everything the page loads comes from this server (no CDN, no inline script).
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// One asset as a response.
fn asset(content_type: &'static str, body: &'static str) -> warp::reply::Response {
    let mut r = warp::reply::Response::new(body.into());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    // Assets change with the binary: revalidate rather than serve a stale page.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /` and `GET /static/{app.js,app.css}`: the page and its assets.
pub fn routes() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let (_, html_type, html) = ASSETS[0];
    let index = warp::path::end().map(move || asset(html_type, html));
    let statics = warp::path!("static" / String).and_then(|name: String| async move {
        let path = format!("static/{name}");
        ASSETS
            .iter()
            .find(|(p, _, _)| *p == path)
            .map(|(_, ct, body)| asset(ct, body))
            .ok_or_else(warp::reject::not_found)
    });
    warp::get().and(index.or(statics).unify())
}
