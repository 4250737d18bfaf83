//! [`rope_i`]: rotary embedding on consecutive pairs `(x[2i], x[2i+1])`, the layout
//! llama.cpp's `llama` architecture uses (no Q/K permutation needed at GGUF export).

use candle_core::{bail, Result, Tensor};

use super::kernel::{fused, rows_mut, In, Kernel3, Op, Out, Real};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_grad, det, max_diff};

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
}
