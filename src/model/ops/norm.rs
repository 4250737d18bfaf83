//! [`rms_norm`]: `x * rsqrt(mean(x²) + eps) * alpha` over the last dimension, with its
//! backward as two kernels (the gradient of `x`, and of the gain `alpha` summed over rows).

use candle_core::{Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{fused, last_dim, rows_mut, In, Kernel2, Kernel3, Op, Out, Real};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_grad, det, max_diff};

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
}
