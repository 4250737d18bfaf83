//! `thau bench`: measured speed of THAU against the PyTorch reference in `bench/`.
//!
//! [`train_bench`] trains the age-0 shape (batch 8 × 256 tokens, f32, AdamW) on random
//! tokens and reports tokens/s with the time split into forward, backward and optimizer;
//! [`decode_bench`] decodes greedily at batch 1 with the KV cache. Both run the reference
//! script `bench/torch_reference.py` with the same shapes in the same run when Python and
//! torch are installed, and report the ratio. Without torch the reference is `null` and
//! the report says why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::model::generate::{generate, SamplingParams};
use crate::model::optim::{AdamW, AdamWConfig};
use crate::model::tokenizer::ThauTokenizer;
use crate::model::transformer::{from_tensors, from_varmap, init_weights};
use crate::model::{ModelConfig, Result};

/// Where the reference script lives, relative to the repository root.
pub const REFERENCE_SCRIPT: &str = "bench/torch_reference.py";

/// Shapes of a benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    pub age: u32,
    pub vocab: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub d_ff: usize,
    pub batch: usize,
    pub seq: usize,
    pub params: u64,
    pub dtype: &'static str,
    pub threads: usize,
}

/// One benchmark's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub bench: &'static str,
    pub tokens_per_s: f64,
    pub reference_tokens_per_s: Option<f64>,
    /// THAU ÷ reference (> 1 means THAU is faster).
    pub ratio: Option<f64>,
    pub reference: String,
    pub config: BenchConfig,
    /// Per-step seconds (training): forward, backward, optimizer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_s: Option<[f64; 3]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_split_s: Option<[f64; 3]>,
}

impl BenchReport {
    fn new(
        bench: &'static str,
        tokens_per_s: f64,
        config: BenchConfig,
        split_s: Option<[f64; 3]>,
    ) -> Self {
        BenchReport {
            bench,
            tokens_per_s,
            reference_tokens_per_s: None,
            ratio: None,
            reference: "not run (--no-reference)".into(),
            config,
            split_s,
            reference_split_s: None,
        }
    }

    /// Runs the reference script in the same mode with the same shapes and records its
    /// figures and the ratio (or why it could not run).
    fn add_reference(&mut self, root: &Path, count: [&str; 2]) {
        let threads = self.config.threads.to_string();
        let args = [
            "--mode",
            self.bench,
            "--threads",
            &threads,
            count[0],
            count[1],
        ];
        match reference(root, &args) {
            Ok(v) => {
                let r = &v[self.bench];
                self.reference_tokens_per_s = r["tokens_per_s"].as_f64();
                self.ratio = self.reference_tokens_per_s.map(|t| self.tokens_per_s / t);
                self.reference = format!("pytorch {}", v["torch_version"].as_str().unwrap_or("?"));
                let split = ["forward_s", "backward_s", "optimizer_s"].map(|k| r[k].as_f64());
                if let [Some(a), Some(b), Some(c)] = split {
                    self.reference_split_s = Some([a, b, c]);
                }
            }
            Err(why) => self.reference = format!("not run: {why}"),
        }
    }
}

fn bench_config(batch: usize, seq: usize) -> Result<(ModelConfig, BenchConfig)> {
    let cfg = ModelConfig::for_age(0, 8192, seq.max(256))?;
    let b = BenchConfig {
        age: 0,
        vocab: cfg.vocab_size,
        d_model: cfg.d_model,
        layers: cfg.n_layers,
        heads: cfg.n_heads,
        d_ff: cfg.d_ff,
        batch,
        seq,
        params: cfg.param_count(),
        dtype: "f32",
        threads: rayon::current_num_threads(),
    };
    Ok((cfg, b))
}

/// Runs the PyTorch reference; `Err` carries the reason it could not run.
fn reference(root: &Path, args: &[&str]) -> std::result::Result<serde_json::Value, String> {
    let script = root.join(REFERENCE_SCRIPT);
    if !script.exists() {
        return Err(format!("{} not found", script.display()));
    }
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
        format!(
            "reference printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )
    })?;
    if let Some(e) = v.get("error") {
        return Err(format!("reference: {e} (pip install torch)"));
    }
    Ok(v)
}

fn random_ids(rng: &mut ChaCha8Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// Training throughput: `steps` timed steps after one warm-up step.
pub fn train_bench(root: &Path, steps: usize, with_reference: bool) -> Result<BenchReport> {
    let (cfg, bc) = bench_config(8, 256)?;
    let dev = Device::Cpu;
    let vm = init_weights(&cfg, 0, DType::F32, &dev)?;
    let model = from_varmap(&vm, &cfg, DType::F32, &dev)?;
    let mut opt = AdamW::new(&vm, AdamWConfig::default())?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (mut fwd, mut bwd, mut upd) = (0.0, 0.0, 0.0);
    let mut timed = 0.0;
    for step in 0..=steps {
        let ids = random_ids(&mut rng, bc.batch * (bc.seq + 1), bc.vocab);
        let all = Tensor::from_vec(ids, (bc.batch, bc.seq + 1), &dev)?;
        let x = all.narrow(1, 0, bc.seq)?.contiguous()?;
        let y = all.narrow(1, 1, bc.seq)?.contiguous()?;
        let t0 = Instant::now();
        let (loss, _) = model.loss(&x, &y)?;
        loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let store = loss.backward()?;
        let mut grads = opt.zero_grads();
        opt.accumulate(&store, &mut grads)?;
        let t2 = Instant::now();
        opt.step(&grads, 1.0, 3e-4)?;
        let t3 = Instant::now();
        if step > 0 {
            fwd += (t1 - t0).as_secs_f64();
            bwd += (t2 - t1).as_secs_f64();
            upd += (t3 - t2).as_secs_f64();
            timed += (t3 - t0).as_secs_f64();
        }
    }
    let n = steps.max(1) as f64;
    let tokens_per_s = (bc.batch * bc.seq * steps) as f64 / timed.max(1e-9);
    let mut report = BenchReport::new("train", tokens_per_s, bc, Some([fwd / n, bwd / n, upd / n]));
    if with_reference {
        report.add_reference(root, ["--steps", &steps.to_string()]);
    }
    Ok(report)
}

/// Batch-1 greedy decode throughput with the KV cache.
pub fn decode_bench(root: &Path, tokens: usize, with_reference: bool) -> Result<BenchReport> {
    let (cfg, mut bc) = bench_config(1, 16)?;
    let dev = Device::Cpu;
    let vm = init_weights(&cfg, 0, DType::F32, &dev)?;
    // Plain tensors, as the Inference actor loads them from a checkpoint (no gradients).
    let weights = vm
        .data()
        .lock()
        .map_err(|_| crate::model::ModelError::Config("weight map lock poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let model = from_tensors(weights, &cfg, &dev)?;
    // The streaming path decodes ids to text; ids past this tokenizer's vocabulary
    // decode to nothing, which does not change what is timed (the model).
    let tok = ThauTokenizer::train(["abc abd"].into_iter(), 300)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let prompt = random_ids(&mut rng, 16, cfg.vocab_size);
    let params = SamplingParams {
        max_new_tokens: tokens,
        temperature: 0.0,
        repetition_penalty: 1.0,
        ..Default::default()
    };
    // Warm-up, then the timed run (prefill included, as a user would experience it).
    generate(
        &model,
        &tok,
        &prompt,
        &SamplingParams {
            max_new_tokens: 4,
            ..params.clone()
        },
        &[],
        &mut |_| true,
    )?;
    let t0 = Instant::now();
    let g = generate(&model, &tok, &prompt, &params, &[], &mut |_| true)?;
    let secs = t0.elapsed().as_secs_f64();
    let tokens_per_s = g.ids.len() as f64 / secs.max(1e-9);
    bc.seq = tokens;
    let mut report = BenchReport::new("decode", tokens_per_s, bc, None);
    if with_reference {
        report.add_reference(root, ["--decode-tokens", &tokens.to_string()]);
    }
    Ok(report)
}

/// The repository root: where `bench/` is (the current directory or the crate's source).
pub fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    if cwd.join(REFERENCE_SCRIPT).exists() {
        return cwd;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
