//! `thau grow --to AGE`: grows the newest checkpoint through every age up to `AGE` with
//! the exact growth operators, checks on a fixed batch that the grown model computes the
//! same logits, and writes a checkpoint that `thau train --age AGE` resumes.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::home::Home;
use crate::model::checkpoint;
use crate::model::growth::{self, Placement};
use crate::model::train::TrainerState;
use crate::model::transformer::from_tensors;
use crate::model::{ModelConfig, ModelError, Result, AGES};

/// Models up to this size are checked for exactness after growth (a forward pass each).
const CHECK_MAX_PARAMS: u64 = 400_000_000;
/// Tokens of the fixed batch used for the exactness check.
const CHECK_TOKENS: usize = 32;

/// What `thau grow` did.
#[derive(Debug, Clone, Serialize)]
pub struct GrowReport {
    pub from_age: u32,
    pub to_age: u32,
    pub params_before: u64,
    pub params_after: u64,
    pub placement: Placement,
    /// Largest |logit difference| between the model before and after, on a fixed batch
    /// (`None` when the model is too large to check here).
    pub max_logit_diff: Option<f32>,
    pub checkpoint: PathBuf,
}

fn fixed_batch(cfg: &ModelConfig, dev: &Device) -> Result<Tensor> {
    let n = CHECK_TOKENS.min(cfg.max_seq_len);
    let ids: Vec<u32> = (0..n as u32)
        .map(|i| (i * 7919 + 13) % cfg.vocab_size as u32)
        .collect();
    Ok(Tensor::from_vec(ids, (1, n), dev)?)
}

/// Grows the newest checkpoint to `to_age`, on `dev` (`device` in thau.toml).
pub fn grow(home: &Home, to_age: u32, placement: Placement, dev: &Device) -> Result<GrowReport> {
    let dir = checkpoint::newest(&home.checkpoints())?
        .ok_or_else(|| ModelError::Data("no checkpoint to grow: run `thau train` first".into()))?;
    let dev = dev.clone();
    let ck = checkpoint::load(&dir, &dev, true)?;
    let from = ck.config.clone();
    if !AGES.iter().any(|a| a.age == to_age) {
        return Err(ModelConfig::for_age(to_age, 1, 1)
            .err()
            .unwrap_or_else(|| ModelError::Config("unknown age".into())));
    }
    if to_age <= from.age {
        return Err(ModelError::Config(format!(
            "the newest model is already age {} (asked for {to_age})",
            from.age
        )));
    }
    let target = growth::grown_config(&from, to_age)?;
    let with_optimizer = ck.optimizer.is_some();
    let need = growth::memory_needed(&from, &target, with_optimizer);
    if let Some(avail) = growth::memory_available() {
        if need > avail {
            return Err(ModelError::Config(format!(
                "growing to age {to_age} ({} parameters) needs about {:.1} GiB of memory, {:.1} GiB is available",
                target.param_count(),
                need as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64
            )));
        }
    }
    let check = from.param_count() + target.param_count() <= CHECK_MAX_PARAMS;
    let (batch, before) = if check {
        let b = fixed_batch(&from, &dev)?;
        let m = from_tensors(ck.weights.clone(), &from, &dev)?;
        let logits = m.forward(&b, None)?;
        (Some(b), Some(logits))
    } else {
        (None, None)
    };
    let mut state: Option<TrainerState> = match &ck.trainer {
        Some(t) => Some(
            serde_json::from_value(t.clone())
                .map_err(|e| ModelError::checkpoint(ck.dir.join(checkpoint::TRAINER), e))?,
        ),
        None => None,
    };
    // Through every intermediate age, as the Learner would.
    let (mut cfg, mut weights, mut moments) = (from.clone(), ck.weights, ck.optimizer);
    for age in AGES
        .iter()
        .map(|a| a.age)
        .filter(|&a| a > from.age && a <= to_age)
    {
        let next = growth::grown_config(&cfg, age)?;
        let seed = state.as_ref().map_or(0, |s| s.options.seed) ^ u64::from(age);
        weights = growth::grow(&weights, &cfg, &next, placement, seed)?;
        moments = match moments {
            Some(m) => Some(growth::grow_moments(&m, &cfg, &next, placement)?),
            None => None,
        };
        cfg = next;
    }
    let max_logit_diff = match (batch, before) {
        (Some(b), Some(before)) => {
            let after = from_tensors(weights.clone(), &cfg, &dev)?.forward(&b, None)?;
            Some(
                (before - after)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?,
            )
        }
        _ => None,
    };
    if let Some(s) = state.as_mut() {
        s.rewarm();
    }
    let state_json = state
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| ModelError::Data(e.to_string()))?;
    let step = state.as_ref().map_or(0, |s| s.step);
    let out = checkpoint::save(
        &home.age_checkpoint(to_age),
        step,
        &cfg,
        &ck.tokenizer,
        &weights,
        moments.as_ref(),
        state_json.as_ref(),
    )?;
    Ok(GrowReport {
        from_age: from.age,
        to_age,
        params_before: from.param_count(),
        params_after: cfg.param_count(),
        placement,
        max_logit_diff,
        checkpoint: out,
    })
}
