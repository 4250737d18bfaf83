//! [`GgufModel`]: a `llama`-architecture GGUF file — THAU's own export, or another model
//! such as TinyLlama — served through candle-transformers' `quantized_llama`, with its
//! tokenizer and its chat template (rendered with minijinja), so the Inference actor can
//! chat with it.
//!
//! The tokenizer comes from a `tokenizer.json` beside the file when there is one (the
//! usual way for SentencePiece models like TinyLlama), else from the GGUF's own
//! byte-level BPE metadata (`tokenizer.ggml.model = gpt2`, as THAU exports).

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::generate::Decoder;
use super::tokenizer::Message;
use super::{ModelError, Result};

/// GGUF token types that are not plain text pieces (control, user-defined).
const SPECIAL_TOKEN_TYPES: [i32; 2] = [3, 4];

/// A GGUF model ready to chat.
pub struct GgufModel {
    pub path: PathBuf,
    weights: ModelWeights,
    tokenizer: Tokenizer,
    template: Option<String>,
    bos: String,
    eos: String,
    /// Token ids that end an answer.
    pub stop: Vec<u32>,
    pub context: usize,
    pub name: String,
}

fn meta_str(md: &std::collections::HashMap<String, Value>, key: &str) -> Option<String> {
    md.get(key).and_then(|v| v.to_string().ok()).cloned()
}

fn meta_u32(md: &std::collections::HashMap<String, Value>, key: &str) -> Option<u32> {
    md.get(key).and_then(|v| v.to_u32().ok())
}

/// The byte-level BPE tokenizer described by a GGUF's `tokenizer.ggml.*` metadata.
fn tokenizer_from_metadata(
    md: &std::collections::HashMap<String, Value>,
    path: &Path,
) -> Result<Tokenizer> {
    let err = |m: &str| ModelError::file(path, m);
    let kind = meta_str(md, "tokenizer.ggml.model").unwrap_or_default();
    if kind != "gpt2" {
        return Err(err(&format!(
            "tokenizer type `{kind}` needs a tokenizer.json beside the file"
        )));
    }
    let strings = |key: &str| -> Result<Vec<String>> {
        md.get(key)
            .ok_or_else(|| err(&format!("{key} is missing")))?
            .to_vec()
            .map_err(|e| err(&e.to_string()))?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| err(&e.to_string())))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| err(&format!("bad merge `{m}`")))
        })
        .collect::<Result<Vec<_>>>()?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| err(&e.to_string()))?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| err(&e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::new(false, true, true)));
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| SPECIAL_TOKEN_TYPES.contains(t))
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    tok.add_special_tokens(special)
        .map_err(|e| err(&e.to_string()))?;
    Ok(tok)
}

/// Checks that every tensor's size can be computed and that its bytes lie inside the file,
/// before candle reads them: candle multiplies the dimensions unchecked (found by fuzzing:
/// an overflow panics in debug builds and wraps into a wrong read in release ones).
fn check_tensor_infos(content: &gguf_file::Content, file_len: u64, path: &Path) -> Result<()> {
    for (name, info) in &content.tensor_infos {
        let (block, size) = (info.ggml_dtype.block_size(), info.ggml_dtype.type_size());
        let end = info
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|n| block > 0 && n % block == 0)
            .and_then(|n| (n / block).checked_mul(size))
            .and_then(|bytes| {
                content
                    .tensor_data_offset
                    .checked_add(info.offset)?
                    .checked_add(u64::try_from(bytes).ok()?)
            });
        if end.is_none_or(|e| e > file_len) {
            return Err(ModelError::file(
                path,
                format!(
                    "tensor `{name}` ({:?}, shape {:?}) does not fit in the file",
                    info.ggml_dtype,
                    info.shape.dims()
                ),
            ));
        }
    }
    Ok(())
}

/// Largest attention head accepted (real models use 64 to 256).
const MAX_HEAD_DIM: u32 = 512;
/// Largest head count accepted.
const MAX_HEADS: u32 = 1024;

/// Checks the `llama.*` shape keys before candle builds the model from them: candle sizes
/// its RoPE tables by `llama.rope.dimension_count` and its layer list by
/// `llama.block_count` without a bound (found by fuzzing: one flipped byte in either made
/// loading allocate gigabytes or abort).
fn check_hyperparameters(content: &gguf_file::Content, path: &Path) -> Result<()> {
    let md = &content.metadata;
    let get = |k: &str| {
        meta_u32(md, k).ok_or_else(|| {
            ModelError::file(path, format!("metadata `{k}` is missing or not an integer"))
        })
    };
    let heads = get("llama.attention.head_count")?;
    let kv_heads = get("llama.attention.head_count_kv")?;
    let embedding = get("llama.embedding_length")?;
    let rope = get("llama.rope.dimension_count")?;
    let blocks = get("llama.block_count")?;
    let bad = |why: String| Err(ModelError::file(path, why));
    if heads == 0 || heads > MAX_HEADS || kv_heads == 0 || heads % kv_heads != 0 {
        return bad(format!(
            "{heads} attention heads with {kv_heads} key/value heads"
        ));
    }
    if embedding % heads != 0 || embedding / heads > MAX_HEAD_DIM {
        return bad(format!("embedding length {embedding} over {heads} heads"));
    }
    let head_dim = embedding / heads;
    if rope == 0 || rope % 2 != 0 || rope > head_dim {
        return bad(format!("RoPE dimension {rope} for heads of {head_dim}"));
    }
    // candle reserves room for every block up front (found by fuzzing: a huge count
    // aborted on the allocation): each block must have its tensors in the file.
    let last = format!("blk.{}.attn_norm.weight", blocks.saturating_sub(1));
    if blocks == 0 || !content.tensor_infos.contains_key(&last) {
        return bad(format!("{blocks} blocks, but no tensor `{last}`"));
    }
    Ok(())
}

impl GgufModel {
    /// Loads `path` (and `tokenizer.json` beside it, if present).
    pub fn load(path: &Path) -> Result<GgufModel> {
        let mut f = std::fs::File::open(path).map_err(|e| ModelError::file(path, e))?;
        let content = gguf_file::Content::read(&mut f).map_err(|e| ModelError::file(path, e))?;
        let md = content.metadata.clone();
        let arch = meta_str(&md, "general.architecture").unwrap_or_default();
        if arch != "llama" {
            return Err(ModelError::file(
                path,
                format!("architecture `{arch}` is not `llama`"),
            ));
        }
        let beside = path.with_file_name("tokenizer.json");
        let tokenizer = if beside.is_file() {
            super::tokenizer::load_tokenizer_file(&beside)?
        } else {
            tokenizer_from_metadata(&md, path)?
        };
        let token = |key: &str| meta_u32(&md, key).and_then(|id| tokenizer.id_to_token(id));
        let eos = token("tokenizer.ggml.eos_token_id").unwrap_or_default();
        let bos = token("tokenizer.ggml.bos_token_id").unwrap_or_default();
        let mut stop: Vec<u32> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
            .iter()
            .filter_map(|k| meta_u32(&md, k))
            .collect();
        stop.dedup();
        let context = meta_u32(&md, "llama.context_length").unwrap_or(2048) as usize;
        let name = meta_str(&md, "general.name").unwrap_or_else(|| "gguf model".into());
        let template = meta_str(&md, "tokenizer.chat_template");
        let file_len = f.metadata().map_err(|e| ModelError::file(path, e))?.len();
        check_tensor_infos(&content, file_len, path)?;
        check_hyperparameters(&content, path)?;
        let weights = ModelWeights::from_gguf(content, &mut f, &Device::Cpu)
            .map_err(|e| ModelError::file(path, e))?;
        Ok(GgufModel {
            path: path.to_path_buf(),
            weights,
            tokenizer,
            template,
            bos,
            eos,
            stop,
            context,
            name,
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// The prompt for answering `messages`, rendered with the file's chat template (a
    /// plain `role: content` layout when it has none).
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = match &self.template {
            Some(t) => {
                let mut env = minijinja::Environment::new();
                env.add_function(
                    "raise_exception",
                    |msg: String| -> std::result::Result<String, minijinja::Error> {
                        Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            msg,
                        ))
                    },
                );
                env.add_template("chat", t)
                    .map_err(|e| ModelError::Tokenizer(format!("chat template: {e}")))?;
                let tmpl = env
                    .get_template("chat")
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
                tmpl.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => self.bos.clone(),
                    eos_token => self.eos.clone(),
                })
                .map_err(|e| ModelError::Tokenizer(format!("chat template: {e}")))?
            }
            None => {
                let mut s: String = messages
                    .iter()
                    .map(|m| format!("{:?}: {}\n", m.role, m.content))
                    .collect();
                s.push_str("Assistant:");
                s
            }
        };
        self.encode(&text)
    }

    /// Continues `prompt` (see [`super::generate::generate_with`]), stopping at the
    /// file's end-of-sequence tokens.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &super::generate::SamplingParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<super::generate::Generation> {
        let mut dec = GgufDecoder {
            weights: &mut self.weights,
            context: self.context,
            pos: 0,
        };
        let tokenizer = &self.tokenizer;
        let decode = |ids: &[u32]| {
            tokenizer
                .decode(ids, true)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))
        };
        super::generate::generate_with(&mut dec, &decode, prompt, params, &self.stop, None, on_text)
    }
}

/// The weights of a [`GgufModel`] as a [`Decoder`] (its first call starts a new sequence).
struct GgufDecoder<'a> {
    weights: &'a mut ModelWeights,
    context: usize,
    pos: usize,
}

impl Decoder for GgufDecoder<'_> {
    fn context(&self) -> usize {
        self.context
    }
    fn next_logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let x = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?; // [1, T]

        // quantized_llama restarts its cache when the position is 0.
        let logits = self.weights.forward(&x, self.pos)?; // [1, V]
        self.pos += ids.len();
        Ok(logits
            .squeeze(0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?)
    }
}
