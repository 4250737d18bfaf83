//! Differentiable fused CPU operations for the THAU model.
//!
//! candle's fast `rms_norm`, `softmax_last_dim` and `rope_i` record no gradient (they are
//! applied with `apply_op*_no_bwd`), so a model built on them trains silently wrong. The
//! ops here are candle custom ops with hand-written backward passes:
//!
//! - [`rms_norm`]: `x * rsqrt(mean(x²) + eps) * alpha` over the last dimension;
//! - [`rope_i`]: rotary embedding on consecutive pairs `(x[2i], x[2i+1])`, the layout
//!   llama.cpp's `llama` architecture uses (no Q/K permutation needed at GGUF export);
//! - [`causal_softmax`]: `softmax(scale * scores)` with the causal mask applied inside the
//!   kernel (no mask tensor is materialised), for a query block that starts `offset`
//!   positions into the keys (KV-cache decoding);
//! - [`causal_attention`]: `softmax(scale · q kᵀ) v` with the causal mask, one head per
//!   task with the scores kept in a per-task buffer (flash-style: no `[B, H, T, T]` tensor
//!   is stored for the backward, which recomputes the probabilities);
//! - [`swiglu`]: `silu(gate) * up` in one pass (and one pass back), instead of candle's
//!   chain of element-wise ops over the widest activations of the model;
//! - [`lm_head_cross_entropy`]: the LM head matmul fused with the cross-entropy, a block
//!   of rows at a time, so the `[tokens, vocab]` logits (64 MB at age 0) are never
//!   materialised in forward or backward;
//! - [`small_linear`]: `x · wᵀ` for a handful of rows (decoding), as one AVX-512 / AVX2
//!   dot product per output, parallel over outputs (inference only: no backward);
//! - [`cross_entropy`]: per-row negative log-likelihood fused with the softmax, rows whose
//!   target is [`IGNORE_INDEX`] contribute nothing.
//!
//! Kernels run on f32 and f64 (f64 makes finite-difference gradient checks exact enough);
//! other devices or dtypes fall back to candle's differentiable composite forms.
//! Every op is checked against the composite form and by finite differences in tests.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
    WithDType, D,
};
use num_traits::Float;
use rayon::prelude::*;
use std::sync::Arc;

/// Target value meaning "no loss at this position" (padding, prompt tokens).
pub const IGNORE_INDEX: u32 = u32::MAX;

/// Element types the kernels are written for.
trait Real: WithDType + Float {}
impl Real for f32 {}
impl Real for f64 {}

/// The contiguous slice of a storage described by `layout`.
fn slice<'a, T: Real>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Whether the fused kernels can serve this tensor (CPU, f32 or f64).
fn fused(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

macro_rules! dispatch {
    ($s:expr, $f:ident ( $($a:expr),* )) => {
        match $s {
            CpuStorage::F32(_) => $f::<f32>($($a),*),
            CpuStorage::F64(_) => $f::<f64>($($a),*),
            _ => bail!("fused op: only f32 and f64 are supported"),
        }
    };
}

// ---------------------------------------------------------------- RMSNorm

struct RmsNorm {
    eps: f64,
}
struct RmsNormBwdX {
    eps: f64,
}
struct RmsNormBwdAlpha {
    eps: f64,
}

/// `1 / sqrt(mean(x²) + eps)` of one row.
fn inv_rms<T: Real>(row: &[T], eps: f64) -> T {
    let ms = row.iter().fold(T::zero(), |acc, &v| acc + v * v) / T::from_f64(row.len() as f64);
    T::one() / (ms + T::from_f64(eps)).sqrt()
}

fn rms_fwd<T: Real>(x: &[T], a: &[T], eps: f64) -> Vec<T> {
    let d = a.len();
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(o, xr)| {
            let r = inv_rms(xr, eps);
            for i in 0..d {
                o[i] = xr[i] * r * a[i];
            }
        });
    out
}

/// dL/dx_j = r·g_j·a_j − x_j·r³/D · Σ_i g_i·a_i·x_i
fn rms_bwd_x<T: Real>(x: &[T], a: &[T], g: &[T], eps: f64) -> Vec<T> {
    let d = a.len();
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(g.par_chunks(d)))
        .for_each(|(o, (xr, gr))| {
            let r = inv_rms(xr, eps);
            let dot = (0..d).fold(T::zero(), |acc, i| acc + gr[i] * a[i] * xr[i]);
            let k = r * r * r * dot / T::from_f64(d as f64);
            for i in 0..d {
                o[i] = r * gr[i] * a[i] - xr[i] * k;
            }
        });
    out
}

/// dL/da_i = Σ_rows g_i·x_i·r
fn rms_bwd_alpha<T: Real>(x: &[T], g: &[T], d: usize, eps: f64) -> Vec<T> {
    let rows = x.len() / d;
    // Reduce per chunk of rows in parallel, then add the partial sums.
    let chunk = rows.div_ceil(rayon::current_num_threads().max(1)).max(1);
    let partials: Vec<Vec<T>> = x
        .par_chunks(chunk * d)
        .zip(g.par_chunks(chunk * d))
        .map(|(xc, gc)| {
            let mut acc = vec![T::zero(); d];
            for (xr, gr) in xc.chunks(d).zip(gc.chunks(d)) {
                let r = inv_rms(xr, eps);
                for i in 0..d {
                    acc[i] += gr[i] * xr[i] * r;
                }
            }
            acc
        })
        .collect();
    let mut out = vec![T::zero(); d];
    for p in partials {
        for i in 0..d {
            out[i] += p[i];
        }
    }
    out
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "thau-rms-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            op: &RmsNorm,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (x, a) = (
                slice::<T>(s1, l1, "rms_norm")?,
                slice::<T>(s2, l2, "rms_norm")?,
            );
            Ok((
                T::to_cpu_storage_owned(rms_fwd(x, a, op.eps)),
                l1.shape().clone(),
            ))
        }
        dispatch!(s1, go(self, s1, l1, s2, l2))
    }
    fn bwd(
        &self,
        x: &Tensor,
        alpha: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let gx = x.apply_op3_no_bwd(alpha, &g, &RmsNormBwdX { eps: self.eps })?;
        let ga = x.apply_op2_no_bwd(&g, &RmsNormBwdAlpha { eps: self.eps })?;
        Ok((Some(gx), Some(ga)))
    }
}

impl CustomOp3 for RmsNormBwdX {
    fn name(&self) -> &'static str {
        "thau-rms-norm-bwd-x"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            eps: f64,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let out = rms_bwd_x(
                slice::<T>(s1, l1, "rms_norm")?,
                slice::<T>(s2, l2, "rms_norm")?,
                slice::<T>(s3, l3, "rms_norm")?,
                eps,
            );
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        dispatch!(s1, go(self.eps, s1, l1, s2, l2, s3, l3))
    }
}

impl CustomOp2 for RmsNormBwdAlpha {
    fn name(&self) -> &'static str {
        "thau-rms-norm-bwd-alpha"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            eps: f64,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let d = l1.shape().dims().last().copied().unwrap_or(1);
            let out = rms_bwd_alpha(
                slice::<T>(s1, l1, "rms_norm")?,
                slice::<T>(s2, l2, "rms_norm")?,
                d,
                eps,
            );
            Ok((T::to_cpu_storage_owned(out), Shape::from(d)))
        }
        dispatch!(s1, go(self.eps, s1, l1, s2, l2))
    }
}

/// RMSNorm over the last dimension with a learned gain `alpha` (shape `[D]`).
pub fn rms_norm(x: &Tensor, alpha: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused(x) {
        return candle_nn::ops::rms_norm_slow(x, alpha, eps as f32);
    }
    x.contiguous()?
        .apply_op2(&alpha.contiguous()?, RmsNorm { eps })
}

// ---------------------------------------------------------------- RoPE (consecutive pairs)

struct RopeI;

fn rope_kernel<T: Real>(x: &[T], cos: &[T], sin: &[T], t: usize, d: usize) -> Vec<T> {
    let half = d / 2;
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(t * d)
        .zip(x.par_chunks(t * d))
        .for_each(|(o, xb)| {
            for p in 0..t {
                let (xr, or) = (&xb[p * d..(p + 1) * d], &mut o[p * d..(p + 1) * d]);
                for i in 0..half {
                    let (c, s) = (cos[p * half + i], sin[p * half + i]);
                    let (x0, x1) = (xr[2 * i], xr[2 * i + 1]);
                    or[2 * i] = x0 * c - x1 * s;
                    or[2 * i + 1] = x0 * s + x1 * c;
                }
            }
        });
    out
}

impl CustomOp3 for RopeI {
    fn name(&self) -> &'static str {
        "thau-rope-i"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (_b, _h, t, d) = l1.shape().dims4()?;
            if l2.shape().dims2()? != (t, d / 2) || l3.shape().dims2()? != (t, d / 2) {
                bail!(
                    "rope_i: cos/sin must be [{t}, {}], got {:?}",
                    d / 2,
                    l2.shape()
                );
            }
            let out = rope_kernel(
                slice::<T>(s1, l1, "rope_i")?,
                slice::<T>(s2, l2, "rope_i")?,
                slice::<T>(s3, l3, "rope_i")?,
                t,
                d,
            );
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        dispatch!(s1, go(s1, l1, s2, l2, s3, l3))
    }
    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The rotation is orthogonal: its transpose is the rotation by the opposite angle.
        let gx = g
            .contiguous()?
            .apply_op3_no_bwd(cos, &sin.neg()?.contiguous()?, &RopeI)?;
        Ok((Some(gx), None, None))
    }
}

/// Rotary embedding of `x` (`[B, H, T, head_dim]`) on consecutive pairs; `cos` and `sin`
/// are `[T, head_dim / 2]` for the positions of `x`.
pub fn rope_i(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return candle_nn::rotary_emb::rope_i_slow(x, cos, sin);
    }
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, RopeI)
}

// ---------------------------------------------------------------- causal softmax

struct CausalSoftmax {
    scale: f64,
    offset: usize,
}
struct SoftmaxBwd {
    scale: f64,
}

fn causal_softmax_kernel<T: Real>(
    x: &[T],
    tq: usize,
    tk: usize,
    scale: f64,
    offset: usize,
) -> Vec<T> {
    let scale = T::from_f64(scale);
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(tk)
        .zip(x.par_chunks(tk))
        .enumerate()
        .for_each(|(row, (o, xr))| {
            let limit = (row % tq + offset + 1).min(tk);
            let max = xr[..limit]
                .iter()
                .fold(T::neg_infinity(), |m, &v| Float::max(m, v * scale));
            let mut sum = T::zero();
            for j in 0..limit {
                let e = (xr[j] * scale - max).exp();
                o[j] = e;
                sum += e;
            }
            let inv = T::one() / sum;
            for v in &mut o[..limit] {
                *v *= inv;
            }
        });
    out
}

/// dL/dx_j = scale · y_j · (g_j − Σ_k g_k·y_k); masked entries have y = 0 and get 0.
fn softmax_bwd_kernel<T: Real>(y: &[T], g: &[T], n: usize, scale: f64) -> Vec<T> {
    let scale = T::from_f64(scale);
    let mut out = vec![T::zero(); y.len()];
    out.par_chunks_mut(n)
        .zip(y.par_chunks(n).zip(g.par_chunks(n)))
        .for_each(|(o, (yr, gr))| {
            let dot = yr
                .iter()
                .zip(gr)
                .fold(T::zero(), |acc, (&a, &b)| acc + a * b);
            for j in 0..n {
                o[j] = scale * yr[j] * (gr[j] - dot);
            }
        });
    out
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "thau-causal-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            op: &CausalSoftmax,
            s: &CpuStorage,
            l: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let dims = l.shape().dims();
            let (tq, tk) = (dims[dims.len() - 2], dims[dims.len() - 1]);
            let out = causal_softmax_kernel(
                slice::<T>(s, l, "causal_softmax")?,
                tq,
                tk,
                op.scale,
                op.offset,
            );
            Ok((T::to_cpu_storage_owned(out), l.shape().clone()))
        }
        dispatch!(s, go(self, s, l))
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let g = g.contiguous()?;
        Ok(Some(
            y.apply_op2_no_bwd(&g, &SoftmaxBwd { scale: self.scale })?,
        ))
    }
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "thau-softmax-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            scale: f64,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let n = l1.shape().dims().last().copied().unwrap_or(1);
            let out = softmax_bwd_kernel(
                slice::<T>(s1, l1, "softmax")?,
                slice::<T>(s2, l2, "softmax")?,
                n,
                scale,
            );
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        dispatch!(s1, go(self.scale, s1, l1, s2, l2))
    }
}

/// `softmax(scale * scores)` over the last dimension with a causal mask: query row `i`
/// (of `Tq`) sees keys `0..=i + offset`. `scores` is `[.., Tq, Tk]`.
pub fn causal_softmax(scores: &Tensor, scale: f64, offset: usize) -> Result<Tensor> {
    if !fused(scores) {
        let (tq, tk) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
        let mask: Vec<u8> = (0..tq)
            .flat_map(|i| (0..tk).map(move |j| u8::from(j > i + offset)))
            .collect();
        let mask =
            Tensor::from_vec(mask, (tq, tk), scores.device())?.broadcast_as(scores.shape())?;
        let neg = Tensor::new(f32::NEG_INFINITY, scores.device())?
            .to_dtype(scores.dtype())?
            .broadcast_as(scores.shape())?;
        let masked = mask.where_cond(&neg, &(scores * scale)?)?;
        return candle_nn::ops::softmax(&masked, D::Minus1);
    }
    scores
        .contiguous()?
        .apply_op1(CausalSoftmax { scale, offset })
}

// ---------------------------------------------------------------- fused causal attention

struct CausalAttention {
    scale: f64,
    offset: usize,
}

/// Shapes of one attention call: heads `bh = B·H`, queries `tq`, keys `tk`, width `d`.
#[derive(Clone, Copy)]
struct AttnShape {
    tq: usize,
    tk: usize,
    d: usize,
    scale: f64,
    offset: usize,
}

/// Probabilities `P` (`tq × tk`) of one head into `p`: scores `q kᵀ`, scaled, causally
/// masked, soft-maxed per row.
fn attn_probs<T: Real>(q: &[T], k: &[T], s: AttnShape, p: &mut [T]) {
    gemm_into(p, (s.tq, s.tk, s.d), q, (s.d, 1), k, (1, s.d), false, false);
    let scale = T::from_f64(s.scale);
    for (i, row) in p.chunks_mut(s.tk).enumerate() {
        let limit = (i + s.offset + 1).min(s.tk);
        let max = row[..limit]
            .iter()
            .fold(T::neg_infinity(), |m, &v| Float::max(m, v * scale));
        let mut sum = T::zero();
        for v in &mut row[..limit] {
            *v = (*v * scale - max).exp();
            sum += *v;
        }
        let inv = T::one() / sum;
        row[..limit].iter_mut().for_each(|v| *v *= inv);
        row[limit..].iter_mut().for_each(|v| *v = T::zero());
    }
}

fn attn_fwd<T: Real>(q: &[T], k: &[T], v: &[T], s: AttnShape) -> Vec<T> {
    let mut out = vec![T::zero(); q.len()];
    out.par_chunks_mut(s.tq * s.d).enumerate().for_each_init(
        || vec![T::zero(); s.tq * s.tk],
        |p, (h, o)| {
            let (qh, kh, vh) = (
                &q[h * s.tq * s.d..],
                &k[h * s.tk * s.d..],
                &v[h * s.tk * s.d..],
            );
            attn_probs(&qh[..s.tq * s.d], &kh[..s.tk * s.d], s, p);
            gemm_into(
                o,
                (s.tq, s.d, s.tk),
                p,
                (s.tk, 1),
                &vh[..s.tk * s.d],
                (s.d, 1),
                false,
                false,
            );
        },
    );
    out
}

/// (dq, dk, dv) of one call, recomputing the probabilities head by head.
fn attn_bwd<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    go: &[T],
    s: AttnShape,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (mut dq, mut dk, mut dv) = (
        vec![T::zero(); q.len()],
        vec![T::zero(); k.len()],
        vec![T::zero(); v.len()],
    );
    let (nq, nk) = (s.tq * s.d, s.tk * s.d);
    dq.par_chunks_mut(nq)
        .zip(dk.par_chunks_mut(nk).zip(dv.par_chunks_mut(nk)))
        .enumerate()
        .for_each_init(
            || (vec![T::zero(); s.tq * s.tk], vec![T::zero(); s.tq * s.tk]),
            |(p, dp), (h, (dqh, (dkh, dvh)))| {
                let (qh, kh, vh) = (
                    &q[h * nq..(h + 1) * nq],
                    &k[h * nk..(h + 1) * nk],
                    &v[h * nk..(h + 1) * nk],
                );
                let goh = &go[h * nq..(h + 1) * nq];
                attn_probs(qh, kh, s, p);
                // dV = Pᵀ · dO
                gemm_into(
                    dvh,
                    (s.tk, s.d, s.tq),
                    p,
                    (1, s.tk),
                    goh,
                    (s.d, 1),
                    false,
                    false,
                );
                // dP = dO · Vᵀ
                gemm_into(
                    dp,
                    (s.tq, s.tk, s.d),
                    goh,
                    (s.d, 1),
                    vh,
                    (1, s.d),
                    false,
                    false,
                );
                // dS = scale · P ∘ (dP − rowsum(P ∘ dP)), kept in dp
                let scale = T::from_f64(s.scale);
                for (pr, dr) in p.chunks(s.tk).zip(dp.chunks_mut(s.tk)) {
                    let dot = pr
                        .iter()
                        .zip(dr.iter())
                        .fold(T::zero(), |a, (&x, &y)| a + x * y);
                    for (d, &x) in dr.iter_mut().zip(pr) {
                        *d = scale * x * (*d - dot);
                    }
                }
                // dQ = dS · K,  dK = dSᵀ · Q
                gemm_into(
                    dqh,
                    (s.tq, s.d, s.tk),
                    dp,
                    (s.tk, 1),
                    kh,
                    (s.d, 1),
                    false,
                    false,
                );
                gemm_into(
                    dkh,
                    (s.tk, s.d, s.tq),
                    dp,
                    (1, s.tk),
                    qh,
                    (s.d, 1),
                    false,
                    false,
                );
            },
        );
    (dq, dk, dv)
}

impl CausalAttention {
    fn shape(&self, q: &Shape, k: &Shape) -> Result<AttnShape> {
        let (b, h, tq, d) = q.dims4()?;
        let (b2, h2, tk, d2) = k.dims4()?;
        if (b, h, d) != (b2, h2, d2) || tq + self.offset != tk {
            bail!(
                "causal_attention: q {q:?} and k {k:?} do not match (offset {})",
                self.offset
            );
        }
        Ok(AttnShape {
            tq,
            tk,
            d,
            scale: self.scale,
            offset: self.offset,
        })
    }
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "thau-causal-attention"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            op: &CausalAttention,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let shape = op.shape(l1.shape(), l2.shape())?;
            if l3.shape() != l2.shape() {
                bail!(
                    "causal_attention: v {:?} differs from k {:?}",
                    l3.shape(),
                    l2.shape()
                );
            }
            let out = attn_fwd(
                slice::<T>(s1, l1, "attention")?,
                slice::<T>(s2, l2, "attention")?,
                slice::<T>(s3, l3, "attention")?,
                shape,
            );
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        dispatch!(s1, go(self, s1, l1, s2, l2, s3, l3))
    }
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        fn go<T: Real>(
            op: &CausalAttention,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            g: &Tensor,
        ) -> Result<(Tensor, Tensor, Tensor)> {
            let shape = op.shape(q.shape(), k.shape())?;
            let read = |t: &Tensor| -> Result<Vec<T>> { t.flatten_all()?.to_vec1::<T>() };
            let (dq, dk, dv) = attn_bwd(&read(q)?, &read(k)?, &read(v)?, &read(g)?, shape);
            Ok((
                Tensor::from_vec(dq, q.shape(), q.device())?,
                Tensor::from_vec(dk, k.shape(), k.device())?,
                Tensor::from_vec(dv, v.shape(), v.device())?,
            ))
        }
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => go::<f32>(self, q, k, v, &g)?,
            DType::F64 => go::<f64>(self, q, k, v, &g)?,
            dt => bail!("causal_attention: unsupported dtype {dt:?}"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Causal attention `softmax(scale · q kᵀ) v` for `q` `[B, H, Tq, D]` and `k`, `v`
/// `[B, H, Tk, D]` with `Tk = Tq + offset` (query `i` sees keys `0..=i + offset`).
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    offset: usize,
) -> Result<Tensor> {
    if !fused(q) {
        let p = causal_softmax(&q.matmul(&k.t()?)?, scale, offset)?;
        return p.matmul(v);
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        CausalAttention { scale, offset },
    )
}

// ---------------------------------------------------------------- SwiGLU

struct SwiGlu;
struct SwiGluBwdGate;
struct SwiGluBwdUp;

fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

fn map2<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    out.par_chunks_mut(4096)
        .zip(a.par_chunks(4096).zip(b.par_chunks(4096)))
        .for_each(|(o, (a, b))| {
            for i in 0..o.len() {
                o[i] = f(a[i], b[i]);
            }
        });
    out
}

fn map3<T: Real>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    out.par_chunks_mut(4096)
        .zip(
            a.par_chunks(4096)
                .zip(b.par_chunks(4096).zip(c.par_chunks(4096))),
        )
        .for_each(|(o, (a, (b, c)))| {
            for i in 0..o.len() {
                o[i] = f(a[i], b[i], c[i]);
            }
        });
    out
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "thau-swiglu"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (g, u) = (slice::<T>(s1, l1, "swiglu")?, slice::<T>(s2, l2, "swiglu")?);
            let out = map2(g, u, |g, u| g * sigmoid(g) * u);
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        dispatch!(s1, go(s1, l1, s2, l2))
    }
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let d_gate = gate.apply_op3_no_bwd(up, &g, &SwiGluBwdGate)?;
        let d_up = gate.apply_op2_no_bwd(&g, &SwiGluBwdUp)?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

impl CustomOp3 for SwiGluBwdGate {
    fn name(&self) -> &'static str {
        "thau-swiglu-bwd-gate"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (x, u, dy) = (
                slice::<T>(s1, l1, "swiglu")?,
                slice::<T>(s2, l2, "swiglu")?,
                slice::<T>(s3, l3, "swiglu")?,
            );
            // d silu(x)/dx = s · (1 + x · (1 − s)), s = sigmoid(x)
            let out = map3(x, u, dy, |x, u, dy| {
                let s = sigmoid(x);
                dy * u * s * (T::one() + x * (T::one() - s))
            });
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        dispatch!(s1, go(s1, l1, s2, l2, s3, l3))
    }
}

impl CustomOp2 for SwiGluBwdUp {
    fn name(&self) -> &'static str {
        "thau-swiglu-bwd-up"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (x, dy) = (slice::<T>(s1, l1, "swiglu")?, slice::<T>(s2, l2, "swiglu")?);
            let out = map2(x, dy, |x, dy| dy * x * sigmoid(x));
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        dispatch!(s1, go(s1, l1, s2, l2))
    }
}

/// `silu(gate) * up`, element-wise (same shapes).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !fused(gate) {
        return gate.silu()? * up;
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

// ---------------------------------------------------------------- LM head + cross-entropy

/// Rows of logits computed at once by the fused LM-head loss (bounds its scratch memory
/// to `LOSS_BLOCK × vocab` values).
const LOSS_BLOCK: usize = 256;

/// `dst (m×n, row-major) = [dst +] lhs (m×k) · rhs (k×n)`, operands given by row and
/// column strides. Checks every operand's extent before calling the gemm kernel.
#[allow(clippy::too_many_arguments)]
fn gemm_into<T: Real>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let extent =
        |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(dst.len() >= m * n, "gemm_into: dst too small");
    assert!(
        lhs.len() >= extent(m, k, lhs_rs, lhs_cs),
        "gemm_into: lhs too small"
    );
    assert!(
        rhs.len() >= extent(k, n, rhs_rs, rhs_cs),
        "gemm_into: rhs too small"
    );
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the extents checked above keep every access inside the three slices, and
    // `dst` is borrowed mutably so nothing else reads it meanwhile.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}

struct LmHeadLoss {
    targets: Arc<Vec<u32>>,
}

/// Logits of rows `r0..r0+rows` of `h` (`[N, d]`) under `w` (`[V, d]`) into `out`.
fn block_logits<T: Real>(
    h: &[T],
    w: &[T],
    d: usize,
    v: usize,
    r0: usize,
    rows: usize,
    out: &mut [T],
) {
    gemm_into(
        out,
        (rows, v, d),
        &h[r0 * d..(r0 + rows) * d],
        (d, 1),
        w,
        (1, d),
        false,
        true,
    );
}

fn lm_loss_fwd<T: Real>(h: &[T], w: &[T], targets: &[u32], d: usize, v: usize) -> Result<Vec<T>> {
    let n = h.len() / d;
    let mut out = vec![T::zero(); n];
    let mut logits = vec![T::zero(); LOSS_BLOCK.min(n) * v];
    for r0 in (0..n).step_by(LOSS_BLOCK) {
        let rows = LOSS_BLOCK.min(n - r0);
        block_logits(h, w, d, v, r0, rows, &mut logits);
        out[r0..r0 + rows]
            .par_iter_mut()
            .enumerate()
            .try_for_each(|(i, o)| {
                let t = targets[r0 + i];
                if t == IGNORE_INDEX {
                    return Ok(());
                }
                if t as usize >= v {
                    bail!("cross_entropy: target {t} out of range for vocabulary {v}");
                }
                let row = &logits[i * v..(i + 1) * v];
                *o = log_sum_exp(row) - row[t as usize];
                Ok(())
            })?;
    }
    Ok(out)
}

/// (dL/dh `[N, d]`, dL/dw `[V, d]`) for upstream gradient `g` (`[N]`).
fn lm_loss_bwd<T: Real>(
    h: &[T],
    w: &[T],
    targets: &[u32],
    g: &[T],
    d: usize,
    v: usize,
) -> (Vec<T>, Vec<T>) {
    let n = h.len() / d;
    let (mut dh, mut dw) = (vec![T::zero(); n * d], vec![T::zero(); v * d]);
    let mut logits = vec![T::zero(); LOSS_BLOCK.min(n) * v];
    for r0 in (0..n).step_by(LOSS_BLOCK) {
        let rows = LOSS_BLOCK.min(n - r0);
        block_logits(h, w, d, v, r0, rows, &mut logits);
        // dlogits = (softmax − onehot) · g, zero on ignored rows.
        logits[..rows * v]
            .par_chunks_mut(v)
            .enumerate()
            .for_each(|(i, row)| {
                let t = targets[r0 + i];
                if t == IGNORE_INDEX {
                    row.iter_mut().for_each(|x| *x = T::zero());
                    return;
                }
                let lse = log_sum_exp(row);
                let gi = g[r0 + i];
                row.iter_mut().for_each(|x| *x = (*x - lse).exp() * gi);
                row[t as usize] -= gi;
            });
        let dl = &logits[..rows * v];
        // dh[rows] = dlogits · w
        gemm_into(
            &mut dh[r0 * d..(r0 + rows) * d],
            (rows, d, v),
            dl,
            (v, 1),
            w,
            (d, 1),
            false,
            true,
        );
        // dw += dlogitsᵀ · h[rows]
        gemm_into(
            &mut dw,
            (v, d, rows),
            dl,
            (1, v),
            &h[r0 * d..(r0 + rows) * d],
            (d, 1),
            true,
            true,
        );
    }
    (dh, dw)
}

impl CustomOp2 for LmHeadLoss {
    fn name(&self) -> &'static str {
        "thau-lm-head-loss"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            op: &LmHeadLoss,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (n, d) = l1.shape().dims2()?;
            let (v, d2) = l2.shape().dims2()?;
            if d != d2 || op.targets.len() != n {
                bail!(
                    "lm_head_cross_entropy: hidden {:?}, head {:?}, {} targets",
                    l1.shape(),
                    l2.shape(),
                    op.targets.len()
                );
            }
            let out = lm_loss_fwd(
                slice::<T>(s1, l1, "lm_head")?,
                slice::<T>(s2, l2, "lm_head")?,
                &op.targets,
                d,
                v,
            )?;
            Ok((T::to_cpu_storage_owned(out), Shape::from(n)))
        }
        dispatch!(s1, go(self, s1, l1, s2, l2))
    }
    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        fn go<T: Real>(
            op: &LmHeadLoss,
            h: &Tensor,
            w: &Tensor,
            g: &Tensor,
        ) -> Result<(Tensor, Tensor)> {
            let (hs, hl) = h.storage_and_layout();
            let (ws, wl) = w.storage_and_layout();
            let (gs, gl) = g.storage_and_layout();
            let (
                candle_core::Storage::Cpu(hs),
                candle_core::Storage::Cpu(ws),
                candle_core::Storage::Cpu(gs),
            ) = (&*hs, &*ws, &*gs)
            else {
                bail!("lm_head_cross_entropy: CPU tensors expected");
            };
            let (d, v) = (h.dim(1)?, w.dim(0)?);
            let (dh, dw) = lm_loss_bwd(
                slice::<T>(hs, hl, "lm_head")?,
                slice::<T>(ws, wl, "lm_head")?,
                &op.targets,
                slice::<T>(gs, gl, "lm_head")?,
                d,
                v,
            );
            Ok((
                Tensor::from_vec(dh, h.shape(), h.device())?,
                Tensor::from_vec(dw, w.shape(), w.device())?,
            ))
        }
        let (dh, dw) = match h.dtype() {
            DType::F32 => go::<f32>(self, h, w, &g)?,
            DType::F64 => go::<f64>(self, h, w, &g)?,
            dt => bail!("lm_head_cross_entropy: unsupported dtype {dt:?}"),
        };
        Ok((Some(dh), Some(dw)))
    }
}

/// Per-row negative log-likelihood of `targets` under the logits `hidden · headᵀ`
/// (`hidden` `[N, d]`, `head` `[V, d]`, targets u32 `[N]`), without materialising the
/// logits. Rows whose target is [`IGNORE_INDEX`] give 0. Returns `[N]`.
pub fn lm_head_cross_entropy(hidden: &Tensor, head: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if !fused(hidden) {
        return cross_entropy(&hidden.matmul(&head.t()?)?, targets);
    }
    let targets = Arc::new(targets.flatten_all()?.to_vec1::<u32>()?);
    hidden
        .contiguous()?
        .apply_op2(&head.contiguous()?, LmHeadLoss { targets })
}

// ---------------------------------------------------------------- small-batch linear

/// Most rows for which [`small_linear`] beats the general matmul.
pub const SMALL_LINEAR_ROWS: usize = 4;

/// Outputs per parallel work item of [`small_linear`].
const GEMV_CHUNK: usize = 64;

fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums so the compiler can keep several multiply-adds in flight.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let mut i = 0;
    let (mut s0, mut s1, mut s2, mut s3) = (
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
    );
    // SAFETY: every load reads 16 floats at offsets below `n`, inside both slices.
    unsafe {
        while i + 64 <= n {
            let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa), _mm512_loadu_ps(pb), s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(16)), _mm512_loadu_ps(pb.add(16)), s1);
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(32)), _mm512_loadu_ps(pb.add(32)), s2);
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(48)), _mm512_loadu_ps(pb.add(48)), s3);
            i += 64;
        }
        while i + 16 <= n {
            s0 = _mm512_fmadd_ps(
                _mm512_loadu_ps(a.as_ptr().add(i)),
                _mm512_loadu_ps(b.as_ptr().add(i)),
                s0,
            );
            i += 16;
        }
    }
    let sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    sum + dot_scalar(&a[i..n], &b[i..n])
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { dot_avx512(a, b) };
    }
    dot_scalar(a, b)
}

struct SmallLinear;

impl CustomOp2 for SmallLinear {
    fn name(&self) -> &'static str {
        "thau-small-linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (
            slice::<f32>(s1, l1, "small_linear")?,
            slice::<f32>(s2, l2, "small_linear")?,
        );
        let (rows, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            bail!("small_linear: x is [{rows}, {k}] but w is [{n}, {k2}]");
        }
        let mut out = vec![0.0f32; rows * n];
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            out[r * n..(r + 1) * n]
                .par_chunks_mut(GEMV_CHUNK)
                .enumerate()
                .for_each(|(c, o)| {
                    for (j, y) in o.iter_mut().enumerate() {
                        let row = (c * GEMV_CHUNK + j) * k;
                        *y = dot(xr, &w[row..row + k]);
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }
}

/// `x · wᵀ` (`x` `[rows, k]`, `w` `[n, k]`) for a few rows of f32 on the CPU, without
/// gradient; `None` when the inputs are not of that kind (use the general matmul).
pub fn small_linear(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let small = x.rank() == 2 && x.dim(0)? <= SMALL_LINEAR_ROWS;
    if !small
        || x.track_op()
        || w.track_op()
        || !x.device().is_cpu()
        || x.dtype() != DType::F32
        || w.dtype() != DType::F32
    {
        return Ok(None);
    }
    Ok(Some(
        x.contiguous()?
            .apply_op2_no_bwd(&w.contiguous()?, &SmallLinear)?,
    ))
}

// ---------------------------------------------------------------- cross-entropy

struct CrossEntropy;
struct CrossEntropyBwd;

fn log_sum_exp<T: Real>(row: &[T]) -> T {
    let max = row.iter().fold(T::neg_infinity(), |m, &v| Float::max(m, v));
    max + row
        .iter()
        .fold(T::zero(), |acc, &v| acc + (v - max).exp())
        .ln()
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "thau-cross-entropy"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (n, v) = l1.shape().dims2()?;
            let logits = slice::<T>(s1, l1, "cross_entropy")?;
            let targets = slice_u32(s2, l2)?;
            let mut out = vec![T::zero(); n];
            out.par_iter_mut().enumerate().try_for_each(|(i, o)| {
                let t = targets[i];
                if t == IGNORE_INDEX {
                    return Ok(());
                }
                if t as usize >= v {
                    bail!("cross_entropy: target {t} out of range for vocabulary {v}");
                }
                let row = &logits[i * v..(i + 1) * v];
                *o = log_sum_exp(row) - row[t as usize];
                Ok(())
            })?;
            Ok((T::to_cpu_storage_owned(out), Shape::from(n)))
        }
        dispatch!(s1, go(s1, l1, s2, l2))
    }
    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        Ok((
            Some(logits.apply_op3_no_bwd(targets, &g, &CrossEntropyBwd)?),
            None,
        ))
    }
}

fn slice_u32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    let data = s.as_slice::<u32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("cross_entropy: targets must be contiguous"),
    }
}

impl CustomOp3 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "thau-cross-entropy-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (_n, v) = l1.shape().dims2()?;
            let logits = slice::<T>(s1, l1, "cross_entropy")?;
            let targets = slice_u32(s2, l2)?;
            let g = slice::<T>(s3, l3, "cross_entropy")?;
            let mut out = vec![T::zero(); logits.len()];
            out.par_chunks_mut(v).enumerate().for_each(|(i, o)| {
                let t = targets[i];
                if t == IGNORE_INDEX {
                    return;
                }
                let row = &logits[i * v..(i + 1) * v];
                let lse = log_sum_exp(row);
                for j in 0..v {
                    o[j] = (row[j] - lse).exp() * g[i];
                }
                o[t as usize] -= g[i];
            });
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        dispatch!(s1, go(s1, l1, s2, l2, s3, l3))
    }
}

/// Per-row negative log-likelihood of `targets` (`[N]`, u32) under `logits` (`[N, V]`);
/// rows whose target is [`IGNORE_INDEX`] give 0. Returns `[N]`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if !fused(logits) {
        let keep = targets.ne(IGNORE_INDEX)?;
        let safe = keep.where_cond(targets, &targets.zeros_like()?)?;
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let nll = logp.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
        return keep.where_cond(&nll, &nll.zeros_like()?);
    }
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Random tensor with a fixed seed-free but deterministic pattern.
    fn det(shape: &[usize], salt: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| ((i as f64 * 0.7361 + salt).sin() * 1.3) + 0.05 * (i as f64 * 0.13).cos())
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Checks d(sum(f(x) * w))/dx of a fused op against central finite differences in f64.
    fn check_grad(x: &Tensor, f: &dyn Fn(&Tensor) -> Result<Tensor>) {
        let var = Var::from_tensor(x).unwrap();
        let y = f(var.as_tensor()).unwrap();
        let w = det(y.dims(), 3.3);
        let loss = (y * &w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let analytic: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-6;
        for i in (0..base.len()).step_by((base.len() / 40).max(1)) {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let t = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
                (f(&t).unwrap() * &w)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs());
            assert!(
                err < 1e-6,
                "index {i}: numeric {numeric} vs analytic {}",
                analytic[i]
            );
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn rms_norm_matches_candle_and_finite_differences() {
        let x = det(&[3, 5, 8], 0.1);
        let a = det(&[8], 0.7);
        let ours = rms_norm(&x, &a, 1e-5).unwrap();
        let reference = candle_nn::ops::rms_norm_slow(&x, &a, 1e-5).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-12);
        check_grad(&x, &|x| rms_norm(x, &a, 1e-5));
        check_grad(&a, &|a| rms_norm(&x, a, 1e-5));
    }

    #[test]
    fn rope_matches_candle_and_finite_differences() {
        let x = det(&[2, 3, 4, 8], 0.2);
        let cos = det(&[4, 4], 0.9).cos().unwrap();
        let sin = det(&[4, 4], 0.9).sin().unwrap();
        let ours = rope_i(&x, &cos, &sin).unwrap();
        let reference = candle_nn::rotary_emb::rope_i_slow(&x, &cos, &sin).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-12);
        check_grad(&x, &|x| rope_i(x, &cos, &sin));
    }

    #[test]
    fn causal_softmax_matches_masked_softmax_and_finite_differences() {
        for (tq, tk) in [(5, 5), (2, 6)] {
            let s = det(&[2, 2, tq, tk], 0.3);
            let offset = tk - tq;
            let ours = causal_softmax(&s, 0.5, offset).unwrap();
            // Reference: an explicit -inf mask added before candle's composite softmax.
            let f32_ref = {
                let s32 = s.to_dtype(DType::F32).unwrap();
                let (q, k) = (tq, tk);
                let mask: Vec<f32> = (0..q)
                    .flat_map(|i| {
                        (0..k).map(move |j| {
                            if j > i + offset {
                                f32::NEG_INFINITY
                            } else {
                                0.0
                            }
                        })
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, (q, k), &Device::Cpu).unwrap();
                candle_nn::ops::softmax(
                    &(s32 * 0.5).unwrap().broadcast_add(&mask).unwrap(),
                    D::Minus1,
                )
                .unwrap()
            };
            assert!(max_diff(&ours.to_dtype(DType::F32).unwrap(), &f32_ref) < 1e-6);
            check_grad(&s, &|s| causal_softmax(s, 0.5, offset));
        }
    }

    #[test]
    fn fused_lm_head_loss_matches_matmul_then_cross_entropy_and_finite_differences() {
        // More rows than one block, so the block loop and the dw accumulation are covered.
        let n = LOSS_BLOCK + 7;
        let h = det(&[n, 6], 0.8);
        let w = det(&[11, 6], 2.1);
        let t: Vec<u32> = (0..n as u32)
            .map(|i| {
                if i % 5 == 3 {
                    IGNORE_INDEX
                } else {
                    (i * 7) % 11
                }
            })
            .collect();
        let targets = Tensor::new(t.as_slice(), &Device::Cpu).unwrap();
        let ours = lm_head_cross_entropy(&h, &w, &targets).unwrap();
        let reference = cross_entropy(&h.matmul(&w.t().unwrap()).unwrap(), &targets).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-12);
        check_grad(&h, &|h| lm_head_cross_entropy(h, &w, &targets));
        check_grad(&w, &|w| lm_head_cross_entropy(&h, w, &targets));
    }

    #[test]
    fn small_linear_matches_matmul() {
        let x = det(&[3, 70], 0.3).to_dtype(DType::F32).unwrap();
        let w = det(&[130, 70], 1.1).to_dtype(DType::F32).unwrap();
        let ours = small_linear(&x, &w).unwrap().expect("small f32 input");
        let reference = x.matmul(&w.t().unwrap()).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-4);
        let tracked = Var::from_tensor(&w).unwrap();
        assert!(
            small_linear(&x, tracked.as_tensor()).unwrap().is_none(),
            "never on trainable weights"
        );
    }

    #[test]
    fn fused_attention_matches_the_composite_and_finite_differences() {
        for (tq, tk) in [(7, 7), (3, 9)] {
            let q = det(&[2, 2, tq, 4], 0.1);
            let k = det(&[2, 2, tk, 4], 0.5);
            let v = det(&[2, 2, tk, 4], 0.9);
            let offset = tk - tq;
            let ours = causal_attention(&q, &k, &v, 0.5, offset).unwrap();
            let p = causal_softmax(&q.matmul(&k.t().unwrap()).unwrap(), 0.5, offset).unwrap();
            let reference = p.matmul(&v).unwrap();
            assert!(max_diff(&ours, &reference) < 1e-12);
            check_grad(&q, &|q| causal_attention(q, &k, &v, 0.5, offset));
            check_grad(&k, &|k| causal_attention(&q, k, &v, 0.5, offset));
            check_grad(&v, &|v| causal_attention(&q, &k, v, 0.5, offset));
        }
    }

    #[test]
    fn swiglu_matches_silu_times_up_and_finite_differences() {
        let g = det(&[3, 10], 0.6);
        let u = det(&[3, 10], 1.7);
        let ours = swiglu(&g, &u).unwrap();
        let reference = (g.silu().unwrap() * &u).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-12);
        check_grad(&g, &|g| swiglu(g, &u));
        check_grad(&u, &|u| swiglu(&g, u));
    }

    #[test]
    fn cross_entropy_matches_log_softmax_and_finite_differences() {
        let logits = det(&[4, 7], 0.4);
        let targets = Tensor::new(&[3u32, IGNORE_INDEX, 0, 6], &Device::Cpu).unwrap();
        let ours = cross_entropy(&logits, &targets).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let lp: Vec<Vec<f64>> = logp.to_vec2().unwrap();
        let got: Vec<f64> = ours.to_vec1().unwrap();
        assert!((got[0] + lp[0][3]).abs() < 1e-12);
        assert_eq!(got[1], 0.0);
        assert!((got[2] + lp[2][0]).abs() < 1e-12 && (got[3] + lp[3][6]).abs() < 1e-12);
        check_grad(&logits, &|l| cross_entropy(l, &targets));
    }
}
