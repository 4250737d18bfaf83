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
//! - [`cross_entropy`]: per-row negative log-likelihood fused with the softmax, rows whose
//!   target is [`IGNORE_INDEX`] contribute nothing.
//!
//! Kernels run on f32 and f64 (f64 makes finite-difference gradient checks exact enough);
//! other devices or dtypes fall back to candle's differentiable composite forms.
//! Every op is checked against the composite form and by finite differences in tests.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout,
    Result, Shape, Tensor, WithDType, D,
};
use num_traits::Float;
use rayon::prelude::*;

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
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(op: &RmsNorm, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
            let (x, a) = (slice::<T>(s1, l1, "rms_norm")?, slice::<T>(s2, l2, "rms_norm")?);
            Ok((T::to_cpu_storage_owned(rms_fwd(x, a, op.eps)), l1.shape().clone()))
        }
        dispatch!(s1, go(self, s1, l1, s2, l2))
    }
    fn bwd(&self, x: &Tensor, alpha: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
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
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(eps: f64, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
            let out = rms_bwd_x(slice::<T>(s1, l1, "rms_norm")?, slice::<T>(s2, l2, "rms_norm")?, slice::<T>(s3, l3, "rms_norm")?, eps);
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        dispatch!(s1, go(self.eps, s1, l1, s2, l2, s3, l3))
    }
}

impl CustomOp2 for RmsNormBwdAlpha {
    fn name(&self) -> &'static str {
        "thau-rms-norm-bwd-alpha"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(eps: f64, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
            let d = l1.shape().dims().last().copied().unwrap_or(1);
            let out = rms_bwd_alpha(slice::<T>(s1, l1, "rms_norm")?, slice::<T>(s2, l2, "rms_norm")?, d, eps);
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
    x.contiguous()?.apply_op2(&alpha.contiguous()?, RmsNorm { eps })
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
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
            let (_b, _h, t, d) = l1.shape().dims4()?;
            if l2.shape().dims2()? != (t, d / 2) || l3.shape().dims2()? != (t, d / 2) {
                bail!("rope_i: cos/sin must be [{t}, {}], got {:?}", d / 2, l2.shape());
            }
            let out = rope_kernel(slice::<T>(s1, l1, "rope_i")?, slice::<T>(s2, l2, "rope_i")?, slice::<T>(s3, l3, "rope_i")?, t, d);
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        dispatch!(s1, go(s1, l1, s2, l2, s3, l3))
    }
    fn bwd(&self, _x: &Tensor, cos: &Tensor, sin: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The rotation is orthogonal: its transpose is the rotation by the opposite angle.
        let gx = g.contiguous()?.apply_op3_no_bwd(cos, &sin.neg()?.contiguous()?, &RopeI)?;
        Ok((Some(gx), None, None))
    }
}

/// Rotary embedding of `x` (`[B, H, T, head_dim]`) on consecutive pairs; `cos` and `sin`
/// are `[T, head_dim / 2]` for the positions of `x`.
pub fn rope_i(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return candle_nn::rotary_emb::rope_i_slow(x, cos, sin);
    }
    x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, RopeI)
}

// ---------------------------------------------------------------- causal softmax

struct CausalSoftmax {
    scale: f64,
    offset: usize,
}
struct SoftmaxBwd {
    scale: f64,
}

fn causal_softmax_kernel<T: Real>(x: &[T], tq: usize, tk: usize, scale: f64, offset: usize) -> Vec<T> {
    let scale = T::from_f64(scale);
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(tk)
        .zip(x.par_chunks(tk))
        .enumerate()
        .for_each(|(row, (o, xr))| {
            let limit = (row % tq + offset + 1).min(tk);
            let max = xr[..limit].iter().fold(T::neg_infinity(), |m, &v| Float::max(m, v * scale));
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
            let dot = yr.iter().zip(gr).fold(T::zero(), |acc, (&a, &b)| acc + a * b);
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
        fn go<T: Real>(op: &CausalSoftmax, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
            let dims = l.shape().dims();
            let (tq, tk) = (dims[dims.len() - 2], dims[dims.len() - 1]);
            let out = causal_softmax_kernel(slice::<T>(s, l, "causal_softmax")?, tq, tk, op.scale, op.offset);
            Ok((T::to_cpu_storage_owned(out), l.shape().clone()))
        }
        dispatch!(s, go(self, s, l))
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let g = g.contiguous()?;
        Ok(Some(y.apply_op2_no_bwd(&g, &SoftmaxBwd { scale: self.scale })?))
    }
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "thau-softmax-bwd"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(scale: f64, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
            let n = l1.shape().dims().last().copied().unwrap_or(1);
            let out = softmax_bwd_kernel(slice::<T>(s1, l1, "softmax")?, slice::<T>(s2, l2, "softmax")?, n, scale);
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
        let mask = Tensor::from_vec(mask, (tq, tk), scores.device())?.broadcast_as(scores.shape())?;
        let neg = Tensor::new(f32::NEG_INFINITY, scores.device())?
            .to_dtype(scores.dtype())?
            .broadcast_as(scores.shape())?;
        let masked = mask.where_cond(&neg, &(scores * scale)?)?;
        return candle_nn::ops::softmax(&masked, D::Minus1);
    }
    scores.contiguous()?.apply_op1(CausalSoftmax { scale, offset })
}

// ---------------------------------------------------------------- cross-entropy

struct CrossEntropy;
struct CrossEntropyBwd;

fn log_sum_exp<T: Real>(row: &[T]) -> T {
    let max = row.iter().fold(T::neg_infinity(), |m, &v| Float::max(m, v));
    max + row.iter().fold(T::zero(), |acc, &v| acc + (v - max).exp()).ln()
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "thau-cross-entropy"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
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
    fn bwd(&self, logits: &Tensor, targets: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        Ok((Some(logits.apply_op3_no_bwd(targets, &g, &CrossEntropyBwd)?), None))
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
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
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
    logits.contiguous()?.apply_op2(&targets.contiguous()?, CrossEntropy)
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
        let analytic: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-6;
        for i in (0..base.len()).step_by((base.len() / 40).max(1)) {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let t = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
                (f(&t).unwrap() * &w).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs());
            assert!(err < 1e-6, "index {i}: numeric {numeric} vs analytic {}", analytic[i]);
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
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
                let mask: Vec<f32> = (0..q).flat_map(|i| (0..k).map(move |j| if j > i + offset { f32::NEG_INFINITY } else { 0.0 })).collect();
                let mask = Tensor::from_vec(mask, (q, k), &Device::Cpu).unwrap();
                candle_nn::ops::softmax(&(s32 * 0.5).unwrap().broadcast_add(&mask).unwrap(), D::Minus1).unwrap()
            };
            assert!(max_diff(&ours.to_dtype(DType::F32).unwrap(), &f32_ref) < 1e-6);
            check_grad(&s, &|s| causal_softmax(s, 0.5, offset));
        }
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
