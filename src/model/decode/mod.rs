//! Decoding for serving: the KV cache, the packed host path that runs a batched decoding
//! step without candle's per-op overhead, and the engine that batches every session's
//! next token into that step.
//!
//! - [`kv`]: [`KvCache`](kv::KvCache), the keys and values of the positions seen so far
//!   (the tensor path of [`Thau`](super::Thau) extends it too);
//! - [`packed`]: [`PackedLinear`](packed::PackedLinear), weights repacked into panels for
//!   a register-blocked AVX-512 product, and `DecodeWeights`, a whole model so packed
//!   with the pass over it ([`Thau::forward_seqs`](super::Thau::forward_seqs) on an
//!   inference model);
//! - [`host`]: the rest of a decoder block on host values (RMSNorm, SwiGLU, RoPE, the f16
//!   cache writes, one query's attention);
//! - [`amx`]: the same products through Intel AMX tiles where the CPU has them;
//! - [`batch`]: the [`Engine`](batch::Engine), one decode thread that admits requests and
//!   advances every generation by one token per step, in one pass per model.

pub mod amx;
pub mod batch;
pub mod host;
pub mod kv;
pub mod packed;

/// An output buffer shared by the parallel tasks of one product, each of which writes
/// its own disjoint part of it (the AMX and the packed f32 kernels).
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the tasks write disjoint parts (each user says which), and the buffer outlives
// them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `offset` must be inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}
