//! `thau feedback` and `thau tune`: auto-tuning from the command line, on the tuning state
//! of a data directory (`<home>/tuning.json`) while no runtime holds it. A running runtime's
//! Tuner actor owns the file (its lock); the server's API then takes feedback instead.

use crate::actors::tuner::{load_tuning, FeedbackOutcome, TUNING_LOCK};
use crate::error::{Result, ThauError};
use crate::home::Home;
use crate::learn::tuning::{Change, Rating, Tuning, TUNING_FILE};
use crate::memory::episodic::EpisodicStore;
use crate::memory::{DirLock, Episode, EpisodeKind, MemoryError, EPISODIC_DB};
use crate::runtime::agents::{ActorKind, AgentSpec};

type Specs = std::collections::BTreeMap<ActorKind, AgentSpec>;

/// Takes the tuning lock, or explains who holds it.
fn lock(home: &Home) -> Result<DirLock> {
    DirLock::acquire_named(&home.root, TUNING_LOCK).map_err(|e| match e {
        MemoryError::InUse { .. } => ThauError::Invalid(format!(
            "the tuning state of {} is in use by a running THAU (serve or learn): send feedback through it",
            home.root.display()
        )),
        other => ThauError::Memory(other),
    })
}

/// The tuning state: values, evidence and the change log.
pub fn show(home: &Home, specs: &Specs) -> Result<Tuning> {
    load_tuning(&home.root, specs)
}

/// Rates a chat turn: the rating counts toward the feedback rule, and is filed as a
/// `feedback` episode in episodic memory.
pub fn feedback(
    home: &Home,
    specs: &Specs,
    turn: &str,
    rating: Rating,
    note: Option<&str>,
) -> Result<FeedbackOutcome> {
    if turn.trim().is_empty() {
        return Err(ThauError::Invalid("the rated turn's id is empty".into()));
    }
    let _lock = lock(home)?;
    let mut t = load_tuning(&home.root, specs)?;
    let change = t.feedback(rating);
    t.save(&home.root.join(TUNING_FILE))?;
    let text = format!(
        "thumbs {} on turn {turn}{}",
        if rating == Rating::Up { "up" } else { "down" },
        note.map(|n| format!(": {n}")).unwrap_or_default()
    );
    let mut store =
        EpisodicStore::open(&home.memory().join(EPISODIC_DB)).map_err(ThauError::Memory)?;
    store
        .put(
            &Episode::new("cli", "tuner", EpisodeKind::Feedback, text).with_metadata(
                serde_json::json!({
                    "turn": turn, "rating": rating, "note": note,
                    "change": change.as_ref().map(|c| c.id),
                }),
            ),
        )
        .map_err(ThauError::Memory)?;
    Ok(FeedbackOutcome {
        change,
        ratings: t.ratings.clone(),
    })
}

/// Undoes change `id` (the knob goes back to its value before it; the undo is logged).
pub fn revert(home: &Home, specs: &Specs, id: u64) -> Result<Change> {
    let _lock = lock(home)?;
    let mut t = load_tuning(&home.root, specs)?;
    let change = t.revert(id)?;
    t.save(&home.root.join(TUNING_FILE))?;
    Ok(change)
}
