//! Growth from one age to the next that keeps what the model has learned: the grown
//! model computes exactly the same function ([`grow`]), and training continues from it.
//!
//! With the residual stream padded by zeros (d → d'):
//! - embedding: new columns zero, so the new channels of the stream start at zero;
//! - weights that read the stream (q/k/v, gate/up, LM head, the copy head's): new input
//!   columns small random (they meet zeros, so they change nothing, but they break the symmetry);
//! - weights that write into it (attn_output, ffn_down): new output rows zero;
//! - new heads (head_dim stays 64): new q/k/v rows random, the matching attn_output input
//!   columns zero; a wider FFN: new gate/up rows random, new ffn_down columns zero;
//! - RMSNorm: the zero channels shrink mean(x²) by d/d', so gains are multiplied by
//!   √(d/d') and epsilon by d/d' (then rms(x') = √(d/d')·rms(x) exactly);
//! - new layers: attn_output and ffn_down zero, an exact identity in a pre-norm block,
//!   inserted where [`Placement`] says;
//! - AdamW moments: zero-extended in the same layout ([`grow_moments`]).
//!
//! [`Placement::Stack`] instead copies existing layers into the new ones (the "stacking"
//! operator of the literature): not function-preserving, offered for comparison.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use super::config::ModelConfig;
use super::transformer::{is_norm, weight_shapes};
use super::{ModelError, Result};

/// Standard deviation of new weights that read the stream or feed new units.
pub const GROWTH_INIT_STD: f64 = 0.02;
/// Standard deviation of new input columns of old units (they multiply zeros).
pub const GROWTH_COLUMN_STD: f64 = 1e-3;

/// Where new layers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Spread evenly between the old layers.
    #[default]
    Interleave,
    /// All on top of the old layers.
    End,
    /// Spread like `Interleave`, but each new layer is a copy of the layer below it
    /// ("stacking"): not exact, kept for comparison.
    Stack,
}

/// For every layer of the grown model, the old layer it continues (`None`: new).
pub fn layer_map(old: usize, new: usize, placement: Placement) -> Vec<Option<usize>> {
    let added = new.saturating_sub(old);
    match placement {
        Placement::End => (0..new).map(|i| (i < old).then_some(i)).collect(),
        Placement::Interleave | Placement::Stack => {
            // After old layer i come the new layers numbered floor((i+1)·added/old) − floor(i·added/old).
            let mut out = Vec::with_capacity(new);
            for i in 0..old {
                out.push(Some(i));
                let extra = (i + 1) * added / old - i * added / old;
                out.extend(std::iter::repeat_n(None, extra));
            }
            out
        }
    }
}

/// The configuration a model grows into at a design age (see [`resized`]).
pub fn grown_config(from: &ModelConfig, to_age: u32) -> Result<ModelConfig> {
    let a = ModelConfig::for_age(to_age, from.vocab_size, from.max_seq_len)?;
    resized(from, to_age, a.d_model, a.n_layers, a.d_ff)
}

/// `from` with a new width, depth and FFN size: head_dim kept (more heads), and the
/// RMSNorm epsilon rescaled by the width ratio so that growth is exact.
pub fn resized(
    from: &ModelConfig,
    age: u32,
    d_model: usize,
    n_layers: usize,
    d_ff: usize,
) -> Result<ModelConfig> {
    if d_model < from.d_model
        || n_layers < from.n_layers
        || d_ff < from.d_ff
        || !d_model.is_multiple_of(from.head_dim)
    {
        return Err(ModelError::Config(format!(
            "cannot grow d_model {} / layers {} / d_ff {} into {d_model} / {n_layers} / {d_ff} (head_dim {})",
            from.d_model, from.n_layers, from.d_ff, from.head_dim
        )));
    }
    Ok(ModelConfig {
        age,
        d_model,
        n_layers,
        n_heads: d_model / from.head_dim,
        d_ff,
        rms_eps: from.rms_eps * from.d_model as f64 / d_model as f64,
        ..from.clone()
    })
}

/// How every dimension of one weight grows: (old rows, old cols, new rows, new cols).
struct Plan {
    fill_rows: Fill,
    fill_cols: Fill,
}

/// What new entries hold.
#[derive(Clone, Copy, PartialEq)]
enum Fill {
    Zero,
    Random,
}

/// Pads an old `[r, c]` matrix to `[r2, c2]`: old block copied; new rows filled per
/// `plan.fill_rows`, new columns of old rows per `plan.fill_cols` (small), the corner
/// like the new rows.
fn pad(
    old: &[f32],
    (r, c): (usize, usize),
    (r2, c2): (usize, usize),
    plan: &Plan,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>> {
    let big = Normal::new(0.0f32, GROWTH_INIT_STD as f32)
        .map_err(|e| ModelError::Config(e.to_string()))?;
    let small = Normal::new(0.0f32, GROWTH_COLUMN_STD as f32)
        .map_err(|e| ModelError::Config(e.to_string()))?;
    let mut out = vec![0.0f32; r2 * c2];
    for i in 0..r2 {
        for j in 0..c2 {
            out[i * c2 + j] = if i < r && j < c {
                old[i * c + j]
            } else if i >= r {
                match plan.fill_rows {
                    Fill::Zero => 0.0,
                    Fill::Random => big.sample(rng),
                }
            } else {
                match plan.fill_cols {
                    Fill::Zero => 0.0,
                    Fill::Random => small.sample(rng),
                }
            };
        }
    }
    Ok(out)
}

/// The fill rules of a weight, by its role in the block.
fn plan_for(name: &str) -> Plan {
    let role = name
        .rsplit_once("blk.")
        .map_or(name, |(_, r)| r.split_once('.').map_or(r, |(_, r)| r));
    match role {
        // Writes into the stream: new output rows zero; new input columns (new heads /
        // hidden units) zero too, so they contribute nothing yet.
        "attn_output.weight" | "ffn_down.weight" => Plan {
            fill_rows: Fill::Zero,
            fill_cols: Fill::Zero,
        },
        // The embedding writes the stream: new columns zero. (It has no new rows.)
        "token_embd.weight" => Plan {
            fill_rows: Fill::Zero,
            fill_cols: Fill::Zero,
        },
        // Reads the stream: new rows (units) random, new input columns small random.
        _ => Plan {
            fill_rows: Fill::Random,
            fill_cols: Fill::Random,
        },
    }
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Grows `weights` of a model shaped `from` into the shape `to` (see [`grown_config`]).
/// The result computes the same logits as the original.
pub fn grow(
    weights: &HashMap<String, Tensor>,
    from: &ModelConfig,
    to: &ModelConfig,
    placement: Placement,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    if to.head_dim != from.head_dim
        || to.vocab_size != from.vocab_size
        || to.copy_head != from.copy_head
    {
        return Err(ModelError::Config(
            "growth keeps head_dim, the vocabulary and the copy head".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dev = Device::Cpu;
    let gain = (from.d_model as f64 / to.d_model as f64).sqrt() as f32;
    let map = layer_map(from.n_layers, to.n_layers, placement);
    let old_shapes: HashMap<String, Vec<usize>> = weight_shapes(from).into_iter().collect();
    let mut out = HashMap::new();
    for (name, shape) in weight_shapes(to) {
        // The old tensor this one continues, if any.
        let source = match name.strip_prefix("blk.") {
            Some(rest) => {
                let (idx, role) = rest
                    .split_once('.')
                    .ok_or_else(|| ModelError::Config(format!("bad weight name {name}")))?;
                let idx: usize = idx
                    .parse()
                    .map_err(|_| ModelError::Config(format!("bad weight name {name}")))?;
                let old = match placement {
                    // Stacking copies the nearest old layer below a new one.
                    Placement::Stack => map[..=idx].iter().rev().find_map(|l| *l),
                    _ => map[idx],
                };
                old.map(|old| format!("blk.{old}.{role}"))
            }
            None => Some(name.clone()),
        };
        let data = if is_norm(&name) {
            let d2 = shape[0];
            match &source {
                Some(src) => {
                    let old = to_vec(weights.get(src).ok_or_else(|| {
                        ModelError::Config(format!("weight `{src}` is missing"))
                    })?)?;
                    (0..d2)
                        .map(|i| old.get(i).copied().unwrap_or(1.0) * gain)
                        .collect()
                }
                // A new layer's gains: the rescaled default of one.
                None => vec![gain; d2],
            }
        } else {
            let (r2, c2) = (shape[0], shape[1]);
            match &source {
                Some(src) => {
                    let t = weights
                        .get(src)
                        .ok_or_else(|| ModelError::Config(format!("weight `{src}` is missing")))?;
                    let (r, c) = t.dims2()?;
                    if vec![r, c] != old_shapes[src] {
                        return Err(ModelError::Config(format!(
                            "weight `{src}` has shape {:?}, expected {:?}",
                            t.dims(),
                            old_shapes[src]
                        )));
                    }
                    pad(&to_vec(t)?, (r, c), (r2, c2), &plan_for(&name), &mut rng)?
                }
                None => {
                    // A new block: everything random except what writes into the stream.
                    let writes =
                        name.ends_with("attn_output.weight") || name.ends_with("ffn_down.weight");
                    let plan = if writes {
                        Plan {
                            fill_rows: Fill::Zero,
                            fill_cols: Fill::Zero,
                        }
                    } else {
                        Plan {
                            fill_rows: Fill::Random,
                            fill_cols: Fill::Random,
                        }
                    };
                    pad(&[], (0, 0), (r2, c2), &plan, &mut rng)?
                }
            }
        };
        out.insert(name, Tensor::from_vec(data, shape.as_slice(), &dev)?);
    }
    Ok(out)
}

/// Zero-extends AdamW moments (`m.NAME`, `v.NAME`) to the grown shapes: old entries keep
/// their place (as the weights do), new entries start at zero.
pub fn grow_moments(
    state: &HashMap<String, Tensor>,
    from: &ModelConfig,
    to: &ModelConfig,
    placement: Placement,
) -> Result<HashMap<String, Tensor>> {
    let map = layer_map(from.n_layers, to.n_layers, placement);
    let mut out = HashMap::new();
    for (name, shape) in weight_shapes(to) {
        let source = match name.strip_prefix("blk.") {
            Some(rest) => {
                let (idx, role) = rest.split_once('.').unwrap_or(("", ""));
                idx.parse::<usize>()
                    .ok()
                    .and_then(|i| map.get(i).copied().flatten())
                    .map(|o| format!("blk.{o}.{role}"))
            }
            None => Some(name.clone()),
        };
        for prefix in ["m", "v"] {
            let n: usize = shape.iter().product();
            let mut data = vec![0.0f32; n];
            if let Some(old) = source
                .as_ref()
                .and_then(|s| state.get(&format!("{prefix}.{s}")))
            {
                let vals = to_vec(old)?;
                match old.dims() {
                    [r] => data[..*r].copy_from_slice(&vals),
                    [r, c] => {
                        let c2 = shape[1];
                        for i in 0..*r {
                            data[i * c2..i * c2 + c].copy_from_slice(&vals[i * c..(i + 1) * c]);
                        }
                    }
                    other => {
                        return Err(ModelError::Config(format!(
                            "moment `{prefix}.{name}` has rank {}",
                            other.len()
                        )))
                    }
                }
            }
            out.insert(
                format!("{prefix}.{name}"),
                Tensor::from_vec(data, shape.as_slice(), &Device::Cpu)?,
            );
        }
    }
    Ok(out)
}

/// Bytes needed to grow `from` into `to` in memory: both sets of weights and moments.
pub fn memory_needed(from: &ModelConfig, to: &ModelConfig, with_optimizer: bool) -> u64 {
    let copies = if with_optimizer { 3 } else { 1 };
    (from.param_count() + to.param_count()) * 4 * copies
}

/// Memory the system can still give (Linux `MemAvailable`), if known.
pub fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_spreads_new_layers_and_keeps_old_order() {
        let m = layer_map(6, 8, Placement::Interleave);
        assert_eq!(m.len(), 8);
        let old: Vec<usize> = m.iter().flatten().copied().collect();
        assert_eq!(old, (0..6).collect::<Vec<_>>());
        assert_eq!(m.iter().filter(|x| x.is_none()).count(), 2);
        assert!(
            m[..6].iter().any(|x| x.is_none()),
            "new layers are spread, not all on top"
        );
        assert_eq!(
            layer_map(2, 4, Placement::End),
            [Some(0), Some(1), None, None]
        );
    }
}
