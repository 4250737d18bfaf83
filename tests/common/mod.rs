//! Helpers shared by the integration tests: a tiny corpus, tokenizer, model shape and
//! training options in one call; a local JSON-over-HTTP server for client tests.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::path::Path;

pub mod learning;
pub mod webdriver;

use thau::model::data::Corpus;
use thau::model::tokenizer::ThauTokenizer;
use thau::model::train::TrainOptions;
use thau::model::ModelConfig;

/// Vocabulary of the tokenizers trained on tiny corpora.
pub const TINY_VOCAB: usize = 300;

/// Everything a tiny training run needs (not every test binary reads every field).
#[allow(dead_code)]
pub struct Tiny {
    pub corpus: Corpus,
    pub tok: ThauTokenizer,
    pub cfg: ModelConfig,
    pub opts: TrainOptions,
}

/// Writes `files` (name, content) into `dir` and prepares a tiny model over them:
/// a [`TINY_VOCAB`]-token tokenizer, [`ModelConfig::tiny`] with `max_seq_len`, and options
/// for windows of `seq_len` tokens without a held-out split (tests set the rest).
pub fn tiny(dir: &Path, files: &[(&str, String)], max_seq_len: usize, seq_len: usize) -> Tiny {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let corpus = Corpus::load(dir).unwrap();
    let tok = ThauTokenizer::train(corpus.examples.iter().map(|e| e.text()), TINY_VOCAB).unwrap();
    let mut cfg = ModelConfig::tiny(tok.vocab_size());
    cfg.max_seq_len = max_seq_len;
    let opts = TrainOptions {
        batch_size: 4,
        seq_len,
        warmup: 5,
        heldout: 0.0,
        ..Default::default()
    };
    Tiny {
        corpus,
        tok,
        cfg,
        opts,
    }
}

/// A data directory with a tiny model trained from nothing (random weights, saved as an
/// age-0 checkpoint), so chat has something to answer with.
pub fn home_with_model(dir: &Path) -> thau::home::Home {
    let home = thau::home::Home::new(dir.join("home"));
    home.init().unwrap();
    let data = dir.join("corpus");
    std::fs::create_dir_all(&data).unwrap();
    let text = paragraphs(20, |i| format!("The red fox {i} runs in the snow."));
    let t = tiny(&data, &[("fox.txt", text)], 64, 32);
    let trainer = thau::model::train::Trainer::new(
        t.cfg,
        t.tok,
        &t.corpus,
        t.opts,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    trainer.save(&home.age_checkpoint(0)).unwrap();
    home
}

/// Runs the `thau` binary on the data directory `home` with `args`.
pub fn thau(home: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_thau"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("run thau")
}

/// The JSON a successful `thau --json …` run printed.
pub fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `n` paragraphs made by `f`, separated by blank lines.
pub fn paragraphs(n: usize, f: impl Fn(usize) -> String) -> String {
    (0..n).map(|i| f(i) + "\n\n").collect()
}

/// What a [`json_server`] was asked: (path, JSON body) per request.
pub type Asked = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// A local HTTP server for tests of HTTP clients (teachers, image servers): answers each
/// POST with `reply(path, body)` and records what it was asked.
pub fn json_server(
    reply: impl Fn(&str, &serde_json::Value) -> (u16, String) + Send + 'static,
) -> (String, Asked) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked: Asked = Default::default();
    let log = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            let (head_end, len) = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (None, 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    break (Some(i + 4), len);
                }
            };
            let Some(start) = head_end else { continue };
            while buf.len() < start + len {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..start]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let body: serde_json::Value =
                serde_json::from_slice(&buf[start..(start + len).min(buf.len())])
                    .unwrap_or_default();
            let (status, text) = reply(&path, &body);
            log.lock().unwrap().push((path, body));
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, asked)
}

/// A `thau serve` a test started on a free local port.
pub struct TestServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<thau::Result<()>>,
}

/// Serves `rt` (with `api_key` required when given) on 127.0.0.1:0, inside the test's
/// actix system; the bound address arrives on the returned channel.
pub fn start_server(
    rt: std::sync::Arc<thau::runtime::Runtime>,
    api_key: Option<&str>,
) -> (std::sync::mpsc::Receiver<std::net::SocketAddr>, TestServer) {
    serve_state(
        thau::server::AppState::new(rt, api_key.map(str::to_string)),
        api_key,
    )
}

/// [`start_server`] with a state the test built itself (learning in the server, say).
pub fn serve_state(
    state: thau::server::AppState,
    api_key: Option<&str>,
) -> (std::sync::mpsc::Receiver<std::net::SocketAddr>, TestServer) {
    use thau::server::{serve, ServeOptions};
    let opts = ServeOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        api_key: api_key.map(str::to_string),
    };
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        serve(
            state,
            &opts,
            move |a| addr_tx.send(a).unwrap(),
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
    });
    (addr_rx, TestServer { stop, task })
}

impl TestServer {
    /// Stops accepting, lets requests in flight finish, and checks the server ended well.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}
