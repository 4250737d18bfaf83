//! [`AdamW`] with decoupled weight decay that skips RMSNorm gains (candle's AdamW decays
//! every variable), global-norm gradient clipping (candle has none), and the learning-rate
//! [`Schedule`] (linear warmup, then cosine to a floor). The update is one fused pass over
//! each parameter's weights, moments and gradient.

use std::collections::HashMap;

use candle_core::{Storage, Tensor, Var};
use candle_nn::VarMap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::transformer::is_norm;
use super::{ModelError, Result};

/// Elements per parallel work item of the fused update.
const UPDATE_CHUNK: usize = 1 << 15;

/// Optimizer hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (0 disables clipping).
    pub clip_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            clip_norm: 1.0,
        }
    }
}

/// Linear warmup to `peak`, then cosine decay to `floor` at `total` steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub peak: f64,
    pub floor: f64,
    pub warmup: u64,
    pub total: u64,
}

impl Schedule {
    /// Learning rate for step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        self.floor
            + 0.5 * (self.peak - self.floor) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

struct Param {
    name: String,
    var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
    decay: bool,
}

/// AdamW over the variables of a [`VarMap`], in name order.
pub struct AdamW {
    pub cfg: AdamWConfig,
    params: Vec<Param>,
    /// Number of updates applied (for bias correction).
    pub t: u64,
}

/// Runs `f` on the contiguous f32 data of `t` (copying only when `t` is not a contiguous
/// CPU tensor).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            if let Ok(s) = cpu.as_slice::<f32>() {
                return Ok(f(&s[a..b]));
            }
        }
    }
    let v = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    Ok(f(&v))
}

impl AdamW {
    pub fn new(varmap: &VarMap, cfg: AdamWConfig) -> Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Config("weight map lock poisoned".into()))?;
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let params = names
            .into_iter()
            .map(|n| {
                let var = data[n].clone();
                let len = var.elem_count();
                Param {
                    name: n.clone(),
                    // Gains are not decayed: RMSNorm's, and the copy head's follow and reading
                    // weights.
                    decay: !is_norm(n)
                        && n != super::copy::COPY_FOLLOW
                        && n != super::copy::COPY_READ,
                    var,
                    m: vec![0.0; len],
                    v: vec![0.0; len],
                }
            })
            .collect();
        Ok(AdamW { cfg, params, t: 0 })
    }

    /// Zeroed gradient buffers, one per parameter in order.
    pub fn zero_grads(&self) -> Vec<Vec<f32>> {
        self.params.iter().map(|p| vec![0.0; p.m.len()]).collect()
    }

    /// Adds the gradients of `store` into `acc` (a parameter without gradient adds 0).
    pub fn accumulate(
        &self,
        store: &candle_core::backprop::GradStore,
        acc: &mut [Vec<f32>],
    ) -> Result<()> {
        for (p, buf) in self.params.iter().zip(acc.iter_mut()) {
            if let Some(g) = store.get(p.var.as_tensor()) {
                with_f32(g, |s| {
                    buf.par_iter_mut()
                        .zip(s.par_iter())
                        .for_each(|(a, &b)| *a += b)
                })?;
            }
        }
        Ok(())
    }

    /// One update with learning rate `lr` from `grads` scaled by `grad_scale` (e.g. 1 /
    /// accumulation steps). Returns the global gradient norm before clipping.
    pub fn step(&mut self, grads: &[Vec<f32>], grad_scale: f64, lr: f64) -> Result<f64> {
        let sq: f64 = grads
            .par_iter()
            .map(|g| g.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
            .sum();
        let norm = sq.sqrt() * grad_scale;
        let clip = if self.cfg.clip_norm > 0.0 && norm > self.cfg.clip_norm {
            self.cfg.clip_norm / norm
        } else {
            1.0
        };
        self.t += 1;
        let c = self.cfg;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        let scale = (grad_scale * clip) as f32;
        let step_size = (lr / bc1) as f32;
        let inv_bc2 = (1.0 / bc2) as f32;
        let eps = c.eps as f32;
        for (p, g) in self.params.iter_mut().zip(grads) {
            let decay = if p.decay {
                (1.0 - lr * c.weight_decay) as f32
            } else {
                1.0
            };
            let shape = p.var.shape().clone();
            let dev = p.var.device().clone();
            let updated = with_f32(p.var.as_tensor(), |w| {
                let mut out = vec![0.0f32; w.len()];
                out.par_chunks_mut(UPDATE_CHUNK)
                    .zip(p.m.par_chunks_mut(UPDATE_CHUNK))
                    .zip(p.v.par_chunks_mut(UPDATE_CHUNK))
                    .zip(w.par_chunks(UPDATE_CHUNK).zip(g.par_chunks(UPDATE_CHUNK)))
                    .for_each(|(((o, m), v), (w, g))| {
                        for i in 0..o.len() {
                            let gi = g[i] * scale;
                            m[i] = b1 * m[i] + (1.0 - b1) * gi;
                            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                            let denom = (v[i] * inv_bc2).sqrt() + eps;
                            o[i] = w[i] * decay - step_size * m[i] / denom;
                        }
                    });
                out
            })?;
            p.var.set(&Tensor::from_vec(updated, shape, &dev)?)?;
        }
        Ok(norm)
    }

    /// Moments as tensors named `m.NAME` / `v.NAME` (for checkpoints).
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for p in &self.params {
            let shape = p.var.shape().clone();
            out.insert(
                format!("m.{}", p.name),
                Tensor::from_slice(&p.m, shape.clone(), &candle_core::Device::Cpu)?,
            );
            out.insert(
                format!("v.{}", p.name),
                Tensor::from_slice(&p.v, shape, &candle_core::Device::Cpu)?,
            );
        }
        Ok(out)
    }

    /// Restores moments saved by [`Self::state`]; every parameter must be present with its
    /// shape.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for p in &mut self.params {
            for (prefix, buf) in [("m", &mut p.m), ("v", &mut p.v)] {
                let key = format!("{prefix}.{}", p.name);
                let tensor = state
                    .get(&key)
                    .ok_or_else(|| ModelError::Config(format!("optimizer state lacks `{key}`")))?;
                if tensor.elem_count() != buf.len() {
                    return Err(ModelError::Config(format!(
                        "optimizer state `{key}` has {} values, the model needs {}",
                        tensor.elem_count(),
                        buf.len()
                    )));
                }
                *buf = tensor.flatten_all()?.to_vec1::<f32>()?;
            }
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let s = Schedule {
            peak: 1e-3,
            floor: 1e-4,
            warmup: 10,
            total: 110,
        };
        assert!((s.lr(0) - 1e-4).abs() < 1e-12);
        assert!((s.lr(9) - 1e-3).abs() < 1e-12);
        assert!((s.lr(60) - 5.5e-4).abs() < 1e-9);
        assert!((s.lr(110) - 1e-4).abs() < 1e-12);
        assert!(s.lr(30) > s.lr(80));
    }

    #[test]
    fn adamw_matches_the_reference_formula_skips_norm_decay_and_clips() {
        let vm = VarMap::new();
        let dev = Device::Cpu;
        vm.data().lock().unwrap().insert(
            "blk.0.attn_q.weight".into(),
            Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &dev).unwrap()).unwrap(),
        );
        vm.data().lock().unwrap().insert(
            "output_norm.weight".into(),
            Var::from_tensor(&Tensor::new(&[1.0f32], &dev).unwrap()).unwrap(),
        );
        let cfg = AdamWConfig {
            clip_norm: 1.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(&vm, cfg).unwrap();
        // Global norm of (3, 4, 0) is 5: clipped by 1/5.
        let grads = vec![vec![3.0f32, 4.0], vec![0.0]];
        let norm = opt.step(&grads, 1.0, 0.1).unwrap();
        assert!((norm - 5.0).abs() < 1e-9);
        let w: Vec<f32> = vm.data().lock().unwrap()["blk.0.attn_q.weight"]
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        // First step: m̂/√v̂ = sign(g) (up to eps); decay multiplies by 1 - lr·wd.
        let expect = [
            1.0 * (1.0 - 0.1 * 0.1) - 0.1,
            -2.0 * (1.0 - 0.1 * 0.1) - 0.1,
        ];
        for (a, b) in w.iter().zip(expect) {
            assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
        }
        let n: Vec<f32> = vm.data().lock().unwrap()["output_norm.weight"]
            .to_vec1()
            .unwrap();
        assert_eq!(n, [1.0], "norm gains are not decayed and had no gradient");
    }
}
