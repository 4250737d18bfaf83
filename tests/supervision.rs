//! Supervision under load: while chats and a learning session run, every actor type is
//! made to panic in turn. Each is restarted, the request that hit the panic gets an error
//! (never a hang), later requests succeed, and the learning session finishes.

mod common;

use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::learning::{prepared, settings, tiny_checkpoint};
use thau::chat::{chat_turn, ChatRequest};
use thau::commands::learn::{learn, LearnRequest};
use thau::config::ThauConfig;
use thau::runtime::agents::ActorKind;
use thau::runtime::Runtime;

/// Chats running beside the session.
const CHATTERS: usize = 2;
/// Longer than any chat turn of the tiny model: a turn past it is a hang.
const TURN_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two injected panics.
const FAULT_GAP: Duration = Duration::from_millis(400);

fn request(i: usize) -> ChatRequest {
    ChatRequest {
        session: None,
        message: format!("What colour is the sky number {i}?"),
        max_tokens: Some(8),
        temperature: Some(0.0),
        seed: Some(1),
        memory: None,
        token: None,
    }
}

#[actix::test]
async fn actors_restart_under_load_and_later_requests_succeed() {
    let (_dir, corpus_dir, home) = prepared();
    tiny_checkpoint(&home, &corpus_dir, &settings());
    // Questions over most of the session, so that the panics land while it learns.
    let q = home.agents().join("questioner.toml");
    let text = std::fs::read_to_string(&q).unwrap();
    std::fs::write(&q, text.replace("interval_ms = 30", "interval_ms = 300")).unwrap();
    let rt = Runtime::start(home, ThauConfig::default()).unwrap();
    let faults_done = Cell::new(false);
    let (ok_after, failed_during) = (Cell::new(0usize), Cell::new(0usize));

    let session = async {
        let req = LearnRequest {
            minutes: Some(0.2),
            questions: None,
            corpus: corpus_dir.clone(),
            seed: 3,
            teacher: None,
            resume: true,
            accuracy: None,
        };
        learn(&rt, &req, &AtomicBool::new(false), &mut |_| {}).await
    };
    let chatter = |id: usize| {
        let (rt, faults_done, ok_after, failed_during) =
            (&rt, &faults_done, &ok_after, &failed_during);
        async move {
            for turn in 0.. {
                let done = faults_done.get();
                let r = tokio::time::timeout(
                    TURN_TIMEOUT,
                    chat_turn(rt, request(id * 100 + turn), false, None),
                )
                .await
                .unwrap_or_else(|_| panic!("chat {id} turn {turn} hung"));
                match r {
                    Ok(_) => {
                        if done {
                            ok_after.set(ok_after.get() + 1);
                        }
                    }
                    // Only while actors are being made to panic.
                    Err(e) => {
                        assert!(!done, "chat {id} failed after the faults: {e}");
                        failed_during.set(failed_during.get() + 1);
                    }
                }
                if done && ok_after.get() >= 2 * CHATTERS {
                    break;
                }
            }
        }
    };
    let faults = async {
        for kind in ActorKind::ALL {
            tokio::time::sleep(FAULT_GAP).await;
            let err = rt.inject_fault(kind.name()).await.unwrap_err().to_string();
            assert!(err.contains("panicked"), "{}: {err}", kind.name());
            let pong = rt.ping(kind.name()).await.unwrap();
            assert_eq!(pong.restarts, 1, "{}", kind.name());
        }
        faults_done.set(true);
    };
    let chats = futures_util::future::join_all((0..CHATTERS).map(chatter));
    let (report, _, _) = tokio::join!(session, chats, faults);

    let r = report.expect("the session outlives the panics");
    assert_eq!(r.stopped_by, "time");
    assert!(r.questions_asked > 0 && r.rounds > 0, "{r:?}");
    assert!(r.step_after > r.step_before);
    assert!(ok_after.get() >= 2 * CHATTERS);
    eprintln!(
        "{} chat turns failed while actors panicked; {} succeeded after; the session asked {} questions, trained {} rounds to step {}",
        failed_during.get(),
        ok_after.get(),
        r.questions_asked,
        r.rounds,
        r.step_after
    );
    for kind in ActorKind::ALL {
        let pong = rt.ping(kind.name()).await.unwrap();
        assert_eq!(pong.restarts, 1, "{}", kind.name());
    }
    rt.shutdown().await;
}
