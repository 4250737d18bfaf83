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
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.ids, native.ids);
    assert!(rt.ping("inference").await.unwrap().note.contains("gguf"));
    rt.shutdown().await;
}
