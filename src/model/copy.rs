//! The copy head: a pointer over the context mixed into the next-token distribution
//! (pointer-generator, See et al. 2017; CopyNet, Gu et al. 2016). A model trained from
//! scratch learns to read its context late; with a copy path, answering from recalled
//! memories is one attention away from the first minutes (see
//! `shared/notes/learning-to-answer.md`: 0 of 20 held-out answers without it, 12 of 20
//! with it, same model and 10 minutes of training).
//!
//! From the final normalised hidden states `h` (`c` = the head width):
//!
//! ```text
//! q_t = W_q h_t,  k_j = W_k h_{j−1} + W_s h_j      [c]   (h_{−1} = 0)
//! a⁰_tj = softmax_{j ≤ t}(q_t · k_j / √c + γ o_tj)   the pointer before it follows
//! f_tj = a⁰_{t−1, j−1} · [id_{j−1} = id_t]            position j continues what was copied
//! a_tj = softmax_{j ≤ t}(q_t · k_j / √c + γ o_tj + β f_tj)   causal
//! ```
//!
//! **Reading the memory that matches the question.** In an answer's rows, `o_tj` ∈ [0, 1]
//! says how much of the question's wording the memory text around position j holds
//! ([`super::reading`]: DrQA's exact-match feature over a window; 0 outside the memory
//! turn and outside answers). γ (`copy_read.weight`, learned, starting at [`READ_INIT`])
//! turns it into a prior: a small model's pointer, which cannot yet tell the answering
//! sentence from one that shares a single word with it, starts in the right line. A
//! checkpoint saved before γ existed loads with γ = 0, the same function.
//!
//! **Copying goes on where it left off** (CopyNet's "selective read", Gu et al. 2016). When
//! the pointer at t−1 rested on position j−1 and the token at t is the one it pointed at,
//! the copy happened, and position j holds what comes next in that span. The score of j is
//! raised by β (a learned scalar, `copy_follow.weight`) times that previous mass. Without
//! it a pointer keyed by a single state drifts to any other place the last word occurs
//! ("…, which is" jumps into another sentence) or loops back. The previous step's pointer
//! is taken before its own follow term (`a⁰`), so training computes every row at once and
//! decoding computes the same rows from the cache. β starts at [`FOLLOW_INIT`]; a
//! checkpoint saved before it existed loads with β = 0, the same function as before.
//!
//! ```text
//! copy_t(v) = Σ_{j ≤ t, id_j = v} a_tj             the pointer's mass on token v
//! g_t = σ(w_g · h_t)                               how much the LM head is trusted
//! p_t(v) = g_t · softmax(W_lm h_t)(v) + (1 − g_t) · copy_t(v)
//! ```
//!
//! A token is keyed by the state *before* it (the induction-head pattern): the answer's
//! "… code of Ana is" matches the memory's "… code of Ana is" and copies the token that
//! came next there, which needs no layer to have moved "Ana" onto the copied token
//! itself. The self key `W_s h_j` lets a pointer also land on a token by what the token
//! itself is: the first word of an answer ("Water freezes at …"), which nothing before it
//! names. `W_s` starts at zero (the head starts as the pure induction head below) and
//! a checkpoint saved before it existed loads with a zero one, the same function.
//!
//! **An induction head from the start.** `W_q` and `W_k` start equal, N(0, 1/d): on the
//! RMS-normalised states a state scores about √c = 8 against itself and about ±1 against
//! an unrelated one, and at initialisation a state is mostly its token's embedding. So a
//! fresh model already points from a token to the places that token occurred before and
//! copies what followed them; training unties the two and sharpens what counts as a match.
//!
//! The head reads the stream like the LM head (growth treats its weights the same way) and
//! writes nothing into it. Training needs only `p_t(target)`, so the `[T, V]` copy
//! distribution is never built there ([`CopyHead::nll`]); decoding builds it for the rows
//! it samples from ([`CopyHead::log_probs`]), with the keys and ids of earlier positions
//! kept in a [`CopyCache`]. The GGUF export leaves the head out (llama.cpp has no such
//! layer): an exported model answers with its LM head alone.

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;

use super::config::ModelConfig;
use super::ops::{causal_softmax, linear, IGNORE_INDEX};
use super::reading::{readings, Lexicon, Reading};
use super::{ModelError, Result};

/// Query projection `[c, d]`.
pub const COPY_Q: &str = "copy_q.weight";
/// Key projection `[c, d]`.
pub const COPY_K: &str = "copy_k.weight";
/// Self-key projection `[c, d]` (starts at zero).
pub const COPY_S: &str = "copy_s.weight";
/// The follow weight β `[1, 1]`: how strongly a pointer goes on to the next position of
/// the span it just copied from.
pub const COPY_FOLLOW: &str = "copy_follow.weight";
/// β of a fresh copy head: a pointer that rested wholly on the previous position raises
/// its successor's score by e³ ≈ 20×; training moves it.
pub const FOLLOW_INIT: f64 = 3.0;
/// The reading weight γ `[1, 1]`: how strongly an answer's pointer prefers the memory
/// text that shares the question's words.
pub const COPY_READ: &str = "copy_read.weight";
/// γ of a fresh copy head: the best-matching memory text starts e⁵ ≈ 150× likelier to be
/// copied than text that shares nothing with the question, and e^2.5 ≈ 12× likelier than
/// text that shares half as much; training moves it, but little in a session (3 ended at
/// 2.85 after 10 minutes), so the start matters. 5 answered 92 of 236 held-out questions
/// after 10 minutes where 3 answered 86 (one run each, within the runs' noise).
pub const READ_INIT: f64 = 5.0;
/// Gate `[1, d]`: `σ(w_g · h)` is the LM head's share of the next-token distribution.
pub const COPY_GATE: &str = "copy_gate.weight";
/// Smallest probability a target is given, so that a token neither head predicts costs a
/// large but finite loss (ln 1e-9 ≈ −20.7, the LM head's loss near a uniform 1e9 vocab).
const PROB_FLOOR: f64 = 1e-9;

/// The names and shapes of the copy head's weights for `cfg` (none without a copy head).
pub fn copy_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    if !cfg.copy_head {
        return Vec::new();
    }
    let (c, d) = (cfg.head_dim, cfg.d_model);
    vec![
        (COPY_Q.to_string(), vec![c, d]),
        (COPY_K.to_string(), vec![c, d]),
        (COPY_S.to_string(), vec![c, d]),
        (COPY_GATE.to_string(), vec![1, d]),
        (COPY_FOLLOW.to_string(), vec![1, 1]),
        (COPY_READ.to_string(), vec![1, 1]),
    ]
}

/// Whether a weight belongs to the copy head (left out of GGUF exports).
pub fn is_copy_weight(name: &str) -> bool {
    name.starts_with("copy_")
}

/// The copy head's weights.
#[derive(Debug, Clone)]
pub struct CopyHead {
    wq: Tensor,     // [c, d]
    wk: Tensor,     // [c, d]
    ws: Tensor,     // [c, d]
    gate: Tensor,   // [1, d]
    follow: Tensor, // [1, 1]
    read: Tensor,   // [1, 1]
    width: usize,
    /// The tokenizer's words, for the reading ([`CopyHead::with_lexicon`]).
    lexicon: std::sync::Arc<Lexicon>,
}

/// What decoding keeps of the positions seen so far: their copy keys and token ids, the
/// key of the next position (made from the last state), and the last position's pointer
/// before its follow term (`a⁰`, which the next position follows).
#[derive(Debug, Clone, Default)]
pub struct CopyCache {
    keys: Option<Tensor>, // [S, c]
    ids: Vec<u32>,
    next_key: Option<Tensor>, // [1, c]
    last_base: Vec<f32>,      // [S]
}

impl CopyHead {
    pub fn load(vb: &VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let (c, d) = (cfg.head_dim, cfg.d_model);
        Ok(CopyHead {
            wq: vb.get((c, d), COPY_Q)?,
            wk: vb.get((c, d), COPY_K)?,
            ws: vb.get((c, d), COPY_S)?,
            gate: vb.get((1, d), COPY_GATE)?,
            follow: vb.get((1, 1), COPY_FOLLOW)?,
            read: vb.get((1, 1), COPY_READ)?,
            width: c,
            lexicon: Default::default(),
        })
    }

    /// The head reading with `lexicon` (the tokenizer's words; see [`Lexicon`]). Training
    /// and decoding must use the same one: the model is built beside its tokenizer.
    pub fn with_lexicon(mut self, lexicon: std::sync::Arc<Lexicon>) -> Self {
        self.lexicon = lexicon;
        self
    }

    /// The lexicon it reads with.
    pub fn lexicon(&self) -> std::sync::Arc<Lexicon> {
        self.lexicon.clone()
    }

    fn scale(&self) -> f64 {
        1.0 / (self.width as f64).sqrt()
    }

    /// `σ(w_g · h)` for rows `h` `[N, d]`: `[N]`.
    fn gate(&self, hidden: &Tensor) -> Result<Tensor> {
        let z = linear(hidden, &self.gate)?.flatten_all()?; // [N]

        // σ(z) = 1 / (1 + e^−z), in ops that record their gradient.
        Ok((z.neg()?.exp()? + 1.0)?.recip()?)
    }

    /// Per-row negative log-likelihood of `targets` under the mixed distribution, given
    /// the LM head's own per-row NLL `lm_nll` (`[B*T]`, as
    /// [`lm_head_cross_entropy`](super::ops::lm_head_cross_entropy) returns it).
    /// `hidden` is `[B*T, d]`, `ids` and `targets` are the `B` windows of `T` tokens
    /// flattened; rows whose target is [`IGNORE_INDEX`] give 0. Returns `[B*T]`.
    pub fn nll(
        &self,
        hidden: &Tensor,
        ids: &[u32],
        targets: &[u32],
        (b, t): (usize, usize),
        lm_nll: &Tensor,
    ) -> Result<Tensor> {
        if ids.len() != b * t || targets.len() != b * t {
            return Err(ModelError::Data(format!(
                "copy head: {} ids and {} targets for {b} windows of {t}",
                ids.len(),
                targets.len()
            )));
        }
        let (c, dev, dtype) = (self.width, hidden.device(), hidden.dtype());
        let q = linear(hidden, &self.wq)?.reshape((b, t, c))?; // [B, T, c]
        let k = linear(hidden, &self.wk)?.reshape((b, t, c))?; // [B, T, c]

        // Position j's key is the state before it (shifted right, a zero key first) plus
        // its own state's self key.
        let zero = Tensor::zeros((b, 1, c), k.dtype(), k.device())?; // [B, 1, c]
        let before = Tensor::cat(&[&zero, &k.narrow(1, 0, t - 1)?], 1)?; // [B, T, c]
        let k = (before + linear(hidden, &self.ws)?.reshape((b, t, c))?)?; // [B, T, c]
                                                                           // q · k / √c: [B, T, T]
        let scores = (q.matmul(&k.t()?.contiguous()?)? * self.scale())?;
        // read[b, i, j] = o_ij: how well the memory around j matches row i's question.
        let mut read = vec![0f32; b * t * t];
        let mut reads = false;
        for w in 0..b {
            for r in readings(&ids[w * t..(w + 1) * t], &self.lexicon) {
                for i in r.rows.clone() {
                    for (j, o) in r.positions().filter(|&(j, _)| j <= i) {
                        read[(w * t + i) * t + j] = o;
                        reads = true;
                    }
                }
            }
        }
        let scores = if reads {
            let read = Tensor::from_vec(read, (b, t, t), dev)?.to_dtype(dtype)?;
            (scores + read.broadcast_mul(&self.read.flatten_all()?)?)? // [B, T, T]
        } else {
            scores
        };
        let base = causal_softmax(&scores, 1.0, 0)?; // [B, T, T]

        // same[b, i, j] = 1 where position j holds the token position i must predict;
        // continues[b, i, j] = 1 where position j − 1 holds the token at i (j ≥ 1), so j
        // continues a copy from j − 1.
        let mut same = vec![0f32; b * t * t];
        let mut continues = vec![0f32; b * t * t];
        for w in 0..b {
            let (ids, targets) = (&ids[w * t..(w + 1) * t], &targets[w * t..(w + 1) * t]);
            for (i, &target) in targets.iter().enumerate() {
                let at = (w * t + i) * t;
                for j in 1..=i {
                    continues[at + j] = f32::from(u8::from(ids[j - 1] == ids[i]));
                }
                if target == IGNORE_INDEX {
                    continue;
                }
                for j in 0..=i {
                    same[at + j] = f32::from(u8::from(ids[j] == target));
                }
            }
        }
        let attn = if t < 2 {
            base
        } else {
            // prev[b, i, j] = base[b, i − 1, j − 1] (zero in the first row and column).
            let row0 = Tensor::zeros((b, 1, t), dtype, dev)?; // [B, 1, T]
            let down = Tensor::cat(&[&row0, &base.narrow(1, 0, t - 1)?], 1)?; // [B, T, T]
            let col0 = Tensor::zeros((b, t, 1), dtype, dev)?; // [B, T, 1]
            let prev = Tensor::cat(&[&col0, &down.narrow(2, 0, t - 1)?], 2)?; // [B, T, T]
            let continues = Tensor::from_vec(continues, (b, t, t), dev)?.to_dtype(dtype)?;
            let follow = (prev * continues)?.broadcast_mul(&self.follow.flatten_all()?)?; // [B, T, T]
            causal_softmax(&(scores + follow)?, 1.0, 0)? // [B, T, T]
        };
        let same = Tensor::from_vec(same, (b, t, t), dev)?.to_dtype(dtype)?;
        let copied = (attn * same)?.sum(D::Minus1)?.flatten_all()?; // [B*T]
        let g = self.gate(hidden)?; // [B*T]
        let p = ((&g * lm_nll.neg()?.exp()?)? + (g.affine(-1.0, 1.0)? * copied)?)?; // [B*T]
        let nll = (p + PROB_FLOOR)?.log()?.neg()?; // [B*T]
        let keep: Vec<u8> = targets
            .iter()
            .map(|&x| u8::from(x != IGNORE_INDEX))
            .collect();
        let keep = Tensor::from_vec(keep, b * t, hidden.device())?;
        Ok(keep.where_cond(&nll, &nll.zeros_like()?)?)
    }

    /// Log-probabilities `[T, V]` (f32) of the next token at `T` new positions of one
    /// sequence: `hidden` `[T, d]` their final hidden states, `logits` `[T, V]` the LM
    /// head's, `ids` their tokens. `cache` holds the earlier positions and is extended.
    pub fn log_probs(
        &self,
        hidden: &Tensor,
        logits: &Tensor,
        ids: &[u32],
        cache: &mut CopyCache,
    ) -> Result<Tensor> {
        let t = ids.len();
        if t == 0 || hidden.dim(0)? != t {
            return Err(ModelError::Data(format!(
                "copy head: {t} ids for {} positions",
                hidden.dim(0)?
            )));
        }
        let k = linear(hidden, &self.wk)?; // [T, c]
        let before = match cache.next_key.take() {
            Some(key) => key,
            None => Tensor::zeros((1, self.width), k.dtype(), k.device())?, // [1, c]
        };
        // The new positions are keyed by the states before them and their own.
        let keys_new =
            (Tensor::cat(&[&before, &k.narrow(0, 0, t - 1)?], 0)? + linear(hidden, &self.ws)?)?; // [T, c]
        cache.next_key = Some(k.narrow(0, t - 1, 1)?);
        let keys = match cache.keys.take() {
            Some(old) => Tensor::cat(&[&old, &keys_new], 0)?, // [S, c]
            None => keys_new,
        };
        cache.ids.extend_from_slice(ids);
        let s = cache.ids.len();
        let q = linear(hidden, &self.wq)?; // [T, c]
        let scores = q
            .matmul(&keys.t()?.contiguous()?)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?; // [T, S]
        cache.keys = Some(keys);
        let (beta, gamma) = (scalar(&self.follow)?, scalar(&self.read)?);
        let scale = self.scale() as f32;
        // The readings of the new rows (only answer rows have one).
        let readings: Vec<Reading> = readings(&cache.ids, &self.lexicon)
            .into_iter()
            .filter(|r| r.rows.end > s - t)
            .collect();
        // Row i (position p): a⁰ from the scores and the reading, then a with the follow
        // term from the previous row's a⁰.
        let mut base: Vec<Vec<f32>> = Vec::with_capacity(t);
        let mut attn = Vec::with_capacity(t);
        for (i, row) in scores.iter().enumerate() {
            let p = s - t + i;
            let mut s0: Vec<f32> = row[..=p].iter().map(|x| x * scale).collect();
            if let Some(r) = readings.iter().find(|r| r.rows.contains(&p)) {
                for (j, o) in r.positions().filter(|&(j, _)| j <= p) {
                    s0[j] += gamma * o;
                }
            }
            let prev: &[f32] = if i == 0 {
                &cache.last_base
            } else {
                &base[i - 1]
            };
            let s1: Vec<f32> = s0
                .iter()
                .enumerate()
                .map(|(j, &x)| {
                    let continues = j >= 1 && cache.ids[j - 1] == cache.ids[p];
                    let f = if continues {
                        prev.get(j - 1).copied().unwrap_or(0.0)
                    } else {
                        0.0
                    };
                    x + beta * f
                })
                .collect();
            attn.push(softmax(&s1));
            base.push(softmax(&s0));
        }
        if let Some(last) = base.pop() {
            cache.last_base = last;
        }
        let g = self.gate(hidden)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let lm = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
        let mut rows = lm.to_vec2::<f32>()?;
        for ((row, a), g) in rows.iter_mut().zip(&attn).zip(&g) {
            row.iter_mut().for_each(|p| *p *= g);
            for (&weight, &id) in a.iter().zip(&cache.ids) {
                if let Some(p) = row.get_mut(id as usize) {
                    *p += (1.0 - g) * weight;
                }
            }
            row.iter_mut()
                .for_each(|p| *p = (*p + PROB_FLOOR as f32).ln());
        }
        let v = logits.dim(D::Minus1)?;
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        Ok(Tensor::from_vec(flat, (t, v), logits.device())?)
    }
}

/// The value of a `[1, 1]` weight, in f32.
fn scalar(w: &Tensor) -> Result<f32> {
    Ok(w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0])
}

/// `softmax(x)` of one row, in f32.
fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let z: f32 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::cross_entropy;
    use crate::testing::{check_grad, det, max_diff};
    use candle_core::Device;

    fn head(d: usize, c: usize, dtype: DType) -> CopyHead {
        let w = |shape: &[usize], salt| det(shape, salt).to_dtype(dtype).unwrap();
        CopyHead {
            wq: w(&[c, d], 0.7),
            wk: w(&[c, d], 1.3),
            ws: w(&[c, d], 2.3),
            gate: w(&[1, d], 2.9),
            follow: Tensor::new(&[[1.7f64]], &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
            read: Tensor::new(&[[2.1f64]], &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
            width: c,
            lexicon: Default::default(),
        }
    }

    /// The mixture written out for one row, in f64: g·softmax(logits) + (1−g)·pointer,
    /// the pointer reading the memory (γ·o) and following the previous row's pointer
    /// (before its own follow term).
    fn reference_p(
        head: &CopyHead,
        h: &Tensor,
        logits: &Tensor,
        ids: &[u32],
        i: usize,
    ) -> Vec<f64> {
        let h = h.to_dtype(DType::F64).unwrap();
        let row = |w: &Tensor, r: usize| {
            w.to_dtype(DType::F64)
                .unwrap()
                .matmul(&h.narrow(0, r, 1).unwrap().t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        let gamma = head
            .read
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[0];
        // Row r's reading: o over the memory, as the ids up to r give it.
        let prior = |r: usize| -> Vec<f64> {
            let mut o = vec![0.0; r + 1];
            for rd in crate::model::reading::readings(&ids[..=r], &head.lexicon) {
                if rd.rows.contains(&r) {
                    rd.positions().for_each(|(j, x)| o[j] = x as f64);
                }
            }
            o
        };
        // Row r's scaled scores plus its reading over positions j ≤ r, and their softmax.
        let scores = |r: usize| -> Vec<f64> {
            let q = row(&head.wq, r);
            let o = prior(r);
            (0..=r)
                .map(|j| {
                    let mut k = row(&head.ws, j);
                    if j > 0 {
                        k.iter_mut()
                            .zip(row(&head.wk, j - 1))
                            .for_each(|(a, b)| *a += b);
                    }
                    q.iter().zip(&k).map(|(a, b)| a * b).sum::<f64>() * head.scale() + gamma * o[j]
                })
                .collect()
        };
        let softmax = |s: &[f64]| -> Vec<f64> {
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            s.iter().map(|x| (x - m).exp() / z).collect()
        };
        let beta = head
            .follow
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[0];
        let mut s = scores(i);
        if i > 0 {
            let prev = softmax(&scores(i - 1));
            for j in 1..=i {
                if ids[j - 1] == ids[i] {
                    s[j] += beta * prev[j - 1];
                }
            }
        }
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
        let g = 1.0 / (1.0 + (-row(&head.gate, i)[0]).exp());
        let l = logits
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap()[i]
            .clone();
        let lm = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lz: f64 = l.iter().map(|x| (x - lm).exp()).sum();
        let mut p: Vec<f64> = l.iter().map(|x| g * (x - lm).exp() / lz).collect();
        for j in 0..=i {
            p[ids[j] as usize] += (1.0 - g) * (s[j] - m).exp() / z;
        }
        p
    }

    #[test]
    fn the_copy_loss_is_the_mixture_written_out_and_matches_finite_differences() {
        let (b, t, d, c, v) = (2, 10, 6, 4, 13);
        let head = head(d, c, DType::F64);
        let h = det(&[b * t, d], 0.9);
        let lm = det(&[v, d], 1.7);
        // The first window answers a question after a memory turn (its rows read); the
        // second is plain text.
        let mut ids: Vec<u32> = vec![2, 9, 10, 12, 1, 3, 10, 1, 4, 9];
        ids.extend((0..t).map(|i| (8 + i * 3 % 5) as u32));
        // The next tokens: ones the pointer can reach (an earlier id), others it cannot,
        // one ignored.
        let mut targets: Vec<u32> = ids[1..].to_vec();
        targets.push(11);
        targets[8] = 12;
        targets[9] = 11;
        targets[4] = IGNORE_INDEX;
        let tt = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
        let loss = |head: &CopyHead, h: &Tensor| {
            let lm_nll = cross_entropy(&h.matmul(&lm.t()?)?, &tt)?;
            head.nll(h, &ids, &targets, (b, t), &lm_nll)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        };
        let nll = loss(&head, &h).unwrap().to_vec1::<f64>().unwrap();
        let logits = h.matmul(&lm.t().unwrap()).unwrap();
        for w in 0..b {
            let rows = h.narrow(0, w * t, t).unwrap();
            let l = logits.narrow(0, w * t, t).unwrap();
            for i in 0..t {
                let r = w * t + i;
                let want = match targets[r] {
                    IGNORE_INDEX => 0.0,
                    x => -(reference_p(&head, &rows, &l, &ids[w * t..], i)[x as usize]
                        + PROB_FLOOR)
                        .ln(),
                };
                assert!(
                    (nll[r] - want).abs() < 1e-9,
                    "row {r}: {} vs {want}",
                    nll[r]
                );
            }
        }
        assert!(!crate::model::reading::readings(&ids[..t], &head.lexicon).is_empty());
        // Every input the loss has a gradient for: the hidden states and the weights.
        check_grad(&h, &|h| loss(&head, h));
        check_grad(&head.wq, &|wq| {
            loss(
                &CopyHead {
                    wq: wq.clone(),
                    ..head.clone()
                },
                &h,
            )
        });
        check_grad(&head.wk, &|wk| {
            loss(
                &CopyHead {
                    wk: wk.clone(),
                    ..head.clone()
                },
                &h,
            )
        });
        check_grad(&head.ws, &|ws| {
            loss(
                &CopyHead {
                    ws: ws.clone(),
                    ..head.clone()
                },
                &h,
            )
        });
        check_grad(&head.gate, &|g| {
            loss(
                &CopyHead {
                    gate: g.clone(),
                    ..head.clone()
                },
                &h,
            )
        });
        check_grad(&head.follow, &|f| {
            loss(
                &CopyHead {
                    follow: f.clone(),
                    ..head.clone()
                },
                &h,
            )
        });
        check_grad(&head.read, &|r| {
            loss(
                &CopyHead {
                    read: r.clone(),
                    ..head.clone()
                },
                &h,
            )
        });
    }

    /// A head with no query or keys (a flat pointer) and a gate that trusts the pointer
    /// alone, with follow weight β and reading weight γ.
    fn flat_head(d: usize, beta: f32, gamma: f32) -> CopyHead {
        let zero = Tensor::zeros((d, d), DType::F32, &Device::Cpu).unwrap();
        let scalar = |x: f32| Tensor::full(x, (1, 1), &Device::Cpu).unwrap();
        CopyHead {
            wq: zero.clone(),
            wk: zero.clone(),
            ws: zero,
            gate: Tensor::full(-10f32, (1, d), &Device::Cpu).unwrap(),
            follow: scalar(beta),
            read: scalar(gamma),
            width: d,
            lexicon: Default::default(),
        }
    }

    #[test]
    fn a_pointer_goes_on_along_the_span_it_copied_from() {
        // A flat pointer (no query, no keys) and a gate that trusts the pointer alone: only
        // the follow term tells positions apart.
        let (d, v) = (4, 12);
        let mut head = flat_head(d, 8.0, 0.0);
        // "5 6 7 8 | 9 5": the answer has just copied 5 (the previous pointer was flat, so
        // it rested on position 0 in part) and goes on with 6, the token after it.
        let ids = [5u32, 6, 7, 8, 9, 5];
        let h = Tensor::ones((ids.len(), d), DType::F32, &Device::Cpu).unwrap();
        let logits = Tensor::zeros((ids.len(), v), DType::F32, &Device::Cpu).unwrap();
        let last = |head: &CopyHead| {
            let lp = head
                .log_probs(&h, &logits, &ids, &mut CopyCache::default())
                .unwrap();
            lp.get(ids.len() - 1).unwrap().to_vec1::<f32>().unwrap()
        };
        let p = last(&head);
        let best = (0..v).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(best, 6, "{p:?}");
        // Without the follow term the flat pointer has no preference between positions.
        head.follow = Tensor::zeros((1, 1), DType::F32, &Device::Cpu).unwrap();
        let flat = last(&head);
        assert!((flat[6] - flat[7]).abs() < 1e-5, "{flat:?}");
    }

    #[test]
    fn an_answer_copies_from_the_memory_that_matches_its_question() {
        // A flat pointer and a gate that trusts the pointer alone: only the reading tells
        // memory positions apart.
        let (d, v) = (4, 64);
        // Token 29 is "." (it ends the memory's first sentence); the others are words,
        // capitalised so that one after a "." starts a sentence.
        let texts: Vec<String> = (0..v)
            .map(|i| {
                if i == 29 {
                    ".".into()
                } else {
                    format!(" W{i}")
                }
            })
            .collect();
        let lexicon = std::sync::Arc::new(Lexicon::from_texts(&texts));
        let mut head = flat_head(d, 0.0, READ_INIT as f32).with_lexicon(lexicon);
        // <|system|> 10..30 then "30 31 41" <|eot|> <|user|> 30 31 <|eot|> <|assistant|>
        let mut ids = vec![2u32];
        ids.extend(10..30);
        ids.extend([30, 31, 41, 1, 3, 30, 31, 1, 4]);
        let h = Tensor::ones((ids.len(), d), DType::F32, &Device::Cpu).unwrap();
        let logits = Tensor::zeros((ids.len(), v), DType::F32, &Device::Cpu).unwrap();
        let first = |head: &CopyHead| {
            let lp = head
                .log_probs(&h, &logits, &ids, &mut CopyCache::default())
                .unwrap();
            lp.get(ids.len() - 1).unwrap().to_vec1::<f32>().unwrap()
        };
        // The answer's first word: from the text around 30 31, not from the memory's
        // first words, which share nothing with the question.
        let p = first(&head);
        assert!(p[41] > p[10] + 2.0, "{} vs {}", p[41], p[10]);
        // Without reading, the flat pointer has no preference.
        head.read = Tensor::zeros((1, 1), DType::F32, &Device::Cpu).unwrap();
        let flat = first(&head);
        assert!((flat[41] - flat[10]).abs() < 1e-5, "{flat:?}");
    }

    #[test]
    fn decoding_log_probs_match_the_mixture_and_continue_a_cache() {
        let (t, d, c, v) = (10, 5, 4, 9);
        let head = head(d, c, DType::F32);
        let h = det(&[t, d], 1.1).to_dtype(DType::F32).unwrap();
        let logits = det(&[t, v], 0.4).to_dtype(DType::F32).unwrap();
        // A question about a memory turn and an answer whose rows read it.
        let ids = [2u32, 7, 8, 6, 1, 3, 8, 1, 4, 8];
        let mut whole = CopyCache::default();
        let all = head.log_probs(&h, &logits, &ids, &mut whole).unwrap();
        for i in 0..t {
            let p = reference_p(&head, &h, &logits, &ids, i);
            let got = all.narrow(0, i, 1).unwrap().flatten_all().unwrap();
            let want: Vec<f64> = p.iter().map(|x| (x + PROB_FLOOR).ln()).collect();
            let want = Tensor::new(want, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            assert!(max_diff(&got, &want) < 1e-4, "row {i}");
            let total: f64 = p.iter().sum();
            assert!((total - 1.0).abs() < 1e-9, "row {i} sums to {total}");
        }
        // A prompt of 1 or 4, then single steps: the same rows as the whole pass.
        let split =
            |a: usize, n: usize| (h.narrow(0, a, n).unwrap(), logits.narrow(0, a, n).unwrap());
        for prompt in [1, 4, 8, 9] {
            let mut cache = CopyCache::default();
            let (h0, l0) = split(0, prompt);
            head.log_probs(&h0, &l0, &ids[..prompt], &mut cache)
                .unwrap();
            for i in prompt..t {
                let (hi, li) = split(i, 1);
                let step = head.log_probs(&hi, &li, &ids[i..=i], &mut cache).unwrap();
                assert!(
                    max_diff(&step, &all.narrow(0, i, 1).unwrap()) < 1e-5,
                    "prompt {prompt}, step {i}"
                );
            }
            assert_eq!(cache.ids, ids);
        }
    }

    #[test]
    fn a_fresh_copy_head_is_an_induction_head() {
        use crate::model::transformer::{from_varmap, init_weights};
        let mut cfg = ModelConfig::tiny(64);
        cfg.copy_head = true;
        let vm = init_weights(&cfg, 5, DType::F32, &Device::Cpu).unwrap();
        let model = from_varmap(&vm, &cfg, DType::F32, &Device::Cpu).unwrap();
        // "… 3 7 … 3" → the next token is the one that followed 3 before.
        let ids = [3u32, 7, 11, 15, 19, 23, 3];
        let x = Tensor::new(&ids[..], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let lp = model.forward(&x, None).unwrap(); // [1, T, V]
        let last: Vec<f32> = lp
            .get(0)
            .unwrap()
            .get(ids.len() - 1)
            .unwrap()
            .to_vec1()
            .unwrap();
        let best = (0..last.len())
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap();
        assert_eq!(best, 7, "{last:?}");
        assert!(last[7].exp() > 0.2, "p = {}", last[7].exp());
        let tied = |n: &str| vm.data().lock().unwrap()[n].as_tensor().clone();
        assert_eq!(max_diff(&tied(COPY_Q), &tied(COPY_K)), 0.0);
    }
}
