//! Running a scenario: [`prepare_home`] gives it a data directory and a model;
//! [`run_steps`] plays its steps against a [`Target`] — the local actors
//! ([`crate::runtime::Runtime`]) or a running `thau serve` ([`super::remote::Remote`]) —
//! checks each step's expectations and writes the transcript.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::remote::{error_text, Remote};
use super::scenario::{Action, Check, Expect, LossExpect, ModelSize, Scenario, Step, TrainSpec};
use crate::actors::episodic_memory::EpisodicStatsRequest;
use crate::actors::long_term_memory::{Memorize, NewMemory};
use crate::actors::reply;
use crate::actors::short_term_memory::{CloseConversation, GetWindow};
use crate::actors::tuner::Feedback;
use crate::chat::{chat_turn, ChatRequest};
use crate::error::{Result, ThauError};
use crate::home::Home;
use crate::learn::tuning::Rating;
use crate::runtime::Runtime;

/// The conversation a scenario's turns go to unless a step names another.
pub const DEFAULT_SESSION: &str = "main";
/// Hits asked of a recall check.
const RECALL_LIMIT: usize = 20;
/// The corpus of a learning step that names none (relative to the working directory).
pub const DEFAULT_LEARN_CORPUS: &str = "data/corpus";
/// Context length of the tiny models scenarios train (room for a few turns of history).
const TINY_CONTEXT: usize = 256;

/// What happened at one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    pub index: usize,
    pub line: Option<usize>,
    pub action: &'static str,
    pub passed: bool,
    /// Each unmet expectation, with what was expected and what came.
    pub failures: Vec<String>,
    pub seconds: f64,
    /// Measured figures that are not part of the transcript (losses, counts that depend
    /// on timing).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub measured: Value,
}

/// Where a scenario's steps go.
pub enum Target<'a> {
    Local(&'a Runtime),
    Remote(&'a mut Remote),
}

/// The result of one say step, as both targets give it.
#[derive(Debug, Clone, Default)]
pub struct Said {
    pub reply: String,
    pub tool_calls: Vec<crate::tools::ToolCall>,
    /// (tool, ok, error message if any)
    pub tool_results: Vec<(String, bool, Option<String>)>,
    pub tokens: usize,
}

/// Trains, copies or reuses the model a scenario asks for into `home`. Trained models are
/// kept in `cache` (one per distinct training spec and seed) so a run of many scenarios
/// trains each model once. Returns a line describing the model.
pub fn prepare_home(sc: &Scenario, home: &Home, cache: Option<&Path>) -> Result<String> {
    home.init()?;
    let age = sc.model.age.unwrap_or(0);
    if let Some(dir) = &sc.model.checkpoint {
        let ck = crate::model::checkpoint::load(dir, &candle_core::Device::Cpu, false)?;
        let step = ck
            .dir
            .file_name()
            .and_then(|n| n.to_str()?.strip_prefix("step_")?.parse().ok())
            .unwrap_or(0);
        crate::model::checkpoint::save(
            &home.age_checkpoint(ck.config.age),
            step,
            &ck.config,
            &ck.tokenizer,
            &ck.weights,
            None,
            None,
        )?;
        return Ok(format!("checkpoint {}", dir.display()));
    }
    let Some(spec) = &sc.model.train else {
        return Ok("no model (a learning step starts a fresh one)".into());
    };
    let key = cache_key(spec, sc.seed, age);
    if let Some(c) = cache {
        let kept = c.join(&key);
        if kept.is_dir() {
            copy_dir(&kept, &home.checkpoints())?;
            return Ok(format!("trained ({} steps, cached)", spec.steps));
        }
    }
    train_model(sc, spec, age, home)?;
    if let Some(c) = cache {
        let tmp = c.join(format!(".{key}.tmp"));
        copy_dir(&home.checkpoints(), &tmp)?;
        std::fs::rename(&tmp, c.join(&key)).map_err(|e| io(c, e))?;
    }
    Ok(format!("trained ({} steps)", spec.steps))
}

fn io(p: &Path, e: impl std::fmt::Display) -> ThauError {
    ThauError::Runtime(format!("{}: {e}", p.display()))
}

/// A file-name-safe digest of what determines a trained model.
fn cache_key(spec: &TrainSpec, seed: u64, age: u32) -> String {
    use std::hash::{Hash, Hasher};
    let text = serde_json::to_string(&(spec, seed, age)).unwrap_or_default();
    // DefaultHasher's keys are fixed (SipHash-1-3 with zero keys): stable within a build.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("model-{:016x}", h.finish())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    for e in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let e = e.map_err(|e| io(from, e))?;
        let dest = to.join(e.file_name());
        if e.file_type().map_err(|er| io(&e.path(), er))?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest).map_err(|er| io(&e.path(), er))?;
        }
    }
    Ok(())
}

/// Trains a tokenizer and a model on the spec's corpus, deterministically for `seed`.
fn train_model(sc: &Scenario, spec: &TrainSpec, age: u32, home: &Home) -> Result<()> {
    use crate::model::data::Corpus;
    use crate::model::tokenizer::ThauTokenizer;
    use crate::model::train::{TrainOptions, Trainer};
    use crate::model::ModelConfig;
    let corpus = match (&spec.corpus, &spec.text) {
        (Some(p), _) => Corpus::load(p)?,
        (None, text) => {
            let dir = home.runs().join("scenario-corpus");
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            let file = dir.join("text.txt");
            crate::fsutil::atomic_write(&file, text.as_deref().unwrap_or("").as_bytes())?;
            Corpus::load(&dir)?
        }
    };
    let tok = ThauTokenizer::train(corpus.examples.iter().map(|e| e.text()), spec.vocab_size)?;
    let cfg = match spec.size {
        ModelSize::Tiny => {
            let mut c = ModelConfig::tiny(tok.vocab_size());
            c.max_seq_len = TINY_CONTEXT.max(spec.seq_len);
            c
        }
        ModelSize::Age => {
            ModelConfig::for_age(age, tok.vocab_size(), TINY_CONTEXT.max(spec.seq_len))?
        }
    };
    let d = TrainOptions::default();
    let opts = TrainOptions {
        batch_size: spec.batch_size,
        seq_len: spec.seq_len,
        lr: spec.lr.unwrap_or(d.lr),
        warmup: (spec.steps / 5).min(d.warmup),
        total_steps: spec.steps,
        heldout: 0.0,
        seed: sc.seed,
        // Every conversation in windows of its own, as chat will ask it: packed behind the
        // corpus's other conversations, a tiny model learns each answer from the one
        // before it (a loss of zero, and nonsense when asked alone).
        chats_apart: true,
        ..d
    };
    let mut trainer = Trainer::new(cfg, tok, &corpus, opts, &candle_core::Device::Cpu)?;
    for _ in 0..spec.steps {
        trainer.step()?;
    }
    trainer.save(&home.age_checkpoint(trainer.config.age))?;
    Ok(())
}

/// Plays every step, appending to `transcript`; stops at nothing (every step is reported).
pub async fn run_steps(
    sc: &Scenario,
    target: &mut Target<'_>,
    transcript: &mut Vec<Value>,
) -> Vec<StepOutcome> {
    let mut turns = 0u64;
    let mut last_turn: Option<String> = None;
    let mut out = Vec::with_capacity(sc.steps.len());
    for (index, step) in sc.steps.iter().enumerate() {
        let start = Instant::now();
        let mut entry = json!({ "step": index });
        let mut failures = Vec::new();
        let mut measured = Value::Null;
        let r = run_step(
            sc,
            step,
            target,
            &mut turns,
            &mut last_turn,
            &mut entry,
            &mut failures,
            &mut measured,
        )
        .await;
        if let Err(e) = r {
            failures.push(format!("the step failed: {e}"));
            entry["failed"] = json!(e.to_string());
        }
        transcript.push(entry);
        out.push(StepOutcome {
            index,
            line: step.line,
            action: step.action.kind(),
            passed: failures.is_empty(),
            failures,
            seconds: start.elapsed().as_secs_f64(),
            measured,
        });
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    sc: &Scenario,
    step: &Step,
    target: &mut Target<'_>,
    turns: &mut u64,
    last_turn: &mut Option<String>,
    entry: &mut Value,
    failures: &mut Vec<String>,
    measured: &mut Value,
) -> Result<()> {
    let x = &step.expect;
    match &step.action {
        Action::Say {
            text,
            session,
            max_tokens,
        } => {
            let session = session.as_deref().unwrap_or(DEFAULT_SESSION).to_string();
            // Turn i samples with seed + i: replays are identical, turns differ.
            let seed = sc.seed.wrapping_add(*turns);
            *turns += 1;
            entry["say"] = json!(text);
            entry["session"] = json!(session);
            let req = ChatRequest {
                session: Some(session.clone()),
                message: text.clone(),
                max_tokens: max_tokens.or(sc.settings.max_tokens),
                temperature: sc.settings.temperature,
                seed: Some(seed),
                memory: None,
                token: None,
            };
            let detect = sc.settings.detect_tools.unwrap_or(true);
            let said = match target {
                Target::Local(rt) => chat_turn(rt, req, detect, None)
                    .await
                    .map(|r| Said {
                        reply: r.reply,
                        tool_calls: r.tool_calls,
                        tool_results: r
                            .tool_results
                            .iter()
                            .map(|t| {
                                let err = (!t.ok).then(|| error_text(&t.content["error"]));
                                (t.name.clone(), t.ok, err)
                            })
                            .collect(),
                        tokens: r.tokens,
                    })
                    .map_err(|e| e.to_string()),
                Target::Remote(r) => r.say(&req, detect)?,
            };
            match &said {
                Ok(s) => {
                    entry["reply"] = json!(s.reply);
                    entry["tokens"] = json!(s.tokens);
                    entry["tool_calls"] = json!(s.tool_calls);
                    entry["tool_results"] = json!(s
                        .tool_results
                        .iter()
                        .map(|(n, ok, e)| json!({ "name": n, "ok": ok, "error": e }))
                        .collect::<Vec<_>>());
                    *last_turn = Some(format!("{session}#{}", *turns - 1));
                }
                Err(e) => entry["error"] = json!(e),
            }
            failures.extend(check_said(x, &said));
        }
        Action::Remember(text) => {
            entry["remember"] = json!(text);
            let stored = match target {
                Target::Local(rt) => {
                    let long = rt.addrs.long_term_memory.clone().ok_or_else(|| {
                        ThauError::Runtime("LongTermMemory is not running".into())
                    })?;
                    chat_result(reply(
                        "long_term_memory",
                        long.send(Memorize(vec![NewMemory {
                            text: text.clone(),
                            source: format!("scenario:{}", sc.name),
                            importance: 0.5,
                            id: None,
                            keys: Vec::new(),
                        }]))
                        .await,
                    ))?
                    .len()
                }
                Target::Remote(r) => r.remember(text)?,
            };
            entry["stored"] = json!(stored);
        }
        Action::Close { session } => {
            let session = session.as_deref().unwrap_or(DEFAULT_SESSION).to_string();
            entry["close"] = json!(session);
            let Target::Local(rt) = target else {
                return Err(remote_only("close"));
            };
            let short = rt
                .addrs
                .short_term_memory
                .clone()
                .ok_or_else(|| ThauError::Runtime("ShortTermMemory is not running".into()))?;
            let filed = chat_result(reply(
                "short_term_memory",
                short.send(CloseConversation(session)).await,
            ))?;
            entry["filed"] = json!(filed);
        }
        Action::Check(c) => {
            let mut seen = serde_json::Map::new();
            check_memory(c, target, &mut seen, failures).await?;
            entry["check"] = Value::Object(seen);
        }
        Action::Learn(l) => {
            let Target::Local(rt) = target else {
                return Err(remote_only("learn"));
            };
            entry["learn"] = json!(l.questions);
            let req = crate::commands::learn::LearnRequest {
                minutes: None,
                questions: Some(l.questions),
                corpus: l
                    .corpus
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_LEARN_CORPUS)),
                seed: sc.seed,
                teacher: None,
                // A scenario's step is a session of its own.
                resume: false,
                accuracy: None,
            };
            let stop = AtomicBool::new(false);
            let r = crate::commands::learn::learn(rt, &req, &stop, &mut |_| {}).await?;
            entry["questions_asked"] = json!(r.questions_asked);
            *measured = json!({
                "gaps_opened": r.gaps.opened, "gaps_closed": r.gaps.closed,
                "probe_loss_before": r.probe_loss_before, "probe_loss_after": r.probe_loss_after,
                "rounds": r.rounds, "step_after": r.step_after,
            });
            if let Some(min) = x.gaps_found {
                let ok = r.gaps.opened >= min;
                entry["gaps_found_met"] = json!(ok);
                if !ok {
                    failures.push(format!(
                        "expected at least {min} gaps found, {} were",
                        r.gaps.opened
                    ));
                }
            }
            if let Some(want) = x.heldout_loss {
                let (b, a) = (r.probe_loss_before, r.probe_loss_after);
                let ok = match want {
                    LossExpect::Decreased => a < b,
                    LossExpect::NotIncreased => a <= b,
                };
                entry["heldout_loss_met"] = json!(ok);
                if !ok {
                    failures.push(format!(
                        "expected the held-out probe loss to be {}: {b:.4} → {a:.4}",
                        if want == LossExpect::Decreased {
                            "lower"
                        } else {
                            "no higher"
                        }
                    ));
                }
            }
        }
        Action::Feedback { up, note } => {
            let rating = if *up { Rating::Up } else { Rating::Down };
            entry["feedback"] = json!(rating);
            let turn = last_turn.clone().ok_or_else(|| {
                ThauError::Invalid("feedback rates the last turn, and nothing was said yet".into())
            })?;
            entry["turn"] = json!(turn);
            let ratings = match target {
                Target::Local(rt) => {
                    let tuner = rt
                        .addrs
                        .tuner
                        .clone()
                        .ok_or_else(|| ThauError::Runtime("the Tuner is not running".into()))?;
                    let session = turn
                        .split('#')
                        .next()
                        .unwrap_or(DEFAULT_SESSION)
                        .to_string();
                    let o = chat_result(reply(
                        "tuner",
                        tuner
                            .send(Feedback {
                                session,
                                turn,
                                rating,
                                note: note.clone(),
                            })
                            .await,
                    ))?;
                    o.ratings.values().sum::<u64>()
                }
                Target::Remote(r) => r.feedback(&turn, rating, note.as_deref())?,
            };
            entry["ratings"] = json!(ratings);
            if let Some(min) = x.ratings {
                if ratings < min {
                    failures.push(format!(
                        "expected at least {min} ratings recorded, {ratings} are"
                    ));
                }
            }
        }
        Action::Wait(ms) => {
            entry["wait_ms"] = json!(ms);
            tokio::time::sleep(Duration::from_millis(*ms)).await;
        }
    }
    Ok(())
}

fn remote_only(kind: &str) -> ThauError {
    ThauError::Invalid(format!(
        "`{kind}` steps need the local actors; they cannot run against --url"
    ))
}

fn chat_result<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| ThauError::Runtime(e.to_string()))
}

/// Memory assertions; what was seen goes into `seen` (the transcript).
async fn check_memory(
    c: &Check,
    target: &mut Target<'_>,
    seen: &mut serde_json::Map<String, Value>,
    failures: &mut Vec<String>,
) -> Result<()> {
    if let Some(e) = &c.episodes {
        let by_kind: BTreeMap<String, u64> = match target {
            Target::Local(rt) => {
                let ep =
                    rt.addrs.episodic_memory.clone().ok_or_else(|| {
                        ThauError::Runtime("EpisodicMemory is not running".into())
                    })?;
                chat_result(reply(
                    "episodic_memory",
                    ep.send(EpisodicStatsRequest).await,
                ))?
                .by_kind
            }
            Target::Remote(r) => r.episode_counts()?,
        };
        let n = by_kind.get(&e.kind).copied().unwrap_or(0);
        seen.insert("episodes".into(), json!({ "kind": e.kind, "count": n }));
        if let Some(min) = e.min.filter(|m| n < *m) {
            failures.push(format!(
                "expected at least {min} `{}` episodes, found {n}",
                e.kind
            ));
        }
        if let Some(max) = e.max.filter(|m| n > *m) {
            failures.push(format!(
                "expected at most {max} `{}` episodes, found {n}",
                e.kind
            ));
        }
    }
    if let Some(r) = &c.recall {
        let texts: Vec<String> = match target {
            Target::Local(rt) => rt
                .recall(&r.query, RECALL_LIMIT)
                .await?
                .into_iter()
                .map(|h| h.text)
                .collect(),
            Target::Remote(rem) => rem.recall(&r.query, RECALL_LIMIT)?,
        };
        seen.insert("recall".into(), json!({ "query": r.query, "hits": texts }));
        if let Some(min) = r.min_hits.filter(|m| texts.len() < *m) {
            failures.push(format!(
                "expected at least {min} hits recalling {:?}, got {}",
                r.query,
                texts.len()
            ));
        }
        if let Some(want) = &r.contains {
            if !texts.iter().any(|t| t.contains(want.as_str())) {
                failures.push(format!(
                    "no hit recalling {:?} contains {want:?}; hits: {texts:?}",
                    r.query
                ));
            }
        }
    }
    if let Some(w) = &c.window {
        let session = w.session.as_deref().unwrap_or(DEFAULT_SESSION).to_string();
        let Target::Local(rt) = target else {
            return Err(remote_only("check.window"));
        };
        let short = rt
            .addrs
            .short_term_memory
            .clone()
            .ok_or_else(|| ThauError::Runtime("ShortTermMemory is not running".into()))?;
        let window = chat_result(reply(
            "short_term_memory",
            short.send(GetWindow(session.clone())).await,
        ))?;
        let n = window.turns.len();
        seen.insert("window".into(), json!({ "session": session, "turns": n }));
        if n != w.turns {
            failures.push(format!(
                "expected {} turns in the window of {session:?}, found {n}",
                w.turns
            ));
        }
    }
    Ok(())
}

/// A say step's expectations against what came back.
pub fn check_said(x: &Expect, said: &std::result::Result<Said, String>) -> Vec<String> {
    let mut failures = Vec::new();
    let s = match (said, &x.error) {
        (Err(e), Some(want)) => {
            if !e.contains(want.as_str()) {
                failures.push(format!("expected an error containing {want:?}, got {e:?}"));
            }
            return failures;
        }
        (Err(e), None) => return vec![format!("the turn was refused: {e}")],
        (Ok(s), Some(want)) => {
            failures.push(format!(
                "expected an error containing {want:?}, got the reply {:?}",
                s.reply
            ));
            return failures;
        }
        (Ok(s), None) => s,
    };
    for c in &x.contains {
        if !s.reply.contains(c.as_str()) {
            failures.push(format!("reply lacks {c:?}; reply: {:?}", s.reply));
        }
    }
    for c in &x.not_contains {
        if s.reply.contains(c.as_str()) {
            failures.push(format!("reply contains {c:?}; reply: {:?}", s.reply));
        }
    }
    for (re, src) in x.compiled.iter().zip(&x.regex) {
        if !re.is_match(&s.reply) {
            failures.push(format!(
                "reply does not match /{src}/; reply: {:?}",
                s.reply
            ));
        }
    }
    if let Some(want) = &x.equals {
        if &s.reply != want {
            failures.push(format!(
                "reply differs: expected {want:?}, got {:?}",
                s.reply
            ));
        }
    }
    if let Some(t) = &x.tool_called {
        let hit = s
            .tool_calls
            .iter()
            .any(|c| c.name == t.name && t.args.iter().all(|(k, v)| c.arguments.get(k) == Some(v)));
        if !hit {
            failures.push(format!(
                "expected a call to {} with {}; calls: {}",
                t.name,
                Value::Object(t.args.clone()),
                serde_json::to_string(&s.tool_calls).unwrap_or_default()
            ));
        }
    }
    if x.no_tool == Some(true) && !s.tool_calls.is_empty() {
        failures.push(format!(
            "expected no tool call; calls: {}",
            serde_json::to_string(&s.tool_calls).unwrap_or_default()
        ));
    }
    failures
}
