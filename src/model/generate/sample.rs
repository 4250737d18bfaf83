//! Choosing the next token: the answer's repetition rules ([`adjusted`]), greedy or
//! sampled picks ([`pick`], [`argmax`]), an answer's token with the copy bias
//! ([`sample_answer`]), and a tool call's token under its grammar ([`sample_call`]).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Copying, Reader, SamplingParams};
use crate::model::grammar::{CallGrammar, CallState};
use crate::model::tokenizer::TOOL_OPEN_ID;
use crate::model::{ModelError, Result};

/// The index of the first largest value (NaN never wins; 0 when nothing beats -inf).
///
/// Two passes that vectorise (a lane-wise maximum, then the first index holding it)
/// instead of one scalar compare-and-select chain: over an 8k vocabulary the chain
/// took about 17 µs per token, which 32 sessions pay on every step.
pub(super) fn argmax(l: &[f32]) -> u32 {
    const LANES: usize = 16;
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = l.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in m.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let max = m
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
    if max == f32::NEG_INFINITY {
        return 0;
    }
    l.iter().position(|&v| v == max).unwrap_or(0) as u32
}

/// The tokens that would make `answered` repeat a run of `n` of its own tokens: those that
/// followed its last `n − 1` tokens before. None for `n` ≤ 1 or in an answer with a tool
/// call.
pub(super) fn repeats(answered: &[u32], n: usize) -> Vec<u32> {
    if n < 2 || answered.len() < n || answered.contains(&TOOL_OPEN_ID) {
        return Vec::new();
    }
    let last = &answered[answered.len() - (n - 1)..];
    answered
        .windows(n)
        .filter(|w| &w[..n - 1] == last)
        .map(|w| w[n - 1])
        .collect()
}

/// Picks the next token from `logits` (`[V]`, f32).
pub(super) fn sample(
    logits: &[f32],
    params: &SamplingParams,
    answered: &[u32],
    rng: &mut ChaCha8Rng,
) -> u32 {
    pick(
        &adjusted(logits, params, answered, params.no_repeat_ngram),
        params,
        rng,
    )
}

/// The next token of an answer outside a tool call: [`sample`], with the tokens that go
/// on copying its memory (`reading`'s) favoured by `params.answer_bias` (the sentence that
/// answers) or `params.copy_bias` (any other run), and never one of
/// `unending` (the stop tokens while a chat answer is still empty).
pub(super) fn sample_answer(
    logits: &[f32],
    params: &SamplingParams,
    answered: &[u32],
    rng: &mut ChaCha8Rng,
    reading: &Option<Reader>,
    unending: &[u32],
) -> u32 {
    // (tokens, bias)
    let (extend, bias) = match reading {
        Some(r) if !answered.contains(&TOOL_OPEN_ID) => match r.extensions(answered) {
            Copying::Answer(t) => (vec![t], params.answer_bias),
            Copying::Run(ts) => (ts, params.copy_bias),
        },
        _ => (Vec::new(), 0.0),
    };
    let extend = if bias > 0.0 { extend } else { Vec::new() };
    if extend.is_empty() && unending.is_empty() {
        return sample(logits, params, answered, rng);
    }
    let mut l = adjusted(logits, params, answered, params.no_repeat_ngram);
    for t in extend {
        if let Some(x) = l.get_mut(t as usize) {
            *x += bias as f32;
        }
    }
    for &t in unending {
        if let Some(x) = l.get_mut(t as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
    pick(&l, params, rng)
}

/// Taken from the logits of the tokens that would close a copied argument inside one of
/// the user's words: below any real logit, but finite.
const MID_WORD_PENALTY: f32 = 1.0e4;

/// Tokens a constrained pick tries, best first, before it masks the whole vocabulary.
const GREEDY_TRIES: usize = 8;

/// The user's last message, which a call's text arguments are favoured to copy, and the
/// subject of its request for a picture ([`crate::model::grammar::subject::of`]), a range
/// of its bytes.
pub(super) struct UserWords<'a> {
    pub bytes: &'a [u8],
    pub subject: Option<&'a std::ops::Range<usize>>,
}

/// Picks the next token of a tool call from `logits`: the same choice as [`sample`] (with
/// the span and subject biases added for a text argument) among the tokens `grammar` allows in `st`. The token [`sample`] would pick is checked first
/// (the usual case: a few bytes); only when it is refused is the vocabulary masked and
/// the choice made again. For sampling this is exact: a first draw kept when allowed, a
/// redraw from the allowed tokens otherwise, is a draw from the allowed tokens.
pub(super) fn sample_call(
    logits: &[f32],
    params: &SamplingParams,
    answered: &[u32],
    rng: &mut ChaCha8Rng,
    grammar: &CallGrammar,
    st: &CallState,
    user: UserWords,
) -> Result<u32> {
    let UserWords {
        bytes: source,
        subject,
    } = user;
    // A call's JSON may repeat itself (and a call begun in the prompt has no `<TOOL:` among
    // the answer's tokens to say so).
    let mut l = adjusted(logits, params, answered, 0);
    if params.span_bias > 0.0 {
        let span = grammar.span(st, source);
        let bias = params.span_bias as f32;
        // A copied argument goes on along the user's words, and does not end in one's
        // middle ("a lighth"): closing there is pushed below every other token (finite,
        // so it still wins where the grammar allows nothing else, at `maxLength`).
        let closing: Vec<u32> = if span.mid_word {
            grammar.starting_with(b'"').collect()
        } else {
            Vec::new()
        };
        for (ts, b) in [(&span.extend, bias), (&closing, -MID_WORD_PENALTY)] {
            for &t in ts {
                if let Some(x) = l.get_mut(t as usize) {
                    *x += b;
                }
            }
        }
    }
    if let Some(subject) = subject.filter(|_| params.subject_bias > 0.0) {
        for t in grammar.subject_next(st, source, subject) {
            if let Some(x) = l.get_mut(t as usize) {
                *x += params.subject_bias as f32;
            }
        }
    }
    let tries = if params.temperature <= 0.0 {
        GREEDY_TRIES
    } else {
        1
    };
    for _ in 0..tries {
        let t = pick(&l, params, rng);
        if grammar.allows(st, t) {
            return Ok(t);
        }
        if let Some(x) = l.get_mut(t as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
    grammar.mask(st, &mut l);
    if l.iter().all(|&x| x == f32::NEG_INFINITY) {
        return Err(ModelError::Data(
            "no token of the vocabulary can continue the tool call".into(),
        ));
    }
    Ok(pick(&l, params, rng))
}

/// `logits` with the answer's repetition rules applied (runs of `no_repeat` tokens never
/// repeated: [`SamplingParams::no_repeat_ngram`], or 0 inside a call).
fn adjusted(
    logits: &[f32],
    params: &SamplingParams,
    answered: &[u32],
    no_repeat: usize,
) -> Vec<f32> {
    let mut l: Vec<f32> = logits.to_vec();
    for t in repeats(answered, no_repeat) {
        if let Some(x) = l.get_mut(t as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
    if params.repetition_penalty > 1.0 {
        let p = params.repetition_penalty as f32;
        // Once per distinct token, however often it was generated.
        let mut seen = answered.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            if let Some(x) = l.get_mut(t as usize) {
                *x = if *x > 0.0 { *x / p } else { *x * p };
            }
        }
    }
    l
}

/// The token of adjusted logits `l`: the best, or a draw by temperature, top-k and top-p.
fn pick(l: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
    if params.temperature <= 0.0 {
        return argmax(l);
    }
    let mut idx: Vec<usize> = (0..l.len()).collect();
    let order = |&a: &usize, &b: &usize| l[b].total_cmp(&l[a]).then(a.cmp(&b));
    if params.top_k > 0 && params.top_k < idx.len() {
        // Only the k best need an order: select them (linear), then sort those.
        idx.select_nth_unstable_by(params.top_k - 1, order);
        idx.truncate(params.top_k);
    }
    idx.sort_unstable_by(order);
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
