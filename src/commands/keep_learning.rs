//! `thau serve --learn`: the self-learning loop inside the server process. [`keep_learning`]
//! runs one [`learn`] session after another on the server's own runtime — the Learner
//! trains on its own thread and hot-swaps new weights into Inference after every round,
//! so chat never waits on training — until the server stops. On a fresh data directory the
//! first session makes THAU's tokenizer and first model; [`LearningStatus`] says how far it
//! is, for `/health`, the web page and the 503 chat answers until a model exists.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::learn::{learn, LearnRequest, Progress};
use crate::actors::inference::Served;
use crate::runtime::Runtime;

/// Wait after a session that failed before trying again (a missing corpus, a store that
/// is down): long enough not to spin, short enough to recover on its own.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How often a wait checks whether the server is stopping.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Where the background learning stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No model yet: the first session is making the tokenizer and the first model.
    Preparing,
    /// A model is served and a session is learning.
    Learning,
    /// The last session failed; another starts after a pause.
    Waiting,
    /// The server is stopping, or stopped learning.
    Stopped,
}

/// What `/health` shows of the background learning.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub phase: Phase,
    /// Whether Inference serves a model (chat can answer).
    pub model_ready: bool,
    /// Sessions finished since the server started.
    pub sessions: usize,
    /// The running session's counters.
    pub progress: Option<Progress>,
    /// Why the last session failed, if it did.
    pub last_error: Option<String>,
}

/// The background learning's state, shared by the loop and the routes.
#[derive(Debug)]
pub struct LearningStatus {
    inner: Mutex<Snapshot>,
}

impl Default for LearningStatus {
    fn default() -> Self {
        LearningStatus {
            inner: Mutex::new(Snapshot {
                phase: Phase::Preparing,
                model_ready: false,
                sessions: 0,
                progress: None,
                last_error: None,
            }),
        }
    }
}

impl LearningStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        // Every change is a few field writes: a poisoned lock still holds a usable state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    /// Why chat cannot answer yet, when the reason is that the first model is being made.
    pub fn preparing(&self) -> Option<String> {
        let s = self.lock();
        if s.model_ready {
            return None;
        }
        let how_far = match &s.progress {
            Some(p) => format!(
                "{:.0} s in, {} questions asked, {} training rounds",
                p.elapsed_s, p.asked, p.rounds
            ),
            None => "making the tokenizer and the first model".to_string(),
        };
        Some(format!(
            "THAU is preparing its first model ({how_far}); chat answers as soon as it is made — see /health"
        ))
    }

    /// Inference was found serving a model (the progress counters trail the Learner's
    /// swap by up to a tick).
    pub fn model_served(&self) {
        self.set(|s| {
            s.model_ready = true;
            if s.phase == Phase::Preparing {
                s.phase = Phase::Learning;
            }
        });
    }

    fn set(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.lock());
    }
}

/// Runs learning sessions of `session_minutes` each on `rt`, one after another, until
/// `stop` is set; each ends as `thau learn` does (its round finished, checkpoint and
/// session record written). A session that fails is logged and retried after a pause.
pub async fn keep_learning(
    rt: Arc<Runtime>,
    req: LearnRequest,
    session_minutes: f64,
    stop: Arc<AtomicBool>,
    status: Arc<LearningStatus>,
) {
    let served = match &rt.addrs.inference {
        Some(i) => matches!(i.send(Served).await, Ok(Ok(_))),
        None => false,
    };
    status.set(|s| {
        s.model_ready = served;
        s.phase = if served {
            Phase::Learning
        } else {
            Phase::Preparing
        };
    });
    while !stop.load(Ordering::SeqCst) {
        let session = LearnRequest {
            minutes: Some(session_minutes),
            ..req.clone()
        };
        let result = learn(&rt, &session, &stop, &mut |p| {
            status.set(|s| {
                // After its first round the Learner has swapped weights into Inference.
                s.model_ready |= p.rounds > 0;
                s.phase = if s.model_ready {
                    Phase::Learning
                } else {
                    Phase::Preparing
                };
                s.progress = Some(p.clone());
            })
        })
        .await;
        match result {
            Ok(report) => {
                tracing::info!(
                    session = report.session,
                    rounds = report.rounds,
                    "background learning: session done"
                );
                status.set(|s| {
                    s.sessions += 1;
                    s.model_ready |= report.rounds > 0;
                    s.last_error = None;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "background learning: session failed");
                status.set(|s| {
                    s.phase = Phase::Waiting;
                    s.last_error = Some(e.to_string());
                });
                let waited = std::time::Instant::now();
                while waited.elapsed() < RETRY_AFTER && !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(STOP_POLL).await;
                }
            }
        }
    }
    status.set(|s| s.phase = Phase::Stopped);
}
