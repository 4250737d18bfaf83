//! `thau learn`: a self-learning session. This function only starts the actors' work and
//! watches it — the Learner opens (or creates) the model, the Questioner starts asking, and
//! the loop runs on the actors' own messages, with the Learner kept training in between
//! ([`practise`]) — then stops them, collects a summary and
//! records the session under `<home>/runs/learn/` (what `thau stats` reads).
//!
//! A running session keeps a [`Journal`] beside the reports; if the process dies (a
//! crash, SIGKILL, a power cut), the next `thau learn` resumes that session: the same id,
//! the model from its newest checkpoint, the questions already asked (read back from
//! EpisodicMemory) not asked again, the gaps still open re-probed, and the time and
//! question budgets counted from where it stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::actors::episodic_memory::ListEpisodes;
use crate::actors::gap_detector::{GapReport, GapStatus, Probe};
use crate::actors::learner::{FinishStudy, Learner, Practice, StartStudy, StudyInfo, StudySummary};
use crate::actors::questioner::{QuestionerStatus, StartQuestioning, StopQuestioning};
use crate::actors::reply;
use crate::error::{Result, ThauError};
use crate::learn::source::{KnowledgeBase, Templates, MAX_TEXT_BYTES};
use crate::learn::LearnEvent;
use crate::memory::episodic::EpisodeFilter;
use crate::memory::EpisodeKind;
use crate::runtime::events::EventKind;
use crate::runtime::Runtime;

/// How often the session checks its limits and reports progress.
const TICK: Duration = Duration::from_millis(500);
/// How often the session looks whether the last questions were scored.
const SETTLE_POLL: Duration = Duration::from_millis(20);
/// How long the Learner may take to finish its last round and save.
const FINISH_TIMEOUT: Duration = Duration::from_secs(600);
/// Pause before asking again after a practice round failed.
const PRACTICE_RETRY: Duration = Duration::from_secs(1);
/// How a session's journal is named: `<session>.open.json`.
const JOURNAL_SUFFIX: &str = ".open.json";
/// Episodes read per page when a resumed session looks up what it did.
const EPISODE_PAGE: usize = 500;

/// What `thau learn` was asked to do.
#[derive(Debug, Clone)]
pub struct LearnRequest {
    pub minutes: Option<f64>,
    pub questions: Option<usize>,
    pub corpus: PathBuf,
    pub seed: u64,
    /// `ollama:MODEL@URL` or `openai:MODEL@URL`.
    pub teacher: Option<crate::learn::teacher::TeacherSpec>,
    /// Resume an interrupted session if there is one (`false`: drop it, start anew).
    pub resume: bool,
    /// Measure answer accuracy on a fixed sample of these questions before and after.
    pub accuracy: Option<AccuracyCheck>,
}

/// Where `thau learn` takes its answer-accuracy sample from.
#[derive(Debug, Clone)]
pub struct AccuracyCheck {
    /// A QA file in the `thau eval answers` format.
    pub qa: PathBuf,
    /// Questions in the sample (the same ones every session).
    pub sample: usize,
}

/// Answer accuracy on the session's fixed sample (shares of questions whose answer held
/// the fact).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccuracySample {
    pub questions: usize,
    pub with_memory: f64,
    pub closed_book: f64,
    pub retrieval_only: f64,
}

/// Longest answer when measuring accuracy, in tokens.
const ACCURACY_MAX_TOKENS: usize = 48;

/// The fixed sample of `check`: the same questions for every session (a seed of its own,
/// not the session's), half of each language when the file has both.
fn accuracy_items(check: &AccuracyCheck) -> Result<Vec<crate::eval::score::QaItem>> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let text = std::fs::read_to_string(&check.qa).map_err(|e| ThauError::io(&check.qa, e))?;
    let mut items = crate::eval::score::parse_qa(&text)
        .map_err(|e| ThauError::Invalid(format!("{}: {e}", check.qa.display())))?;
    items.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    // Alternate languages so a small sample covers each.
    let mut langs: Vec<String> = items.iter().map(|i| i.lang.clone()).collect();
    langs.sort();
    langs.dedup();
    let mut by_lang: Vec<std::collections::VecDeque<_>> = langs
        .iter()
        .map(|l| items.iter().filter(|i| &i.lang == l).cloned().collect())
        .collect();
    let mut out = Vec::new();
    while out.len() < check.sample && by_lang.iter().any(|q| !q.is_empty()) {
        for q in by_lang.iter_mut() {
            if let Some(i) = q.pop_front() {
                if out.len() < check.sample {
                    out.push(i);
                }
            }
        }
    }
    Ok(out)
}

/// Answer accuracy of the model Inference serves now, on `items` (`None`, logged, when it
/// cannot be measured: no model yet, an actor down).
async fn answer_accuracy(
    rt: &Runtime,
    items: &[crate::eval::score::QaItem],
) -> Option<AccuracySample> {
    use crate::eval::answers::{collect_local, score, EvalOptions, Mode};
    if items.is_empty() {
        return None;
    }
    let opts = EvalOptions {
        closed_book_only: false,
        max_tokens: ACCURACY_MAX_TOKENS,
    };
    match collect_local(rt, items, &opts).await {
        Ok(c) => {
            let r = score(PathBuf::new(), items, c, 0.0, "local".into());
            let acc = |m: Mode| r.mode(m).map_or(0.0, |s| s.overall.accuracy);
            Some(AccuracySample {
                questions: items.len(),
                with_memory: acc(Mode::Memory),
                closed_book: acc(Mode::ClosedBook),
                retrieval_only: acc(Mode::RetrievalOnly),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "answer accuracy not measured");
            None
        }
    }
}

/// A session in progress (`<home>/runs/learn/<session>.open.json`): written when it
/// starts and on every tick, removed once its report is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub session: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub corpus: PathBuf,
    pub seed: u64,
    /// Seconds the session has run, over all its runs.
    pub elapsed_s: f64,
    /// How many times it was resumed.
    pub resumes: u32,
    pub fresh_model: bool,
    pub step_before: u64,
    pub probe_loss_before: f64,
    #[serde(default)]
    pub accuracy_before: Option<AccuracySample>,
}

impl Journal {
    fn path(home: &crate::home::Home, session: &str) -> PathBuf {
        home.runs()
            .join("learn")
            .join(format!("{session}{JOURNAL_SUFFIX}"))
    }

    fn save(&self, home: &crate::home::Home) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| ThauError::Runtime(e.to_string()))?;
        crate::fsutil::atomic_write(&Self::path(home, &self.session), &bytes)
    }
}

/// The journals of interrupted sessions, oldest first.
pub fn interrupted(home: &crate::home::Home) -> Result<Vec<Journal>> {
    let dir = home.runs().join("learn");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if !p.to_string_lossy().ends_with(JOURNAL_SUFFIX) {
            continue;
        }
        let bytes = std::fs::read(&p).map_err(|e| ThauError::io(&p, e))?;
        let j: Journal = serde_json::from_slice(&bytes).map_err(|e| {
            ThauError::Invalid(format!(
                "{}: unreadable session journal ({e}); remove it or run with --new-session",
                p.display()
            ))
        })?;
        out.push(j);
    }
    out.sort_by_key(|j| j.started_at);
    Ok(out)
}

/// Every episode of `kind` in `session`, oldest page first.
async fn session_episodes(
    rt: &Runtime,
    session: &str,
    kind: EpisodeKind,
) -> Result<Vec<crate::memory::Episode>> {
    let Some(ep) = rt.addrs.episodic_memory.clone() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    loop {
        let page = reply(
            "episodic_memory",
            ep.send(ListEpisodes {
                filter: EpisodeFilter {
                    session: Some(session.to_string()),
                    kind: Some(kind),
                },
                limit: EPISODE_PAGE,
                offset: out.len(),
            })
            .await,
        )?;
        let n = page.len();
        out.extend(page);
        if n < EPISODE_PAGE {
            return Ok(out);
        }
    }
}

/// The `item` ids in episodes' metadata.
fn item_ids(episodes: &[crate::memory::Episode]) -> Vec<String> {
    episodes
        .iter()
        .filter_map(|e| e.metadata.get("item")?.as_str().map(str::to_string))
        .collect()
}

fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
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
    /// Of those, items asked again on their review schedule, and how many of these
    /// reviews found a gap again (forgotten, then reopened and trained again).
    #[serde(default)]
    pub reviews: usize,
    #[serde(default)]
    pub lapses: usize,
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
    /// How many times the session was resumed after an interruption (its gap counters
    /// cover the last run).
    #[serde(default)]
    pub resumes: u32,
    /// The corpus's passages put into long-term memory at the start (new ones), and those
    /// it already held.
    #[serde(default)]
    pub passages_stored: usize,
    #[serde(default)]
    pub passages_known: usize,
    /// The corpus's questions put into long-term memory at the start with their answers
    /// (new ones; see [`crate::commands::remember::remember_questions`]).
    #[serde(default)]
    pub questions_stored: usize,
    /// Documents of the corpus left out (binary, not UTF-8, empty, too large), and those
    /// learned from their first [`MAX_TEXT_BYTES`] only: "PATH: reason".
    #[serde(default)]
    pub documents_left_out: Vec<String>,
    /// Answer accuracy on the fixed sample (`--accuracy-qa`) before and after the session.
    #[serde(default)]
    pub accuracy_before: Option<AccuracySample>,
    #[serde(default)]
    pub accuracy_after: Option<AccuracySample>,
}

/// What of the corpus the session could not use, or used in part: the documents long-term
/// memory refused (with its reason) and those longer than the learning loop reads.
fn left_out(corpus: &Path, refused: &[crate::memory::passages::Refused]) -> Vec<String> {
    let mut out: Vec<String> = refused
        .iter()
        .map(|r| {
            // Memory's reason already names the file ("bad record: PATH: why").
            let path = format!("{}: ", r.path.display());
            let why = r
                .reason
                .rsplit_once(&path)
                .map_or(r.reason.as_str(), |(_, w)| w);
            format!("{path}{why}")
        })
        .collect();
    let refused: std::collections::HashSet<&Path> =
        refused.iter().map(|r| r.path.as_path()).collect();
    for doc in crate::memory::passages::documents(corpus).unwrap_or_default() {
        let long = std::fs::metadata(&doc).is_ok_and(|m| m.len() > MAX_TEXT_BYTES as u64);
        if long && !refused.contains(doc.as_path()) {
            out.push(format!(
                "{}: questions come from its first {} KiB (all of it is in memory)",
                doc.display(),
                MAX_TEXT_BYTES / 1024
            ));
        }
    }
    out
}

fn actor_err(actor: &str, e: impl std::fmt::Display) -> ThauError {
    ThauError::Actor {
        actor: actor.into(),
        message: e.to_string(),
    }
}

/// Keeps one [`Practice`] round in the Learner's mailbox until `on` is cleared, so the
/// Learner trains for the whole session rather than only when gaps arrive. Gap rounds
/// ([`crate::actors::learner::LearnItems`]) queue between practice rounds and go first
/// in their turn. Ends on its own when practice is switched off or the Learner is gone.
async fn practise(learner: actix::Addr<Learner>, on: std::sync::Arc<AtomicBool>) {
    while on.load(Ordering::SeqCst) {
        match learner.send(Practice).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Err(_) => return,
            Ok(Err(e)) => {
                // A Learner restarted after a panic reopens the session on its next
                // message; do not spin while it cannot.
                tracing::warn!(error = %e, "practice round failed");
                tokio::time::sleep(PRACTICE_RETRY).await;
            }
        }
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
    // `--minutes` bounds the whole command: opening the model, storing the documents and
    // both accuracy samples are spent from the same budget as the questions.
    let called = Instant::now();
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
    let mut waiting = interrupted(&rt.home)?;
    if !req.resume {
        for j in waiting.drain(..) {
            let p = Journal::path(&rt.home, &j.session);
            std::fs::remove_file(&p).map_err(|e| ThauError::io(&p, e))?;
            tracing::info!(session = j.session, "dropped an interrupted session");
        }
    }
    let resumed = waiting.pop();
    if let Some(j) = &resumed {
        if !same_dir(&j.corpus, &req.corpus) {
            return Err(ThauError::Invalid(format!(
                "the interrupted session {} learns from {corpus}; resume it with --corpus {corpus} or start anew with --new-session",
                j.session,
                corpus = j.corpus.display()
            )));
        }
    }
    let started_at = resumed
        .as_ref()
        .map_or_else(chrono::Utc::now, |j| j.started_at);
    let session = resumed.as_ref().map_or_else(
        || format!("learn-{}", started_at.format("%Y%m%d-%H%M%S")),
        |j| j.session.clone(),
    );
    let seed = resumed.as_ref().map_or(req.seed, |j| j.seed);
    let mut events = rt.events.subscribe();
    let closing = std::sync::Arc::new(AtomicBool::new(false));
    let info: StudyInfo = reply(
        "learner",
        learner
            .send(StartStudy {
                session: session.clone(),
                corpus: req.corpus.clone(),
                seed,
                closing: closing.clone(),
            })
            .await,
    )?;
    let mut journal = match resumed {
        Some(j) => Journal {
            resumes: j.resumes + 1,
            ..j
        },
        None => Journal {
            session: session.clone(),
            started_at,
            corpus: req.corpus.clone(),
            seed,
            elapsed_s: 0.0,
            resumes: 0,
            fresh_model: info.fresh,
            step_before: info.step,
            probe_loss_before: info.probe_loss,
            accuracy_before: None,
        },
    };
    journal.save(&rt.home)?;
    // Every document is recallable before the first question is asked.
    let remembered =
        crate::commands::remember::remember_documents(rt, std::slice::from_ref(&req.corpus))
            .await?;
    let questions_stored = crate::commands::remember::remember_questions(rt, &req.corpus).await?;
    let sample = match &req.accuracy {
        Some(check) => accuracy_items(check)?,
        None => Vec::new(),
    };
    // What the sample after the session will cost: what this one cost.
    let mut sample_cost = Duration::ZERO;
    if journal.resumes == 0 {
        let t = Instant::now();
        journal.accuracy_before = answer_accuracy(rt, &sample).await;
        sample_cost = t.elapsed();
        journal.save(&rt.home)?;
    }
    let (already_asked, still_open) = if journal.resumes > 0 {
        let asked = item_ids(&session_episodes(rt, &session, EpisodeKind::Question).await?);
        let opened = item_ids(&session_episodes(rt, &session, EpisodeKind::Gap).await?);
        let closed = item_ids(&session_episodes(rt, &session, EpisodeKind::GapClosed).await?);
        let open: Vec<String> = opened.into_iter().filter(|i| !closed.contains(i)).collect();
        tracing::info!(
            session,
            resumes = journal.resumes,
            asked = asked.len(),
            open = open.len(),
            "resuming an interrupted session"
        );
        (asked, open)
    } else {
        (Vec::new(), Vec::new())
    };
    reply(
        "questioner",
        questioner
            .send(StartQuestioning {
                session: session.clone(),
                corpus: req.corpus.clone(),
                limit: req.questions,
                seed,
                teacher: req.teacher.clone(),
                already_asked,
            })
            .await,
    )?;
    if !still_open.is_empty() {
        // The gaps open when the session stopped: probe them again (the GapDetector keeps
        // its gaps in memory), so the Learner goes on with them.
        let kb = KnowledgeBase::load(&req.corpus, &Templates::default())
            .map_err(|e| ThauError::Invalid(e.to_string()))?;
        let probes = kb
            .items
            .into_iter()
            .filter(|i| still_open.contains(&i.id))
            .map(|item| {
                gaps.send(Probe {
                    session: session.clone(),
                    item,
                })
            });
        for r in futures_util::future::join_all(probes).await {
            if let Err(e) = reply("gap_detector", r).map_err(ThauError::from) {
                tracing::warn!(error = %e, "re-probing an open gap failed");
            }
        }
    }
    let practicing = std::sync::Arc::new(AtomicBool::new(true));
    let practice = tokio::spawn(practise(learner.clone(), practicing.clone()));
    let start = Instant::now();
    let before = Duration::from_secs_f64(journal.elapsed_s.max(0.0));
    let setup = called.elapsed() + sample_cost;
    let deadline = req.minutes.map(|m| {
        Duration::from_secs_f64(m.max(0.0) * 60.0)
            .saturating_sub(before)
            .saturating_sub(setup)
    });
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
                                // Counted here, not by the Learner: a Learner restarted
                                // after a panic starts counting again.
                                p.rounds += 1;
                                p.step = r.step;
                                p.loss = Some(r.loss);
                                p.tokens_per_s = Some(r.tokens_per_s);
                                p.age = r.age;
                                curve.push(CurvePoint {
                                    elapsed_s: (before + start.elapsed()).as_secs_f64(),
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
                p.elapsed_s = (before + start.elapsed()).as_secs_f64();
                journal.elapsed_s = p.elapsed_s;
                journal.save(&rt.home)?;
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
    practicing.store(false, Ordering::SeqCst);
    closing.store(true, Ordering::SeqCst);
    // Read before stopping, which forgets the session's schedule.
    let reviewed = reply("questioner", questioner.send(QuestionerStatus).await)?;
    let asked = reply("questioner", questioner.send(StopQuestioning).await)?;
    // The last questions may still be in scoring: wait until every probe was answered
    // (scored, failed, or dropped by a restart), so their gaps reach the Learner before
    // the session's final round and the report is the same from run to run.
    let settle = Instant::now();
    while settle.elapsed() < FINISH_TIMEOUT {
        let in_flight = reply("questioner", questioner.send(QuestionerStatus).await)?.in_flight;
        if in_flight == 0 {
            break;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    // The practice round in flight ends before the last one (no round after the summary).
    if tokio::time::timeout(FINISH_TIMEOUT, practice)
        .await
        .is_err()
    {
        return Err(actor_err(
            "learner",
            "did not finish its practice round in time",
        ));
    }
    // Queued behind the Learner's pending rounds: it returns once they are done.
    let summary: StudySummary =
        match tokio::time::timeout(FINISH_TIMEOUT, learner.send(FinishStudy)).await {
            Ok(r) => reply("learner", r)?,
            Err(_) => {
                return Err(actor_err(
                    "learner",
                    "did not finish its last round in time",
                ))
            }
        };
    let gap_report: GapReport = reply("gap_detector", gaps.send(GapStatus).await)?;
    let report = LearnReport {
        session: session.clone(),
        started_at,
        seconds: (before + start.elapsed()).as_secs_f64(),
        stopped_by: stopped_by.to_string(),
        fresh_model: journal.fresh_model,
        age: summary.age,
        params: info.params,
        questions_asked: asked,
        reviews: reviewed.reviews,
        lapses: reviewed.lapses,
        gaps: gap_report,
        rounds: p.rounds.max(summary.rounds),
        step_before: journal.step_before,
        step_after: summary.step,
        probe_loss_before: journal.probe_loss_before,
        probe_loss_after: summary.probe_loss,
        probe_items: info.probe_items,
        checkpoint: summary.checkpoint,
        curve,
        teacher_accepted: teacher.0,
        teacher_rejected: teacher.1,
        resumes: journal.resumes,
        passages_stored: remembered.new,
        passages_known: remembered.known,
        questions_stored,
        documents_left_out: left_out(&req.corpus, &remembered.refused),
        accuracy_before: journal.accuracy_before.clone(),
        accuracy_after: answer_accuracy(rt, &sample).await,
    };
    let path = rt.home.runs().join("learn").join(format!("{session}.json"));
    let bytes =
        serde_json::to_vec_pretty(&report).map_err(|e| ThauError::Runtime(e.to_string()))?;
    crate::fsutil::atomic_write(&path, &bytes)?;
    // The report is durable: the session is over and nothing is left to resume.
    let j = Journal::path(&rt.home, &session);
    std::fs::remove_file(&j).map_err(|e| ThauError::io(&j, e))?;
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
        .filter(|p| !p.to_string_lossy().ends_with(JOURNAL_SUFFIX))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::passages::Refused;

    #[test]
    fn what_was_left_out_names_each_file_once_and_the_long_ones_it_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, long) = (dir.path().join("photo.txt"), dir.path().join("long.md"));
        std::fs::write(&bin, b"\x89PNG\0").unwrap();
        std::fs::write(&long, "word ".repeat(MAX_TEXT_BYTES / 5 + 10)).unwrap();
        std::fs::write(dir.path().join("ok.md"), "A short document.").unwrap();
        let refused = [Refused {
            reason: format!("bad record: {}: looks binary", bin.display()),
            path: bin.clone(),
        }];
        let out = left_out(dir.path(), &refused);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], format!("{}: looks binary", bin.display()));
        assert!(out[1].starts_with(&format!(
            "{}: questions come from its first",
            long.display()
        )));
    }
}
