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

/// The compute device named in the configuration (`device` in thau.toml): `cpu`, `cuda` (the
/// first GPU) or `cuda:N`. A GPU needs a build with the `cuda` feature and a CUDA device;
/// without either the error says which. Checkpoints stay device-independent (safetensors
/// hold no device), so a model trained on one loads on the other.
pub fn device(name: &str) -> Result<candle_core::Device> {
    let gpu = match name.trim() {
        "cpu" => return Ok(candle_core::Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(ModelError::Config(format!(
                    "unknown device `{other}` (expected cpu, cuda or cuda:N)"
                )))
            }
        },
    };
    if !cfg!(feature = "cuda") {
        return Err(ModelError::Config(format!(
            "device `{name}`: cuda requested, but this thau was built without the cuda feature \
             (build it with `cargo build --release --features cuda` where a CUDA toolkit exists), \
             or set device = \"cpu\" in thau.toml"
        )));
    }
    candle_core::Device::new_cuda(gpu)
        .map_err(|e| ModelError::Config(format!("device `{name}`: no CUDA device {gpu}: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_device_setting_names_cpu_or_a_cuda_gpu_and_says_what_is_missing() {
        assert!(super::device("cpu").unwrap().is_cpu());
        for gpu in ["cuda", "cuda:0", "cuda:3"] {
            match super::device(gpu) {
                // A CUDA build on a machine with that GPU.
                Ok(d) => assert!(d.is_cuda() && cfg!(feature = "cuda")),
                Err(e) if cfg!(feature = "cuda") => {
                    assert!(e.to_string().contains("no CUDA device"))
                }
                Err(e) => assert!(
                    e.to_string().contains("built without the cuda feature")
                        && e.to_string().contains(gpu),
                    "{e}"
                ),
            }
        }
        for bad in ["gpu", "cuda:", "cuda:x", "metal"] {
            let e = super::device(bad).unwrap_err().to_string();
            assert!(
                e.contains("unknown device") && e.contains("cpu, cuda or cuda:N"),
                "{e}"
            );
        }
    }
}
