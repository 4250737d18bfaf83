//! [`Engine`]: continuous batching for the native model. Requests ([`Job`]s) from every
//! session wait in one first-come-first-served queue; a decode thread admits them (a few
//! per step, so that a burst of long prompts never stalls the answers in progress) and
//! advances every admitted generation by one token per step, all sequences of a model in
//! one forward pass ([`Thau::forward_seqs`]): a newly admitted prompt is prefilled in the
//! same pass as the other sessions' next tokens, and the weights are read once per step
//! instead of once per session.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use candle_core::DType;
use serde::Serialize;

use super::kv::KvCache;
use crate::model::generate::{Generation, SamplingParams, Sequence};
use crate::model::grammar::CallGrammar;
use crate::model::tokenizer::ThauTokenizer;
use crate::model::{ModelError, Result, Thau};

/// Most generations decoded together.
pub const MAX_BATCH: usize = 32;
/// Prompt tokens admitted (and prefilled by the next step) per decoding step: enough for
/// a burst of short chat prompts to join at once, few enough that a burst of long ones
/// delays the answers in progress by a handful of steps' worth of work, not by all of it.
/// The first waiting prompt is always admitted, however long.
const PREFILL_TOKENS_PER_STEP: usize = 256;

/// A model and its tokenizer, shared by the requests that use it (a hot swap gives new
/// requests a new one; generations in progress finish on theirs), with the grammar its
/// tool calls are decoded under (none: calls are written unconstrained).
pub struct ServedModel {
    pub model: Thau,
    pub tokenizer: ThauTokenizer,
    pub grammar: Option<Arc<CallGrammar>>,
}

/// One generation request.
pub struct Job {
    pub model: Arc<ServedModel>,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// The grammar its tool calls are decoded under (the model's, or the request's own
    /// tools').
    pub grammar: Option<Arc<CallGrammar>>,
    /// Each new piece of text; `false` cancels.
    pub on_text: Box<dyn FnMut(&str) -> bool + Send>,
    /// Called once with the result.
    pub done: Box<dyn FnOnce(Result<Generation>) + Send>,
}

/// Counters of the decode thread.
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct EngineStats {
    /// Batched decoding steps run.
    pub steps: u64,
    /// Rows decoded in them (rows / steps is the mean batch size).
    pub rows: u64,
    /// Prompts prefilled.
    pub prefills: u64,
    /// Prompt tokens in them.
    pub prefill_tokens: u64,
    /// Time spent in batched steps (prefills included), in seconds.
    pub step_seconds: f64,
}

#[derive(Default)]
struct Counters {
    steps: AtomicU64,
    rows: AtomicU64,
    prefills: AtomicU64,
    prefill_tokens: AtomicU64,
    step_nanos: AtomicU64,
}

/// Adds the time since `t0` to a nanosecond counter.
fn add_elapsed(counter: &AtomicU64, t0: std::time::Instant) {
    let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    counter.fetch_add(ns, Ordering::Relaxed);
}

/// The queue and its decode thread (which ends when the engine is dropped).
pub struct Engine {
    tx: Mutex<Sender<Job>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Engine {
    /// Starts the decode thread.
    pub fn start() -> Result<Engine> {
        let (tx, rx) = std::sync::mpsc::channel();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name("thau-decode".into())
            .spawn(move || run(rx, &c))
            .map_err(|e| ModelError::Data(format!("cannot start the decode thread: {e}")))?;
        Ok(Engine {
            tx: Mutex::new(tx),
            counters,
        })
    }

    /// Queues a job; its `done` is called when it ends.
    pub fn submit(&self, job: Job) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.send(job)
            .map_err(|_| ModelError::Data("the decode thread has stopped".into()))
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            steps: self.counters.steps.load(Ordering::Relaxed),
            rows: self.counters.rows.load(Ordering::Relaxed),
            prefills: self.counters.prefills.load(Ordering::Relaxed),
            prefill_tokens: self.counters.prefill_tokens.load(Ordering::Relaxed),
            step_seconds: self.counters.step_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }
}

/// An admitted generation.
struct Running {
    model: Arc<ServedModel>,
    seq: Sequence,
    cache: KvCache,
    on_text: Box<dyn FnMut(&str) -> bool + Send>,
    done: Box<dyn FnOnce(Result<Generation>) + Send>,
    /// Set when a step failed for this generation: it ends with this error.
    failed: Option<ModelError>,
}

impl Running {
    /// Builds the sequence (its prompt is prefilled by the next step); a generation that
    /// ends before its first token (or fails) is answered at once.
    fn start(job: Job) -> Option<Running> {
        let m = &job.model;
        let stop = [m.tokenizer.special.eot];
        let seq = match Sequence::new(&job.prompt, &job.params, &stop, m.model.cfg.max_seq_len) {
            Ok(s) => s
                .with_grammar(job.grammar.clone())
                .with_reading(m.model.lexicon()),
            Err(e) => {
                (job.done)(Err(e));
                return None;
            }
        };
        let r = Running {
            model: job.model,
            cache: KvCache::with_room(0, seq.positions_needed()),
            seq,
            on_text: job.on_text,
            done: job.done,
            failed: None,
        };
        if r.seq.is_done() {
            r.finish();
            return None;
        }
        Some(r)
    }

    fn advance(&mut self, logits: &[f32]) -> Result<()> {
        let tok = &self.model.tokenizer;
        self.seq
            .accept(logits, &|ids| tok.decode(ids), &mut *self.on_text)
    }

    fn is_over(&self) -> bool {
        self.seq.is_done() || self.failed.is_some()
    }

    fn finish(self) {
        if let Some(e) = self.failed {
            (self.done)(Err(e));
            return;
        }
        let tok = &self.model.tokenizer;
        let mut on_text = self.on_text;
        let r = self.seq.finish(&|ids| tok.decode(ids), &mut *on_text);
        (self.done)(r);
    }
}

/// The decode loop: admit, step, retire, until every sender is gone.
fn run(rx: Receiver<Job>, counters: &Counters) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut active: Vec<Running> = Vec::new();
    loop {
        if active.is_empty() && waiting.is_empty() {
            match rx.recv() {
                Ok(j) => waiting.push_back(j),
                Err(_) => return,
            }
        }
        while let Ok(j) = rx.try_recv() {
            waiting.push_back(j);
        }
        let mut admitted = 0;
        while active.len() < MAX_BATCH {
            let fits =
                |j: &Job| admitted == 0 || admitted + j.prompt.len() <= PREFILL_TOKENS_PER_STEP;
            if !waiting.front().is_some_and(fits) {
                break;
            }
            let Some(job) = waiting.pop_front() else {
                break;
            };
            admitted += job.prompt.len();
            counters.prefills.fetch_add(1, Ordering::Relaxed);
            let prompt = job.prompt.len() as u64;
            counters.prefill_tokens.fetch_add(prompt, Ordering::Relaxed);
            // A panic fails this request, not the thread.
            if let Ok(Some(r)) = std::panic::catch_unwind(AssertUnwindSafe(|| Running::start(job)))
            {
                active.push(r);
            }
        }
        if active.is_empty() {
            continue;
        }
        let t0 = std::time::Instant::now();
        let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| step(&mut active, counters)));
        add_elapsed(&counters.step_nanos, t0);
        if stepped.is_err() {
            tracing::error!("a batched decoding step panicked; its requests failed");
            for r in active.drain(..) {
                (r.done)(Err(ModelError::Data("decoding failed (panic)".into())));
            }
            continue;
        }
        // Retire the finished ones, answering them.
        let mut i = 0;
        while i < active.len() {
            if active[i].is_over() {
                active.swap_remove(i).finish();
            } else {
                i += 1;
            }
        }
    }
}

/// One token for every active generation: one forward pass per model in use.
fn step(active: &mut [Running], counters: &Counters) {
    let mut models: Vec<Arc<ServedModel>> = Vec::new();
    for r in active.iter() {
        if !models.iter().any(|m| Arc::ptr_eq(m, &r.model)) {
            models.push(r.model.clone());
        }
    }
    for m in models {
        let mut group: Vec<&mut Running> = active
            .iter_mut()
            .filter(|r| Arc::ptr_eq(&r.model, &m))
            .collect();
        // A new sequence's whole prompt, the others' last token.
        let inputs: Vec<Vec<u32>> = group.iter().map(|r| r.seq.input().to_vec()).collect();
        let logits = (|| -> Result<Vec<Vec<f32>>> {
            let mut caches: Vec<&mut KvCache> = group.iter_mut().map(|r| &mut r.cache).collect();
            let tokens: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
            let l = m.model.forward_seqs(&mut caches, &tokens)?; // [N, V]
            Ok(l.to_dtype(DType::F32)?.to_vec2()?)
        })();
        counters.steps.fetch_add(1, Ordering::Relaxed);
        counters
            .rows
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        match logits {
            Ok(rows) => {
                for (r, l) in group.iter_mut().zip(&rows) {
                    if let Err(e) = r.advance(l) {
                        r.failed = Some(e);
                    }
                }
            }
            Err(e) => {
                tracing::error!("a batched decoding step failed: {e}");
                for r in group.iter_mut() {
                    r.failed = Some(ModelError::Data(format!("decoding failed: {e}")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::generate::generate;
    use crate::model::tokenizer::TOOL_CLOSE_ID;
    use crate::model::transformer::{from_tensors, from_varmap, init_weights};
    use crate::model::ModelConfig;
    use crate::testing::detached;
    use candle_core::Device;

    fn served() -> Arc<ServedModel> {
        served_both().0
    }

    /// The same model with trainable weights (the tensor path) and with plain ones, as
    /// the Inference actor loads them (the packed path).
    fn served_both() -> (Arc<ServedModel>, Arc<ServedModel>) {
        let text = "the red fox runs in the snow and the blue whale swims in the sea. ".repeat(20);
        let tokenizer = ThauTokenizer::train(std::iter::once(text), 300).unwrap();
        let mut cfg = ModelConfig::tiny(tokenizer.vocab_size());
        cfg.max_seq_len = 128;
        let vm = init_weights(&cfg, 3, DType::F32, &Device::Cpu).unwrap();
        let trainable = from_varmap(&vm, &cfg, DType::F32, &Device::Cpu).unwrap();
        let plain = from_tensors(detached(&vm), &cfg, &Device::Cpu).unwrap();
        let tool: serde_json::Value =
            serde_json::from_str(include_str!("../../../tools/generate_image.json")).unwrap();
        let grammar = CallGrammar::new(
            [("generate_image", &tool["parameters"])],
            tokenizer.token_bytes(),
            TOOL_CLOSE_ID,
        )
        .unwrap();
        let grammar = Some(Arc::new(grammar));
        let serve = |model| {
            Arc::new(ServedModel {
                model,
                tokenizer: tokenizer.clone(),
                grammar: grammar.clone(),
            })
        };
        (serve(trainable), serve(plain))
    }

    #[test]
    fn batched_generations_match_one_at_a_time_and_stream() {
        // Both paths, each against one-at-a-time generation on the trainable model.
        let (trainable, plain) = served_both();
        check_batched_generations(&trainable, &trainable);
        check_batched_generations(&plain, &trainable);
    }

    fn check_batched_generations(m: &Arc<ServedModel>, reference: &ServedModel) {
        let engine = Engine::start().unwrap();
        // The last two open a tool call: the grammar decides what an untrained model writes.
        let prompts = [
            "the red fox",
            "the sea",
            "whale swims in the snow and",
            "a",
            "the sea<TOOL:",
            "<TOOL:generate_image>{\"prompt\": \"a",
        ];
        let params = |i: usize| SamplingParams {
            max_new_tokens: 12 + i,
            temperature: if i.is_multiple_of(2) { 0.0 } else { 0.9 },
            seed: i as u64,
            ..Default::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, p) in prompts.iter().enumerate() {
            let streamed = Arc::new(Mutex::new(String::new()));
            let s2 = streamed.clone();
            let tx = tx.clone();
            engine
                .submit(Job {
                    model: m.clone(),
                    prompt: m.tokenizer.encode(p).unwrap(),
                    params: params(i),
                    grammar: m.grammar.clone(),
                    on_text: Box::new(move |piece| {
                        s2.lock().unwrap().push_str(piece);
                        true
                    }),
                    done: Box::new(move |r| {
                        let streamed = streamed.lock().unwrap().clone();
                        tx.send((i, r, streamed)).unwrap();
                    }),
                })
                .unwrap();
        }
        let mut got: Vec<_> = (0..prompts.len()).map(|_| rx.recv().unwrap()).collect();
        got.sort_by_key(|g| g.0);
        for (i, r, streamed) in got {
            let g = r.unwrap();
            let ids = m.tokenizer.encode(prompts[i]).unwrap();
            let alone = generate(
                &reference.model,
                &m.tokenizer,
                &ids,
                &params(i),
                &[m.tokenizer.special.eot],
                m.grammar.as_ref(),
                &mut |_| true,
            )
            .unwrap();
            assert_eq!(g.ids, alone.ids, "prompt {i}");
            assert_eq!(streamed, g.text, "prompt {i}");
            if i == 4 {
                let head = "generate_image>";
                assert!(
                    g.text.starts_with(head) || head.starts_with(&g.text),
                    "{}",
                    g.text
                );
            }
        }
        let st = engine.stats();
        assert_eq!(st.prefills, prompts.len() as u64);
        // Several rows per step: the generations really were decoded together.
        assert!(st.rows > st.steps, "{st:?}");
    }

    #[test]
    fn a_cancelled_or_bad_job_ends_alone() {
        let m = served();
        let engine = Engine::start().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t2 = tx.clone();
        let mut pieces = 0;
        engine
            .submit(Job {
                model: m.clone(),
                prompt: m.tokenizer.encode("the red fox").unwrap(),
                params: SamplingParams {
                    max_new_tokens: 50,
                    temperature: 0.0,
                    ..Default::default()
                },
                grammar: None,
                on_text: Box::new(move |_| {
                    pieces += 1;
                    pieces < 3
                }),
                done: Box::new(move |r| tx.send(r).unwrap()),
            })
            .unwrap();
        engine
            .submit(Job {
                model: m.clone(),
                prompt: Vec::new(),
                params: SamplingParams::default(),
                grammar: None,
                on_text: Box::new(|_| true),
                done: Box::new(move |r| t2.send(r).unwrap()),
            })
            .unwrap();
        let (a, b) = (rx.recv().unwrap(), rx.recv().unwrap());
        let (ok, err) = if a.is_ok() { (a, b) } else { (b, a) };
        let g = ok.unwrap();
        assert_eq!(g.stop, crate::model::generate::StopReason::Cancelled);
        assert!(g.ids.len() < 50, "{:?}", g.ids);
        assert!(err.unwrap_err().to_string().contains("empty prompt"));
    }
}
