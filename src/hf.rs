//! The Hugging Face format, both ways: [`export_hf`] writes a `LlamaForCausalLM`
//! checkpoint (`config.json`, `model.safetensors` with Hugging Face tensor names,
//! `tokenizer.json`, `tokenizer_config.json` with the chat template,
//! `generation_config.json`) that `transformers` loads and that distributed trainers
//! (FSDP, DeepSpeed, torchtitan) continue; [`import_hf`] reads such a checkpoint of THAU's
//! shapes back into a checkpoint at the matching age, which `thau learn`, `serve` and
//! `export gguf` continue from.
//!
//! THAU applies RoPE to consecutive pairs `(x[2i], x[2i+1])` (GGUF's layout); Hugging
//! Face's Llama rotates halves (`x[i]`, `x[i + head_dim/2]`). The two agree once the rows
//! of each head of the query and key projections are permuted: Hugging Face's row `j` is
//! THAU's row `2j`, its row `head_dim/2 + j` is THAU's `2j + 1` ([`to_halves`]; llama.cpp's
//! `convert_hf_to_gguf.py` does the inverse, [`to_pairs`]). Everything else is copied.
//! The copy head has no place in `LlamaForCausalLM`: the export holds the language model
//! without it, as the GGUF export does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use serde_json::{json, Value};

use crate::export::CHAT_TEMPLATE;
use crate::model::checkpoint::{self, Checkpoint};
use crate::model::config::{ModelConfig, AGES};
use crate::model::tokenizer::{ThauTokenizer, EOT, PAD, TOOL_CLOSE, TOOL_OPEN, USER_ID};
use crate::model::{ModelError, Result};

/// The files of an export, as `transformers` names them.
pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const TOKENIZER: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const GENERATION_CONFIG: &str = "generation_config.json";

/// THAU's weight names and Hugging Face's, and whether the rows are RoPE-permuted.
fn names(n_layers: usize) -> Vec<(String, String, bool)> {
    let mut out = vec![(
        "token_embd.weight".to_string(),
        "model.embed_tokens.weight".to_string(),
        false,
    )];
    for i in 0..n_layers {
        for (thau, hf, rope) in [
            ("attn_norm", "input_layernorm", false),
            ("attn_q", "self_attn.q_proj", true),
            ("attn_k", "self_attn.k_proj", true),
            ("attn_v", "self_attn.v_proj", false),
            ("attn_output", "self_attn.o_proj", false),
            ("ffn_norm", "post_attention_layernorm", false),
            ("ffn_gate", "mlp.gate_proj", false),
            ("ffn_up", "mlp.up_proj", false),
            ("ffn_down", "mlp.down_proj", false),
        ] {
            out.push((
                format!("blk.{i}.{thau}.weight"),
                format!("model.layers.{i}.{hf}.weight"),
                rope,
            ));
        }
    }
    out.push((
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        false,
    ));
    out.push(("output.weight".into(), "lm_head.weight".into(), false));
    out
}

/// THAU's query/key rows (consecutive RoPE pairs) in Hugging Face's rotate-half order.
pub fn to_halves(w: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / n_heads / 2;
    // [H·hd, d] → [H, half, 2, d] → [H, 2, half, d] → [H·hd, d]
    Ok(w.reshape((n_heads, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Hugging Face's query/key rows (rotate-half) in THAU's consecutive-pair order.
pub fn to_pairs(w: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / n_heads / 2;
    // [H·hd, d] → [H, 2, half, d] → [H, half, 2, d] → [H·hd, d]
    Ok(w.reshape((n_heads, 2, half, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// The `config.json` of a `LlamaForCausalLM` with `c`'s shape. Both spellings of the RoPE
/// base and the dtype are written: `transformers` 4 reads `rope_theta` and `torch_dtype`,
/// 5 reads `rope_parameters` and `dtype`.
fn hf_config(c: &ModelConfig, step: u64) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": c.d_ff,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_seq_len,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_theta,
        "rope_parameters": { "rope_type": "default", "rope_theta": c.rope_theta },
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "tie_word_embeddings": false,
        "initializer_range": 0.02,
        "use_cache": true,
        // No missing id may default to 2, THAU's `<|system|>`.
        "bos_token_id": crate::model::tokenizer::EOT_ID,
        "eos_token_id": crate::model::tokenizer::EOT_ID,
        "pad_token_id": crate::model::tokenizer::PAD_ID,
        "dtype": "float32",
        "torch_dtype": "float32",
        // Not read by transformers: where the model came from, for `thau import hf`.
        "thau_age": c.age,
        "thau_step": step,
    })
}

/// THAU's `tokenizer.json` with the call markers marked as ordinary added tokens, so that
/// `decode(…, skip_special_tokens=True)` keeps the tool calls an answer holds (the ids
/// stay the same).
fn hf_tokenizer(tok: &ThauTokenizer) -> Result<String> {
    let mut v: Value =
        serde_json::from_str(&tok.to_json()?).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    if let Some(added) = v.get_mut("added_tokens").and_then(Value::as_array_mut) {
        for t in added {
            if [TOOL_OPEN, TOOL_CLOSE].contains(&t["content"].as_str().unwrap_or("")) {
                t["special"] = json!(false);
            }
        }
    }
    serde_json::to_string(&v).map_err(|e| ModelError::Tokenizer(e.to_string()))
}

/// What [`export_hf`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct HfExportReport {
    pub checkpoint: PathBuf,
    pub output: PathBuf,
    pub age: u32,
    pub parameters: u64,
    pub tensors: usize,
    /// The checkpoint's copy head, left out (Hugging Face's Llama has none).
    pub copy_head_dropped: bool,
}

/// Writes `ck` as a Hugging Face `LlamaForCausalLM` checkpoint in `out` (created if
/// missing; each file written whole, synced, then renamed into place).
pub fn export_hf(ck: &Checkpoint, out: &Path) -> Result<HfExportReport> {
    let lm = ck.config.without_copy_head();
    let mut tensors = HashMap::new();
    for (thau, hf, rope) in names(lm.n_layers) {
        let w = ck
            .weights
            .get(&thau)
            .ok_or_else(|| ModelError::checkpoint(&ck.dir, format!("no tensor `{thau}`")))?
            .to_dtype(DType::F32)?;
        let w = if rope { to_halves(&w, lm.n_heads)? } else { w };
        tensors.insert(hf, w);
    }
    std::fs::create_dir_all(out).map_err(|e| ModelError::file(out, e))?;
    let write = |name: &str, bytes: &[u8]| {
        let p = out.join(name);
        crate::fsutil::atomic_write(&p, bytes).map_err(|e| ModelError::file(&p, e))
    };
    let step = ck
        .dir
        .file_name()
        .and_then(|n| n.to_str()?.strip_prefix("step_")?.parse().ok())
        .unwrap_or(0);
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    // Weights first, through a temporary file: `transformers` reads the safetensors
    // metadata's format.
    let tmp = out.join(format!(".{WEIGHTS}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let saved = safetensors::serialize_to_file(
        tensors.iter().map(|(k, t)| (k.as_str(), View(t))),
        Some(meta),
        &tmp,
    );
    if let Err(e) = saved.map_err(|e| e.to_string()).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, out.join(WEIGHTS)))
            .map_err(|e| e.to_string())
    }) {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::file(out.join(WEIGHTS), e));
    }
    write(CONFIG, &pretty(&hf_config(&lm, step)))?;
    write(TOKENIZER, hf_tokenizer(&ck.tokenizer)?.as_bytes())?;
    write(
        TOKENIZER_CONFIG,
        &pretty(&json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": EOT, "eos_token": EOT, "pad_token": PAD,
            "add_bos_token": false, "add_eos_token": false, "add_prefix_space": false,
            "clean_up_tokenization_spaces": false,
            "model_max_length": lm.max_seq_len,
            "chat_template": CHAT_TEMPLATE,
        })),
    )?;
    write(
        GENERATION_CONFIG,
        // An answer ends at `<|eot|>`, or where a model starts the user's next turn.
        &pretty(&json!({
            "bos_token_id": crate::model::tokenizer::EOT_ID,
            "eos_token_id": [crate::model::tokenizer::EOT_ID, USER_ID],
            "pad_token_id": crate::model::tokenizer::PAD_ID,
        })),
    )?;
    Ok(HfExportReport {
        checkpoint: ck.dir.clone(),
        output: out.to_path_buf(),
        age: lm.age,
        parameters: lm.param_count(),
        tensors: tensors.len(),
        copy_head_dropped: ck.config.copy_head,
    })
}

/// A candle tensor as a safetensors view (f32, little-endian).
struct View<'a>(&'a Tensor);

impl safetensors::View for View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.0.dims()
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let v: Vec<f32> = self
            .0
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .unwrap_or_default();
        std::borrow::Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.elem_count() * 4
    }
}

/// What [`import_hf`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct HfImportReport {
    pub source: PathBuf,
    pub checkpoint: PathBuf,
    pub age: u32,
    pub parameters: u64,
}

/// A field of an export's `config.json`, or an error naming it.
fn field<'a>(c: &'a Value, path: &Path, key: &str) -> Result<&'a Value> {
    c.get(key)
        .filter(|v| !v.is_null())
        .ok_or_else(|| ModelError::file(path, format!("`{key}` is missing")))
}

fn count(c: &Value, path: &Path, key: &str) -> Result<usize> {
    field(c, path, key)?
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| ModelError::file(path, format!("`{key}` is not a count")))
}

/// The THAU model config a Hugging Face `config.json` describes, if it has THAU's shape:
/// a Llama with every head a key/value head, SiLU, no biases, an untied head, and the
/// width, depth and feed-forward size of one of THAU's ages.
fn thau_config(c: &Value, path: &Path) -> Result<ModelConfig> {
    let bad = |m: String| ModelError::file(path, m);
    if c.get("model_type").and_then(Value::as_str) != Some("llama") {
        return Err(bad("`model_type` is not \"llama\"".into()));
    }
    let d_model = count(c, path, "hidden_size")?;
    let n_layers = count(c, path, "num_hidden_layers")?;
    let d_ff = count(c, path, "intermediate_size")?;
    let n_heads = count(c, path, "num_attention_heads")?;
    let kv = c
        .get("num_key_value_heads")
        .and_then(Value::as_u64)
        .map_or(n_heads, |v| v as usize);
    if kv != n_heads {
        return Err(bad(format!(
            "`num_key_value_heads` is {kv}: THAU gives every one of its {n_heads} heads its own keys and values"
        )));
    }
    for (key, want) in [
        ("tie_word_embeddings", json!(false)),
        ("attention_bias", json!(false)),
        ("mlp_bias", json!(false)),
    ] {
        if c.get(key).is_some_and(|v| !v.is_null() && *v != want) {
            return Err(bad(format!("`{key}` must be {want} for THAU's layers")));
        }
    }
    if c.get("hidden_act").is_some_and(|v| v != "silu") {
        return Err(bad("`hidden_act` must be \"silu\"".into()));
    }
    let head_dim = c
        .get("head_dim")
        .and_then(Value::as_u64)
        .map_or(d_model / n_heads.max(1), |v| v as usize);
    let rope_theta = c
        .pointer("/rope_parameters/rope_theta")
        .or_else(|| c.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(crate::model::config::ROPE_THETA);
    let age = AGES
        .iter()
        .find(|a| a.d_model == d_model && a.n_layers == n_layers && a.d_ff == d_ff)
        .map(|a| a.age)
        .or_else(|| {
            // A shape of no design age (the tests' tiny models) keeps the age it was
            // exported with.
            c.get("thau_age").and_then(Value::as_u64).map(|a| a as u32)
        })
        .ok_or_else(|| {
            bad(format!(
                "hidden_size {d_model}, num_hidden_layers {n_layers}, intermediate_size {d_ff} are the shape of no THAU age ({})",
                AGES.map(|a| format!("age {}: {}/{}/{}", a.age, a.d_model, a.n_layers, a.d_ff)).join(", ")
            ))
        })?;
    let cfg = ModelConfig {
        age,
        vocab_size: count(c, path, "vocab_size")?,
        d_model,
        n_layers,
        n_heads,
        head_dim,
        d_ff,
        max_seq_len: count(c, path, "max_position_embeddings")?,
        rope_theta,
        rms_eps: field(c, path, "rms_norm_eps")?
            .as_f64()
            .ok_or_else(|| bad("`rms_norm_eps` is not a number".into()))?,
        copy_head: false,
    };
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// Reads the Hugging Face checkpoint in `dir` (of THAU's shapes, with THAU's vocabulary)
/// into a checkpoint of the matching age under `checkpoints/`, after every file and field
/// is checked: nothing is written unless all of it is usable.
pub fn import_hf(dir: &Path, home: &crate::home::Home) -> Result<HfImportReport> {
    let cfg_path = dir.join(CONFIG);
    let bytes = std::fs::read(&cfg_path).map_err(|e| ModelError::file(&cfg_path, e))?;
    let c: Value = serde_json::from_slice(&bytes).map_err(|e| ModelError::file(&cfg_path, e))?;
    let cfg = thau_config(&c, &cfg_path)?;
    let tok_path = dir.join(TOKENIZER);
    let tok = ThauTokenizer::load(&tok_path)?;
    if tok.vocab_size() > cfg.vocab_size {
        return Err(ModelError::file(
            &tok_path,
            format!(
                "{} tokens, but `vocab_size` in {CONFIG} is {}: another vocabulary",
                tok.vocab_size(),
                cfg.vocab_size
            ),
        ));
    }
    let w_path = dir.join(WEIGHTS);
    let mut hf = candle_core::safetensors::load(&w_path, &Device::Cpu)
        .map_err(|e| ModelError::file(&w_path, e))?;
    let want: HashMap<String, Vec<usize>> = crate::model::transformer::weight_shapes(&cfg)
        .into_iter()
        .collect();
    let mut weights = HashMap::new();
    for (thau, name, rope) in names(cfg.n_layers) {
        let w = hf
            .remove(&name)
            .ok_or_else(|| ModelError::file(&w_path, format!("no tensor `{name}`")))?;
        let shape = &want[&thau];
        if w.dims() != shape.as_slice() {
            return Err(ModelError::file(
                &w_path,
                format!(
                    "`{name}` has shape {:?}; {CONFIG} makes it {shape:?}",
                    w.dims()
                ),
            ));
        }
        let w = w.to_dtype(DType::F32)?;
        let w = if rope { to_pairs(&w, cfg.n_heads)? } else { w };
        weights.insert(thau, w);
    }
    if let Some(extra) = hf.keys().next() {
        return Err(ModelError::file(
            &w_path,
            format!("`{extra}` is not a weight of THAU's Llama"),
        ));
    }
    let age_dir = home.age_checkpoint(cfg.age);
    // After the newest step of that age, so that the import is the age's latest and no
    // pruning takes it.
    let newest = checkpoint::newest_step(&age_dir);
    let exported = c.get("thau_step").and_then(Value::as_u64).unwrap_or(0);
    let step = newest.map_or(exported, |n| n.max(exported) + 1);
    let saved = checkpoint::save(&age_dir, step, &cfg, &tok, &weights, None, None)?;
    Ok(HfImportReport {
        source: dir.to_path_buf(),
        checkpoint: saved,
        age: cfg.age,
        parameters: cfg.param_count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rope_row_permutation_gives_hugging_faces_halves_and_back() {
        // Two heads of four rows: THAU's rows (0, 1) and (2, 3) are pairs; Hugging Face
        // wants each head's first elements, then its second ones.
        let w = Tensor::arange(0f32, 8.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let h = to_halves(&w, 2).unwrap();
        let rows: Vec<f32> = h.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(rows, [0., 2., 1., 3., 4., 6., 5., 7.]);
        let back: Vec<f32> = to_pairs(&h, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(back, [0., 1., 2., 3., 4., 5., 6., 7.]);
    }

    #[test]
    fn a_config_of_another_shape_is_refused_naming_the_field() {
        let p = Path::new("x/config.json");
        let mut c = json!({"model_type": "llama", "hidden_size": 384, "num_hidden_layers": 6,
            "intermediate_size": 1536, "num_attention_heads": 6, "num_key_value_heads": 6,
            "vocab_size": 8192, "max_position_embeddings": 256, "rms_norm_eps": 1e-5});
        assert_eq!(thau_config(&c, p).unwrap().age, 0);
        for (key, v, says) in [
            ("num_key_value_heads", json!(2), "num_key_value_heads"),
            ("tie_word_embeddings", json!(true), "tie_word_embeddings"),
            ("hidden_size", json!(400), "shape of no THAU age"),
            ("model_type", json!("mistral"), "model_type"),
            ("rms_norm_eps", Value::Null, "rms_norm_eps` is missing"),
        ] {
            let old = c[key].clone();
            c[key] = v;
            let e = thau_config(&c, p).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("config.json"), "{e}");
            c[key] = old;
        }
    }
}
