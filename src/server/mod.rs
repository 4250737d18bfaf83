//! `thau serve`: the HTTP API in front of the actors, with warp (on the same tokio runtime
//! as the actix system). [`routes`] builds every route from an injected [`AppState`];
//! [`serve`] binds and runs them until a shutdown signal. The handlers live in [`routes`]
//! (one documented function per route), the WebSocket chat in [`ws`], the chat turn they
//! share in [`chat`], the Ollama- and OpenAI-compatible endpoints in [`compat`], the error
//! type
//! and its JSON responses in [`error`], request counters in [`metrics`], admission limits
//! in [`limits`], `thau bench serve` in [`bench`].
//!
//! Safety: every body is size-limited ([`MAX_BODY_BYTES`]); WebSocket sessions are capped
//! and chat turns rate-limited per session ([`limits`]); mutating and training routes
//! need `THAU_API_KEY` when it is set; the server binds 127.0.0.1 unless told otherwise;
//! pictures are served only if the ImageTool made them (no paths, `..`, or links).

pub mod bench;
pub mod chat;
pub mod compat;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod owners;
pub mod routes;
pub mod web;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use warp::Filter;

use crate::actors::inference::Inference;
use crate::runtime::Runtime;
use error::ApiError;

/// Largest request body.
pub const MAX_BODY_BYTES: u64 = 256 * 1024;
pub use crate::chat::MAX_MESSAGE_CHARS;
/// Default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Required on mutating and training routes when set (`THAU_API_KEY`).
    pub api_key: Option<String>,
}

/// What every handler is given.
#[derive(Clone)]
pub struct AppState {
    pub rt: Arc<Runtime>,
    pub metrics: Arc<metrics::Metrics>,
    pub api_key: Option<Arc<str>>,
    /// Session cap and per-session rate limits (`[server]` in the configuration).
    pub limits: Arc<limits::Limits>,
    /// Resume tokens of the conversations opened here ([`owners`]).
    pub owners: Arc<owners::Owners>,
    /// The learning that runs inside the server (`thau serve --learn`), if any.
    pub learning: Option<Arc<crate::commands::keep_learning::LearningStatus>>,
}

impl AppState {
    pub fn new(rt: Arc<Runtime>, api_key: Option<String>) -> Self {
        let server = &rt.config.server;
        let limits = Arc::new(limits::Limits::new(
            server.max_sessions,
            server.turns_per_minute,
        ));
        AppState {
            rt,
            limits,
            owners: Arc::default(),
            learning: None,
            metrics: Arc::new(metrics::Metrics::default()),
            api_key: api_key.filter(|k| !k.is_empty()).map(Arc::from),
        }
    }

    /// A chat turn's failure as the user should read it: while the server prepares its
    /// first model (`serve --learn` on a fresh data directory), "no model loaded" becomes
    /// how far the preparation is.
    pub fn explain(&self, e: ApiError) -> ApiError {
        let preparing = self.learning.as_ref().and_then(|l| l.preparing());
        match preparing {
            Some(why) if e.status == warp::http::StatusCode::SERVICE_UNAVAILABLE => {
                ApiError::new(e.status, "preparing", why)
            }
            _ => e,
        }
    }

    /// The LongTermMemory actor, or 503 when it is not running.
    pub fn long_term(
        &self,
    ) -> Result<actix::Addr<crate::actors::long_term_memory::LongTermMemory>, ApiError> {
        self.rt
            .addrs
            .long_term_memory
            .clone()
            .ok_or_else(|| ApiError::unavailable("LongTermMemory is not running"))
    }

    /// The Inference actor, or 503 when it is not running.
    pub fn inference(&self) -> Result<actix::Addr<Inference>, ApiError> {
        self.rt
            .addrs
            .inference
            .clone()
            .ok_or_else(|| ApiError::unavailable("the Inference actor is not running"))
    }
}

/// Every route, with JSON errors and request metrics and logs.
pub fn routes(
    state: AppState,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let metrics = state.metrics.clone();
    routes::all(state)
        .recover(error::recover)
        .unify()
        .with(warp::log::custom(move |info| {
            metrics.observe(
                info.method().as_str(),
                info.path(),
                info.status().as_u16(),
                info.elapsed(),
            );
            tracing::info!(
                target: "thau::server",
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                ms = info.elapsed().as_secs_f64() * 1e3,
                "request"
            );
        }))
}

/// Reloads the newest checkpoint into Inference on every SIGHUP (as `POST /admin/reload`
/// does), until the process ends; the outcome is logged. Does nothing where there are no
/// such signals.
pub async fn reload_on_hangup(rt: Arc<Runtime>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be watched: reload with POST /admin/reload");
            return;
        };
        while hup.recv().await.is_some() {
            let Some(inference) = rt.addrs.inference.clone() else {
                continue;
            };
            match inference.send(crate::actors::inference::Reload).await {
                Ok(Ok(info)) => tracing::info!(
                    target: "thau::server",
                    model = %info.checkpoint.display(),
                    "SIGHUP: reloaded"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(target: "thau::server", error = %e, "SIGHUP: reload failed")
                }
                Err(e) => {
                    tracing::warn!(target: "thau::server", error = %e, "SIGHUP: reload failed")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = rt;
}

/// Binds `opts.addr` and serves until `shutdown` completes; returns the bound address
/// through `bound` as soon as it listens (port 0 picks a free port).
pub async fn serve(
    state: AppState,
    opts: &ServeOptions,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| crate::ThauError::Runtime(format!("cannot listen on {}: {e}", opts.addr)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| crate::ThauError::Runtime(e.to_string()))?;
    bound(addr);
    warp::serve(routes(state))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    Ok(())
}
