//! Model shapes: [`ModelConfig`] (the serde config saved beside every checkpoint) and the
//! six ages of THAU ([`AGES`]).
//!
//! Every age keeps `head_dim = 64` and grows the number of heads (6, 8, 12, 16, 24, 40).
//! The design's 32 heads of 80 at age 15 would change the RoPE frequencies of every head
//! and make exact, function-preserving growth impossible, so THAU uses 40 heads of 64.

use serde::{Deserialize, Serialize};

use super::ModelError;

/// Width of every attention head at every age.
pub const HEAD_DIM: usize = 64;
/// RoPE base frequency.
pub const ROPE_THETA: f64 = 10_000.0;
/// RMSNorm epsilon at age 0 (growth rescales it with the width).
pub const RMS_EPS: f64 = 1e-5;

/// One age of the design: width, depth and feed-forward size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Age {
    pub age: u32,
    pub d_model: usize,
    pub n_layers: usize,
    pub d_ff: usize,
}

/// The six ages, from baby (~20M parameters with an 8k vocabulary) to adult (~2B).
pub const AGES: [Age; 6] = [
    Age {
        age: 0,
        d_model: 384,
        n_layers: 6,
        d_ff: 1536,
    },
    Age {
        age: 1,
        d_model: 512,
        n_layers: 8,
        d_ff: 2048,
    },
    Age {
        age: 3,
        d_model: 768,
        n_layers: 12,
        d_ff: 3072,
    },
    Age {
        age: 6,
        d_model: 1024,
        n_layers: 16,
        d_ff: 4096,
    },
    Age {
        age: 12,
        d_model: 1536,
        n_layers: 20,
        d_ff: 6144,
    },
    Age {
        age: 15,
        d_model: 2560,
        n_layers: 24,
        d_ff: 10240,
    },
];

/// The shape of a THAU model. Saved as `config.json` in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub age: u32,
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    /// Longest sequence (RoPE tables are built for it).
    pub max_seq_len: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    /// A copy head mixes a pointer over the context into the next-token distribution
    /// ([`super::copy`]). Configs written before it existed have none.
    #[serde(default)]
    pub copy_head: bool,
}

impl ModelConfig {
    /// The configuration of a design age for a vocabulary and context length.
    pub fn for_age(age: u32, vocab_size: usize, max_seq_len: usize) -> Result<Self, ModelError> {
        let a = AGES.iter().find(|a| a.age == age).ok_or_else(|| {
            ModelError::Config(format!(
                "age {age} does not exist; ages are {}",
                AGES.map(|a| a.age.to_string()).join(", ")
            ))
        })?;
        Ok(ModelConfig {
            age,
            vocab_size,
            d_model: a.d_model,
            n_layers: a.n_layers,
            n_heads: a.d_model / HEAD_DIM,
            head_dim: HEAD_DIM,
            d_ff: a.d_ff,
            max_seq_len,
            rope_theta: ROPE_THETA,
            rms_eps: RMS_EPS,
            copy_head: false,
        })
    }

    /// A tiny configuration for tests and examples (every dimension small).
    pub fn tiny(vocab_size: usize) -> Self {
        ModelConfig {
            age: 0,
            vocab_size,
            d_model: 32,
            n_layers: 2,
            n_heads: 2,
            head_dim: 16,
            d_ff: 64,
            max_seq_len: 64,
            rope_theta: ROPE_THETA,
            rms_eps: RMS_EPS,
            copy_head: false,
        }
    }

    /// This shape without the copy head: what a GGUF export holds.
    pub fn without_copy_head(&self) -> ModelConfig {
        ModelConfig {
            copy_head: false,
            ..self.clone()
        }
    }

    /// Width of the attention projections (`n_heads * head_dim`).
    pub fn attn_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Checks the invariants the model relies on.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.vocab_size == 0 || self.d_model == 0 || self.n_layers == 0 || self.d_ff == 0 {
            return bad("vocab_size, d_model, n_layers and d_ff must be positive".into());
        }
        if self.n_heads == 0 || self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "n_heads ({}) must be positive and head_dim ({}) even (RoPE rotates pairs)",
                self.n_heads, self.head_dim
            ));
        }
        if self.max_seq_len == 0 {
            return bad("max_seq_len must be positive".into());
        }
        Ok(())
    }

    /// Number of trainable parameters (untied embedding and LM head, no biases).
    pub fn param_count(&self) -> u64 {
        let (v, d, a, f) = (
            self.vocab_size as u64,
            self.d_model as u64,
            self.attn_dim() as u64,
            self.d_ff as u64,
        );
        let per_layer = 4 * d * a + 3 * d * f + 2 * d;
        2 * v * d + self.n_layers as u64 * per_layer + d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_have_the_design_sizes() {
        let p = |age| ModelConfig::for_age(age, 8192, 256).unwrap().param_count();
        // ~18M at age 0 in the design (20.4M here: the LM head is untied).
        assert!((20_000_000..21_000_000).contains(&p(0)), "{}", p(0));
        // The design calls age 15 "2B"; its shapes give 2.56B with an 8k vocabulary.
        assert!((2_500_000_000..2_600_000_000).contains(&p(15)), "{}", p(15));
        for w in AGES.windows(2) {
            assert!(p(w[0].age) < p(w[1].age));
        }
        let c = ModelConfig::for_age(15, 8192, 256).unwrap();
        assert_eq!((c.n_heads, c.head_dim), (40, 64));
        assert!(ModelConfig::for_age(2, 8192, 256).is_err());
    }
}
