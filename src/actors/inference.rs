//! Inference: the one owner of the model. Serves [`Generate`] (sampling with optional
//! token streaming, on the handling thread), [`Submit`] (the same, queued for the shared
//! decode thread that batches every session's next token; see [`generate_batched`]) and
//! [`Score`] (per-token log-probabilities of a given continuation) and [`CountTokens`] to the other actors and
//! the front ends, takes new weights from the Learner as a message ([`SwapWeights`]: a hot
//! swap, chat never waits on training), and [`Reload`]s from disk on request. It serves the
//! newest THAU checkpoint, or — when `model.gguf` is configured — a `llama`-architecture
//! GGUF file (THAU's export, or a model such as TinyLlama) through `quantized_llama`. The
//! Tuner sets its sampling temperature ([`ApplyTuning`](crate::actors::ApplyTuning)). Runs
//! on a sync arbiter: decoding is CPU-heavy and must never block the async arbiters that
//! serve I/O.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::actors::{guarded, ActorBase, ActorError, Reply, ThauActor, Tunable};
use crate::learn::tuning::Knob;
use crate::model::checkpoint;
use crate::model::decode::batch::{Engine, Job, ServedModel};
use crate::model::generate::{generate, score, Generation, SamplingParams};
use crate::model::gguf::GgufModel;
use crate::model::grammar::CallGrammar;
use crate::model::reading::Lexicon;
use crate::model::tokenizer::{Message as ChatMessage, ThauTokenizer, TOOL_CLOSE_ID};
use crate::model::transformer::from_tensors;
use crate::model::ModelConfig;
use crate::model::Thau;
use crate::runtime::agents::AgentSpec;
use crate::tools::ToolRegistry;

/// What to continue: raw text, or a conversation the model answers as the assistant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
    /// `prompt` with its answer already begun by `start`: a tool call a client asked for
    /// (`<TOOL:name>`, whose arguments the grammar then holds to their schema), or a JSON
    /// value under its grammar.
    Begun {
        prompt: Box<Prompt>,
        start: String,
    },
}

/// Tools a request's calls may name instead of the built-in ones (a client's own, from
/// the OpenAI or Ollama `tools` field): `(name, JSON Schema of the arguments)`. Their calls
/// are decoded under their own grammar.
pub type RequestTools = Arc<Vec<(String, serde_json::Value)>>;

/// Generate a continuation; each new piece of text is also sent on `stream` if given.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Generation, ActorError>")]
pub struct Generate {
    pub prompt: Prompt,
    /// `None` uses the defaults from `agents/inference.toml`.
    pub params: Option<SamplingParams>,
    pub stream: Option<UnboundedSender<String>>,
    /// `None`: calls may name the built-in tools.
    pub tools: Option<RequestTools>,
}

/// [`Generate`] without holding an Inference thread: the request joins the batching queue
/// (native models) and the reply is a receiver for its result. Use [`generate_batched`].
#[derive(Message, Debug)]
#[rtype(result = "Result<PendingGeneration, ActorError>")]
pub struct Submit(pub Generate);

/// A generation in progress; await [`PendingGeneration::result`]. Dropping it (a client
/// that went away before its answer, whose request future was dropped) stops the
/// generation at its next token.
#[derive(Debug)]
pub struct PendingGeneration {
    rx: tokio::sync::oneshot::Receiver<Result<Generation, ActorError>>,
    _abandon: Abandon,
}

/// Sets its flag when dropped: the waiter is gone.
#[derive(Debug, Default)]
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl PendingGeneration {
    fn ready(r: Result<Generation, ActorError>) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(r);
        PendingGeneration {
            rx,
            _abandon: Abandon::default(),
        }
    }

    pub async fn result(self) -> Result<Generation, ActorError> {
        self.rx
            .await
            .unwrap_or_else(|_| Err(ActorError::Failed("the decode thread stopped".into())))
    }
}

/// Generates through the batching queue: many sessions' requests are decoded together
/// instead of one after another. The same result as sending [`Generate`].
pub async fn generate_batched(inference: &Addr<Inference>, g: Generate) -> Reply<Generation> {
    Ok(match inference.send(Submit(g)).await? {
        Ok(pending) => pending.result().await,
        Err(e) => Err(e),
    })
}

/// Log-probabilities of each token of `continuation` after `prompt`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Scored, ActorError>")]
pub struct Score {
    pub prompt: Prompt,
    pub continuation: String,
}

/// The reply to [`Score`].
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub logprobs: Vec<f32>,
    /// Mean negative log-likelihood per token.
    pub mean_nll: f32,
}

/// How many tokens each text takes in the served model's tokenizer, and the model's
/// context (to fit recalled memories into a prompt).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<TokenCounts, ActorError>")]
pub struct CountTokens(pub Vec<String>);

/// The reply to [`CountTokens`].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCounts {
    pub counts: Vec<usize>,
    /// The longest prompt and answer the served model takes, in tokens.
    pub context: usize,
    /// The answer length of requests that set none (`agents/inference.toml`).
    pub default_answer_tokens: usize,
}

/// Load the newest checkpoint now (after training wrote one).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<ModelInfo, ActorError>")]
pub struct Reload;

/// Which model is served now (swapped-in weights included).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<ModelInfo, ActorError>")]
pub struct Served;

/// Serve these weights from now on (sent by the Learner after each training round).
/// Every Inference thread picks them up before its next request.
#[derive(Message, Clone)]
#[rtype(result = "Result<ModelInfo, ActorError>")]
pub struct SwapWeights {
    pub config: ModelConfig,
    pub tokenizer: ThauTokenizer,
    /// Tensors share their storage: sending them copies no weights.
    pub weights: HashMap<String, Tensor>,
    /// Where they come from (shown as the model's source), e.g. `learner step 120`.
    pub label: String,
}

impl std::fmt::Debug for SwapWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwapWeights")
            .field("label", &self.label)
            .field("age", &self.config.age)
            .finish()
    }
}

/// What all Inference threads share (a sync arbiter hands each message to one thread; the
/// others see it here): the newest swapped-in weights, and the sampling temperature the
/// Tuner set.
#[derive(Default)]
pub struct WeightsCell {
    generation: AtomicU64,
    latest: Mutex<Option<Arc<SwapWeights>>>,
    temperature: Mutex<Option<f64>>,
    /// The decode thread that batches [`Submit`]ted generations of every session.
    engine: Option<Engine>,
}

impl WeightsCell {
    /// A cell with a batching decode thread (what the runtime gives its Inference).
    pub fn with_engine() -> Result<Self, ActorError> {
        let engine = Engine::start().map_err(|e| ActorError::Failed(e.to_string()))?;
        Ok(WeightsCell {
            engine: Some(engine),
            ..Default::default()
        })
    }

    /// The decode thread's counters, when there is one.
    pub fn engine_stats(&self) -> Option<crate::model::decode::batch::EngineStats> {
        self.engine.as_ref().map(Engine::stats)
    }

    fn temperature(&self) -> Option<f64> {
        *self.temperature.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn set_temperature(&self, t: f64) {
        *self.temperature.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }
    fn put(&self, w: SwapWeights) {
        let mut slot = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(Arc::new(w));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
    fn newer_than(&self, seen: u64) -> Option<(u64, Arc<SwapWeights>)> {
        let g = self.generation.load(Ordering::SeqCst);
        if g <= seen {
            return None;
        }
        let slot = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        slot.clone().map(|w| (g, w))
    }
}

/// The model the actor serves.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Checkpoint directory or GGUF file.
    pub checkpoint: PathBuf,
    /// `thau` (a native checkpoint) or `gguf`.
    pub format: &'static str,
    /// Age and parameters of a native checkpoint.
    pub age: Option<u32>,
    pub params: Option<u64>,
}

/// What serves the requests.
enum Backend {
    Native(Arc<ServedModel>),
    Gguf(Box<GgufModel>),
}

struct Loaded {
    backend: Backend,
    info: ModelInfo,
}

/// The Inference actor's state: the loaded model, if any.
pub struct Inference {
    base: ActorBase,
    checkpoints: PathBuf,
    gguf: Option<PathBuf>,
    defaults: SamplingParams,
    loaded: Option<Loaded>,
    load_error: Option<String>,
    swapped: Arc<WeightsCell>,
    /// Generation of [`WeightsCell`] this thread serves.
    seen_generation: u64,
    /// Where a native model runs (`device` in thau.toml; a GGUF file runs on the CPU).
    device: candle_core::Device,
}

impl Inference {
    /// Creates the actor and loads `gguf` if given, else the newest checkpoint under
    /// `<home>/checkpoints`.
    pub fn new(
        base: ActorBase,
        spec: &AgentSpec,
        checkpoints: PathBuf,
        gguf: Option<PathBuf>,
        device: candle_core::Device,
    ) -> Self {
        // Validated by `Runtime::start`, so the fallback only guards direct construction.
        let defaults = spec
            .params
            .clone()
            .try_into::<SamplingParams>()
            .unwrap_or_default();
        let mut me = Inference {
            base,
            checkpoints,
            gguf,
            defaults,
            loaded: None,
            load_error: None,
            swapped: Arc::new(WeightsCell::default()),
            seen_generation: 0,
            device,
        };
        if let Err(e) = me.reload() {
            me.load_error = Some(e.to_string());
        }
        me
    }

    /// Shares `cell` with the other threads of this actor (set by the runtime).
    pub fn with_weights_cell(mut self, cell: Arc<WeightsCell>) -> Self {
        self.swapped = cell;
        // Generations count in the cell that made them: what was seen in this thread's
        // own cell (its first load) says nothing about the shared one.
        self.seen_generation = 0;
        self.adopt_swapped();
        self
    }

    /// Serves the newest swapped-in weights if another thread received newer ones.
    fn adopt_swapped(&mut self) {
        let Some((generation, w)) = self.swapped.newer_than(self.seen_generation) else {
            return;
        };
        self.seen_generation = generation;
        match from_tensors(w.weights.clone(), &w.config, &self.device) {
            Ok(model) => {
                self.loaded = Some(Loaded {
                    backend: Backend::Native(served(model, w.tokenizer.clone())),
                    info: ModelInfo {
                        checkpoint: PathBuf::from(&w.label),
                        format: "thau",
                        age: Some(w.config.age),
                        params: Some(w.config.param_count()),
                    },
                });
                self.load_error = None;
            }
            Err(e) => {
                tracing::error!(actor = self.base.name, error = %e, "swapped weights rejected");
            }
        }
    }

    fn reload(&mut self) -> Result<ModelInfo, ActorError> {
        let failed = |e: crate::model::ModelError| ActorError::Failed(e.to_string());
        let loaded = match &self.gguf {
            Some(path) => {
                let m = GgufModel::load(path).map_err(failed)?;
                let info = ModelInfo {
                    checkpoint: path.clone(),
                    format: "gguf",
                    age: None,
                    params: None,
                };
                Loaded {
                    backend: Backend::Gguf(Box::new(m)),
                    info,
                }
            }
            None => {
                let dir = checkpoint::newest(&self.checkpoints)
                    .map_err(failed)?
                    .ok_or_else(|| {
                        ActorError::Unavailable(
                            "no model loaded: train one with `thau train`".into(),
                        )
                    })?;
                let ck = checkpoint::load(&dir, &self.device, false).map_err(failed)?;
                // Checked before it is shared, so a bad checkpoint leaves the served model.
                from_tensors(ck.weights.clone(), &ck.config, &self.device).map_err(failed)?;
                // Through the shared cell: a sync arbiter hands this message to one
                // thread, and every thread must serve the checkpoint from now on.
                self.swapped.put(SwapWeights {
                    config: ck.config,
                    tokenizer: ck.tokenizer,
                    weights: ck.weights,
                    label: dir.display().to_string(),
                });
                self.adopt_swapped();
                return self.loaded().map(|l| l.info.clone());
            }
        };
        tracing::info!(actor = self.base.name, model = %loaded.info.checkpoint.display(), "model loaded");
        let info = loaded.info.clone();
        self.loaded = Some(loaded);
        self.load_error = None;
        Ok(info)
    }

    fn loaded(&mut self) -> Result<&mut Loaded, ActorError> {
        self.adopt_swapped();
        let err = self.load_error.clone();
        self.loaded.as_mut().ok_or_else(|| {
            ActorError::Unavailable(
                err.unwrap_or_else(|| "no model loaded: train one with `thau train`".into()),
            )
        })
    }
}

impl Inference {
    /// The request's sampling settings, else the defaults with the Tuner's temperature.
    fn sampling(&self, p: Option<SamplingParams>) -> SamplingParams {
        p.unwrap_or_else(|| {
            let mut p = self.defaults.clone();
            if let Some(t) = self.swapped.temperature() {
                p.temperature = t;
            }
            p
        })
    }
}

fn prompt_ids(tok: &ThauTokenizer, prompt: &Prompt) -> Result<Vec<u32>, ActorError> {
    let bad = |e: crate::model::ModelError| ActorError::BadRequest(e.to_string());
    let ids = match prompt {
        Prompt::Text(t) => tok.encode(t).map_err(bad)?,
        Prompt::Chat(ms) => tok.chat_prompt(ms).map_err(bad)?,
        Prompt::Begun { prompt, start } => {
            let mut ids = prompt_ids(tok, prompt)?;
            // An answer's text starts after a space, as the chat template writes turns.
            let begun = match **prompt {
                Prompt::Chat(_) => tok.encode_turn(start),
                _ => tok.encode(start),
            };
            ids.extend(begun.map_err(bad)?);
            ids
        }
    };
    if ids.is_empty() {
        return Err(ActorError::BadRequest("empty prompt".into()));
    }
    Ok(ids)
}

impl ThauActor for Inference {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        match (&self.loaded, &self.load_error) {
            (Some(l), _) => match (l.info.age, l.info.params) {
                (Some(age), Some(p)) => format!(
                    "serving age {age} ({p} parameters) from {}",
                    l.info.checkpoint.display()
                ),
                _ => format!(
                    "serving {} ({})",
                    l.info.checkpoint.display(),
                    l.info.format
                ),
            },
            (None, Some(e)) => e.clone(),
            (None, None) => "no model loaded".into(),
        }
    }
    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({ "model": self.loaded.as_ref().map(|l| &l.info) })
    }
}

crate::sync_actor!(Inference);

/// A loaded model made ready to serve: it reads its memories with its tokenizer's lexicon,
/// its weights are packed for decoding, and its tool calls are decoded under the built-in
/// tools' grammar (without one, with a warning, if the grammar cannot be built).
fn served(model: Thau, tokenizer: ThauTokenizer) -> Arc<ServedModel> {
    let model = model.with_lexicon(Arc::new(Lexicon::of(&tokenizer)));
    model.prepare_for_serving();
    let grammar = match ToolRegistry::builtin().and_then(|r| r.grammar(&tokenizer)) {
        Ok(g) => {
            for why in &g.unenforced {
                tracing::warn!(%why, "a tool's calls are held to JSON only");
            }
            Some(Arc::new(g))
        }
        Err(e) => {
            tracing::warn!(error = %e, "tool calls are decoded without their grammar");
            None
        }
    };
    Arc::new(ServedModel {
        model,
        tokenizer,
        grammar,
    })
}

/// The grammar a request's tool calls are decoded under: its own tools' when it brings
/// some, else the served model's (the built-in tools).
fn request_grammar(
    n: &ServedModel,
    tools: Option<&Vec<(String, serde_json::Value)>>,
) -> Result<Option<Arc<CallGrammar>>, ActorError> {
    let Some(tools) = tools else {
        return Ok(n.grammar.clone());
    };
    let g = CallGrammar::new(
        tools.iter().map(|(name, schema)| (name.as_str(), schema)),
        n.tokenizer.token_bytes(),
        TOOL_CLOSE_ID,
    )
    .map_err(ActorError::BadRequest)?;
    for why in &g.unenforced {
        tracing::warn!(%why, "a request's tool calls are held to JSON only");
    }
    Ok(Some(Arc::new(g)))
}

/// A prompt in a GGUF model's vocabulary.
fn gguf_prompt_ids(m: &GgufModel, prompt: &Prompt) -> crate::model::Result<Vec<u32>> {
    match prompt {
        Prompt::Text(t) => m.encode(t),
        Prompt::Chat(ms) => m.chat_prompt(ms),
        Prompt::Begun { prompt, start } => {
            let mut ids = gguf_prompt_ids(m, prompt)?;
            ids.extend(m.encode(&crate::model::tokenizer::turn_text(start))?);
            Ok(ids)
        }
    }
}

impl Handler<Served> for Inference {
    type Result = Result<ModelInfo, ActorError>;
    fn handle(&mut self, _: Served, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "Served", |me| Ok(me.loaded()?.info.clone()))
    }
}

impl Handler<Generate> for Inference {
    type Result = Result<Generation, ActorError>;
    fn handle(&mut self, msg: Generate, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "Generate", |me| {
            let params = me.sampling(msg.params.clone());
            let mut on_text = |s: &str| match &msg.stream {
                // A closed stream means the client went away: stop generating.
                Some(tx) => tx.send(s.to_string()).is_ok(),
                None => true,
            };
            let bad = |e: crate::model::ModelError| ActorError::BadRequest(e.to_string());
            match &mut me.loaded()?.backend {
                Backend::Native(n) => {
                    let (model, tokenizer) = (&n.model, &n.tokenizer);
                    let ids = prompt_ids(tokenizer, &msg.prompt)?;
                    let grammar = request_grammar(n, msg.tools.as_deref())?;
                    generate(
                        model,
                        tokenizer,
                        &ids,
                        &params,
                        &[tokenizer.special.eot],
                        grammar.as_ref(),
                        &mut on_text,
                    )
                    .map_err(bad)
                }
                Backend::Gguf(m) => {
                    // A GGUF model decodes without the tools' grammar.
                    let ids = gguf_prompt_ids(m, &msg.prompt).map_err(bad)?;
                    if ids.is_empty() {
                        return Err(ActorError::BadRequest("empty prompt".into()));
                    }
                    m.generate(&ids, &params, &mut on_text).map_err(bad)
                }
            }
        })
    }
}

impl Handler<Submit> for Inference {
    type Result = Result<PendingGeneration, ActorError>;
    fn handle(&mut self, m: Submit, ctx: &mut SyncContext<Self>) -> Self::Result {
        let msg = m.0;
        let queued = guarded(self, ctx, "Submit", |me| {
            let cell = me.swapped.clone();
            let Some(engine) = cell.engine.as_ref() else {
                return Ok(None);
            };
            let params = me.sampling(msg.params.clone());
            let model = match &me.loaded()?.backend {
                Backend::Native(n) => n.clone(),
                // GGUF models decode here, one request at a time.
                Backend::Gguf(_) => return Ok(None),
            };
            let prompt = prompt_ids(&model.tokenizer, &msg.prompt)?;
            let grammar = request_grammar(&model, msg.tools.as_deref())?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let stream = msg.stream.clone();
            let abandon = Abandon::default();
            let gone = abandon.0.clone();
            engine
                .submit(Job {
                    model,
                    prompt,
                    params,
                    grammar,
                    // A closed stream or a dropped waiter means the client went away:
                    // stop generating.
                    on_text: Box::new(move |piece| {
                        !gone.load(Ordering::Relaxed)
                            && match &stream {
                                Some(s) => s.send(piece.to_string()).is_ok(),
                                None => true,
                            }
                    }),
                    done: Box::new(move |r| {
                        let _ = tx.send(r.map_err(|e| ActorError::BadRequest(e.to_string())));
                    }),
                })
                .map_err(|e| ActorError::Failed(e.to_string()))?;
            Ok(Some(PendingGeneration {
                rx,
                _abandon: abandon,
            }))
        })?;
        match queued {
            Some(p) => Ok(p),
            None => Ok(PendingGeneration::ready(
                <Self as Handler<Generate>>::handle(self, msg, ctx),
            )),
        }
    }
}

impl Handler<Score> for Inference {
    type Result = Result<Scored, ActorError>;
    fn handle(&mut self, msg: Score, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "Score", |me| {
            let Backend::Native(n) = &me.loaded()?.backend else {
                return Err(ActorError::Unavailable(
                    "scoring needs a native THAU checkpoint, not a GGUF file".into(),
                ));
            };
            let (model, tokenizer) = (&n.model, &n.tokenizer);
            let ids = prompt_ids(tokenizer, &msg.prompt)?;
            // Scored as the chat template encodes an answer (after a turn's space).
            let cont = tokenizer
                .encode_turn(&msg.continuation)
                .map_err(|e| ActorError::BadRequest(e.to_string()))?;
            let logprobs =
                score(model, &ids, &cont).map_err(|e| ActorError::BadRequest(e.to_string()))?;
            let mean_nll = -logprobs.iter().sum::<f32>() / logprobs.len().max(1) as f32;
            Ok(Scored { logprobs, mean_nll })
        })
    }
}

impl Handler<CountTokens> for Inference {
    type Result = Result<TokenCounts, ActorError>;
    fn handle(&mut self, msg: CountTokens, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "CountTokens", |me| {
            let backend = &me.loaded()?.backend;
            let counts = msg
                .0
                .iter()
                .map(|t| {
                    let n = match backend {
                        Backend::Native(n) => n.tokenizer.encode(t).map(|ids| ids.len()),
                        Backend::Gguf(g) => g.encode(t).map(|ids| ids.len()),
                    };
                    n.map_err(|e| ActorError::BadRequest(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let context = match backend {
                Backend::Native(n) => n.model.cfg.max_seq_len,
                Backend::Gguf(g) => g.context,
            };
            Ok(TokenCounts {
                counts,
                context,
                default_answer_tokens: me.defaults.max_new_tokens,
            })
        })
    }
}

impl Handler<SwapWeights> for Inference {
    type Result = Result<ModelInfo, ActorError>;
    fn handle(&mut self, msg: SwapWeights, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "SwapWeights", |me| {
            if me.gguf.is_some() {
                return Err(ActorError::Unavailable(
                    "serving a GGUF file (model.gguf): learned weights are not swapped in".into(),
                ));
            }
            // Checked here so a bad message fails its sender, not every later request.
            from_tensors(msg.weights.clone(), &msg.config, &me.device)
                .map_err(|e| ActorError::BadRequest(e.to_string()))?;
            me.swapped.put(msg);
            me.adopt_swapped();
            Ok(me.loaded()?.info.clone())
        })
    }
}

impl Handler<Reload> for Inference {
    type Result = Result<ModelInfo, ActorError>;
    fn handle(&mut self, _: Reload, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "Reload", |me| me.reload())
    }
}

impl Tunable for Inference {
    const TITLE: &'static str = "Inference";
    fn tune(&mut self, knob: Knob, value: f64) -> Result<(), ActorError> {
        match knob {
            Knob::Temperature => {
                self.swapped.set_temperature(value);
                Ok(())
            }
            k => Err(Self::no_knob(k)),
        }
    }
}

crate::tunable_actor!(Inference);
