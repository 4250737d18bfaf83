//! Auto-tuning: [`Tuning`] turns feedback on chat turns and the loop's learning signals
//! into bounded changes of three knobs ([`Knob`]): the Learner's learning rate, the
//! Inference actor's default sampling temperature and the GapDetector's gap percentile.
//!
//! The rules are few and explainable, and every change is a [`Change`] in a log with its
//! reason, persisted in `<home>/tuning.json`, and revertible by id:
//! - **feedback**: when at least [`TuningConfig::feedback_min`] of the last
//!   [`TuningConfig::feedback_window`] rated turns are in, and a [`TuningConfig::down_share`]
//!   of them are thumbs down, the temperature is lowered one step (sample more
//!   conservatively); when an [`TuningConfig::up_share`] are thumbs up and an earlier
//!   change had lowered it, it goes one step back up toward its configured value;
//! - **loss trend**: over two windows of [`TuningConfig::loss_window`] rounds, a rising
//!   loss (by more than [`TuningConfig::loss_rise`]) or a plateau (less than
//!   [`TuningConfig::loss_plateau`] better) lowers the learning rate one step — the usual
//!   "reduce on plateau", which also catches divergence;
//! - **gap closure rate**: after [`TuningConfig::gap_window`] gaps opened, a closure rate
//!   below [`TuningConfig::low_closure`] raises the percentile (fewer, worse gaps: the
//!   Learner cannot keep up), one above [`TuningConfig::high_closure`] lowers it (look for
//!   more).
//!
//! Each rule then starts collecting evidence afresh, so one batch of evidence moves a knob
//! at most one step. Values never leave their [`Bounds`] (widened to take in the configured
//! value when that lies outside them).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, ThauError};

/// The file, under the data directory, that holds the tuned values and the change log.
pub const TUNING_FILE: &str = "tuning.json";

/// A setting the tuner may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Knob {
    /// The Learner's (constant) learning rate.
    LearningRate,
    /// The Inference actor's default sampling temperature.
    Temperature,
    /// The GapDetector's threshold percentile (percentile mode only).
    GapPercentile,
}

impl Knob {
    pub const ALL: [Knob; 3] = [Knob::LearningRate, Knob::Temperature, Knob::GapPercentile];

    pub fn name(self) -> &'static str {
        match self {
            Knob::LearningRate => "learning_rate",
            Knob::Temperature => "temperature",
            Knob::GapPercentile => "gap_percentile",
        }
    }
}

/// Where a knob may go and how far one step moves it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    pub min: f64,
    pub max: f64,
    /// A step: a factor (learning rate, temperature) or an amount (percentile points).
    pub step: f64,
}

/// Settings of the tuner (`[params]` of `agents/tuner.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuningConfig {
    pub learning_rate: Bounds,
    pub temperature: Bounds,
    pub gap_percentile: Bounds,
    pub feedback_window: usize,
    pub feedback_min: usize,
    pub down_share: f64,
    pub up_share: f64,
    pub loss_window: usize,
    /// Relative rise of the mean loss that counts as diverging.
    pub loss_rise: f64,
    /// Relative improvement below which the loss has plateaued.
    pub loss_plateau: f64,
    pub gap_window: u64,
    pub low_closure: f64,
    pub high_closure: f64,
}

impl Default for TuningConfig {
    fn default() -> Self {
        TuningConfig {
            learning_rate: Bounds {
                min: 1e-4,
                max: 3e-3,
                step: 0.7,
            },
            temperature: Bounds {
                min: 0.3,
                max: 1.2,
                step: 0.9,
            },
            gap_percentile: Bounds {
                min: 40.0,
                max: 85.0,
                step: 5.0,
            },
            feedback_window: 20,
            feedback_min: 5,
            down_share: 0.6,
            up_share: 0.8,
            loss_window: 4,
            loss_rise: 0.05,
            loss_plateau: 0.01,
            gap_window: 12,
            low_closure: 0.2,
            high_closure: 0.8,
        }
    }
}

impl TuningConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        for k in Knob::ALL {
            let b = self.bounds(k);
            if !(b.min.is_finite() && b.max.is_finite() && b.min > 0.0 && b.min <= b.max) {
                return Err(format!("{}: need 0 < min <= max", k.name()));
            }
            let ok = match k {
                Knob::GapPercentile => b.step > 0.0 && b.max <= 100.0,
                _ => b.step > 0.0 && b.step < 1.0,
            };
            if !ok {
                return Err(format!(
                    "{}: step must be {}",
                    k.name(),
                    if k == Knob::GapPercentile {
                        "> 0 points (max <= 100)"
                    } else {
                        "a factor in (0, 1)"
                    }
                ));
            }
        }
        let share = |v: f64| (0.0..=1.0).contains(&v);
        let shares = [
            self.down_share,
            self.up_share,
            self.low_closure,
            self.high_closure,
        ];
        if !shares.into_iter().all(share) {
            return Err("shares and closure rates must be within 0..=1".into());
        }
        if self.feedback_min == 0
            || self.feedback_min > self.feedback_window
            || self.loss_window == 0
            || self.gap_window == 0
        {
            return Err("windows must be >= 1 and feedback_min <= feedback_window".into());
        }
        Ok(())
    }

    pub fn bounds(&self, k: Knob) -> Bounds {
        match k {
            Knob::LearningRate => self.learning_rate,
            Knob::Temperature => self.temperature,
            Knob::GapPercentile => self.gap_percentile,
        }
    }
}

/// Why a knob moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Feedback,
    LossTrend,
    GapClosure,
    Revert,
}

/// One logged change of a knob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub id: u64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub knob: Knob,
    pub from: f64,
    pub to: f64,
    pub cause: Cause,
    pub reason: String,
    /// The change this one undid (for [`Cause::Revert`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts: Option<u64>,
}

/// A thumbs up or down on a chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    Up,
    Down,
}

impl std::str::FromStr for Rating {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "up" | "+" | "+1" | "good" => Ok(Rating::Up),
            "down" | "-" | "-1" | "bad" => Ok(Rating::Down),
            other => Err(format!("`{other}` is not a rating: use up or down")),
        }
    }
}

/// The tuner's persistent state: the knobs' configured (base) and current values, the
/// evidence gathered since each rule last fired, and the change log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tuning {
    #[serde(skip)]
    pub config: TuningConfig,
    /// Configured values, as the actors' own files set them.
    pub base: BTreeMap<Knob, f64>,
    /// Values that differ from the base because of a change.
    pub current: BTreeMap<Knob, f64>,
    pub log: Vec<Change>,
    /// Knobs the tuner must leave alone (e.g. the percentile in z-score mode).
    #[serde(default)]
    pub frozen: Vec<Knob>,
    recent_ratings: VecDeque<Rating>,
    recent_losses: VecDeque<f64>,
    gaps_opened: u64,
    gaps_closed: u64,
    #[serde(default)]
    pub ratings: BTreeMap<String, u64>,
}

impl Tuning {
    /// A tuner for knobs configured at `base`.
    pub fn new(config: TuningConfig, base: BTreeMap<Knob, f64>) -> Tuning {
        Tuning {
            config,
            base,
            ..Default::default()
        }
    }

    /// Loads `path` (a missing file is a fresh state) and takes the configured `base`
    /// values: a knob whose base changed in its actor's file starts over from the new one.
    pub fn load(path: &Path, config: TuningConfig, base: BTreeMap<Knob, f64>) -> Result<Tuning> {
        let mut t = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Tuning>(&bytes).map_err(|e| {
                ThauError::Invalid(format!(
                    "{}: not a tuning state ({e}); move it away to start over",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Tuning::default(),
            Err(e) => return Err(ThauError::io(path, e)),
        };
        for (k, v) in &base {
            if t.base.get(k) != Some(v) {
                t.current.remove(k);
            }
        }
        t.base = base;
        t.config = config;
        Ok(t)
    }

    /// Writes the state atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| ThauError::Runtime(e.to_string()))?;
        crate::fsutil::atomic_write(path, &bytes)
    }

    /// The value a knob has now (`None` when the knob is not configured).
    pub fn value(&self, k: Knob) -> Option<f64> {
        self.current.get(&k).or_else(|| self.base.get(&k)).copied()
    }

    /// Knobs whose value differs from the base, with their values.
    pub fn overrides(&self) -> Vec<(Knob, f64)> {
        self.current.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn set(&mut self, knob: Knob, to: f64, cause: Cause, reason: String) -> Option<Change> {
        if self.frozen.contains(&knob) {
            return None;
        }
        let from = self.value(knob)?;
        // The configured value is always allowed, even outside the bounds.
        let b = self.config.bounds(knob);
        let base = self.base.get(&knob).copied().unwrap_or(from);
        let to = round_sig(to.clamp(b.min.min(base), b.max.max(base)));
        if (to - from).abs() <= f64::EPSILON * from.abs().max(1.0) {
            return None;
        }
        let change = Change {
            id: self.log.last().map_or(1, |c| c.id + 1),
            at: chrono::Utc::now(),
            knob,
            from,
            to,
            cause,
            reason,
            reverts: None,
        };
        if self.base.get(&knob) == Some(&to) {
            self.current.remove(&knob);
        } else {
            self.current.insert(knob, to);
        }
        self.log.push(change.clone());
        Some(change)
    }

    /// Moves a knob one step down (`down`) or up.
    fn step(&mut self, knob: Knob, down: bool, cause: Cause, reason: String) -> Option<Change> {
        let v = self.value(knob)?;
        let b = self.config.bounds(knob);
        let to = match (knob, down) {
            (Knob::GapPercentile, true) => v - b.step,
            (Knob::GapPercentile, false) => v + b.step,
            (_, true) => v * b.step,
            (_, false) => v / b.step,
        };
        self.set(knob, to, cause, reason)
    }

    /// Takes a rating of a chat turn.
    pub fn feedback(&mut self, rating: Rating) -> Option<Change> {
        *self
            .ratings
            .entry(format!("{rating:?}").to_lowercase())
            .or_default() += 1;
        self.recent_ratings.push_back(rating);
        while self.recent_ratings.len() > self.config.feedback_window {
            self.recent_ratings.pop_front();
        }
        let n = self.recent_ratings.len();
        if n < self.config.feedback_min {
            return None;
        }
        let downs = self
            .recent_ratings
            .iter()
            .filter(|r| **r == Rating::Down)
            .count();
        let ups = n - downs;
        let temp = self.value(Knob::Temperature)?;
        let base = self.base.get(&Knob::Temperature).copied().unwrap_or(temp);
        let change = if downs as f64 >= self.config.down_share * n as f64 {
            self.step(
                Knob::Temperature,
                true,
                Cause::Feedback,
                format!("{downs} of the last {n} rated answers were thumbs down: sample more conservatively"),
            )
        } else if ups as f64 >= self.config.up_share * n as f64 && temp < base {
            let to = (temp / self.config.temperature.step).min(base);
            self.set(
                Knob::Temperature,
                to,
                Cause::Feedback,
                format!("{ups} of the last {n} rated answers were thumbs up: back toward the configured temperature"),
            )
        } else {
            None
        };
        if change.is_some() {
            self.recent_ratings.clear();
        }
        change
    }

    /// Takes the training loss of a Learner round.
    pub fn round_loss(&mut self, loss: f64) -> Option<Change> {
        if !loss.is_finite() {
            return None;
        }
        let w = self.config.loss_window;
        self.recent_losses.push_back(loss);
        while self.recent_losses.len() > 2 * w {
            self.recent_losses.pop_front();
        }
        if self.recent_losses.len() < 2 * w {
            return None;
        }
        let mean = |it: &mut dyn Iterator<Item = &f64>| it.sum::<f64>() / w as f64;
        let before = mean(&mut self.recent_losses.iter().take(w));
        let after = mean(&mut self.recent_losses.iter().skip(w));
        let reason = if after > before * (1.0 + self.config.loss_rise) {
            format!("training loss rose from {before:.3} to {after:.3} over the last {w} rounds")
        } else if after > before * (1.0 - self.config.loss_plateau) {
            format!("training loss plateaued ({before:.3} → {after:.3} over the last {w} rounds)")
        } else {
            return None;
        };
        let change = self.step(Knob::LearningRate, true, Cause::LossTrend, reason);
        self.recent_losses.clear();
        change
    }

    /// Takes a gap opened (`closed == false`) or closed.
    pub fn gap(&mut self, closed: bool) -> Option<Change> {
        if closed {
            self.gaps_closed += 1;
            return None;
        }
        self.gaps_opened += 1;
        if self.gaps_opened < self.config.gap_window {
            return None;
        }
        let (opened, closed) = (self.gaps_opened, self.gaps_closed);
        let rate = closed as f64 / opened as f64;
        self.gaps_opened = 0;
        self.gaps_closed = 0;
        if rate < self.config.low_closure {
            self.step(
                Knob::GapPercentile,
                false,
                Cause::GapClosure,
                format!(
                    "{closed} of {opened} gaps closed: raise the bar so the Learner can keep up"
                ),
            )
        } else if rate > self.config.high_closure {
            self.step(
                Knob::GapPercentile,
                true,
                Cause::GapClosure,
                format!("{closed} of {opened} gaps closed: lower the bar to find more"),
            )
        } else {
            None
        }
    }

    /// Undoes change `id`: its knob goes back to the value before it (a new, logged change).
    pub fn revert(&mut self, id: u64) -> Result<Change> {
        let Some(c) = self.log.iter().find(|c| c.id == id).cloned() else {
            return Err(ThauError::Invalid(format!(
                "no tuning change #{id} (see `thau tune`)"
            )));
        };
        let mut change = self
            .set(
                c.knob,
                c.from,
                Cause::Revert,
                format!("revert of #{id} ({})", c.reason),
            )
            .ok_or_else(|| {
                ThauError::Invalid(format!(
                    "{} is already {} (or frozen): nothing to revert",
                    c.knob.name(),
                    c.from
                ))
            })?;
        change.reverts = Some(id);
        if let Some(last) = self.log.last_mut() {
            last.reverts = Some(id);
        }
        Ok(change)
    }
}

/// `v` to 6 significant digits: 0.72, not 0.7200000000000001, in the log and the files.
fn round_sig(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(5 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuner() -> Tuning {
        Tuning::new(
            TuningConfig::default(),
            [
                (Knob::LearningRate, 1e-3),
                (Knob::Temperature, 0.8),
                (Knob::GapPercentile, 60.0),
            ]
            .into(),
        )
    }

    #[test]
    fn thumbs_down_lower_the_temperature_within_bounds_and_ups_bring_it_back() {
        let mut t = tuner();
        for _ in 0..4 {
            assert!(
                t.feedback(Rating::Down).is_none(),
                "needs feedback_min ratings"
            );
        }
        let c = t.feedback(Rating::Down).expect("5 of 5 down");
        assert_eq!(c.knob, Knob::Temperature);
        assert!((c.to - 0.72).abs() < 1e-9, "{c:?}");
        // Many more thumbs down never go below the bound.
        for _ in 0..200 {
            t.feedback(Rating::Down);
        }
        assert!((t.value(Knob::Temperature).unwrap() - 0.3).abs() < 1e-9);
        for _ in 0..200 {
            t.feedback(Rating::Up);
        }
        // Back up to the configured value, never above it, and no override is left.
        assert!((t.value(Knob::Temperature).unwrap() - 0.8).abs() < 1e-9);
        assert!(t.current.is_empty());
        // Mixed feedback moves nothing.
        let before = t.log.len();
        for r in [Rating::Up, Rating::Down].iter().cycle().take(40) {
            t.feedback(*r);
        }
        assert_eq!(t.log.len(), before);
    }

    #[test]
    fn a_rising_or_flat_loss_lowers_the_learning_rate_a_falling_one_does_not() {
        let mut t = tuner();
        for l in [5.0, 4.5, 4.0, 3.6, 3.2, 2.9, 2.6, 2.3] {
            assert!(t.round_loss(l).is_none(), "falling loss");
        }
        let mut last = None;
        for l in [3.0, 3.0, 3.0, 3.0, 3.5, 3.6, 3.7, 3.8] {
            last = t.round_loss(l).or(last);
        }
        let c = last.expect("rising loss");
        assert_eq!((c.knob, c.cause), (Knob::LearningRate, Cause::LossTrend));
        assert!((c.to - 7e-4).abs() < 1e-12);
        assert!(c.reason.contains("rose"), "{}", c.reason);
        let mut plateau = None;
        for _ in 0..8 {
            plateau = t.round_loss(2.0).or(plateau);
        }
        assert!(plateau.expect("flat loss").reason.contains("plateaued"));
        assert!(t.round_loss(f64::NAN).is_none());
    }

    #[test]
    fn closure_rate_moves_the_gap_percentile_and_revert_restores_it() {
        let mut t = tuner();
        let mut change = None;
        for _ in 0..12 {
            change = t.gap(false).or(change);
        }
        let c = change.take().expect("0 of 12 closed");
        assert_eq!((c.from, c.to), (60.0, 65.0));
        for _ in 0..12 {
            t.gap(true);
            change = t.gap(false);
        }
        let lower = change.expect("12 of 12 closed");
        assert_eq!((lower.from, lower.to), (65.0, 60.0));
        // #1 raised 60 → 65, #2 lowered it back: undoing #2 returns to 65, once.
        assert!(
            t.revert(c.id).is_err(),
            "already at 60, the value before #1"
        );
        let r = t.revert(lower.id).expect("revert");
        assert_eq!(
            (r.knob, r.to, r.cause, r.reverts),
            (Knob::GapPercentile, 65.0, Cause::Revert, Some(lower.id))
        );
        assert!(t.revert(lower.id).is_err());
        assert!(t.revert(999).is_err());
        t.frozen.push(Knob::GapPercentile);
        for _ in 0..12 {
            assert!(t.gap(false).is_none(), "frozen knob");
        }
    }

    #[test]
    fn state_round_trips_and_a_changed_base_drops_the_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TUNING_FILE);
        let mut t = tuner();
        for _ in 0..5 {
            t.feedback(Rating::Down);
        }
        t.save(&path).unwrap();
        let base = t.base.clone();
        let back = Tuning::load(&path, TuningConfig::default(), base.clone()).unwrap();
        assert_eq!(back.value(Knob::Temperature), t.value(Knob::Temperature));
        assert_eq!(back.log, t.log);
        let mut new_base = base;
        new_base.insert(Knob::Temperature, 0.5);
        let moved = Tuning::load(&path, TuningConfig::default(), new_base).unwrap();
        assert_eq!(moved.value(Knob::Temperature), Some(0.5));
        std::fs::write(&path, b"{ nope").unwrap();
        let err = Tuning::load(&path, TuningConfig::default(), t.base.clone()).unwrap_err();
        assert!(err.to_string().contains("not a tuning state"), "{err}");
        assert!(TuningConfig {
            down_share: 2.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(TuningConfig::default().validate().is_ok());
    }
}
