//! AVX-512 building blocks shared by the kernels: `exp` of 16 floats ([`exp_avx512`], in
//! the softmaxes, the loss, SwiGLU and the packed decoding path), dot products ([`dot`],
//! [`dot4x4_avx512`], for [`small_linear`](super::small_linear)) and the transposing lane
//! sum [`sum_lanes16`] (the packed path's attention scores). The `_avx512` functions run
//! only where the CPU has AVX-512F: their callers check it.

/// `exp` of every value, 16 at a time ([`exp_avx512`]; the tail through a mask).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn exp_slice_avx512(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let (n, p) = (xs.len(), xs.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        _mm512_storeu_ps(p.add(i), exp_avx512(_mm512_loadu_ps(p.add(i))));
        i += 16;
    }
    if i < n {
        let mask: __mmask16 = (1u16 << (n - i)) - 1;
        let v = _mm512_maskz_loadu_ps(mask, p.add(i));
        _mm512_mask_storeu_ps(p.add(i), mask, exp_avx512(v));
    }
}

/// `exp(x)` of 16 floats (-inf gives 0, overflow +inf): `e^x = 2^n · e^f` with
/// `n = round(x·log2 e)`, `f = x − n·ln 2` (ln 2 in two parts, so `f` stays exact for
/// large `|x|`), `2^n` applied with `scalef` and `e^f` by a degree-6 polynomial on
/// [-ln2/2, ln2/2] (relative error about 1e-7).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // Below this the result is 0 in f32 anyway; clamping keeps -inf out of the maths.
    let x = _mm512_max_ps(x, _mm512_set1_ps(-104.0));
    /// ln 2 = LN2_HI + LN2_LO, the high part (0.693359375 exactly in f32) with few
    /// enough bits that `n · LN2_HI` is exact (Cody and Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let y = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
    let f = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let f = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), f);
    // e^f, Horner from the degree-6 term.
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums so the compiler can keep several multiply-adds in flight.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let mut i = 0;
    let mut s = [_mm512_setzero_ps(); 4];
    // SAFETY: every load reads 16 floats at offsets below `n`, inside both slices.
    unsafe {
        while i + 64 <= n {
            let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
            for (j, acc) in s.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(16 * j)),
                    _mm512_loadu_ps(pb.add(16 * j)),
                    *acc,
                );
            }
            i += 64;
        }
        while i + 16 <= n {
            s[0] = _mm512_fmadd_ps(
                _mm512_loadu_ps(a.as_ptr().add(i)),
                _mm512_loadu_ps(b.as_ptr().add(i)),
                s[0],
            );
            i += 16;
        }
    }
    let sum = _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(s[0], s[1]),
        _mm512_add_ps(s[2], s[3]),
    ));
    sum + dot_scalar(&a[i..n], &b[i..n])
}

/// `out[r][c] = x[r] · w[c]` for four input rows and four weight rows of equal length: each
/// load feeds four multiply-adds (a 4×4 register block), so the kernel is bound by
/// arithmetic rather than by loads, as one dot product at a time is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn dot4x4_avx512(x: [&[f32]; 4], w: [&[f32]; 4]) -> [[f32; 4]; 4] {
    use std::arch::x86_64::*;
    let k = x.iter().chain(&w).map(|s| s.len()).min().unwrap_or(0);
    let mut acc = [[_mm512_setzero_ps(); 4]; 4];
    let mut i = 0;
    // SAFETY: every load reads 16 floats at offsets below `k`, inside all eight slices.
    unsafe {
        while i + 16 <= k {
            let wv = [
                _mm512_loadu_ps(w[0].as_ptr().add(i)),
                _mm512_loadu_ps(w[1].as_ptr().add(i)),
                _mm512_loadu_ps(w[2].as_ptr().add(i)),
                _mm512_loadu_ps(w[3].as_ptr().add(i)),
            ];
            for (xr, accr) in x.iter().zip(acc.iter_mut()) {
                let xv = _mm512_loadu_ps(xr.as_ptr().add(i));
                for (a, wc) in accr.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, *wc, *a);
                }
            }
            i += 16;
        }
    }
    let mut out = [[0.0f32; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            out[r][c] = _mm512_reduce_add_ps(acc[r][c]) + dot_scalar(&x[r][i..k], &w[c][i..k]);
        }
    }
    out
}

pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { dot_avx512(a, b) };
    }
    dot_scalar(a, b)
}

/// Lane `p` of the result is the sum of the 16 lanes of `v[p]`: a transpose and add in
/// four levels (45 shuffles and adds for 16 sums, against about 8 per horizontal sum).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn sum_lanes16(v: &[std::arch::x86_64::__m512; 16]) -> std::arch::x86_64::__m512 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::kernel::Real;

    #[test]
    fn vectorised_exp_matches_libm_with_tails_and_extremes() {
        for len in [0usize, 1, 15, 16, 17, 100] {
            let xs: Vec<f32> = (0..len)
                .map(|i| (i as f32 * 0.731).sin() * 30.0 - 5.0)
                .collect();
            let mut ours = xs.clone();
            f32::exp_in_place(&mut ours);
            for (x, y) in xs.iter().zip(&ours) {
                let e = x.exp();
                assert!(
                    (y - e).abs() <= 1e-6 * e.abs() + 1e-37,
                    "exp({x}) = {y}, libm {e}"
                );
            }
        }
        let mut edge = [f32::NEG_INFINITY, -200.0, 0.0, 88.0, 100.0];
        f32::exp_in_place(&mut edge);
        assert_eq!(edge[0], 0.0);
        assert!(edge[1] < 1e-40 && edge[2] == 1.0 && (edge[3] / 88f32.exp() - 1.0).abs() < 1e-6);
        assert!(edge[4].is_infinite());
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
}
