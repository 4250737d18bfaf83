//! [`swiglu`]: `silu(gate) * up` in one pass (and one pass back), instead of candle's
//! chain of element-wise ops over the widest activations of the model.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::kernel::{fused, In, Kernel2, Kernel3, Op, Out, Real};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_grad, det, max_diff};

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
}
