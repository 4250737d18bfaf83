//! Questioner: asks the model questions — per topic, most often where gaps are open — from
//! the knowledge base, at a steady pace during a learning session ([`Picker`]); with a
//! teacher LLM configured, one question in `teacher_every` is a new item the teacher
//! proposes, kept only if it passes the [`QualityFilter`].
//!
//! Receives [`StartQuestioning`], [`StopQuestioning`], [`GapsChanged`] (from the
//! GapDetector, which defines it), [`QuestionerStatus`] and the common messages. Sends [`Probe`] to the
//! GapDetector and [`Remember`] (every question) to EpisodicMemory. Runs on its own async
//! arbiter under a `Supervisor`; its timer only sends messages, so it never blocks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::actors::episodic_memory::Remember;
use crate::actors::gap_detector::{GapsChanged, Probe};
use crate::actors::{guarded, ActorBase, ActorError, ThauActor};
use crate::learn::picker::{NoQuestion, Picker, PickerConfig};
use crate::learn::source::{KnowledgeBase, KnowledgeItem, Templates};
use crate::learn::teacher::{HttpTeacher, QualityFilter, Rejection, TeacherSpec};
use crate::learn::LearnEvent;
use crate::memory::{Episode, EpisodeKind};
use crate::runtime::agents::AgentSpec;
use crate::runtime::events::EventKind;

/// Probes waiting for an answer before the Questioner holds back (the model is busy).
const MAX_IN_FLIGHT: usize = 2;

/// `[params]` of `agents/questioner.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuestionerParams {
    /// Pace, steering and limits.
    pub ask: PickerConfig,
    /// Question templates per language for the corpus's passages.
    pub templates: Option<Templates>,
}

/// Start asking about the knowledge in `corpus`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct StartQuestioning {
    pub session: String,
    pub corpus: PathBuf,
    /// Stop after this many questions.
    pub limit: Option<usize>,
    pub seed: u64,
    /// An LLM that proposes new items (`None`: the corpus only).
    pub teacher: Option<TeacherSpec>,
    /// Items this session asked before it was interrupted: not asked again, and counted
    /// against `limit`.
    pub already_asked: Vec<String>,
}

/// Stop asking; answers how many questions were asked.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct StopQuestioning;

/// Counts for progress displays.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<QuestionerReport, ActorError>")]
pub struct QuestionerStatus;

/// The answer to [`QuestionerStatus`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct QuestionerReport {
    pub active: bool,
    pub asked: usize,
    pub skipped_similar: usize,
    /// Items asked again on their review schedule, and how many of those were gaps again
    /// (forgotten: reopened and trained again).
    pub reviews: usize,
    pub lapses: usize,
    pub in_flight: usize,
    /// Why the Questioner is idle, if it is.
    pub idle: Option<String>,
    /// Teacher items that passed the quality filter and were asked.
    pub teacher_accepted: usize,
    /// Teacher failures and filtered items, by reason.
    pub teacher_rejected: BTreeMap<String, u64>,
}

struct Asking {
    session: String,
    picker: Picker,
    limit: Option<usize>,
    asked: usize,
    /// The asking timer; `None` after a restart dropped it with the old context.
    timer: Option<SpawnHandle>,
    interval: Duration,
    teacher: Option<Arc<HttpTeacher>>,
    filter: QualityFilter,
    teacher_busy: bool,
    teacher_accepted: usize,
    teacher_rejected: BTreeMap<String, u64>,
}

/// The Questioner actor's state.
pub struct Questioner {
    base: ActorBase,
    params: QuestionerParams,
    gap_detector: Option<Recipient<Probe>>,
    episodic: Option<Recipient<Remember>>,
    asking: Option<Asking>,
    in_flight: usize,
    idle: Option<String>,
}

impl Questioner {
    pub fn new(
        base: ActorBase,
        spec: &AgentSpec,
        gap_detector: Option<Recipient<Probe>>,
        episodic: Option<Recipient<Remember>>,
    ) -> Self {
        // Validated by `Runtime::start`, so the fallback only guards direct construction.
        let params = spec
            .params
            .clone()
            .try_into::<QuestionerParams>()
            .unwrap_or_default();
        Questioner {
            base,
            params,
            gap_detector,
            episodic,
            asking: None,
            in_flight: 0,
            idle: None,
        }
    }

    fn event(&self, e: LearnEvent) {
        self.base
            .events
            .emit(self.base.name, EventKind::Learning { event: e });
    }

    fn set_idle(&mut self, reason: String) {
        if self.idle.as_ref() != Some(&reason) {
            self.event(LearnEvent::Idle {
                reason: reason.clone(),
            });
            self.idle = Some(reason);
        }
    }

    /// Starts the asking timer of the session if it has none (a new session, or one that
    /// outlived a restart).
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(a) = self.asking.as_mut() {
            if a.timer.is_none() {
                a.timer = Some(ctx.run_interval(a.interval, |me, ctx| me.tick(ctx)));
            }
        }
    }

    /// One tick of the session timer: ask the next question unless the model is busy.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight >= MAX_IN_FLIGHT {
            return;
        }
        let Some(a) = self.asking.as_mut() else {
            return;
        };
        if a.limit.is_some_and(|l| a.asked >= l) {
            self.set_idle("question limit reached".into());
            return;
        }
        let every = a.picker.config().teacher_every.max(1);
        if a.teacher.is_some() && !a.teacher_busy && a.asked % every == every - 1 {
            self.ask_teacher(ctx);
        }
        let Some(a) = self.asking.as_mut() else {
            return;
        };
        let item = match a.picker.next(Instant::now()) {
            Ok(item) => item,
            Err(NoQuestion::Exhausted { retry_in_s: None }) => {
                self.set_idle("every item has been asked".into());
                return;
            }
            Err(NoQuestion::Exhausted {
                retry_in_s: Some(_),
            }) => {
                // The wait changes every second: one idle reason for all of it.
                self.set_idle("every item has been asked; waiting for the next review".into());
                return;
            }
            Err(NoQuestion::RateLimited { retry_in_s }) => {
                self.set_idle(format!(
                    "rate limit reached; next question in {retry_in_s} s"
                ));
                return;
            }
        };
        self.ask(item, "corpus", ctx);
    }

    /// Records the question and sends it to the GapDetector.
    fn ask(&mut self, item: KnowledgeItem, source: &str, ctx: &mut Context<Self>) {
        let Some(target) = self.gap_detector.clone() else {
            self.set_idle("no GapDetector running".into());
            return;
        };
        let Some(a) = self.asking.as_mut() else {
            return;
        };
        // A teacher item can arrive after the limit was reached by corpus questions.
        if a.limit.is_some_and(|l| a.asked >= l) {
            return;
        }
        a.asked += 1;
        let session = a.session.clone();
        self.idle = None;
        self.event(LearnEvent::Asked {
            topic: item.topic.clone(),
            question: item.question.clone(),
        });
        if let Some(ep) = &self.episodic {
            ep.do_send(Remember(vec![Episode::new(
                &session,
                self.base.name,
                EpisodeKind::Question,
                item.question.clone(),
            )
            .with_importance(0.2)
            .with_metadata(serde_json::json!({
                "item": item.id, "topic": item.topic, "lang": item.lang, "source": source,
            }))]));
        }
        self.in_flight += 1;
        target
            .send(Probe { session, item })
            .into_actor(self)
            .map(|reply, me, _| {
                me.in_flight = me.in_flight.saturating_sub(1);
                match reply.map_err(|e| ActorError::Unavailable(e.to_string())) {
                    // The outcome sets the item's next review.
                    Ok(Ok(outcome)) => {
                        if let Some(a) = me.asking.as_mut() {
                            a.picker.outcome(&outcome.item, outcome.gap, Instant::now());
                        }
                    }
                    Ok(Err(e)) | Err(e) => {
                        tracing::warn!(actor = me.base.name, error = %e, "probe failed");
                    }
                }
            })
            .spawn(ctx);
    }

    /// Asks the teacher for a new item off the arbiter (a blocking HTTP call), filters it,
    /// and asks it; any failure is a counted, logged rejection.
    fn ask_teacher(&mut self, ctx: &mut Context<Self>) {
        let Some(a) = self.asking.as_mut() else {
            return;
        };
        let (Some(teacher), Some((topic, lang))) = (a.teacher.clone(), a.picker.teacher_topic())
        else {
            return;
        };
        a.teacher_busy = true;
        let (t, l) = (topic.clone(), lang.clone());
        tokio::task::spawn_blocking(move || teacher.propose(&t, &l))
            .into_actor(self)
            .map(move |joined, me, ctx| {
                let Some(a) = me.asking.as_mut() else {
                    return;
                };
                a.teacher_busy = false;
                let checked = joined
                    .map_err(|e| Rejection::Unreachable(format!("teacher task failed: {e}")))
                    .and_then(|r| r)
                    .and_then(|p| a.filter.check(&p, &lang).map(|()| p))
                    .and_then(|p| {
                        if a.picker.admit(&p.question) {
                            Ok(p)
                        } else {
                            Err(Rejection::NearDuplicate { similarity: a.picker.config().max_similarity })
                        }
                    });
                match checked {
                    Ok(p) => {
                        a.teacher_accepted += 1;
                        let item = p.into_item(&topic, &lang);
                        me.event(LearnEvent::TeacherAccepted {
                            topic: topic.clone(),
                            question: item.question.clone(),
                        });
                        me.ask(item, "teacher", ctx);
                    }
                    Err(r) => {
                        *a.teacher_rejected.entry(r.kind().to_string()).or_insert(0) += 1;
                        tracing::warn!(actor = me.base.name, reason = r.kind(), detail = %r, "teacher item rejected");
                        me.event(LearnEvent::TeacherRejected {
                            reason: r.kind().to_string(),
                            detail: r.to_string(),
                        });
                    }
                }
            })
            .spawn(ctx);
    }
}

impl ThauActor for Questioner {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        match &self.asking {
            Some(a) => format!("session {}: {} questions asked", a.session, a.asked),
            None => "idle: no learning session".into(),
        }
    }
    fn reset(&mut self) {
        // The timer and the probes in flight died with the old context; the session
        // itself (what was asked, the limit) is kept, and the next message re-arms the
        // timer (the session polls the Questioner's status every tick).
        if let Some(a) = self.asking.as_mut() {
            a.timer = None;
        }
        self.in_flight = 0;
    }
}

crate::supervised_actor!(Questioner);

impl Handler<StartQuestioning> for Questioner {
    type Result = Result<usize, ActorError>;
    fn handle(&mut self, m: StartQuestioning, ctx: &mut Context<Self>) -> Self::Result {
        let kb = guarded(self, ctx, "StartQuestioning", |me| {
            let templates = me.params.templates.clone().unwrap_or_default();
            KnowledgeBase::load(&m.corpus, &templates)
                .map_err(|e| ActorError::BadRequest(e.to_string()))
        })?;
        if let Some(old) = self.asking.take().and_then(|a| a.timer) {
            ctx.cancel_future(old);
        }
        let n = kb.items.len();
        let interval = Duration::from_millis(self.params.ask.interval_ms.max(1));
        let mut picker = Picker::new(kb.items, self.params.ask.clone(), m.seed);
        let asked = m.already_asked.len();
        picker.mark_asked(m.already_asked);
        self.asking = Some(Asking {
            session: m.session,
            picker,
            limit: m.limit,
            asked,
            timer: None,
            interval,
            teacher: m.teacher.map(|spec| Arc::new(HttpTeacher::new(spec))),
            filter: QualityFilter::default(),
            teacher_busy: false,
            teacher_accepted: 0,
            teacher_rejected: BTreeMap::new(),
        });
        self.idle = None;
        self.arm(ctx);
        Ok(n)
    }
}

impl Handler<StopQuestioning> for Questioner {
    type Result = Result<usize, ActorError>;
    fn handle(&mut self, _: StopQuestioning, ctx: &mut Context<Self>) -> Self::Result {
        let _ = guarded(self, ctx, "StopQuestioning", |_| Ok(()));
        Ok(match self.asking.take() {
            Some(a) => {
                if let Some(t) = a.timer {
                    ctx.cancel_future(t);
                }
                a.asked
            }
            None => 0,
        })
    }
}

impl Handler<GapsChanged> for Questioner {
    type Result = ();
    fn handle(&mut self, m: GapsChanged, ctx: &mut Context<Self>) {
        if let Some(a) = self.asking.as_mut() {
            a.picker.set_open_gaps(m.0);
        }
        self.arm(ctx);
    }
}

impl Handler<QuestionerStatus> for Questioner {
    type Result = Result<QuestionerReport, ActorError>;
    fn handle(&mut self, _: QuestionerStatus, ctx: &mut Context<Self>) -> Self::Result {
        self.arm(ctx);
        guarded(self, ctx, "QuestionerStatus", |me| {
            Ok(QuestionerReport {
                active: me.asking.is_some(),
                asked: me.asking.as_ref().map_or(0, |a| a.asked),
                skipped_similar: me.asking.as_ref().map_or(0, |a| a.picker.skipped_similar),
                reviews: me.asking.as_ref().map_or(0, |a| a.picker.reviews),
                lapses: me.asking.as_ref().map_or(0, |a| a.picker.lapses),
                in_flight: me.in_flight,
                idle: me.idle.clone(),
                teacher_accepted: me.asking.as_ref().map_or(0, |a| a.teacher_accepted),
                teacher_rejected: me
                    .asking
                    .as_ref()
                    .map(|a| a.teacher_rejected.clone())
                    .unwrap_or_default(),
            })
        })
    }
}
