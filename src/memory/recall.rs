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

/// The k of reciprocal rank fusion (Cormack et al. 2009): a rank-r item adds 1/(k + r).
/// 60 is the paper's value; it keeps one list's top rank from drowning the other list.
pub const RRF_K: f32 = 60.0;

/// Fuses rankings of ids (each best first) by reciprocal rank: an id's score is the sum of
/// 1/(k + rank) over the lists that hold it, divided by the most any id can get, so 1.0 is
/// first everywhere. Best first; ties keep the earlier list's order.
pub fn fuse_ranks<T: Copy + PartialEq>(lists: &[Vec<T>]) -> Vec<(T, f32)> {
    let best = lists.len() as f32 / (RRF_K + 1.0);
    let mut scored: Vec<(T, f32)> = Vec::new();
    for list in lists {
        for (rank, id) in list.iter().enumerate() {
            let add = 1.0 / (RRF_K + 1.0 + rank as f32) / best;
            match scored.iter_mut().find(|(x, _)| x == id) {
                Some((_, s)) => *s += add,
                None => scored.push((*id, add)),
            }
        }
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
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

/// The memories that go into a prompt: best first, each scoring at least `min_score`, at
/// most `limit`, and together at most `budget` tokens (`tokens[i]` is what `hits[i]`
/// takes). A memory too long for what is left is skipped so a shorter, lower one can
/// still fit; the order stays best first.
pub fn fit_budget(
    hits: Vec<RecallHit>,
    tokens: &[usize],
    budget: usize,
    limit: usize,
    min_score: f32,
) -> Vec<RecallHit> {
    let mut left = budget;
    let mut out = Vec::new();
    for (hit, &n) in hits.into_iter().zip(tokens) {
        if out.len() == limit {
            break;
        }
        if hit.score < min_score || n > left {
            continue;
        }
        left -= n;
        out.push(hit);
    }
    out
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
    fn budget_keeps_order_skips_what_does_not_fit_and_drops_low_scores() {
        let hits = vec![
            hit(StoreKind::Long, "a", 0.9),
            hit(StoreKind::Long, "b", 0.8),
            hit(StoreKind::Long, "c", 0.7),
            hit(StoreKind::Long, "d", 0.1),
        ];
        let texts = |v: &[RecallHit]| v.iter().map(|h| h.text.clone()).collect::<Vec<_>>();
        // b (60 tokens) does not fit after a (50) in 100; c (40) does.
        let got = fit_budget(hits.clone(), &[50, 60, 40, 5], 100, 10, 0.5);
        assert_eq!(texts(&got), vec!["a", "c"]);
        assert_eq!(
            texts(&fit_budget(hits.clone(), &[1, 1, 1, 1], 100, 2, 0.0)),
            vec!["a", "b"]
        );
        assert!(fit_budget(hits, &[1, 1, 1, 1], 0, 10, 0.0).is_empty());
    }

    #[test]
    fn rank_fusion_prefers_what_both_lists_rank_and_tops_out_at_one() {
        let fused = fuse_ranks(&[vec![1, 2, 3], vec![3, 4, 1]]);
        let ids: Vec<i32> = fused.iter().map(|f| f.0).collect();
        assert_eq!(ids, vec![1, 3, 2, 4]);
        assert!((fuse_ranks(&[vec![7], vec![7]])[0].1 - 1.0).abs() < 1e-6);
        assert!((fuse_ranks(&[vec![7], vec![]])[0].1 - 0.5).abs() < 1e-6);
        assert!(fuse_ranks::<u8>(&[vec![], vec![]]).is_empty());
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
