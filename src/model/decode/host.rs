//! The steps of a decoder block on host values for the packed path, besides its matrix
//! products ([`PackedLinear`](super::packed::PackedLinear)): [`rms_norm_rows`],
//! [`swiglu_rows`], [`rotate_pairs`] (RoPE), the f16 cache writes ([`AppendRows`],
//! [`to_f16`]) and the attention of one query over its cache ([`attend_one`]). Each is
//! the host twin of a fused op in [`ops`](crate::model::ops), checked against the plain
//! formula in the tests below.

use candle_core::{bail, CpuStorage, Layout, Result};
use half::f16;

#[cfg(target_arch = "x86_64")]
use crate::model::ops::{exp_avx512, sum_lanes16};

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Tensor};

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
