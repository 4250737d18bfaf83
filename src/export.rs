//! Export of THAU for llama.cpp and Ollama: [`export_gguf`] writes a GGUF file with the
//! `llama` architecture, its metadata keys and tensor names, the BPE tokenizer and the
//! chat template; [`modelfile`] writes the Ollama Modelfile that runs it.
//!
//! THAU trains with consecutive-pair RoPE and GGUF tensor names, which is llama.cpp's
//! `llama` layout, so the weights are copied without permutation. K-quants need the last
//! dimension divisible by 256: tensors where it is not (d_model 384 at age 0) fall back
//! to q4_0 and the report names them.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Tensor;
use serde::Serialize;

use crate::model::checkpoint::Checkpoint;
use crate::model::tokenizer::{ThauTokenizer, TOOL_CLOSE, TOOL_OPEN};
use crate::model::transformer::{is_norm, weight_shapes};
use crate::model::{ModelError, Result};

/// The `tokenizer.ggml.pre` value: THAU's byte-level pre-tokenizer splits with GPT-2's
/// regular expression.
pub const GGUF_PRE_TOKENIZER: &str = "gpt-2";
/// Jinja chat template embedded as `tokenizer.chat_template` (the format of
/// [`ThauTokenizer::encode_chat`]: a turn's text after one space).
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|' + message['role'] + '|> ' + message['content'] + '<|eot|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";
/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
/// K-quant block width.
const K_BLOCK: usize = 256;

/// Weight format of the exported file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportType {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4K,
}

impl ExportType {
    fn ggml(self) -> GgmlDType {
        match self {
            ExportType::F32 => GgmlDType::F32,
            ExportType::F16 => GgmlDType::F16,
            ExportType::Q8_0 => GgmlDType::Q8_0,
            ExportType::Q4_0 => GgmlDType::Q4_0,
            ExportType::Q4K => GgmlDType::Q4K,
        }
    }
}

/// What [`export_gguf`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub weight_type: ExportType,
    pub tensors: usize,
    /// Tensors written as q4_0 because their last dimension is not a multiple of 256.
    pub fallbacks: Vec<String>,
    pub metadata_keys: Vec<String>,
}

/// Token strings by id, their GGUF types, and the merges ("a b").
fn vocabulary(tok: &ThauTokenizer) -> Result<(Vec<String>, Vec<i32>, Vec<String>)> {
    let vocab = tok.inner().get_vocab(true);
    let n = vocab.values().max().map_or(0, |&m| m as usize + 1);
    let mut tokens = vec![String::new(); n];
    for (t, &id) in &vocab {
        tokens[id as usize] = t.clone();
    }
    if let Some(hole) = tokens.iter().position(String::is_empty) {
        return Err(ModelError::Tokenizer(format!(
            "token id {hole} has no string"
        )));
    }
    let special: Vec<u32> = crate::model::tokenizer::SPECIAL_TOKENS
        .iter()
        .filter_map(|s| tok.inner().token_to_id(s))
        .collect();
    let types = (0..n as u32)
        .map(|id| {
            let text = &tokens[id as usize];
            if text == TOOL_OPEN || text == TOOL_CLOSE {
                // Rendered as text by llama.cpp, so tool calls survive generation.
                TOKEN_USER_DEFINED
            } else if special.contains(&id) {
                TOKEN_CONTROL
            } else {
                TOKEN_NORMAL
            }
        })
        .collect();
    let json: serde_json::Value =
        serde_json::from_str(&tok.to_json()?).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let merges = json["model"]["merges"]
        .as_array()
        .ok_or_else(|| ModelError::Tokenizer("tokenizer has no BPE merges".into()))?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Array(pair) => Ok(pair
                .iter()
                .filter_map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" ")),
            other => Err(ModelError::Tokenizer(format!("unexpected merge {other}"))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((tokens, types, merges))
}

/// Writes `ck` as a GGUF file at `out` (atomically: temp file, fsync, rename).
pub fn export_gguf(ck: &Checkpoint, weight_type: ExportType, out: &Path) -> Result<ExportReport> {
    use gguf_file::Value as V;
    let c = &ck.config;
    let (tokens, types, merges) = vocabulary(&ck.tokenizer)?;
    if tokens.len() != c.vocab_size {
        return Err(ModelError::Config(format!(
            "tokenizer has {} tokens, the model {}",
            tokens.len(),
            c.vocab_size
        )));
    }
    let s = ck.tokenizer.special;
    let u32v = |x: usize| V::U32(x as u32);
    let metadata: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String("llama".into())),
        (
            "general.name".into(),
            V::String(format!("THAU age {}", c.age)),
        ),
        ("llama.context_length".into(), u32v(c.max_seq_len)),
        ("llama.embedding_length".into(), u32v(c.d_model)),
        ("llama.block_count".into(), u32v(c.n_layers)),
        ("llama.feed_forward_length".into(), u32v(c.d_ff)),
        ("llama.rope.dimension_count".into(), u32v(c.head_dim)),
        ("llama.rope.freq_base".into(), V::F32(c.rope_theta as f32)),
        ("llama.attention.head_count".into(), u32v(c.n_heads)),
        ("llama.attention.head_count_kv".into(), u32v(c.n_heads)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            V::F32(c.rms_eps as f32),
        ),
        ("llama.vocab_size".into(), u32v(c.vocab_size)),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            V::String(GGUF_PRE_TOKENIZER.into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            V::Array(tokens.into_iter().map(V::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            V::Array(types.into_iter().map(V::I32).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            V::Array(merges.into_iter().map(V::String).collect()),
        ),
        // THAU has no beginning-of-text token: the end-of-turn token stands in for it.
        ("tokenizer.ggml.bos_token_id".into(), V::U32(s.eot)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(s.eot)),
        ("tokenizer.ggml.eot_token_id".into(), V::U32(s.eot)),
        ("tokenizer.ggml.padding_token_id".into(), V::U32(s.pad)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            V::String(CHAT_TEMPLATE.into()),
        ),
    ];
    let mut fallbacks = Vec::new();
    let mut qtensors: Vec<(String, QTensor)> = Vec::new();
    // llama.cpp has no copy head: the file holds the LM head's model alone.
    for (name, _) in weight_shapes(c) {
        if crate::model::copy::is_copy_weight(&name) {
            continue;
        }
        let t: &Tensor = ck
            .weights
            .get(&name)
            .ok_or_else(|| ModelError::Config(format!("weight `{name}` is missing")))?;
        let t = t.to_dtype(candle_core::DType::F32)?;
        let mut dtype = if is_norm(&name) {
            GgmlDType::F32
        } else {
            weight_type.ggml()
        };
        if dtype == GgmlDType::Q4K && t.dims().last().is_some_and(|&d| d % K_BLOCK != 0) {
            dtype = GgmlDType::Q4_0;
            fallbacks.push(name.clone());
        }
        qtensors.push((name, QTensor::quantize(&t, dtype)?));
    }
    let tmp = out.with_extension(format!("gguf.tmp-{}", uuid::Uuid::new_v4().simple()));
    let write = || -> Result<()> {
        let mut f = std::fs::File::create(&tmp).map_err(|e| ModelError::file(&tmp, e))?;
        let md: Vec<(&str, &V)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut f, &md, &ts)?;
        f.flush()
            .and_then(|_| f.sync_all())
            .map_err(|e| ModelError::file(&tmp, e))?;
        std::fs::rename(&tmp, out).map_err(|e| ModelError::file(out, e))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(ExportReport {
        path: out.to_path_buf(),
        bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        weight_type,
        tensors: qtensors.len(),
        fallbacks,
        metadata_keys: metadata.into_iter().map(|(k, _)| k).collect(),
    })
}

/// The system prompt of the Modelfile: who THAU is and how it calls tools.
pub const SYSTEM_PROMPT: &str = "You are THAU, a small language model that learns on its own. \
Answer in the language of the question. To create an image, write exactly \
<TOOL:generate_image>{\"prompt\": \"a description\"}</TOOL> and nothing else in that turn.";

/// The chat template in Ollama's (Go template) syntax: the same turns as
/// [`CHAT_TEMPLATE`].
pub const OLLAMA_TEMPLATE: &str = "{{- if .System }}<|system|> {{ .System }}<|eot|>{{ end }}\
{{- range .Messages }}<|{{ .Role }}|> {{ .Content }}<|eot|>{{ end }}<|assistant|>";

/// An Ollama Modelfile for the GGUF file `gguf` (a path relative to the Modelfile).
pub fn modelfile(gguf: &str) -> Result<String> {
    if Path::new(gguf).is_absolute() || gguf.contains("..") {
        return Err(ModelError::Config(format!(
            "`{gguf}`: the Modelfile needs a relative path without `..`"
        )));
    }
    Ok(format!(
        "# Ollama Modelfile for THAU. Create the model with: ollama create thau -f Modelfile\n\
         FROM ./{gguf}\n\
         TEMPLATE \"\"\"{OLLAMA_TEMPLATE}\"\"\"\n\
         PARAMETER stop \"<|eot|>\"\n\
         PARAMETER stop \"<|user|>\"\n\
         PARAMETER temperature 0.8\n\
         SYSTEM \"\"\"{SYSTEM_PROMPT}\"\"\"\n"
    ))
}

/// How closely a GGUF file reproduces the native model.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Positions compared (every position of every probe text).
    pub positions: usize,
    /// Share of positions where both pick the same greedy next token.
    pub greedy_agreement: f64,
    /// Largest |logit difference| over all positions.
    pub max_abs_logit_diff: f32,
}

/// Texts whose every position is compared by [`verify`].
pub const VERIFY_TEXTS: [&str; 4] = [
    "¿Qué es el ciclo del agua? El agua se evapora y vuelve a caer como lluvia.",
    "The sun rises in the east and sets in the west.",
    "fn main() { println!(\"hola\"); }",
    "Los planetas giran alrededor del Sol.",
];

/// Loads `gguf` with candle-transformers' `quantized_llama` (llama.cpp's `llama`
/// layout), feeds each of `texts` one token at a time, and compares the logits with the
/// native model's at every position.
pub fn verify(ck: &Checkpoint, gguf: &Path, texts: &[&str]) -> Result<VerifyReport> {
    use candle_core::{Device, D};
    use candle_transformers::models::quantized_llama::ModelWeights;
    let dev = Device::Cpu;
    // Compared with what the file holds: the model without its copy head.
    let lm_only = ck.config.without_copy_head();
    let native = crate::model::transformer::from_tensors(ck.weights.clone(), &lm_only, &dev)?;
    let (mut positions, mut same, mut max_diff) = (0usize, 0usize, 0f32);
    for text in texts {
        let mut ids = ck.tokenizer.encode(text)?;
        ids.truncate(ck.config.max_seq_len);
        if ids.is_empty() {
            continue;
        }
        // A fresh model per text: its KV cache starts empty.
        let mut f = std::fs::File::open(gguf).map_err(|e| ModelError::file(gguf, e))?;
        let content = gguf_file::Content::read(&mut f).map_err(|e| ModelError::file(gguf, e))?;
        let mut model = ModelWeights::from_gguf(content, &mut f, &dev)
            .map_err(|e| ModelError::file(gguf, e))?;
        let x = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
        let want = native.forward(&x, None)?.squeeze(0)?; // [T, V]
        let rows = ids
            .iter()
            .enumerate()
            .map(|(pos, &id)| {
                Ok(model
                    .forward(&Tensor::new(&[id], &dev)?.unsqueeze(0)?, pos)?
                    .squeeze(0)?)
            })
            .collect::<Result<Vec<Tensor>>>()?;
        let got = Tensor::stack(&rows, 0)?; // [T, V]
        let d: f32 = (&got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar()?;
        max_diff = max_diff.max(d);
        let a: Vec<u32> = got.argmax(D::Minus1)?.to_vec1()?;
        let b: Vec<u32> = want.argmax(D::Minus1)?.to_vec1()?;
        same += a.iter().zip(&b).filter(|(x, y)| x == y).count();
        positions += a.len();
    }
    Ok(VerifyReport {
        positions,
        greedy_agreement: same as f64 / positions.max(1) as f64,
        max_abs_logit_diff: max_diff,
    })
}

/// Greedy tokens generated after each reference text by [`reference`].
pub const REFERENCE_NEW_TOKENS: usize = 16;

/// The native model's logits at every position of each text (`ids`: its tokens, cut to
/// fit the context; `text_ids`: all of them), and its greedy continuation: what
/// `bench/llamacpp_compare.py` compares llama.cpp against, and `scripts/hf_check.py`
/// `transformers`.
pub fn reference(ck: &Checkpoint, texts: &[&str]) -> Result<serde_json::Value> {
    use crate::model::generate::{generate, SamplingParams};
    let dev = candle_core::Device::Cpu;
    let lm_only = ck.config.without_copy_head();
    let model = crate::model::transformer::from_tensors(ck.weights.clone(), &lm_only, &dev)?;
    let greedy = SamplingParams {
        max_new_tokens: REFERENCE_NEW_TOKENS,
        temperature: 0.0,
        repetition_penalty: 1.0,
        no_repeat_ngram: 0,
        ..Default::default()
    };
    let mut out = Vec::new();
    for text in texts {
        let text_ids = ck.tokenizer.encode(text)?;
        let mut ids = text_ids.clone();
        ids.truncate(ck.config.max_seq_len - REFERENCE_NEW_TOKENS);
        let x = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
        let logits: Vec<Vec<f32>> = model.forward(&x, None)?.squeeze(0)?.to_vec2()?;
        let g = generate(&model, &ck.tokenizer, &ids, &greedy, &[], None, &mut |_| {
            true
        })?;
        out.push(
            serde_json::json!({ "text": text, "text_ids": text_ids, "ids": ids, "logits": logits, "greedy": g.ids }),
        );
    }
    Ok(serde_json::json!({ "new_tokens": REFERENCE_NEW_TOKENS, "texts": out }))
}

/// The checkpoint directory `thau export gguf` exports: `checkpoint` when given, else the
/// newest of age `age` when given, else the newest of all. No such checkpoint is the
/// user's to create first (`thau train`): an [`crate::ThauError::Invalid`].
pub fn checkpoint_to_export(
    home: &crate::home::Home,
    checkpoint: Option<PathBuf>,
    age: Option<u32>,
) -> crate::Result<PathBuf> {
    use crate::model::checkpoint as ckpt;
    use crate::ThauError;
    Ok(match (checkpoint, age) {
        (Some(d), _) => d,
        (None, Some(a)) => ckpt::latest(&home.age_checkpoint(a))?
            .ok_or_else(|| ThauError::Invalid(format!("no checkpoint of age {a}")))?,
        (None, None) => ckpt::newest(&home.checkpoints())?.ok_or_else(|| {
            ThauError::Invalid("no checkpoint yet: run `thau train` first".into())
        })?,
    })
}
