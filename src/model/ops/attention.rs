//! [`causal_attention`]: `softmax(scale · q kᵀ) v` with the causal mask, one head per
//! task with the scores kept in a per-task buffer (flash-style: no `[B, H, T, T]` tensor
//! is stored for the backward, which recomputes the probabilities).

use candle_core::{bail, DType, Result, Tensor};
use rayon::prelude::*;

use super::gemm::gemm_into;
use super::kernel::{fused, host, In, Kernel3, Op, Out, Real};
use super::softmax::{causal_softmax, masked_softmax_row};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_grad, det, max_diff};

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
}
