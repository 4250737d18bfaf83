//! `thau learn`: a self-learning session. This function only starts the actors' work and
//! watches it — the Learner opens (or creates) the model, the Questioner starts asking, and
//! the loop runs on the actors' own messages — then stops them, collects a summary and
//! records the session under `<home>/runs/learn/` (what `thau stats` reads).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::actors::gap_detector::{GapReport, GapStatus};
use crate::actors::learner::{FinishStudy, StartStudy, StudyInfo, StudySummary};
use crate::actors::questioner::{QuestionerStatus, StartQuestioning, StopQuestioning};
use crate::actors::ActorError;
use crate::error::{Result, ThauError};
use crate::learn::LearnEvent;
use crate::runtime::events::EventKind;
use crate::runtime::Runtime;

/// How often the session checks its limits and reports progress.
const TICK: Duration = Duration::from_millis(500);
/// How often the session looks whether the last questions were scored.
const SETTLE_POLL: Duration = Duration::from_millis(20);
/// How long the Learner may take to finish its last round and save.
const FINISH_TIMEOUT: Duration = Duration::from_secs(600);

/// What `thau learn` was asked to do.
#[derive(Debug, Clone)]
pub struct LearnRequest {
    pub minutes: Option<f64>,
    pub questions: Option<usize>,
    pub corpus: PathBuf,
    pub seed: u64,
    /// `ollama:MODEL@URL` or `openai:MODEL@URL`.
    pub teacher: Option<crate::learn::teacher::TeacherSpec>,
}

/// Live counters, for the progress line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub elapsed_s: f64,
    pub asked: usize,
    pub gaps_opened: u64,
    pub gaps_closed: u64,
    pub gaps_open: usize,
    pub rounds: u64,
    pub step: u64,
    pub loss: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub age: u32,
    pub idle: Option<String>,
    pub teacher_accepted: usize,
    pub teacher_rejected: u64,
}

/// One point of a session's curves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CurvePoint {
    pub elapsed_s: f64,
    pub step: u64,
    pub loss: f64,
    pub gaps_open: usize,
    pub gaps_closed: u64,
}

/// The record of a session (`<home>/runs/learn/<session>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LearnReport {
    pub session: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub seconds: f64,
    /// `time`, `questions`, `exhausted` or `signal`.
    pub stopped_by: String,
    pub fresh_model: bool,
    pub age: u32,
    pub params: u64,
    pub questions_asked: usize,
    pub gaps: GapReport,
    pub rounds: u64,
    pub step_before: u64,
    pub step_after: u64,
    /// Mean NLL per answer token on held-out paraphrases of the probe set.
    pub probe_loss_before: f64,
    pub probe_loss_after: f64,
    pub probe_items: usize,
    pub checkpoint: Option<PathBuf>,
    pub curve: Vec<CurvePoint>,
    /// Teacher items asked, and rejections by reason (empty without a teacher).
    #[serde(default)]
    pub teacher_accepted: usize,
    #[serde(default)]
    pub teacher_rejected: std::collections::BTreeMap<String, u64>,
}

fn actor_err(actor: &str, e: impl std::fmt::Display) -> ThauError {
    ThauError::Actor {
        actor: actor.into(),
        message: e.to_string(),
    }
}

fn flat<T>(
    actor: &str,
    r: std::result::Result<std::result::Result<T, ActorError>, actix::MailboxError>,
) -> Result<T> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(ActorError::BadRequest(m))) => Err(ThauError::Invalid(m)),
        Ok(Err(e)) => Err(actor_err(actor, e)),
        Err(e) => Err(actor_err(actor, e)),
    }
}

/// Runs a session on a started runtime until its time or question budget is spent, every
/// item was asked, or `stop` is set (Ctrl-C). `on_progress` sees the counters every tick.
pub async fn learn(
    rt: &Runtime,
    req: &LearnRequest,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<LearnReport> {
    let (Some(learner), Some(questioner), Some(gaps)) = (
        rt.addrs.learner.clone(),
        rt.addrs.questioner.clone(),
        rt.addrs.gap_detector.clone(),
    ) else {
        return Err(ThauError::Invalid(
            "learning needs the Learner, Questioner and GapDetector actors enabled".into(),
        ));
    };
    if rt.addrs.inference.is_none() {
        return Err(ThauError::Invalid(
            "learning needs the Inference actor enabled".into(),
        ));
    }
    let started_at = chrono::Utc::now();
    let session = format!("learn-{}", started_at.format("%Y%m%d-%H%M%S"));
    let mut events = rt.events.subscribe();
    let info: StudyInfo = flat(
        "learner",
        learner
            .send(StartStudy {
                session: session.clone(),
                corpus: req.corpus.clone(),
                seed: req.seed,
            })
            .await,
    )?;
    flat(
        "questioner",
        questioner
            .send(StartQuestioning {
                session: session.clone(),
                corpus: req.corpus.clone(),
                limit: req.questions,
                seed: req.seed,
                teacher: req.teacher.clone(),
            })
            .await,
    )?;
    let start = Instant::now();
    let deadline = req
        .minutes
        .map(|m| Duration::from_secs_f64(m.max(0.0) * 60.0));
    let mut p = Progress {
        step: info.step,
        age: info.age,
        ..Default::default()
    };
    let mut curve = Vec::new();
    let mut teacher = (0, std::collections::BTreeMap::new());
    let mut tick = tokio::time::interval(TICK);
    let stopped_by = loop {
        tokio::select! {
            ev = events.recv() => {
                if let Ok(ev) = ev {
                    if let EventKind::Learning { event } = ev.kind {
                        match event {
                            LearnEvent::Round(r) => {
                                p.rounds = r.round;
                                p.step = r.step;
                                p.loss = Some(r.loss);
                                p.tokens_per_s = Some(r.tokens_per_s);
                                p.age = r.age;
                                curve.push(CurvePoint {
                                    elapsed_s: start.elapsed().as_secs_f64(),
                                    step: r.step,
                                    loss: r.loss,
                                    gaps_open: p.gaps_open,
                                    gaps_closed: p.gaps_closed,
                                });
                            }
                            LearnEvent::GapOpened { .. } => {
                                p.gaps_opened += 1;
                                p.gaps_open += 1;
                            }
                            LearnEvent::GapClosed { .. } => {
                                p.gaps_closed += 1;
                                p.gaps_open = p.gaps_open.saturating_sub(1);
                            }
                            LearnEvent::Grew { to_age, .. } => p.age = to_age,
                            _ => {}
                        }
                    }
                }
            }
            _ = tick.tick() => {
                p.elapsed_s = start.elapsed().as_secs_f64();
                if let Ok(Ok(q)) = questioner.send(QuestionerStatus).await {
                    p.asked = q.asked;
                    p.idle = q.idle.clone();
                    p.teacher_accepted = q.teacher_accepted;
                    p.teacher_rejected = q.teacher_rejected.values().sum();
                    teacher = (q.teacher_accepted, q.teacher_rejected);
                }
                on_progress(&p);
                if stop.load(Ordering::SeqCst) {
                    break "signal";
                }
                if deadline.is_some_and(|d| start.elapsed() >= d) {
                    break "time";
                }
                if let Some(idle) = &p.idle {
                    if idle.contains("limit reached") && req.questions.is_some() {
                        break "questions";
                    }
                    // With a time budget the session goes on: the Learner works through
                    // the gaps found and the GapDetector re-checks them.
                    if idle.contains("every item") && deadline.is_none() {
                        break "exhausted";
                    }
                }
            }
        }
    };
    let asked = flat("questioner", questioner.send(StopQuestioning).await)?;
    // The last questions may still be in scoring: wait until every one was probed, so
    // their gaps reach the Learner before the session's final round and the report is
    // the same from run to run.
    let settle = Instant::now();
    while settle.elapsed() < FINISH_TIMEOUT {
        let probed = flat("gap_detector", gaps.send(GapStatus).await)?.probed;
        if probed >= asked as u64 {
            break;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    // Queued behind the Learner's pending rounds: it returns once they are done.
    let summary: StudySummary =
        match tokio::time::timeout(FINISH_TIMEOUT, learner.send(FinishStudy)).await {
            Ok(r) => flat("learner", r)?,
            Err(_) => {
                return Err(actor_err(
                    "learner",
                    "did not finish its last round in time",
                ))
            }
        };
    let gap_report: GapReport = flat("gap_detector", gaps.send(GapStatus).await)?;
    let report = LearnReport {
        session: session.clone(),
        started_at,
        seconds: start.elapsed().as_secs_f64(),
        stopped_by: stopped_by.to_string(),
        fresh_model: info.fresh,
        age: summary.age,
        params: info.params,
        questions_asked: asked,
        gaps: gap_report,
        rounds: summary.rounds,
        step_before: info.step,
        step_after: summary.step,
        probe_loss_before: info.probe_loss,
        probe_loss_after: summary.probe_loss,
        probe_items: info.probe_items,
        checkpoint: summary.checkpoint,
        curve,
        teacher_accepted: teacher.0,
        teacher_rejected: teacher.1,
    };
    let path = rt.home.runs().join("learn").join(format!("{session}.json"));
    let bytes =
        serde_json::to_vec_pretty(&report).map_err(|e| ThauError::Invalid(e.to_string()))?;
    crate::fsutil::atomic_write(&path, &bytes)?;
    Ok(report)
}

/// Every recorded session of a data directory, oldest first (`thau stats`).
pub fn sessions(home: &crate::home::Home) -> Result<Vec<LearnReport>> {
    let dir = home.runs().join("learn");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| ThauError::io(&f, e))?;
        let r: LearnReport = serde_json::from_slice(&bytes)
            .map_err(|e| ThauError::Invalid(format!("{}: {e}", f.display())))?;
        out.push(r);
    }
    Ok(out)
}
