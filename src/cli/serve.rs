//! The commands that run the actors: `thau status`, `thau serve` and `thau chat`.
//! `thau serve` prints its address as soon as it listens (a [`Listening`] report, printed
//! then) and its shutdown notes at the end; `thau chat` is interactive: it reads stdin
//! and streams each answer to stdout as it is decoded, and its report is only the closing
//! note on standard error.

use serde::Serialize;
use thau::commands::with_runtime;
use thau::config::ThauConfig;
use thau::home::Home;
use thau::runtime::Runtime;
use thau::Result;

use super::args::{ChatArgs, ServeArgs};
use super::report::print;

/// `thau status`: the actors, the model and the stores.
pub fn status(home: Home, config: ThauConfig) -> Result<thau::status::StatusReport> {
    with_runtime(home, config, |rt| async move {
        let report = thau::status::report(&rt).await;
        rt.shutdown().await;
        Ok(report)
    })
}

/// Where `thau serve` listens, printed as soon as it does.
#[derive(Debug, Serialize)]
pub struct Listening {
    /// `http://HOST:PORT`.
    pub listening: String,
    /// Whether POST routes need the API key.
    #[serde(skip)]
    pub keyed: bool,
}

/// How `thau serve` ended: what the actors' shutdown reported.
#[derive(Debug, Serialize)]
pub struct Stopped {
    pub shutdown_errors: Vec<String>,
    /// Requests still held the runtime, so the actors stop with the process.
    pub runtime_held: bool,
}

/// `thau serve`: starts the runtime and the HTTP API; Ctrl-C (or SIGTERM) stops accepting,
/// lets requests in flight finish, then shuts the actors down (flushing their stores).
/// With `--learn`, learning sessions run in the server until then (the one running ends
/// its round and writes its record first).
pub fn serve(home: Home, config: ThauConfig, a: ServeArgs, json: bool) -> Result<Stopped> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use thau::commands::keep_learning::{keep_learning, LearningStatus};
    use thau::server::{serve, AppState, ServeOptions};
    home.init()?;
    let opts = ServeOptions {
        addr: a.addr,
        api_key: std::env::var("THAU_API_KEY").ok().filter(|k| !k.is_empty()),
    };
    let learning = (a.learn || config.server.learn).then(|| {
        let request = thau::commands::learn::LearnRequest {
            minutes: None,
            questions: None,
            corpus: a
                .corpus
                .clone()
                .unwrap_or_else(|| config.server.learn_corpus.clone().into()),
            seed: config.seed,
            teacher: None,
            resume: true,
            accuracy: None,
        };
        (request, config.server.learn_minutes.max(0.1))
    });
    let marker_path = home.serve_marker();
    with_runtime(home, config, |rt| async move {
        let rt = std::sync::Arc::new(rt);
        let mut state = AppState::new(rt.clone(), opts.api_key.clone());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        // On the actors' own (single-threaded) runtime: a session's progress callback is
        // not `Send`. The Learner trains on its own thread, so serving is not held up.
        let learner = learning.map(|(request, minutes)| {
            let status = std::sync::Arc::new(LearningStatus::default());
            state.learning = Some(status.clone());
            actix::spawn(keep_learning(
                rt.clone(),
                request,
                minutes,
                stop.clone(),
                status,
            ))
        });
        let hangup = tokio::spawn(thau::server::reload_on_hangup(rt.clone()));
        let keyed = opts.api_key.is_some();
        serve(
            state,
            &opts,
            |addr| {
                // Other commands read it to say who holds the stores (removed below).
                let marker = serde_json::json!({ "pid": std::process::id(), "addr": format!("http://{addr}") });
                if let Err(e) = thau::fsutil::atomic_write(&marker_path, marker.to_string().as_bytes()) {
                    tracing::warn!(error = %e, "could not write the serve marker");
                }
                let listening = Listening {
                    listening: format!("http://{addr}"),
                    keyed,
                };
                print(&listening, json);
            },
            Runtime::wait_for_signal(),
        )
        .await?;
        let _ = std::fs::remove_file(&marker_path);
        // They hold the runtime: stop them before the actors are shut down.
        hangup.abort();
        let _ = hangup.await;
        stop.store(true, Ordering::SeqCst);
        if let Some(l) = learner {
            let _ = l.await;
        }
        Ok(match std::sync::Arc::try_unwrap(rt) {
            Ok(rt) => Stopped {
                shutdown_errors: rt.shutdown().await.iter().map(|e| e.to_string()).collect(),
                runtime_held: false,
            },
            Err(_) => Stopped {
                shutdown_errors: Vec::new(),
                runtime_held: true,
            },
        })
    })
}

/// How `thau chat` ended.
#[derive(Debug, Serialize)]
pub struct ChatEnded {
    /// The conversation's name.
    pub session: String,
    /// Whether a person typed it (a scripted chat ends silently).
    pub interactive: bool,
}

/// `thau chat`: a conversation on stdin/stdout, each answer streamed as it is decoded.
pub fn chat(home: Home, config: ThauConfig, args: ChatArgs) -> Result<ChatEnded> {
    home.init()?;
    let opts = thau::commands::chat::ChatOptions {
        session: args.session,
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        seed: args.seed,
        memory: args.no_memory.then_some(false),
    };
    with_runtime(home, config, |rt| async move {
        use std::io::IsTerminal;
        let stdin = std::io::stdin();
        let interactive = stdin.is_terminal();
        let r = thau::commands::chat::chat(
            &rt,
            &opts,
            &mut stdin.lock(),
            &mut std::io::stdout(),
            interactive,
        )
        .await;
        rt.shutdown().await;
        Ok(ChatEnded {
            session: r?,
            interactive,
        })
    })
}
