//! Admission limits: [`Limits`] caps the WebSocket sessions open at once (each holds a
//! [`SessionPermit`] until it closes) and rate-limits chat turns per session (or per
//! client address for requests without one) with token buckets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::ApiError;

/// Buckets kept before idle, full ones are dropped.
const MAX_BUCKETS: usize = 10_000;
/// A bucket untouched this long is full again and can be forgotten.
const BUCKET_IDLE: Duration = Duration::from_secs(600);

/// A session's allowance: `capacity` turns, refilled continuously over a minute.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The server's limits and their state.
#[derive(Debug)]
pub struct Limits {
    max_sessions: usize,
    turns_per_minute: u32,
    open: AtomicUsize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// An open WebSocket session; dropping it frees its place.
#[derive(Debug)]
pub struct SessionPermit(Arc<Limits>);

impl Drop for SessionPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Limits {
    /// `max_sessions` WebSocket sessions at once; `turns_per_minute` chat turns per session
    /// (0 turns off the rate limit).
    pub fn new(max_sessions: usize, turns_per_minute: u32) -> Self {
        Limits {
            max_sessions,
            turns_per_minute,
            open: AtomicUsize::new(0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// WebSocket sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// A place for a new session, or 503 when every place is taken.
    pub fn open_session(self: &Arc<Self>) -> Result<SessionPermit, ApiError> {
        let taken = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_sessions).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(SessionPermit(self.clone())),
            Err(_) => Err(ApiError::new(
                warp::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                format!(
                    "{} sessions are open, the most this server takes (server.max_sessions)",
                    self.max_sessions
                ),
            )),
        }
    }

    /// Takes one turn from `key`'s bucket, or 429 saying when the next one is allowed.
    pub fn take_turn(&self, key: &str) -> Result<(), ApiError> {
        if self.turns_per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(self.turns_per_minute);
        let per_sec = cap / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| now.duration_since(b.at) < BUCKET_IDLE);
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / per_sec;
            Err(ApiError::too_many(format!(
                "more than {} turns a minute in this session; next one in {wait:.1} s",
                self.turns_per_minute
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_capped_and_freed() {
        let l = Arc::new(Limits::new(2, 0));
        let a = l.open_session().unwrap();
        let _b = l.open_session().unwrap();
        let e = l.open_session().unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (503, "too_many_sessions"));
        drop(a);
        assert_eq!(l.open_sessions(), 1);
        assert!(l.open_session().is_ok());
    }

    #[test]
    fn turns_are_rate_limited_per_session() {
        let l = Limits::new(1, 3);
        for _ in 0..3 {
            l.take_turn("a").unwrap();
        }
        let e = l.take_turn("a").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (429, "rate_limited"));
        assert!(e.message.contains("next one in"), "{}", e.message);
        // Another session has its own allowance; 0 turns the limit off.
        l.take_turn("b").unwrap();
        let off = Limits::new(1, 0);
        for _ in 0..100 {
            off.take_turn("a").unwrap();
        }
    }
}
