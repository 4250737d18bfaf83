//! Products with a weight matrix: [`linear`], `x · wᵀ` whose backward is two calls of the
//! gemm kernel (the weight gradient produced in the weight's own layout), and
//! [`small_linear`], `x · wᵀ` for a handful of rows (decoding), one AVX-512 dot product
//! per output, parallel over outputs (inference only: no backward).

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::gemm::gemm_fresh;
use super::kernel::{fused, slice, In, Kernel2, Op, Out, Real};
use super::simd::dot;
#[cfg(target_arch = "x86_64")]
use super::simd::dot4x4_avx512;

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

/// Most rows for which [`small_linear`] beats the general matmul (which packs the whole
/// weight matrix first): a batched decoding step's rows, one per session.
pub const SMALL_LINEAR_ROWS: usize = 32;

/// Outputs per parallel work item of [`small_linear`].
const GEMV_CHUNK: usize = 64;

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
    use crate::testing::{check_grad, det, max_diff};
    use candle_core::Var;

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
}
