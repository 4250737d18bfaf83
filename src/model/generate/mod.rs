//! Text generation and scoring with a [`Thau`] model: KV-cache decoding, temperature /
//! top-k / top-p / repetition-penalty sampling from a seeded RNG, stop tokens, a
//! per-token streaming callback, and [`score`] (per-token log-probabilities of a given
//! continuation, which the gap detector uses).

use std::sync::Arc;

use candle_core::{DType, Tensor, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::grammar::{CallGrammar, CallState};

mod sample;
use super::reading::{answer_start, carry_on, copied_whole, copy_extensions, from_start, Lexicon};
use super::tokenizer::{ThauTokenizer, ASSISTANT_ID, EOT_ID, SYSTEM_ID, TOOL_OPEN_ID, USER_ID};
use super::{KvCache, Thau};
use super::{ModelError, Result};
#[cfg(test)]
use sample::{argmax, repeats, sample};
use sample::{sample_answer, sample_call, UserWords};

/// The default [`SamplingParams::no_repeat_ngram`]: a run of three tokens (what
/// summarisation models ship with, e.g. BART's), short enough to stop a loop within a few
/// words, long enough for a sentence's own repeated words ("de la") to stay.
pub const DEFAULT_NO_REPEAT_NGRAM: usize = 3;

/// The default [`SamplingParams::span_bias`]: e³ ≈ 20 times the odds for a token that
/// goes on copying the request.
pub const DEFAULT_SPAN_BIAS: f64 = 3.0;

/// The default [`SamplingParams::copy_bias`].
pub const DEFAULT_COPY_BIAS: f64 = 4.0;
/// The default [`SamplingParams::answer_bias`]: e¹⁶, more than a young model's own
/// preference for any other token. Measured on the 236 held-out questions with a model
/// of 10 minutes' learning (copy_bias 4): answers holding the fact 158 with the answering
/// sentence favoured by 4, 176 by 8, 185 by 16, where retrieval's best sentence holds 183.
pub const DEFAULT_ANSWER_BIAS: f64 = 16.0;
/// The default [`SamplingParams::subject_bias`]: as strong as the answer's.
pub const DEFAULT_SUBJECT_BIAS: f64 = 16.0;
/// Tokens of an answer's end that must copy a run of its memory before
/// [`SamplingParams::copy_bias`] favours going on with it: two, so that one common word
/// ("the") does not pull the answer into every sentence that has it.
pub const COPY_BIAS_RUN: usize = 2;

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
    /// Above 1, discourages the tokens this answer has already generated. Not the
    /// prompt's: the prompt holds the recalled memories, and an answer grounded in them
    /// copies their words.
    pub repetition_penalty: f64,
    /// Above 1, never lets this answer repeat a run of this many of its own tokens (the
    /// "no repeat n-gram" rule of fairseq and transformers): a small model that copies
    /// from its memories otherwise loops back into the sentence it just copied ("at sea
    /// level? At sea level, water boils at sea level? …"). Off inside an answer with a
    /// tool call, whose JSON may repeat itself. 0 (or 1) is off.
    pub no_repeat_ngram: usize,
    pub seed: u64,
    /// Decode tool calls under the tools' grammar ([`super::grammar`]) when the model is
    /// served with one: a call can then only name a known tool and hold arguments its
    /// schema accepts. On by default; off shows what the model writes unaided.
    pub constrain_tools: bool,
    /// Under the grammar, added to the logits of the tokens that would extend a call's
    /// string argument as a span of the user's last message ([`CallGrammar::span`]); while
    /// it is on, such an argument is also never closed in the middle of one of its words:
    /// the subject of "draw me a fox in a scarf" is the request's own words, which a young
    /// model, left alone, replaces with a subject it was trained on. A bias rather than a
    /// rule, so an argument may still say what the request did not (a translation, a
    /// subject from earlier in the conversation). 0 is off.
    pub span_bias: f64,
    /// An answer that is copying a sentence of its memories, and chooses to end, ends
    /// where that sentence does, and takes the memory's next sentence too when it refers
    /// back ("It was introduced in 1582."): see [`super::reading::carry_on`]. A small
    /// model's language head ends answers at any "." ("3 p." of "3 p.m."), and it cannot
    /// tell that the fact is in the sentence after the one its question matched. Only for
    /// a model served with its tokenizer's lexicon; off inside an answer with a tool call.
    pub finish_copies: bool,
    /// Added to the logits of the tokens that go on with any run of the memory the
    /// answer's last [`COPY_BIAS_RUN`] tokens copy ([`super::reading::copy_extensions`]),
    /// once the answer has left the sentence [`SamplingParams::answer_bias`] favours. A
    /// young model picks the wrong
    /// sentence to copy (retrieval's best sentence held the answer for 130 of 236
    /// held-out questions, its own choice for 99), and one that began to copy a sentence
    /// drifts off it mid-way ("one tablespoon equals three teaspoon. In most is a kind of
    /// chemistry"). A bias, not a rule: a confident model still says what it chooses.
    /// Only for a model served with its tokenizer's lexicon; off inside an answer with a
    /// tool call. 0 is off.
    pub copy_bias: f64,
    /// Added to the logit of the token that goes on with the memory sentence that answers
    /// the question — the one sharing most of its words ([`super::reading::answer_start`])
    /// — while the whole answer copies it: its first token for an empty answer, then the
    /// next one. A model of a few minutes' learning still drifts from that sentence to one
    /// that shares its first token ("A discount…" becomes "A commit…"); this holds it to
    /// the sentence memory found, and the model still chooses where the answer ends. Same
    /// conditions as `copy_bias`; 0 is off.
    pub answer_bias: f64,
    /// Added to the logits of the tokens that go on copying the subject of the user's
    /// request for a picture ([`super::grammar::subject::of`]: "a picture of **a fox
    /// wearing a scarf**") into a tool call's text argument, while the argument so far is
    /// the subject's beginning ([`super::grammar::CallGrammar::subject_next`]). A young
    /// model writes a well-formed call about a subject it was trained on; `span_bias`
    /// only favours the user's words once the argument has begun with them. Only under
    /// the tools' grammar (`constrain_tools`); 0 is off.
    pub subject_bias: f64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 200,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.1,
            no_repeat_ngram: DEFAULT_NO_REPEAT_NGRAM,
            seed: 42,
            constrain_tools: true,
            span_bias: DEFAULT_SPAN_BIAS,
            finish_copies: true,
            copy_bias: DEFAULT_COPY_BIAS,
            answer_bias: DEFAULT_ANSWER_BIAS,
            subject_bias: DEFAULT_SUBJECT_BIAS,
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
        if !(self.span_bias.is_finite() && self.span_bias >= 0.0) {
            return bad("span_bias must be >= 0");
        }
        if !(self.copy_bias.is_finite() && self.copy_bias >= 0.0) {
            return bad("copy_bias must be >= 0");
        }
        if !(self.answer_bias.is_finite() && self.answer_bias >= 0.0) {
            return bad("answer_bias must be >= 0");
        }
        if !(self.subject_bias.is_finite() && self.subject_bias >= 0.0) {
            return bad("subject_bias must be >= 0");
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

/// What an answer to a chat turn reads while it decodes ([`Sequence::with_reading`]).
#[derive(Debug, Clone)]
struct Reader {
    lex: Arc<Lexicon>,
    /// The prompt's memory turn (the system turn before the last question).
    memory: Vec<u32>,
    /// Where in it the answer to the question starts ([`answer_start`]).
    start: Option<usize>,
}

impl Reader {
    /// The tokens that go on copying the memory after `answered`: while the whole answer
    /// copies the sentence that answers the question, that sentence's next token alone
    /// ([`from_start`]; its first token for an empty answer), so that the same words in
    /// another sentence (a learned question before its answer) do not pull the copy away;
    /// else those that go on with the run its last tokens copy ([`copy_extensions`]).
    fn extensions(&self, answered: &[u32]) -> Copying {
        match self
            .start
            .and_then(|s| from_start(&self.memory, answered, s, &self.lex))
        {
            Some(t) => Copying::Answer(t),
            None => Copying::Run(copy_extensions(
                &self.memory,
                answered,
                &self.lex,
                COPY_BIAS_RUN,
            )),
        }
    }
}

/// What an answer is copying from its memory, and the tokens that go on with it.
#[derive(Debug, Clone, PartialEq)]
enum Copying {
    /// The sentence that answers the question (favoured by `answer_bias`).
    Answer(u32),
    /// Some run of the memory (favoured by `copy_bias`).
    Run(Vec<u32>),
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
/// tokens (not included in the output). Tool calls are written under `grammar` when one
/// is given (and `params.constrain_tools`).
pub fn generate(
    model: &Thau,
    tok: &ThauTokenizer,
    prompt: &[u32],
    params: &SamplingParams,
    stop: &[u32],
    grammar: Option<&Arc<CallGrammar>>,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let mut dec = NativeDecoder::new(model);
    let seq = Sequence::new(prompt, params, stop, dec.context())?
        .with_grammar(grammar.cloned())
        .with_reading(model.lexicon());
    run(seq, &mut dec, &|ids| tok.decode(ids), on_text)
}

/// [`generate`] for any [`Decoder`], with `decode` turning ids into text.
pub fn generate_with(
    dec: &mut dyn Decoder,
    decode: &dyn Fn(&[u32]) -> Result<String>,
    prompt: &[u32],
    params: &SamplingParams,
    stop: &[u32],
    grammar: Option<&Arc<CallGrammar>>,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let seq = Sequence::new(prompt, params, stop, dec.context())?.with_grammar(grammar.cloned());
    run(seq, dec, decode, on_text)
}

/// Decodes `seq` to its end with `dec`.
fn run(
    mut seq: Sequence,
    dec: &mut dyn Decoder,
    decode: &dyn Fn(&[u32]) -> Result<String>,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    while !seq.is_done() {
        let logits = dec.next_logits(seq.input())?;
        seq.accept(&logits, decode, on_text)?;
    }
    seq.finish(decode, on_text)
}

/// One generation as a state machine, so that a scheduler can advance many of them a token
/// at a time ([`super::decode::batch`]): feed [`Sequence::input`] to the model, hand the logits of
/// its last position to [`Sequence::accept`], until [`Sequence::is_done`].
#[derive(Debug, Clone)]
pub struct Sequence {
    params: SamplingParams,
    stop: Vec<u32>,
    ctx: usize,
    rng: ChaCha8Rng,
    prompt_tokens: usize,
    out: Vec<u32>,
    /// The text streamed so far.
    emitted: String,
    /// Incremental decoding: `out[..read]` has been streamed, and `window_text` is the
    /// text of `out[window..read]`. Each step decodes `out[window..]` only (a few tokens,
    /// not the whole answer: decoding it all made 32 sessions' steps spend more time in
    /// the tokenizer than in the attention), with one earlier chunk as context for
    /// decoders whose output depends on it.
    window: usize,
    read: usize,
    window_text: String,
    /// Tokens the model has not seen yet (the prompt, then the last sampled token).
    input: Vec<u32>,
    /// Positions the model has seen.
    seen: usize,
    reason: Option<StopReason>,
    /// Whether this answers a chat turn (the prompt ends with `<|assistant|>`): its text
    /// starts with the chat template's space ([`super::tokenizer::turn_text`]), which is
    /// not shown.
    turn: bool,
    /// The tools' grammar, when tool calls are decoded under it, and how far the call
    /// being written has come (none outside a call).
    grammar: Option<Arc<CallGrammar>>,
    call: Option<CallState>,
    /// The bytes of the prompt's last user turn: the words a call's arguments are
    /// favoured to copy, and the subject of its request among them.
    source: Vec<u8>,
    subject: Option<std::ops::Range<usize>>,
    /// The lexicon and the prompt's memory turn, when an answer is carried on along the
    /// memory it copies ([`Sequence::with_reading`]), and the sentences it was carried
    /// into.
    reading: Option<Reader>,
    carried: usize,
    /// The memory positions still to copy, while an answer is carried on.
    carrying: std::ops::Range<usize>,
    /// The answer ends when what it is carried on with does (its model chose to end).
    carried_to_end: bool,
}

/// The text of the turn that `ids` (the tokens after its marker) opens: up to its end of
/// turn, or all of them.
fn turn_text(ids: &[u32]) -> &[u32] {
    let end = ids.iter().position(|&t| t == EOT_ID).unwrap_or(ids.len());
    &ids[..end]
}

/// The tokens of a `ctx`-token context kept free for an answer of `max_new_tokens`: a
/// longer prompt loses its beginning. At most half the context, so a long answer request
/// never squeezes the prompt to nothing.
pub fn answer_room(max_new_tokens: usize, ctx: usize) -> usize {
    max_new_tokens.min(ctx / 2).max(1)
}

impl Sequence {
    /// A generation of `prompt` (its end, when it would leave no room to answer in `ctx`).
    pub fn new(prompt: &[u32], params: &SamplingParams, stop: &[u32], ctx: usize) -> Result<Self> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(ModelError::Data("empty prompt".into()));
        }
        // Keep the end of a prompt that would not leave room to answer.
        let room = answer_room(params.max_new_tokens, ctx);
        let prompt = &prompt[prompt.len().saturating_sub(ctx - room)..];
        let mut seq = Sequence {
            params: params.clone(),
            stop: stop.to_vec(),
            ctx,
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            prompt_tokens: prompt.len(),
            out: Vec::new(),
            emitted: String::new(),
            window: 0,
            read: 0,
            window_text: String::new(),
            input: prompt.to_vec(),
            seen: 0,
            reason: None,
            turn: prompt.last() == Some(&ASSISTANT_ID),
            grammar: None,
            call: None,
            source: Vec::new(),
            subject: None,
            reading: None,
            carried: 0,
            carrying: 0..0,
            carried_to_end: false,
        };
        seq.check_room();
        Ok(seq)
    }

    /// Decodes tool calls under `grammar` (when `params.constrain_tools`). A prompt that
    /// ends inside a call (after `<TOOL:`, not yet closed) goes on under the grammar from
    /// where it is; one whose call is already broken goes on unconstrained.
    pub fn with_grammar(mut self, grammar: Option<Arc<CallGrammar>>) -> Self {
        let Some(g) = grammar.filter(|_| self.params.constrain_tools) else {
            return self;
        };
        if let Some(open) = self.input.iter().rposition(|&t| t == TOOL_OPEN_ID) {
            let mut st = g.start();
            if self.input[open + 1..].iter().all(|&t| g.step(&mut st, t)) && st != CallState::Closed
            {
                self.call = Some(st);
            }
        }
        if let Some(user) = self.input.iter().rposition(|&t| t == USER_ID) {
            self.source = g.text_of(turn_text(&self.input[user + 1..]));
            self.subject = std::str::from_utf8(&self.source)
                .ok()
                .and_then(super::grammar::subject::of);
        }
        self.grammar = Some(g);
        self
    }

    /// Holds an answer to a chat turn to the memory it copies (`params.finish_copies`,
    /// `params.copy_bias`): `lexicon` is the one the model reads with, and the memory is
    /// the prompt's system turn before its last question. Nothing without a lexicon or a
    /// memory turn, or with both rules off.
    pub fn with_reading(mut self, lexicon: Option<Arc<Lexicon>>) -> Self {
        let on = self.turn
            && (self.params.finish_copies
                || self.params.copy_bias > 0.0
                || self.params.answer_bias > 0.0);
        let Some(lex) = lexicon.filter(|_| on) else {
            return self;
        };
        let Some(user) = self.input.iter().rposition(|&t| t == USER_ID) else {
            return self;
        };
        if let Some(system) = self.input[..user].iter().rposition(|&t| t == SYSTEM_ID) {
            let memory = turn_text(&self.input[system + 1..user]).to_vec();
            let start = answer_start(&memory, turn_text(&self.input[user + 1..]), &lex);
            self.reading = Some(Reader { lex, memory, start });
        }
        self
    }

    /// `next`, or what the answer's memory makes of it (`params.finish_copies`):
    /// - an answer that copied the sentence that answers its question whole
    ///   ([`copied_whole`]) ends there, as if its model had chosen to: a young model goes
    ///   on into the memory's next line ("…es el Sol.\n- ¿Qué actividad…");
    /// - an answer about to end is carried on along the memory sentence it copies
    ///   ([`carry_on`]: the rest of it, or the next one when that refers back), and ends
    ///   when the carried words do.
    fn carried_on(&mut self, next: u32) -> u32 {
        let Some(r) = self.reading.as_ref().filter(|_| self.params.finish_copies) else {
            return next;
        };
        let end = self.stop.first().copied().unwrap_or(next);
        if self.carrying.is_empty() && self.call.is_none() && !self.out.contains(&TOOL_OPEN_ID) {
            // The carried words are done: the model had chosen to end (and the answer may
            // still take the next sentence, when it refers back).
            let next = if self.carried_to_end { end } else { next };
            let answered = r
                .start
                .is_some_and(|s| copied_whole(&r.memory, &self.out, s, &r.lex));
            if self.stop.contains(&next) || answered {
                match carry_on(&r.memory, &self.out, &r.lex, self.carried) {
                    Some(c) => {
                        self.carried += usize::from(c.new_sentence);
                        self.carrying = c.span;
                        self.carried_to_end = true;
                    }
                    None => return end,
                }
            }
        }
        match self.carrying.next() {
            Some(at) => r.memory[at],
            None => next,
        }
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

    /// Positions the whole generation can take: its prompt and its token budget
    /// (within the context).
    pub fn positions_needed(&self) -> usize {
        (self.prompt_tokens + self.params.max_new_tokens).min(self.ctx)
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
        // A chat answer says something: a small model shown memories that do not match
        // its question (a learned "question answer" line among them) can put all its
        // weight on ending at once, and an empty reply tells a user nothing.
        let unending: &[u32] = if self.turn && self.out.is_empty() {
            &self.stop
        } else {
            &[]
        };
        let next = match (&self.grammar, &mut self.call) {
            (Some(g), Some(st)) => {
                let mut next = sample_call(
                    logits,
                    &self.params,
                    &self.out,
                    &mut self.rng,
                    g,
                    st,
                    UserWords {
                        bytes: &self.source,
                        subject: self.subject.as_ref(),
                    },
                )?;
                // A call ends within the token budget: a pick after which the shortest way
                // to close it no longer fits gives way to that way's first token.
                let left = self.params.max_new_tokens.saturating_sub(self.out.len());
                if !g.leaves_room(st, next, left) {
                    next = g.closing_token(st).unwrap_or(next);
                }
                g.step(st, next);
                if *st == CallState::Closed {
                    self.call = None;
                }
                next
            }
            (Some(g), None) => {
                let next = sample_answer(
                    logits,
                    &self.params,
                    &self.out,
                    &mut self.rng,
                    &self.reading,
                    unending,
                );
                if next == TOOL_OPEN_ID {
                    self.call = Some(g.start());
                }
                next
            }
            (None, _) => sample_answer(
                logits,
                &self.params,
                &self.out,
                &mut self.rng,
                &self.reading,
                unending,
            ),
        };
        let next = self.carried_on(next);
        if self.stop.contains(&next) {
            self.reason = Some(StopReason::Stop);
            return Ok(());
        }
        self.out.push(next);
        // Decode the window and emit what is new, holding back an incomplete UTF-8
        // sequence (byte-level tokens can split a character).
        let text = decode(&self.out[self.window..])?;
        if !text.ends_with('\u{FFFD}')
            && text.len() > self.window_text.len()
            && text.starts_with(self.window_text.as_str())
        {
            let piece = &text[self.window_text.len()..];
            let go_on = self.show(piece, on_text);
            self.emitted.push_str(piece);
            (self.window, self.read) = (self.read, self.out.len());
            self.window_text = decode(&self.out[self.window..self.read])?;
            if !go_on {
                self.reason = Some(StopReason::Cancelled);
                return Ok(());
            }
        }
        self.input = vec![next];
        self.check_room();
        Ok(())
    }

    /// Sends `piece` to `on_text`, without the space an answer to a chat turn starts with;
    /// `true` to go on.
    fn show(&self, piece: &str, on_text: &mut dyn FnMut(&str) -> bool) -> bool {
        let piece = match piece.strip_prefix(' ') {
            Some(rest) if self.turn && self.emitted.is_empty() => rest,
            _ => piece,
        };
        piece.is_empty() || on_text(piece)
    }

    /// The result, after the last piece of text is streamed.
    pub fn finish(
        self,
        decode: &dyn Fn(&[u32]) -> Result<String>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let reason = self.reason.unwrap_or(StopReason::Length);
        let mut text = decode(&self.out)?;
        if reason != StopReason::Cancelled
            && text.len() > self.emitted.len()
            && text.starts_with(self.emitted.as_str())
        {
            self.show(&text[self.emitted.len()..], on_text);
        }
        if self.turn && text.starts_with(' ') {
            text.remove(0);
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

#[cfg(test)]
mod tests;
