//! [`Trainer`]: trains a [`Thau`] model on a [`Corpus`]: packed windows, seeded batch
//! order, gradient accumulation, AdamW with clipping and a warmup + cosine schedule,
//! evaluation on the held-out split, and checkpoints that resume bit-for-bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, Checkpoint};
use super::config::ModelConfig;
use super::data::{Batcher, Corpus, Windows};
use super::growth::{self, Placement};
use super::ops::IGNORE_INDEX;
use super::optim::{AdamW, AdamWConfig, Schedule};
use super::reading::Lexicon;
use super::tokenizer::ThauTokenizer;
use super::transformer::{from_varmap, init_weights, weight_shapes, Thau};
use super::{ModelError, Result};

/// Training hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub batch_size: usize,
    pub seq_len: usize,
    /// Micro-batches per optimizer step.
    pub accum: usize,
    pub lr: f64,
    /// Final learning rate as a fraction of `lr`.
    pub min_lr_ratio: f64,
    pub warmup: u64,
    /// Length of the cosine schedule in steps.
    pub total_steps: u64,
    pub adamw: AdamWConfig,
    /// Held-out batches per evaluation.
    pub eval_batches: usize,
    pub seed: u64,
    /// Share of examples held out.
    pub heldout: f64,
    /// Give every conversation windows of its own instead of packing it behind other
    /// examples ([`Windows::pack_chats_apart`]); `thau train --dataset` sets it.
    #[serde(default)]
    pub chats_apart: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            batch_size: 8,
            seq_len: 256,
            accum: 1,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup: 30,
            total_steps: 1000,
            adamw: AdamWConfig::default(),
            eval_batches: 16,
            seed: 42,
            heldout: super::data::HELDOUT_FRACTION,
            chats_apart: false,
        }
    }
}

/// One point of the loss curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPoint {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub eval_loss: Option<f64>,
}

/// Everything besides weights and moments that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub tokens_seen: u64,
    pub options: TrainOptions,
    pub batcher: Batcher,
    pub history: Vec<LogPoint>,
    /// Step at which the learning-rate schedule (re)starts: 0, or the step of the last
    /// growth, after which the learning rate warms up again.
    #[serde(default)]
    pub schedule_origin: u64,
}

impl TrainerState {
    /// Restarts the warmup at the current step, keeping the schedule's length.
    pub fn rewarm(&mut self) {
        let horizon = self
            .options
            .total_steps
            .saturating_sub(self.schedule_origin);
        self.schedule_origin = self.step;
        self.options.total_steps = self.step + horizon.max(2 * self.options.warmup);
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Tokens processed (inputs) in this step.
    pub tokens: usize,
    pub seconds: f64,
}

/// Held-out evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub loss: f64,
    pub perplexity: f64,
    /// Tokens scored.
    pub tokens: usize,
    /// Cross-entropy of a unigram model fitted on the training split (the baseline to beat).
    pub unigram_loss: f64,
}

/// Trains one model.
pub struct Trainer {
    pub config: ModelConfig,
    pub tokenizer: ThauTokenizer,
    varmap: VarMap,
    model: Thau,
    opt: AdamW,
    pub train: Windows,
    pub heldout: Windows,
    pub state: TrainerState,
    dev: Device,
}

impl Trainer {
    /// A fresh model (weights from `opts.seed`) on `corpus`.
    pub fn new(
        config: ModelConfig,
        tokenizer: ThauTokenizer,
        corpus: &Corpus,
        opts: TrainOptions,
        dev: &Device,
    ) -> Result<Self> {
        config.validate()?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(ModelError::Config(format!(
                "tokenizer has {} tokens but the model only {} embeddings",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        let varmap = init_weights(&config, opts.seed, DType::F32, dev)?;
        Self::assemble(config, tokenizer, varmap, corpus, opts, dev)
    }

    fn assemble(
        config: ModelConfig,
        tokenizer: ThauTokenizer,
        varmap: VarMap,
        corpus: &Corpus,
        opts: TrainOptions,
        dev: &Device,
    ) -> Result<Self> {
        if opts.seq_len > config.max_seq_len {
            return Err(ModelError::Config(format!(
                "seq_len {} exceeds the model's context {}",
                opts.seq_len, config.max_seq_len
            )));
        }
        if opts.batch_size == 0 || opts.accum == 0 {
            return Err(ModelError::Config(
                "batch size and accumulation must be positive".into(),
            ));
        }
        let (train_ex, held_ex) = corpus.split(opts.heldout);
        let pack = if opts.chats_apart {
            Windows::pack_chats_apart
        } else {
            Windows::pack
        };
        let train = pack(&train_ex, &tokenizer, opts.seq_len)?;
        let heldout = pack(&held_ex, &tokenizer, opts.seq_len)?;
        if train.is_empty() {
            return Err(ModelError::Data(
                "the training split is empty: add more data".into(),
            ));
        }
        let lexicon = std::sync::Arc::new(Lexicon::of(&tokenizer));
        let model = from_varmap(&varmap, &config, DType::F32, dev)?.with_lexicon(lexicon);
        let opt = AdamW::new(&varmap, opts.adamw)?;
        Ok(Trainer {
            state: TrainerState {
                step: 0,
                tokens_seen: 0,
                batcher: Batcher::new(opts.seed),
                options: opts,
                history: Vec::new(),
                schedule_origin: 0,
            },
            config,
            tokenizer,
            varmap,
            model,
            opt,
            train,
            heldout,
            dev: dev.clone(),
        })
    }

    /// Continues from a training checkpoint; `opts`, when given, replaces the saved
    /// options except what the data order depends on (seed, batch size, sequence length).
    pub fn resume(
        ckpt: Checkpoint,
        corpus: &Corpus,
        opts: Option<TrainOptions>,
        dev: &Device,
    ) -> Result<Self> {
        let state_json = ckpt.trainer.clone().ok_or_else(|| {
            ModelError::checkpoint(&ckpt.dir, "no trainer.json: not a training checkpoint")
        })?;
        let mut state: TrainerState = serde_json::from_value(state_json)
            .map_err(|e| ModelError::checkpoint(ckpt.dir.join(checkpoint::TRAINER), e))?;
        if let Some(o) = opts {
            state.options = TrainOptions {
                seed: state.options.seed,
                batch_size: state.options.batch_size,
                seq_len: state.options.seq_len,
                ..o
            };
        }
        let weights_file = ckpt.dir.join(checkpoint::WEIGHTS);
        let varmap = varmap_from(&ckpt.weights, &ckpt.config, dev)
            .map_err(|e| ModelError::checkpoint(&weights_file, e))?;
        let mut t = Self::assemble(
            ckpt.config.clone(),
            ckpt.tokenizer.clone(),
            varmap,
            corpus,
            state.options.clone(),
            dev,
        )?;
        if let Some(opt_state) = &ckpt.optimizer {
            t.opt
                .load_state(opt_state, state.step)
                .map_err(|e| ModelError::checkpoint(ckpt.dir.join(checkpoint::OPTIMIZER), e))?;
        }
        t.state = state;
        Ok(t)
    }

    /// This trainer grown into `to` ([`growth::grow`], [`growth::grown_config`]): same
    /// function, same data order, AdamW moments zero-extended, the learning rate warming
    /// up again.
    pub fn grown(self, to: &ModelConfig, placement: Placement, corpus: &Corpus) -> Result<Trainer> {
        let to = to.clone();
        let seed = self.state.options.seed ^ u64::from(to.age);
        let weights = growth::grow(&self.weights()?, &self.config, &to, placement, seed)?;
        let moments = growth::grow_moments(&self.opt.state()?, &self.config, &to, placement)?;
        let mut state = self.state.clone();
        state.rewarm();
        let varmap = varmap_from(&weights, &to, &self.dev)?;
        let mut t = Self::assemble(
            to,
            self.tokenizer.clone(),
            varmap,
            corpus,
            state.options.clone(),
            &self.dev,
        )?;
        t.opt.load_state(&moments, state.step)?;
        t.state = state;
        Ok(t)
    }

    pub fn model(&self) -> &Thau {
        &self.model
    }

    /// The schedule of the current options, counted from [`TrainerState::schedule_origin`].
    pub fn schedule(&self) -> Schedule {
        let o = &self.state.options;
        Schedule {
            peak: o.lr,
            floor: o.lr * o.min_lr_ratio,
            warmup: o.warmup,
            total: o.total_steps.saturating_sub(self.state.schedule_origin),
        }
    }

    /// One optimizer step over `accum` micro-batches of the training windows.
    pub fn step(&mut self) -> Result<StepReport> {
        let o = self.state.options.clone();
        let batches: Vec<Vec<usize>> = (0..o.accum)
            .map(|_| self.state.batcher.next(o.batch_size, self.train.len()))
            .collect();
        let train = std::mem::take(&mut self.train);
        let report = self.step_on(&train, &batches);
        self.train = train;
        report
    }

    /// One optimizer step on chosen windows of `data`: one micro-batch per entry of
    /// `batches` (gradients accumulated), whatever the configured batch size. The Learner
    /// uses it to train on gap items mixed with replay.
    pub fn step_on(&mut self, data: &Windows, batches: &[Vec<usize>]) -> Result<StepReport> {
        let start = Instant::now();
        if batches.is_empty() || batches.iter().any(|b| b.is_empty()) {
            return Err(ModelError::Data(
                "a training step needs at least one window".into(),
            ));
        }
        let mut grads = self.opt.zero_grads();
        let mut loss_sum = 0.0;
        let mut tokens = 0;
        for idx in batches {
            let (x, y) = data.batch(idx, &self.dev)?;
            let (loss, _) = self.model.loss(&x, &y)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            let store = loss.backward()?;
            self.opt.accumulate(&store, &mut grads)?;
            // Counted in whole windows, trimmed padding included: `tokens_seen /
            // seq_len` is the number of examples the growth policy reads.
            tokens += idx.len() * data.seq_len;
        }
        let accum = batches.len();
        let lr = self
            .schedule()
            .lr(self.state.step - self.state.schedule_origin);
        let grad_norm = self.opt.step(&grads, 1.0 / accum as f64, lr)?;
        self.state.step += 1;
        self.state.tokens_seen += tokens as u64;
        let loss = loss_sum / accum as f64;
        if !loss.is_finite() {
            return Err(ModelError::Data(format!(
                "loss became {loss} at step {}",
                self.state.step
            )));
        }
        self.state.history.push(LogPoint {
            step: self.state.step,
            loss,
            lr,
            eval_loss: None,
        });
        Ok(StepReport {
            step: self.state.step,
            loss,
            lr,
            grad_norm,
            tokens,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Mean loss per learned token on (up to `eval_batches` batches of) the held-out split,
    /// recorded on the newest point of the loss curve.
    pub fn evaluate(&mut self) -> Result<EvalReport> {
        let report = evaluate(
            &self.model,
            &self.heldout,
            self.state.options.batch_size,
            self.state.options.eval_batches,
            &self.dev,
            &self.train,
        )?;
        if let Some(last) = self.state.history.last_mut() {
            last.eval_loss = Some(report.loss);
        }
        Ok(report)
    }

    /// The current weights by name.
    pub fn weights(&self) -> Result<HashMap<String, Tensor>> {
        super::transformer::tensors_of(&self.varmap)
    }

    /// Writes a full training checkpoint under `age_dir`.
    pub fn save(&self, age_dir: &Path) -> Result<PathBuf> {
        let state =
            serde_json::to_value(&self.state).map_err(|e| ModelError::Data(e.to_string()))?;
        checkpoint::save(
            age_dir,
            self.state.step,
            &self.config,
            &self.tokenizer,
            &self.weights()?,
            Some(&self.opt.state()?),
            Some(&state),
        )
    }
}

/// Trainable variables holding `weights` (every weight of `cfg` must be there).
fn varmap_from(
    weights: &HashMap<String, Tensor>,
    cfg: &ModelConfig,
    dev: &Device,
) -> Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Config("weight map lock poisoned".into()))?;
        for (name, shape) in weight_shapes(cfg) {
            let t = weights
                .get(&name)
                .ok_or_else(|| ModelError::Config(format!("tensor `{name}` is missing")))?;
            if t.dims() != shape.as_slice() {
                return Err(ModelError::Config(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            data.insert(
                name,
                Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(dev)?)?,
            );
        }
    }
    Ok(varmap)
}

/// Held-out loss of `model` on up to `max_batches` batches of `windows`, plus the unigram
/// baseline fitted on `reference` (the training windows).
pub fn evaluate(
    model: &Thau,
    windows: &Windows,
    batch: usize,
    max_batches: usize,
    dev: &Device,
    reference: &Windows,
) -> Result<EvalReport> {
    if windows.is_empty() {
        return Err(ModelError::Data(
            "the held-out split is empty: add more data".into(),
        ));
    }
    let (mut nll, mut count) = (0.0f64, 0usize);
    let n = windows.len().min(batch * max_batches.max(1));
    for chunk in (0..n).collect::<Vec<_>>().chunks(batch) {
        let (x, y) = windows.batch(chunk, dev)?;
        let (loss, c) = model.loss(&x, &y)?;
        nll += f64::from(loss.to_scalar::<f32>()?) * c as f64;
        count += c;
    }
    let loss = nll / count.max(1) as f64;
    Ok(EvalReport {
        loss,
        perplexity: loss.exp(),
        tokens: count,
        unigram_loss: unigram_loss(reference, windows, n, model.cfg.vocab_size),
    })
}

/// Cross-entropy of the first `n` windows of `eval` under add-one-smoothed unigram
/// frequencies of `train`'s targets.
fn unigram_loss(train: &Windows, eval: &Windows, n: usize, vocab: usize) -> f64 {
    let mut counts = vec![1.0f64; vocab];
    for t in train
        .targets
        .iter()
        .flatten()
        .filter(|&&t| t != IGNORE_INDEX)
    {
        counts[*t as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let (mut nll, mut c) = (0.0, 0usize);
    for t in eval.targets[..n]
        .iter()
        .flatten()
        .filter(|&&t| t != IGNORE_INDEX)
    {
        nll -= (counts[*t as usize] / total).ln();
        c += 1;
    }
    nll / c.max(1) as f64
}
