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
/// llama.cpp's decode timing on an exported GGUF (needs llama-cpp-python).
pub const LLAMACPP_SCRIPT: &str = "bench/llamacpp_decode.py";

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
    /// The CPU the figures were measured on ([`cpu_model`]).
    pub cpu: String,
    /// Where THAU ran: `cpu`, or `cuda:N` (the `device` setting).
    pub device: String,
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
    /// Decode: llama.cpp on the same model exported as f32 GGUF (`--llamacpp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llamacpp: Option<LlamaCppFigure>,
}

/// llama.cpp's decode speed on THAU's own exported model.
#[derive(Debug, Clone, Serialize)]
pub struct LlamaCppFigure {
    pub tokens_per_s: Option<f64>,
    /// THAU ÷ llama.cpp.
    pub ratio: Option<f64>,
    /// `llama.cpp VERSION`, or why it did not run.
    pub note: String,
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
            llamacpp: None,
        }
    }

    /// Exports `ck` as f32 GGUF to a temporary file and times llama.cpp decoding it with
    /// `bench/llamacpp_decode.py` (same precision, same threads).
    fn add_llamacpp(
        &mut self,
        root: &Path,
        ck: &crate::model::checkpoint::Checkpoint,
        tokens: usize,
    ) {
        let run = || -> std::result::Result<(f64, String), String> {
            let dir =
                std::env::temp_dir().join(format!("thau-bench-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let gguf = dir.join("thau-f32.gguf");
            let exported = crate::export::export_gguf(ck, crate::export::ExportType::F32, &gguf);
            let out = exported.map_err(|e| e.to_string()).and_then(|_| {
                Command::new("python3")
                    .arg(root.join(LLAMACPP_SCRIPT))
                    .arg(&gguf)
                    .args([
                        "--tokens",
                        &tokens.to_string(),
                        "--threads",
                        &self.config.threads.to_string(),
                    ])
                    .output()
                    .map_err(|e| format!("python3: {e}"))
            });
            let _ = std::fs::remove_dir_all(&dir);
            let out = out?;
            let line = String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or("")
                .to_string();
            let v: serde_json::Value = serde_json::from_str(&line)
                .map_err(|_| "llama.cpp script printed no JSON".to_string())?;
            if let Some(e) = v.get("error") {
                return Err(e.to_string());
            }
            let tps = v["decode"]["tokens_per_s"]
                .as_f64()
                .ok_or("no tokens_per_s")?;
            Ok((
                tps,
                format!("llama.cpp {}", v["version"].as_str().unwrap_or("?")),
            ))
        };
        self.llamacpp = Some(match run() {
            Ok((tps, note)) => LlamaCppFigure {
                tokens_per_s: Some(tps),
                ratio: Some(self.tokens_per_s / tps),
                note,
            },
            Err(why) => LlamaCppFigure {
                tokens_per_s: None,
                ratio: None,
                note: format!("not run: {why}"),
            },
        });
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

fn bench_config(batch: usize, seq: usize, dev: &Device) -> Result<(ModelConfig, BenchConfig)> {
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
        cpu: cpu_model(),
        device: match dev.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            other => format!("{other:?}").to_lowercase(),
        },
    };
    Ok((cfg, b))
}

/// The CPU of this machine: `/proc/cpuinfo`'s model name with its family and model numbers
/// (under a hypervisor the name alone, e.g. "AMD EPYC", covers several generations), or
/// "unknown" where there is no such file.
pub fn cpu_model() -> String {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return "unknown".into();
    };
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    match (field("model name"), field("cpu family"), field("model")) {
        (Some(name), Some(family), Some(model)) => {
            format!("{name} (family {family}, model {model})")
        }
        (Some(name), _, _) => name,
        _ => "unknown".into(),
    }
}

/// `thau bench speed`: both of the speed goals in one run.
#[derive(Debug, Clone, Serialize)]
pub struct SpeedReport {
    /// Training against the PyTorch reference (goal ≥ 1.0×).
    pub train: BenchReport,
    /// Batch-1 decode against PyTorch and llama.cpp on the exported GGUF (goal ≥ 1.0×
    /// against llama.cpp).
    pub decode: BenchReport,
    pub goal_ratio: f64,
}

/// Training (`steps` timed steps, against PyTorch) and batch-1 decode (`tokens`, against
/// PyTorch and llama.cpp) in one run.
pub fn speed_bench(root: &Path, steps: usize, tokens: usize) -> Result<SpeedReport> {
    Ok(SpeedReport {
        train: train_bench(root, steps, true, &Device::Cpu)?,
        decode: decode_bench(root, tokens, true, true, &Device::Cpu)?,
        goal_ratio: 1.0,
    })
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

/// Training throughput on `dev`: `steps` timed steps after one warm-up step.
pub fn train_bench(
    root: &Path,
    steps: usize,
    with_reference: bool,
    dev: &Device,
) -> Result<BenchReport> {
    let (cfg, bc) = bench_config(8, 256, dev)?;
    let dev = dev.clone();
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
pub fn decode_bench(
    root: &Path,
    tokens: usize,
    with_reference: bool,
    with_llamacpp: bool,
    dev: &Device,
) -> Result<BenchReport> {
    let dev = dev.clone();
    // A real 8k tokenizer (from the shipped corpus) so the model can also be exported.
    let corpus = crate::model::data::Corpus::load(&root.join("data/corpus"))?;
    let tok = ThauTokenizer::train(corpus.examples.iter().map(|e| e.text()), 8192)?;
    let (mut cfg, mut bc) = bench_config(1, 16, &dev)?;
    cfg.vocab_size = tok.vocab_size();
    let vm = init_weights(&cfg, 0, DType::F32, &dev)?;
    // Plain tensors, as the Inference actor loads them from a checkpoint (no gradients).
    let weights: std::collections::HashMap<String, Tensor> = vm
        .data()
        .lock()
        .map_err(|_| crate::model::ModelError::Config("weight map lock poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let model = from_tensors(weights.clone(), &cfg, &dev)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let prompt = random_ids(&mut rng, 16, cfg.vocab_size);
    let params = SamplingParams {
        max_new_tokens: tokens,
        temperature: 0.0,
        repetition_penalty: 1.0,
        no_repeat_ngram: 0,
        ..Default::default()
    };
    // Warm-up, then the timed run (prefill included, as a user would experience it).
    let warm = SamplingParams {
        max_new_tokens: 4,
        ..params.clone()
    };
    generate(&model, &tok, &prompt, &warm, &[], None, &mut |_| true)?;
    let t0 = Instant::now();
    let g = generate(&model, &tok, &prompt, &params, &[], None, &mut |_| true)?;
    let secs = t0.elapsed().as_secs_f64();
    let tokens_per_s = g.ids.len() as f64 / secs.max(1e-9);
    bc.seq = tokens;
    let mut report = BenchReport::new("decode", tokens_per_s, bc, None);
    if with_reference {
        report.add_reference(root, ["--decode-tokens", &tokens.to_string()]);
    }
    if with_llamacpp {
        let ck = crate::model::checkpoint::Checkpoint {
            dir: root.to_path_buf(),
            config: cfg,
            tokenizer: tok,
            weights,
            optimizer: None,
            trainer: None,
        };
        report.add_llamacpp(root, &ck, tokens);
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

/// Budgets of [`grow_bench`].
#[derive(Debug, Clone, Serialize)]
pub struct GrowPlan {
    pub steps_before: u64,
    pub steps_after: u64,
    pub scratch_steps: u64,
    pub eval_every: u64,
    /// Also run the non-exact stacking operator.
    pub stack: bool,
}

/// One held-out measurement on a training path.
#[derive(Debug, Clone, Serialize)]
pub struct FlopsPoint {
    pub step: u64,
    /// Training FLOPs so far: Σ 6 × parameters × tokens.
    pub flops: f64,
    pub heldout_loss: f64,
}

/// One training path of the growth benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct GrowPath {
    pub name: &'static str,
    pub curve: Vec<FlopsPoint>,
    pub best_loss: f64,
    /// FLOPs at which the held-out loss first reaches the target (interpolated between
    /// evaluations), if it does.
    pub flops_to_target: Option<f64>,
    /// `flops_to_target` ÷ the scratch path's.
    pub ratio: Option<f64>,
}

/// What `thau bench grow` reports.
#[derive(Debug, Clone, Serialize)]
pub struct GrowBenchReport {
    pub steps_before: u64,
    pub steps_after: u64,
    pub scratch_steps: u64,
    pub params_age0: u64,
    pub params_age1: u64,
    pub tokens_per_step: u64,
    /// The scratch run's final held-out loss: what every path must reach.
    pub target_loss: f64,
    pub paths: Vec<GrowPath>,
}

/// Runs `steps` steps of `t`, evaluating every `every` steps, extending `curve`.
fn run_path(
    t: &mut crate::model::train::Trainer,
    steps: u64,
    every: u64,
    flops: &mut f64,
    curve: &mut Vec<FlopsPoint>,
    log: &mut dyn FnMut(&str),
    name: &str,
) -> Result<()> {
    let per_step = 6.0
        * t.config.param_count() as f64
        * (t.state.options.batch_size * t.state.options.seq_len) as f64;
    for i in 1..=steps {
        t.step()?;
        *flops += per_step;
        if i % every == 0 || i == steps {
            let ev = t.evaluate()?;
            log(&format!(
                "{name}: step {} held-out loss {:.4}",
                t.state.step, ev.loss
            ));
            curve.push(FlopsPoint {
                step: t.state.step,
                flops: *flops,
                heldout_loss: ev.loss,
            });
        }
    }
    Ok(())
}

/// FLOPs at which `curve` first gets to `target`, interpolated linearly.
fn flops_to(curve: &[FlopsPoint], target: f64) -> Option<f64> {
    let i = curve.iter().position(|p| p.heldout_loss <= target)?;
    if i == 0 {
        return Some(curve[0].flops);
    }
    let (a, b) = (&curve[i - 1], &curve[i]);
    let frac = (a.heldout_loss - target) / (a.heldout_loss - b.heldout_loss).max(1e-12);
    Some(a.flops + frac * (b.flops - a.flops))
}

/// Growth against scratch on the shipped corpus: age 0 for `steps_before` steps, grown to
/// age 1 and trained `steps_after` more, versus age 1 trained from scratch for
/// `scratch_steps`; the FLOPs (6 × parameters × tokens) each path needs to reach the
/// scratch run's final held-out loss, and their ratio.
pub fn grow_bench(
    root: &Path,
    plan: &GrowPlan,
    log: &mut dyn FnMut(&str),
) -> Result<GrowBenchReport> {
    use crate::model::data::Corpus;
    use crate::model::growth::{grown_config, Placement};
    use crate::model::train::{TrainOptions, Trainer};
    let dev = Device::Cpu;
    let corpus = Corpus::load(&root.join("data/corpus"))?;
    let tok = ThauTokenizer::train(corpus.examples.iter().map(|e| e.text()), 8192)?;
    let age0 = ModelConfig::for_age(0, tok.vocab_size(), 256)?;
    let age1 = ModelConfig::for_age(1, tok.vocab_size(), 256)?;
    let opts = |total| TrainOptions {
        total_steps: total,
        eval_batches: 8,
        ..Default::default()
    };
    let tokens_per_step = (opts(0).batch_size * opts(0).seq_len) as u64;

    let mut scratch = Trainer::new(
        age1.clone(),
        tok.clone(),
        &corpus,
        opts(plan.scratch_steps),
        &dev,
    )?;
    let (mut flops, mut curve) = (0.0, Vec::new());
    run_path(
        &mut scratch,
        plan.scratch_steps,
        plan.eval_every,
        &mut flops,
        &mut curve,
        log,
        "scratch",
    )?;
    let target = curve.last().map_or(f64::NAN, |p| p.heldout_loss);
    let scratch_flops = flops_to(&curve, target);
    let mut paths = vec![GrowPath {
        name: "scratch",
        best_loss: curve
            .iter()
            .map(|p| p.heldout_loss)
            .fold(f64::INFINITY, f64::min),
        flops_to_target: scratch_flops,
        ratio: Some(1.0),
        curve,
    }];
    let placements: &[(&'static str, Placement)] = if plan.stack {
        &[("grow", Placement::Interleave), ("stack", Placement::Stack)]
    } else {
        &[("grow", Placement::Interleave)]
    };
    for &(name, placement) in placements {
        let mut t = Trainer::new(
            age0.clone(),
            tok.clone(),
            &corpus,
            opts(plan.steps_before + plan.steps_after),
            &dev,
        )?;
        let (mut flops, mut curve) = (0.0, Vec::new());
        run_path(
            &mut t,
            plan.steps_before,
            plan.eval_every,
            &mut flops,
            &mut curve,
            log,
            name,
        )?;
        let mut g = t.grown(&grown_config(&age0, 1)?, placement, &corpus)?;
        // The grown model's schedule ends with the path's budget.
        g.state.options.total_steps = plan.steps_before + plan.steps_after;
        run_path(
            &mut g,
            plan.steps_after,
            plan.eval_every,
            &mut flops,
            &mut curve,
            log,
            name,
        )?;
        let reached = flops_to(&curve, target);
        paths.push(GrowPath {
            name,
            best_loss: curve
                .iter()
                .map(|p| p.heldout_loss)
                .fold(f64::INFINITY, f64::min),
            ratio: reached.zip(scratch_flops).map(|(a, b)| a / b),
            flops_to_target: reached,
            curve,
        });
    }
    Ok(GrowBenchReport {
        steps_before: plan.steps_before,
        steps_after: plan.steps_after,
        scratch_steps: plan.scratch_steps,
        params_age0: age0.param_count(),
        params_age1: age1.param_count(),
        tokens_per_step,
        target_loss: target,
        paths,
    })
}
