//! When to grow: the Learner's [`GrowthPolicy`]. A model advances to the next age only
//! when its held-out loss has plateaued *and* the age's criteria are met: enough examples
//! seen, and a minimum accuracy measured by generating answers to held-out probe
//! questions and scoring them against the references ([`probe_accuracy`]: exact match
//! and token F1) — never inferred from the loss.

use serde::{Deserialize, Serialize};

use super::generate::{generate, SamplingParams};
use super::tokenizer::{Message, Role, ThauTokenizer};
use super::transformer::Thau;
use super::Result;

/// What one age requires before growing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeCriteria {
    pub age: u32,
    /// Training examples (sequences) seen at this age.
    pub min_examples: u64,
    /// Mean token F1 on the probe questions.
    pub min_accuracy: f64,
}

/// The growth policy, from `[params]` of `agents/learner.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrowthPolicy {
    /// Held-out evaluations compared to decide a plateau.
    pub plateau_window: usize,
    /// Plateau: the best loss of the last window improved on the window before it by
    /// less than this fraction.
    pub plateau_threshold: f64,
    pub ages: Vec<AgeCriteria>,
}

impl Default for GrowthPolicy {
    fn default() -> Self {
        let age = |age, min_examples, min_accuracy| AgeCriteria {
            age,
            min_examples,
            min_accuracy,
        };
        GrowthPolicy {
            plateau_window: 5,
            plateau_threshold: 0.01,
            ages: vec![
                age(0, 20_000, 0.30),
                age(1, 60_000, 0.40),
                age(3, 150_000, 0.50),
                age(6, 400_000, 0.55),
                age(12, 1_000_000, 0.60),
            ],
        }
    }
}

/// The policy's verdict, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Grow { reason: String },
    Stay { reason: String },
}

impl GrowthPolicy {
    /// Whether the held-out losses (oldest first) have stopped improving.
    pub fn plateaued(&self, heldout: &[f64]) -> bool {
        let w = self.plateau_window.max(1);
        if heldout.len() < 2 * w {
            return false;
        }
        let best = |s: &[f64]| s.iter().cloned().fold(f64::INFINITY, f64::min);
        let recent = best(&heldout[heldout.len() - w..]);
        let before = best(&heldout[heldout.len() - 2 * w..heldout.len() - w]);
        (before - recent) < self.plateau_threshold * before.abs()
    }

    /// Decides for a model at `age`.
    pub fn decide(
        &self,
        age: u32,
        heldout: &[f64],
        examples_seen: u64,
        accuracy: Option<f64>,
    ) -> Decision {
        let stay = |reason: String| Decision::Stay { reason };
        let Some(c) = self.ages.iter().find(|c| c.age == age) else {
            return stay(format!(
                "age {age} has no growth criteria (the last age does not grow)"
            ));
        };
        if !self.plateaued(heldout) {
            return stay(format!(
                "held-out loss is still improving (window {})",
                self.plateau_window
            ));
        }
        if examples_seen < c.min_examples {
            return stay(format!(
                "{examples_seen} examples seen, age {age} needs {}",
                c.min_examples
            ));
        }
        match accuracy {
            None => stay("probe accuracy not measured yet".into()),
            Some(a) if a < c.min_accuracy => stay(format!(
                "probe accuracy {a:.3} is below {:.3}",
                c.min_accuracy
            )),
            Some(a) => Decision::Grow {
                reason: format!(
                    "loss plateaued, {examples_seen} examples seen, probe accuracy {a:.3} ≥ {:.3}",
                    c.min_accuracy
                ),
            },
        }
    }
}

/// A probe: a question and its reference answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub question: String,
    pub answer: String,
}

/// Scores of a probe run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeScore {
    pub probes: usize,
    pub exact_match: f64,
    /// Mean token F1 (what [`GrowthPolicy`] compares to `min_accuracy`).
    pub token_f1: f64,
}

/// Lower-cased words without surrounding punctuation.
fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Token F1 between a prediction and a reference (SQuAD-style, on lower-cased words).
pub fn token_f1(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (words(prediction), words(reference));
    if p.is_empty() || r.is_empty() {
        return f64::from(u8::from(p == r));
    }
    let mut left = r.clone();
    let mut common = 0usize;
    for w in &p {
        if let Some(i) = left.iter().position(|x| x == w) {
            left.swap_remove(i);
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let (precision, recall) = (
        common as f64 / p.len() as f64,
        common as f64 / r.len() as f64,
    );
    2.0 * precision * recall / (precision + recall)
}

/// Answers every probe greedily and scores the answers against the references.
pub fn probe_accuracy(
    model: &Thau,
    tok: &ThauTokenizer,
    probes: &[Probe],
    max_new_tokens: usize,
) -> Result<ProbeScore> {
    let params = SamplingParams {
        max_new_tokens,
        temperature: 0.0,
        repetition_penalty: 1.0,
        ..Default::default()
    };
    let (mut em, mut f1) = (0.0, 0.0);
    for p in probes {
        let prompt = tok.chat_prompt(&[Message::new(Role::User, p.question.clone())])?;
        let g = generate(
            model,
            tok,
            &prompt,
            &params,
            &[tok.special.eot],
            None,
            &mut |_| true,
        )?;
        em += f64::from(u8::from(words(&g.text) == words(&p.answer)));
        f1 += token_f1(&g.text, &p.answer);
    }
    let n = probes.len().max(1) as f64;
    Ok(ProbeScore {
        probes: probes.len(),
        exact_match: em / n,
        token_f1: f1 / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_f1_is_squad_style() {
        assert_eq!(token_f1("Por el este.", "por el este"), 1.0);
        assert_eq!(token_f1("", ""), 1.0);
        assert_eq!(token_f1("nada", "el mar"), 0.0);
        let f = token_f1("the sun sets in the west", "in the west");
        assert!((f - 2.0 * 0.5 * 1.0 / 1.5).abs() < 1e-12, "{f}");
    }

    #[test]
    fn growth_needs_a_plateau_enough_examples_and_probe_accuracy() {
        let p = GrowthPolicy {
            plateau_window: 2,
            plateau_threshold: 0.01,
            ..Default::default()
        };
        let improving = [6.0, 5.5, 5.0, 4.5];
        let flat = [6.0, 5.0, 5.0, 4.99];
        assert!(!p.plateaued(&improving) && p.plateaued(&flat));
        assert!(!p.plateaued(&[5.0, 5.0, 5.0]), "needs two windows");
        assert!(matches!(
            p.decide(0, &improving, 1_000_000, Some(0.9)),
            Decision::Stay { .. }
        ));
        assert!(matches!(
            p.decide(0, &flat, 10, Some(0.9)),
            Decision::Stay { .. }
        ));
        assert!(matches!(
            p.decide(0, &flat, 1_000_000, None),
            Decision::Stay { .. }
        ));
        assert!(matches!(
            p.decide(0, &flat, 1_000_000, Some(0.1)),
            Decision::Stay { .. }
        ));
        assert!(matches!(
            p.decide(0, &flat, 1_000_000, Some(0.9)),
            Decision::Grow { .. }
        ));
        assert!(
            matches!(
                p.decide(15, &flat, u64::MAX, Some(1.0)),
                Decision::Stay { .. }
            ),
            "adult age"
        );
    }
}
