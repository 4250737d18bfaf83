//! `thau serve --learn` on a fresh data directory: until the first model exists, chat is a
//! 503 that says THAU is preparing it and `/health` shows how far; then chat answers while
//! the sessions go on, and stopping ends the running session with its record written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use thau::commands::keep_learning::{keep_learning, LearningStatus};
use thau::commands::learn::LearnRequest;
use thau::config::ThauConfig;
use thau::runtime::Runtime;
use thau::server::AppState;

use crate::client::Client;
use crate::common;

/// Longest wait for the first model (a tiny corpus; the first training round).
const FIRST_MODEL: Duration = Duration::from_secs(240);

#[actix::test]
async fn a_fresh_server_prepares_its_first_model_then_chats_while_it_learns() {
    let (dir, corpus, home) = common::learning::prepared();
    let rt = Arc::new(Runtime::start(home.clone(), ThauConfig::default()).unwrap());
    let status = Arc::new(LearningStatus::default());
    let mut state = AppState::new(rt.clone(), None);
    state.learning = Some(status.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let request = LearnRequest {
        minutes: None,
        questions: None,
        corpus,
        seed: 3,
        teacher: None,
        resume: true,
        accuracy: None,
    };
    let (addr_rx, server) = common::serve_state(state, None);
    // Waited for off the actors' thread, which must go on to start the server.
    let addr = tokio::task::spawn_blocking(move || addr_rx.recv().unwrap())
        .await
        .unwrap();
    let base = format!("http://{addr}");
    let ask = json!({"message": "What colour is the sky number 01?", "max_tokens": 4});
    // Before the first model (checked before learning starts: a tiny first model is made
    // within a second): a 503 that says why, and /health shows the preparation.
    let (url, q) = (base.clone(), ask.clone());
    tokio::task::spawn_blocking(move || {
        let c = Client::new(url);
        let (s, v) = c.post("/chat/message", None, q.to_string().as_bytes());
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (503, Some("preparing")),
            "{v}"
        );
        let why = v["error"]["message"].as_str().unwrap();
        assert!(why.contains("preparing its first model"), "{why}");
        let (_, h) = c.get_json("/health");
        assert_eq!(h["learning"]["phase"], "preparing", "{h}");
        assert_eq!(h["learning"]["model_ready"], false, "{h}");
    })
    .await
    .unwrap();
    let learning = actix::spawn(keep_learning(
        rt.clone(),
        request,
        // Short sessions, so that one ends (and another starts) within the test.
        0.2,
        stop.clone(),
        status,
    ));
    let checks = tokio::task::spawn_blocking(move || {
        let c = Client::new(base);
        // Then it answers, while learning goes on.
        let t = Instant::now();
        let answered = loop {
            let (s, v) = c.post("/chat/message", None, ask.to_string().as_bytes());
            if s == 200 {
                break v;
            }
            assert_eq!(s, 503, "{v}");
            assert!(
                t.elapsed() < FIRST_MODEL,
                "no model after {FIRST_MODEL:?}: {v}"
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        assert!(answered["tokens"].as_u64() >= Some(1), "{answered}");
        let (_, h) = c.get_json("/health");
        assert_eq!(h["learning"]["model_ready"], true, "{h}");
        // A session ends and the next begins; chat keeps answering.
        let t = Instant::now();
        loop {
            let (_, h) = c.get_json("/health");
            if h["learning"]["sessions"].as_u64() >= Some(1) {
                break;
            }
            assert!(t.elapsed() < FIRST_MODEL, "no session ended: {h}");
            std::thread::sleep(Duration::from_millis(500));
        }
        let (s, v) = c.post("/chat/message", None, ask.to_string().as_bytes());
        assert_eq!(s, 200, "{v}");
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    learning.await.unwrap();
    server.stop().await;
    if let Err(e) = checks {
        std::panic::resume_unwind(e.into_panic());
    }
    // Every session that ran left its record.
    let records = std::fs::read_dir(home.runs().join("learn"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
        })
        .count();
    assert!(records >= 2, "{records} session records");
    drop(dir);
}
