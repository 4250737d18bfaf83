//! The APIs THAU speaks, driven by the clients people use: the official `ollama` and
//! `openai` Python packages (`tests/clients/check_clients.py`, every compatible route of
//! the README's table), and clients that go away in the middle of an answer.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use thau::config::ThauConfig;
use thau::home::Home;
use thau::runtime::Runtime;

use crate::common;
use crate::ws::{read, send};

/// Python with the official clients: `$THAU_PYTHON`, else the virtual environment
/// `.ci/run` makes (`target/pyenv`).
fn client_python() -> Option<PathBuf> {
    let p = std::env::var_os("THAU_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python")
        });
    let ok = std::process::Command::new(&p)
        .args(["-c", "import ollama, openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(p)
}

/// A server on a fresh untrained age-0 model with room for long answers.
fn long_answer_home(dir: &std::path::Path) -> Home {
    let home = Home::new(dir.join("home"));
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus/en");
    thau::server::bench::fresh_model(&home, &corpus, 0, 1024, 2048, 5).unwrap();
    home
}

#[actix::test]
async fn the_official_python_clients_work_unchanged() {
    let Some(python) = client_python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Python with the ollama and openai packages (.ci/run installs them)"
        );
        eprintln!("skipped: no Python with the ollama and openai packages (see .ci/run)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(Runtime::start(long_answer_home(dir.path()), ThauConfig::default()).unwrap());
    let (addr_rx, server) = common::start_server(rt.clone(), None);
    let out = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/check_clients.py");
        std::process::Command::new(python)
            .arg(script)
            .arg(format!("http://{addr}"))
            .arg("-v")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    server.stop().await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every check ran and passed (a script that stopped early would print fewer).
    assert!(
        text.lines().filter(|l| l.starts_with("ok ")).count() >= 28,
        "{text}"
    );
}

/// Decoded rows once the decode thread has gone quiet.
fn rows_when_idle(rt: &Runtime) -> u64 {
    let rows = || rt.decode_stats().unwrap().rows;
    let mut last = rows();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = rows();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Sends `body` to `path` on a raw connection, reads until the answer's first piece has
/// come, and hangs up (or, with `stay`, reads the whole answer).
fn hang_up_after_first_piece(
    addr: std::net::SocketAddr,
    path: &str,
    body: &serde_json::Value,
    stay: bool,
) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    // Headers, the opening chunk, then a piece of the answer.
    while !String::from_utf8_lossy(&got).contains("\"content\":\"")
        && !String::from_utf8_lossy(&got).contains("\"response\":\"")
    {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0 && started.elapsed() < Duration::from_secs(60),
            "{}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    if stay {
        let _ = s.read_to_end(&mut got);
    }
    drop(s);
}

#[actix::test]
async fn a_client_that_goes_away_mid_answer_frees_its_decode_slot() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(Runtime::start(long_answer_home(dir.path()), ThauConfig::default()).unwrap());
    let (addr_rx, server) = common::start_server(rt.clone(), None);
    let rt2 = rt.clone();
    let checks = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        // An answer of 600 tokens takes the decode thread a second or so; a client that
        // leaves after its first piece must not keep it decoding.
        let long = 600;
        let msgs = json!([{"role": "user", "content": "tell me everything"}]);
        // A young model ends a chat answer when it likes; one held to a long text does not.
        let long_text = json!({"type": "object", "properties": {"story": {"type": "string", "minLength": 5000}}, "required": ["story"]});
        let cases = [
            ("/v1/chat/completions", json!({"messages": msgs, "max_tokens": long, "stream": true, "temperature": 0,
                "response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": long_text}}})),
            ("/api/chat", json!({"model": "thau", "messages": msgs, "format": long_text, "options": {"num_predict": long, "temperature": 0}})),
            ("/api/generate", json!({"model": "thau", "prompt": "tell me", "raw": true, "options": {"num_predict": long, "temperature": 0}})),
        ];
        for (path, body) in cases {
            // A client that stays gets a long answer (what the one that leaves is spared).
            let before = rows_when_idle(&rt2);
            hang_up_after_first_piece(addr, path, &body, true);
            let decoded = rows_when_idle(&rt2) - before;
            assert!(decoded > long / 2, "{path}: the whole answer took only {decoded} tokens");
            let before = rows_when_idle(&rt2);
            hang_up_after_first_piece(addr, path, &body, false);
            let decoded = rows_when_idle(&rt2) - before;
            assert!(decoded < long / 4, "{path}: {decoded} tokens decoded for a client that left");
        }
        // The WebSocket: the connection closes mid-answer.
        let ws_answer = |stay: bool| {
            let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws/chat")).unwrap();
            assert_eq!(read(&mut ws)["type"], "session.created");
            send(&mut ws, json!({"type": "message.create", "message": "tell me everything", "max_tokens": long, "temperature": 0.0}));
            while read(&mut ws)["type"] != "response.delta" {}
            while stay && read(&mut ws)["type"] != "response.done" {}
        };
        // (This model ends its chat answer after 150 tokens or so: a client that leaves
        // after the first piece spares most of them.)
        let before = rows_when_idle(&rt2);
        ws_answer(true);
        let whole = rows_when_idle(&rt2) - before;
        assert!(whole >= 100, "ws: the whole answer took only {whole} tokens");
        let before = rows_when_idle(&rt2);
        ws_answer(false);
        let decoded = rows_when_idle(&rt2) - before;
        assert!(decoded < whole / 3, "ws: {decoded} of {whole} tokens decoded for a client that left");
    })
    .await;
    server.stop().await;
    if let Err(e) = checks {
        std::panic::resume_unwind(e.into_panic());
    }
}
