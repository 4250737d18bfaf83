//! [`causal_softmax`]: `softmax(scale * scores)` with the causal mask applied inside the
//! kernel (no mask tensor is materialised), for a query block that starts `offset`
//! positions into the keys. [`masked_softmax_row`] is shared with the fused attention.

use candle_core::{Result, Tensor, D};
use num_traits::Float;
use rayon::prelude::*;

use super::kernel::{fused, last_dim, rows_mut, In, Kernel1, Kernel2, Op, Out, Real};

struct CausalSoftmax {
    scale: f64,
    offset: usize,
}
struct SoftmaxBwd {
    scale: f64,
}

/// Softmax of `scale · row` over its first `limit` entries; the rest are set to zero.
pub(super) fn masked_softmax_row<T: Real>(row: &mut [T], limit: usize, scale: T) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_grad, det, max_diff};
    use candle_core::{DType, Device};

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
}
