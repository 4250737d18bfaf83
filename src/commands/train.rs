//! `thau train` and `thau eval`: [`train`] runs a [`Trainer`] on a corpus — resuming the
//! newest checkpoint of the age when there is one, else training the tokenizer and a fresh
//! model — for a number of steps or minutes, evaluating and checkpointing as it goes;
//! [`eval`] measures held-out loss of a checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;
use serde::Serialize;

use crate::home::Home;
use crate::model::checkpoint;
use crate::model::data::{Corpus, Windows};
use crate::model::reading::Lexicon;
use crate::model::tokenizer::ThauTokenizer;
use crate::model::train::{evaluate, EvalReport, StepReport, TrainOptions, Trainer};
use crate::model::transformer::from_tensors;
use crate::model::{ModelConfig, ModelError, Result};

/// Steps used to estimate the step time before sizing a time-limited schedule.
const PROBE_STEPS: u64 = 2;
/// Interval between held-out evaluations in a time-limited run.
pub const EVAL_INTERVAL: Duration = Duration::from_secs(60);
/// Steps between evaluations (and checkpoints) in a step-limited run.
const EVAL_EVERY_STEPS: u64 = 100;

/// How long to train.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Steps(u64),
    Minutes(f64),
}

/// What `thau train` was asked.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub data: PathBuf,
    pub age: u32,
    pub budget: Option<Budget>,
    pub options: TrainOptions,
    pub vocab_size: usize,
    /// Start from scratch even when a checkpoint exists.
    pub fresh: bool,
    /// Train on a dataset mixed with replay of `data`.
    pub dataset: Option<DatasetMix>,
    /// Give a model started from nothing a copy head.
    pub copy_head: bool,
    /// Where it trains (`device` in thau.toml: [`crate::model::device`]).
    pub device: Device,
}

/// `thau train --dataset`: a dataset file and how it is mixed with the corpus.
#[derive(Debug, Clone)]
pub struct DatasetMix {
    pub path: PathBuf,
    /// Share of the epoch drawn from the corpus.
    pub replay_ratio: f64,
    /// Copies of the dataset in the epoch.
    pub repeat: usize,
}

/// A point of the held-out loss curve.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub step: u64,
    pub seconds: f64,
    pub train_loss: Option<f64>,
    /// `None` when the corpus is too small to hold anything out.
    pub heldout_loss: Option<f64>,
}

/// What `thau train` did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub age: u32,
    pub params: u64,
    pub resumed_from: Option<PathBuf>,
    pub steps: u64,
    pub total_steps: u64,
    pub tokens: u64,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// Held-out loss of a unigram model fitted on the training split (the baseline).
    pub unigram_loss: Option<f64>,
    pub curve: Vec<CurvePoint>,
    pub checkpoint: PathBuf,
    pub interrupted: bool,
}

/// Progress events for the front end (a progress bar, logs).
pub enum Progress<'a> {
    Started {
        total_steps: u64,
        budget: Option<Budget>,
        params: u64,
        resumed: bool,
    },
    Step(&'a StepReport, f64),
    Eval(&'a CurvePoint),
}

/// Trains until the budget is spent or `stop` is set (Ctrl-C); always ends with a
/// checkpoint.
pub fn train(
    home: &Home,
    req: &TrainRequest,
    stop: &AtomicBool,
    on: &mut dyn FnMut(Progress),
) -> Result<TrainReport> {
    let mut corpus = Corpus::load(&req.data)?;
    if let Some(mix) = &req.dataset {
        let dataset = crate::tools::dataset::load_dataset(&mix.path)?;
        corpus.examples = crate::tools::dataset::mix_with_replay(
            &dataset,
            &corpus.examples,
            mix.repeat,
            mix.replay_ratio,
            req.options.seed,
        );
        corpus.files.push(mix.path.clone());
    }
    let dev = req.device.clone();
    let age_dir = home.age_checkpoint(req.age);
    let existing = if req.fresh {
        None
    } else {
        checkpoint::latest(&age_dir)?
    };
    let (mut trainer, resumed_from) = match existing {
        Some(dir) => {
            let mut ck = checkpoint::load(&dir, &dev, true)?;
            // This run's window layout (conversations apart or packed), not the saved one.
            if let Some(o) = ck
                .trainer
                .as_mut()
                .and_then(|t| t.get_mut("options"))
                .and_then(|o| o.as_object_mut())
            {
                o.insert("chats_apart".into(), req.options.chats_apart.into());
            }
            let mut t = Trainer::resume(ck, &corpus, None, &dev)?;
            // Keep the data order and schedule length of the run; take the new
            // learning-rate and evaluation settings.
            let (o, r) = (&mut t.state.options, &req.options);
            o.lr = r.lr;
            o.min_lr_ratio = r.min_lr_ratio;
            o.warmup = r.warmup;
            o.eval_batches = r.eval_batches;
            (t, Some(dir))
        }
        None => {
            let texts: Vec<String> = corpus.examples.iter().map(|e| e.text()).collect();
            let tok = ThauTokenizer::train(texts.into_iter(), req.vocab_size)?;
            let mut cfg =
                ModelConfig::for_age(req.age, tok.vocab_size(), req.options.seq_len.max(256))?;
            cfg.copy_head = req.copy_head;
            (
                Trainer::new(cfg, tok, &corpus, req.options.clone(), &dev)?,
                None,
            )
        }
    };
    let start_step = trainer.state.step;
    // The schedule: `--steps N` means N more steps; a resumed run without a budget
    // finishes its planned schedule.
    let target = match req.budget {
        Some(Budget::Steps(n)) => start_step + n,
        Some(Budget::Minutes(_)) => u64::MAX,
        None if start_step < trainer.state.options.total_steps => trainer.state.options.total_steps,
        None => start_step + req.options.total_steps,
    };
    if target != u64::MAX {
        trainer.state.options.total_steps = target;
    }
    let params = trainer.config.param_count();
    on(Progress::Started {
        total_steps: trainer.state.options.total_steps,
        budget: req.budget,
        params,
        resumed: resumed_from.is_some(),
    });
    let t0 = Instant::now();
    let mut curve = Vec::new();
    let has_heldout = !trainer.heldout.is_empty();
    if !has_heldout {
        tracing::warn!("the corpus is too small to hold examples out: no held-out loss");
    }
    let point = |trainer: &mut Trainer,
                 secs: f64,
                 last: Option<f64>|
     -> Result<(CurvePoint, Option<f64>)> {
        let ev = if has_heldout {
            Some(trainer.evaluate()?)
        } else {
            None
        };
        let p = CurvePoint {
            step: trainer.state.step,
            seconds: secs,
            train_loss: last,
            heldout_loss: ev.as_ref().map(|e| e.loss),
        };
        Ok((p, ev.map(|e| e.unigram_loss)))
    };
    let (first, unigram) = point(&mut trainer, 0.0, None)?;
    on(Progress::Eval(&first));
    curve.push(first);
    let deadline = match req.budget {
        Some(Budget::Minutes(m)) => Some(t0 + Duration::from_secs_f64(m * 60.0)),
        _ => None,
    };
    let mut next_eval = t0 + EVAL_INTERVAL;
    let mut last_loss = None;
    let mut interrupted = false;
    loop {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let now = Instant::now();
        match deadline {
            Some(d) if now >= d => break,
            None if trainer.state.step >= target => break,
            _ => {}
        }
        let r = trainer.step()?;
        last_loss = Some(r.loss);
        let done = trainer.state.step - start_step;
        if let (Some(d), true) = (deadline, done == PROBE_STEPS) {
            // Size the cosine schedule to the time budget from the measured step time.
            let per_step = t0.elapsed().as_secs_f64() / PROBE_STEPS as f64;
            let left = d.saturating_duration_since(Instant::now()).as_secs_f64();
            trainer.state.options.total_steps =
                trainer.state.step + (left / per_step.max(1e-6)) as u64;
        }
        on(Progress::Step(&r, t0.elapsed().as_secs_f64()));
        let due = match deadline {
            Some(_) => Instant::now() >= next_eval,
            None => done % EVAL_EVERY_STEPS == 0,
        };
        if due {
            next_eval += EVAL_INTERVAL;
            let (p, _) = point(&mut trainer, t0.elapsed().as_secs_f64(), last_loss)?;
            on(Progress::Eval(&p));
            curve.push(p);
            trainer.save(&age_dir)?;
        }
    }
    if curve.last().map(|c| c.step) != Some(trainer.state.step) {
        let (p, _) = point(&mut trainer, t0.elapsed().as_secs_f64(), last_loss)?;
        on(Progress::Eval(&p));
        curve.push(p);
    }
    let checkpoint = trainer.save(&age_dir)?;
    let seconds = t0.elapsed().as_secs_f64();
    let tokens = (trainer.state.step - start_step)
        * (trainer.state.options.batch_size
            * trainer.state.options.seq_len
            * trainer.state.options.accum) as u64;
    Ok(TrainReport {
        age: req.age,
        params,
        resumed_from,
        steps: trainer.state.step - start_step,
        total_steps: trainer.state.step,
        tokens,
        seconds,
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
        unigram_loss: unigram,
        curve,
        checkpoint,
        interrupted,
    })
}

/// What `thau eval` reports.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSummary {
    pub checkpoint: PathBuf,
    pub age: u32,
    #[serde(flatten)]
    pub report: EvalReport,
}

/// Held-out loss and perplexity of a checkpoint (the given one, else the newest) on the
/// held-out split of `data`.
pub fn eval(
    home: &Home,
    data: &Path,
    checkpoint_dir: Option<&Path>,
    max_batches: usize,
    dev: &Device,
) -> Result<EvalSummary> {
    let dir = match checkpoint_dir {
        Some(d) => d.to_path_buf(),
        None => checkpoint::newest(&home.checkpoints())?
            .ok_or_else(|| ModelError::Data("no checkpoint yet: run `thau train` first".into()))?,
    };
    let dev = dev.clone();
    let ck = checkpoint::load(&dir, &dev, true)?;
    let opts: TrainOptions = ck
        .trainer
        .as_ref()
        .and_then(|t| serde_json::from_value(t["options"].clone()).ok())
        .unwrap_or_default();
    let corpus = Corpus::load(data)?;
    let (train_ex, held_ex) = corpus.split(opts.heldout);
    let seq = opts.seq_len.min(ck.config.max_seq_len);
    let heldout = Windows::pack(&held_ex, &ck.tokenizer, seq)?;
    let train = Windows::pack(&train_ex, &ck.tokenizer, seq)?;
    let lexicon = std::sync::Arc::new(Lexicon::of(&ck.tokenizer));
    let model = from_tensors(ck.weights, &ck.config, &dev)?.with_lexicon(lexicon);
    let report = evaluate(&model, &heldout, opts.batch_size, max_batches, &dev, &train)?;
    Ok(EvalSummary {
        checkpoint: dir,
        age: ck.config.age,
        report,
    })
}
