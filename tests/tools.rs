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
