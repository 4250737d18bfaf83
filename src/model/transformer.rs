//! [`Thau`]: the Llama-style decoder. Read top to bottom: rotary tables → attention →
//! SwiGLU MLP → block → model → weight initialisation and loading. Every layer has
//! `load(vb, cfg)` and `forward`; the KV cache ([`KvCache`]) is an explicit argument so
//! the same weights serve training and decoding.
//!
//! ```text
//! ids [B, T] → token_embd → N × ( x + attn(rms_norm(x)),  x + mlp(rms_norm(x)) )
//!            → rms_norm → output (untied LM head) → logits [B, T, V]
//! ```
//! With a copy head ([`super::copy`]) the outputs are instead the log-probabilities of
//! the LM head's distribution mixed with a pointer over the context.
//! Tensor names follow GGUF's `llama` layout (`token_embd.weight`,
//! `blk.N.attn_q.weight`, …) so export is a rename-free copy.
//!
//! This is the tensor path, the one training differentiates. An inference model also
//! packs its weights for the host decoding path ([`super::decode`]), which
//! [`Thau::forward_rows`] and [`Thau::forward_seqs`] take when it exists.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::config::ModelConfig;
use super::copy::{
    copy_shapes, CopyCache, CopyHead, COPY_FOLLOW, COPY_K, COPY_Q, COPY_READ, COPY_S, FOLLOW_INIT,
    READ_INIT,
};
use super::decode::kv::{KvCache, LayerKv};
use super::decode::packed::{DecodeWeights, PackedBlock};
use super::ops::{
    self, causal_attention, lm_head_cross_entropy, rms_norm, rope_i, small_linear, swiglu,
};
use super::reading::Lexicon;
use super::{ModelError, Result};

/// Standard deviation of the initial weights.
const INIT_STD: f64 = 0.02;

/// `x @ wᵀ` for `x` of any rank `[.., in]` and `w` `[out, in]`, through one 2-D matmul
/// (candle's broadcast matmul would sum the weight gradient over a broadcast batch).
///
/// A helper of its own rather than [`ops::linear`], which it calls: that op takes 2-D
/// inputs only, while the layers pass `[B, T, in]`; and a few rows without gradient
/// (decoding) take [`small_linear`]'s dot products instead.
fn linear_nd(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let inner = dims[dims.len() - 1];
    let rows = x.elem_count() / inner;
    let x2 = x.reshape((rows, inner))?; // [rows, in]
    let y = match small_linear(&x2, w)? {
        Some(y) => y, // decoding: a few rows, dot products beat the matmul kernel
        None => ops::linear(&x2, w)?, // [rows, out]
    };
    let mut out = dims;
    *out.last_mut().unwrap_or(&mut 0) = w.dim(0)?;
    y.reshape(out) // [.., out]
}

/// Precomputed RoPE angles for every position up to `max_seq_len`.
#[derive(Debug, Clone)]
struct Rope {
    cos: Tensor, // [max_seq_len, head_dim / 2]
    sin: Tensor, // [max_seq_len, head_dim / 2]
}

impl Rope {
    fn new(cfg: &ModelConfig, dtype: DType, dev: &Device) -> Result<Rope> {
        let half = cfg.head_dim / 2;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64))
            .collect();
        let angles: Vec<f64> = (0..cfg.max_seq_len)
            .flat_map(|p| inv_freq.iter().map(move |f| p as f64 * f))
            .collect();
        let t = Tensor::from_vec(angles, (cfg.max_seq_len, half), dev)?;
        Ok(Rope {
            cos: t.cos()?.to_dtype(dtype)?,
            sin: t.sin()?.to_dtype(dtype)?,
        })
    }

    /// Tables for positions `offset .. offset + len`.
    fn at(&self, offset: usize, len: usize) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.cos.narrow(0, offset, len)?,
            self.sin.narrow(0, offset, len)?,
        ))
    }
}
/// Causal multi-head self-attention with RoPE on queries and keys.
#[derive(Debug, Clone)]
struct Attention {
    wq: Tensor, // [H*hd, d]
    wk: Tensor, // [H*hd, d]
    wv: Tensor, // [H*hd, d]
    wo: Tensor, // [d, H*hd]
    n_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: &VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let (d, a) = (cfg.d_model, cfg.attn_dim());
        Ok(Attention {
            wq: vb.get((a, d), "attn_q.weight")?,
            wk: vb.get((a, d), "attn_k.weight")?,
            wv: vb.get((a, d), "attn_v.weight")?,
            wo: vb.get((d, a), "attn_output.weight")?,
            n_heads: cfg.n_heads,
            head_dim: cfg.head_dim,
        })
    }

    /// Queries, keys and values `[B, H, T, hd]` of `x` `[B, T, d]` (before RoPE).
    fn project(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let (h, hd) = (self.n_heads, self.head_dim);
        let heads = |w: &Tensor| -> candle_core::Result<Tensor> {
            linear_nd(x, w)? // [B, T, H*hd]
                .reshape((b, t, h, hd))? // [B, T, H, hd]
                .transpose(1, 2) // [B, H, T, hd]
        };
        Ok((heads(&self.wq)?, heads(&self.wk)?, heads(&self.wv)?))
    }

    /// Attention of `q`, `k`, `v` `[B, H, T, hd]` (the positions after `cache`'s), which
    /// extend the cache: `[B, H, T, hd]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        rope: &Rope,
        cache: Option<&mut Option<LayerKv>>,
        max_seq_len: usize,
    ) -> Result<Tensor> {
        let (b, h, t, hd) = q.dims4()?;
        let offset = cache.as_ref().and_then(|c| c.as_ref()).map_or(0, |c| c.len);
        let (cos, sin) = rope.at(offset, t)?;
        let q = rope_i(q, &cos, &sin)?;
        let k = rope_i(k, &cos, &sin)?;
        let v = v.contiguous()?;
        let (k, v) = match cache {
            Some(slot) => {
                let (shape, need) = ((b, h, hd), (t, 0));
                let kv = LayerKv::reserve(slot, shape, need, max_seq_len, k.dtype(), k.device())?;
                kv.k.slice_set(&k, 2, kv.len)?;
                kv.v.slice_set(&v, 2, kv.len)?;
                kv.len += t;
                // Views of the filled part: [B, H, offset + T, hd].
                (kv.k.narrow(2, 0, kv.len)?, kv.v.narrow(2, 0, kv.len)?)
            }
            None => (k, v),
        };
        // softmax(q kᵀ / √hd) v with the causal mask, without storing the [B, H, T, T_k]
        // scores for the backward.
        Ok(causal_attention(
            &q,
            &k,
            &v,
            1.0 / (hd as f64).sqrt(),
            offset,
        )?) // [B, H, T, hd]
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: Option<&mut Option<LayerKv>>,
        max_seq_len: usize,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (q, k, v) = self.project(x)?;
        let y = self.attend(&q, &k, &v, rope, cache, max_seq_len)?; // [B, H, T, hd]
        let y = y
            .transpose(1, 2)?
            .reshape((b, t, self.n_heads * self.head_dim))?; // [B, T, H*hd]
        Ok(linear_nd(&y, &self.wo)?)
    }

    /// One new position for each of N sequences, `x` `[N, 1, d]`, row `i` continuing
    /// `caches[i]`: the projections are one matmul for all rows (the weights are read once),
    /// the attention is per row, over each row's own cache and position.
    fn forward_rows(
        &self,
        x: &Tensor,
        rope: &Rope,
        caches: &mut [&mut Option<LayerKv>],
        max_seq_len: usize,
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        let (q, k, v) = self.project(x)?; // [N, H, 1, hd] each
        let mut ys = Vec::with_capacity(n);
        for (i, slot) in caches.iter_mut().enumerate() {
            let row = |t: &Tensor| t.narrow(0, i, 1); // [1, H, 1, hd]
            ys.push(self.attend(
                &row(&q)?,
                &row(&k)?,
                &row(&v)?,
                rope,
                Some(slot),
                max_seq_len,
            )?);
        }
        let y = Tensor::cat(&ys, 0)?; // [N, H, 1, hd]
        let y = y
            .transpose(1, 2)?
            .reshape((n, 1, self.n_heads * self.head_dim))?; // [N, 1, H*hd]
        Ok(linear_nd(&y, &self.wo)?)
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
struct Mlp {
    gate: Tensor, // [d_ff, d]
    up: Tensor,   // [d_ff, d]
    down: Tensor, // [d, d_ff]
}

impl Mlp {
    fn load(vb: &VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let (d, f) = (cfg.d_model, cfg.d_ff);
        Ok(Mlp {
            gate: vb.get((f, d), "ffn_gate.weight")?,
            up: vb.get((f, d), "ffn_up.weight")?,
            down: vb.get((d, f), "ffn_down.weight")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = linear_nd(x, &self.gate)?; // [.., d_ff]
        let u = linear_nd(x, &self.up)?; // [.., d_ff]
        Ok(linear_nd(&swiglu(&g, &u)?, &self.down)?)
    }
}

/// One pre-norm decoder block.
#[derive(Debug, Clone)]
struct Block {
    attn_norm: Tensor, // [d]
    attn: Attention,
    ffn_norm: Tensor, // [d]
    mlp: Mlp,
    eps: f64,
}

impl Block {
    fn load(vb: &VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        Ok(Block {
            attn_norm: vb.get(cfg.d_model, "attn_norm.weight")?,
            attn: Attention::load(vb, cfg)?,
            ffn_norm: vb.get(cfg.d_model, "ffn_norm.weight")?,
            mlp: Mlp::load(vb, cfg)?,
            eps: cfg.rms_eps,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: Option<&mut Option<LayerKv>>,
        max_seq_len: usize,
    ) -> Result<Tensor> {
        self.residual(x, |x| self.attn.forward(x, rope, cache, max_seq_len))
    }

    /// [`Block::forward`] for one new position of N sequences (see
    /// [`Attention::forward_rows`]).
    fn forward_rows(
        &self,
        x: &Tensor,
        rope: &Rope,
        caches: &mut [&mut Option<LayerKv>],
        max_seq_len: usize,
    ) -> Result<Tensor> {
        self.residual(x, |x| self.attn.forward_rows(x, rope, caches, max_seq_len))
    }

    /// The block around an attention, which is all that [`Block::forward`] and
    /// [`Block::forward_rows`] change: `x + attend(rms_norm(x))`, then the MLP's residual.
    fn residual(
        &self,
        x: &Tensor,
        attend: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let h = attend(&rms_norm(x, &self.attn_norm, self.eps)?)?;
        let x = (x + h)?;
        let x = (&x + self.mlp.forward(&rms_norm(&x, &self.ffn_norm, self.eps)?)?)?;
        Ok(x)
    }

    /// This block's weights packed for the host decoding path.
    fn pack(&self) -> candle_core::Result<PackedBlock> {
        let (a, m) = (&self.attn, &self.mlp);
        PackedBlock::pack(
            [&a.wq, &a.wk, &a.wv, &a.wo],
            [&m.gate, &m.up, &m.down],
            [&self.attn_norm, &self.ffn_norm],
        )
    }
}
/// The THAU decoder.
#[derive(Debug, Clone)]
pub struct Thau {
    pub cfg: ModelConfig,
    embed: Tensor, // [V, d]
    blocks: Vec<Block>,
    norm: Tensor,    // [d]
    lm_head: Tensor, // [V, d]
    /// The copy head, when the config asks for one.
    copy: Option<CopyHead>,
    rope: Rope,
    /// The weights packed for batched decoding, built on the first batched step (shared
    /// by clones, which share the weights too).
    packed: Arc<OnceLock<Option<DecodeWeights>>>,
}

impl Thau {
    /// Builds the model from weights named as in GGUF's `llama` layout.
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        cfg.validate()?;
        let blocks = (0..cfg.n_layers)
            .map(|i| Block::load(&vb.pp(format!("blk.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Thau {
            cfg: cfg.clone(),
            embed: vb.get((cfg.vocab_size, cfg.d_model), "token_embd.weight")?,
            blocks,
            norm: vb.get(cfg.d_model, "output_norm.weight")?,
            lm_head: vb.get((cfg.vocab_size, cfg.d_model), "output.weight")?,
            copy: cfg
                .copy_head
                .then(|| CopyHead::load(&vb, cfg))
                .transpose()?,
            rope: Rope::new(cfg, vb.dtype(), vb.device())?,
            packed: Arc::default(),
        })
    }

    /// The model with its copy head reading through `lexicon`, the words of the tokenizer
    /// it is trained and used with ([`Lexicon::of`]). Whoever builds a model beside its
    /// tokenizer calls this, so that training and decoding read alike.
    pub fn with_lexicon(mut self, lexicon: Arc<Lexicon>) -> Self {
        self.copy = self.copy.map(|c| c.with_lexicon(lexicon));
        self
    }

    /// The lexicon the copy head reads with (none without a copy head).
    pub fn lexicon(&self) -> Option<Arc<Lexicon>> {
        self.copy.as_ref().map(|c| c.lexicon())
    }

    /// Packs the weights of the batched decoding path now rather than on the first
    /// step that needs them, so that no session waits for it: the Inference actor calls
    /// this when it loads or swaps in a model. Nothing for trainable models.
    pub fn prepare_for_serving(&self) {
        if let Some(p) = self.decode_weights() {
            p.prepare_tiles();
        }
    }

    /// The packed decoding weights: only for f32 CPU weights that are not trained in
    /// place (a `Var` changes under a packed copy) of a model without a copy head (the
    /// packed path has none), else `None` (the plain path).
    pub(in crate::model) fn decode_weights(&self) -> Option<&DecodeWeights> {
        self.packed
            .get_or_init(|| {
                let plain = self.embed.device().is_cpu()
                    && self.copy.is_none()
                    && self.embed.dtype() == DType::F32
                    && !self.lm_head.is_variable()
                    && !self.blocks.iter().any(|b| b.attn.wq.is_variable());
                if !plain {
                    return None;
                }
                let packed = || -> candle_core::Result<DecodeWeights> {
                    let blocks = self
                        .blocks
                        .iter()
                        .map(Block::pack)
                        .collect::<candle_core::Result<_>>()?;
                    let rope = (&self.rope.cos, &self.rope.sin);
                    DecodeWeights::pack(&self.embed, blocks, &self.norm, &self.lm_head, rope)
                };
                packed()
                    .inspect_err(|e| tracing::warn!("packing the decoding weights failed: {e}"))
                    .ok()
            })
            .as_ref()
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// Logits `[B, T, V]` for token ids `[B, T]` (log-probabilities, f32, with a copy
    /// head). With a cache, `ids` continue the cached positions and the cache is extended.
    pub fn forward(&self, ids: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let v = self.cfg.vocab_size;
        let h = self.hidden(ids, cache.as_deref_mut())?; // [B*T, d]
        let logits = linear_nd(&h, &self.lm_head)?; // [B*T, V]
        let Some(copy) = &self.copy else {
            return Ok(logits.reshape((b, t, v))?); // [B, T, V]
        };
        if cache.is_some() && b > 1 {
            return Err(ModelError::Data(
                "a model with a copy head decodes one sequence per cache".into(),
            ));
        }
        // Each sequence points into its own context.
        let mut rows = Vec::with_capacity(b);
        for (i, row) in ids.to_vec2::<u32>()?.iter().enumerate() {
            let mut fresh = CopyCache::default();
            let pointer = match cache.as_deref_mut() {
                Some(c) => &mut c.copy,
                None => &mut fresh,
            };
            let (h, l) = (h.narrow(0, i * t, t)?, logits.narrow(0, i * t, t)?); // [T, d], [T, V]
            rows.push(copy.log_probs(&h, &l, row, pointer)?); // [T, V]
        }
        Ok(Tensor::stack(&rows, 0)?) // [B, T, V]
    }

    /// The final normalised hidden states, flattened to `[B*T, d]`.
    pub fn hidden(&self, ids: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let seen = cache.as_ref().map_or(0, |c| c.len());
        self.check_context(seen + t)?;
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.blocks.len(), None);
        }
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)? // [B*T, d]
            .reshape((b, t, self.cfg.d_model))?; // [B, T, d]
        for (i, block) in self.blocks.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = block.forward(&x, &self.rope, slot, self.cfg.max_seq_len)?;
        }
        let x = x.reshape((b * t, self.cfg.d_model))?; // [B*T, d]
        Ok(rms_norm(&x, &self.norm, self.cfg.rms_eps)?)
    }

    /// Mean cross-entropy over the positions whose target is not
    /// [`IGNORE_INDEX`](super::ops::IGNORE_INDEX), and the number of such positions.
    /// `ids` and `targets` are `[B, T]` (targets u32).
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<(Tensor, usize)> {
        let (b, t) = ids.dims2()?;
        let hidden = self.hidden(ids, None)?; // [B*T, d]
        let targets = targets.flatten_all()?; // [B*T]
        let counted = targets
            .ne(super::ops::IGNORE_INDEX)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
        // The LM head and the loss in one op: the [B*T, V] logits are never stored.
        let nll = lm_head_cross_entropy(&hidden, &self.lm_head, &targets)?; // [B*T]
        let nll = match &self.copy {
            None => nll,
            Some(copy) => {
                let ids = ids.flatten_all()?.to_vec1::<u32>()?;
                copy.nll(&hidden, &ids, &targets.to_vec1::<u32>()?, (b, t), &nll)?
            }
        };
        let nll = nll.sum_all()?; // scalar
        Ok(((nll / counted.max(1) as f64)?, counted))
    }

    /// One decoding step for N sequences at once: `ids[i]` continues `caches[i]` (each at
    /// its own position). Logits `[N, V]`, the same as N separate [`Thau::forward_last`]
    /// calls up to float rounding, with every weight read once instead of N times.
    pub fn forward_rows(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let n = ids.len();
        if n == 0 || caches.len() != n {
            return Err(ModelError::Data(format!(
                "a batched step needs one cache per token ({n} tokens, {} caches)",
                caches.len()
            )));
        }
        for c in caches.iter_mut() {
            self.check_context(c.len() + 1)?;
            c.layers.resize(self.blocks.len(), None);
        }
        match self.decode_weights() {
            Some(p) => {
                let tokens: Vec<&[u32]> = ids.chunks(1).collect();
                Ok(p.forward_seqs(&self.cfg, caches, &tokens)?)
            }
            None => self.rows_tensor(ids, caches),
        }
    }

    /// The logits `[N, V]` of the last token of each of N sequences, sequence `i`
    /// continuing `caches[i]` by `tokens[i]` (a whole prompt, or the one token of a
    /// decoding step; prompts and steps may share one pass). Through the packed weights
    /// when the model has them (f32 on the CPU, not trainable); else one forward pass per
    /// sequence.
    pub fn forward_seqs(&self, caches: &mut [&mut KvCache], tokens: &[&[u32]]) -> Result<Tensor> {
        let n = tokens.len();
        if n == 0 || caches.len() != n || tokens.iter().any(|t| t.is_empty()) {
            return Err(ModelError::Data(format!(
                "forward_seqs needs one cache and at least one token per sequence ({n} \
                 sequences, {} caches)",
                caches.len()
            )));
        }
        for (c, t) in caches.iter_mut().zip(tokens) {
            self.check_context(c.len() + t.len())?;
            c.layers.resize(self.blocks.len(), None);
        }
        match self.decode_weights() {
            Some(p) => Ok(p.forward_seqs(&self.cfg, caches, tokens)?),
            None => self.seqs_tensor(caches, tokens),
        }
    }

    /// [`Thau::forward_rows`] on the tensor path, for checked inputs and caches with a
    /// slot per layer.
    fn rows_tensor(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let n = ids.len();
        let ids_host = ids;
        let ids = Tensor::new(ids, self.device())?; // [N]
        let mut x = self
            .embed
            .index_select(&ids, 0)? // [N, d]
            .reshape((n, 1, self.cfg.d_model))?; // [N, 1, d]
        for (l, block) in self.blocks.iter().enumerate() {
            let mut slots: Vec<&mut Option<LayerKv>> =
                caches.iter_mut().map(|c| &mut c.layers[l]).collect();
            x = block.forward_rows(&x, &self.rope, &mut slots, self.cfg.max_seq_len)?;
        }
        let x = x.reshape((n, self.cfg.d_model))?; // [N, d]
        let x = rms_norm(&x, &self.norm, self.cfg.rms_eps)?;
        let logits = linear_nd(&x, &self.lm_head)?; // [N, V]
        let Some(copy) = &self.copy else {
            return Ok(logits);
        };
        let mut rows = Vec::with_capacity(n);
        for (i, c) in caches.iter_mut().enumerate() {
            let (h, l) = (x.narrow(0, i, 1)?, logits.narrow(0, i, 1)?); // [1, d], [1, V]
            rows.push(copy.log_probs(&h, &l, &ids_host[i..=i], &mut c.copy)?); // [1, V]
        }
        Ok(Tensor::cat(&rows, 0)?) // [N, V]
    }

    /// [`Thau::forward_seqs`] on the tensor path, for checked inputs and caches with a
    /// slot per layer: the one-token sequences in one batched step, each prompt in a pass
    /// of its own.
    fn seqs_tensor(&self, caches: &mut [&mut KvCache], tokens: &[&[u32]]) -> Result<Tensor> {
        let (n, dev) = (tokens.len(), self.device());
        let (single, ones): (Vec<usize>, Vec<u32>) = (0..n)
            .filter(|&i| tokens[i].len() == 1)
            .map(|i| (i, tokens[i][0]))
            .unzip();
        let mut out: Vec<Option<Tensor>> = vec![None; n];
        if !single.is_empty() {
            let mut cs: Vec<&mut KvCache> = caches
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| tokens[*i].len() == 1)
                .map(|(_, c)| &mut **c)
                .collect();
            let l = self.rows_tensor(&ones, &mut cs)?; // [S, V]
            for (j, &i) in single.iter().enumerate() {
                out[i] = Some(l.narrow(0, j, 1)?);
            }
        }
        for (i, c) in caches.iter_mut().enumerate() {
            if tokens[i].len() > 1 {
                let ids = Tensor::new(tokens[i], dev)?.unsqueeze(0)?; // [1, T]
                out[i] = Some(self.forward_last(&ids, Some(&mut **c))?); // [1, V]
            }
        }
        let out: Vec<Tensor> = out.into_iter().flatten().collect();
        Ok(Tensor::cat(&out, 0)?) // [N, V]
    }

    /// An error if a sequence of `len` positions exceeds the model's context.
    fn check_context(&self, len: usize) -> Result<()> {
        if len > self.cfg.max_seq_len {
            return Err(ModelError::Data(format!(
                "sequence of {len} tokens exceeds the model's context of {}",
                self.cfg.max_seq_len
            )));
        }
        Ok(())
    }

    /// The logits of the last position only: `[B, V]`.
    pub fn forward_last(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let logits = self.forward(ids, cache)?;
        let t = logits.dim(1)?;
        Ok(logits.narrow(1, t - 1, 1)?.squeeze(1)?)
    }
}

/// Names and shapes of every weight of a model, in a fixed order.
pub fn weight_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (v, d, a, f) = (cfg.vocab_size, cfg.d_model, cfg.attn_dim(), cfg.d_ff);
    let mut out = vec![("token_embd.weight".to_string(), vec![v, d])];
    for i in 0..cfg.n_layers {
        let p = |n: &str| format!("blk.{i}.{n}");
        out.push((p("attn_norm.weight"), vec![d]));
        out.push((p("attn_q.weight"), vec![a, d]));
        out.push((p("attn_k.weight"), vec![a, d]));
        out.push((p("attn_v.weight"), vec![a, d]));
        out.push((p("attn_output.weight"), vec![d, a]));
        out.push((p("ffn_norm.weight"), vec![d]));
        out.push((p("ffn_gate.weight"), vec![f, d]));
        out.push((p("ffn_up.weight"), vec![f, d]));
        out.push((p("ffn_down.weight"), vec![d, f]));
    }
    out.push(("output_norm.weight".to_string(), vec![d]));
    out.push(("output.weight".to_string(), vec![v, d]));
    out.extend(copy_shapes(cfg));
    out
}

/// Whether a weight is an RMSNorm gain (no weight decay, initialised to one).
pub fn is_norm(name: &str) -> bool {
    name.ends_with("norm.weight")
}

/// Fresh weights for `cfg`, deterministic for `seed`: N(0, 0.02), the projections that
/// write into the residual stream scaled by 1/√(2·layers), RMSNorm gains at one. The copy
/// head's query and key start as one matrix of N(0, 1/d), its self key at zero, its
/// follow weight at [`FOLLOW_INIT`] and its reading weight at [`READ_INIT`]: see
/// [`super::copy`], "an induction head from the start".
pub fn init_weights(cfg: &ModelConfig, seed: u64, dtype: DType, dev: &Device) -> Result<VarMap> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let varmap = VarMap::new();
    let residual_std = INIT_STD / (2.0 * cfg.n_layers as f64).sqrt();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Config("weight map lock poisoned".into()))?;
        for (name, shape) in weight_shapes(cfg) {
            let n: usize = shape.iter().product();
            let t = if is_norm(&name) {
                Tensor::ones(shape.as_slice(), dtype, dev)?
            } else if name == COPY_S {
                Tensor::zeros(shape.as_slice(), dtype, dev)?
            } else if name == COPY_FOLLOW {
                Tensor::full(FOLLOW_INIT as f32, shape.as_slice(), dev)?.to_dtype(dtype)?
            } else if name == COPY_READ {
                Tensor::full(READ_INIT as f32, shape.as_slice(), dev)?.to_dtype(dtype)?
            } else if name == COPY_K {
                // `weight_shapes` lists the query first.
                data.get(COPY_Q)
                    .ok_or_else(|| ModelError::Config("copy_k before copy_q".into()))?
                    .as_tensor()
                    .copy()?
            } else {
                let std =
                    if name.ends_with("attn_output.weight") || name.ends_with("ffn_down.weight") {
                        residual_std
                    } else if name == COPY_Q {
                        1.0 / (cfg.d_model as f64).sqrt()
                    } else {
                        INIT_STD
                    };
                let normal = Normal::new(0.0f32, std as f32)
                    .map_err(|e| ModelError::Config(e.to_string()))?;
                let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
                Tensor::from_vec(v, shape.as_slice(), dev)?.to_dtype(dtype)?
            };
            data.insert(name, Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}

/// The tensors `varmap` holds now, by name (shared, not copied: a later optimizer step
/// replaces a var's storage and leaves these as they were).
pub fn tensors_of(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Config("weight map lock poisoned".into()))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// Builds a model that reads its weights from `varmap` (gradients flow into the vars).
pub fn from_varmap(varmap: &VarMap, cfg: &ModelConfig, dtype: DType, dev: &Device) -> Result<Thau> {
    Thau::load(VarBuilder::from_varmap(varmap, dtype, dev), cfg)
}

/// Builds a model from plain tensors (inference: no gradient tracking).
pub fn from_tensors(
    weights: HashMap<String, Tensor>,
    cfg: &ModelConfig,
    dev: &Device,
) -> Result<Thau> {
    let dtype = weights
        .get("token_embd.weight")
        .map_or(DType::F32, |t| t.dtype());
    for (name, shape) in weight_shapes(cfg) {
        match weights.get(&name) {
            None => return Err(ModelError::Config(format!("weight `{name}` is missing"))),
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(ModelError::Config(format!(
                    "weight `{name}` has shape {:?}, the config needs {:?}",
                    t.dims(),
                    shape
                )))
            }
            Some(_) => {}
        }
    }
    Thau::load(VarBuilder::from_tensors(weights, dtype, dev), cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_diff;

    #[test]
    fn kv_cache_decoding_matches_the_full_forward() {
        let cfg = ModelConfig::tiny(50);
        let vm = init_weights(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
        let m = from_varmap(&vm, &cfg, DType::F32, &Device::Cpu).unwrap();
        let ids = Tensor::new(&[[3u32, 7, 11, 2, 9, 40]], &Device::Cpu).unwrap();
        let full = m.forward(&ids, None).unwrap();
        let mut cache = KvCache::new(cfg.n_layers);
        let a = m
            .forward(&ids.narrow(1, 0, 4).unwrap(), Some(&mut cache))
            .unwrap();
        let b = m
            .forward(&ids.narrow(1, 4, 1).unwrap(), Some(&mut cache))
            .unwrap();
        let c = m
            .forward(&ids.narrow(1, 5, 1).unwrap(), Some(&mut cache))
            .unwrap();
        let inc = Tensor::cat(&[a, b, c], 1).unwrap();
        let diff = max_diff(&full, &inc);
        assert!(diff < 1e-4, "{diff}");
        assert_eq!(cache.len(), 6);
    }

    #[test]
    fn a_batched_step_matches_separate_decoding() {
        let cfg = ModelConfig::tiny(50);
        let vm = init_weights(&cfg, 2, DType::F32, &Device::Cpu).unwrap();
        let m = from_varmap(&vm, &cfg, DType::F32, &Device::Cpu).unwrap();
        // Three sequences at different positions.
        let prompts: [&[u32]; 3] = [&[3, 7, 11], &[5], &[1, 2, 3, 4, 5, 6, 7]];
        let next = [9u32, 4, 30];
        let prefill = |p: &[u32], c: &mut KvCache| {
            let x = Tensor::new(p, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            m.forward_last(&x, Some(c)).unwrap();
        };
        let mut batched: Vec<KvCache> = (0..3).map(|_| KvCache::new(cfg.n_layers)).collect();
        let mut single = batched.clone();
        for (i, p) in prompts.iter().enumerate() {
            prefill(p, &mut batched[i]);
            prefill(p, &mut single[i]);
        }
        for _ in 0..2 {
            let mut refs: Vec<&mut KvCache> = batched.iter_mut().collect();
            let rows = m.forward_rows(&next, &mut refs).unwrap(); // [3, V]
            assert_eq!(rows.dims(), &[3, 50]);
            for (i, c) in single.iter_mut().enumerate() {
                let x = Tensor::new(&[[next[i]]], &Device::Cpu).unwrap();
                let one = m.forward_last(&x, Some(c)).unwrap().squeeze(0).unwrap();
                let diff = max_diff(&rows.get(i).unwrap(), &one);
                assert!(diff < 1e-4, "row {i}: {diff}");
                assert_eq!(batched[i].len(), c.len());
            }
        }
        // A cache per token, and room in the context, or a clear error.
        let mut one: Vec<&mut KvCache> = batched.iter_mut().take(1).collect();
        assert!(m.forward_rows(&next, &mut one).is_err());
    }
}
