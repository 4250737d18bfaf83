//! `thau bench serve` ([`serve_bench`]): N concurrent WebSocket chats against a server on
//! this machine — aggregate tokens/s, time to first token (p50/p99) and the ratio to one
//! session, which the batching decode thread ([`crate::model::decode::batch`]) is there to raise —
//! and `thau bench load` ([`load_bench`]): many sessions chatting for a while, with errors
//! and p50/p99 latency. Both run against [`with_bench_server`], a server on a free local
//! port.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::ThauConfig;
use crate::error::{Result, ThauError};
use crate::home::Home;

/// How long one chat of the benchmark may take.
const CHAT_TIMEOUT: Duration = Duration::from_secs(600);

/// What one round (N sessions at once) measured.
#[derive(Debug, Clone, Serialize)]
pub struct ServeRound {
    pub sessions: usize,
    pub tokens: usize,
    pub seconds: f64,
    /// Tokens of every session over the round's wall time.
    pub aggregate_tokens_per_s: f64,
    /// `aggregate_tokens_per_s` over the first round's (one session, when asked first).
    pub ratio_to_first: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub per_session_tokens_per_s: f64,
    /// Rows per batched decoding step during the round (how many sessions shared a pass).
    pub mean_batch: f64,
    /// Seconds the decode thread spent in batched steps (prompt prefills included)
    /// during the round.
    pub step_seconds: f64,
    /// Mean length of the round's prompts, in tokens.
    pub mean_prompt_tokens: f64,
}

/// One chat: time to the first streamed piece, and the tokens of the answer.
fn one_chat(
    addr: SocketAddr,
    prompt: &str,
    tokens: usize,
    seed: u64,
    start: &Barrier,
) -> Result<(Duration, usize)> {
    let err = |e: &dyn std::fmt::Display| ThauError::Runtime(format!("bench chat: {e}"));
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws/chat")).map_err(|e| err(&e))?;
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        let _ = s.set_read_timeout(Some(CHAT_TIMEOUT));
    }
    let read = |ws: &mut tungstenite::WebSocket<_>| -> Result<Value> {
        loop {
            if let tungstenite::Message::Text(t) = ws.read().map_err(|e| err(&e))? {
                return serde_json::from_str(t.as_str()).map_err(|e| err(&e));
            }
        }
    };
    read(&mut ws)?; // session.created
    start.wait();
    let t0 = Instant::now();
    let msg = json!({
        "type": "message.create", "message": prompt, "max_tokens": tokens,
        "temperature": 0.0, "seed": seed,
    });
    ws.send(tungstenite::Message::text(msg.to_string()))
        .map_err(|e| err(&e))?;
    let mut first = None;
    loop {
        let v = read(&mut ws)?;
        match v["type"].as_str() {
            Some("response.delta") => {
                first.get_or_insert_with(|| t0.elapsed());
            }
            Some("response.done") => {
                let n = v["tokens"].as_u64().unwrap_or(0) as usize;
                let _ = ws.close(None);
                return Ok((first.unwrap_or_else(|| t0.elapsed()), n));
            }
            Some("error") => return Err(err(&v["message"])),
            _ => {}
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs one round per entry of `sessions` against the server at `addr`, each chat asking
/// for `tokens` tokens (greedy, so every round decodes the same work per session); `stats`
/// reads the decode thread's counters. A first, unmeasured chat warms the server up (the
/// first request pays for page faults and lazy setup).
pub fn run_rounds(
    addr: SocketAddr,
    sessions: &[usize],
    tokens: usize,
    prompt: &str,
    stats: &dyn Fn() -> Option<crate::model::decode::batch::EngineStats>,
) -> Result<Vec<ServeRound>> {
    one_chat(addr, prompt, tokens, 0, &Barrier::new(1))?;
    let mut rounds: Vec<ServeRound> = Vec::new();
    for &n in sessions {
        let before = stats().unwrap_or_default();
        let barrier = Arc::new(Barrier::new(n + 1));
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let b = barrier.clone();
                let prompt = format!("{prompt} ({i})");
                std::thread::spawn(move || one_chat(addr, &prompt, tokens, i as u64, &b))
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let mut ttft = Vec::with_capacity(n);
        let mut total = 0;
        for h in handles {
            let (first, toks) = h
                .join()
                .map_err(|_| ThauError::Runtime("a bench client panicked".into()))??;
            ttft.push(first.as_secs_f64() * 1e3);
            total += toks;
        }
        let secs = t0.elapsed().as_secs_f64();
        let after = stats().unwrap_or_default();
        let steps = after.steps.saturating_sub(before.steps);
        ttft.sort_by(f64::total_cmp);
        let agg = total as f64 / secs.max(1e-9);
        let first_agg = rounds.first().map_or(agg, |r| r.aggregate_tokens_per_s);
        rounds.push(ServeRound {
            sessions: n,
            tokens: total,
            seconds: secs,
            aggregate_tokens_per_s: agg,
            ratio_to_first: agg / first_agg.max(1e-9),
            ttft_p50_ms: percentile(&ttft, 50.0),
            ttft_p99_ms: percentile(&ttft, 99.0),
            per_session_tokens_per_s: agg / n as f64,
            mean_batch: after.rows.saturating_sub(before.rows) as f64 / steps.max(1) as f64,
            step_seconds: after.step_seconds - before.step_seconds,
            mean_prompt_tokens: after.prefill_tokens.saturating_sub(before.prefill_tokens) as f64
                / after.prefills.saturating_sub(before.prefills).max(1) as f64,
        });
    }
    Ok(rounds)
}

/// Writes an untrained age-`age` model (a tokenizer trained on `corpus`, seeded random
/// weights) into `home`: decoding speed does not depend on what the weights learned.
pub fn fresh_model(
    home: &crate::home::Home,
    corpus: &std::path::Path,
    age: u32,
    vocab_size: usize,
    context: usize,
    seed: u64,
) -> Result<()> {
    use crate::model::transformer::init_weights;
    home.init()?;
    let corpus = crate::model::data::Corpus::load(corpus)?;
    let tok = crate::model::tokenizer::ThauTokenizer::train(
        corpus.examples.iter().map(|e| e.text()),
        vocab_size,
    )?;
    let cfg = crate::model::ModelConfig::for_age(age, tok.vocab_size(), context)?;
    let dev = candle_core::Device::Cpu;
    let vm = init_weights(&cfg, seed, candle_core::DType::F32, &dev)?;
    let weights = crate::model::transformer::tensors_of(&vm)?;
    crate::model::checkpoint::save(
        &home.age_checkpoint(age),
        0,
        &cfg,
        &tok,
        &weights,
        None,
        None,
    )?;
    Ok(())
}

/// What `thau bench load` measured: many sessions chatting at once for a while.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Sessions opened.
    pub sessions: usize,
    /// Sessions still connected and answering when the time was up.
    pub held: usize,
    pub seconds: f64,
    /// Turns answered in full.
    pub turns: usize,
    /// Failed connects, error replies and dropped connections.
    pub errors: usize,
    /// The first few errors, for the report.
    pub error_samples: Vec<String>,
    pub turns_per_s: f64,
    /// Latency of one whole turn (message sent → `response.done`).
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

/// Errors kept verbatim in a [`LoadReport`].
const ERROR_SAMPLES: usize = 5;

/// One session of the load: connects, waits for the others, then chats turn after turn
/// until `until`. Returns the turn latencies, and the error that ended it early.
fn load_session(
    addr: SocketAddr,
    id: usize,
    tokens: usize,
    start: &Barrier,
    until: &std::sync::OnceLock<Instant>,
) -> (Vec<f64>, Option<String>) {
    let mut lat = Vec::new();
    let conn = tungstenite::connect(format!("ws://{addr}/ws/chat"));
    start.wait();
    let mut ws = match conn {
        Ok((ws, _)) => ws,
        Err(e) => return (lat, Some(format!("connect: {e}"))),
    };
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        let _ = s.set_read_timeout(Some(CHAT_TIMEOUT));
    }
    let until = *until.wait();
    let mut turn = 0u64;
    while Instant::now() < until {
        let t0 = Instant::now();
        let msg = json!({
            "type": "message.create", "message": format!("Tell me about the fox number {id}"),
            "max_tokens": tokens, "temperature": 0.0, "seed": turn,
        });
        if let Err(e) = ws.send(tungstenite::Message::text(msg.to_string())) {
            return (lat, Some(format!("send: {e}")));
        }
        turn += 1;
        loop {
            let v: Value = match ws.read() {
                Ok(tungstenite::Message::Text(t)) => match serde_json::from_str(t.as_str()) {
                    Ok(v) => v,
                    Err(e) => return (lat, Some(format!("bad frame: {e}"))),
                },
                Ok(tungstenite::Message::Close(c)) => {
                    return (lat, Some(format!("closed by the server: {c:?}")))
                }
                Ok(_) => continue,
                Err(e) => return (lat, Some(format!("read: {e}"))),
            };
            match v["type"].as_str() {
                Some("response.done") => break,
                Some("error") => return (lat, Some(format!("error reply: {}", v["message"]))),
                _ => {}
            }
        }
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let _ = ws.close(None);
    (lat, None)
}

/// Opens `sessions` WebSocket chats to `addr` at once and keeps each chatting (turns of
/// `tokens` tokens, one after another) for `duration`.
pub fn run_load(
    addr: SocketAddr,
    sessions: usize,
    duration: Duration,
    tokens: usize,
) -> Result<LoadReport> {
    let barrier = Arc::new(Barrier::new(sessions + 1));
    let until = Arc::new(std::sync::OnceLock::new());
    let handles: Vec<_> = (0..sessions)
        .map(|i| {
            let (b, u) = (barrier.clone(), until.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || load_session(addr, i, tokens, &b, &u))
                .map_err(|e| ThauError::Runtime(format!("bench thread: {e}")))
        })
        .collect::<Result<_>>()?;
    // Every session is connected (or failed to): the clock starts now.
    barrier.wait();
    let t0 = Instant::now();
    let _ = until.set(t0 + duration);
    let (mut lat, mut errors, mut samples, mut held) = (Vec::new(), 0, Vec::new(), 0);
    for h in handles {
        let (l, e) = h
            .join()
            .map_err(|_| ThauError::Runtime("a bench client panicked".into()))?;
        lat.extend(l);
        match e {
            None => held += 1,
            Some(e) => {
                errors += 1;
                if samples.len() < ERROR_SAMPLES {
                    samples.push(e);
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(LoadReport {
        sessions,
        held,
        seconds: secs,
        turns: lat.len(),
        errors,
        error_samples: samples,
        turns_per_s: lat.len() as f64 / secs.max(1e-9),
        latency_p50_ms: percentile(&lat, 50.0),
        latency_p99_ms: percentile(&lat, 99.0),
        latency_max_ms: lat.last().copied().unwrap_or(0.0),
    })
}

/// What every chat of `thau bench serve` asks (each session adds its number).
const SERVE_PROMPT: &str = "Tell me about the red fox";

/// Runs `client` on a blocking thread against a server on a free local port, over the
/// data directory's newest model (else an untrained age-0 one, trained on `corpus`'s
/// tokenizer), admitting `max_sessions` sessions with no turn rate limit (the benchmarks
/// measure the server, not its admission limits). `client` gets the server's address and a
/// reader of the decode thread's counters. Returns what the client measured and which
/// model it was.
pub fn with_bench_server<T: Send + 'static>(
    home: Home,
    mut config: ThauConfig,
    corpus: &std::path::Path,
    max_sessions: usize,
    progress: &mut dyn FnMut(&str),
    client: impl FnOnce(
            SocketAddr,
            &dyn Fn() -> Option<crate::model::decode::batch::EngineStats>,
        ) -> Result<T>
        + Send
        + 'static,
) -> Result<(T, &'static str)> {
    use crate::server::{serve, AppState, ServeOptions};
    let tmp = tempfile::tempdir().map_err(|e| ThauError::io(std::env::temp_dir(), e))?;
    let (home, model) = if crate::model::checkpoint::newest(&home.checkpoints())?.is_some() {
        (home, "the data directory's newest checkpoint")
    } else {
        let fresh = Home::new(tmp.path().join("home"));
        progress("no model in the data directory: an untrained age-0 model it is");
        let vocab = config.model.vocab_size;
        fresh_model(
            &fresh,
            corpus,
            0,
            vocab,
            config.model.context_length,
            config.seed,
        )?;
        (fresh, "an untrained age-0 model")
    };
    config.server.max_sessions = max_sessions;
    config.server.turns_per_minute = 0;
    crate::commands::with_runtime(home, config, |rt| async move {
        let rt = Arc::new(rt);
        let state = AppState::new(rt.clone(), None);
        let opts = ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let server = tokio::spawn(async move {
            serve(
                state,
                &opts,
                move |addr| {
                    let _ = addr_tx.send(addr);
                },
                async move {
                    let _ = stop_rx.await;
                },
            )
            .await
        });
        let rt2 = rt.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let addr = addr_rx
                .recv()
                .map_err(|_| ThauError::Runtime("the server did not start".into()))?;
            client(addr, &|| rt2.decode_stats())
        })
        .await
        .map_err(|e| ThauError::Runtime(format!("bench: {e}")))?;
        let _ = stop_tx.send(());
        let _ = server.await;
        if let Ok(rt) = Arc::try_unwrap(rt) {
            rt.shutdown().await;
        }
        Ok((measured?, model))
    })
}

/// What `thau bench serve` measured, and on which model.
#[derive(Debug, Clone, Serialize)]
pub struct ServeBenchReport {
    pub model: &'static str,
    pub rounds: Vec<ServeRound>,
    /// Tokens asked of each chat.
    #[serde(skip)]
    pub tokens: usize,
}

/// `thau bench serve`: a server on a free local port, then a round of concurrent chats
/// of `tokens` tokens for each count in `sessions`.
pub fn serve_bench(
    home: Home,
    config: ThauConfig,
    corpus: &std::path::Path,
    sessions: &[usize],
    tokens: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<ServeBenchReport> {
    if sessions.is_empty() || sessions.contains(&0) {
        return Err(ThauError::Invalid(
            "--sessions takes counts above 0, e.g. 1,8,32".into(),
        ));
    }
    let counts = sessions.to_vec();
    let most = sessions.iter().max().copied().unwrap_or(1) + 1;
    let (rounds, model) =
        with_bench_server(home, config, corpus, most, progress, move |addr, stats| {
            run_rounds(addr, &counts, tokens, SERVE_PROMPT, stats)
        })?;
    Ok(ServeBenchReport {
        model,
        rounds,
        tokens,
    })
}

/// What `thau bench load` measured, and on which model.
#[derive(Debug, Clone, Serialize)]
pub struct LoadBenchReport {
    pub model: &'static str,
    pub load: LoadReport,
    /// Seconds asked for (`load.seconds` is what the sessions took).
    #[serde(skip)]
    pub seconds: f64,
    /// Tokens asked of each answer.
    #[serde(skip)]
    pub tokens: usize,
}

/// `thau bench load`: `clients` sessions chatting for `seconds`, answers of `tokens`
/// tokens, against a server on a free local port.
pub fn load_bench(
    home: Home,
    config: ThauConfig,
    corpus: &std::path::Path,
    clients: usize,
    seconds: f64,
    tokens: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<LoadBenchReport> {
    if clients == 0 || tokens == 0 || !seconds.is_finite() || seconds <= 0.0 {
        return Err(ThauError::Invalid(
            "--clients, --turn-tokens and --seconds must be above 0".into(),
        ));
    }
    let duration = Duration::from_secs_f64(seconds);
    let (load, model) =
        with_bench_server(home, config, corpus, clients, progress, move |addr, _| {
            run_load(addr, clients, duration, tokens)
        })?;
    Ok(LoadBenchReport {
        model,
        load,
        seconds,
        tokens,
    })
}
