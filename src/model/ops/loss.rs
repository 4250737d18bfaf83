//! The loss: [`lm_head_cross_entropy`], the LM head matmul fused with the cross-entropy,
//! and [`cross_entropy`], the plain composite form it is checked against.
//!
//! When a gradient is tracked and the `[tokens, vocab]` softmax fits a budget (64 MB at
//! age 0 against 256 MiB), the fused forward keeps it for the backward, which then needs
//! no second product; otherwise it works a block of rows at a time and the backward
//! recomputes.

use std::any::Any;
use std::sync::{Arc, Mutex};

use candle_core::{bail, DType, Result, Shape, Tensor, D};
use num_traits::Float;
use rayon::prelude::*;

use super::gemm::{gemm_fresh, gemm_into};
use super::kernel::{fused, host, In, Kernel2, Op, Out, Real};

/// Target value meaning "no loss at this position" (padding, prompt tokens).
pub const IGNORE_INDEX: u32 = u32::MAX;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_grad, det, max_diff};
    use candle_core::{Device, Var};

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
