//! The Learner's work, free of actors: [`Study`] owns a [`Trainer`] (its own copy of the
//! weights) and trains rounds on gap items mixed with replay of the corpus
//! ([`LearnSettings::replay_ratio`]), so that learning what was missing does not erase what
//! was known. Every item is trained closed-book (question → answer) and open-book (its
//! passages in the context, see [`super::openbook`]), so the model learns to answer from
//! recalled memories as well as from its weights. [`probe_loss`] measures the model on
//! held-out paraphrases.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::openbook::Shelf;
use super::source::{KnowledgeBase, KnowledgeItem};
use crate::model::data::{Corpus, Example, Windows};
use crate::model::generate::score;
use crate::model::tokenizer::{Message, Role, ThauTokenizer};
use crate::model::train::{TrainOptions, Trainer};
use crate::model::transformer::Thau;
use crate::model::{checkpoint, ModelConfig, ModelError};

type Result<T> = std::result::Result<T, ModelError>;

/// How the Learner trains (from `agents/learner.toml` `[params.learn]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnSettings {
    /// Optimizer steps per training round.
    pub steps_per_round: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Share of each batch drawn from replay (the corpus) rather than gap items (0..1).
    pub replay_ratio: f64,
    /// Gap items waiting before a round starts.
    pub items_per_round: usize,
    /// Most recent gap items kept for training.
    pub max_items: usize,
    /// Peak learning rate (constant after warm-up: learning never "finishes").
    pub lr: f64,
    /// Window length in tokens.
    pub seq_len: usize,
    /// Save a checkpoint every this many rounds.
    pub checkpoint_every: u64,
    /// Tokenizer size when THAU starts from nothing.
    pub vocab_size: usize,
    /// Give a model started from nothing a copy head ([`crate::model::copy`]).
    pub copy_head: bool,
    /// Train rounds on known items and replay while no new gaps wait ([`Study::round`]
    /// with nothing pending), so the Learner never idles during a session.
    pub practice: bool,
}

impl Default for LearnSettings {
    fn default() -> Self {
        LearnSettings {
            steps_per_round: 6,
            batch_size: 8,
            replay_ratio: 0.5,
            items_per_round: 4,
            max_items: 256,
            lr: 1e-3,
            // Open-book items (up to ~160 tokens of memories, the question, the answer)
            // need 256-token windows.
            seq_len: 256,
            checkpoint_every: 5,
            vocab_size: 4096,
            copy_head: true,
            practice: true,
        }
    }
}

impl LearnSettings {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.steps_per_round == 0 || self.batch_size == 0 || self.items_per_round == 0 {
            return Err("steps_per_round, batch_size and items_per_round must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.replay_ratio) {
            return Err(format!(
                "replay_ratio {} is outside 0..1",
                self.replay_ratio
            ));
        }
        if !(self.lr > 0.0 && self.lr < 1.0) {
            return Err(format!("lr {} is outside (0, 1)", self.lr));
        }
        Ok(())
    }
}

/// What one round did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoundReport {
    pub round: u64,
    pub step: u64,
    pub loss: f64,
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub gap_rows: usize,
    pub replay_rows: usize,
    pub age: u32,
    /// Ids of the items trained this round.
    pub items: Vec<String>,
    pub checkpoint: Option<PathBuf>,
}

/// The replay corpus: passages, the items' own question/answer pairs (never their
/// paraphrases, which stay held out), and each item asked open-book with its gold passage
/// in either place (when a passage holds its answer): about two rows in three read a
/// context, as answering from recalled memories needs.
pub fn replay_corpus(kb: &KnowledgeBase) -> Corpus {
    let mut examples: Vec<Example> = kb
        .passages
        .iter()
        .map(|p| Example::Text(p.text.clone()))
        .collect();
    examples.extend(kb.items.iter().map(KnowledgeItem::example));
    match Shelf::new(kb) {
        Ok(shelf) => examples.extend(kb.items.iter().flat_map(|i| shelf.both_orders(i))),
        Err(e) => tracing::warn!(error = %e, "no open-book items: the corpus index failed"),
    }
    Corpus {
        examples,
        files: Vec::new(),
    }
}

/// The Learner's model and data.
pub struct Study {
    pub trainer: Trainer,
    pub settings: LearnSettings,
    items: Vec<KnowledgeItem>,
    /// Items waiting for the next round.
    pending: usize,
    round: u64,
    rng: rand_chacha::ChaCha8Rng,
    checkpoints: PathBuf,
    /// The corpus's passages, for the gap items' open-book rows.
    shelf: Option<Shelf>,
    /// Each held item's windows (closed-book, then open-book), built once: finding an
    /// item's passages and tokenising them is the same every round, and practice rounds
    /// run all session. Keyed by item id, for windows of `windows_len` tokens.
    windows: HashMap<String, Windows>,
    windows_len: usize,
}

impl Study {
    /// Resumes the newest checkpoint under `checkpoints`, or starts THAU from nothing: a
    /// tokenizer trained on the corpus and an age-0 model.
    pub fn open(
        checkpoints: &Path,
        kb: &KnowledgeBase,
        settings: LearnSettings,
        seed: u64,
        dev: &Device,
    ) -> Result<Study> {
        settings.validate().map_err(ModelError::Config)?;
        let corpus = replay_corpus(kb);
        if corpus.examples.is_empty() {
            return Err(ModelError::Data("the knowledge base is empty".into()));
        }
        let dev = dev.clone();
        let opts = TrainOptions {
            batch_size: settings.batch_size,
            seq_len: settings.seq_len,
            lr: settings.lr,
            min_lr_ratio: 1.0,
            warmup: 10,
            total_steps: u64::MAX / 4,
            seed,
            // Each conversation in windows of its own: an open-book item cut behind another
            // example would lose its memories.
            chats_apart: true,
            ..Default::default()
        };
        let trainer = match checkpoint::newest(checkpoints)? {
            Some(dir) => {
                let mut ck = checkpoint::load(&dir, &dev, true)?;
                if let Some(opts) = ck.trainer.as_mut().and_then(|t| t.get_mut("options")) {
                    opts["chats_apart"] = serde_json::Value::Bool(true);
                }
                if ck.trainer.is_some() {
                    let mut t = Trainer::resume(ck, &corpus, None, &dev)?;
                    t.state.options.lr = settings.lr;
                    t.state.options.min_lr_ratio = 1.0;
                    t.state.options.total_steps = u64::MAX / 4;
                    t
                } else {
                    return Err(ModelError::checkpoint(
                        &dir,
                        "no trainer state: the Learner needs a training checkpoint",
                    ));
                }
            }
            None => {
                let texts: Vec<String> = corpus.examples.iter().map(|e| e.text()).collect();
                let tok = ThauTokenizer::train(texts.into_iter(), settings.vocab_size)?;
                let mut cfg = ModelConfig::for_age(0, tok.vocab_size(), settings.seq_len.max(256))?;
                cfg.copy_head = settings.copy_head;
                Trainer::new(cfg, tok, &corpus, opts, &dev)?
            }
        };
        let mut study = Study::with_trainer(trainer, settings, seed, checkpoints);
        study.shelf = Shelf::new(kb).ok();
        Ok(study)
    }

    /// A study around an existing trainer.
    pub fn with_trainer(
        trainer: Trainer,
        settings: LearnSettings,
        seed: u64,
        checkpoints: &Path,
    ) -> Study {
        Study {
            trainer,
            settings,
            items: Vec::new(),
            pending: 0,
            round: 0,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            checkpoints: checkpoints.to_path_buf(),
            shelf: None,
            windows: HashMap::new(),
            windows_len: 0,
        }
    }

    /// Queues gap items (the newest [`LearnSettings::max_items`] are kept, without repeats).
    pub fn add(&mut self, items: Vec<KnowledgeItem>) {
        for it in items {
            self.items.retain(|i| i.id != it.id);
            self.windows.remove(&it.id);
            self.items.push(it);
            self.pending += 1;
        }
        let over = self.items.len().saturating_sub(self.settings.max_items);
        for gone in self.items.drain(..over) {
            self.windows.remove(&gone.id);
        }
    }

    /// Whether enough new gap items wait for a round.
    pub fn ready(&self) -> bool {
        self.pending >= self.settings.items_per_round
    }

    /// Sets the (constant) learning rate of the rounds to come (the Tuner's knob).
    pub fn set_lr(&mut self, lr: f64) {
        self.settings.lr = lr;
        self.trainer.state.options.lr = lr;
    }

    pub fn rounds(&self) -> u64 {
        self.round
    }

    /// One round: `steps_per_round` steps, each batch a mix of gap items (newest first,
    /// cycled) and replay windows. Saves a checkpoint every `checkpoint_every` rounds.
    pub fn round(&mut self) -> Result<RoundReport> {
        let s = self.settings.clone();
        let start = std::time::Instant::now();
        let tok = self.trainer.tokenizer.clone();
        // Gap rows are as long as the replay rows: a resumed trainer keeps the window length
        // it was trained with, which may differ from the Learner's `seq_len`.
        let seq_len = self.trainer.train.seq_len;
        // Each gap item closed-book, then open-book when a passage holds its answer;
        // `owners[w]` is the item (newest first) that window `w` trains.
        let mut gap = Windows {
            seq_len,
            ..Default::default()
        };
        let mut owners: Vec<usize> = Vec::new();
        if self.windows_len != seq_len {
            self.windows.clear();
            self.windows_len = seq_len;
        }
        for (n, item) in self.items.iter().rev().enumerate() {
            let w = match self.windows.entry(item.id.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let open = self.shelf.as_ref().and_then(|s| s.example(item));
                    let examples: Vec<Example> =
                        std::iter::once(item.example()).chain(open).collect();
                    e.insert(Windows::each(&examples, &tok, seq_len)?)
                }
            };
            owners.extend(std::iter::repeat_n(n, w.len()));
            gap.inputs.extend(w.inputs.iter().cloned());
            gap.targets.extend(w.targets.iter().cloned());
        }
        let want_gap = if gap.is_empty() {
            0
        } else {
            ((1.0 - s.replay_ratio) * s.batch_size as f64).round() as usize
        };
        let want_gap = want_gap.min(s.batch_size);
        let want_replay = (s.batch_size - want_gap).max(usize::from(gap.is_empty()));
        let mut data = Windows {
            seq_len,
            ..Default::default()
        };
        data.inputs.extend(gap.inputs.iter().cloned());
        data.targets.extend(gap.targets.iter().cloned());
        let mut batches = Vec::with_capacity(s.steps_per_round);
        let mut cursor = 0usize;
        let mut trained = std::collections::BTreeSet::new();
        for _ in 0..s.steps_per_round {
            let mut idx = Vec::with_capacity(s.batch_size);
            for _ in 0..want_gap {
                let i = cursor % gap.len();
                trained.insert(i);
                idx.push(i);
                cursor += 1;
            }
            let replay = &self.trainer.train;
            let picks = self.trainer.state.batcher.next(want_replay, replay.len());
            for r in picks {
                idx.push(data.inputs.len());
                data.inputs.push(replay.inputs[r].clone());
                data.targets.push(replay.targets[r].clone());
            }
            idx.shuffle(&mut self.rng);
            batches.push(idx);
        }
        // Rows of like length share a step, so that each batch is cut to its own length
        // (see [`Windows::batch`]): a step of closed-book questions costs a fifth of one
        // that reads memories. The sort is stable, so equal lengths stay shuffled.
        let mut rows: Vec<usize> = batches.concat();
        rows.sort_by_key(|&i| data.learned_len(i));
        let mut batches: Vec<Vec<usize>> =
            rows.chunks(s.batch_size).map(<[usize]>::to_vec).collect();
        batches.shuffle(&mut self.rng);
        let mut loss = 0.0;
        let mut tokens = 0;
        let mut step = self.trainer.state.step;
        for b in &batches {
            let r = self.trainer.step_on(&data, std::slice::from_ref(b))?;
            loss += r.loss;
            tokens += r.tokens;
            step = r.step;
        }
        self.round += 1;
        self.pending = 0;
        let checkpoint = if s.checkpoint_every > 0 && self.round.is_multiple_of(s.checkpoint_every)
        {
            Some(self.save()?)
        } else {
            None
        };
        let items_rev: Vec<&KnowledgeItem> = self.items.iter().rev().collect();
        Ok(RoundReport {
            round: self.round,
            step,
            loss: loss / batches.len() as f64,
            tokens,
            tokens_per_s: tokens as f64 / start.elapsed().as_secs_f64().max(1e-9),
            gap_rows: want_gap * batches.len(),
            replay_rows: want_replay * batches.len(),
            age: self.trainer.config.age,
            items: trained
                .into_iter()
                .filter_map(|w| owners.get(w).and_then(|&n| items_rev.get(n)))
                .map(|it| it.id.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            checkpoint,
        })
    }

    /// This study with its model grown into `to` (the same function; see
    /// [`Trainer::grown`]).
    pub fn grow(self, to: &ModelConfig, corpus: &Corpus) -> Result<Study> {
        let trainer =
            self.trainer
                .grown(to, crate::model::growth::Placement::Interleave, corpus)?;
        Ok(Study { trainer, ..self })
    }

    /// Writes a training checkpoint (weights, optimizer, trainer state).
    pub fn save(&self) -> Result<PathBuf> {
        let age_dir = self
            .checkpoints
            .join(format!("age_{}", self.trainer.config.age));
        self.trainer.save(&age_dir)
    }
}

/// Mean NLL per answer token of `items`' answers, asked with their first paraphrase (held
/// out from training) — or the question itself when an item has none.
pub fn probe_loss(model: &Thau, tok: &ThauTokenizer, items: &[KnowledgeItem]) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for it in items {
        let q = it.paraphrases.first().unwrap_or(&it.question);
        let prompt = tok.chat_prompt(&[Message::new(Role::User, q.clone())])?;
        let mut answer = tok.encode_turn(&it.answer)?;
        answer.push(tok.special.eot);
        if prompt.len() + answer.len() > model.cfg.max_seq_len {
            continue;
        }
        let lp = score(model, &prompt, &answer)?;
        sum -= lp.iter().map(|&x| x as f64).sum::<f64>();
        n += lp.len();
    }
    if n == 0 {
        return Err(ModelError::Data(
            "no probe item fits the model's context".into(),
        ));
    }
    Ok(sum / n as f64)
}

/// A fixed, seed-chosen sample of `n` items with paraphrases (the probe set).
pub fn probe_set(kb: &KnowledgeBase, n: usize, seed: u64) -> Vec<KnowledgeItem> {
    let mut with: Vec<KnowledgeItem> = kb
        .items
        .iter()
        .filter(|i| !i.paraphrases.is_empty())
        .cloned()
        .collect();
    with.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    with.truncate(n);
    with
}
