//! Differentiable fused CPU operations for the THAU model.
//!
//! candle's fast `rms_norm`, `softmax_last_dim` and `rope_i` record no gradient (they are
//! applied with `apply_op*_no_bwd`), so a model built on them trains silently wrong. The
//! ops here are candle custom ops with hand-written backward passes, one file per family:
//!
//! - [`rms_norm`] (`norm.rs`): `x * rsqrt(mean(x²) + eps) * alpha` over the last
//!   dimension;
//! - [`rope_i`] (`rope.rs`): rotary embedding on consecutive pairs `(x[2i], x[2i+1])`, the
//!   layout llama.cpp's `llama` architecture uses (no Q/K permutation needed at GGUF
//!   export);
//! - [`causal_softmax`] (`softmax.rs`): `softmax(scale * scores)` with the causal mask
//!   applied inside the kernel (no mask tensor is materialised), for a query block that
//!   starts `offset` positions into the keys;
//! - [`causal_attention`] (`attention.rs`): `softmax(scale · q kᵀ) v` with the causal
//!   mask, one head per task with the scores kept in a per-task buffer (flash-style: no
//!   `[B, H, T, T]` tensor is stored for the backward, which recomputes the probabilities);
//! - [`swiglu`] (`swiglu.rs`): `silu(gate) * up` in one pass (and one pass back), instead
//!   of candle's chain of element-wise ops over the widest activations of the model;
//! - [`lm_head_cross_entropy`] (`loss.rs`): the LM head matmul fused with the
//!   cross-entropy. When a gradient is tracked and the `[tokens, vocab]` softmax fits a
//!   budget (64 MB at age 0 against 256 MiB), the forward keeps it for the backward, which
//!   then needs no second product; otherwise it works a block of rows at a time and the
//!   backward recomputes;
//! - [`linear`] (`linear.rs`): `x · wᵀ` whose backward is two calls of the gemm kernel,
//!   the weight gradient produced in the weight's own layout;
//! - [`small_linear`] (`linear.rs`): `x · wᵀ` for a handful of rows (decoding), one
//!   AVX-512 dot product per output, parallel over outputs (inference only: no backward).
//!
//! [`cross_entropy`] is the plain composite form, the reference the fused loss is checked
//! against. Kernels are written once for f32 and f64 (`kernel.rs`: `Kernel1`, `Kernel2`,
//! `Kernel3`; f64 makes finite-difference checks exact enough); other devices and dtypes
//! fall back to candle's differentiable composite ops. `gemm.rs` holds the matrix products
//! the kernels share, `simd.rs` the AVX-512 building blocks (also used by the packed
//! decoding path, [`super::decode`]). Every op is checked against its composite form and
//! by finite differences in its file's tests.

mod attention;
mod gemm;
mod kernel;
mod linear;
mod loss;
mod norm;
mod rope;
mod simd;
mod softmax;
mod swiglu;

pub use attention::causal_attention;
pub use linear::{linear, small_linear, SMALL_LINEAR_ROWS};
pub use loss::{cross_entropy, lm_head_cross_entropy, IGNORE_INDEX};
pub use norm::rms_norm;
pub use rope::rope_i;
#[cfg(target_arch = "x86_64")]
pub(crate) use simd::{exp_avx512, sum_lanes16};
pub use softmax::causal_softmax;
pub use swiglu::swiglu;
