//! Tuner: auto-tuning — turns feedback on chat turns ([`Feedback`]) and the loop's learning
//! signals (Learner rounds, gaps opened and closed, seen on the event bus as
//! [`LearningSignal`]s) into bounded, logged, revertible changes of the learning rate, the
//! sampling temperature and the gap percentile ([`Tuning`]), and applies each change to its
//! actor with [`ApplyTuning`].
//!
//! Receives [`Feedback`], [`LearningSignal`], [`TuningStatus`], [`RevertTuning`] and the
//! common messages. Sends [`ApplyTuning`] to the Learner, Inference and the GapDetector and
//! [`Remember`] (feedback) to EpisodicMemory. Owns `<home>/tuning.json` (a lock file keeps
//! `thau feedback` and `thau tune revert` off it while it runs). Runs on its own async
//! arbiter under a `Supervisor`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use actix::prelude::*;
use serde::Serialize;

use crate::actors::episodic_memory::Remember;
use crate::actors::{guarded, ActorBase, ActorError, ApplyTuning, ThauActor};
use crate::learn::gaps::{ThresholdConfig, ThresholdMode};
use crate::learn::tuning::{Change, Knob, Rating, Tuning, TuningConfig, TUNING_FILE};
use crate::learn::LearnEvent;
use crate::memory::{DirLock, Episode, EpisodeKind};
use crate::model::generate::SamplingParams;
use crate::runtime::agents::{ActorKind, AgentSpec};
use crate::runtime::events::EventKind;

/// The lock file, beside [`TUNING_FILE`], held by whoever changes the tuning state.
pub const TUNING_LOCK: &str = "tuning.lock";

/// A thumbs up or down on a chat turn (from the API, `thau chat` or `thau feedback`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<FeedbackOutcome, ActorError>")]
pub struct Feedback {
    pub session: String,
    /// The rated turn (its episode id, or the client's own id for it).
    pub turn: String,
    pub rating: Rating,
    pub note: Option<String>,
}

/// What a [`Feedback`] did.
#[derive(Debug, Clone, Serialize)]
pub struct FeedbackOutcome {
    pub change: Option<Change>,
    /// Ratings received so far, by rating.
    pub ratings: BTreeMap<String, u64>,
}

/// A step of the learning loop, forwarded from the event bus by the runtime.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct LearningSignal(pub LearnEvent);

/// The tuning state: values, bounds' evidence and the change log.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Tuning, ActorError>")]
pub struct TuningStatus;

/// Undo a logged change (by id).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Change, ActorError>")]
pub struct RevertTuning(pub u64);

/// Who receives which knob.
#[derive(Clone, Default)]
pub struct TunerLinks {
    pub learner: Option<Recipient<ApplyTuning>>,
    pub inference: Option<Recipient<ApplyTuning>>,
    pub gap_detector: Option<Recipient<ApplyTuning>>,
    pub episodic: Option<Recipient<Remember>>,
}

/// What the agent files say about tuning.
pub struct TuningSetup {
    pub config: TuningConfig,
    /// The knobs' configured values.
    pub base: BTreeMap<Knob, f64>,
    /// Knobs the tuner must leave alone.
    pub frozen: Vec<Knob>,
}

/// The tuner's settings and the knobs' configured values, read from the agent files (the
/// runtime and the offline commands read them the same way).
pub fn tuning_setup(specs: &BTreeMap<ActorKind, AgentSpec>) -> Result<TuningSetup, String> {
    let config = match specs.get(&ActorKind::Tuner) {
        Some(s) => s
            .params
            .clone()
            .try_into::<TuningConfig>()
            .map_err(|e| format!("agents/tuner.toml [params]: {e}"))?,
        None => TuningConfig::default(),
    };
    config
        .validate()
        .map_err(|e| format!("agents/tuner.toml [params]: {e}"))?;
    let mut base = BTreeMap::new();
    let mut frozen = Vec::new();
    if let Some(s) = specs.get(&ActorKind::Learner) {
        let (_, learn) = crate::actors::learner::learner_params(&s.params)?;
        base.insert(Knob::LearningRate, learn.lr);
    }
    if let Some(s) = specs.get(&ActorKind::Inference) {
        let p: SamplingParams = s.params.clone().try_into().map_err(|e| e.to_string())?;
        base.insert(Knob::Temperature, p.temperature);
    }
    if let Some(s) = specs.get(&ActorKind::GapDetector) {
        let g: ThresholdConfig = s.params.clone().try_into().map_err(|e| e.to_string())?;
        base.insert(Knob::GapPercentile, g.percentile as f64);
        // In z-score mode the percentile is not used: moving it would log changes that
        // change nothing.
        if g.mode == ThresholdMode::ZScore {
            frozen.push(Knob::GapPercentile);
        }
    }
    Ok(TuningSetup {
        config,
        base,
        frozen,
    })
}

/// Loads the tuning state of data directory `home` for the given agent settings.
pub fn load_tuning(
    home: &Path,
    specs: &BTreeMap<ActorKind, AgentSpec>,
) -> crate::error::Result<Tuning> {
    let setup = tuning_setup(specs).map_err(crate::error::ThauError::Invalid)?;
    let mut t = Tuning::load(&home.join(TUNING_FILE), setup.config, setup.base)?;
    t.frozen = setup.frozen;
    Ok(t)
}

/// The Tuner actor's state.
pub struct Tuner {
    base: ActorBase,
    path: PathBuf,
    state: Result<(Tuning, DirLock), String>,
    links: TunerLinks,
}

impl Tuner {
    /// Opens `<home>/tuning.json` and re-applies the tuned values to their actors.
    pub fn new(
        base: ActorBase,
        home: &Path,
        specs: &BTreeMap<ActorKind, AgentSpec>,
        links: TunerLinks,
    ) -> Self {
        let path = home.join(TUNING_FILE);
        let state = DirLock::acquire_named(home, TUNING_LOCK)
            .map_err(|e| e.to_string())
            .and_then(|lock| {
                load_tuning(home, specs)
                    .map(|t| (t, lock))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = &state {
            tracing::warn!(error = %e, "tuner disabled");
        }
        let me = Tuner {
            base,
            path,
            state,
            links,
        };
        if let Ok((t, _)) = &me.state {
            for (knob, value) in t.overrides() {
                me.apply(knob, value);
            }
        }
        me
    }

    fn tuning(&mut self) -> Result<&mut Tuning, ActorError> {
        match &mut self.state {
            Ok((t, _)) => Ok(t),
            Err(e) => Err(ActorError::Unavailable(format!("tuner: {e}"))),
        }
    }

    fn apply(&self, knob: Knob, value: f64) {
        let target = match knob {
            Knob::LearningRate => &self.links.learner,
            Knob::Temperature => &self.links.inference,
            Knob::GapPercentile => &self.links.gap_detector,
        };
        if let Some(r) = target {
            r.do_send(ApplyTuning { knob, value });
        }
    }

    /// Applies, saves, logs and announces a change.
    fn commit(&mut self, change: Option<Change>) -> Result<Option<Change>, ActorError> {
        let path = self.path.clone();
        let t = self.tuning()?;
        t.save(&path)
            .map_err(|e| ActorError::Failed(format!("saving tuning: {e}")))?;
        if let Some(c) = &change {
            tracing::info!(
                knob = c.knob.name(),
                from = c.from,
                to = c.to,
                reason = %c.reason,
                "tuned"
            );
            self.apply(c.knob, c.to);
            self.base.events.emit(
                self.base.name,
                EventKind::Learning {
                    event: LearnEvent::Tuned(c.clone()),
                },
            );
        }
        Ok(change)
    }
}

impl ThauActor for Tuner {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        match &self.state {
            Ok((t, _)) => {
                let values: Vec<String> = Knob::ALL
                    .iter()
                    .filter_map(|k| t.value(*k).map(|v| format!("{} {v:.4}", k.name())))
                    .collect();
                format!("{} changes; {}", t.log.len(), values.join(", "))
            }
            Err(e) => format!("disabled: {e}"),
        }
    }
    fn flush_state(&mut self) -> Result<(), ActorError> {
        self.commit(None).map(|_| ())
    }
}

crate::supervised_actor!(Tuner);

impl Handler<Feedback> for Tuner {
    type Result = Result<FeedbackOutcome, ActorError>;
    fn handle(&mut self, m: Feedback, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "Feedback", |me| {
            let t = me.tuning()?;
            let change = t.feedback(m.rating);
            let ratings = t.ratings.clone();
            if let Some(ep) = &me.links.episodic {
                let text = format!(
                    "thumbs {} on turn {}{}",
                    if m.rating == Rating::Up { "up" } else { "down" },
                    m.turn,
                    m.note
                        .as_deref()
                        .map(|n| format!(": {n}"))
                        .unwrap_or_default()
                );
                ep.do_send(Remember(vec![Episode::new(
                    &m.session,
                    me.base.name,
                    EpisodeKind::Feedback,
                    text,
                )
                .with_metadata(serde_json::json!({
                    "turn": m.turn, "rating": m.rating, "note": m.note,
                    "change": change.as_ref().map(|c| c.id),
                }))]));
            }
            let change = me.commit(change)?;
            Ok(FeedbackOutcome { change, ratings })
        })
    }
}

impl Handler<LearningSignal> for Tuner {
    type Result = ();
    fn handle(&mut self, m: LearningSignal, ctx: &mut Context<Self>) {
        let _ = guarded(self, ctx, "LearningSignal", |me| {
            let t = me.tuning()?;
            let change = match m.0 {
                LearnEvent::Round(r) => t.round_loss(r.loss),
                LearnEvent::GapOpened { .. } => t.gap(false),
                LearnEvent::GapClosed { .. } => t.gap(true),
                _ => return Ok(()),
            };
            // The evidence counters are saved with the next change or flush.
            if change.is_some() {
                me.commit(change)?;
            }
            Ok(())
        });
    }
}

impl Handler<TuningStatus> for Tuner {
    type Result = Result<Tuning, ActorError>;
    fn handle(&mut self, _: TuningStatus, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "TuningStatus", |me| Ok(me.tuning()?.clone()))
    }
}

impl Handler<RevertTuning> for Tuner {
    type Result = Result<Change, ActorError>;
    fn handle(&mut self, m: RevertTuning, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "RevertTuning", |me| {
            let change = me
                .tuning()?
                .revert(m.0)
                .map_err(|e| ActorError::BadRequest(e.to_string()))?;
            me.commit(Some(change.clone()))?;
            Ok(change)
        })
    }
}
