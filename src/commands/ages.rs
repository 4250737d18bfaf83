//! `thau model ages`: the shape and parameter count of every age.

use serde::Serialize;

use crate::model::{ModelConfig, AGES};

/// One row of `thau model ages`.
#[derive(Debug, Clone, Serialize)]
pub struct AgeRow {
    pub age: u32,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub params: u64,
}

/// Every age for a vocabulary size.
pub fn ages(vocab_size: usize, context: usize) -> Vec<AgeRow> {
    AGES.iter()
        .filter_map(|a| ModelConfig::for_age(a.age, vocab_size, context).ok())
        .map(|c| AgeRow {
            age: c.age,
            d_model: c.d_model,
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            head_dim: c.head_dim,
            d_ff: c.d_ff,
            params: c.param_count(),
        })
        .collect()
}
