//! Text to vectors for long-term memory: the [`Embedder`] trait and three embedders.
//!
//! - [`HashEmbedder`] (the default): hashed word and character n-gram features, signed,
//!   sublinear, L2-normalised. Needs nothing downloaded or trained, never changes its space
//!   (so stored vectors stay valid while the model grows), and is fast.
//! - [`ThauEmbedder`]: the THAU model's own final hidden states, mean-pooled. Its space
//!   changes with every training step and its size with every growth, so stored vectors go
//!   stale; `thau bench embed` measures it against the others.
//! - [`BertEmbedder`]: a sentence-transformer of the BERT family (all-MiniLM-L6-v2 layout:
//!   `config.json`, `tokenizer.json`, `model.safetensors`) from a local directory, run by
//!   candle-transformers, mean-pooled over the attention mask.
//!
//! Which one a home uses is `memory.embedder` in `thau.toml`: `hash`, `thau` or
//! `bert:<dir>`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

use super::{MemoryError, Result};
use crate::model::tokenizer::ThauTokenizer;
use crate::model::transformer::Thau;

/// Dimension of [`HashEmbedder`] vectors (the size of all-MiniLM-L6-v2's, so a store can
/// switch between the two without a new collection).
pub const HASH_DIM: usize = 384;
/// Longest input an embedder reads, in characters; the rest is cut (memories are short).
pub const MAX_EMBED_CHARS: usize = 4096;

/// Turns texts into unit-length vectors of a fixed size.
pub trait Embedder: Send {
    fn dim(&self) -> usize;
    /// A name that identifies the vector space (stored with the collection).
    fn name(&self) -> String;
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    fn embed_one(&self, text: &str) -> Result<Vec<f32>> {
        self.embed(&[text])?
            .pop()
            .ok_or_else(|| MemoryError::Embed("embedder returned no vector".into()))
    }
}

/// Scales a vector to unit length (leaves the zero vector alone).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Cosine of two unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn clip(text: &str) -> &str {
    match text.char_indices().nth(MAX_EMBED_CHARS) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Hashed features: each word (weight [`HashEmbedder::WORD_WEIGHT`]) and each character
/// 3- and 4-gram of `#word#` (weight 1), folded with FNV-1a into `dim` signed buckets,
/// square-rooted (so repeated words do not dominate), then normalised. Lower-cased, with
/// Spanish and French accents folded, so "Canción" and "cancion" match.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dim: usize,
}

impl Default for HashEmbedder {
    fn default() -> Self {
        HashEmbedder { dim: HASH_DIM }
    }
}

impl HashEmbedder {
    const WORD_WEIGHT: f32 = 2.0;

    pub fn new(dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(MemoryError::Embed("embedding size must be positive".into()));
        }
        Ok(HashEmbedder { dim })
    }

    fn add(&self, v: &mut [f32], feature: &[u8], weight: f32) {
        let h = fnv1a(feature);
        let i = (h % self.dim as u64) as usize;
        // The top bit picks a sign so that collisions cancel on average instead of adding up.
        let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
        v[i] += sign * weight;
    }

    /// The embedding of one text.
    pub fn embed_text(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dim];
        for word in fold(clip(text))
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let mut word_key = b"w:".to_vec();
            word_key.extend_from_slice(word.as_bytes());
            self.add(&mut v, &word_key, Self::WORD_WEIGHT);
            let chars: Vec<char> = std::iter::once('#')
                .chain(word.chars())
                .chain(std::iter::once('#'))
                .collect();
            for n in [3usize, 4] {
                for gram in chars.windows(n) {
                    let s: String = gram.iter().collect();
                    self.add(&mut v, s.as_bytes(), 1.0);
                }
            }
        }
        v.iter_mut().for_each(|x| *x = x.signum() * x.abs().sqrt());
        normalize(&mut v);
        v
    }
}

impl Embedder for HashEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }
    fn name(&self) -> String {
        format!("hash-ngram-{}", self.dim)
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.embed_text(t)).collect())
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Lower-cases and folds the accents of Spanish, Portuguese, French and Catalan.
fn fold(text: &str) -> String {
    text.chars()
        .flat_map(|c| c.to_lowercase())
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            other => other,
        })
        .collect()
}

/// The THAU model's final (normalised) hidden states, mean-pooled over the text's tokens.
pub struct ThauEmbedder {
    model: Thau,
    tokenizer: ThauTokenizer,
    source: PathBuf,
}

impl ThauEmbedder {
    /// Loads the newest checkpoint under `checkpoints` (the model's own weights; no
    /// optimizer state).
    pub fn from_checkpoints(checkpoints: &Path) -> Result<Self> {
        let err = |e: crate::model::ModelError| MemoryError::Embed(e.to_string());
        let dir = crate::model::checkpoint::newest(checkpoints)
            .map_err(err)?
            .ok_or_else(|| {
                MemoryError::Embed(format!(
                    "no checkpoint under {}: train a model first (`thau train`)",
                    checkpoints.display()
                ))
            })?;
        let ck = crate::model::checkpoint::load(&dir, &Device::Cpu, false).map_err(err)?;
        let model = crate::model::transformer::from_tensors(ck.weights, &ck.config, &Device::Cpu)
            .map_err(err)?;
        Ok(ThauEmbedder {
            model,
            tokenizer: ck.tokenizer,
            source: dir,
        })
    }
}

impl Embedder for ThauEmbedder {
    fn dim(&self) -> usize {
        self.model.cfg.d_model
    }
    fn name(&self) -> String {
        format!("thau-{}", self.source.display())
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let err = |e: &dyn std::fmt::Display| MemoryError::Embed(e.to_string());
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            let mut ids = self.tokenizer.encode(clip(text)).map_err(|e| err(&e))?;
            ids.truncate(self.model.cfg.max_seq_len);
            if ids.is_empty() {
                out.push(vec![0.0; self.dim()]);
                continue;
            }
            let t = ids.len();
            let ids = Tensor::from_vec(ids, (1, t), self.model.device()).map_err(|e| err(&e))?;
            let h = self.model.hidden(&ids, None).map_err(|e| err(&e))?; // [T, d]
            let mut v: Vec<f32> = h.mean(0).and_then(|m| m.to_vec1()).map_err(|e| err(&e))?; // [d]
            normalize(&mut v);
            out.push(v);
        }
        Ok(out)
    }
}

/// A BERT-family sentence-transformer from a local directory.
pub struct BertEmbedder {
    model: BertModel,
    tokenizer: tokenizers::Tokenizer,
    dim: usize,
    dir: PathBuf,
}

impl BertEmbedder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let file = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(MemoryError::Embed(format!(
                    "{}: missing (a sentence-transformer directory holds config.json, \
                     tokenizer.json and model.safetensors)",
                    p.display()
                )))
            }
        };
        let config_path = file("config.json")?;
        let config: BertConfig = std::fs::read(&config_path)
            .map_err(|e| MemoryError::io(&config_path, e))
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| MemoryError::Embed(format!("{}: {e}", config_path.display())))
            })?;
        let tok_path = file("tokenizer.json")?;
        let mut tokenizer = crate::model::tokenizer::load_tokenizer_file(&tok_path)
            .map_err(|e| MemoryError::Embed(e.to_string()))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: config.max_position_embeddings,
                ..Default::default()
            }))
            .map_err(|e| MemoryError::Embed(e.to_string()))?;
        let weights = file("model.safetensors")?;
        // SAFETY: the file is mapped read-only and not modified while the model lives.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
                .map_err(|e| MemoryError::Embed(format!("{}: {e}", weights.display())))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| MemoryError::Embed(format!("{}: {e}", weights.display())))?;
        Ok(BertEmbedder {
            model,
            tokenizer,
            dim: config.hidden_size,
            dir: dir.to_path_buf(),
        })
    }
}

impl Embedder for BertEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }
    fn name(&self) -> String {
        format!("bert-{}", self.dir.display())
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let err = |e: &dyn std::fmt::Display| MemoryError::Embed(e.to_string());
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            let enc = self
                .tokenizer
                .encode(clip(text), true)
                .map_err(|e| err(&e))?;
            let ids = enc.get_ids();
            if ids.is_empty() {
                out.push(vec![0.0; self.dim]);
                continue;
            }
            let t = ids.len();
            let dev = &self.model.device;
            let input = Tensor::from_slice(ids, (1, t), dev).map_err(|e| err(&e))?; // [1, T]
            let types = input.zeros_like().map_err(|e| err(&e))?; // [1, T]
            let mask =
                Tensor::from_slice(enc.get_attention_mask(), (1, t), dev).map_err(|e| err(&e))?; // [1, T]
            let h = self
                .model
                .forward(&input, &types, Some(&mask))
                .map_err(|e| err(&e))?; // [1, T, H]
                                        // One unpadded text: every position counts, so the masked mean is the mean.
            let mut v: Vec<f32> = h
                .squeeze(0)
                .and_then(|h| h.mean(0))
                .and_then(|m| m.to_vec1())
                .map_err(|e| err(&e))?; // [H]
            normalize(&mut v);
            out.push(v);
        }
        Ok(out)
    }
}

/// Builds the embedder a setting names: `hash`, `thau` or `bert:<dir>`.
pub fn from_setting(setting: &str, checkpoints: &Path) -> Result<Box<dyn Embedder>> {
    match setting.trim() {
        "" | "hash" => Ok(Box::new(HashEmbedder::default())),
        "thau" => Ok(Box::new(ThauEmbedder::from_checkpoints(checkpoints)?)),
        s => match s.strip_prefix("bert:") {
            Some(dir) if !dir.is_empty() => Ok(Box::new(BertEmbedder::load(Path::new(dir))?)),
            _ => Err(MemoryError::Embed(format!(
                "unknown embedder `{s}` (expected `hash`, `thau` or `bert:<dir>`)"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_embedder_is_unit_length_and_folds_accents() {
        let e = HashEmbedder::default();
        let v = e
            .embed(&["Canción del agua", "cancion del agua", "mecánica cuántica"])
            .unwrap();
        for x in &v {
            assert!((dot(x, x) - 1.0).abs() < 1e-5);
        }
        assert!((dot(&v[0], &v[1]) - 1.0).abs() < 1e-5);
        assert!(dot(&v[0], &v[2]) < 0.5);
    }
}
