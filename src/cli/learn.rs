//! The self-learning commands: `thau learn` (with a live progress line on standard error
//! while it runs), `thau stats`, `thau feedback` and `thau tune`.

use std::collections::BTreeMap;

use serde::Serialize;
use thau::commands::learn::LearnReport;
use thau::commands::with_runtime;
use thau::config::ThauConfig;
use thau::home::Home;
use thau::learn::tuning::{Change, Knob, Rating, Tuning};
use thau::{Result, ThauError};

use super::args::{FeedbackArgs, LearnArgs, StatsArgs, TuneCommand};
use super::report::Report;

/// The held-out questions a session scores itself on: the file given, else the shipped
/// `data/eval/qa_heldout.jsonl` when it is there (none, and no error, when it is not).
fn accuracy_check(
    qa: Option<std::path::PathBuf>,
    sample: usize,
) -> Result<Option<thau::commands::learn::AccuracyCheck>> {
    const SHIPPED: &str = "data/eval/qa_heldout.jsonl";
    if sample == 0 {
        return Ok(None);
    }
    let qa = match qa {
        Some(p) if !p.is_file() => {
            return Err(ThauError::Invalid(format!(
                "--accuracy-qa {}: no such file",
                p.display()
            )))
        }
        Some(p) => p,
        None if std::path::Path::new(SHIPPED).is_file() => SHIPPED.into(),
        None => return Ok(None),
    };
    Ok(Some(thau::commands::learn::AccuracyCheck { qa, sample }))
}

/// `thau learn`: starts the runtime, runs a session with a live progress line, returns the
/// summary. Ctrl-C stops asking, lets the Learner finish its round and save.
pub fn learn(home: Home, config: ThauConfig, a: LearnArgs, json: bool) -> Result<LearnReport> {
    use thau::commands::learn::{learn, LearnRequest};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    home.init()?;
    if let Some((pid, addr)) = home.served_by() {
        return Err(ThauError::Runtime(format!(
            "{home}: `thau serve` (process {pid}, {addr}) holds this data directory, so `thau learn` cannot open its stores. Learn inside the server instead: stop it and run `thau serve --learn` (its documents can also be taught while it runs: POST /learn/documents)",
            home = home.root.display()
        )));
    }
    let req = LearnRequest {
        minutes: a.minutes,
        questions: a.questions,
        corpus: a.corpus,
        seed: a.seed.unwrap_or(config.seed),
        teacher: a.teacher,
        resume: !a.new_session,
        accuracy: accuracy_check(a.accuracy_qa, a.accuracy_sample)?,
    };
    let bar = indicatif::ProgressBar::hidden();
    if !json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
        {
            bar.set_style(style);
        }
        bar.set_message("opening the model (a fresh data directory trains a tokenizer first)");
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
    }
    with_runtime(home, config, |rt| async move {
        let result = learn(&rt, &req, &stop, &mut |p| {
            bar.set_message(format!(
                "asked {} · gaps open {} closed {} · rounds {} · step {} · loss {} · {} tok/s · age {}{}",
                p.asked,
                p.gaps_open,
                p.gaps_closed,
                p.rounds,
                p.step,
                p.loss.map_or("-".into(), |l| format!("{l:.3}")),
                p.tokens_per_s.map_or("-".into(), |t| format!("{t:.0}")),
                p.age,
                p.idle.as_ref().map_or(String::new(), |i| format!(" · {i}"))
            ) + &if p.teacher_accepted + p.teacher_rejected as usize > 0 {
                format!(" · teacher {} kept, {} rejected", p.teacher_accepted, p.teacher_rejected)
            } else {
                String::new()
            });
        })
        .await;
        bar.finish_and_clear();
        rt.shutdown().await;
        result
    })
}

/// What `thau stats` shows: every learning session, and the plot when one was drawn.
/// Its JSON is the sessions alone without `--plot`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Stats {
    Plotted {
        sessions: Vec<LearnReport>,
        plot: thau::commands::stats::PlotSummary,
    },
    Sessions(Vec<LearnReport>),
}

/// `thau stats`: every learning session, and their curves drawn into `--plot`.
pub fn stats(home: &Home, args: &StatsArgs) -> Result<Stats> {
    let sessions = thau::commands::learn::sessions(home)?;
    Ok(match &args.plot {
        Some(p) => {
            let plot = thau::commands::stats::plot_sessions(&sessions, p)?;
            Stats::Plotted { sessions, plot }
        }
        None => Stats::Sessions(sessions),
    })
}

/// What `thau feedback` recorded, and the tuning change it caused.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct FeedbackRecorded {
    pub outcome: thau::actors::tuner::FeedbackOutcome,
    #[serde(skip)]
    pub turn: String,
    #[serde(skip)]
    pub rating: Rating,
}

/// `thau feedback TURN up|down`: rates a chat turn.
pub fn feedback(home: &Home, config: &ThauConfig, args: FeedbackArgs) -> Result<FeedbackRecorded> {
    let specs = thau::runtime::agent_specs(home, config)?;
    let outcome = thau::commands::tune::feedback(
        home,
        &specs,
        &args.turn,
        args.rating,
        args.note.as_deref(),
    )?;
    Ok(FeedbackRecorded {
        outcome,
        turn: args.turn,
        rating: args.rating,
    })
}

/// What `thau tune` shows: every knob's value now, and the tuning state (base values,
/// bounds, the log of changes).
#[derive(Debug, Serialize)]
pub struct TuneState {
    pub values: BTreeMap<&'static str, f64>,
    pub state: Tuning,
}

/// `thau tune`: the knobs and the log of changes.
pub fn tune_show(home: &Home, config: &ThauConfig) -> Result<TuneState> {
    let specs = thau::runtime::agent_specs(home, config)?;
    let state = thau::commands::tune::show(home, &specs)?;
    let values = Knob::ALL
        .iter()
        .filter_map(|k| state.value(*k).map(|v| (k.name(), v)))
        .collect();
    Ok(TuneState { values, state })
}

/// `thau tune revert ID`: undoes a change.
pub fn tune_revert(home: &Home, config: &ThauConfig, id: u64) -> Result<Change> {
    let specs = thau::runtime::agent_specs(home, config)?;
    thau::commands::tune::revert(home, &specs, id)
}

/// `thau tune [revert ID]`.
pub fn tune(
    command: Option<TuneCommand>,
    home: &Home,
    config: &ThauConfig,
) -> Result<Box<dyn Report>> {
    Ok(match command {
        Some(TuneCommand::Revert { id }) => Box::new(tune_revert(home, config, id)?),
        None => Box::new(tune_show(home, config)?),
    })
}
