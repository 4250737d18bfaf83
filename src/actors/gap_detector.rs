//! GapDetector: measures what the model does not know from its own loss — scores reference
//! answers through Inference, opens gaps above the topic's running threshold, hands them
//! to the Learner, and closes them only when held-out paraphrases are answered below the
//! threshold after training.
//!
//! Receives [`Probe`] (from the Questioner), [`Trained`] (published by the Learner),
//! [`ConnectLoop`] (wiring by the runtime), [`GapStatus`],
//! [`ApplyTuning`](crate::actors::ApplyTuning) (the gap percentile) and the common
//! messages. Sends [`Score`] to Inference, [`LearnItems`] to the Learner, [`Remember`]
//! (gap, gap closed) to EpisodicMemory and [`Memorize`] (each closed gap's fact, source
//! [`LEARNED_SOURCE`]) to LongTermMemory, and publishes [`GapsChanged`] to the Questioner.
//! Runs on its own async arbiter under a `Supervisor`.

use std::collections::BTreeMap;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::actors::episodic_memory::Remember;
use crate::actors::inference::{Prompt, Score, Scored};
use crate::actors::learner::{LearnItems, Trained};
use crate::actors::long_term_memory::Memorize;
use crate::actors::{guarded, ActorBase, ActorError, ThauActor, Tunable};
use crate::learn::gaps::{GapScore, ThresholdConfig, Thresholds};
use crate::learn::source::KnowledgeItem;
use crate::learn::tuning::Knob;
use crate::learn::LearnEvent;
use crate::memory::{Episode, EpisodeKind};
use crate::model::tokenizer::{Message as ChatMessage, Role};
use crate::runtime::agents::AgentSpec;
use crate::runtime::events::EventKind;

/// Score the model on one item (the Questioner asked it).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<ProbeOutcome, ActorError>")]
pub struct Probe {
    pub session: String,
    pub item: KnowledgeItem,
}

/// What a [`Probe`] found.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeOutcome {
    pub item: String,
    pub topic: String,
    pub score: GapScore,
    pub threshold: f32,
    pub gap: bool,
}

/// Open gaps per topic, published to the Questioner (to steer by) whenever they change.
/// A notification, so it lives here with its publisher: the Questioner already depends on
/// this module for [`Probe`].
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct GapsChanged(pub BTreeMap<String, usize>);

/// The long-term memory source of the facts learned by closing gaps.
pub const LEARNED_SOURCE: &str = "learned";
/// Importance of what a closed gap stores in long-term memory.
pub const LEARNED_IMPORTANCE: f32 = 0.6;

/// Who the GapDetector talks to (sent by the runtime once every actor has started).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ConnectLoop {
    pub inference: Option<Recipient<Score>>,
    pub learner: Option<Recipient<LearnItems>>,
    pub questioner: Option<Recipient<GapsChanged>>,
    pub episodic: Option<Recipient<Remember>>,
    /// Where closed gaps go as learned facts.
    pub long_term: Option<Recipient<Memorize>>,
}

/// Counts of open and closed gaps.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<GapReport, ActorError>")]
pub struct GapStatus;

/// The answer to [`GapStatus`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GapReport {
    pub probed: u64,
    pub opened: u64,
    pub closed: u64,
    pub open: usize,
    pub open_by_topic: BTreeMap<String, usize>,
    /// Re-checks that found a trained gap still open.
    pub still_open_checks: u64,
}

/// An open gap.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenGap {
    item: KnowledgeItem,
    session: String,
    score: f32,
}

/// The GapDetector actor's state.
pub struct GapDetector {
    base: ActorBase,
    thresholds: Thresholds,
    open: BTreeMap<String, OpenGap>,
    report: GapReport,
    inference: Option<Recipient<Score>>,
    learner: Option<Recipient<LearnItems>>,
    questioner: Option<Recipient<GapsChanged>>,
    episodic: Option<Recipient<Remember>>,
    long_term: Option<Recipient<Memorize>>,
}

/// The chat prompt an item's question is scored under.
fn ask(question: &str) -> Prompt {
    Prompt::Chat(vec![ChatMessage::new(Role::User, question.to_string())])
}

impl GapDetector {
    pub fn new(base: ActorBase, spec: &AgentSpec) -> Self {
        // Validated by `Runtime::start`, so the fallback only guards direct construction.
        let cfg = spec
            .params
            .clone()
            .try_into::<ThresholdConfig>()
            .unwrap_or_default();
        GapDetector {
            base,
            thresholds: Thresholds::new(cfg),
            open: BTreeMap::new(),
            report: GapReport::default(),
            inference: None,
            learner: None,
            questioner: None,
            episodic: None,
            long_term: None,
        }
    }

    fn open_by_topic(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for g in self.open.values() {
            *m.entry(g.item.topic.clone()).or_insert(0) += 1;
        }
        m
    }

    fn publish(&mut self) {
        self.report.open = self.open.len();
        self.report.open_by_topic = self.open_by_topic();
        if let Some(q) = &self.questioner {
            q.do_send(GapsChanged(self.report.open_by_topic.clone()));
        }
    }

    fn remember(&self, e: Episode) {
        if let Some(ep) = &self.episodic {
            ep.do_send(Remember(vec![e]));
        }
    }

    fn event(&self, e: LearnEvent) {
        self.base
            .events
            .emit(self.base.name, EventKind::Learning { event: e });
    }

    /// Handles a scored probe: updates the threshold, opens a gap if needed.
    fn scored(
        &mut self,
        session: String,
        item: KnowledgeItem,
        scored: Scored,
    ) -> Result<ProbeOutcome, ActorError> {
        let score = GapScore::from_logprobs(&scored.logprobs)
            .ok_or_else(|| ActorError::BadRequest("the reference answer is empty".into()))?;
        let topic = item.topic.clone();
        let threshold = self
            .thresholds
            .threshold(&topic)
            .unwrap_or(self.thresholds.config.floor);
        let gap = self.thresholds.is_gap(&topic, score.mean_nll);
        self.thresholds.observe(&topic, score.mean_nll);
        self.report.probed += 1;
        self.event(LearnEvent::Scored {
            topic: topic.clone(),
            mean_nll: score.mean_nll,
            threshold,
            gap,
        });
        if gap && !self.open.contains_key(&item.id) {
            self.report.opened += 1;
            self.event(LearnEvent::GapOpened {
                item: item.id.clone(),
                topic: topic.clone(),
                mean_nll: score.mean_nll,
            });
            self.remember(
                Episode::new(
                    &session,
                    self.base.name,
                    EpisodeKind::Gap,
                    format!("{} — {}", item.question, item.answer),
                )
                .with_importance(0.7)
                .with_metadata(serde_json::json!({
                    "item": item.id, "topic": topic, "mean_nll": score.mean_nll,
                    "worst_span_nll": score.worst_span_nll, "threshold": threshold,
                })),
            );
            self.open.insert(
                item.id.clone(),
                OpenGap {
                    item: item.clone(),
                    session: session.clone(),
                    score: score.mean_nll,
                },
            );
            if let Some(l) = &self.learner {
                l.do_send(LearnItems {
                    session,
                    items: vec![item.clone()],
                });
            }
            self.publish();
        }
        Ok(ProbeOutcome {
            item: item.id,
            topic,
            score,
            threshold,
            gap,
        })
    }
}

impl ThauActor for GapDetector {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        format!(
            "{} probes, {} gaps opened, {} closed, {} open",
            self.report.probed,
            self.report.opened,
            self.report.closed,
            self.open.len()
        )
    }
    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({ "report": self.report, "open": self.open, "thresholds": self.thresholds })
    }
}

crate::supervised_actor!(GapDetector);

impl Handler<ConnectLoop> for GapDetector {
    type Result = ();
    fn handle(&mut self, m: ConnectLoop, _: &mut Context<Self>) {
        self.inference = m.inference;
        self.learner = m.learner;
        self.questioner = m.questioner;
        self.episodic = m.episodic;
        self.long_term = m.long_term;
    }
}

impl Handler<GapStatus> for GapDetector {
    type Result = Result<GapReport, ActorError>;
    fn handle(&mut self, _: GapStatus, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "GapStatus", |me| {
            let mut r = me.report.clone();
            r.open = me.open.len();
            r.open_by_topic = me.open_by_topic();
            Ok(r)
        })
    }
}

impl Handler<Probe> for GapDetector {
    type Result = ResponseActFuture<Self, Result<ProbeOutcome, ActorError>>;
    fn handle(&mut self, m: Probe, ctx: &mut Context<Self>) -> Self::Result {
        let inference = guarded(self, ctx, "Probe", |me| {
            me.inference
                .clone()
                .ok_or_else(|| ActorError::Unavailable("Inference is not running".into()))
        });
        let inference = match inference {
            Ok(i) => i,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let request = Score {
            prompt: ask(&m.item.question),
            continuation: m.item.answer.clone(),
        };
        Box::pin(
            async move { inference.send(request).await }
                .into_actor(self)
                .map(move |reply, me, _| {
                    let scored =
                        reply.map_err(|e| ActorError::Unavailable(format!("Inference: {e}")))??;
                    me.scored(m.session, m.item, scored)
                }),
        )
    }
}

impl Handler<Trained> for GapDetector {
    type Result = ResponseActFuture<Self, Result<(), ActorError>>;
    fn handle(&mut self, m: Trained, ctx: &mut Context<Self>) -> Self::Result {
        let _ = guarded(self, ctx, "Trained", |_| Ok(()));
        let Some(inference) = self.inference.clone() else {
            return Box::pin(fut::ready(Err(ActorError::Unavailable(
                "Inference is not running".into(),
            ))));
        };
        // Only gaps trained in this round are re-checked, on paraphrases never trained on.
        let checks: Vec<(String, Vec<Score>)> = m
            .report
            .items
            .iter()
            .filter_map(|id| self.open.get(id))
            .map(|g| {
                let paras = if g.item.paraphrases.is_empty() {
                    vec![g.item.question.clone()]
                } else {
                    g.item.paraphrases.clone()
                };
                let scores = paras
                    .iter()
                    .map(|p| Score {
                        prompt: ask(p),
                        continuation: g.item.answer.clone(),
                    })
                    .collect();
                (g.item.id.clone(), scores)
            })
            .collect();
        Box::pin(
            async move {
                let mut results = Vec::new();
                for (id, scores) in checks {
                    let mut nll = Vec::new();
                    for s in scores {
                        match inference.send(s).await {
                            Ok(Ok(r)) => nll.push(r.mean_nll),
                            _ => nll.clear(),
                        }
                    }
                    results.push((id, nll));
                }
                results
            }
            .into_actor(self)
            .map(move |results, me, _| {
                let mut changed = false;
                for (id, nll) in results {
                    let Some(g) = me.open.get(&id) else { continue };
                    let topic = g.item.topic.clone();
                    let threshold = me
                        .thresholds
                        .threshold(&topic)
                        .unwrap_or(me.thresholds.config.floor);
                    // Closed only if every paraphrase was scored and all are below.
                    if !nll.is_empty() && nll.iter().all(|&x| x <= threshold) {
                        let g = me.open.remove(&id).expect("present above");
                        me.report.closed += 1;
                        changed = true;
                        me.event(LearnEvent::GapClosed {
                            item: id.clone(),
                            topic: topic.clone(),
                        });
                        if let Some(long) = me.long_term.as_ref().filter(|_| !g.item.derived) {
                            // What was learned becomes recallable knowledge (a question
                            // asked of a passage's own words is already there).
                            // Content-addressed: a gap closed again stores nothing new.
                            long.do_send(Memorize(vec![g
                                .item
                                .memory(LEARNED_SOURCE, LEARNED_IMPORTANCE)]));
                        }
                        me.remember(
                            Episode::new(
                                &m.session,
                                me.base.name,
                                EpisodeKind::GapClosed,
                                g.item.question.clone(),
                            )
                            .with_importance(0.6)
                            .with_metadata(serde_json::json!({
                                "item": id, "topic": topic, "opened_at_nll": g.score,
                                "paraphrase_nll": nll, "threshold": threshold,
                                "round": m.report.round,
                            })),
                        );
                    } else {
                        me.report.still_open_checks += 1;
                    }
                }
                if changed {
                    me.publish();
                }
                Ok(())
            }),
        )
    }
}

impl Tunable for GapDetector {
    const TITLE: &'static str = "the GapDetector";
    fn tune(&mut self, knob: Knob, value: f64) -> Result<(), ActorError> {
        match knob {
            Knob::GapPercentile => {
                self.thresholds.config.percentile = value as f32;
                Ok(())
            }
            k => Err(Self::no_knob(k)),
        }
    }
}

crate::tunable_actor!(GapDetector);
