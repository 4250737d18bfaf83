//! Text generation and scoring with a [`Thau`] model: KV-cache decoding, temperature /
//! top-k / top-p / repetition-penalty sampling from a seeded RNG, stop tokens, a
//! per-token streaming callback, and [`score`] (per-token log-probabilities of a given
//! continuation, which the gap detector uses).

use candle_core::{DType, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::tokenizer::ThauTokenizer;
use super::transformer::{KvCache, Thau};
use super::{ModelError, Result};

/// How to sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = all).
    pub top_p: f64,
    /// > 1 discourages tokens already generated or in the prompt.
    pub repetition_penalty: f64,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 200,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.1,
            seed: 42,
        }
    }
}

impl SamplingParams {
    /// Rejects values outside their meaningful ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ModelError::Config(format!("sampling: {m}")));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature must be >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty >= 1.0) {
            return bad("repetition_penalty must be >= 1");
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A stop token (end of turn) was produced.
    Stop,
    /// `max_new_tokens` or the context length was reached.
    Length,
    /// The streaming callback asked to stop.
    Cancelled,
}

/// The result of [`generate`].
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub ids: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    pub prompt_tokens: usize,
}

/// Picks the next token from `logits` (`[V]`, f32).
fn sample(logits: &[f32], params: &SamplingParams, history: &[u32], rng: &mut ChaCha8Rng) -> u32 {
    let mut l: Vec<f32> = logits.to_vec();
    if params.repetition_penalty > 1.0 {
        let p = params.repetition_penalty as f32;
        for &t in history {
            if let Some(x) = l.get_mut(t as usize) {
                *x = if *x > 0.0 { *x / p } else { *x * p };
            }
        }
    }
    let argmax = || {
        l.iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if params.temperature <= 0.0 {
        return argmax();
    }
    let mut idx: Vec<usize> = (0..l.len()).collect();
    idx.sort_unstable_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
    if params.top_k > 0 {
        idx.truncate(params.top_k);
    }
    let t = params.temperature as f32;
    let max = l[idx[0]];
    let mut probs: Vec<f32> = idx.iter().map(|&i| ((l[i] - max) / t).exp()).collect();
    let sum: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    let mut keep = probs.len();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if f64::from(acc) >= params.top_p {
            keep = i + 1;
            break;
        }
    }
    let total: f32 = probs[..keep].iter().sum();
    let mut r = rng.random::<f32>() * total;
    for (i, p) in probs[..keep].iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return idx[i] as u32;
        }
    }
    idx[keep - 1] as u32
}

/// A model that gives next-token logits one chunk of tokens at a time, keeping its own
/// cache of the positions it has seen: the native [`Thau`] ([`NativeDecoder`]) or a GGUF
/// model (`model::gguf`).
pub trait Decoder {
    /// Longest sequence the model attends over.
    fn context(&self) -> usize;
    /// Logits (f32, `[V]`) of the position after `ids`, which continue the positions
    /// seen so far (the first call starts a new sequence).
    fn next_logits(&mut self, ids: &[u32]) -> Result<Vec<f32>>;
}

/// [`Thau`] with its KV cache.
pub struct NativeDecoder<'a> {
    model: &'a Thau,
    cache: KvCache,
}

impl<'a> NativeDecoder<'a> {
    pub fn new(model: &'a Thau) -> Self {
        NativeDecoder {
            model,
            cache: KvCache::new(model.cfg.n_layers),
        }
    }
}

impl Decoder for NativeDecoder<'_> {
    fn context(&self) -> usize {
        self.model.cfg.max_seq_len
    }
    fn next_logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        // The packed path when the model has one (the same pass the batched engine uses).
        let logits = self.model.forward_seqs(&mut [&mut self.cache], &[ids])?; // [1, V]
        Ok(logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?)
    }
}

/// Continues `prompt` (token ids) with the native model. `on_text` receives each new piece
/// of decoded text as it is produced and returns `false` to stop. Stops at any of `stop`
/// tokens (not included in the output).
pub fn generate(
    model: &Thau,
    tok: &ThauTokenizer,
    prompt: &[u32],
    params: &SamplingParams,
    stop: &[u32],
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    generate_with(
        &mut NativeDecoder::new(model),
        &|ids| tok.decode(ids),
        prompt,
        params,
        stop,
        on_text,
    )
}

/// [`generate`] for any [`Decoder`], with `decode` turning ids into text.
pub fn generate_with(
    dec: &mut dyn Decoder,
    decode: &dyn Fn(&[u32]) -> Result<String>,
    prompt: &[u32],
    params: &SamplingParams,
    stop: &[u32],
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let mut seq = Sequence::new(prompt, params, stop, dec.context())?;
    while !seq.is_done() {
        let logits = dec.next_logits(seq.input())?;
        seq.accept(&logits, decode, on_text)?;
    }
    seq.finish(decode, on_text)
}

/// One generation as a state machine, so that a scheduler can advance many of them a token
/// at a time ([`super::batch`]): feed [`Sequence::input`] to the model, hand the logits of
/// its last position to [`Sequence::accept`], until [`Sequence::is_done`].
#[derive(Debug, Clone)]
pub struct Sequence {
    params: SamplingParams,
    stop: Vec<u32>,
    ctx: usize,
    rng: ChaCha8Rng,
    prompt_tokens: usize,
    history: Vec<u32>,
    out: Vec<u32>,
    emitted: String,
    /// Tokens the model has not seen yet (the prompt, then the last sampled token).
    input: Vec<u32>,
    /// Positions the model has seen.
    seen: usize,
    reason: Option<StopReason>,
}

impl Sequence {
    /// A generation of `prompt` (its end, when it would leave no room to answer in `ctx`).
    pub fn new(prompt: &[u32], params: &SamplingParams, stop: &[u32], ctx: usize) -> Result<Self> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(ModelError::Data("empty prompt".into()));
        }
        // Keep the end of a prompt that would not leave room to answer.
        let room = params.max_new_tokens.min(ctx / 2).max(1);
        let prompt = &prompt[prompt.len().saturating_sub(ctx - room)..];
        let mut seq = Sequence {
            params: params.clone(),
            stop: stop.to_vec(),
            ctx,
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            prompt_tokens: prompt.len(),
            history: prompt.to_vec(),
            out: Vec::new(),
            emitted: String::new(),
            input: prompt.to_vec(),
            seen: 0,
            reason: None,
        };
        seq.check_room();
        Ok(seq)
    }

    /// Ends at the token budget or the context's end.
    fn check_room(&mut self) {
        if self.reason.is_none()
            && (self.out.len() >= self.params.max_new_tokens
                || self.seen + self.input.len() > self.ctx)
        {
            self.reason = Some(StopReason::Length);
        }
    }

    /// The tokens to feed the model next.
    pub fn input(&self) -> &[u32] {
        &self.input
    }

    pub fn is_done(&self) -> bool {
        self.reason.is_some()
    }

    /// Takes the logits after [`Sequence::input`]: samples the next token, streams the new
    /// text to `on_text` (which returns `false` to cancel).
    pub fn accept(
        &mut self,
        logits: &[f32],
        decode: &dyn Fn(&[u32]) -> Result<String>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<()> {
        if self.is_done() {
            return Ok(());
        }
        self.seen += self.input.len();
        let next = sample(logits, &self.params, &self.history, &mut self.rng);
        if self.stop.contains(&next) {
            self.reason = Some(StopReason::Stop);
            return Ok(());
        }
        self.out.push(next);
        self.history.push(next);
        // Decode the whole answer and emit what is new, holding back an incomplete
        // UTF-8 sequence (byte-level tokens can split a character).
        let text = decode(&self.out)?;
        if !text.ends_with('\u{FFFD}')
            && text.len() > self.emitted.len()
            && text.starts_with(self.emitted.as_str())
        {
            let piece = &text[self.emitted.len()..];
            let go_on = on_text(piece);
            self.emitted = text;
            if !go_on {
                self.reason = Some(StopReason::Cancelled);
                return Ok(());
            }
        }
        self.input = vec![next];
        self.check_room();
        Ok(())
    }

    /// The result, after the last piece of text is streamed.
    pub fn finish(
        self,
        decode: &dyn Fn(&[u32]) -> Result<String>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let reason = self.reason.unwrap_or(StopReason::Length);
        let text = decode(&self.out)?;
        if reason != StopReason::Cancelled
            && text.len() > self.emitted.len()
            && text.starts_with(self.emitted.as_str())
        {
            on_text(&text[self.emitted.len()..]);
        }
        Ok(Generation {
            ids: self.out,
            text,
            stop: reason,
            prompt_tokens: self.prompt_tokens,
        })
    }
}

/// Log-probability of each token of `continuation` given `prompt` and the tokens before
/// it. The gap detector reads the model's uncertainty from these.
pub fn score(model: &Thau, prompt: &[u32], continuation: &[u32]) -> Result<Vec<f32>> {
    if prompt.is_empty() || continuation.is_empty() {
        return Err(ModelError::Data(
            "score needs a prompt and a continuation".into(),
        ));
    }
    let all: Vec<u32> = prompt.iter().chain(continuation).copied().collect();
    if all.len() > model.cfg.max_seq_len {
        return Err(ModelError::Data(format!(
            "prompt and continuation ({} tokens) exceed the context of {}",
            all.len(),
            model.cfg.max_seq_len
        )));
    }
    let ids = Tensor::new(&all[..all.len() - 1], model.device())?.unsqueeze(0)?; // [1, T-1]
    let logits = model.forward(&ids, None)?.squeeze(0)?; // [T-1, V]
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let start = prompt.len() - 1;
    let targets = Tensor::new(continuation, model.device())?.unsqueeze(1)?; // [C, 1]
    let picked = logp
        .narrow(0, start, continuation.len())? // [C, V]
        .gather(&targets, 1)? // [C, 1]
        .squeeze(1)?;
    Ok(picked.to_vec1()?)
}
