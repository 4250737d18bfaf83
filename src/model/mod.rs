//! The THAU model: a Llama-style decoder written with candle, trained from scratch.
//!
//! - [`config`]: [`ModelConfig`] and the six ages;
//! - [`ops`]: fused CPU ops with hand-written backward passes (RMSNorm, RoPE, causal
//!   softmax and attention, SwiGLU, the LM-head loss, linear), one file per op family;
//! - [`transformer`]: [`Thau`], the decoder itself (its layers, the training path, weight
//!   initialisation and loading);
//! - [`copy`]: the optional copy head, a pointer over the context mixed into the
//!   next-token distribution, and [`reading`], the question-to-memory match it reads by;
//! - [`decode`]: serving: the [`KvCache`], the packed host decoding path (packed weights,
//!   host attention, AMX) and [`decode::batch`], one decode thread batching every
//!   session's next token (and new prompts) into one forward pass;
//! - [`generate`]: sampling with a KV cache, streaming and scoring
//!   ([`generate::Sequence`]);
//! - [`tokenizer`]: the byte-level BPE [`ThauTokenizer`](tokenizer::ThauTokenizer) and
//!   the chat template;
//! - [`data`]: corpora (text, JSONL) turned into packed training windows;
//! - [`optim`]: AdamW with decoupled decay, gradient clipping, warmup + cosine schedule;
//! - [`checkpoint`]: atomic checkpoints under `checkpoints/age_N/`;
//! - [`train`]: the [`Trainer`](train::Trainer) loop with evaluation and resume;
//! - [`grammar`]: constrained decoding of tool calls (a JSON Schema as a byte automaton
//!   that says which tokens can continue a call);
//! - [`gguf`]: chat with a `llama`-architecture GGUF file (our export or another model);
//! - [`growth`]: exact, function-preserving growth from one age to the next;
//! - [`policy`]: when to grow (loss plateau, examples seen, probe accuracy).

pub mod checkpoint;
pub mod config;
pub mod copy;
pub mod data;
pub mod decode;
pub mod generate;
pub mod gguf;
pub mod grammar;
pub mod growth;
pub mod ops;
pub mod optim;
pub mod policy;
pub mod reading;
pub mod tokenizer;
pub mod train;
pub mod transformer;

pub use config::{ModelConfig, AGES};

pub use decode::kv::KvCache;
pub use transformer::Thau;

use std::path::PathBuf;

/// Errors of the model, its data and its checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model config: {0}")]
    Config(String),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("{file}: not valid UTF-8 at byte {offset}")]
    Utf8 { file: PathBuf, offset: usize },
    #[error("checkpoint {file}: {message}")]
    Checkpoint { file: PathBuf, message: String },
    #[error("{0}")]
    Data(String),
}

impl ModelError {
    pub fn file(file: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        ModelError::File {
            file: file.into(),
            message: message.to_string(),
        }
    }
    pub fn checkpoint(file: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        ModelError::Checkpoint {
            file: file.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// The compute device named in the configuration (`cpu`, or `cuda` with the feature).
pub fn device(name: &str) -> Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => candle_core::Device::new_cuda(0).map_err(|e| {
            ModelError::Config(format!("device `cuda`: {e} (build with `--features cuda`)"))
        }),
        other => Err(ModelError::Config(format!(
            "unknown device `{other}` (expected cpu or cuda)"
        ))),
    }
}
