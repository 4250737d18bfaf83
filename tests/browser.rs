//! The web page in headless Chromium (through chromedriver): a chat message gets a
//! streamed reply, an image request shows its picture, a memory search finds a stored
//! fact, a fact taught in the Teach panel is a source of the next answer, and the
//! learning dashboard draws a loss curve. Screenshots of each step are kept
//! in `target/browser-artifacts/`. `.ci/run` installs Debian's `chromium` and
//! `chromium-driver`; elsewhere, without them, the test says so and passes only outside CI.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::learning::{prepared, settings, tiny_checkpoint};
use common::webdriver::{installed, Driver};
use serde_json::{json, Value};
use thau::commands::learn::{learn, LearnRequest};
use thau::config::ThauConfig;
use thau::runtime::Runtime;

/// Longest wait for anything on the page (a chat turn of the tiny model takes well under).
const WAIT: Duration = Duration::from_secs(60);

fn artifacts() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts")
}

/// Waits until the page's chat is connected.
fn connected(d: &Driver) {
    d.wait(WAIT, "the chat to connect", |d| {
        d.text("#chat-status").contains("Connected").then_some(())
    });
}

/// Searches the memory inspector for `query`, and shows the item that holds `text`.
fn show_memory(d: &Driver, query: &str, text: &str) {
    d.type_text("#memory-query", query);
    d.click("#memory-form button[type=submit]");
    d.wait(WAIT, "the search results", |d| {
        d.text("#memory-items").contains(text).then_some(())
    });
    d.script(
        "[...document.querySelectorAll('#memory-items li')]
           .find(li => li.textContent.includes(arguments[0]))
           .querySelector('button').click();",
        json!([text]),
    );
}

#[actix::test]
async fn the_page_chats_draws_finds_memories_and_plots_learning() {
    if installed().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and chromium-driver (.ci/run does)"
        );
        eprintln!("SKIPPED: chromium / chromium-driver are not installed (apt-get install chromium chromium-driver)");
        return;
    }
    let (_dir, corpus_dir, home) = prepared();
    tiny_checkpoint(&home, &corpus_dir, &settings());
    // A 256-token context, as THAU's own models have (RoPE has no learned positions, so
    // the same weights read it): room for recalled memories beside the page's default
    // answer length.
    let ck = thau::model::checkpoint::newest(&home.checkpoints())
        .unwrap()
        .unwrap();
    let cfg_path = ck.join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["max_seq_len"] = json!(256);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let rt = Arc::new(Runtime::start(home, ThauConfig::default()).unwrap());
    // A short learning session, so that the dashboard has a recorded loss curve.
    let req = LearnRequest {
        minutes: None,
        questions: Some(8),
        corpus: corpus_dir.clone(),
        seed: 3,
        teacher: None,
        resume: false,
        accuracy: None,
    };
    let report = learn(&rt, &req, &AtomicBool::new(false), &mut |_| {})
        .await
        .unwrap();
    assert!(report.curve.len() >= 2, "{report:?}");
    let (addr_rx, server) = common::start_server(rt.clone(), None);
    // The page asks for a second session once the dashboard is open, to watch it live.
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let checks = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        let base = format!("http://{addr}");
        let fact = json!({"text": "The capital of Peru is Lima.", "source": "test"});
        let stored = ureq::post(format!("{base}/memory/store"))
            .send_json(&fact)
            .unwrap();
        assert_eq!(stored.status().as_u16(), 201);

        let d = Driver::start();
        d.goto(&format!("{base}/"));
        connected(&d);
        d.screenshot(&artifacts().join("0-page.png"));

        // A message, and its reply streamed in: the reply's text changes several times.
        d.script(
            "window.pieces = 0; new MutationObserver(() => window.pieces++)
               .observe(document.getElementById('messages'), {subtree: true, characterData: true, childList: true});",
            json!([]),
        );
        d.type_text("#chat-input", "What colour is the sky number 00?");
        d.click("#chat-send");
        d.wait(WAIT, "the reply to finish", |d| {
            d.find("#messages li.assistant .feedback")
        });
        let reply = d.text("#messages li.assistant .text");
        assert!(!reply.trim().is_empty(), "an empty reply");
        let pieces = d
            .script("return window.pieces;", json!([]))
            .as_u64()
            .unwrap();
        assert!(pieces >= 3, "the reply arrived in {pieces} DOM updates");
        d.screenshot(&artifacts().join("1-chat.png"));

        // An image request: the picture is shown and has loaded.
        d.type_text("#chat-input", "Draw a picture of a red fox in the snow");
        d.click("#chat-send");
        let size = d.wait(WAIT, "the picture", |d| {
            let v = d.script(
                "const i = document.querySelector('#messages img');
                 return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null;",
                json!([]),
            );
            (!v.is_null()).then_some(v)
        });
        assert!(size[0].as_u64().unwrap() >= 64, "{size}");
        d.screenshot(&artifacts().join("2-image.png"));

        // The memory inspector finds the stored fact.
        d.click("#tab-memory");
        show_memory(&d, "capital of Peru", "Lima");
        d.wait(WAIT, "the item", |d| {
            d.text("#memory-detail")
                .contains("\"source\": \"test\"")
                .then_some(())
        });
        d.screenshot(&artifacts().join("3-memory.png"));

        // The Teach panel: a fact taught on the page is a source of the next answer.
        d.type_text("#teach-text", "Orvel is old.");
        d.click("#teach-send");
        d.wait(WAIT, "the fact to be stored", |d| {
            d.text("#teach-status")
                .contains("Stored 1 new")
                .then_some(())
        });
        // The memory inspector shows it, from the page.
        show_memory(&d, "Orvel", "Orvel is old.");
        d.wait(WAIT, "its source", |d| {
            d.text("#memory-detail")
                .contains("taught:page")
                .then_some(())
        });
        // The next answer, in a new conversation, uses it as a source.
        d.click("#tab-chat");
        d.script("sessionStorage.clear(); location.reload();", json!([]));
        connected(&d);
        d.type_text("#chat-input", "Who is Orvel?");
        d.click("#chat-send");
        d.wait(WAIT, "the answer and its sources", |d| {
            d.text("#messages .sources")
                .contains("taught:page")
                .then_some(())
        });
        d.screenshot(&artifacts().join("3b-taught.png"));

        // The dashboard plots the recorded session's loss curve.
        d.click("#tab-learning");
        let caption = d.wait(WAIT, "the loss curve", |d| {
            let c = d.text("#loss-caption");
            c.contains("rounds").then_some(c)
        });
        let drawn: Value = d.script(
            "const c = document.getElementById('loss-chart');
             const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0;
             for (let i = 0; i < px.length; i += 4) if (px[i] < 80 && px[i + 2] > 140 && px[i + 3] > 0) n++;
             return n;",
            json!([]),
        );
        assert!(
            drawn.as_u64().unwrap() > 100,
            "curve pixels: {drawn} ({caption})"
        );
        assert_ne!(d.text("#fig-params"), "–");
        d.screenshot(&artifacts().join("4-learning.png"));

        // Live: a session started now shows its rounds as they happen.
        let before = d.text("#fig-asked");
        go_tx.send(()).unwrap();
        d.wait(WAIT, "a live training round", |d| {
            d.text("#events").contains("Round ").then_some(())
        });
        assert_ne!(d.text("#fig-asked"), before, "questions asked did not move");
        d.screenshot(&artifacts().join("5-live.png"));
    });
    let live = async {
        if go_rx.await.is_ok() {
            // More questions than the first session's: its items are known by now, and
            // a round needs new gaps.
            let again = LearnRequest {
                seed: 4,
                questions: Some(40),
                ..req
            };
            learn(&rt, &again, &AtomicBool::new(false), &mut |_| {})
                .await
                .unwrap();
        }
    };
    let (r, ()) = tokio::join!(checks, live);
    server.stop().await;
    r.unwrap();
}
