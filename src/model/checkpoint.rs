//! Checkpoints: everything needed to use or resume a model, written atomically.
//!
//! ```text
//! checkpoints/age_N/
//!   latest                 name of the newest complete checkpoint (replaced atomically)
//!   step_00001200/
//!     config.json          ModelConfig
//!     tokenizer.json       the BPE tokenizer
//!     model.safetensors    weights (GGUF llama tensor names)
//!     optimizer.safetensors  AdamW moments m.NAME / v.NAME (training checkpoints)
//!     trainer.json         step, schedule, data position, seed, loss history
//! ```
//! A checkpoint is written into a temporary directory, every file fsynced, then renamed
//! into place, and only then does `latest` point at it: a crash leaves either the old or
//! the new checkpoint, never a mix. The newest [`KEEP_CHECKPOINTS`] are kept.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::config::ModelConfig;
use super::tokenizer::ThauTokenizer;
use super::{ModelError, Result};

/// How many checkpoints of one age are kept on disk.
pub const KEEP_CHECKPOINTS: usize = 2;
pub const LATEST: &str = "latest";
pub const CONFIG: &str = "config.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const OPTIMIZER: &str = "optimizer.safetensors";
pub const TRAINER: &str = "trainer.json";

/// What a checkpoint holds.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub tokenizer: ThauTokenizer,
    pub weights: HashMap<String, Tensor>,
    pub optimizer: Option<HashMap<String, Tensor>>,
    pub trainer: Option<serde_json::Value>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::checkpoint(path, e)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| io(path, e))?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(path, e))
}

fn save_tensors_synced(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(|e| io(path, e))?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(path, e))
}

/// Writes a checkpoint for `step` under `age_dir` and points `latest` at it.
pub fn save(
    age_dir: &Path,
    step: u64,
    config: &ModelConfig,
    tokenizer: &ThauTokenizer,
    weights: &HashMap<String, Tensor>,
    optimizer: Option<&HashMap<String, Tensor>>,
    trainer: Option<&serde_json::Value>,
) -> Result<PathBuf> {
    fs::create_dir_all(age_dir).map_err(|e| io(age_dir, e))?;
    let name = format!("step_{step:08}");
    let tmp = age_dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
    fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let result = (|| {
        let cfg = serde_json::to_vec_pretty(config).map_err(|e| io(&tmp, e))?;
        write_synced(&tmp.join(CONFIG), &cfg)?;
        write_synced(&tmp.join(TOKENIZER), tokenizer.to_json()?.as_bytes())?;
        save_tensors_synced(weights, &tmp.join(WEIGHTS))?;
        if let Some(opt) = optimizer {
            save_tensors_synced(opt, &tmp.join(OPTIMIZER))?;
        }
        if let Some(t) = trainer {
            let bytes = serde_json::to_vec_pretty(t).map_err(|e| io(&tmp, e))?;
            write_synced(&tmp.join(TRAINER), &bytes)?;
        }
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&tmp, e))
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dest = age_dir.join(&name);
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(|e| io(&dest, e))?;
    }
    fs::rename(&tmp, &dest).map_err(|e| io(&dest, e))?;
    crate::fsutil::atomic_write(&age_dir.join(LATEST), name.as_bytes())
        .map_err(|e| io(&age_dir.join(LATEST), e))?;
    prune(age_dir);
    Ok(dest)
}

/// Removes all but the newest [`KEEP_CHECKPOINTS`] complete checkpoints and stale temp dirs.
fn prune(age_dir: &Path) {
    let Ok(rd) = fs::read_dir(age_dir) else {
        return;
    };
    let mut steps: Vec<PathBuf> = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("step_") {
            steps.push(e.path());
        } else if name.starts_with(".step_") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    steps.sort();
    let keep_from = steps.len().saturating_sub(KEEP_CHECKPOINTS);
    for old in &steps[..keep_from] {
        let _ = fs::remove_dir_all(old);
    }
}

/// The checkpoint `latest` points at in `age_dir`, if any.
pub fn latest(age_dir: &Path) -> Result<Option<PathBuf>> {
    let p = age_dir.join(LATEST);
    if !p.exists() {
        return Ok(None);
    }
    let name = fs::read_to_string(&p).map_err(|e| io(&p, e))?;
    let dir = age_dir.join(name.trim());
    if !dir.is_dir() {
        return Err(io(
            &p,
            format!("points at `{}`, which does not exist", name.trim()),
        ));
    }
    Ok(Some(dir))
}

/// The age directories under `checkpoints/` (`age_N`), youngest first.
pub fn ages(checkpoints: &Path) -> Vec<(u32, PathBuf)> {
    let mut ages: Vec<(u32, PathBuf)> = fs::read_dir(checkpoints)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.strip_prefix("age_")?.parse().ok().map(|a| (a, e.path()))
        })
        .collect();
    ages.sort();
    ages
}

/// The highest step saved in `age_dir` (`step_N` directories), if any.
pub fn newest_step(age_dir: &Path) -> Option<u64> {
    fs::read_dir(age_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step_")?.parse().ok())
        .max()
}

/// The newest checkpoint of the highest age under `checkpoints/`, if any.
pub fn newest(checkpoints: &Path) -> Result<Option<PathBuf>> {
    for (_, dir) in ages(checkpoints).into_iter().rev() {
        if let Some(c) = latest(&dir)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn load_tensors(path: &Path, dev: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, dev).map_err(|e| io(path, e))
}

/// A copy head saved before it had a self key ([`super::copy::COPY_S`]) or a follow weight
/// ([`super::copy::COPY_FOLLOW`]) or a reading weight ([`super::copy::COPY_READ`]) gets
/// zero ones: the same function, now trainable.
/// Returns the names and the zeros added.
fn upgrade_copy_head(
    config: &ModelConfig,
    weights: &mut HashMap<String, Tensor>,
    dev: &Device,
) -> Result<Vec<(String, Tensor)>> {
    if !config.copy_head {
        return Ok(Vec::new());
    }
    let dtype = weights
        .get(super::copy::COPY_K)
        .map_or(DType::F32, Tensor::dtype);
    let mut added = Vec::new();
    for (name, shape) in super::copy::copy_shapes(config) {
        if matches!(
            name.as_str(),
            super::copy::COPY_S | super::copy::COPY_FOLLOW | super::copy::COPY_READ
        ) && !weights.contains_key(&name)
        {
            let zero = Tensor::zeros(shape.as_slice(), dtype, dev)?;
            weights.insert(name.clone(), zero.clone());
            added.push((name, zero));
        }
    }
    Ok(added)
}

/// Loads a checkpoint directory. Every file is checked: a missing, truncated or
/// mismatched file is an error that names it.
pub fn load(dir: &Path, dev: &Device, with_training_state: bool) -> Result<Checkpoint> {
    let cfg_path = dir.join(CONFIG);
    let bytes = fs::read(&cfg_path).map_err(|e| io(&cfg_path, e))?;
    let config: ModelConfig = serde_json::from_slice(&bytes).map_err(|e| io(&cfg_path, e))?;
    config.validate().map_err(|e| io(&cfg_path, e))?;
    let tok_path = dir.join(TOKENIZER);
    let tokenizer = ThauTokenizer::load(&tok_path).map_err(|e| io(&tok_path, e))?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(io(
            &tok_path,
            format!(
                "{} tokens, but the model has {} embeddings",
                tokenizer.vocab_size(),
                config.vocab_size
            ),
        ));
    }
    let w_path = dir.join(WEIGHTS);
    let mut weights = load_tensors(&w_path, dev)?;
    let added = upgrade_copy_head(&config, &mut weights, dev)?;
    for (name, shape) in super::transformer::weight_shapes(&config) {
        match weights.get(&name) {
            None => return Err(io(&w_path, format!("tensor `{name}` is missing"))),
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(io(
                    &w_path,
                    format!(
                        "tensor `{name}` has shape {:?}, config.json says {shape:?}",
                        t.dims()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    let (mut optimizer, mut trainer) = (None, None);
    if with_training_state {
        let o = dir.join(OPTIMIZER);
        if o.exists() {
            let mut state = load_tensors(&o, &Device::Cpu)?;
            // Adam's moments of an added weight start at zero, as for a fresh one.
            for (name, zero) in &added {
                for prefix in ["m", "v"] {
                    state.insert(format!("{prefix}.{name}"), zero.to_device(&Device::Cpu)?);
                }
            }
            optimizer = Some(state);
        }
        let t = dir.join(TRAINER);
        if t.exists() {
            let bytes = fs::read(&t).map_err(|e| io(&t, e))?;
            trainer = Some(serde_json::from_slice(&bytes).map_err(|e| io(&t, e))?);
        }
    }
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        config,
        tokenizer,
        weights,
        optimizer,
        trainer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::copy::{COPY_FOLLOW, COPY_READ, COPY_S};

    #[test]
    fn a_copy_head_saved_before_its_newer_weights_loads_them_as_zeros() {
        let texts = ["the code of ana is blue", "the code of bob is red"];
        let tok = ThauTokenizer::train(texts.iter(), 300).unwrap();
        let mut cfg = ModelConfig::tiny(tok.vocab_size());
        cfg.copy_head = true;
        let vm =
            crate::model::transformer::init_weights(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
        let mut weights = crate::model::transformer::tensors_of(&vm).unwrap();
        // As the checkpoints written before the self key, the follow and reading weights.
        for name in [COPY_S, COPY_FOLLOW, COPY_READ] {
            weights.remove(name);
        }
        let opt: HashMap<String, Tensor> = weights
            .iter()
            .flat_map(|(k, v)| ["m", "v"].map(|p| (format!("{p}.{k}"), v.zeros_like().unwrap())))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let ck = save(dir.path(), 1, &cfg, &tok, &weights, Some(&opt), None).unwrap();
        let back = load(&ck, &Device::Cpu, true).unwrap();
        for (name, dims) in [
            (COPY_S, vec![cfg.head_dim, cfg.d_model]),
            (COPY_FOLLOW, vec![1, 1]),
            (COPY_READ, vec![1, 1]),
        ] {
            let w = &back.weights[name];
            assert_eq!(w.dims(), dims.as_slice());
            let sum: f32 = w.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert_eq!(sum, 0.0, "{name}");
            let opt = back.optimizer.as_ref().unwrap();
            assert!(opt.contains_key(&format!("v.{name}")), "{name}");
        }
        // A model without a copy head gets nothing.
        let plain = cfg.without_copy_head();
        weights.retain(|k, _| !crate::model::copy::is_copy_weight(k));
        let ck = save(
            &dir.path().join("plain"),
            1,
            &plain,
            &tok,
            &weights,
            None,
            None,
        )
        .unwrap();
        assert!(!load(&ck, &Device::Cpu, false)
            .unwrap()
            .weights
            .contains_key(COPY_S));
    }
}
