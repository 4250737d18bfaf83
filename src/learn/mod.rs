//! The self-learning loop's parts that are not actors: the knowledge the corpus offers
//! ([`source`]) and the questions rules derive from plain text ([`questions`]), what counts as a gap ([`gaps`]), how the Learner trains ([`study`]), and
//! how the Questioner picks what to ask ([`picker`]), and what a person teaches in
//! conversation ([`teaching`]). The loop itself emerges from the
//! actors' messages: Questioner → GapDetector → Inference (scores) → GapDetector → Learner
//! → Inference (new weights) and GapDetector (re-check gaps).

pub mod bench;
pub mod gaps;
pub mod openbook;
pub mod picker;
pub mod questions;
pub mod source;
pub mod study;
pub mod teacher;
pub mod teaching;
pub mod tuning;

use serde::Serialize;

/// A step of the self-learning loop, published on the event bus
/// ([`crate::runtime::events::EventKind::Learning`]) for progress displays and tests.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum LearnEvent {
    /// The Questioner asked a question.
    Asked { topic: String, question: String },
    /// The GapDetector scored the model's knowledge of an answer.
    Scored {
        topic: String,
        mean_nll: f32,
        threshold: f32,
        gap: bool,
    },
    /// A new gap.
    GapOpened {
        item: String,
        topic: String,
        mean_nll: f32,
    },
    /// A gap whose held-out paraphrases are now answered below the threshold.
    GapClosed { item: String, topic: String },
    /// The Learner finished a training round.
    Round(study::RoundReport),
    /// The Learner grew the model.
    Grew { from_age: u32, to_age: u32 },
    /// The Questioner has nothing more to ask (`exhausted`) or waits for its rate limit.
    Idle { reason: String },
    /// The teacher proposed an item that passed the quality filter.
    TeacherAccepted { topic: String, question: String },
    /// The teacher failed or its item was filtered out (`reason` is the rejection kind).
    TeacherRejected { reason: String, detail: String },
    /// The Tuner changed a knob (learning rate, temperature, gap percentile).
    Tuned(tuning::Change),
}
