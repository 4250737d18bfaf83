//! Intel AMX for the batched decoding path: [`AmxLinear`] holds a weight matrix as
//! bf16 tiles and computes `x · wᵀ` for several rows with the tile multiply-add
//! `TDPBF16PS`, at f32-equivalent accuracy through the "bf16x3" split.
//!
//! Why: a decoding step of 32 sessions spends most of its time multiplying 32 rows by
//! every weight of the model, and the AVX-512 f32 kernel of [`packed`](super::packed)
//! tops out near the CPU's vector multiply-add rate. An AMX unit multiplies a 16 × 32
//! by a 32 × 16 bf16 tile in a few dozen cycles, several times that rate.
//!
//! Why bf16x3: bf16 keeps 8 bits of mantissa, far from f32. Each value is split as
//! `v ≈ hi + lo` with `hi = bf16(v)` and `lo = bf16(v − hi)` (16 bits of mantissa
//! together), and `x · w ≈ x_hi·w_hi + x_lo·w_hi + x_hi·w_lo`, accumulated in f32; the
//! dropped `x_lo·w_lo` and the split lose about 2⁻¹⁶ of each product, so results agree
//! with the f32 kernels to about 1e-5 relative (the tests check it), three tile products
//! instead of one. The weights' `hi` and `lo` tiles together take as much memory as f32.
//!
//! The tile instructions are not in stable `core::arch`, so they are written with
//! `asm!`; the tile registers never leave one `asm!` block. Linux hands out the tile
//! state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`available`] asks once
//! and says whether this process may use AMX (`THAU_AMX=0` turns it off).

use std::sync::OnceLock;

use rayon::prelude::*;

use super::SharedOut;

/// Inputs per tile: a row of an A tile is 64 bytes of bf16.
const CHUNK: usize = 32;
/// Outputs per tile column block: a row of a C tile is 64 bytes of f32.
const COLS: usize = 16;
/// Rows of one tile.
const TILE_ROWS: usize = 16;
/// Rows computed together against one column block (two C tiles).
const ROW_BLOCK: usize = 2 * TILE_ROWS;
/// Tasks per thread in one product: enough to even out, few enough that configuring
/// the tiles per task stays cheap.
const TASKS_PER_THREAD: usize = 4;
/// Bytes ahead of the weight tiles being multiplied that the kernel prefetches.
const PREFETCH_AHEAD: usize = 8192;
/// bf16 values in one 16-row weight tile.
const TILE_VALUES: usize = TILE_ROWS * COLS * 2;

/// Whether this process can use AMX-BF16: the CPU has it, the kernel granted the tile
/// state, and `THAU_AMX` is not `0`. Asked once.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("THAU_AMX").is_ok_and(|v| v == "0") {
            return false;
        }
        detect()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    /// `arch_prctl` request for permission to use an extended state component.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    /// The state component of the tile data.
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE; AVX-512F (EBX bit 16) is
    // needed for the input split.
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    let has = |bit: u32| leaf7.edx & (1 << bit) != 0;
    if !(has(22) && has(24) && std::arch::is_x86_feature_detected!("avx512f")) {
        return false;
    }
    // SAFETY: a plain system call with integer arguments.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    } == 0;
    if !granted {
        tracing::info!("the kernel refused the AMX tile state; using AVX-512");
    }
    granted
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// A weight matrix `[n, k]` as bf16x3 tiles: for each block of 16 outputs and each
/// chunk of 32 inputs, a `hi` tile then a `lo` tile, each 16 rows (input pairs) of 16
/// outputs × 2 inputs — the layout `TDPBF16PS` reads its second operand in. Zero-padded
/// past `n` and `k`.
#[derive(Debug)]
pub struct AmxLinear {
    tiles: Lines,
    n: usize,
    k: usize,
}

impl AmxLinear {
    /// Tiles for the matrix whose element `(j, i)` (output `j`, input `i`) is `w(j, i)`.
    pub fn pack(n: usize, k: usize, w: impl Fn(usize, usize) -> f32) -> AmxLinear {
        let (blocks, chunks) = (n.div_ceil(COLS), k.div_ceil(CHUNK));
        let mut lines = Lines::zeros(blocks * chunks * 2 * TILE_VALUES);
        let tiles = lines.values_mut();
        for b in 0..blocks {
            for c in 0..chunks {
                let at = (b * chunks + c) * 2 * TILE_VALUES;
                let (hi, lo) = tiles[at..at + 2 * TILE_VALUES].split_at_mut(TILE_VALUES);
                for pair in 0..TILE_ROWS {
                    for col in 0..COLS {
                        for e in 0..2 {
                            let (j, i) = (b * COLS + col, c * CHUNK + 2 * pair + e);
                            let v = if j < n && i < k { w(j, i) } else { 0.0 };
                            let (h, l) = split(v);
                            hi[pair * 2 * COLS + 2 * col + e] = h;
                            lo[pair * 2 * COLS + 2 * col + e] = l;
                        }
                    }
                }
            }
        }
        AmxLinear { tiles: lines, n, k }
    }

    /// `x · wᵀ` for `x` `rows` rows of `k`, written into `out` (`rows` rows of `n`).
    /// Only call when [`available`].
    pub fn matmul(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        debug_assert!(available() && x.len() == rows * k && out.len() == rows * n);
        let kp = k.div_ceil(CHUNK) * CHUNK;
        let (x_hi, x_lo) = split_rows(x, rows, k, kp);
        let (blocks, row_blocks) = (n.div_ceil(COLS), rows.div_ceil(ROW_BLOCK));
        let chunks = kp / CHUNK;
        let out_ptr = SharedOut(out.as_mut_ptr());
        // Tasks of several column blocks each: a task configures the tiles once (loading
        // a configuration and releasing the tiles cost about as much as a block).
        let group = blocks.div_ceil(rayon::current_num_threads() * TASKS_PER_THREAD);
        let groups = blocks.div_ceil(group);
        (0..groups * row_blocks).into_par_iter().for_each(|task| {
            let (g, rb) = (task / row_blocks, task % row_blocks);
            let r0 = rb * ROW_BLOCK;
            let m = ROW_BLOCK.min(rows - r0);
            let mut c = CBlock([0.0f32; ROW_BLOCK * COLS]);
            // SAFETY: AMX is available (checked by the caller).
            let tiles = unsafe { Tiles::configure(m) };
            for b in g * group..blocks.min((g + 1) * group) {
                let w = &self.tiles.values()[b * chunks * 2 * TILE_VALUES..]
                    [..chunks * 2 * TILE_VALUES];
                // SAFETY: `x_hi`/`x_lo` hold `rows` rows of `kp` and the block reads rows
                // `r0 .. r0 + m`; `w` holds `chunks` hi/lo tile pairs; `c` has room for
                // 32 rows of 16.
                unsafe {
                    tiles.block(
                        x_hi.values()[r0 * kp..].as_ptr(),
                        x_lo.values()[r0 * kp..].as_ptr(),
                        kp,
                        w.as_ptr(),
                        chunks,
                        c.0.as_mut_ptr(),
                    )
                };
                let cols = COLS.min(n - b * COLS);
                for r in 0..m {
                    // SAFETY: this task alone writes columns `b·16 .. b·16 + cols` of rows
                    // `r0 .. r0 + m`, inside `out` ([rows, n]).
                    unsafe {
                        let o = out_ptr.at((r0 + r) * n + b * COLS);
                        std::ptr::copy_nonoverlapping(c.0[r * COLS..].as_ptr(), o, cols);
                    }
                }
            }
        });
    }
}

/// 64 bytes of bf16 values: the unit of [`Lines`].
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

/// bf16 values that start on a cache line, so that every 64-byte tile row does: a tile
/// load that straddles lines runs about six times slower (measured here).
#[derive(Debug)]
struct Lines(Vec<Line>);

impl Lines {
    /// `len` zeros (rounded up to whole lines).
    fn zeros(len: usize) -> Lines {
        Lines(vec![Line([0; 32]); len.div_ceil(32)])
    }

    fn values(&self) -> &[u16] {
        // SAFETY: `Line` is 32 `u16` without padding (repr(C), 64 bytes, align 64).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 32) }
    }

    fn values_mut(&mut self) -> &mut [u16] {
        // SAFETY: as in `values`, and the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 32) }
    }
}

/// One task's output block (32 rows of 16 f32), on a cache line for the tile store.
#[repr(C, align(64))]
struct CBlock([f32; ROW_BLOCK * COLS]);

/// `v ≈ hi + lo` as two bf16 values (round to nearest even).
fn split(v: f32) -> (u16, u16) {
    let hi = bf16_bits(v);
    (hi, bf16_bits(v - f32::from_bits(u32::from(hi) << 16)))
}

/// The bf16 nearest to `v` (ties to even), as bits.
fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    // The high half after rounding on the low half; wraps only for NaN payloads.
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The rows of `x` (`rows` × `k`) split into `hi` and `lo` bf16 rows of `kp` ≥ `k`
/// values (zero-padded).
fn split_rows(x: &[f32], rows: usize, k: usize, kp: usize) -> (Lines, Lines) {
    let (mut hi_lines, mut lo_lines) = (Lines::zeros(rows * kp), Lines::zeros(rows * kp));
    let (hi, lo) = (hi_lines.values_mut(), lo_lines.values_mut());
    for r in 0..rows {
        let (src, h, l) = (
            &x[r * k..(r + 1) * k],
            &mut hi[r * kp..r * kp + k],
            &mut lo[r * kp..r * kp + k],
        );
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `available` checked AVX-512F; the three slices hold `k` values.
            unsafe { split_avx512(src, h, l) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        for ((v, h), l) in src.iter().zip(h).zip(l) {
            (*h, *l) = split(*v);
        }
    }
    (hi_lines, lo_lines)
}

/// [`split`] for a row, 16 values at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn split_avx512(src: &[f32], hi: &mut [u16], lo: &mut [u16]) {
    use std::arch::x86_64::*;
    let n = src.len();
    let round = |v: __m512| -> __m512i {
        let b = _mm512_castps_si512(v);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
        let r = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), odd));
        _mm512_srli_epi32::<16>(r)
    };
    let mut i = 0;
    while i + 16 <= n {
        let v = _mm512_loadu_ps(src.as_ptr().add(i));
        let h = round(v);
        let back = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h));
        let l = round(_mm512_sub_ps(v, back));
        _mm256_storeu_si256(hi.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi16(h));
        _mm256_storeu_si256(lo.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi16(l));
        i += 16;
    }
    for j in i..n {
        (hi[j], lo[j]) = split(src[j]);
    }
}

/// The tile configuration (palette 1): tiles 0, 2, 3 (C, A hi, A lo of rows 0..16) have
/// `m0` rows, tiles 1, 4, 5 (rows 16..32) `m1` rows, tiles 6, 7 (B hi, B lo) 16 rows;
/// every row 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(m0: usize, m1: usize) -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for (t, rows) in [(0, m0), (2, m0), (3, m0), (1, m1), (4, m1), (5, m1)]
            .into_iter()
            .chain([(6, TILE_ROWS), (7, TILE_ROWS)])
        {
            if rows > 0 {
                c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
                c[48 + t] = rows as u8;
            }
        }
        TileConfig(c)
    }
}

/// The tiles of one thread, configured for row blocks of `m` rows; released on drop.
struct Tiles {
    m: usize,
}

impl Tiles {
    /// Loads the tile configuration for blocks of `m` (1 ..= 32) rows.
    ///
    /// # Safety
    /// AMX must be [`available`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn configure(m: usize) -> Tiles {
        let cfg = TileConfig::new(m.min(TILE_ROWS), m.saturating_sub(TILE_ROWS));
        std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        Tiles { m }
    }

    /// `c[r][j] = Σ_i x[r][i] · w[j][i]` for `r < m` and the 16 outputs of one column
    /// block, over `chunks` chunks of 32 inputs; `c` is 32 rows of 16 f32. The tile
    /// registers are used within this one `asm!` block only; the configuration loaded
    /// by [`Tiles::configure`] stays in place between blocks (no compiled code touches
    /// it).
    ///
    /// # Safety
    /// `x_hi`/`x_lo` must hold `m` rows of `kp = 32·chunks` bf16, `w` `chunks` hi/lo
    /// tile pairs, `c` 32 × 16 f32.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block(
        &self,
        x_hi: *const u16,
        x_lo: *const u16,
        kp: usize,
        w: *const u16,
        chunks: usize,
        c: *mut f32,
    ) {
        use std::arch::asm;
        let a_stride = kp * 2; // bytes per row of x
        if self.m <= TILE_ROWS {
            asm!(
                "tilezero tmm0",
                "2:",
                "tileloadd tmm2, [{hi} + {as}*1]",
                "tileloadd tmm3, [{lo} + {as}*1]",
                "tileloadd tmm6, [{w} + {ws}*1]",
                "tileloadd tmm7, [{w} + {ws}*1 + 1024]",
                "tdpbf16ps tmm0, tmm2, tmm6",
                "tdpbf16ps tmm0, tmm3, tmm6",
                "tdpbf16ps tmm0, tmm2, tmm7",
                "add {hi}, 64",
                "add {lo}, 64",
                "add {w}, 2048",
                "dec {n}",
                "jnz 2b",
                "tilestored [{c} + {cs}*1], tmm0",
                hi = inout(reg) x_hi => _,
                lo = inout(reg) x_lo => _,
                w = inout(reg) w => _,
                n = inout(reg) chunks => _,
                as = in(reg) a_stride,
                ws = in(reg) 2 * COLS * 2,
                c = in(reg) c,
                cs = in(reg) COLS * 4,
                options(nostack),
            );
        } else {
            let second = kp * TILE_ROWS; // values to row 16
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "2:",
                "prefetcht0 [{w} + {ahead} + 0]",
                "prefetcht0 [{w} + {ahead} + 64]",
                "prefetcht0 [{w} + {ahead} + 128]",
                "prefetcht0 [{w} + {ahead} + 192]",
                "prefetcht0 [{w} + {ahead} + 256]",
                "prefetcht0 [{w} + {ahead} + 320]",
                "prefetcht0 [{w} + {ahead} + 384]",
                "prefetcht0 [{w} + {ahead} + 448]",
                "prefetcht0 [{w} + {ahead} + 512]",
                "prefetcht0 [{w} + {ahead} + 576]",
                "prefetcht0 [{w} + {ahead} + 640]",
                "prefetcht0 [{w} + {ahead} + 704]",
                "prefetcht0 [{w} + {ahead} + 768]",
                "prefetcht0 [{w} + {ahead} + 832]",
                "prefetcht0 [{w} + {ahead} + 896]",
                "prefetcht0 [{w} + {ahead} + 960]",
                "prefetcht0 [{w} + {ahead} + 1024]",
                "prefetcht0 [{w} + {ahead} + 1088]",
                "prefetcht0 [{w} + {ahead} + 1152]",
                "prefetcht0 [{w} + {ahead} + 1216]",
                "prefetcht0 [{w} + {ahead} + 1280]",
                "prefetcht0 [{w} + {ahead} + 1344]",
                "prefetcht0 [{w} + {ahead} + 1408]",
                "prefetcht0 [{w} + {ahead} + 1472]",
                "prefetcht0 [{w} + {ahead} + 1536]",
                "prefetcht0 [{w} + {ahead} + 1600]",
                "prefetcht0 [{w} + {ahead} + 1664]",
                "prefetcht0 [{w} + {ahead} + 1728]",
                "prefetcht0 [{w} + {ahead} + 1792]",
                "prefetcht0 [{w} + {ahead} + 1856]",
                "prefetcht0 [{w} + {ahead} + 1920]",
                "prefetcht0 [{w} + {ahead} + 1984]",
                "tileloadd tmm6, [{w} + {ws}*1]",
                "tileloadd tmm7, [{w} + {ws}*1 + 1024]",
                "tileloadd tmm2, [{hi} + {as}*1]",
                "tileloadd tmm3, [{lo} + {as}*1]",
                "tileloadd tmm4, [{hi2} + {as}*1]",
                "tileloadd tmm5, [{lo2} + {as}*1]",
                "tdpbf16ps tmm0, tmm2, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm6",
                "tdpbf16ps tmm0, tmm3, tmm6",
                "tdpbf16ps tmm1, tmm5, tmm6",
                "tdpbf16ps tmm0, tmm2, tmm7",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "add {hi}, 64",
                "add {lo}, 64",
                "add {hi2}, 64",
                "add {lo2}, 64",
                "add {w}, 2048",
                "dec {n}",
                "jnz 2b",
                "tilestored [{c} + {cs}*1], tmm0",
                "add {c}, {half}",
                "tilestored [{c} + {cs}*1], tmm1",
                hi = inout(reg) x_hi => _,
                lo = inout(reg) x_lo => _,
                hi2 = inout(reg) x_hi.add(second) => _,
                lo2 = inout(reg) x_lo.add(second) => _,
                w = inout(reg) w => _,
                n = inout(reg) chunks => _,
                as = in(reg) a_stride,
                ws = in(reg) 2 * COLS * 2,
                c = inout(reg) c => _,
                half = in(reg) TILE_ROWS * COLS * 4,
                ahead = in(reg) PREFETCH_AHEAD,
                cs = in(reg) COLS * 4,
                options(nostack),
            );
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn configure(_: usize) -> Tiles {
        unreachable!("AMX is never available off x86_64")
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn block(
        &self,
        _: *const u16,
        _: *const u16,
        _: usize,
        _: *const u16,
        _: usize,
        _: *mut f32,
    ) {
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // Returns the tiles to their initial state, so that the kernel need not save
        // them on every context switch.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Tiles` exists only after `configure` succeeded.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(len: usize, salt: f32) -> Vec<f32> {
        (0..len)
            .map(|i| (i as f32 * 0.37 + salt).sin() * 1.3)
            .collect()
    }

    #[test]
    fn split_keeps_sixteen_bits_of_mantissa() {
        for v in det(1000, 0.5) {
            let (h, l) = split(v);
            let back = f32::from_bits(u32::from(h) << 16) + f32::from_bits(u32::from(l) << 16);
            assert!((back - v).abs() <= v.abs() * 2f32.powi(-16), "{v} {back}");
        }
        assert_eq!(split(1.0), (0x3F80, 0));
    }

    #[test]
    fn amx_matches_f64_for_every_row_count_and_ragged_shapes() {
        if !available() {
            eprintln!("no AMX here: nothing to check");
            return;
        }
        for (n, k) in [(40usize, 64usize), (16, 32), (37, 50), (96, 384)] {
            let w = det(n * k, 0.1);
            let lin = AmxLinear::pack(n, k, |j, i| w[j * k + i]);
            for rows in [1usize, 3, 16, 17, 32, 33, 70] {
                let x = det(rows * k, 2.0);
                let mut out = vec![f32::NAN; rows * n];
                lin.matmul(&x, rows, &mut out);
                for r in 0..rows {
                    for j in 0..n {
                        let (mut e, mut mag) = (0f64, 0f64);
                        for i in 0..k {
                            let p = f64::from(x[r * k + i]) * f64::from(w[j * k + i]);
                            e += p;
                            mag += p.abs();
                        }
                        let got = f64::from(out[r * n + j]);
                        // bf16x3 loses about 2^-16 of each product.
                        assert!(
                            (got - e).abs() <= 1e-5 * mag + 1e-6,
                            "[{n}, {k}] rows {rows}: ({r}, {j}) {got} vs {e}"
                        );
                    }
                }
            }
        }
    }
}
