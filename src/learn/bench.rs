//! `thau bench learn`: gap-steered training against uniform sampling of the same data for
//! the same number of steps, from the same initial weights, measured in one run.
//!
//! Data: every knowledge item of the corpus as a question → answer example. Held-out
//! measure: [`probe_loss`] on paraphrases of a fixed probe set (never trained on).
//! - uniform: each batch is drawn uniformly from the items;
//! - gap-steered (what the Learner does): each step scores a pool of candidate items with
//!   the current model (mean NLL of the answer, as the GapDetector does), fills
//!   `1 − replay_ratio` of the batch with the worst-known ones (the gaps), the rest
//!   uniformly (replay).
//!
//! With `known_share` > 0 both arms start from the same *warm* weights: a model first
//! trained for `warm_steps` on that share of the items only (the case the self-learning loop
//! lives in: THAU already knows part of what it is asked, and the gaps are the rest). With
//! `known_share` = 0 both start from the same random initialisation.
//!
//! The report gives both held-out curves and the step at which gap-steered first reaches
//! uniform's final loss, as a fraction of the steps (the goal is ≤ 0.6); the extra forward
//! passes of the scoring are reported as a wall-time ratio too.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::source::{KnowledgeBase, KnowledgeItem, Templates};
use super::study::{probe_loss, probe_set};
use crate::model::data::{Corpus, Example, Windows};
use crate::model::ops::IGNORE_INDEX;
use crate::model::tokenizer::ThauTokenizer;
use crate::model::train::{TrainOptions, Trainer};
use crate::model::transformer::Thau;
use crate::model::{ModelConfig, ModelError};

type Result<T> = std::result::Result<T, ModelError>;

/// Draws per wanted candidate before the pool takes resting items too.
const COOLDOWN_DRAWS: usize = 8;

/// How a candidate's score (its gap size) is read from its answer tokens' NLL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GapScore {
    /// Mean NLL per answer token (the GapDetector's per-item score).
    Mean,
    /// Summed NLL of the answer: what there is left to learn in the item, in the units of
    /// the held-out loss (nats over tokens), so a long unknown answer outranks a short one.
    Total,
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct LearnBenchPlan {
    pub steps: u64,
    pub batch_size: usize,
    pub seq_len: usize,
    pub eval_every: u64,
    /// Candidates scored per gap row.
    pub pool_factor: usize,
    /// How candidates are ranked.
    pub score: GapScore,
    /// Share of each gap-steered batch drawn uniformly (replay).
    pub replay_ratio: f64,
    /// Steps an item trained as a gap rests before it may be picked as one again (0:
    /// never rests), as in the loop, where a gap is trained in a round and re-measured
    /// later rather than trained again at once.
    pub cooldown: u64,
    pub probe_items: usize,
    pub vocab_size: usize,
    pub lr: f64,
    pub seed: u64,
    /// Share of the items the model is first trained on (0: start cold).
    pub known_share: f64,
    /// Steps of that warm-up (uniform over the known items).
    pub warm_steps: u64,
    /// Use the tiny test shape instead of age 0 (for tests).
    pub tiny: bool,
}

impl Default for LearnBenchPlan {
    fn default() -> Self {
        LearnBenchPlan {
            steps: 300,
            batch_size: 8,
            seq_len: 64,
            eval_every: 25,
            pool_factor: 3,
            score: GapScore::Mean,
            replay_ratio: 0.5,
            cooldown: 0,
            probe_items: 200,
            vocab_size: 2048,
            lr: 1e-3,
            seed: 42,
            known_share: 0.0,
            warm_steps: 0,
            tiny: false,
        }
    }
}

/// One arm's held-out curve.
#[derive(Debug, Clone, Serialize)]
pub struct Arm {
    pub name: String,
    /// (step, held-out paraphrase loss), starting at step 0.
    pub curve: Vec<(u64, f64)>,
    pub seconds: f64,
}

impl Arm {
    pub fn final_loss(&self) -> f64 {
        self.curve.last().map_or(f64::NAN, |p| p.1)
    }
}

/// What `thau bench learn` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LearnBenchReport {
    pub plan: LearnBenchPlan,
    pub items: usize,
    /// Items of the warm-up (0 when cold).
    pub known_items: usize,
    /// Held-out loss after the warm-up, before either arm (the curves' step 0).
    pub warm_loss: Option<f64>,
    pub params: u64,
    pub uniform: Arm,
    pub gap_steered: Arm,
    /// First evaluated step at which gap-steered ≤ uniform's final loss (`None`: never).
    pub steps_to_uniform_final: Option<u64>,
    /// That step / all steps (goal ≤ 0.6).
    pub step_ratio: Option<f64>,
    pub goal_step_ratio: f64,
    /// Gap-steered wall time / uniform wall time (scoring costs forward passes).
    pub time_ratio: f64,
}

/// Each row's NLL over its learned tokens, summed, and how many tokens it learns: `[B]`.
fn row_nll(model: &Thau, x: &Tensor, y: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    let logits = model.forward(x, None)?; // [B, T, V]
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let mask = y.ne(IGNORE_INDEX)?; // [B, T]
    let safe = mask.where_cond(y, &y.zeros_like()?)?; // ignored targets → token 0
    let picked = logp.gather(&safe.unsqueeze(2)?, 2)?.squeeze(2)?; // [B, T]
    let m = mask.to_dtype(DType::F32)?;
    let nll = (picked.neg()? * &m)?.sum(1)?; // [B]
    let n = m.sum(1)?; // [B]
    Ok((nll.to_vec1()?, n.to_vec1()?))
}

/// Each row's score under `score`: `[B]`.
fn row_scores(model: &Thau, x: &Tensor, y: &Tensor, score: GapScore) -> Result<Vec<f32>> {
    let (nll, n) = row_nll(model, x, y)?;
    Ok(match score {
        GapScore::Mean => nll.iter().zip(&n).map(|(l, n)| l / n.max(1.0)).collect(),
        GapScore::Total => nll,
    })
}

fn trainer_for(plan: &LearnBenchPlan, tok: &ThauTokenizer, corpus: &Corpus) -> Result<Trainer> {
    let cfg = if plan.tiny {
        let mut c = ModelConfig::tiny(tok.vocab_size());
        c.max_seq_len = plan.seq_len.max(64);
        c
    } else {
        ModelConfig::for_age(0, tok.vocab_size(), plan.seq_len.max(256))?
    };
    let opts = TrainOptions {
        batch_size: plan.batch_size,
        seq_len: plan.seq_len,
        lr: plan.lr,
        min_lr_ratio: 1.0,
        warmup: 10,
        total_steps: plan.steps,
        heldout: 0.0,
        seed: plan.seed,
        ..Default::default()
    };
    Trainer::new(cfg, tok.clone(), corpus, opts, &Device::Cpu)
}

fn run_arm(
    name: &str,
    plan: &LearnBenchPlan,
    trainer: &mut Trainer,
    data: &Windows,
    probes: &[KnowledgeItem],
    steered: bool,
    progress: &mut dyn FnMut(String),
) -> Result<Arm> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan.seed ^ 0x5eed);
    let start = Instant::now();
    let eval = |t: &Trainer| probe_loss(t.model(), &t.tokenizer, probes);
    let mut curve = vec![(0, eval(trainer)?)];
    let n = data.len();
    // The step each item was last trained as a gap.
    let mut gap_at: Vec<Option<u64>> = vec![None; n];
    for step in 1..=plan.steps {
        let b = plan.batch_size;
        let idx: Vec<usize> = if steered {
            let gap_rows = (((1.0 - plan.replay_ratio) * b as f64).round() as usize).min(b);
            let resting = |i: usize| gap_at[i].is_some_and(|at| step <= at + plan.cooldown);
            let pool = draw_pool(&mut rng, n, gap_rows * plan.pool_factor.max(1), resting);
            let (x, y) = data.batch(&pool, &Device::Cpu)?;
            let losses = row_scores(trainer.model(), &x, &y, plan.score)?;
            let mut order: Vec<usize> = (0..pool.len()).collect();
            order.sort_by(|&a, &b| losses[b].total_cmp(&losses[a]));
            let mut idx: Vec<usize> = order.iter().take(gap_rows).map(|&i| pool[i]).collect();
            for &i in &idx {
                gap_at[i] = Some(step);
            }
            idx.extend((0..b - idx.len()).map(|_| rng.random_range(0..n)));
            idx.shuffle(&mut rng);
            idx
        } else {
            (0..b).map(|_| rng.random_range(0..n)).collect()
        };
        trainer.step_on(data, &[idx])?;
        if step % plan.eval_every.max(1) == 0 || step == plan.steps {
            let l = eval(trainer)?;
            progress(format!(
                "{name}: step {step}, held-out paraphrase loss {l:.4}"
            ));
            curve.push((step, l));
        }
    }
    Ok(Arm {
        name: name.to_string(),
        curve,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `want` candidate items out of `n`, drawn uniformly among those not `resting` (a
/// bounded number of draws, so a cooldown longer than the data allows still gives a full
/// pool, topped up from all the items).
fn draw_pool(
    rng: &mut impl Rng,
    n: usize,
    want: usize,
    resting: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let mut pool: Vec<usize> = Vec::with_capacity(want);
    for _ in 0..want * COOLDOWN_DRAWS {
        if pool.len() == want {
            break;
        }
        let i = rng.random_range(0..n);
        if !resting(i) {
            pool.push(i);
        }
    }
    while pool.len() < want {
        pool.push(rng.random_range(0..n));
    }
    pool
}

/// The newest checkpoint directory under `dir`.
fn latest_in(dir: &Path) -> Result<std::path::PathBuf> {
    crate::model::checkpoint::latest(dir)?
        .ok_or_else(|| ModelError::Data(format!("no warm-up checkpoint in {}", dir.display())))
}

/// Trains a fresh model on `known_share` of the items for `warm_steps` and saves it (with
/// its optimizer state) in a temp dir both arms resume from; `None` when starting cold.
fn warm_up(
    plan: &LearnBenchPlan,
    tok: &ThauTokenizer,
    corpus: &Corpus,
    data: &Windows,
    progress: &mut dyn FnMut(String),
) -> Result<(usize, Option<tempfile::TempDir>)> {
    if plan.known_share <= 0.0 || plan.warm_steps == 0 {
        return Ok((0, None));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan.seed ^ 0x3a7e);
    let mut known: Vec<usize> = (0..data.len()).collect();
    known.shuffle(&mut rng);
    known.truncate(((plan.known_share.min(1.0) * data.len() as f64).round() as usize).max(1));
    let mut t = trainer_for(plan, tok, corpus)?;
    for _ in 0..plan.warm_steps {
        let idx: Vec<usize> = (0..plan.batch_size)
            .map(|_| known[rng.random_range(0..known.len())])
            .collect();
        t.step_on(data, &[idx])?;
    }
    progress(format!(
        "warm-up: {} steps on {} of {} items",
        plan.warm_steps,
        known.len(),
        data.len()
    ));
    let dir = tempfile::tempdir().map_err(|e| ModelError::Data(e.to_string()))?;
    t.save(dir.path())?;
    Ok((known.len(), Some(dir)))
}

/// Runs both arms on the knowledge in `corpus_dir`.
pub fn learn_bench(
    corpus_dir: &Path,
    plan: &LearnBenchPlan,
    progress: &mut dyn FnMut(String),
) -> Result<LearnBenchReport> {
    let kb = KnowledgeBase::load(corpus_dir, &Templates::default())
        .map_err(|e| ModelError::Data(e.to_string()))?;
    let examples: Vec<Example> = kb.items.iter().map(KnowledgeItem::example).collect();
    if examples.len() < plan.batch_size {
        return Err(ModelError::Data(format!(
            "{} items: fewer than one batch",
            examples.len()
        )));
    }
    let corpus = Corpus {
        examples: examples.clone(),
        files: Vec::new(),
    };
    let texts: Vec<String> = kb
        .items
        .iter()
        .map(|i| format!("{} {}", i.question, i.answer))
        .chain(kb.passages.iter().map(|p| p.text.clone()))
        .collect();
    let tok = ThauTokenizer::train(texts.into_iter(), plan.vocab_size)?;
    let data = Windows::each(&examples, &tok, plan.seq_len)?;
    let probes = probe_set(&kb, plan.probe_items, plan.seed);
    progress(format!(
        "{} items, {} probe paraphrases, {} steps × {} rows per arm",
        data.len(),
        probes.len(),
        plan.steps,
        plan.batch_size
    ));
    // Same initial weights for both arms: the same seed, and the same warm-up checkpoint.
    let (known, warm_dir) = warm_up(plan, &tok, &corpus, &data, progress)?;
    let start = |plan: &LearnBenchPlan| -> Result<Trainer> {
        match &warm_dir {
            Some(dir) => {
                let ck =
                    crate::model::checkpoint::load(&latest_in(dir.path())?, &Device::Cpu, true)?;
                Trainer::resume(ck, &corpus, None, &Device::Cpu)
            }
            None => trainer_for(plan, &tok, &corpus),
        }
    };
    let mut uniform_t = start(plan)?;
    let params = uniform_t.config.param_count();
    let uniform = run_arm(
        "uniform",
        plan,
        &mut uniform_t,
        &data,
        &probes,
        false,
        progress,
    )?;
    drop(uniform_t);
    let mut gap_t = start(plan)?;
    let gap = run_arm(
        "gap-steered",
        plan,
        &mut gap_t,
        &data,
        &probes,
        true,
        progress,
    )?;
    let target = uniform.final_loss();
    let reached = gap
        .curve
        .iter()
        .find(|(s, l)| *s > 0 && *l <= target)
        .map(|p| p.0);
    const GOAL: f64 = 0.6;
    Ok(LearnBenchReport {
        plan: plan.clone(),
        items: data.len(),
        known_items: known,
        warm_loss: warm_dir.as_ref().map(|_| uniform.curve[0].1),
        params,
        steps_to_uniform_final: reached,
        step_ratio: reached.map(|s| s as f64 / plan.steps as f64),
        goal_step_ratio: GOAL,
        time_ratio: gap.seconds / uniform.seconds.max(1e-9),
        uniform,
        gap_steered: gap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_skips_resting_items_and_stays_full_when_all_rest() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Half the items rest: every candidate comes from the other half.
        let pool = draw_pool(&mut rng, 100, 24, |i| i < 50);
        assert_eq!(pool.len(), 24);
        assert!(pool.iter().all(|&i| (50..100).contains(&i)), "{pool:?}");
        // Nothing rests: plain uniform draws, the same as without a cooldown.
        let (mut a, mut b) = (
            rand_chacha::ChaCha8Rng::seed_from_u64(3),
            rand_chacha::ChaCha8Rng::seed_from_u64(3),
        );
        let plain: Vec<usize> = (0..12).map(|_| b.random_range(0..50)).collect();
        assert_eq!(draw_pool(&mut a, 50, 12, |_| false), plain);
        // Everything rests: the pool is still full.
        let all = draw_pool(&mut rng, 5, 12, |_| true);
        assert_eq!(all.len(), 12);
        assert!(all.iter().all(|&i| i < 5));
    }

    #[test]
    fn row_losses_match_the_model_loss_per_row() {
        let tok_texts = [
            "hello world the cat",
            "the dog and the cat",
            "world of dogs",
        ];
        let tok = ThauTokenizer::train(tok_texts.iter().map(|s| s.to_string()), 300).unwrap();
        let cfg = ModelConfig::tiny(tok.vocab_size());
        let vm =
            crate::model::transformer::init_weights(&cfg, 3, DType::F32, &Device::Cpu).unwrap();
        let model =
            crate::model::transformer::from_varmap(&vm, &cfg, DType::F32, &Device::Cpu).unwrap();
        let ex: Vec<Example> = tok_texts
            .iter()
            .map(|t| Example::Text(t.to_string()))
            .collect();
        let w = Windows::each(&ex, &tok, 16).unwrap();
        let (x, y) = w.batch(&[0, 1, 2], &Device::Cpu).unwrap();
        let rows = row_scores(&model, &x, &y, GapScore::Mean).unwrap();
        let totals = row_scores(&model, &x, &y, GapScore::Total).unwrap();
        for (i, r) in rows.iter().enumerate() {
            let (xi, yi) = w.batch(&[i], &Device::Cpu).unwrap();
            let (l, _) = model.loss(&xi, &yi).unwrap();
            let l = l.to_scalar::<f32>().unwrap();
            assert!((l - r).abs() < 1e-4, "row {i}: {l} vs {r}");
            // The total is the mean times the row's learned tokens.
            let learned = yi.ne(IGNORE_INDEX).unwrap().to_dtype(DType::F32).unwrap();
            let learned = learned.sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(learned > 0.0);
            assert!(
                (totals[i] - l * learned).abs() < 1e-3 * learned,
                "row {i} total"
            );
        }
    }
}
