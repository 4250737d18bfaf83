//! Measuring what THAU knows: [`score`] (is the fact in the answer? token F1; the
//! retrieval-only baseline's sentence) and [`answers`] (`thau eval answers`: a QA file
//! asked through the chat path with memory, closed-book and retrieval-only).

pub mod answers;
pub mod score;
