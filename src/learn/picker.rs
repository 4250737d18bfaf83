//! How the Questioner chooses its next question: [`Picker`].
//!
//! Most often ([`PickerConfig::gap_bias`]) it asks about a topic where gaps are open
//! (weighted by how many), otherwise about any topic; it skips questions too similar to
//! one already asked (cosine of hashed n-gram embeddings ≥ [`PickerConfig::max_similarity`])
//! and keeps to per-hour and per-day limits.
//!
//! **Reviews.** A new item is asked once. When none is left, the Picker re-asks the items
//! it asked, on a spaced-repetition schedule (Leitner's boxes, doubling intervals): an item
//! is due [`PickerConfig::review_after_s`] after it was asked; each time it comes back
//! known (no gap) its interval doubles, and when it comes back as a gap — forgotten, and
//! reopened by the GapDetector — its interval starts again ([`Picker::outcome`]). So a
//! session never runs out of questions, and what it forgets is noticed and trained again.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::source::KnowledgeItem;
use crate::memory::embed::{dot, HashEmbedder};

/// Settings (from `agents/questioner.toml` `[params]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PickerConfig {
    /// Probability of asking about a topic with open gaps, when there is one.
    pub gap_bias: f64,
    /// Questions this similar to an earlier one are skipped.
    pub max_similarity: f32,
    /// Most questions per rolling hour and per rolling day.
    pub per_hour: usize,
    pub per_day: usize,
    /// Milliseconds between two questions during a session.
    pub interval_ms: u64,
    /// With a teacher: one question in this many comes from it (the rest from the corpus).
    pub teacher_every: usize,
    /// Seconds from asking an item to its first review (0: no reviews). Each review it
    /// passes doubles its interval; a review that finds a gap starts it again.
    pub review_after_s: f64,
}

impl Default for PickerConfig {
    fn default() -> Self {
        PickerConfig {
            gap_bias: 0.7,
            max_similarity: 0.7,
            per_hour: 5000,
            per_day: 50_000,
            interval_ms: 1000,
            teacher_every: 3,
            review_after_s: 60.0,
        }
    }
}

/// Why no question came out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NoQuestion {
    /// Every item has been asked (or skipped as a near-duplicate) and none is due for a
    /// review: with reviews, `retry_in_s` until the next one is (`None`: no reviews).
    Exhausted { retry_in_s: Option<u64> },
    /// The hourly or daily limit is reached; `retry_in_s` until a slot frees.
    RateLimited { retry_in_s: u64 },
}

/// The Questioner's memory of what it asked.
pub struct Picker {
    items: Vec<KnowledgeItem>,
    cfg: PickerConfig,
    asked: HashSet<String>,
    asked_vectors: Vec<Vec<f32>>,
    /// Open gaps per topic (from the GapDetector).
    open_gaps: BTreeMap<String, usize>,
    times: VecDeque<Instant>,
    embedder: HashEmbedder,
    rng: rand_chacha::ChaCha8Rng,
    /// Items skipped as near-duplicates.
    pub skipped_similar: usize,
    /// Each asked item's review schedule, by item id.
    schedule: BTreeMap<String, Review>,
    /// Reviews asked, and how many of them found a gap.
    pub reviews: usize,
    pub lapses: usize,
}

/// When an item is next reviewed, and the interval that got it there.
#[derive(Debug, Clone, Copy)]
struct Review {
    index: usize,
    due: Instant,
    interval: Duration,
    /// Whether its last asking was a review (not its first time).
    reviewing: bool,
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Picker {
    pub fn new(items: Vec<KnowledgeItem>, cfg: PickerConfig, seed: u64) -> Picker {
        Picker {
            items,
            cfg,
            asked: HashSet::new(),
            asked_vectors: Vec::new(),
            open_gaps: BTreeMap::new(),
            times: VecDeque::new(),
            embedder: HashEmbedder::default(),
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            skipped_similar: 0,
            schedule: BTreeMap::new(),
            reviews: 0,
            lapses: 0,
        }
    }

    pub fn config(&self) -> &PickerConfig {
        &self.cfg
    }

    /// Replaces the open-gap counts per topic.
    pub fn set_open_gaps(&mut self, open: BTreeMap<String, usize>) {
        self.open_gaps = open;
        self.open_gaps.retain(|_, n| *n > 0);
    }

    /// Marks items as already asked (a resumed session).
    pub fn mark_asked(&mut self, ids: impl IntoIterator<Item = String>) {
        self.asked.extend(ids);
    }

    pub fn asked(&self) -> usize {
        self.asked.len()
    }

    /// A topic to ask the teacher about, with its language: the one with the most open
    /// gaps, else a random topic of the knowledge base.
    pub fn teacher_topic(&mut self) -> Option<(String, String)> {
        let lang_of = |topic: &str, items: &[KnowledgeItem]| {
            items
                .iter()
                .find(|i| i.topic == topic)
                .map(|i| i.lang.clone())
                .unwrap_or_else(|| "en".into())
        };
        if let Some((topic, _)) = self.open_gaps.iter().max_by_key(|(_, n)| **n) {
            return Some((topic.clone(), lang_of(topic, &self.items)));
        }
        if self.items.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.items.len());
        Some((self.items[i].topic.clone(), self.items[i].lang.clone()))
    }

    /// Whether a question is too similar to one already asked (and remembers it if not).
    pub fn admit(&mut self, question: &str) -> bool {
        let v = self.embedder.embed_text(question);
        if self
            .asked_vectors
            .iter()
            .any(|a| dot(a, &v) >= self.cfg.max_similarity)
        {
            self.skipped_similar += 1;
            return false;
        }
        self.asked_vectors.push(v);
        true
    }

    /// The next question at time `now`.
    pub fn next(&mut self, now: Instant) -> Result<KnowledgeItem, NoQuestion> {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > DAY)
        {
            self.times.pop_front();
        }
        let last_hour = self
            .times
            .iter()
            .filter(|t| now.duration_since(**t) <= HOUR)
            .count();
        if last_hour >= self.cfg.per_hour || self.times.len() >= self.cfg.per_day {
            let oldest = if last_hour >= self.cfg.per_hour {
                self.times
                    .iter()
                    .find(|t| now.duration_since(**t) <= HOUR)
                    .map(|t| *t + HOUR)
            } else {
                self.times.front().map(|t| *t + DAY)
            };
            let retry = oldest.map_or(0, |t| t.saturating_duration_since(now).as_secs());
            return Err(NoQuestion::RateLimited { retry_in_s: retry });
        }
        loop {
            let Some(i) = self.choose() else {
                return self.review(now);
            };
            let item = self.items[i].clone();
            self.asked.insert(item.id.clone());
            let v = self.embedder.embed_text(&item.question);
            if self
                .asked_vectors
                .iter()
                .any(|a| dot(a, &v) >= self.cfg.max_similarity)
            {
                self.skipped_similar += 1;
                continue;
            }
            self.asked_vectors.push(v);
            self.times.push_back(now);
            self.schedule_first(i, now);
            return Ok(item);
        }
    }

    /// The first review of item `i`, asked at `now`.
    fn schedule_first(&mut self, i: usize, now: Instant) {
        if let Some(first) = self.first_interval() {
            let review = Review {
                index: i,
                due: now + first,
                interval: first,
                reviewing: false,
            };
            self.schedule.insert(self.items[i].id.clone(), review);
        }
    }

    fn first_interval(&self) -> Option<Duration> {
        let s = self.cfg.review_after_s;
        (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s))
    }

    /// The asked item most overdue for a review, if one is due at `now`; its next review is
    /// then an interval later (doubled when [`Picker::outcome`] says it was known).
    fn review(&mut self, now: Instant) -> Result<KnowledgeItem, NoQuestion> {
        let Some((id, r)) = self
            .schedule
            .iter()
            .min_by_key(|(_, r)| r.due)
            .map(|(id, r)| (id.clone(), *r))
        else {
            return Err(NoQuestion::Exhausted { retry_in_s: None });
        };
        if r.due > now {
            let wait = r.due.duration_since(now).as_secs_f64().ceil() as u64;
            return Err(NoQuestion::Exhausted {
                retry_in_s: Some(wait),
            });
        }
        // Not due again until its outcome says how it went (or one interval passes).
        if let Some(s) = self.schedule.get_mut(&id) {
            s.due = now + r.interval;
            s.reviewing = true;
        }
        self.reviews += 1;
        self.times.push_back(now);
        Ok(self.items[r.index].clone())
    }

    /// What asking item `id` found at `now`: a gap starts its review interval again (it
    /// was forgotten, or never known), no gap doubles it.
    pub fn outcome(&mut self, id: &str, gap: bool, now: Instant) {
        let Some(first) = self.first_interval() else {
            return;
        };
        let Some(r) = self.schedule.get_mut(id) else {
            return;
        };
        r.interval = match (gap, r.reviewing) {
            (true, _) => first,
            (false, true) => r.interval.saturating_mul(2),
            (false, false) => r.interval,
        };
        r.due = now + r.interval;
        if gap && r.reviewing {
            self.lapses += 1;
        }
        r.reviewing = false;
    }

    /// An unasked item: from a gap topic with probability `gap_bias`, else any.
    fn choose(&mut self) -> Option<usize> {
        let open: Vec<usize> = (0..self.items.len())
            .filter(|&i| !self.asked.contains(&self.items[i].id))
            .collect();
        if open.is_empty() {
            return None;
        }
        if !self.open_gaps.is_empty() && self.rng.random_bool(self.cfg.gap_bias.clamp(0.0, 1.0)) {
            let in_gap: Vec<(usize, usize)> = open
                .iter()
                .filter_map(|&i| self.open_gaps.get(&self.items[i].topic).map(|&n| (i, n)))
                .collect();
            let total: usize = in_gap.iter().map(|(_, n)| n).sum();
            if total > 0 {
                let mut r = self.rng.random_range(0..total);
                for (i, n) in in_gap {
                    if r < n {
                        return Some(i);
                    }
                    r -= n;
                }
            }
        }
        Some(open[self.rng.random_range(0..open.len())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(topic: &str, q: &str) -> KnowledgeItem {
        KnowledgeItem::new(topic, "en", q, "a", vec![])
    }

    #[test]
    fn steers_to_gap_topics_skips_repeats_and_near_duplicates() {
        let mut items: Vec<KnowledgeItem> = (0..50)
            .map(|i| {
                item(
                    "plain",
                    &format!("Question number {i} about rivers and {}", i * 7919),
                )
            })
            .collect();
        items.extend((0..10).map(|i| {
            item(
                "gappy",
                &format!("Where do whales {i} swim in {}", i * 104729),
            )
        }));
        items.push(item("plain", "What is the boiling point of water?"));
        items.push(item("plain", "What is the boiling point of water ?"));
        let cfg = PickerConfig {
            gap_bias: 1.0,
            // The generated questions share a template; only true repeats are duplicates.
            max_similarity: 0.95,
            ..Default::default()
        };
        let mut p = Picker::new(items, cfg, 1);
        p.set_open_gaps([("gappy".to_string(), 3)].into_iter().collect());
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(p.next(now).unwrap().topic, "gappy");
        }
        let mut seen = HashSet::new();
        while let Ok(it) = p.next(now) {
            assert!(seen.insert(it.id.clone()), "asked twice");
        }
        // The two boiling-point questions are near-duplicates: one was skipped.
        assert!(p.skipped_similar >= 1);
        assert_eq!(
            p.next(now),
            Err(NoQuestion::Exhausted {
                retry_in_s: Some(60)
            })
        );
    }

    #[test]
    fn reviews_known_items_at_doubling_intervals_and_restarts_a_forgotten_one() {
        let items = vec![
            item("t", "Where do whales swim?"),
            item("t", "Why is the sky blue?"),
        ];
        let cfg = PickerConfig {
            review_after_s: 10.0,
            ..Default::default()
        };
        let mut p = Picker::new(items, cfg, 1);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let a = p.next(t0).unwrap();
        let b = p.next(t0 + s(1)).unwrap();
        p.outcome(&a.id, false, t0);
        p.outcome(&b.id, true, t0 + s(1));
        // Nothing new, nothing due yet: wait for the first review.
        assert_eq!(
            p.next(t0 + s(5)),
            Err(NoQuestion::Exhausted {
                retry_in_s: Some(5)
            })
        );
        // Both come back after 10 s, the most overdue first.
        assert_eq!(p.next(t0 + s(12)).unwrap().id, a.id);
        assert_eq!(p.next(t0 + s(12)).unwrap().id, b.id);
        assert_eq!(p.reviews, 2);
        // a was known again: its interval doubles (due 20 s later); b was forgotten: 10 s.
        p.outcome(&a.id, false, t0 + s(12));
        p.outcome(&b.id, true, t0 + s(12));
        assert_eq!(p.lapses, 1);
        assert_eq!(p.next(t0 + s(23)).unwrap().id, b.id);
        p.outcome(&b.id, false, t0 + s(23));
        assert!(p.next(t0 + s(30)).is_err());
        assert_eq!(p.next(t0 + s(33)).unwrap().id, a.id);
        // Without reviews, a picker that has asked everything is done for good.
        let cfg = PickerConfig {
            review_after_s: 0.0,
            ..Default::default()
        };
        let mut p = Picker::new(vec![item("t", "Where do whales swim?")], cfg, 1);
        p.next(t0).unwrap();
        assert_eq!(
            p.next(t0 + s(1000)),
            Err(NoQuestion::Exhausted { retry_in_s: None })
        );
    }

    #[test]
    fn keeps_to_the_hourly_limit() {
        let items = (0..10)
            .map(|i| item("t", &format!("distinct {i} {}", i * 31337)))
            .collect();
        let cfg = PickerConfig {
            per_hour: 3,
            ..Default::default()
        };
        let mut p = Picker::new(items, cfg, 1);
        let now = Instant::now();
        for _ in 0..3 {
            p.next(now).unwrap();
        }
        assert!(matches!(p.next(now), Err(NoQuestion::RateLimited { .. })));
        assert!(p.next(now + HOUR + Duration::from_secs(1)).is_ok());
    }
}
