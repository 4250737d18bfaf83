//! Recall: one ranked list ([`RecallHit`]) merged from the three stores.
//!
//! Each store scores in 0..1 its own way — short-term by the share of query words a turn
//! contains, episodic by relevance·importance·recency, long-term by cosine similarity —
//! and [`merge`] interleaves them by score, keeping each hit's store and source, and
//! drops repeats of the same text (an evicted turn lives on as an episode and a vector).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::episodic::EpisodeHit;
use super::short_term::ConversationTurn;
use super::vector::ScoredPoint;
use super::StoreKind;

/// One remembered item.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecallHit {
    pub store: StoreKind,
    /// Conversation name (short), episode id or point id.
    pub id: String,
    pub text: String,
    pub score: f32,
    /// Where it came from: `conversation:<name>`, `<session>/<kind>` or the point's source.
    pub source: String,
    pub at: DateTime<Utc>,
}

impl RecallHit {
    pub fn from_turn(turn: ConversationTurn, score: f32) -> RecallHit {
        RecallHit {
            store: StoreKind::Short,
            id: turn.conversation.clone(),
            text: turn.text,
            score,
            source: format!("conversation:{}", turn.conversation),
            at: turn.at,
        }
    }

    pub fn from_episode(hit: EpisodeHit) -> RecallHit {
        let e = hit.episode;
        RecallHit {
            store: StoreKind::Episodic,
            id: e.id.to_string(),
            source: format!("{}/{}", e.session, e.kind.as_str()),
            text: e.content,
            score: hit.score,
            at: e.created_at,
        }
    }

    pub fn from_point(hit: ScoredPoint) -> RecallHit {
        let p = hit.point;
        RecallHit {
            store: StoreKind::Long,
            id: p.id.to_string(),
            text: p.payload.text,
            // Cosine is -1..1; clamp so every store's scores share 0..1.
            score: hit.score.clamp(0.0, 1.0),
            source: p.payload.source,
            at: p.payload.created_at,
        }
    }
}

/// Merges per-store lists into the best `limit` hits, best first, one per distinct text
/// (the higher-scored copy wins); hits scoring 0 (nothing in common) are dropped.
pub fn merge(lists: Vec<Vec<RecallHit>>, limit: usize) -> Vec<RecallHit> {
    let mut all: Vec<RecallHit> = lists
        .into_iter()
        .flatten()
        .filter(|h| h.score > 0.0)
        .collect();
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.at.cmp(&a.at)));
    let mut seen = HashSet::new();
    all.retain(|h| seen.insert(h.text.trim().to_lowercase()));
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(store: StoreKind, text: &str, score: f32) -> RecallHit {
        RecallHit {
            store,
            id: text.into(),
            text: text.into(),
            score,
            source: "t".into(),
            at: Utc::now(),
        }
    }

    #[test]
    fn merge_orders_by_score_and_drops_repeats() {
        let merged = merge(
            vec![
                vec![hit(StoreKind::Short, "a", 0.2)],
                vec![
                    hit(StoreKind::Episodic, "b", 0.9),
                    hit(StoreKind::Episodic, "A", 0.5),
                ],
                vec![hit(StoreKind::Long, "c", 0.7)],
            ],
            10,
        );
        let got: Vec<_> = merged.iter().map(|h| (h.text.as_str(), h.store)).collect();
        assert_eq!(
            got,
            vec![
                ("b", StoreKind::Episodic),
                ("c", StoreKind::Long),
                ("A", StoreKind::Episodic)
            ]
        );
    }
}
