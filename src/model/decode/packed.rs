//! The packed decoding path ([`Thau::forward_seqs`] on an inference model):
//! [`PackedLinear`] holds a weight matrix `[n, k]` repacked once into panels of [`PANEL`]
//! outputs stored k-major, and computes `x · wᵀ` for a few to a few hundred rows (one per
//! session in a decoding step, one per token in a prompt) with a register-blocked AVX-512
//! kernel; [`DecodeWeights`] holds every matrix of a model so packed, and runs the whole
//! pass on host values ([`DecodeWeights::forward_seqs`]), with the rest of each block in
//! [`host`](super::host).
//!
//! Why a second layout: the row-by-row dot products of [`small_linear`](crate::model::ops::small_linear)
//! need a horizontal reduction per output and read the weights in rows, so a 32-row step
//! stays far from the CPU's multiply-add rate. Here a block of up to `ROW_BLOCK` rows
//! broadcasts one input value at a time against 32 consecutive outputs held in two
//! registers (`ROW_BLOCK` × 2 accumulators, no reductions), the gemm "microkernel"
//! shape, and each panel is read once per row block while it sits in the L2 cache.
//! The packed copy costs as much memory as the weights it mirrors; the inference model
//! builds it on its first packed pass and never for trainable weights.
//!
//! [`Thau::forward_seqs`]: crate::model::Thau::forward_seqs

use std::sync::{Arc, OnceLock};

use candle_core::{
    bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Storage, Tensor,
};
use rayon::prelude::*;

use super::amx::{self, AmxLinear};
use super::host::{attend_one, rms_norm_rows, rotate_pairs, swiglu_rows, AppendRows, KV_DTYPE};
use super::kv::{KvCache, LayerKv};
use super::SharedOut;
use crate::model::ModelConfig;

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

// ---------------------------------------------------------------- the packed model

/// The RoPE angles on the host, f32: `[max_seq_len, head_dim / 2]` each.
#[derive(Debug)]
struct RopeTables {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// The contiguous f16 values of a CPU tensor's storage (a packed-path cache).
fn cpu_f16<'a>(s: &'a Storage, l: &Layout) -> candle_core::Result<&'a [half::f16]> {
    match (s, l.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F16(v)), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("KV cache: expected contiguous f16 on the CPU"),
    }
}

/// The attention of new positions on host values: sequence `i` continues `caches[i]`
/// by `counts[i]` tokens, whose rows follow each other in `qkv` `[R, 3·H·hd]`
/// (queries, keys, values, before RoPE; R = Σ counts). The rows are rotated in place,
/// their keys and values appended to the caches, and each row attends to its cache up
/// to its own position (causal): `[R, H·hd]`.
fn attend_rows_host(
    (h, hd): (usize, usize),
    qkv: &mut [f32],
    caches: &mut [(&mut Option<LayerKv>, usize)],
    counts: &[usize],
    max_seq_len: usize,
    tables: &RopeTables,
    dev: &Device,
) -> Result<Vec<f32>> {
    let (a, half) = (h * hd, hd / 2);
    // Each sequence's rows: rotate the queries and keys, append the keys and values
    // to its cache. Sequences are independent, so this runs over the threads too.
    let mut blocks: Vec<&mut [f32]> = Vec::with_capacity(counts.len());
    let mut rest = &mut qkv[..];
    for &m in counts {
        let (block, tail) = rest.split_at_mut(m * 3 * a); // [m, 3a]
        blocks.push(block);
        rest = tail;
    }
    let appended = caches
        .par_iter_mut()
        .zip(blocks)
        .zip(counts)
        .map(
            |(((slot, room), block), &m)| -> candle_core::Result<(Tensor, Tensor, usize)> {
                let room = *room;
                let start = slot.as_ref().map_or(0, |kv| kv.len);
                for (j, row) in block.chunks_exact_mut(3 * a).enumerate() {
                    let angles = (start + j) * half..(start + j + 1) * half;
                    let (cos, sin) = (&tables.cos[angles.clone()], &tables.sin[angles]);
                    for head in row[..2 * a].chunks_exact_mut(hd) {
                        rotate_pairs(head, cos, sin);
                    }
                }
                let kv = LayerKv::reserve(slot, (1, h, hd), (m, room), max_seq_len, KV_DTYPE, dev)?;
                for (t, offset) in [(&kv.k, a), (&kv.v, 2 * a)] {
                    let (rows, stride, heads, head_dim, at) = (&*block, 3 * a, h, hd, kv.len);
                    t.inplace_op1(&AppendRows {
                        rows,
                        stride,
                        offset,
                        heads,
                        head_dim,
                        at,
                    })?;
                }
                kv.len += m;
                Ok((kv.k.clone(), kv.v.clone(), start))
            },
        )
        .collect::<candle_core::Result<Vec<_>>>()?;
    // Per row: its sequence's cache buffers and the positions it may see.
    let mut rows: Vec<(Tensor, Tensor, usize)> = Vec::with_capacity(counts.iter().sum());
    for ((k, v, start), &m) in appended.into_iter().zip(counts) {
        rows.extend((1..=m).map(|j| (k.clone(), v.clone(), start + j)));
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let mut y = vec![0.0f32; rows.len() * a]; // [R, H, hd]
    let qkv = &*qkv;
    y.par_chunks_mut(hd)
        .enumerate()
        .try_for_each(|(j, out)| -> candle_core::Result<()> {
            let (i, head) = (j / h, j % h);
            let (k, v, len) = &rows[i];
            let q = &qkv[i * 3 * a + head * hd..][..hd];
            let cap = k.dims()[2];
            let span = head * cap * hd..(head * cap + len) * hd;
            let (ks, kl) = k.storage_and_layout();
            let (vs, vl) = v.storage_and_layout();
            let (kc, vc) = (cpu_f16(&ks, kl)?, cpu_f16(&vs, vl)?);
            attend_one(q, &kc[span.clone()], &vc[span], scale, out);
            Ok(())
        })?;
    Ok(y)
}

/// `x += y`, element by element.
fn add_into(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// A block's weights packed for batched decoding ([`PackedLinear`]).
#[derive(Debug, Clone)]
pub(in crate::model) struct PackedBlock {
    qkv: PackedLinear,     // [3·H·hd, d]
    o: PackedLinear,       // [d, H·hd]
    gate_up: PackedLinear, // [2·d_ff, d]
    down: PackedLinear,    // [d, d_ff]
    attn_norm: Vec<f32>,   // [d]
    ffn_norm: Vec<f32>,    // [d]
}

impl PackedBlock {
    /// Packs a block from its attention's `[wq, wk, wv, wo]`, its MLP's `[gate, up,
    /// down]` and its RMSNorm gains `[attn_norm, ffn_norm]`.
    pub(in crate::model) fn pack(
        [wq, wk, wv, wo]: [&Tensor; 4],
        [gate, up, down]: [&Tensor; 3],
        [attn_norm, ffn_norm]: [&Tensor; 2],
    ) -> Result<Self> {
        Ok(PackedBlock {
            qkv: PackedLinear::pack(&[wq, wk, wv])?,
            o: PackedLinear::pack(&[wo])?,
            gate_up: PackedLinear::pack(&[gate, up])?,
            down: PackedLinear::pack(&[down])?,
            attn_norm: attn_norm.to_dtype(DType::F32)?.to_vec1()?,
            ffn_norm: ffn_norm.to_dtype(DType::F32)?.to_vec1()?,
        })
    }

    /// The block on host values `x` `[R, d]` (updated in place) through the packed
    /// weights, sequence `i` continuing `caches[i]` by `counts[i]` rows: five parallel
    /// passes per block (three matmuls, the attention, the MLP's second matmul) and no
    /// candle op but the cache writes, because at 32 rows the per-op dispatch and thread
    /// wake-ups of the tensor path cost as much as the maths.
    fn forward_rows(
        &self,
        x: &mut [f32],
        caches: &mut [(&mut Option<LayerKv>, usize)],
        counts: &[usize],
        cfg: &ModelConfig,
        tables: &RopeTables,
        dev: &Device,
    ) -> Result<()> {
        let (r, eps) = (counts.iter().sum(), cfg.rms_eps);
        let f = cfg.d_ff;
        let mut qkv = self
            .qkv
            .matmul(&rms_norm_rows(x, &self.attn_norm, eps), r)?; // [R, 3a]
        let heads = (cfg.n_heads, cfg.head_dim);
        let max_seq_len = cfg.max_seq_len;
        let y = attend_rows_host(heads, &mut qkv, caches, counts, max_seq_len, tables, dev)?; // [R, a]
        add_into(x, &self.o.matmul(&y, r)?); // x += o(y)
        let gu = self
            .gate_up
            .matmul(&rms_norm_rows(x, &self.ffn_norm, eps), r)?; // [R, 2f]
        add_into(x, &self.down.matmul(&swiglu_rows(&gu, f), r)?); // x += down(act)
        Ok(())
    }
}

/// Every weight matrix of the model packed for batched decoding (and the embedding
/// table, which the pass only indexes: the model's own tensor, not a copy).
#[derive(Debug)]
pub(in crate::model) struct DecodeWeights {
    embed: Tensor, // [V, d]
    blocks: Vec<PackedBlock>,
    lm_head: PackedLinear, // [V, d]
    norm: Vec<f32>,        // [d]
    rope: RopeTables,
}

impl DecodeWeights {
    /// The model's weights for the packed pass: the embedding `[V, d]`, its packed
    /// blocks, the final norm's gain `[d]`, the LM head `[V, d]` and the RoPE tables
    /// `(cos, sin)` `[max_seq_len, head_dim / 2]`.
    pub(in crate::model) fn pack(
        embed: &Tensor,
        blocks: Vec<PackedBlock>,
        norm: &Tensor,
        lm_head: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
    ) -> Result<DecodeWeights> {
        Ok(DecodeWeights {
            embed: embed.clone(),
            blocks,
            lm_head: PackedLinear::pack(&[lm_head])?,
            norm: norm.to_dtype(DType::F32)?.to_vec1()?,
            rope: RopeTables {
                cos: cos.flatten_all()?.to_vec1()?,
                sin: sin.flatten_all()?.to_vec1()?,
            },
        })
    }

    /// Builds the AMX tiles of every matrix now ([`PackedLinear::prepare_tiles`]).
    pub(in crate::model) fn prepare_tiles(&self) {
        for b in &self.blocks {
            for lin in [&b.qkv, &b.o, &b.gate_up, &b.down] {
                lin.prepare_tiles();
            }
        }
        self.lm_head.prepare_tiles();
    }

    /// [`Thau::forward_seqs`] through the packed weights, for a model of `cfg` whose
    /// caller checked the inputs and gave every cache a slot per layer.
    ///
    /// [`Thau::forward_seqs`]: crate::model::Thau::forward_seqs
    pub(in crate::model) fn forward_seqs(
        &self,
        cfg: &ModelConfig,
        caches: &mut [&mut KvCache],
        tokens: &[&[u32]],
    ) -> Result<Tensor> {
        // On a pool thread: each of the pass's parallel products then runs on the calling
        // thread and wakes only the others, instead of blocking this thread and waking
        // every worker (a decoding step makes about 30 of them).
        rayon::scope(|_| self.pass(cfg, caches, tokens))
    }

    /// [`DecodeWeights::forward_seqs`] on the calling thread.
    fn pass(
        &self,
        cfg: &ModelConfig,
        caches: &mut [&mut KvCache],
        tokens: &[&[u32]],
    ) -> Result<Tensor> {
        let (n, dev) = (tokens.len(), self.embed.device());
        let counts: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
        let ids: Vec<u32> = tokens.concat();
        let ids = Tensor::new(ids.as_slice(), dev)?; // [R]
        let mut x: Vec<f32> = self.embed.index_select(&ids, 0)?.flatten_all()?.to_vec1()?; // [R, d]
        for (l, block) in self.blocks.iter().enumerate() {
            let mut slots: Vec<(&mut Option<LayerKv>, usize)> = caches
                .iter_mut()
                .map(|c| (&mut c.layers[l], c.room))
                .collect();
            block.forward_rows(&mut x, &mut slots, &counts, cfg, &self.rope, dev)?;
        }
        // Only each sequence's last row goes through the LM head.
        let d = cfg.d_model;
        let mut last = Vec::with_capacity(n * d);
        let mut end = 0;
        for m in &counts {
            end += m;
            last.extend_from_slice(&x[(end - 1) * d..end * d]);
        }
        let last = rms_norm_rows(&last, &self.norm, cfg.rms_eps);
        let logits = self.lm_head.matmul(&last, n)?; // [N, V]
        Tensor::from_vec(logits, (n, cfg.vocab_size), dev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decode::kv::KV_INITIAL_CAPACITY;
    use crate::model::transformer::{from_tensors, from_varmap, init_weights};
    use crate::testing::{detached, max_diff};

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
            let diff = max_diff(&ours, &reference);
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
    fn a_cache_moves_between_the_tensor_and_the_packed_path() {
        let cfg = ModelConfig::tiny(50);
        let vm = init_weights(&cfg, 7, DType::F32, &Device::Cpu).unwrap();
        let trainable = from_varmap(&vm, &cfg, DType::F32, &Device::Cpu).unwrap();
        let plain = from_tensors(detached(&vm), &cfg, &Device::Cpu).unwrap();
        let ids = |t: &[u32]| Tensor::new(t, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        // The reference stays on the tensor path; the other cache starts there (f32),
        // goes through the packed path (f16) and comes back.
        let (mut reference, mut moved) = (KvCache::new(cfg.n_layers), KvCache::new(cfg.n_layers));
        trainable
            .forward_last(&ids(&[1, 2, 3]), Some(&mut reference))
            .unwrap();
        plain
            .forward_last(&ids(&[1, 2, 3]), Some(&mut moved))
            .unwrap();
        let want = trainable
            .forward_last(&ids(&[4, 5]), Some(&mut reference))
            .unwrap();
        let got = plain.forward_seqs(&mut [&mut moved], &[&[4, 5]]).unwrap();
        assert!(max_diff(&got, &want) < 1e-4, "{}", max_diff(&got, &want));
        let want = trainable
            .forward_last(&ids(&[6]), Some(&mut reference))
            .unwrap();
        let got = plain.forward_last(&ids(&[6]), Some(&mut moved)).unwrap();
        assert!(max_diff(&got, &want) < 1e-4, "{}", max_diff(&got, &want));
        assert_eq!(moved.len(), 6);
    }

    #[test]
    fn the_packed_path_matches_the_tensor_path_for_prompts_and_steps_together() {
        let mut cfg = ModelConfig::tiny(50);
        cfg.max_seq_len = 512;
        let vm = init_weights(&cfg, 5, DType::F32, &Device::Cpu).unwrap();
        let trainable = from_varmap(&vm, &cfg, DType::F32, &Device::Cpu).unwrap();
        let plain = from_tensors(detached(&vm), &cfg, &Device::Cpu).unwrap();
        assert!(
            plain.decode_weights().is_some(),
            "plain f32 weights are packed"
        );
        assert!(
            trainable.decode_weights().is_none(),
            "trainable weights never are"
        );
        // A prompt longer than the first KV buffer, one that outgrows it in the next
        // pass, and a sequence that joins later: prompts and single tokens share passes.
        let long: Vec<u32> = (0..140).map(|i| (i * 7 % 50) as u32).collect();
        let near: Vec<u32> = (0..KV_INITIAL_CAPACITY - 2)
            .map(|i| (i * 3 % 50) as u32)
            .collect();
        let script: [Vec<Vec<u32>>; 3] = [
            vec![long.clone(), near],
            vec![vec![9], vec![5, 6, 7, 8], vec![2]],
            vec![vec![11], vec![12], vec![13]],
        ];
        let mut ours: Vec<KvCache> = (0..3).map(|_| KvCache::new(cfg.n_layers)).collect();
        let mut theirs = ours.clone();
        for step in &script {
            let n = step.len();
            let tokens: Vec<&[u32]> = step.iter().map(Vec::as_slice).collect();
            let mut a: Vec<&mut KvCache> = ours.iter_mut().take(n).collect();
            let got = plain.forward_seqs(&mut a, &tokens).unwrap(); // [n, V]
            let mut b: Vec<&mut KvCache> = theirs.iter_mut().take(n).collect();
            let want = trainable.forward_seqs(&mut b, &tokens).unwrap(); // [n, V]
            assert_eq!(got.dims(), &[n, 50]);
            let diff = max_diff(&got, &want);
            assert!(diff < 1e-4, "{diff}");
            for (x, y) in ours.iter().zip(&theirs) {
                assert_eq!(x.len(), y.len());
            }
        }
        assert_eq!(ours[0].len(), 142);
        assert_eq!(
            ours[1].len(),
            KV_INITIAL_CAPACITY + 3,
            "grown past its first buffer"
        );
        // An empty sequence, a missing cache or an overflowing context is an error.
        let mut one: Vec<&mut KvCache> = ours.iter_mut().take(1).collect();
        assert!(plain.forward_seqs(&mut one, &[&[]]).is_err());
        assert!(plain.forward_seqs(&mut one, &[&[1], &[2]]).is_err());
        assert!(plain.forward_seqs(&mut one, &[&[1u32; 400]]).is_err());
    }
}
