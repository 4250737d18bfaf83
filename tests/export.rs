//! GGUF export round trip: the exported file loads in candle-transformers'
//! `quantized_llama` (llama.cpp's `llama` layout) and gives the native model's logits.

mod common;

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use thau::export::{export_gguf, modelfile, verify, ExportType};
use thau::model::checkpoint::Checkpoint;
use thau::model::train::Trainer;
use thau::testing::max_diff;

/// A tiny model trained briefly (so that its predictions are confident), as a checkpoint.
fn trained(dir: &Path) -> Checkpoint {
    let text = common::paragraphs(30, |i| {
        format!("El gato {i} duerme al sol. The cat {i} sleeps in the sun.")
    });
    let mut t = common::tiny(dir, &[("cats.txt", text)], 64, 32);
    t.opts.lr = 5e-3;
    t.opts.total_steps = 60;
    let mut trainer = Trainer::new(
        t.cfg.clone(),
        t.tok.clone(),
        &t.corpus,
        t.opts,
        &Device::Cpu,
    )
    .unwrap();
    for _ in 0..60 {
        trainer.step().unwrap();
    }
    Checkpoint {
        dir: dir.to_path_buf(),
        config: t.cfg,
        tokenizer: t.tok,
        weights: trainer.weights().unwrap(),
        optimizer: None,
        trainer: None,
    }
}

/// The file's metadata and tensor list (read once more), and the model loaded from it.
fn load(path: &Path) -> (gguf_file::Content, ModelWeights) {
    let mut f = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let model = ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    let content = gguf_file::Content::read(&mut std::fs::File::open(path).unwrap()).unwrap();
    (content, model)
}

#[test]
fn f32_export_matches_the_native_logits_and_q8_0_the_greedy_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained(dir.path());
    let prompts = [
        "El gato 3 duerme",
        "The cat 12 sleeps in",
        "El gato 27 duerme al sol. The",
        "The cat 5 sleeps in the sun. El gato 6",
        "El gato 19 duerme al sol.",
    ];

    let f32_path = dir.path().join("thau-f32.gguf");
    let r = export_gguf(&ck, ExportType::F32, &f32_path).unwrap();
    assert_eq!(r.tensors, 2 + 9 * ck.config.n_layers + 1);
    let (content, mut model) = load(&f32_path);
    assert_eq!(
        content.metadata["general.architecture"]
            .to_string()
            .unwrap(),
        "llama"
    );
    assert_eq!(
        content.metadata["tokenizer.ggml.tokens"]
            .to_vec()
            .unwrap()
            .len(),
        ck.config.vocab_size
    );
    assert!(content.tensor_infos.contains_key("blk.1.ffn_gate.weight"));
    // The whole prompt at once (quantized_llama returns the last position's logits).
    let ids = ck.tokenizer.encode(prompts[2]).unwrap();
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let last = model.forward(&x, 0).unwrap().squeeze(0).unwrap();
    let native =
        thau::model::transformer::from_tensors(ck.weights.clone(), &ck.config, &Device::Cpu)
            .unwrap();
    let native_last = native.forward_last(&x, None).unwrap().squeeze(0).unwrap();
    let d = max_diff(&last, &native_last);
    assert!(d < 1e-3, "f32 logits differ by {d}");
    // Every position, one token at a time.
    let v = verify(&ck, &f32_path, &prompts).unwrap();
    assert!(
        v.max_abs_logit_diff < 1e-3 && v.greedy_agreement == 1.0,
        "{v:?}"
    );

    let q8_path = dir.path().join("thau-q8_0.gguf");
    export_gguf(&ck, ExportType::Q8_0, &q8_path).unwrap();
    assert!(
        std::fs::metadata(&q8_path).unwrap().len()
            < std::fs::metadata(&f32_path).unwrap().len() / 2
    );
    let v = verify(&ck, &q8_path, &prompts).unwrap();
    assert!(
        v.positions >= 40 && v.greedy_agreement >= 0.99,
        "q8_0: {v:?}"
    );
}

#[test]
fn k_quants_fall_back_per_tensor_and_the_modelfile_is_relative() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained(dir.path());
    let path = dir.path().join("thau-q4k.gguf");
    let r = export_gguf(&ck, ExportType::Q4K, &path).unwrap();
    // d_model 32 and d_ff 64 are not multiples of 256: every matrix falls back to q4_0.
    assert_eq!(r.fallbacks.len(), 2 + 7 * ck.config.n_layers);
    load(&path);

    let m = modelfile("thau-q4k.gguf").unwrap();
    assert!(m.contains("FROM ./thau-q4k.gguf"));
    assert!(m.contains("PARAMETER stop \"<|eot|>\"") && m.contains("<TOOL:generate_image>"));
    assert!(m.contains("TEMPLATE") && m.contains("<|assistant|>"));
    assert!(modelfile("/abs/thau.gguf").is_err() && modelfile("../thau.gguf").is_err());
}

/// Skips a check whose independent tool is missing, saying so; under CI (`CI` set) the
/// tool must be there, since `.ci/run` installs it, so a missing one fails the test.
fn skip_unless_ci(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have {why} (.ci/run installs it)"
    );
    eprintln!("SKIPPED: {why} is not available");
}

/// The independent check: the PyPI `gguf` reader (bench/check_gguf.py). `.ci/run`
/// installs it; where Python or the package is missing the test says it was skipped, and
/// fails under CI.
#[test]
fn the_pypi_gguf_reader_finds_every_key_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained(dir.path());
    let path = dir.path().join("thau.gguf");
    export_gguf(&ck, ExportType::Q8_0, &path).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/check_gguf.py");
    let out = match std::process::Command::new("python3")
        .arg(&script)
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) => return skip_unless_ci(&format!("python3 ({e})")),
    };
    if out.status.code() == Some(3) {
        return skip_unless_ci("the PyPI gguf package (pip install gguf)");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check_gguf.py: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["tensors"], 2 + 9 * ck.config.n_layers + 1);
}

/// The Inference actor chats with an exported GGUF file: the chat template embedded in
/// the file gives THAU's own prompt tokens, and greedy answers match the native model's.
#[actix::test]
async fn the_inference_actor_chats_with_a_gguf_file() {
    use thau::actors::inference::{Generate, Prompt};
    use thau::model::generate::{generate, SamplingParams};
    use thau::model::gguf::GgufModel;
    use thau::model::tokenizer::{Message, Role};
    let dir = tempfile::tempdir().unwrap();
    let ck = trained(dir.path());
    let path = dir.path().join("thau.gguf");
    export_gguf(&ck, ExportType::F32, &path).unwrap();

    let msgs = vec![Message::new(Role::User, "El gato 4 duerme")];
    let mut g = GgufModel::load(&path).unwrap();
    let want_prompt = ck.tokenizer.chat_prompt(&msgs).unwrap();
    assert_eq!(
        g.chat_prompt(&msgs).unwrap(),
        want_prompt,
        "the embedded chat template renders THAU's format"
    );
    let greedy = SamplingParams {
        max_new_tokens: 10,
        temperature: 0.0,
        repetition_penalty: 1.0,
        ..Default::default()
    };
    let native_model =
        thau::model::transformer::from_tensors(ck.weights.clone(), &ck.config, &Device::Cpu)
            .unwrap();
    let native = generate(
        &native_model,
        &ck.tokenizer,
        &want_prompt,
        &greedy,
        &[ck.tokenizer.special.eot],
        None,
        &mut |_| true,
    )
    .unwrap();
    let from_file = g.generate(&want_prompt, &greedy, &mut |_| true).unwrap();
    assert_eq!(from_file.ids, native.ids);

    let home = thau::home::Home::new(dir.path().join("home"));
    home.init().unwrap();
    let mut config = thau::config::ThauConfig::default();
    config.model.gguf = path.display().to_string();
    let rt = thau::runtime::Runtime::start(home, config).unwrap();
    let inference = rt.addrs.inference.clone().unwrap();
    let reply = inference
        .send(Generate {
            prompt: Prompt::Chat(msgs),
            params: Some(greedy),
            stream: None,
            tools: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.ids, native.ids);
    assert!(rt.ping("inference").await.unwrap().note.contains("gguf"));
    rt.shutdown().await;
}

/// Python with `torch` and `transformers`: `$THAU_PYTHON`, else the virtual environment
/// `.ci/run` makes (`target/pyenv`), else `python3`.
fn hf_python() -> std::path::PathBuf {
    std::env::var_os("THAU_PYTHON")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
            venv.exists().then_some(venv)
        })
        .unwrap_or_else(|| "python3".into())
}

/// `thau export hf` writes what `transformers` loads as a `LlamaForCausalLM` giving THAU's
/// logits (scripts/hf_check.py; skipped without torch and transformers, failing under CI),
/// and `thau import hf` reads it back into the same weights and logits.
#[test]
fn the_hugging_face_export_loads_in_transformers_and_imports_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let hf = dir.path().join("hf");
    let reference = dir.path().join("reference.json");
    let out = common::thau(
        &home.root,
        &[
            "--json",
            "export",
            "hf",
            "--output",
            hf.to_str().unwrap(),
            "--reference",
            reference.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(hf.join(f).is_file(), "{f}");
    }
    // Back into a data directory of its own: every weight and logit as it was.
    let back = thau::home::Home::new(dir.path().join("back"));
    let out = common::thau(
        &back.root,
        &["--json", "import", "hf", hf.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let load = |h: &thau::home::Home| {
        let d = thau::model::checkpoint::newest(&h.checkpoints())
            .unwrap()
            .unwrap();
        thau::model::checkpoint::load(&d, &Device::Cpu, false).unwrap()
    };
    let (a, b) = (load(&home), load(&back));
    assert_eq!(a.config.without_copy_head(), b.config);
    for (name, w) in &b.weights {
        assert_eq!(max_diff(w, &a.weights[name]), 0.0, "{name}");
    }
    let ids = Tensor::new(
        a.tokenizer.encode("The red fox runs").unwrap().as_slice(),
        &Device::Cpu,
    )
    .unwrap()
    .unsqueeze(0)
    .unwrap();
    let logits = |ck: &Checkpoint| {
        thau::model::transformer::from_tensors(
            ck.weights.clone(),
            &ck.config.without_copy_head(),
            &Device::Cpu,
        )
        .unwrap()
        .forward(&ids, None)
        .unwrap()
    };
    assert_eq!(max_diff(&logits(&a), &logits(&b)), 0.0);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/hf_check.py");
    let out = match std::process::Command::new(hf_python())
        .arg(&script)
        .arg(&hf)
        .arg(&reference)
        .output()
    {
        Ok(o) => o,
        Err(e) => return skip_unless_ci(&format!("python ({e})")),
    };
    if out.status.code() == Some(3) {
        return skip_unless_ci("torch and transformers (pip install torch transformers)");
    }
    assert!(
        out.status.success(),
        "hf_check.py: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory that is not THAU's Llama is refused naming the file and the field, and
/// nothing is written.
#[test]
fn a_malformed_hugging_face_directory_is_refused_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let hf = dir.path().join("hf");
    let out = common::thau(
        &home.root,
        &["export", "hf", "--output", hf.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    let back = thau::home::Home::new(dir.path().join("back"));
    let refused = |broken: &Path, says: &[&str]| {
        let out = common::thau(&back.root, &["import", "hf", broken.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        for s in says {
            assert!(err.contains(s), "{s:?} not in: {err}");
        }
        assert!(
            thau::model::checkpoint::newest(&back.checkpoints())
                .unwrap()
                .is_none(),
            "{err}"
        );
    };
    let copy = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in std::fs::read_dir(&hf).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
        }
        d
    };
    let d = copy("no_tokenizer");
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    refused(&d, &["tokenizer.json"]);
    let d = copy("wide");
    let mut c = config.clone();
    c["hidden_size"] = serde_json::json!(64);
    c["head_dim"] = serde_json::json!(32);
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    refused(
        &d,
        &["model.safetensors", "model.embed_tokens.weight", "shape"],
    );
    let d = copy("grouped");
    let mut c = config.clone();
    c["num_key_value_heads"] = serde_json::json!(1);
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    refused(&d, &["config.json", "num_key_value_heads"]);
    // Another vocabulary: a tokenizer larger than the model's embeddings.
    let d = copy("vocab");
    let mut c = config.clone();
    c["vocab_size"] = serde_json::json!(100);
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    refused(&d, &["tokenizer.json", "another vocabulary"]);
}
