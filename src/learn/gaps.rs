//! What counts as a gap: [`GapScore`] (from the model's own per-token log-probabilities of
//! a reference answer) and [`Thresholds`] (a running threshold per topic).
//!
//! A score is the mean negative log-likelihood of the answer's tokens; the weakest span
//! (the [`SPAN`]-token window with the highest mean NLL) says *where* the model is lost. An
//! answer is a gap when its score is above its topic's threshold: a percentile of the
//! topic's recent scores, or `mean + z·sd` — with a global fallback until a topic has
//! [`Thresholds::min_samples`] scores, and an absolute floor below which nothing is a gap
//! (a model that answers well everywhere has no gaps, whatever the percentiles say).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Tokens in the weakest-span window.
pub const SPAN: usize = 4;
/// Scores kept per topic for the running threshold. Short on purpose: the model changes
/// with every round, and old scores would hold the threshold above what it now knows.
const WINDOW: usize = 32;
/// Scores kept across all topics (the fallback threshold).
const GLOBAL_WINDOW: usize = 128;

/// How bad an answer is for the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GapScore {
    /// Mean NLL per answer token (nats).
    pub mean_nll: f32,
    /// Mean NLL of the weakest [`SPAN`]-token window.
    pub worst_span_nll: f32,
    /// Token offset of that window in the answer.
    pub worst_span_start: usize,
    pub tokens: usize,
}

impl GapScore {
    /// Scores per-token log-probabilities; `None` for an empty answer.
    pub fn from_logprobs(logprobs: &[f32]) -> Option<GapScore> {
        if logprobs.is_empty() {
            return None;
        }
        let nll: Vec<f32> = logprobs.iter().map(|l| -l).collect();
        let mean_nll = nll.iter().sum::<f32>() / nll.len() as f32;
        let w = SPAN.min(nll.len());
        let (start, worst) = nll
            .windows(w)
            .enumerate()
            .map(|(i, win)| (i, win.iter().sum::<f32>() / w as f32))
            .fold(
                (0, f32::MIN),
                |best, cur| if cur.1 > best.1 { cur } else { best },
            );
        Some(GapScore {
            mean_nll,
            worst_span_nll: worst,
            worst_span_start: start,
            tokens: nll.len(),
        })
    }
}

/// How the threshold is computed from a topic's recent scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    /// The score at `percentile` (0..100) of recent scores.
    Percentile,
    /// mean + `z` · standard deviation of recent scores.
    ZScore,
}

/// Settings of [`Thresholds`] (`[params]` of `agents/gap_detector.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdConfig {
    pub mode: ThresholdMode,
    pub percentile: f32,
    pub z: f32,
    /// Scores a topic needs before its own threshold is used (before: all topics').
    pub min_samples: usize,
    /// Mean NLL (nats/token) below which an answer is never a gap.
    pub floor: f32,
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        ThresholdConfig {
            mode: ThresholdMode::Percentile,
            percentile: 60.0,
            z: 0.5,
            min_samples: 8,
            floor: 1.0,
        }
    }
}

/// Running per-topic thresholds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Thresholds {
    pub config: ThresholdConfig,
    by_topic: BTreeMap<String, VecDeque<f32>>,
    all: VecDeque<f32>,
}

impl Thresholds {
    pub fn new(config: ThresholdConfig) -> Self {
        Thresholds {
            config,
            ..Default::default()
        }
    }

    /// Records a score of `topic`.
    pub fn observe(&mut self, topic: &str, score: f32) {
        let q = self.by_topic.entry(topic.to_string()).or_default();
        q.push_back(score);
        if q.len() > WINDOW {
            q.pop_front();
        }
        self.all.push_back(score);
        if self.all.len() > GLOBAL_WINDOW {
            self.all.pop_front();
        }
    }

    /// The current threshold of `topic` (`None` until anything was observed).
    pub fn threshold(&self, topic: &str) -> Option<f32> {
        let samples = match self.by_topic.get(topic) {
            Some(q) if q.len() >= self.config.min_samples => q,
            _ if !self.all.is_empty() => &self.all,
            _ => return None,
        };
        let t = match self.config.mode {
            ThresholdMode::Percentile => {
                let mut v: Vec<f32> = samples.iter().copied().collect();
                v.sort_by(f32::total_cmp);
                let q = (self.config.percentile / 100.0).clamp(0.0, 1.0);
                v[((v.len() - 1) as f32 * q).round() as usize]
            }
            ThresholdMode::ZScore => {
                let n = samples.len() as f32;
                let mean = samples.iter().sum::<f32>() / n;
                let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n;
                mean + self.config.z * var.sqrt()
            }
        };
        Some(t.max(self.config.floor))
    }

    /// Whether `score` is a gap for `topic` (before any observation: above the floor).
    pub fn is_gap(&self, topic: &str, score: f32) -> bool {
        score > self.threshold(topic).unwrap_or(self.config.floor)
    }

    /// Adjusts the percentile or z (auto-tuning), within `bounds`.
    pub fn nudge(&mut self, delta: f32, bounds: (f32, f32)) -> f32 {
        let c = &mut self.config;
        let v = match c.mode {
            ThresholdMode::Percentile => &mut c.percentile,
            ThresholdMode::ZScore => &mut c.z,
        };
        *v = (*v + delta).clamp(bounds.0, bounds.1);
        *v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_finds_the_weakest_span() {
        let lp = [-0.1, -0.1, -3.0, -4.0, -3.0, -3.0, -0.1];
        let s = GapScore::from_logprobs(&lp).unwrap();
        assert_eq!(s.worst_span_start, 2);
        assert!((s.worst_span_nll - 3.25).abs() < 1e-6);
        assert!((s.mean_nll - 13.3 / 7.0).abs() < 1e-5);
        assert!(GapScore::from_logprobs(&[]).is_none());
    }

    #[test]
    fn thresholds_are_per_topic_after_enough_samples_and_never_below_the_floor() {
        let mut t = Thresholds::new(ThresholdConfig {
            mode: ThresholdMode::Percentile,
            percentile: 50.0,
            min_samples: 3,
            floor: 1.0,
            ..Default::default()
        });
        assert!(t.is_gap("a", 1.5));
        assert!(!t.is_gap("a", 0.5));
        for s in [2.0, 4.0, 6.0] {
            t.observe("a", s);
        }
        for s in [8.0, 9.0, 10.0] {
            t.observe("b", s);
        }
        assert_eq!(t.threshold("a"), Some(4.0));
        assert_eq!(t.threshold("b"), Some(9.0));
        // An unseen topic uses every score so far.
        assert_eq!(t.threshold("c"), Some(8.0));
        assert!(t.is_gap("a", 5.0) && !t.is_gap("b", 5.0));
        let mut low = Thresholds::new(ThresholdConfig::default());
        for _ in 0..10 {
            low.observe("x", 0.2);
        }
        assert_eq!(low.threshold("x"), Some(1.0));
        let mut z = Thresholds::new(ThresholdConfig {
            mode: ThresholdMode::ZScore,
            z: 1.0,
            min_samples: 2,
            floor: 0.0,
            ..Default::default()
        });
        z.observe("t", 1.0);
        z.observe("t", 3.0);
        assert_eq!(z.threshold("t"), Some(3.0));
        assert_eq!(z.nudge(5.0, (0.0, 2.0)), 2.0);
    }
}
