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
//!   positions into the keys;
//! - [`causal_attention`]: `softmax(scale · q kᵀ) v` with the causal mask, one head per
//!   task with the scores kept in a per-task buffer (flash-style: no `[B, H, T, T]` tensor
//!   is stored for the backward, which recomputes the probabilities);
//! - [`swiglu`]: `silu(gate) * up` in one pass (and one pass back), instead of candle's
//!   chain of element-wise ops over the widest activations of the model;
//! - [`lm_head_cross_entropy`]: the LM head matmul fused with the cross-entropy. When a
//!   gradient is tracked and the `[tokens, vocab]` softmax fits a budget (64 MB at age 0
//!   against 256 MiB), the forward keeps it for the backward, which then needs no second
//!   product; otherwise it works a block of rows at a time and the backward recomputes;
//! - [`linear`]: `x · wᵀ` whose backward is two calls of the gemm kernel, the weight
//!   gradient produced in the weight's own layout;
//! - [`small_linear`]: `x · wᵀ` for a handful of rows (decoding), one AVX-512 dot product
//!   per output, parallel over outputs (inference only: no backward).
//!
//! [`cross_entropy`] is the plain composite form, the reference the fused loss is checked
//! against. Kernels are written once for f32 and f64 ([`Kernel1`], [`Kernel2`],
//! [`Kernel3`]; f64 makes finite-difference checks exact enough); other devices and dtypes
//! fall back to candle's differentiable composite ops. Every op is checked against its
//! composite form and by finite differences in the tests below.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage,
    Tensor, WithDType, D,
};
use num_traits::Float;
use rayon::prelude::*;
use std::any::Any;
use std::sync::{Arc, Mutex};

/// Target value meaning "no loss at this position" (padding, prompt tokens).
pub const IGNORE_INDEX: u32 = u32::MAX;

/// Element types the kernels are written for.
trait Real: WithDType + Float {
    /// `x = exp(x)` for every value (vectorised for f32 where the CPU allows: libm's
    /// scalar `expf` was a tenth of a training step, in the softmaxes, the loss and SwiGLU).
    fn exp_in_place(xs: &mut [Self]) {
        xs.iter_mut().for_each(|x| *x = x.exp());
    }
}
impl Real for f32 {
    fn exp_in_place(xs: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { exp_slice_avx512(xs) };
            return;
        }
        xs.iter_mut().for_each(|x| *x = x.exp());
    }
}
impl Real for f64 {}

/// `exp` of every value, 16 at a time ([`exp_avx512`]; the tail through a mask).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_slice_avx512(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let (n, p) = (xs.len(), xs.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        _mm512_storeu_ps(p.add(i), exp_avx512(_mm512_loadu_ps(p.add(i))));
        i += 16;
    }
    if i < n {
        let mask: __mmask16 = (1u16 << (n - i)) - 1;
        let v = _mm512_maskz_loadu_ps(mask, p.add(i));
        _mm512_mask_storeu_ps(p.add(i), mask, exp_avx512(v));
    }
}

/// `exp(x)` of 16 floats (-inf gives 0, overflow +inf): `e^x = 2^n · e^f` with
/// `n = round(x·log2 e)`, `f = x − n·ln 2` (ln 2 in two parts, so `f` stays exact for
/// large `|x|`), `2^n` applied with `scalef` and `e^f` by a degree-6 polynomial on
/// [-ln2/2, ln2/2] (relative error about 1e-7).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // Below this the result is 0 in f32 anyway; clamping keeps -inf out of the maths.
    let x = _mm512_max_ps(x, _mm512_set1_ps(-104.0));
    /// ln 2 = LN2_HI + LN2_LO, the high part (0.693359375 exactly in f32) with few
    /// enough bits that `n · LN2_HI` is exact (Cody and Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let y = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
    let f = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let f = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), f);
    // e^f, Horner from the degree-6 term.
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// The contiguous slice of a storage described by `layout`.
fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// A tensor's values on the host (for backward passes that compute several gradients).
fn host<T: Real>(t: &Tensor) -> Result<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

/// Whether the fused kernels can serve this tensor (CPU, f32 or f64).
fn fused(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// One input of a kernel: its contiguous values and its shape.
#[derive(Clone, Copy)]
struct In<'a, T> {
    x: &'a [T],
    shape: &'a Shape,
}

/// Output of a kernel: values and shape.
type Out<T> = Result<(Vec<T>, Shape)>;

/// A CPU kernel over one tensor, with its backward.
trait Kernel1: Send + Sync + 'static {
    const NAME: &'static str;
    fn run<T: Real>(&self, a: In<T>) -> Out<T>;
    fn backward(&self, _a: &Tensor, _res: &Tensor, _g: &Tensor) -> Result<Option<Tensor>> {
        bail!("{}: no backward", Self::NAME)
    }
}

/// A CPU kernel over two tensors, with its backward.
trait Kernel2: Send + Sync + 'static {
    const NAME: &'static str;
    fn run<T: Real>(&self, a: In<T>, b: In<T>) -> Out<T>;
    fn backward(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        _g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        bail!("{}: no backward", Self::NAME)
    }
}

/// A CPU kernel over three tensors, with its backward.
trait Kernel3: Send + Sync + 'static {
    const NAME: &'static str;
    fn run<T: Real>(&self, a: In<T>, b: In<T>, c: In<T>) -> Out<T>;
    #[allow(clippy::type_complexity)]
    fn backward(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _c: &Tensor,
        _res: &Tensor,
        _g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        bail!("{}: no backward", Self::NAME)
    }
}

/// Adapts a kernel to candle's custom-op traits (dtype dispatch, slicing, storage).
struct Op<K>(K);

fn input<'a, T: Real>(s: &'a CpuStorage, l: &'a Layout, op: &str) -> Result<In<'a, T>> {
    Ok(In {
        x: slice::<T>(s, l, op)?,
        shape: l.shape(),
    })
}

fn store<T: Real>(out: Out<T>) -> Result<(CpuStorage, Shape)> {
    let (v, shape) = out?;
    Ok((T::to_cpu_storage_owned(v), shape))
}

impl<K: Kernel1> CustomOp1 for Op<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => store(self.0.run(input::<f32>(s, l, K::NAME)?)),
            CpuStorage::F64(_) => store(self.0.run(input::<f64>(s, l, K::NAME)?)),
            _ => bail!("{}: only f32 and f64 are supported", K::NAME),
        }
    }
    fn bwd(&self, a: &Tensor, res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        self.0.backward(a, res, &g.contiguous()?)
    }
}

impl<K: Kernel2> CustomOp2 for Op<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real, K: Kernel2>(
            k: &K,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            store(k.run(input::<T>(s1, l1, K::NAME)?, input::<T>(s2, l2, K::NAME)?))
        }
        match s1 {
            CpuStorage::F32(_) => go::<f32, K>(&self.0, s1, l1, s2, l2),
            CpuStorage::F64(_) => go::<f64, K>(&self.0, s1, l1, s2, l2),
            _ => bail!("{}: only f32 and f64 are supported", K::NAME),
        }
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.0.backward(a, b, res, &g.contiguous()?)
    }
}

impl<K: Kernel3> CustomOp3 for Op<K> {
    fn name(&self) -> &'static str {
        K::NAME
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
        #[allow(clippy::too_many_arguments)]
        fn go<T: Real, K: Kernel3>(
            k: &K,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            store(k.run(
                input::<T>(s1, l1, K::NAME)?,
                input::<T>(s2, l2, K::NAME)?,
                input::<T>(s3, l3, K::NAME)?,
            ))
        }
        match s1 {
            CpuStorage::F32(_) => go::<f32, K>(&self.0, s1, l1, s2, l2, s3, l3),
            CpuStorage::F64(_) => go::<f64, K>(&self.0, s1, l1, s2, l2, s3, l3),
            _ => bail!("{}: only f32 and f64 are supported", K::NAME),
        }
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.0.backward(a, b, c, res, &g.contiguous()?)
    }
}

/// Runs `f` over matching chunks of rows of `out` and `x` in parallel.
fn rows_mut<T: Real>(
    out: &mut [T],
    x: &[T],
    width: usize,
    f: impl Fn(usize, &mut [T], &[T]) + Sync,
) {
    out.par_chunks_mut(width)
        .zip(x.par_chunks(width))
        .enumerate()
        .for_each(|(i, (o, xr))| f(i, o, xr));
}

fn last_dim(s: &Shape) -> usize {
    s.dims().last().copied().unwrap_or(1)
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

impl Kernel2 for RmsNorm {
    const NAME: &'static str = "thau-rms-norm";
    fn run<T: Real>(&self, x: In<T>, a: In<T>) -> Out<T> {
        let mut out = vec![T::zero(); x.x.len()];
        rows_mut(&mut out, x.x, a.x.len(), |_, o, xr| {
            let r = inv_rms(xr, self.eps);
            for i in 0..o.len() {
                o[i] = xr[i] * r * a.x[i];
            }
        });
        Ok((out, x.shape.clone()))
    }
    fn backward(
        &self,
        x: &Tensor,
        alpha: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = x.apply_op3_no_bwd(alpha, g, &Op(RmsNormBwdX { eps: self.eps }))?;
        let ga = x.apply_op2_no_bwd(g, &Op(RmsNormBwdAlpha { eps: self.eps }))?;
        Ok((Some(gx), Some(ga)))
    }
}

/// dL/dx_j = r·g_j·a_j − x_j·r³/D · Σ_i g_i·a_i·x_i
impl Kernel3 for RmsNormBwdX {
    const NAME: &'static str = "thau-rms-norm-bwd-x";
    fn run<T: Real>(&self, x: In<T>, a: In<T>, g: In<T>) -> Out<T> {
        let (a, d) = (a.x, a.x.len());
        let mut out = vec![T::zero(); x.x.len()];
        rows_mut(&mut out, x.x, d, |row, o, xr| {
            let gr = &g.x[row * d..(row + 1) * d];
            let r = inv_rms(xr, self.eps);
            let dot = (0..d).fold(T::zero(), |acc, i| acc + gr[i] * a[i] * xr[i]);
            let k = r * r * r * dot / T::from_f64(d as f64);
            for i in 0..d {
                o[i] = r * gr[i] * a[i] - xr[i] * k;
            }
        });
        Ok((out, x.shape.clone()))
    }
}

/// dL/da_i = Σ_rows g_i·x_i·r
impl Kernel2 for RmsNormBwdAlpha {
    const NAME: &'static str = "thau-rms-norm-bwd-alpha";
    fn run<T: Real>(&self, x: In<T>, g: In<T>) -> Out<T> {
        let d = last_dim(x.shape);
        let rows = x.x.len() / d;
        // Partial sums over blocks of rows in parallel, then added up.
        let chunk = rows.div_ceil(rayon::current_num_threads().max(1)).max(1) * d;
        let partials: Vec<Vec<T>> =
            x.x.par_chunks(chunk)
                .zip(g.x.par_chunks(chunk))
                .map(|(xc, gc)| {
                    let mut acc = vec![T::zero(); d];
                    for (xr, gr) in xc.chunks(d).zip(gc.chunks(d)) {
                        let r = inv_rms(xr, self.eps);
                        for i in 0..d {
                            acc[i] += gr[i] * xr[i] * r;
                        }
                    }
                    acc
                })
                .collect();
        let mut out = vec![T::zero(); d];
        for p in partials {
            out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
        }
        Ok((out, Shape::from(d)))
    }
}

/// RMSNorm over the last dimension with a learned gain `alpha` (shape `[D]`).
pub fn rms_norm(x: &Tensor, alpha: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused(x) {
        return candle_nn::ops::rms_norm_slow(x, alpha, eps as f32);
    }
    x.contiguous()?
        .apply_op2(&alpha.contiguous()?, Op(RmsNorm { eps }))
}

// ---------------------------------------------------------------- RoPE (consecutive pairs)

struct RopeI;

impl Kernel3 for RopeI {
    const NAME: &'static str = "thau-rope-i";
    fn run<T: Real>(&self, x: In<T>, cos: In<T>, sin: In<T>) -> Out<T> {
        let (_b, _h, t, d) = x.shape.dims4()?;
        let half = d / 2;
        if cos.shape.dims2()? != (t, half) || sin.shape.dims2()? != (t, half) {
            bail!("rope_i: cos/sin must be [{t}, {half}], got {:?}", cos.shape);
        }
        let mut out = vec![T::zero(); x.x.len()];
        rows_mut(&mut out, x.x, d, |row, o, xr| {
            let p = row % t;
            for i in 0..half {
                let (c, s) = (cos.x[p * half + i], sin.x[p * half + i]);
                let (x0, x1) = (xr[2 * i], xr[2 * i + 1]);
                o[2 * i] = x0 * c - x1 * s;
                o[2 * i + 1] = x0 * s + x1 * c;
            }
        });
        Ok((out, x.shape.clone()))
    }
    fn backward(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The rotation is orthogonal: its transpose is the rotation by the opposite angle.
        let gx = g.apply_op3_no_bwd(cos, &sin.neg()?.contiguous()?, &Op(RopeI))?;
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
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, Op(RopeI))
}

// ---------------------------------------------------------------- causal softmax

struct CausalSoftmax {
    scale: f64,
    offset: usize,
}
struct SoftmaxBwd {
    scale: f64,
}

/// Softmax of `scale · row` over its first `limit` entries; the rest are set to zero.
fn masked_softmax_row<T: Real>(row: &mut [T], limit: usize, scale: T) {
    let max = row[..limit]
        .iter()
        .fold(T::neg_infinity(), |m, &v| Float::max(m, v * scale));
    row[..limit].iter_mut().for_each(|v| *v = *v * scale - max);
    T::exp_in_place(&mut row[..limit]);
    let sum = row[..limit].iter().fold(T::zero(), |acc, &v| acc + v);
    let inv = T::one() / sum;
    row[..limit].iter_mut().for_each(|v| *v *= inv);
    row[limit..].iter_mut().for_each(|v| *v = T::zero());
}

impl Kernel1 for CausalSoftmax {
    const NAME: &'static str = "thau-causal-softmax";
    fn run<T: Real>(&self, s: In<T>) -> Out<T> {
        let dims = s.shape.dims();
        let (tq, tk) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let mut out = s.x.to_vec();
        out.par_chunks_mut(tk).enumerate().for_each(|(row, o)| {
            masked_softmax_row(
                o,
                (row % tq + self.offset + 1).min(tk),
                T::from_f64(self.scale),
            );
        });
        Ok((out, s.shape.clone()))
    }
    fn backward(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(
            g,
            &Op(SoftmaxBwd { scale: self.scale }),
        )?))
    }
}

/// dL/dx_j = scale · y_j · (g_j − Σ_k g_k·y_k); masked entries have y = 0 and get 0.
impl Kernel2 for SoftmaxBwd {
    const NAME: &'static str = "thau-softmax-bwd";
    fn run<T: Real>(&self, y: In<T>, g: In<T>) -> Out<T> {
        let n = last_dim(y.shape);
        let scale = T::from_f64(self.scale);
        let mut out = vec![T::zero(); y.x.len()];
        rows_mut(&mut out, y.x, n, |row, o, yr| {
            let gr = &g.x[row * n..(row + 1) * n];
            let dot = yr
                .iter()
                .zip(gr)
                .fold(T::zero(), |acc, (&a, &b)| acc + a * b);
            for j in 0..n {
                o[j] = scale * yr[j] * (gr[j] - dot);
            }
        });
        Ok((out, y.shape.clone()))
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
        .apply_op1(Op(CausalSoftmax { scale, offset }))
}

// ---------------------------------------------------------------- matrix products

/// `dst (m×n, row-major) = [dst +] lhs (m×k) · rhs (k×n)`, operands given by row and
/// column strides; `parallel` splits the product over rayon's threads (off inside an
/// already-parallel loop). Checks every operand's extent before calling the gemm kernel.
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
    assert!(dst.len() >= m * n, "gemm_into: dst too small");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    check_operands((m, n, k), lhs, (lhs_rs, lhs_cs), rhs, (rhs_rs, rhs_cs));
    // SAFETY: the operands' extents are checked, `dst` holds `m·n` values and is
    // borrowed mutably so nothing else reads it meanwhile.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr(),
            (m, n, k),
            (lhs, lhs_rs, lhs_cs),
            (rhs, rhs_rs, rhs_cs),
            accumulate,
            parallel,
        )
    };
}

/// `lhs (m×k) · rhs (k×n)` as a new row-major `m×n` vector, written by the gemm kernel
/// into uninitialised memory: zeroing tens of megabytes that the product overwrites
/// anyway was a memset of every output and gradient of every linear layer each step.
#[allow(clippy::too_many_arguments)]
fn gemm_fresh<T: Real>(
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    parallel: bool,
) -> Vec<T> {
    if m == 0 || n == 0 || k == 0 {
        return vec![T::zero(); m * n];
    }
    check_operands((m, n, k), lhs, (lhs_rs, lhs_cs), rhs, (rhs_rs, rhs_cs));
    let mut out: Vec<T> = Vec::with_capacity(m * n);
    // SAFETY: the operands' extents are checked; `out` has room for `m·n` values, which
    // the kernel writes without reading (no accumulation) before `set_len` exposes them.
    unsafe {
        gemm_raw(
            out.as_mut_ptr(),
            (m, n, k),
            (lhs, lhs_rs, lhs_cs),
            (rhs, rhs_rs, rhs_cs),
            false,
            parallel,
        );
        out.set_len(m * n);
    }
    out
}

/// Panics unless `lhs` and `rhs` hold every element the strides reach.
fn check_operands<T>(
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    let extent =
        |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(
        lhs.len() >= extent(m, k, lhs_rs, lhs_cs),
        "gemm: lhs too small"
    );
    assert!(
        rhs.len() >= extent(k, n, rhs_rs, rhs_cs),
        "gemm: rhs too small"
    );
}

/// The gemm kernel on checked operands.
///
/// # Safety
/// `dst` must be valid for writes (and, with `accumulate`, reads) of `m·n` values, and
/// `m`, `n`, `k` must be above zero with the operands' extents checked.
unsafe fn gemm_raw<T: Real>(
    dst: *mut T,
    (m, n, k): (usize, usize, usize),
    (lhs, lhs_rs, lhs_cs): (&[T], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[T], usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
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

// ---------------------------------------------------------------- fused causal attention

/// Shapes of one attention call: queries `tq`, keys `tk`, head width `d`.
#[derive(Clone, Copy)]
struct CausalAttention {
    tq: usize,
    tk: usize,
    d: usize,
    scale: f64,
    offset: usize,
}

impl CausalAttention {
    /// Probabilities `P` (`tq × tk`) of one head into `p`.
    fn probs<T: Real>(&self, q: &[T], k: &[T], p: &mut [T]) {
        gemm_into(
            p,
            (self.tq, self.tk, self.d),
            q,
            (self.d, 1),
            k,
            (1, self.d),
            false,
            false,
        );
        for (i, row) in p.chunks_mut(self.tk).enumerate() {
            masked_softmax_row(
                row,
                (i + self.offset + 1).min(self.tk),
                T::from_f64(self.scale),
            );
        }
    }

    /// (dq, dk, dv), recomputing the probabilities head by head.
    fn grads<T: Real>(&self, q: &[T], k: &[T], v: &[T], go: &[T]) -> (Vec<T>, Vec<T>, Vec<T>) {
        let s = *self;
        let (nq, nk) = (s.tq * s.d, s.tk * s.d);
        let (mut dq, mut dk, mut dv) = (
            vec![T::zero(); q.len()],
            vec![T::zero(); k.len()],
            vec![T::zero(); v.len()],
        );
        let scale = T::from_f64(s.scale);
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
                    s.probs(qh, kh, p);
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
}

impl Kernel3 for CausalAttention {
    const NAME: &'static str = "thau-causal-attention";
    fn run<T: Real>(&self, q: In<T>, k: In<T>, v: In<T>) -> Out<T> {
        let (nq, nk) = (self.tq * self.d, self.tk * self.d);
        let mut out = vec![T::zero(); q.x.len()];
        out.par_chunks_mut(nq).enumerate().for_each_init(
            || vec![T::zero(); self.tq * self.tk],
            |p, (h, o)| {
                self.probs(&q.x[h * nq..(h + 1) * nq], &k.x[h * nk..(h + 1) * nk], p);
                gemm_into(
                    o,
                    (self.tq, self.d, self.tk),
                    p,
                    (self.tk, 1),
                    &v.x[h * nk..(h + 1) * nk],
                    (self.d, 1),
                    false,
                    false,
                );
            },
        );
        Ok((out, q.shape.clone()))
    }
    fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => {
                let (a, b, c) = self.grads::<f32>(&host(q)?, &host(k)?, &host(v)?, &host(g)?);
                (
                    Tensor::from_vec(a, q.shape(), q.device())?,
                    Tensor::from_vec(b, k.shape(), k.device())?,
                    Tensor::from_vec(c, v.shape(), v.device())?,
                )
            }
            DType::F64 => {
                let (a, b, c) = self.grads::<f64>(&host(q)?, &host(k)?, &host(v)?, &host(g)?);
                (
                    Tensor::from_vec(a, q.shape(), q.device())?,
                    Tensor::from_vec(b, k.shape(), k.device())?,
                    Tensor::from_vec(c, v.shape(), v.device())?,
                )
            }
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
    let (b, h, tq, d) = q.dims4()?;
    let (kb, kh, tk, kd) = k.dims4()?;
    if (b, h, d) != (kb, kh, kd) || tq + offset != tk || k.shape() != v.shape() {
        bail!(
            "causal_attention: q {:?}, k {:?}, v {:?} do not match (offset {offset})",
            q.shape(),
            k.shape(),
            v.shape()
        );
    }
    let op = CausalAttention {
        tq,
        tk,
        d,
        scale,
        offset,
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, Op(op))
}

// ---------------------------------------------------------------- SwiGLU

struct SwiGlu;
struct SwiGluBwdGate;
struct SwiGluBwdUp;

/// `out[i] = f(a[i], b[i], sigmoid(a[i]))`, the exponentials a chunk at a time.
fn map2_sig<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T, T) -> T + Sync) -> Vec<T> {
    map3_sig(a, b, b, |a, b, _, s| f(a, b, s))
}

/// `out[i] = f(a[i], b[i], c[i], sigmoid(a[i]))`, the exponentials a chunk at a time.
fn map3_sig<T: Real>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T, T) -> T + Sync) -> Vec<T> {
    // Starts as -a (collected, not zeroed first: these are [rows, d_ff] buffers).
    let mut out: Vec<T> = a.par_iter().map(|&a| -a).collect();
    out.par_chunks_mut(4096)
        .zip(
            a.par_chunks(4096)
                .zip(b.par_chunks(4096).zip(c.par_chunks(4096))),
        )
        .for_each(|(o, (a, (b, c)))| {
            T::exp_in_place(o); // e^-a
            for i in 0..o.len() {
                o[i] = f(a[i], b[i], c[i], T::one() / (T::one() + o[i]));
            }
        });
    out
}

impl Kernel2 for SwiGlu {
    const NAME: &'static str = "thau-swiglu";
    fn run<T: Real>(&self, g: In<T>, u: In<T>) -> Out<T> {
        Ok((map2_sig(g.x, u.x, |g, u, s| g * s * u), g.shape.clone()))
    }
    fn backward(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d_gate = gate.apply_op3_no_bwd(up, g, &Op(SwiGluBwdGate))?;
        let d_up = gate.apply_op2_no_bwd(g, &Op(SwiGluBwdUp))?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

/// d silu(x)/dx = s · (1 + x · (1 − s)), s = sigmoid(x)
impl Kernel3 for SwiGluBwdGate {
    const NAME: &'static str = "thau-swiglu-bwd-gate";
    fn run<T: Real>(&self, x: In<T>, u: In<T>, dy: In<T>) -> Out<T> {
        let out = map3_sig(x.x, u.x, dy.x, |x, u, dy, s| {
            dy * u * s * (T::one() + x * (T::one() - s))
        });
        Ok((out, x.shape.clone()))
    }
}

impl Kernel2 for SwiGluBwdUp {
    const NAME: &'static str = "thau-swiglu-bwd-up";
    fn run<T: Real>(&self, x: In<T>, dy: In<T>) -> Out<T> {
        Ok((map2_sig(x.x, dy.x, |x, dy, s| dy * x * s), x.shape.clone()))
    }
}

/// `silu(gate) * up`, element-wise (same shapes).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !fused(gate) {
        return gate.silu()? * up;
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, Op(SwiGlu))
}

// ---------------------------------------------------------------- LM head + cross-entropy

/// Rows of logits computed at once by the fused LM-head loss when it keeps nothing for the
/// backward (bounds its scratch memory to `LOSS_BLOCK × vocab` values).
const LOSS_BLOCK: usize = 256;

/// Most bytes of softmax rows the fused LM-head loss keeps from its forward for its
/// backward. Under it (64 MiB at age 0 with 8 × 256 rows) the backward skips recomputing
/// the logits, a third of the head's backward; above it, it recomputes them a block at a
/// time.
const LOSS_STASH_BYTES: usize = 256 << 20;

struct LmHeadLoss {
    targets: Arc<Vec<u32>>,
    /// Keep the forward's rows ([`LossStash`]) for the backward.
    keep: bool,
    /// What the forward kept (a `LossStash<T>`), taken by the first backward.
    stash: Mutex<Option<Box<dyn Any + Send + Sync>>>,
}

/// The forward's `exp(logit − max)` rows (`[N, V]`, raw logits on ignored rows) and each
/// row's sum: the softmax, up to a per-row scale, without a second LM-head product.
struct LossStash<T> {
    rows: Vec<T>,
    sums: Vec<T>,
}

/// `ln Σ exp(row)`, leaving `exp(row − max)` in `row` (the softmax times its sum).
fn log_sum_exp_in_place<T: Real>(row: &mut [T]) -> (T, T) {
    let max = row.iter().fold(T::neg_infinity(), |m, &v| Float::max(m, v));
    row.iter_mut().for_each(|v| *v -= max);
    T::exp_in_place(row);
    let sum = row.iter().fold(T::zero(), |acc, &v| acc + v);
    (max + sum.ln(), sum)
}

impl LmHeadLoss {
    /// Logits of rows `r0..r0+rows` of `h` (`[N, d]`) under `w` (`[V, d]`) into `out`.
    fn block<T: Real>(
        h: &[T],
        w: &[T],
        (d, v): (usize, usize),
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

    /// (dL/dh `[N, d]`, dL/dw `[V, d]`) for the upstream gradient `g` (`[N]`): from the
    /// forward's stash when it kept one, else recomputing the logits block by block.
    fn grads<T: Real>(
        &self,
        h: &[T],
        w: &[T],
        g: &[T],
        (d, v): (usize, usize),
    ) -> (Vec<T>, Vec<T>) {
        let n = h.len() / d;
        let stash = self
            .stash
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .and_then(|b| b.downcast::<LossStash<T>>().ok())
            .filter(|s| s.rows.len() == n * v && s.sums.len() == n);
        if let Some(st) = stash {
            // dlogits = (softmax − onehot) · g in place of the kept rows, zero on ignored rows.
            let mut dl = st.rows;
            dl.par_chunks_mut(v).enumerate().for_each(|(i, row)| {
                let t = self.targets[i];
                if t == IGNORE_INDEX {
                    row.iter_mut().for_each(|x| *x = T::zero());
                    return;
                }
                let scale = g[i] / st.sums[i];
                row.iter_mut().for_each(|x| *x *= scale);
                row[t as usize] -= g[i];
            });
            // dh = dlogits · w ;  dw = dlogitsᵀ · h, each one product over all rows.
            let dh = gemm_fresh((n, d, v), &dl, (v, 1), w, (d, 1), true);
            let dw = gemm_fresh((v, d, n), &dl, (1, v), h, (d, 1), true);
            return (dh, dw);
        }
        let (mut dh, mut dw) = (vec![T::zero(); n * d], vec![T::zero(); v * d]);
        let mut logits = vec![T::zero(); LOSS_BLOCK.min(n) * v];
        for r0 in (0..n).step_by(LOSS_BLOCK) {
            let rows = LOSS_BLOCK.min(n - r0);
            Self::block(h, w, (d, v), r0, rows, &mut logits);
            // dlogits = (softmax − onehot) · g, zero on ignored rows.
            logits[..rows * v]
                .par_chunks_mut(v)
                .enumerate()
                .for_each(|(i, row)| {
                    let t = self.targets[r0 + i];
                    if t == IGNORE_INDEX {
                        row.iter_mut().for_each(|x| *x = T::zero());
                        return;
                    }
                    let gi = g[r0 + i];
                    // softmax · g = exp(x − max) / Σ · g
                    let scale = gi / log_sum_exp_in_place(row).1;
                    row.iter_mut().for_each(|x| *x *= scale);
                    row[t as usize] -= gi;
                });
            let dl = &logits[..rows * v];
            // dh[rows] = dlogits · w ;  dw += dlogitsᵀ · h[rows]
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
}

impl Kernel2 for LmHeadLoss {
    const NAME: &'static str = "thau-lm-head-loss";
    fn run<T: Real>(&self, h: In<T>, w: In<T>) -> Out<T> {
        let (n, d) = h.shape.dims2()?;
        let (v, d2) = w.shape.dims2()?;
        if d != d2 || self.targets.len() != n {
            bail!(
                "lm_head_cross_entropy: hidden {:?}, head {:?}, {} targets",
                h.shape,
                w.shape,
                self.targets.len()
            );
        }
        if let Some(&t) = self
            .targets
            .iter()
            .find(|&&t| t != IGNORE_INDEX && t as usize >= v)
        {
            bail!("cross_entropy: target {t} out of range for vocabulary {v}");
        }
        let mut out = vec![T::zero(); n];
        let mut sums = vec![T::one(); n];
        if n == 0 {
            return Ok((out, Shape::from(n)));
        }
        // Kept for the backward: every row at once, in one product.
        let (block, mut logits) = if self.keep {
            (n, gemm_fresh((n, v, d), h.x, (d, 1), w.x, (1, d), true))
        } else {
            (LOSS_BLOCK.min(n), vec![T::zero(); LOSS_BLOCK.min(n) * v])
        };
        for r0 in (0..n).step_by(block) {
            let rows = block.min(n - r0);
            if !self.keep {
                Self::block(h.x, w.x, (d, v), r0, rows, &mut logits);
            }
            out[r0..r0 + rows]
                .par_iter_mut()
                .zip(sums[r0..r0 + rows].par_iter_mut())
                .zip(logits[..rows * v].par_chunks_mut(v))
                .enumerate()
                .for_each(|(i, ((o, sum), row))| {
                    let t = self.targets[r0 + i];
                    if t != IGNORE_INDEX {
                        let target = row[t as usize];
                        let (lse, s) = log_sum_exp_in_place(row);
                        *o = lse - target;
                        *sum = s;
                    }
                });
        }
        if self.keep {
            if let Ok(mut s) = self.stash.lock() {
                *s = Some(Box::new(LossStash { rows: logits, sums }));
            }
        }
        Ok((out, Shape::from(n)))
    }
    fn backward(
        &self,
        h: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = (h.dim(1)?, w.dim(0)?);
        let (dh, dw) = match h.dtype() {
            DType::F32 => {
                let (a, b) = self.grads::<f32>(&host(h)?, &host(w)?, &host(g)?, dims);
                (
                    Tensor::from_vec(a, h.shape(), h.device())?,
                    Tensor::from_vec(b, w.shape(), w.device())?,
                )
            }
            DType::F64 => {
                let (a, b) = self.grads::<f64>(&host(h)?, &host(w)?, &host(g)?, dims);
                (
                    Tensor::from_vec(a, h.shape(), h.device())?,
                    Tensor::from_vec(b, w.shape(), w.device())?,
                )
            }
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
    lm_head_loss_kept(hidden, head, targets, LOSS_STASH_BYTES)
}

/// [`lm_head_cross_entropy`] keeping the forward's softmax rows for the backward when a
/// gradient is tracked and they fit in `stash_bytes`.
fn lm_head_loss_kept(
    hidden: &Tensor,
    head: &Tensor,
    targets: &Tensor,
    stash_bytes: usize,
) -> Result<Tensor> {
    let targets = Arc::new(targets.flatten_all()?.to_vec1::<u32>()?);
    let bytes = targets.len() * head.dim(0)? * hidden.dtype().size_in_bytes();
    let keep = (hidden.track_op() || head.track_op()) && bytes <= stash_bytes;
    let op = LmHeadLoss {
        targets,
        keep,
        stash: Mutex::new(None),
    };
    hidden.contiguous()?.apply_op2(&head.contiguous()?, Op(op))
}

/// Per-row negative log-likelihood of `targets` (`[N]`, u32) under `logits` (`[N, V]`),
/// in candle's composite ops; rows whose target is [`IGNORE_INDEX`] give 0. Returns `[N]`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let keep = targets.ne(IGNORE_INDEX)?;
    let safe = keep.where_cond(targets, &targets.zeros_like()?)?;
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    keep.where_cond(&nll, &nll.zeros_like()?)
}

// ---------------------------------------------------------------- linear

/// `x · wᵀ` with its backward, each product one call of the gemm kernel: the weight
/// gradient comes out in `w`'s own layout (candle's matmul of `w.t()` produces it
/// transposed and copies it back).
struct Linear;

impl Linear {
    /// (dL/dx `[rows, k]`, dL/dw `[n, k]`) for the upstream gradient `g` (`[rows, n]`).
    fn grads<T: Real>(x: &Tensor, w: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
        let (rows, k) = x.dims2()?;
        let n = w.dim(0)?;
        // The inputs are borrowed from their storage (no copy of the activations).
        let ((sx, lx), (sw, lw), (sg, lg)) = (
            x.storage_and_layout(),
            w.storage_and_layout(),
            g.storage_and_layout(),
        );
        let (Storage::Cpu(sx), Storage::Cpu(sw), Storage::Cpu(sg)) = (&*sx, &*sw, &*sg) else {
            bail!("linear: the fused kernels run on the CPU only");
        };
        let (xs, ws, gs) = (
            slice::<T>(sx, lx, "linear")?,
            slice::<T>(sw, lw, "linear")?,
            slice::<T>(sg, lg, "linear")?,
        );
        // dx = g · w ;  dw = gᵀ · x
        let dx = gemm_fresh((rows, k, n), gs, (n, 1), ws, (k, 1), true);
        let dw = gemm_fresh((n, k, rows), gs, (1, n), xs, (k, 1), true);
        Ok((
            Tensor::from_vec(dx, x.shape(), x.device())?,
            Tensor::from_vec(dw, w.shape(), w.device())?,
        ))
    }
}

impl Kernel2 for Linear {
    const NAME: &'static str = "thau-linear";
    fn run<T: Real>(&self, x: In<T>, w: In<T>) -> Out<T> {
        let (rows, k) = x.shape.dims2()?;
        let (n, k2) = w.shape.dims2()?;
        if k != k2 {
            bail!("linear: x is [{rows}, {k}] but w is [{n}, {k2}]");
        }
        let y = gemm_fresh((rows, n, k), x.x, (k, 1), w.x, (1, k), true);
        Ok((y, Shape::from((rows, n))))
    }
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = match x.dtype() {
            DType::F32 => Self::grads::<f32>(x, w, g)?,
            DType::F64 => Self::grads::<f64>(x, w, g)?,
            dt => bail!("linear: unsupported dtype {dt:?}"),
        };
        Ok((Some(dx), Some(dw)))
    }
}

/// `x · wᵀ` for `x` `[rows, k]` and `w` `[n, k]`: `[rows, n]`.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !fused(x) || x.dtype() != w.dtype() {
        return x.matmul(&w.t()?);
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, Op(Linear))
}

// ---------------------------------------------------------------- small-batch linear

/// Most rows for which [`small_linear`] beats the general matmul (which packs the whole
/// weight matrix first): a batched decoding step's rows, one per session.
pub const SMALL_LINEAR_ROWS: usize = 32;

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
    let mut s = [_mm512_setzero_ps(); 4];
    // SAFETY: every load reads 16 floats at offsets below `n`, inside both slices.
    unsafe {
        while i + 64 <= n {
            let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
            for (j, acc) in s.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(16 * j)),
                    _mm512_loadu_ps(pb.add(16 * j)),
                    *acc,
                );
            }
            i += 64;
        }
        while i + 16 <= n {
            s[0] = _mm512_fmadd_ps(
                _mm512_loadu_ps(a.as_ptr().add(i)),
                _mm512_loadu_ps(b.as_ptr().add(i)),
                s[0],
            );
            i += 16;
        }
    }
    let sum = _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(s[0], s[1]),
        _mm512_add_ps(s[2], s[3]),
    ));
    sum + dot_scalar(&a[i..n], &b[i..n])
}

/// `out[r][c] = x[r] · w[c]` for four input rows and four weight rows of equal length: each
/// load feeds four multiply-adds (a 4×4 register block), so the kernel is bound by
/// arithmetic rather than by loads, as one dot product at a time is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot4x4_avx512(x: [&[f32]; 4], w: [&[f32]; 4]) -> [[f32; 4]; 4] {
    use std::arch::x86_64::*;
    let k = x.iter().chain(&w).map(|s| s.len()).min().unwrap_or(0);
    let mut acc = [[_mm512_setzero_ps(); 4]; 4];
    let mut i = 0;
    // SAFETY: every load reads 16 floats at offsets below `k`, inside all eight slices.
    unsafe {
        while i + 16 <= k {
            let wv = [
                _mm512_loadu_ps(w[0].as_ptr().add(i)),
                _mm512_loadu_ps(w[1].as_ptr().add(i)),
                _mm512_loadu_ps(w[2].as_ptr().add(i)),
                _mm512_loadu_ps(w[3].as_ptr().add(i)),
            ];
            for (xr, accr) in x.iter().zip(acc.iter_mut()) {
                let xv = _mm512_loadu_ps(xr.as_ptr().add(i));
                for (a, wc) in accr.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, *wc, *a);
                }
            }
            i += 16;
        }
    }
    let mut out = [[0.0f32; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            out[r][c] = _mm512_reduce_add_ps(acc[r][c]) + dot_scalar(&x[r][i..k], &w[c][i..k]);
        }
    }
    out
}

/// Dot products of every row of `x` (`rows` rows of `k`) with each of the weight rows
/// `w` (`ys.len() / rows` rows of `k`), into `ys` `[outputs, rows]`.
fn dots(x: &[f32], rows: usize, k: usize, w: &[f32], ys: &mut [f32]) {
    let outputs = ys.len() / rows;
    let mut c0 = 0;
    #[cfg(target_arch = "x86_64")]
    if rows > 1 && std::arch::is_x86_feature_detected!("avx512f") {
        let xrow = |r: usize| &x[r.min(rows - 1) * k..(r.min(rows - 1) + 1) * k];
        while c0 + 4 <= outputs {
            let wrow = |c: usize| &w[(c0 + c) * k..(c0 + c + 1) * k];
            for r0 in (0..rows).step_by(4) {
                // A short last block repeats its last row; the copies are not stored.
                let xs = [xrow(r0), xrow(r0 + 1), xrow(r0 + 2), xrow(r0 + 3)];
                // SAFETY: the CPU supports AVX-512F (checked above).
                let block = unsafe { dot4x4_avx512(xs, [wrow(0), wrow(1), wrow(2), wrow(3)]) };
                for (r, out_r) in block.iter().enumerate().take(rows - r0) {
                    for (c, v) in out_r.iter().enumerate() {
                        ys[(c0 + c) * rows + r0 + r] = *v;
                    }
                }
            }
            c0 += 4;
        }
    }
    for c in c0..outputs {
        let wr = &w[c * k..(c + 1) * k];
        for (r, xr) in x.chunks(k).take(rows).enumerate() {
            ys[c * rows + r] = dot(xr, wr);
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { dot_avx512(a, b) };
    }
    dot_scalar(a, b)
}

/// `x · wᵀ` as one dot product per output (f32 only, no backward).
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
        // Outputs-major, `[n, rows]`: each weight row is read from memory once and used
        // for every input row while it sits in L1 (decoding is bound by reading weights).
        let mut out_t = vec![0.0f32; n * rows];
        out_t
            .par_chunks_mut(GEMV_CHUNK * rows)
            .enumerate()
            .for_each(|(c, o)| {
                let first = c * GEMV_CHUNK * k;
                dots(x, rows, k, &w[first..first + (o.len() / rows) * k], o);
            });
        if rows == 1 {
            return Ok((CpuStorage::F32(out_t), Shape::from((rows, n))));
        }
        let mut out = vec![0.0f32; rows * n]; // [rows, n]
        for (j, ys) in out_t.chunks(rows).enumerate() {
            for (i, y) in ys.iter().enumerate() {
                out[i * n + j] = *y;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }
}

/// `x · wᵀ` (`x` `[rows, k]`, `w` `[n, k]`) for a few rows of f32 on the CPU, without
/// gradient; `None` when the inputs are not of that kind (use the general matmul).
pub fn small_linear(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let small = x.rank() == 2 && x.dim(0)? <= SMALL_LINEAR_ROWS;
    let plain = !x.track_op() && !w.track_op();
    let f32_cpu = x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32;
    if !(small && plain && f32_cpu) {
        return Ok(None);
    }
    Ok(Some(
        x.contiguous()?
            .apply_op2_no_bwd(&w.contiguous()?, &SmallLinear)?,
    ))
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
        let reference = cross_entropy(&h.matmul(&w.t().unwrap()).unwrap(), &targets).unwrap();
        // Both backward paths: from the forward's kept rows, and recomputed block by block.
        for stash in [LOSS_STASH_BYTES, 0] {
            let ours = lm_head_loss_kept(&h, &w, &targets, stash).unwrap();
            assert!(max_diff(&ours, &reference) < 1e-12);
            check_grad(&h, &|h| lm_head_loss_kept(h, &w, &targets, stash));
            check_grad(&w, &|w| lm_head_loss_kept(&h, w, &targets, stash));
        }
        // A second backward over the same graph (the stash taken by the first) recomputes,
        // and gets the same gradients.
        let (hv, wv) = (Var::from_tensor(&h).unwrap(), Var::from_tensor(&w).unwrap());
        let loss = lm_head_cross_entropy(hv.as_tensor(), wv.as_tensor(), &targets)
            .unwrap()
            .sum_all()
            .unwrap();
        let (first, second) = (loss.backward().unwrap(), loss.backward().unwrap());
        for v in [&hv, &wv] {
            let (a, b) = (
                first.get(v.as_tensor()).unwrap(),
                second.get(v.as_tensor()).unwrap(),
            );
            assert!(max_diff(a, b) < 1e-12);
        }
    }

    #[test]
    fn vectorised_exp_matches_libm_with_tails_and_extremes() {
        for len in [0usize, 1, 15, 16, 17, 100] {
            let xs: Vec<f32> = (0..len)
                .map(|i| (i as f32 * 0.731).sin() * 30.0 - 5.0)
                .collect();
            let mut ours = xs.clone();
            f32::exp_in_place(&mut ours);
            for (x, y) in xs.iter().zip(&ours) {
                let e = x.exp();
                assert!(
                    (y - e).abs() <= 1e-6 * e.abs() + 1e-37,
                    "exp({x}) = {y}, libm {e}"
                );
            }
        }
        let mut edge = [f32::NEG_INFINITY, -200.0, 0.0, 88.0, 100.0];
        f32::exp_in_place(&mut edge);
        assert_eq!(edge[0], 0.0);
        assert!(edge[1] < 1e-40 && edge[2] == 1.0 && (edge[3] / 88f32.exp() - 1.0).abs() < 1e-6);
        assert!(edge[4].is_infinite());
    }

    #[test]
    fn linear_matches_matmul_and_finite_differences() {
        // f64: exact enough for finite differences of both inputs.
        let w = det(&[5, 7], 0.4);
        check_grad(&det(&[6, 7], 0.2), &|x| linear(x, &w));
        let x = det(&[6, 7], 0.2);
        check_grad(&w, &|w| linear(&x, w));
        // f32: values and both gradients against candle's matmul.
        let x = Var::from_tensor(&det(&[96, 200], 0.3).to_dtype(DType::F32).unwrap()).unwrap();
        let w = Var::from_tensor(&det(&[80, 200], 1.1).to_dtype(DType::F32).unwrap()).unwrap();
        let g = det(&[96, 80], 2.2).to_dtype(DType::F32).unwrap();
        let ours = linear(x.as_tensor(), w.as_tensor()).unwrap();
        let reference = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-5 * 200.0 * 1.4 * 1.4);
        let grads = |y: &Tensor| (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (grads(&ours), grads(&reference));
        for v in [&x, &w] {
            let (a, b) = (
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            assert_eq!(a.dims(), v.dims());
            assert!(max_diff(a, b) < 1e-5 * 96.0 * 1.4 * 1.4, "{:?}", v.dims());
        }
    }

    #[test]
    fn small_linear_matches_matmul() {
        // 4×4 blocks with short row blocks, output chunks with a tail, k with a tail.
        let w = det(&[130, 70], 1.1).to_dtype(DType::F32).unwrap();
        for rows in [1, 3, 5, SMALL_LINEAR_ROWS] {
            let x = det(&[rows, 70], 0.3).to_dtype(DType::F32).unwrap();
            let ours = small_linear(&x, &w).unwrap().expect("small f32 input");
            let reference = x.matmul(&w.t().unwrap()).unwrap();
            assert!(max_diff(&ours, &reference) < 1e-4, "{rows} rows");
        }
        let x = det(&[3, 70], 0.3).to_dtype(DType::F32).unwrap();
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
