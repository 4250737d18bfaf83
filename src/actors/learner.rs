//! Learner: trains its own copy of the weights on gaps mixed with replay ([`Study`]),
//! checkpoints, hands every new set of weights to Inference as a message (a hot swap), and
//! decides growth under the [`GrowthPolicy`] of `agents/learner.toml`.
//!
//! Receives [`StartStudy`], [`LearnItems`] (from the GapDetector), [`Practice`] (from
//! `thau learn`, to train while no new gaps wait), [`FinishStudy`],
//! [`ShouldGrow`], [`ApplyTuning`](crate::actors::ApplyTuning) (the learning rate) and the
//! common messages. Sends [`SwapWeights`] to Inference and [`Remember`] (training runs,
//! growth) to EpisodicMemory, and publishes [`Trained`] to the GapDetector. Runs on a sync
//! arbiter: training is CPU-heavy and must never block the async arbiters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use serde::Serialize;

use crate::actors::episodic_memory::Remember;
use crate::actors::inference::SwapWeights;
use crate::actors::{guarded, ActorBase, ActorError, ThauActor, Tunable};
use crate::learn::source::{KnowledgeBase, KnowledgeItem, Templates};
use crate::learn::study::{
    probe_loss, probe_set, replay_corpus, LearnSettings, RoundReport, Study,
};
use crate::learn::tuning::Knob;
use crate::learn::LearnEvent;
use crate::memory::{Episode, EpisodeKind};
use crate::model::policy::{Decision, GrowthPolicy};
use crate::model::ModelConfig;
use crate::runtime::agents::AgentSpec;
use crate::runtime::events::EventKind;

/// Items in the fixed probe set measured before and after a session.
pub const PROBE_ITEMS: usize = 64;
/// Held-out evaluations (for the growth policy) every this many rounds.
const EVAL_EVERY_ROUNDS: u64 = 5;

/// Should a model at `age` grow now?
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Decision, ActorError>")]
pub struct ShouldGrow {
    pub age: u32,
    /// Held-out losses of the evaluations at this age, oldest first.
    pub heldout: Vec<f64>,
    pub examples_seen: u64,
    /// Mean token F1 on the age's held-out probe questions, if measured.
    pub probe_accuracy: Option<f64>,
}

/// Gap items to train on (from the GapDetector).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ActorError>")]
pub struct LearnItems {
    pub session: String,
    pub items: Vec<KnowledgeItem>,
}

/// The Learner finished a round: the GapDetector re-checks the gaps it trained on. A
/// notification, so it lives here with its publisher: the GapDetector already depends on
/// this module for [`LearnItems`].
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ActorError>")]
pub struct Trained {
    pub session: String,
    pub report: RoundReport,
}

/// Train one round on what the Learner already holds — the gap items it was given, and
/// replay — whether or not new gaps wait. `thau learn` keeps one in flight for the whole
/// session, so the Learner trains while the Questioner and GapDetector look for gaps
/// instead of waiting for them. Answers whether a round was trained: `false` when
/// `practice` is off in `[params.learn]`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<bool, ActorError>")]
pub struct Practice;

/// Open (or create) the model and get ready to learn from `corpus`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<StudyInfo, ActorError>")]
pub struct StartStudy {
    pub session: String,
    pub corpus: PathBuf,
    pub seed: u64,
    /// Set by whoever started the study once it is to finish: the rounds still queued
    /// (gap items arrive faster than rounds train) are skipped, so that a session of ten
    /// minutes ends near ten minutes — 8 queued rounds had added 100 s.
    pub closing: Arc<AtomicBool>,
}

/// Where a study stands.
#[derive(Debug, Clone, Serialize)]
pub struct StudyInfo {
    pub age: u32,
    pub params: u64,
    pub step: u64,
    /// Mean NLL per answer token on held-out paraphrases of the probe set.
    pub probe_loss: f64,
    pub probe_items: usize,
    pub knowledge_items: usize,
    pub passages: usize,
    /// Whether THAU started from nothing (no checkpoint existed).
    pub fresh: bool,
}

/// Train on what is pending, save, and measure the probe set again.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<StudySummary, ActorError>")]
pub struct FinishStudy;

/// The end of a study.
#[derive(Debug, Clone, Serialize)]
pub struct StudySummary {
    pub rounds: u64,
    pub step: u64,
    pub age: u32,
    pub probe_loss: f64,
    pub checkpoint: Option<PathBuf>,
}

/// Who the Learner talks to, and the session a restarted Learner picks up again.
#[derive(Clone, Default)]
pub struct LearnerLinks {
    pub inference: Option<Recipient<SwapWeights>>,
    pub gap_detector: Option<Recipient<Trained>>,
    pub episodic: Option<Recipient<Remember>>,
    /// The running session, shared by every Learner the sync arbiter builds: after a
    /// panic the fresh instance reopens it from the newest checkpoint on its next message.
    pub current: Arc<Mutex<Option<StartStudy>>>,
}

/// `[params]` of `agents/learner.toml`: the growth policy, and `[params.learn]`.
pub fn learner_params(params: &toml::Table) -> Result<(GrowthPolicy, LearnSettings), String> {
    let mut growth = params.clone();
    let learn = growth.remove("learn");
    let policy = growth
        .try_into::<GrowthPolicy>()
        .map_err(|e| e.to_string())?;
    let settings = match learn {
        Some(v) => v
            .try_into::<LearnSettings>()
            .map_err(|e| format!("[params.learn]: {e}"))?,
        None => LearnSettings::default(),
    };
    settings
        .validate()
        .map_err(|e| format!("[params.learn]: {e}"))?;
    Ok((policy, settings))
}

struct Session {
    name: String,
    closing: Arc<AtomicBool>,
    study: Study,
    probes: Vec<KnowledgeItem>,
    corpus: PathBuf,
    heldout: Vec<f64>,
}

/// The Learner actor's state.
pub struct Learner {
    base: ActorBase,
    policy: GrowthPolicy,
    settings: LearnSettings,
    checkpoints: PathBuf,
    links: LearnerLinks,
    session: Option<Session>,
    /// Where it trains (`device` in thau.toml).
    device: candle_core::Device,
}

impl Learner {
    pub fn new(
        base: ActorBase,
        spec: &AgentSpec,
        checkpoints: PathBuf,
        links: LearnerLinks,
    ) -> Self {
        // Validated by `Runtime::start`, so the fallback only guards direct construction.
        let (policy, settings) = learner_params(&spec.params).unwrap_or_default();
        Learner {
            base,
            policy,
            settings,
            checkpoints,
            links,
            session: None,
            device: candle_core::Device::Cpu,
        }
    }

    /// Trains on `device` (`device` in thau.toml) rather than the CPU.
    pub fn with_device(mut self, device: candle_core::Device) -> Self {
        self.device = device;
        self
    }

    fn event(&self, e: LearnEvent) {
        self.base
            .events
            .emit(self.base.name, EventKind::Learning { event: e });
    }

    fn remember(&self, e: Episode) {
        if let Some(ep) = &self.links.episodic {
            ep.do_send(Remember(vec![e]));
        }
    }

    fn session(&mut self) -> Result<&mut Session, ActorError> {
        if self.session.is_none() {
            // A Learner rebuilt after a panic: pick the session up from its checkpoint.
            let current = self
                .links
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(spec) = current {
                self.open(&spec)?;
                tracing::warn!(
                    actor = self.base.name,
                    session = spec.session,
                    "reopened the session from its newest checkpoint after a restart"
                );
            }
        }
        self.session
            .as_mut()
            .ok_or_else(|| ActorError::Unavailable("no study started (send StartStudy)".into()))
    }

    /// Opens (or creates) the model for session `m` and hands it to Inference.
    fn open(&mut self, m: &StartStudy) -> Result<StudyInfo, ActorError> {
        let failed = |e: crate::model::ModelError| ActorError::Failed(e.to_string());
        let kb = KnowledgeBase::load(&m.corpus, &Templates::default())
            .map_err(|e| ActorError::BadRequest(e.to_string()))?;
        let fresh = crate::model::checkpoint::newest(&self.checkpoints)
            .map_err(failed)?
            .is_none();
        let study = Study::open(
            &self.checkpoints,
            &kb,
            self.settings.clone(),
            m.seed,
            &self.device,
        )
        .map_err(failed)?;
        if fresh {
            // Give Inference (and later runs) a model to start from.
            study.save().map_err(failed)?;
        }
        let probes = probe_set(&kb, PROBE_ITEMS, m.seed);
        self.session = Some(Session {
            name: m.session.clone(),
            closing: m.closing.clone(),
            study,
            probes,
            corpus: m.corpus.clone(),
            heldout: Vec::new(),
        });
        self.swap(format!("learner session {}", m.session))?;
        let probe = self.probe_loss()?;
        let s = self.session()?;
        let t = &s.study.trainer;
        Ok(StudyInfo {
            age: t.config.age,
            params: t.config.param_count(),
            step: t.state.step,
            probe_loss: probe,
            probe_items: s.probes.len(),
            knowledge_items: kb.items.len(),
            passages: kb.passages.len(),
            fresh,
        })
    }

    /// Hands the current weights to Inference.
    fn swap(&mut self, label: String) -> Result<(), ActorError> {
        let Some(inf) = self.links.inference.clone() else {
            return Ok(());
        };
        let t = &self.session()?.study.trainer;
        let weights = t.weights().map_err(|e| ActorError::Failed(e.to_string()))?;
        inf.do_send(SwapWeights {
            config: t.config.clone(),
            tokenizer: t.tokenizer.clone(),
            weights,
            label,
        });
        Ok(())
    }

    fn probe_loss(&mut self) -> Result<f64, ActorError> {
        let s = self.session()?;
        probe_loss(
            s.study.trainer.model(),
            &s.study.trainer.tokenizer,
            &s.probes,
        )
        .map_err(|e| ActorError::Failed(e.to_string()))
    }

    /// One training round, then the swap, the re-check request and the records.
    fn round(&mut self) -> Result<(), ActorError> {
        let failed = |e: crate::model::ModelError| ActorError::Failed(e.to_string());
        let s = self.session()?;
        let report = s.study.round().map_err(failed)?;
        let session = s.name.clone();
        self.swap(format!("learner step {}", report.step))?;
        if let Some(g) = &self.links.gap_detector {
            g.do_send(Trained {
                session: session.clone(),
                report: report.clone(),
            });
        }
        self.remember(
            Episode::new(
                &session,
                self.base.name,
                EpisodeKind::TrainingRun,
                format!(
                    "round {}: {} steps to step {}, loss {:.3}, {} gap rows + {} replay rows",
                    report.round,
                    self.settings.steps_per_round,
                    report.step,
                    report.loss,
                    report.gap_rows,
                    report.replay_rows
                ),
            )
            .with_importance(0.3)
            .with_metadata(serde_json::to_value(&report).unwrap_or_default()),
        );
        self.event(LearnEvent::Round(report.clone()));
        if report.round.is_multiple_of(EVAL_EVERY_ROUNDS) {
            self.consider_growth()?;
        }
        Ok(())
    }

    /// Evaluates held-out loss and grows the model when the policy says so.
    fn consider_growth(&mut self) -> Result<(), ActorError> {
        let failed = |e: crate::model::ModelError| ActorError::Failed(e.to_string());
        let policy = self.policy.clone();
        let s = self.session()?;
        let eval = s.study.trainer.evaluate().map_err(failed)?;
        s.heldout.push(eval.loss);
        let t = &s.study.trainer;
        let examples = t.state.tokens_seen / t.state.options.seq_len.max(1) as u64;
        let age = t.config.age;
        let Decision::Grow { reason } = policy.decide(age, &s.heldout, examples, None) else {
            return Ok(());
        };
        let Some(next) = crate::model::config::AGES.iter().find(|a| a.age > age) else {
            return Ok(());
        };
        let mut to = ModelConfig::for_age(next.age, t.config.vocab_size, t.config.max_seq_len)
            .map_err(failed)?;
        to.copy_head = t.config.copy_head;
        let kb = KnowledgeBase::load(&s.corpus, &Templates::default())
            .map_err(|e| ActorError::Failed(e.to_string()))?;
        let corpus = replay_corpus(&kb);
        // Growing consumes the trainer: take the session apart and put it back together.
        let Some(Session {
            name,
            closing,
            study,
            probes,
            corpus: corpus_dir,
            ..
        }) = self.session.take()
        else {
            return Ok(());
        };
        let study = match study.grow(&to, &corpus) {
            Ok(grown) => grown,
            Err(e) => {
                tracing::error!(error = %e, "growth failed; continuing from the newest checkpoint");
                Study::open(
                    &self.checkpoints,
                    &kb,
                    self.settings.clone(),
                    0,
                    &self.device,
                )
                .map_err(failed)?
            }
        };
        study.save().map_err(failed)?;
        self.session = Some(Session {
            name,
            closing,
            study,
            probes,
            corpus: corpus_dir,
            heldout: Vec::new(),
        });
        let s = self.session()?;
        let session = s.name.clone();
        self.event(LearnEvent::Grew {
            from_age: age,
            to_age: next.age,
        });
        self.remember(
            Episode::new(
                &session,
                self.base.name,
                EpisodeKind::Growth,
                format!("grew from age {age} to age {}: {reason}", next.age),
            )
            .with_importance(0.9),
        );
        self.swap(format!("grown to age {}", next.age))
    }
}

impl ThauActor for Learner {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        match &self.session {
            Some(s) => format!(
                "session {}: age {}, step {}, {} rounds",
                s.name,
                s.study.trainer.config.age,
                s.study.trainer.state.step,
                s.study.rounds()
            ),
            None => format!(
                "idle; growth policy: plateau over {} evaluations (< {} relative)",
                self.policy.plateau_window, self.policy.plateau_threshold
            ),
        }
    }
    fn flush_state(&mut self) -> Result<(), ActorError> {
        if let Some(s) = &self.session {
            s.study
                .save()
                .map_err(|e| ActorError::Failed(e.to_string()))?;
        }
        Ok(())
    }
}

crate::sync_actor!(Learner);

impl Handler<ShouldGrow> for Learner {
    type Result = Result<Decision, ActorError>;
    fn handle(&mut self, m: ShouldGrow, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "ShouldGrow", |me| {
            Ok(me
                .policy
                .decide(m.age, &m.heldout, m.examples_seen, m.probe_accuracy))
        })
    }
}

impl Handler<StartStudy> for Learner {
    type Result = Result<StudyInfo, ActorError>;
    fn handle(&mut self, m: StartStudy, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "StartStudy", |me| {
            let info = me.open(&m)?;
            *me.links.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
            Ok(info)
        })
    }
}

impl Handler<LearnItems> for Learner {
    type Result = Result<(), ActorError>;
    fn handle(&mut self, m: LearnItems, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "LearnItems", |me| {
            let s = me.session()?;
            s.study.add(m.items);
            if s.study.ready() && !s.closing.load(Ordering::SeqCst) {
                // The GapDetector sends without waiting for the answer: say why here.
                if let Err(e) = me.round() {
                    tracing::warn!(actor = me.base.name, "training round failed: {e}");
                    return Err(e);
                }
            }
            Ok(())
        })
    }
}

impl Handler<Practice> for Learner {
    type Result = Result<bool, ActorError>;
    fn handle(&mut self, _: Practice, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "Practice", |me| {
            if !me.settings.practice || me.session()?.closing.load(Ordering::SeqCst) {
                return Ok(false);
            }
            me.round()?;
            Ok(true)
        })
    }
}

impl Handler<FinishStudy> for Learner {
    type Result = Result<StudySummary, ActorError>;
    fn handle(&mut self, _: FinishStudy, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "FinishStudy", |me| {
            let failed = |e: crate::model::ModelError| ActorError::Failed(e.to_string());
            let checkpoint = Some(me.session()?.study.save().map_err(failed)?);
            let probe = me.probe_loss()?;
            let s = me.session()?;
            Ok(StudySummary {
                rounds: s.study.rounds(),
                step: s.study.trainer.state.step,
                age: s.study.trainer.config.age,
                probe_loss: probe,
                checkpoint,
            })
        })
    }
}

impl Tunable for Learner {
    const TITLE: &'static str = "the Learner";
    fn tune(&mut self, knob: Knob, value: f64) -> Result<(), ActorError> {
        match knob {
            Knob::LearningRate => {
                self.settings.lr = value;
                if let Some(s) = self.session.as_mut() {
                    s.study.set_lr(value);
                }
                Ok(())
            }
            k => Err(Self::no_knob(k)),
        }
    }
}

crate::tunable_actor!(Learner);
