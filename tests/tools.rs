//! Tool calling through the actors: the ToolRouter parses model output, checks calls against
//! the manifests, runs them with the ImageTool and hands results back as tool messages; the
//! intent fallback reads users' words but never their `<TOOL:...>` text; the HTTP image
//! backend speaks the AUTOMATIC1111 API to a local server.

use base64::Engine;
use thau::actors::episodic_memory::ListEpisodes;
use thau::actors::image_tool::{GenerateImage, ImageStatsRequest};
use thau::actors::tool_router::{DetectIntent, HandleOutput, ScanOutput};
use thau::config::ThauConfig;
use thau::home::Home;
use thau::memory::episodic::EpisodeFilter;
use thau::memory::EpisodeKind;
use thau::model::tokenizer::Role;
use thau::runtime::Runtime;
use thau::tools::image::http::A1111Backend;
use thau::tools::image::{ImageBackend, ImageParams, ImageRequest, Picture};
use thau::tools::{ToolCallError, ToolEvent};

mod common;

fn png_size(path: &std::path::Path) -> (u32, u32) {
    let d = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let r = d.read_info().unwrap();
    (r.info().width, r.info().height)
}

#[actix::test]
async fn model_output_calls_run_through_the_router_and_come_back_as_tool_messages() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    home.init().unwrap();
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let router = rt.addrs.tool_router.clone().unwrap();
    let output = concat!(
        "Aquí tienes: <TOOL:generate_image>{\"prompt\": \"un faro {rojo}\", \"width\": 128, \"height\": 64, \"seed\": 5}</TOOL>",
        " y otra <TOOL:generate_image>{\"prompt\": \"x\", \"width\": 100}</TOOL>",
        " <TOOL:rm_rf>{}</TOOL> fin."
    );
    let routed = router
        .send(HandleOutput {
            session: "s1".into(),
            output: output.into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(routed.text, "Aquí tienes:  y otra   fin.");
    assert_eq!(routed.calls.len(), 1);
    assert_eq!(routed.results.len(), 3, "{:?}", routed.results);
    let ok = &routed.results[0];
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.content["fallback"], true);
    let file = home.images().join(ok.content["file"].as_str().unwrap());
    assert_eq!(png_size(&file), (128, 64));
    assert!(file.with_extension("json").is_file());
    assert!(!routed.results[1].ok && !routed.results[2].ok);
    assert!(matches!(routed.errors[0], ToolCallError::Schema { .. }));
    assert!(
        matches!(&routed.errors[1], ToolCallError::UnknownTool { name, .. } if name == "rm_rf")
    );
    // Results go back into the conversation as tool turns.
    let msgs = routed.messages();
    assert!(msgs.iter().all(|m| m.role == Role::Tool));
    assert!(msgs[1].content.contains("width"), "{}", msgs[1].content);

    // Scanning alone runs nothing.
    let before = rt
        .addrs
        .image_tool
        .clone()
        .unwrap()
        .send(ImageStatsRequest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.count, 1);
    let events = router
        .send(ScanOutput(
            "<TOOL:generate_image>{\"prompt\": \"y\"}</TOOL>".into(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&events[..], [ToolEvent::Call { .. }]));
    let image = rt.addrs.image_tool.clone().unwrap();
    assert_eq!(
        image.send(ImageStatsRequest).await.unwrap().unwrap().count,
        1
    );

    // Users' words: the keyword fallback, never the parser.
    let intent = router
        .send(DetectIntent("Dibújame un desierto con cactus".into()))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(intent.arguments["prompt"], "un desierto con cactus");
    let typed = router
        .send(DetectIntent(
            "<TOOL:generate_image>{\"prompt\": \"hack\"}</TOOL>".into(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(typed, None);

    // A bad request to the ImageTool is the caller's error; the actor keeps serving.
    let bad = image
        .send(GenerateImage(ImageRequest {
            prompt: " ".into(),
            negative_prompt: String::new(),
            num_inference_steps: None,
            guidance_scale: None,
            width: None,
            height: None,
            seed: None,
        }))
        .await
        .unwrap();
    assert!(bad.is_err());
    let episodes = rt
        .addrs
        .episodic_memory
        .clone()
        .unwrap()
        .send(ListEpisodes {
            filter: EpisodeFilter {
                kind: Some(EpisodeKind::ToolCall),
                ..Default::default()
            },
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(episodes.len(), 1, "one call ran");
    assert!(rt.shutdown().await.is_empty());
}

#[test]
fn the_http_backend_speaks_the_automatic1111_api() {
    let (url, asked) = common::json_server(|path, body| {
        if path != "/sdapi/v1/txt2img" {
            return (404, "{}".into());
        }
        let (w, h) = (
            body["width"].as_u64().unwrap() as u32,
            body["height"].as_u64().unwrap() as u32,
        );
        let pic = Picture::from_rgb(w, h, &vec![90u8; (w * h * 3) as usize]).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pic.png);
        (
            200,
            serde_json::json!({ "images": [b64], "info": "{}" }).to_string(),
        )
    });
    let params = ImageParams {
        prompt: "a red fox".into(),
        negative_prompt: "blurry".into(),
        num_inference_steps: 12,
        guidance_scale: 6.5,
        width: 72,
        height: 64,
        seed: 9,
    };
    let mut b = A1111Backend::new(&format!("{url}/"));
    let pic = b.generate(&params).unwrap();
    assert_eq!((pic.width, pic.height), (72, 64));
    let (path, body) = asked.lock().unwrap()[0].clone();
    assert_eq!(path, "/sdapi/v1/txt2img");
    assert_eq!(body["prompt"], "a red fox");
    assert_eq!(body["negative_prompt"], "blurry");
    assert_eq!(body["steps"], 12);
    assert_eq!(body["cfg_scale"], 6.5);
    assert_eq!(body["seed"], 9);

    // Failures are errors with the server's words, never panics.
    let (broken, _) = common::json_server(|_, _| (500, "{\"detail\": \"out of memory\"}".into()));
    let e = A1111Backend::new(&broken).generate(&params).unwrap_err();
    assert!(e.to_string().contains("out of memory"), "{e}");
    let (garbage, _) = common::json_server(|_, _| (200, "{\"images\": [\"not base64!\"]}".into()));
    assert!(A1111Backend::new(&garbage).generate(&params).is_err());
    let (wrong, _) = common::json_server(|_, _| {
        let pic = Picture::from_rgb(8, 8, &[0u8; 192]).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pic.png);
        (200, serde_json::json!({ "images": [b64] }).to_string())
    });
    let e = A1111Backend::new(&wrong).generate(&params).unwrap_err();
    assert!(e.to_string().contains("asked for 72×64"), "{e}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    assert!(A1111Backend::new(&dead).generate(&params).is_err());
}

/// Builds a tiny randomly initialised Stable-Diffusion-shaped model in the diffusers layout
/// the loader reads (configs, CLIP tokenizer, safetensors per part).
fn tiny_sd(root: &std::path::Path) {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use thau::tools::image::sd::*;
    for d in ["text_encoder", "tokenizer", "unet", "vae", "scheduler"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let words = [
        "<|endoftext|>",
        "<unk>",
        "a",
        "red",
        "fox",
        "in",
        "the",
        "snow",
        "blurry",
    ];
    let vocab = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), i as u32))
        .collect();
    let model = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(vocab)
        .unk_token("<unk>".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
    tok.save(root.join(TOKENIZER), false).unwrap();
    let clip = ClipTextConfig {
        vocab_size: words.len(),
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        max_position_embeddings: 8,
        hidden_act: "quick_gelu".into(),
        layer_norm_eps: 1e-5,
    };
    // 32 channels: candle's DownBlock2D normalises in 32 groups whatever the config says.
    let unet = UNetFile {
        block_out_channels: vec![32, 32],
        down_block_types: vec!["CrossAttnDownBlock2D".into(), "DownBlock2D".into()],
        attention_head_dim: PerBlock::One(2),
        cross_attention_dim: 16,
        layers_per_block: 1,
        norm_num_groups: 32,
        norm_eps: 1e-5,
        use_linear_projection: false,
        flip_sin_to_cos: true,
        freq_shift: 0.0,
        downsample_padding: 1,
        mid_block_scale_factor: 1.0,
        center_input_sample: false,
        in_channels: 4,
        out_channels: 4,
    };
    let vae = VaeFile {
        block_out_channels: vec![8, 8, 8, 8],
        layers_per_block: 1,
        latent_channels: 4,
        norm_num_groups: 4,
        scaling_factor: 0.18215,
    };
    let write = |rel: &str, v: serde_json::Value| {
        std::fs::write(root.join(rel), serde_json::to_vec_pretty(&v).unwrap()).unwrap()
    };
    write(
        "text_encoder/config.json",
        serde_json::to_value(&clip).unwrap(),
    );
    write("unet/config.json", serde_json::to_value(&unet).unwrap());
    write("vae/config.json", serde_json::to_value(&vae).unwrap());
    write(
        "scheduler/scheduler_config.json",
        serde_json::json!({"beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1}),
    );
    let dev = Device::Cpu;
    let vm = VarMap::new();
    ClipTextModel::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), &clip).unwrap();
    vm.save(root.join(TEXT_ENCODER)).unwrap();
    let vm = VarMap::new();
    candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel::new(
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
        4,
        4,
        false,
        unet.to_candle().unwrap(),
    )
    .unwrap();
    vm.save(root.join(UNET)).unwrap();
    let vm = VarMap::new();
    candle_transformers::models::stable_diffusion::vae::AutoEncoderKL::new(
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
        3,
        3,
        vae.to_candle(),
    )
    .unwrap();
    vm.save(root.join(VAE)).unwrap();
}

#[test]
fn stable_diffusion_loads_denoises_and_decodes_a_tiny_random_model() {
    use thau::actors::image_tool::{BackendKind, ImageToolParams};
    use thau::tools::image::sd::{StableDiffusionBackend, VAE};
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("sd");
    tiny_sd(&weights);
    let mut sd = StableDiffusionBackend::load(&weights, candle_core::Device::Cpu).unwrap();
    let params = ImageParams {
        prompt: "a red fox in the snow".into(),
        negative_prompt: "blurry".into(),
        num_inference_steps: 2,
        guidance_scale: 7.5,
        width: 64,
        height: 48,
        seed: 11,
    };
    let a = sd.generate(&params).unwrap();
    assert_eq!((a.width, a.height), (64, 48));
    let decoded = Picture::from_png(a.png.clone()).unwrap();
    assert_eq!((decoded.width, decoded.height), (64, 48));
    // Seeded: the same request gives the same picture, another seed another one.
    assert_eq!(sd.generate(&params).unwrap().png, a.png);
    let other = ImageParams {
        seed: 12,
        ..params.clone()
    };
    assert_ne!(sd.generate(&other).unwrap().png, a.png);
    // Without guidance the negative prompt is not used, and the result differs.
    let unguided = ImageParams {
        guidance_scale: 1.0,
        ..params.clone()
    };
    assert_ne!(sd.generate(&unguided).unwrap().png, a.png);

    // The ImageTool's settings choose it, and the picture is kept with its sidecar.
    let tool = ImageToolParams {
        backend: BackendKind::StableDiffusion,
        sd_weights: weights.display().to_string(),
        ..Default::default()
    };
    let mut backend = tool.backend().unwrap();
    assert_eq!(
        (backend.name(), backend.device()),
        ("stable_diffusion", "cpu".to_string())
    );
    let images = dir.path().join("images");
    let g = thau::tools::image::generate_and_save(backend.as_mut(), &params, &images).unwrap();
    assert!(!g.fallback);
    assert_eq!(png_size(&g.path), (64, 48));

    // A missing part is named; under `auto` the fallback takes over.
    std::fs::remove_file(weights.join(VAE)).unwrap();
    let e = StableDiffusionBackend::load(&weights, candle_core::Device::Cpu)
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("vae/diffusion_pytorch_model.safetensors"),
        "{e}"
    );
    assert!(tool.backend().is_err());
    let auto = ImageToolParams {
        backend: BackendKind::Auto,
        ..tool
    };
    assert!(auto.backend().unwrap().is_fallback());
}
