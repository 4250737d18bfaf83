//! Inference-only kernels for the packed decoding path ([`Thau::forward_seqs`]):
//! [`PackedLinear`] holds a weight matrix `[n, k]` repacked once into panels of [`PANEL`]
//! outputs stored k-major, and computes `x · wᵀ` for a few to a few hundred rows (one per
//! session in a decoding step, one per token in a prompt) with a register-blocked AVX-512
//! kernel; [`attend_one`], [`rotate_pairs`], [`rms_norm_rows`] and [`swiglu_rows`] are the
//! rest of a decoder block on host values.
//!
//! Why a second layout: the row-by-row dot products of [`small_linear`](super::ops::small_linear)
//! need a horizontal reduction per output and read the weights in rows, so a 32-row step
//! stays far from the CPU's multiply-add rate. Here a block of up to `ROW_BLOCK` rows
//! broadcasts one input value at a time against 32 consecutive outputs held in two
//! registers (`ROW_BLOCK` × 2 accumulators, no reductions), the gemm "microkernel"
//! shape, and each panel is read once per row block while it sits in the L2 cache.
//! The packed copy costs as much memory as the weights it mirrors; the inference model
//! builds it on its first packed pass and never for trainable weights.
//!
//! [`Thau::forward_seqs`]: super::transformer::Thau::forward_seqs

use std::sync::{Arc, OnceLock};

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::f16;
use rayon::prelude::*;

use super::amx::{self, AmxLinear};
#[cfg(target_arch = "x86_64")]
use super::ops::exp_avx512;

/// Outputs per panel: two AVX-512 registers of f32.
pub const PANEL: usize = 32;
/// Input rows computed together against one panel (8 × 2 accumulators out of the 32
/// vector registers).
const ROW_BLOCK: usize = 8;

/// Rows from which a product goes through AMX when the CPU has it ([`amx`]): with
/// fewer, reading the weights costs more than the multiply-adds, and the f32 kernels
/// keep single-session decoding exactly f32.
pub const AMX_MIN_ROWS: usize = 4;

/// A weight matrix `[n, k]` as panels: panel `p` holds `w[p·32 + j][i]` at `[p][i][j]`
/// (zero-padded past `n`); and, built on the first product of [`AMX_MIN_ROWS`] rows or
/// more on a CPU with AMX, the same matrix as bf16x3 tiles.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    data: Arc<Vec<f32>>,
    n: usize,
    k: usize,
    tiles: Arc<OnceLock<AmxLinear>>,
}

impl PackedLinear {
    /// Packs the rows of one or more `[n_i, k]` matrices as one `[Σ n_i, k]` matrix (e.g.
    /// the query, key and value projections, computed in one pass).
    pub fn pack(ws: &[&Tensor]) -> Result<PackedLinear> {
        let mut rows: Vec<f32> = Vec::new();
        let mut k = None;
        let mut n = 0;
        for w in ws {
            let (wn, wk) = w.dims2()?;
            if *k.get_or_insert(wk) != wk {
                bail!(
                    "packed linear: matrices of {} and {wk} columns",
                    k.unwrap_or(0)
                );
            }
            rows.extend(w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
            n += wn;
        }
        let k = k.unwrap_or(0);
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0.0f32; panels * k * PANEL];
        for (c, row) in rows.chunks(k.max(1)).enumerate().take(n) {
            let (p, j) = (c / PANEL, c % PANEL);
            for (i, v) in row.iter().enumerate() {
                data[(p * k + i) * PANEL + j] = *v;
            }
        }
        Ok(PackedLinear {
            data: Arc::new(data),
            n,
            k,
            tiles: Arc::default(),
        })
    }

    /// Builds the AMX tiles now if this CPU has AMX (else they would be built by the
    /// first product of [`AMX_MIN_ROWS`] rows or more).
    pub fn prepare_tiles(&self) {
        if amx::available() {
            self.tiles();
        }
    }

    /// The AMX tiles, built on first use.
    fn tiles(&self) -> &AmxLinear {
        let (n, k, data) = (self.n, self.k, &self.data);
        self.tiles.get_or_init(|| {
            AmxLinear::pack(n, k, |j, i| data[((j / PANEL) * k + i) * PANEL + j % PANEL])
        })
    }

    /// Outputs.
    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// `x · wᵀ` for `x` `[rows, k]` (f32, CPU): `[rows, n]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }

    /// `x · wᵀ` on host values: `x` is `rows` rows of `k`, the result `rows` rows of `n`.
    pub fn matmul(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let (n, k) = (self.n, self.k);
        if x.len() != rows * k {
            bail!(
                "packed linear: {} values are not {rows} rows of {k}",
                x.len()
            );
        }
        let mut out = vec![0.0f32; rows * n];
        if rows >= AMX_MIN_ROWS && amx::available() {
            self.tiles().matmul(x, rows, &mut out);
            return Ok(out);
        }
        let (panels, blocks) = (n.div_ceil(PANEL), rows.div_ceil(ROW_BLOCK));
        let out_ptr = SharedOut(out.as_mut_ptr());
        // One task per (panel, row block), panel-major so that neighbouring tasks (which
        // rayon tends to give the same thread) reuse a panel from cache; fine-grained so
        // that a 384-output matrix still splits evenly over the threads.
        (0..panels * blocks).into_par_iter().for_each(|task| {
            let (p, b) = (task / blocks, task % blocks);
            let panel = &self.data[p * k * PANEL..(p + 1) * k * PANEL];
            let cols = PANEL.min(n - p * PANEL);
            let r0 = b * ROW_BLOCK;
            let r = ROW_BLOCK.min(rows - r0);
            // SAFETY: this task alone writes columns `p·32 .. p·32 + cols` of rows
            // `r0 .. r0 + r`, which lie inside `out` ([rows, n]).
            unsafe {
                let o = out_ptr.at(r0 * n + p * PANEL);
                block(&x[r0 * k..(r0 + r) * k], r, k, panel, o, n, cols);
            }
        });
        Ok(out)
    }
}

impl CustomOp1 for PackedLinear {
    fn name(&self) -> &'static str {
        "thau-packed-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((a, b))) => &d[a..b],
            _ => bail!("packed linear: x must be contiguous f32"),
        };
        let (rows, k) = l.shape().dims2()?;
        if k != self.k {
            bail!(
                "packed linear: x is [{rows}, {k}] but w has {} columns",
                self.k
            );
        }
        let out = self.matmul(x, rows)?;
        Ok((CpuStorage::F32(out), Shape::from((rows, self.n))))
    }
}

/// The output buffer, shared by the tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the tasks write disjoint columns (see `cpu_fwd`), and the buffer outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `offset` must be inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

/// `out[r][j] = Σ_i x[r][i] · panel[i][j]` for `r < rows` (≤ [`ROW_BLOCK`]), `j < cols`.
///
/// # Safety
/// `out` must be valid for writes at `r · ostride + j` for those `r` and `j`.
unsafe fn block(
    x: &[f32],
    rows: usize,
    k: usize,
    panel: &[f32],
    out: *mut f32,
    ostride: usize,
    cols: usize,
) {
    debug_assert!(x.len() >= rows * k && panel.len() >= k * PANEL);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // Unrolled per row count: the accumulators must be a fixed-size register array.
        macro_rules! rows {
            ($($r:literal)*) => {
                match rows {
                    $($r => return block_avx512::<$r>(x, k, panel, out, ostride, cols),)*
                    _ => {}
                }
            };
        }
        if rows == 1 {
            return row_avx512(x, k, panel, out, cols);
        }
        rows!(2 3 4 5 6 7 8);
    }
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        for j in 0..cols {
            let mut s = 0.0f32;
            for (i, xv) in xr.iter().enumerate() {
                s += xv * panel[i * PANEL + j];
            }
            *out.add(r * ostride + j) = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512<const R: usize>(
    x: &[f32],
    k: usize,
    panel: &[f32],
    out: *mut f32,
    ostride: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (xp, wp) = (x.as_ptr(), panel.as_ptr());
    for i in 0..k {
        let w0 = _mm512_loadu_ps(wp.add(i * PANEL));
        let w1 = _mm512_loadu_ps(wp.add(i * PANEL + 16));
        for (r, a) in acc.iter_mut().enumerate() {
            let xb = _mm512_set1_ps(*xp.add(r * k + i));
            a[0] = _mm512_fmadd_ps(xb, w0, a[0]);
            a[1] = _mm512_fmadd_ps(xb, w1, a[1]);
        }
    }
    // Masks for a last panel narrower than 32 outputs.
    let mask = |lo: usize| -> __mmask16 {
        let c = cols.saturating_sub(lo).min(16);
        ((1u32 << c) - 1) as __mmask16
    };
    let (m0, m1) = (mask(0), mask(16));
    for (r, a) in acc.iter().enumerate() {
        let o = out.add(r * ostride);
        _mm512_mask_storeu_ps(o, m0, a[0]);
        _mm512_mask_storeu_ps(o.add(16), m1, a[1]);
    }
}

/// RMSNorm of each `d`-wide row of `x` with gain `alpha` (as `ops::rms_norm`).
pub fn rms_norm_rows(x: &[f32], alpha: &[f32], eps: f64) -> Vec<f32> {
    let d = alpha.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let r = 1.0 / (ms + eps as f32).sqrt();
        out.extend(row.iter().zip(alpha).map(|(v, a)| v * r * a));
    }
    out
}

/// `silu(gate) · up` for rows laid out `[gate (f) | up (f)]`: `rows` rows of `f`.
pub fn swiglu_rows(gate_up: &[f32], f: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; gate_up.len() / 2];
    for (row, o) in gate_up.chunks_exact(2 * f).zip(out.chunks_exact_mut(f)) {
        let (g, u) = row.split_at(f);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F; `g`, `u` and `o` hold `f` values.
            done = unsafe { swiglu_avx512(g, u, o) };
        }
        for ((o, g), u) in o.iter_mut().zip(g).zip(u).skip(done) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    }
    out
}

/// The whole 16-value chunks of one [`swiglu_rows`] row; returns how many it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn swiglu_avx512(g: &[f32], u: &[f32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let whole = g.len() / 16 * 16;
    let one = _mm512_set1_ps(1.0);
    for i in (0..whole).step_by(16) {
        let gv = _mm512_loadu_ps(g.as_ptr().add(i));
        let e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), gv)); // e^-g (inf → silu 0)
        let silu = _mm512_div_ps(gv, _mm512_add_ps(one, e));
        let uv = _mm512_loadu_ps(u.as_ptr().add(i));
        _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(silu, uv));
    }
    whole
}

/// Rotates consecutive pairs `(x[2i], x[2i+1])` of one head by the angles whose cosines
/// and sines are `cos[i]`, `sin[i]` (RoPE for one position, as `ops::rope_i`).
pub fn rotate_pairs(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (pair, (c, s)) in x.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0 * c - x1 * s;
        pair[1] = x0 * s + x1 * c;
    }
}

/// The type the packed path caches keys and values in. f16, as llama.cpp does by
/// default: attention reads every cached position of every session at every step, and
/// in a 32-session step those reads outweigh the weights; f16 halves them (and the
/// cache's memory) for a relative error of about 5e-4 on each key and value.
pub const KV_DTYPE: candle_core::DType = candle_core::DType::F16;

/// `src` rounded to f16 (nearest even), 16 values at a time where the CPU has AVX-512.
pub fn to_f16(src: &[f32]) -> Vec<f16> {
    let mut out = vec![f16::ZERO; src.len()];
    write_f16(src, &mut out);
    out
}

/// [`to_f16`] into `out` (as many values as both hold).
pub fn write_f16(src: &[f32], out: &mut [f16]) {
    let n = src.len().min(out.len());
    let (src, out) = (&src[..n], &mut out[..n]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F; both slices hold `n` values.
        done = unsafe { to_f16_avx512(src, out) };
    }
    for (o, v) in out[done..].iter_mut().zip(&src[done..]) {
        *o = f16::from_f32(*v);
    }
}

/// Appends keys or values to a packed-path cache buffer in place: the `m` rows of
/// `rows` (each `stride` values, the heads' `h × hd` values at `offset`) become
/// positions `at .. at + m` of the f16 buffer `[1, h, capacity, hd]`.
///
/// In place, because building a tensor of the new rows and copying it in with
/// `slice_set` cost two allocations, two conversions and two copies per sequence and
/// layer, most of a 32-session step's bookkeeping.
pub struct AppendRows<'a> {
    pub rows: &'a [f32],
    pub stride: usize,
    pub offset: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub at: usize,
}

impl candle_core::InplaceOp1 for AppendRows<'_> {
    fn name(&self) -> &'static str {
        "thau-append-rows"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let (h, hd) = (self.heads, self.head_dim);
        let (b, lh, cap, lhd) = l.shape().dims4()?;
        let m = self.rows.len() / self.stride.max(1);
        if b != 1 || lh != h || lhd != hd || self.at + m > cap || self.offset + h * hd > self.stride
        {
            bail!(
                "append rows: {m} rows of {h}×{hd} at {} into [{b}, {lh}, {cap}, {lhd}]",
                self.at
            );
        }
        let buf = match (s, l.contiguous_offsets()) {
            (CpuStorage::F16(d), Some((a, z))) => &mut d[a..z],
            _ => bail!("append rows: the cache must be contiguous f16"),
        };
        for (j, row) in self.rows.chunks_exact(self.stride).enumerate() {
            for head in 0..h {
                let src = &row[self.offset + head * hd..][..hd];
                let dst = (head * cap + self.at + j) * hd;
                write_f16(src, &mut buf[dst..dst + hd]);
            }
        }
        Ok(())
    }
}

/// The whole 16-value chunks of [`to_f16`]; returns how many values it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn to_f16_avx512(src: &[f32], out: &mut [f16]) -> usize {
    use std::arch::x86_64::*;
    let whole = src.len() / 16 * 16;
    for i in (0..whole).step_by(16) {
        let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_loadu_ps(src.as_ptr().add(i)),
        );
        // f16 is a transparent u16.
        _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), h);
    }
    whole
}

/// `softmax(scale · q kᵀ) v` for one query `q` `[hd]` over the `len` cached keys and
/// values `k`, `v` `[len, hd]` (f16, see [`KV_DTYPE`]), into `out` `[hd]` (the newest
/// position may see them all).
pub fn attend_one(q: &[f32], k: &[f16], v: &[f16], scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY (all three): the CPU supports AVX-512F; the head width matches the
        // chunk count (16 floats per chunk).
        match q.len() {
            64 => return unsafe { attend_one_avx512::<4>(q, k, v, scale, out) },
            128 => return unsafe { attend_one_avx512::<8>(q, k, v, scale, out) },
            32 => return unsafe { attend_one_avx512::<2>(q, k, v, scale, out) },
            _ => {}
        }
    }
    let hd = q.len();
    let mut weights: Vec<f32> = k
        .chunks_exact(hd)
        .map(|kt| q.iter().zip(kt).map(|(a, b)| a * b.to_f32()).sum::<f32>() * scale)
        .collect();
    let max = weights.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut total = 0.0;
    for w in &mut weights {
        *w = (*w - max).exp();
        total += *w;
    }
    out.fill(0.0);
    for (w, vt) in weights.iter().zip(v.chunks_exact(hd)) {
        let w = w / total;
        for (o, x) in out.iter_mut().zip(vt) {
            *o += w * x.to_f32();
        }
    }
}

/// [`attend_one`] for a head of `C` × 16 floats: the output stays in `C` registers and
/// the exponentials are computed 16 at a time ([`exp_avx512`]).
///
/// The scores are computed 16 positions at a time: one register of partial products
/// per position, then one transposing reduction ([`sum_lanes16`]) for all 16 instead of a
/// horizontal sum per position. The weighted sum of values alternates two sets of
/// accumulators, so that consecutive positions do not wait on each other's
/// multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_one_avx512<const C: usize>(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    scale: f32,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let hd = C * 16;
    let len = k.len() / hd;
    // f16 is a transparent u16: 16 of them are one 256-bit load.
    let (qp, kp, vp) = (
        q.as_ptr(),
        k.as_ptr().cast::<u16>(),
        v.as_ptr().cast::<u16>(),
    );
    let load = |p: *const u16| _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
    let qv: [__m512; C] = std::array::from_fn(|c| _mm512_loadu_ps(qp.add(16 * c)));
    // Scores, padded to a multiple of 16 with -inf (weight 0).
    let padded = len.div_ceil(16) * 16;
    let mut scores = vec![f32::NEG_INFINITY; padded];
    let scalev = _mm512_set1_ps(scale);
    for t0 in (0..len).step_by(16) {
        let n = 16.min(len - t0);
        let mut part = [_mm512_setzero_ps(); 16];
        for (j, p) in part.iter_mut().enumerate().take(n) {
            let kt = kp.add((t0 + j) * hd);
            // The keys a few positions on, and this position's values, which the weighted
            // sum reads after the scores (from L1 by then): without this the two short
            // streams wait on the memory more than on the arithmetic.
            // (`wrapping_add`: past the last key it is only a hint, never read.)
            let (ahead, vt) = (kt.wrapping_add(8 * hd), vp.add((t0 + j) * hd));
            for line in (0..hd).step_by(32) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
                _mm_prefetch::<_MM_HINT_T0>(vt.add(line).cast());
            }
            let mut acc = _mm512_mul_ps(qv[0], load(kt));
            for (c, qc) in qv.iter().enumerate().skip(1) {
                acc = _mm512_fmadd_ps(*qc, load(kt.add(16 * c)), acc);
            }
            *p = acc;
        }
        let s = _mm512_mul_ps(sum_lanes16(&part), scalev);
        let mask = ((1u32 << n) - 1) as __mmask16;
        _mm512_mask_storeu_ps(scores.as_mut_ptr().add(t0), mask, s);
    }
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let (maxv, mut sum) = (_mm512_set1_ps(max), _mm512_setzero_ps());
    for chunk in scores.chunks_exact_mut(16) {
        let e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(chunk.as_ptr()), maxv));
        sum = _mm512_add_ps(sum, e);
        _mm512_storeu_ps(chunk.as_mut_ptr(), e);
    }
    let inv = 1.0 / _mm512_reduce_add_ps(sum);
    let mut acc = [[_mm512_setzero_ps(); C]; 2];
    let mut t = 0;
    while t + 2 <= len {
        for (u, a) in acc.iter_mut().enumerate() {
            let (w, vt) = (_mm512_set1_ps(scores[t + u]), vp.add((t + u) * hd));
            for (c, x) in a.iter_mut().enumerate() {
                *x = _mm512_fmadd_ps(w, load(vt.add(16 * c)), *x);
            }
        }
        t += 2;
    }
    if t < len {
        let (w, vt) = (_mm512_set1_ps(scores[t]), vp.add(t * hd));
        for (c, x) in acc[0].iter_mut().enumerate() {
            *x = _mm512_fmadd_ps(w, load(vt.add(16 * c)), *x);
        }
    }
    let invv = _mm512_set1_ps(inv);
    for (c, (a0, a1)) in acc[0].iter().zip(&acc[1]).enumerate() {
        let a = _mm512_add_ps(*a0, *a1);
        _mm512_storeu_ps(out.as_mut_ptr().add(16 * c), _mm512_mul_ps(a, invv));
    }
}

/// Lane `p` of the result is the sum of the 16 lanes of `v[p]`: a transpose and add in
/// four levels (45 shuffles and adds for 16 sums, against about 8 per horizontal sum).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_lanes16(v: &[std::arch::x86_64::__m512; 16]) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // Within each 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] for the pair (a, b).
    let t: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
    });
    // Within each 128-bit lane: the lane's sum of each of 4 consecutive vectors.
    let u: [__m512; 4] = std::array::from_fn(|i| {
        let (c, d) = (t[2 * i], t[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(c, d),
            _mm512_shuffle_ps::<0b11_10_11_10>(c, d),
        )
    });
    // Sum the 128-bit lanes pairwise, then again: lane group g holds vectors 4g..4g+4.
    let pair = |e: __m512, f: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(e, f),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(e, f),
        )
    };
    pair(pair(u[0], u[1]), pair(u[2], u[3]))
}

/// [`block_avx512`] for a single row: two positions per iteration into separate
/// accumulators, so that four multiply-adds are in flight instead of two.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_avx512(x: &[f32], k: usize, panel: &[f32], out: *mut f32, cols: usize) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 4];
    let (xp, wp) = (x.as_ptr(), panel.as_ptr());
    let mut i = 0;
    while i + 2 <= k {
        let (x0, x1) = (_mm512_set1_ps(*xp.add(i)), _mm512_set1_ps(*xp.add(i + 1)));
        let w = wp.add(i * PANEL);
        acc[0] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(w), acc[0]);
        acc[1] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(w.add(16)), acc[1]);
        acc[2] = _mm512_fmadd_ps(x1, _mm512_loadu_ps(w.add(32)), acc[2]);
        acc[3] = _mm512_fmadd_ps(x1, _mm512_loadu_ps(w.add(48)), acc[3]);
        i += 2;
    }
    if i < k {
        let x0 = _mm512_set1_ps(*xp.add(i));
        let w = wp.add(i * PANEL);
        acc[0] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(w), acc[0]);
        acc[1] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(w.add(16)), acc[1]);
    }
    let (lo, hi) = (_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]));
    let mask = |from: usize| -> __mmask16 {
        let c = cols.saturating_sub(from).min(16);
        ((1u32 << c) - 1) as __mmask16
    };
    _mm512_mask_storeu_ps(out, mask(0), lo);
    _mm512_mask_storeu_ps(out.add(16), mask(16), hi);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn det(shape: (usize, usize), salt: f32) -> Tensor {
        let n = shape.0 * shape.1;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.7361 + salt).sin() * 1.3) + 0.05 * (i as f32 * 0.13).cos())
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn packed_linear_matches_the_matmul_for_every_row_count_and_a_ragged_last_panel() {
        // 70 + 33 outputs: three panels, the last one 7 wide; k = 45 (no multiple of 16).
        let (a, b) = (det((70, 45), 0.4), det((33, 45), 1.9));
        let packed = PackedLinear::pack(&[&a, &b]).unwrap();
        assert_eq!(packed.out_dim(), 103);
        let w = Tensor::cat(&[&a, &b], 0).unwrap();
        for rows in [1, 2, 7, 8, 9, 17, 32] {
            let x = det((rows, 45), rows as f32);
            let ours = packed.forward(&x).unwrap();
            let reference = x.matmul(&w.t().unwrap()).unwrap();
            let diff = (ours - reference)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            // Through AMX, bf16x3 keeps about 1e-5 of Σ|x·w| (≤ 45 · 1.35²).
            let tol = if rows >= AMX_MIN_ROWS && amx::available() {
                1e-5 * 45.0 * 1.35 * 1.35
            } else {
                1e-4
            };
            assert!(diff < tol, "{rows} rows: {diff}");
        }
        let bad = det((2, 44), 0.0);
        assert!(packed.forward(&bad).is_err(), "wrong width is an error");
    }

    #[test]
    fn swiglu_rows_matches_the_formula_for_large_and_ragged_inputs() {
        let f = 37; // two whole chunks of 16 and a tail
        let gate_up: Vec<f32> = (0..3 * 2 * f)
            .map(|i| (i as f32 * 0.61).sin() * 30.0)
            .collect();
        let got = swiglu_rows(&gate_up, f);
        for (r, row) in gate_up.chunks(2 * f).enumerate() {
            for j in 0..f {
                let (g, u) = (f64::from(row[j]), f64::from(row[f + j]));
                let want = g / (1.0 + (-g).exp()) * u;
                let o = f64::from(got[r * f + j]);
                assert!(
                    (o - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{o} vs {want}"
                );
            }
        }
    }

    #[test]
    fn to_f16_rounds_as_half_does_including_the_ragged_tail() {
        let src: Vec<f32> = (0..37)
            .map(|i| (i as f32 * 0.91).sin() * 10f32.powi(i % 7 - 3))
            .collect();
        let ours = to_f16(&src);
        let want: Vec<f16> = src.iter().map(|v| f16::from_f32(*v)).collect();
        assert_eq!(ours, want);
    }

    #[test]
    fn append_rows_writes_each_head_at_its_positions_and_rejects_overflow() {
        use candle_core::Device;
        let (h, hd, cap) = (2usize, 32usize, 5usize);
        let stride = 3 * h * hd; // q, k, v of one row
        let rows: Vec<f32> = (0..2 * stride).map(|i| i as f32 * 0.25).collect();
        let t = Tensor::zeros((1, h, cap, hd), DType::F16, &Device::Cpu).unwrap();
        let op = AppendRows {
            rows: &rows,
            stride,
            offset: h * hd, // the keys
            heads: h,
            head_dim: hd,
            at: 3,
        };
        t.inplace_op1(&op).unwrap();
        // [1, h, cap, hd], flattened.
        let got: Vec<f32> = t
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for head in 0..h {
            for pos in 0..cap {
                for i in 0..hd {
                    let want = if pos >= 3 {
                        let j = pos - 3;
                        f16::from_f32(rows[j * stride + h * hd + head * hd + i]).to_f32()
                    } else {
                        0.0
                    };
                    let at = (head * cap + pos) * hd + i;
                    assert_eq!(got[at], want, "head {head} pos {pos} {i}");
                }
            }
        }
        // Two rows at position 4 of 5 do not fit.
        let over = AppendRows { at: 4, ..op };
        assert!(t.inplace_op1(&over).is_err());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sum_lanes16_gives_each_vectors_sum_in_its_lane() {
        use std::arch::x86_64::*;
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let vals: Vec<[f32; 16]> = (0..16)
            .map(|p| std::array::from_fn(|l| (p * 16 + l) as f32 * 0.5 - (l * l) as f32))
            .collect();
        // SAFETY: AVX-512F is present (checked above).
        let got = unsafe {
            let v: [__m512; 16] = std::array::from_fn(|p| _mm512_loadu_ps(vals[p].as_ptr()));
            let mut out = [0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), sum_lanes16(&v));
            out
        };
        for (p, row) in vals.iter().enumerate() {
            assert_eq!(got[p], row.iter().sum::<f32>(), "vector {p}");
        }
    }

    #[test]
    fn attend_one_matches_the_plain_softmax_for_every_head_width() {
        for hd in [32, 64, 128, 48] {
            for len in [1, 5, 16, 17, 37, 100] {
                let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.37).sin()).collect();
                // The reference uses the f16 values the cache holds.
                let k = to_f16(
                    &(0..len * hd)
                        .map(|i| (i as f32 * 0.11).cos() * 2.0)
                        .collect::<Vec<_>>(),
                );
                let v = to_f16(
                    &(0..len * hd)
                        .map(|i| (i as f32 * 0.23).sin())
                        .collect::<Vec<_>>(),
                );
                let scale = 1.0 / (hd as f32).sqrt();
                let scores: Vec<f64> = k
                    .chunks(hd)
                    .map(|kt| {
                        q.iter()
                            .zip(kt)
                            .map(|(a, b)| f64::from(*a) * f64::from(b.to_f32()))
                            .sum::<f64>()
                    })
                    .map(|s| s * f64::from(scale))
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                let mut out = vec![0.0f32; hd];
                attend_one(&q, &k, &v, scale, &mut out);
                for (d, o) in out.iter().enumerate() {
                    let want: f64 = scores
                        .iter()
                        .zip(v.chunks(hd))
                        .map(|(s, vt)| (s - max).exp() / total * f64::from(vt[d].to_f32()))
                        .sum();
                    assert!(
                        (f64::from(*o) - want).abs() < 1e-5,
                        "hd {hd} len {len}: {o} vs {want}"
                    );
                }
            }
        }
    }
}
