//! The HTTP API with a real HTTP client against a server the test starts on a free port:
//! every REST route, the API key, JSON errors for bad bodies and unknown routes, and
//! pictures served only when the ImageTool made them.

use std::sync::Arc;

use serde_json::{json, Value};
use thau::config::ThauConfig;
use thau::home::Home;
use thau::runtime::Runtime;

mod client;
mod clients;
#[path = "../common/mod.rs"]
mod common;
mod compat;
mod learning;
mod owners;
mod teach;
mod ws;

use client::{oversize, Client};
use compat::ollama_and_openai;
use ws::{read, send, ws_chat};

const KEY: &str = "k3y";

fn is_error(v: &Value, code: &str) -> bool {
    v["error"]["code"] == code
        && v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
}

#[actix::test]
async fn every_rest_route_over_real_http() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let rt = Arc::new(Runtime::start(home.clone(), ThauConfig::default()).unwrap());
    let (addr_rx, server) = common::start_server(rt.clone(), Some(KEY));
    let images = home.images();
    let checks = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        let c = Client::new(format!("http://{addr}"));
        let (s, v) = c.get_json("/health");
        assert_eq!((s, v["status"].as_str()), (200, Some("ok")), "{v}");
        assert!(v["actors"].as_array().unwrap().len() >= 9);

        // The API key guards every POST route.
        let (s, v) = c.post("/chat/message", None, br#"{"message":"hi"}"#);
        assert!(s == 401 && is_error(&v, "unauthorized"), "{s} {v}");
        let (s, v) = c.post("/chat/message", Some("wrong"), br#"{"message":"hi"}"#);
        assert_eq!(s, 401, "{v}");

        let (s, v) = c.post_json(
            "/chat/message",
            json!({"message": "the red fox", "max_tokens": 5, "seed": 1, "session": "s1"}),
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["session"], "s1");
        assert!(v["reply"].is_string() && v["tokens"].as_u64().unwrap() <= 6, "{v}");

        // Automatic tool detection: an image request in the user's words makes a picture.
        let (s, v) = c.post_json("/vision/chat", json!({"message": "Draw a red fox", "max_tokens": 3}));
        assert_eq!(s, 200, "{v}");
        let url = v["images"][0].as_str().unwrap().to_string();
        let (s, ct, png) = c.get(&url);
        assert_eq!((s, ct.as_str()), (200, "image/png"));
        assert!(png.starts_with(b"\x89PNG"));

        let (s, v) = c.post_json("/vision/generate", json!({"prompt": "un faro", "width": 64, "height": 64, "seed": 2}));
        assert_eq!(s, 201, "{v}");
        assert_eq!((v["width"].as_u64(), v["fallback"].as_bool()), (Some(64), Some(true)));
        let (s, _, _) = c.get(v["url"].as_str().unwrap());
        assert_eq!(s, 200);
        let (s, v) = c.post_json("/vision/generate", json!({"prompt": "x", "width": 63}));
        assert!(s == 400 && is_error(&v, "bad_request"), "{s} {v}");
        let (s, v) = c.get_json("/vision/stats");
        assert_eq!((s, v["count"].as_u64()), (200, Some(2)), "{v}");

        // Only pictures the ImageTool made are served.
        std::fs::write(images.join("planted.png"), b"\x89PNG not ours").unwrap();
        for bad in [
            "/vision/image/planted.png",
            "/vision/image/..%2Fthau.toml",
            "/vision/image/%2Fetc%2Fpasswd",
            "/vision/image/..%2F..%2Fhome%2Fthau.toml",
            "/vision/image/.hidden.png",
        ] {
            let (s, _, b) = c.get(bad);
            let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
            assert!(s == 404 && is_error(&v, "not_found"), "{bad}: {s} {v}");
        }

        // Bad bodies get a 4xx JSON error.
        let (s, v) = c.post("/chat/message", Some(KEY), b"{\"message\": ");
        assert!(s == 400 && is_error(&v, "bad_request"), "{s} {v}");
        // An oversize body is refused from its Content-Length, before it is read (a client
        // still sending would see the connection close: the request is raw here).
        let (s, v) = oversize(&addr, 300 * 1024);
        assert!(s == 413 && is_error(&v, "payload_too_large"), "{s} {v}");
        let (s, v) = c.post_json("/chat/message", json!({"message": "  "}));
        assert!(s == 400 && is_error(&v, "bad_request"), "{s} {v}");
        let (s, v) = c.post_json("/chat/message", json!({"message": "x", "colour": 1}));
        assert_eq!(s, 400, "{v}");
        let (s, v) = c.get_json("/no/such/route");
        assert!(s == 404 && is_error(&v, "not_found"), "{s} {v}");

        // Memory.
        let (s, v) = c.post_json("/memory/store", json!({"text": "Foxes sleep in dens under the snow.", "importance": 0.9}));
        assert_eq!(s, 201, "{v}");
        let (s, v) = c.post_json("/memory/recall", json!({"query": "where do foxes sleep", "limit": 3}));
        assert_eq!(s, 200, "{v}");
        assert!(v["hits"].to_string().contains("dens under the snow"), "{v}");
        let (s, v) = c.post_json("/memory/store", json!({"text": "x", "importance": 3.0}));
        assert_eq!(s, 400, "{v}");
        // A chat turn recalls the stored memory into its prompt and names it; with
        // "memory": false it answers from the weights alone.
        let ask = |memory: Value| json!({"message": "where do foxes sleep?", "max_tokens": 3, "memory": memory});
        let (s, v) = c.post_json("/chat/message", ask(Value::Null));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["memories"][0]["text"], "Foxes sleep in dens under the snow.", "{v}");
        assert!(v["memories"][0]["score"].as_f64().unwrap() > 0.0);
        let (_, w) = c.post_json("/chat/message", ask(json!(false)));
        assert_eq!(w["memories"], json!([]), "{w}");
        assert!(v["prompt_tokens"].as_u64() > w["prompt_tokens"].as_u64(), "{v} {w}");
        let (s, v) = c.get_json("/memory/stats");
        assert_eq!(s, 200);
        assert!(v["episodic"].is_object() && v["long_term"].is_object(), "{v}");

        // Feedback reaches the Tuner; five thumbs down lower the temperature.
        let mut last = Value::Null;
        for i in 0..5 {
            let (s, v) = c.post_json("/train/interaction", json!({"turn": format!("t{i}"), "rating": "down"}));
            assert_eq!(s, 200, "{v}");
            last = v;
        }
        assert_eq!(last["change"]["knob"], "temperature", "{last}");
        let (s, v) = c.post_json("/train/interaction", json!({"turn": "t", "rating": "meh"}));
        assert_eq!(s, 400, "{v}");
        let (s, v) = c.get_json("/train/stats");
        assert_eq!(s, 200);
        assert_eq!(v["tuning"]["log"].as_array().unwrap().len(), 1, "{v}");

        ws_chat(&addr);
        ollama_and_openai(&c);

        let (s, ct, body) = c.get("/metrics");
        let text = String::from_utf8(body).unwrap();
        assert!(s == 200 && ct.starts_with("text/plain"));
        assert!(text.contains("thau_http_requests_total{method=\"POST\",route=\"/chat/message\",status=\"200\"} 3"), "{text}");
        assert!(text.contains("thau_actor_messages_total{actor=\"inference\"}"));
        let (s, v) = c.get_json("/openapi.json");
        assert_eq!(s, 200);
        for route in ["/chat/message", "/vision/image/{filename}", "/memory/recall", "/train/interaction"] {
            assert!(v["paths"][route].is_object(), "{route}");
        }
    })
    .await;
    server.stop().await;
    if let Err(e) = checks {
        std::panic::resume_unwind(e.into_panic());
    }
    match Arc::try_unwrap(rt) {
        Ok(rt) => assert!(rt.shutdown().await.is_empty()),
        Err(_) => panic!("the server still holds the runtime"),
    }
}

/// `server.max_sessions` refuses WebSocket sessions beyond the cap until one closes;
/// `server.turns_per_minute` answers 429 (REST) or a `rate_limited` event (WebSocket);
/// browsers may give the key as `?api_key=`.
#[actix::test]
async fn sessions_are_capped_and_turns_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let mut config = ThauConfig::default();
    config.server.max_sessions = 1;
    config.server.turns_per_minute = 2;
    let rt = Arc::new(Runtime::start(home, config).unwrap());
    let (addr_rx, server) = common::start_server(rt.clone(), Some(KEY));
    let checks = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        let url = format!("ws://{addr}/ws/chat");
        match tungstenite::connect(format!("{url}?api_key=wrong")) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
            other => panic!("a wrong key must be refused: {:?}", other.map(|_| ())),
        }
        let (mut ws, _) = tungstenite::connect(format!("{url}?api_key={KEY}")).unwrap();
        assert_eq!(read(&mut ws)["type"], "session.created");
        match tungstenite::connect(format!("{url}?api_key={KEY}")) {
            Err(tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 503);
                let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
                assert!(is_error(&body, "too_many_sessions"), "{body}");
            }
            other => panic!("a second session must be refused: {:?}", other.map(|_| ())),
        }
        // Two turns a minute in a session, then an error event; the connection stays.
        for _ in 0..2 {
            send(
                &mut ws,
                json!({"type": "message.create", "message": "the fox", "max_tokens": 2}),
            );
            while read(&mut ws)["type"] != "response.done" {}
        }
        send(
            &mut ws,
            json!({"type": "message.create", "message": "again", "max_tokens": 2}),
        );
        let v = read(&mut ws);
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("rate_limited")),
            "{v}"
        );
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
        // The place is free again once the server has seen the close.
        let mut reopened = false;
        for _ in 0..50 {
            if tungstenite::connect(format!("{url}?api_key={KEY}")).is_ok() {
                reopened = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(reopened, "the closed session's place was not freed");

        let c = Client::new(format!("http://{addr}"));
        let mut body = json!({"message": "the fox", "max_tokens": 2, "session": "rest"});
        for _ in 0..2 {
            let (s, v) = c.post("/chat/message", Some(KEY), body.to_string().as_bytes());
            assert_eq!(s, 200, "{v}");
            // The conversation's token resumes it (the first reply gives it).
            if let Some(t) = v["token"].as_str() {
                body["token"] = json!(t);
            }
        }
        let (s, v) = c.post("/chat/message", Some(KEY), body.to_string().as_bytes());
        assert!(s == 429 && is_error(&v, "rate_limited"), "{s} {v}");
        // Another session has its own allowance.
        let other = json!({"message": "the fox", "max_tokens": 2, "session": "other"});
        let (s, v) = c.post("/chat/message", Some(KEY), other.to_string().as_bytes());
        assert_eq!(s, 200, "{v}");
    })
    .await;
    server.stop().await;
    if let Err(e) = checks {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Conversations belong to whoever opened them, and what people teach is known at once,
/// on a server without an API key.
#[actix::test]
async fn conversations_are_private_and_teaching_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let rt = Arc::new(Runtime::start(home, ThauConfig::default()).unwrap());
    // A turn of Alice's that already left her window, and a learning episode anyone sees.
    let episodes = vec![
        thau::memory::Episode::new(
            "alice",
            "short_term_memory",
            thau::memory::EpisodeKind::ChatTurn,
            "my bike lock combination is 9071",
        ),
        thau::memory::Episode::new(
            "learn-1",
            "questioner",
            thau::memory::EpisodeKind::Question,
            "what is a bike lock combination?",
        ),
    ];
    let episodic = rt.addrs.episodic_memory.clone().unwrap();
    let remember = thau::actors::episodic_memory::Remember(episodes);
    episodic.send(remember).await.unwrap().unwrap();
    let (addr_rx, server) = common::start_server(rt.clone(), None);
    let checks = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        owners::conversations_belong_to_their_openers(&addr);
        teach::teaching_over_http(&addr);
    })
    .await;
    server.stop().await;
    if let Err(e) = checks {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `POST /admin/reload` serves a checkpoint written after the server started; one that
/// does not load is an error and the served model stays.
#[actix::test]
async fn a_running_server_adopts_a_newer_checkpoint_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let rt = Arc::new(Runtime::start(home.clone(), ThauConfig::default()).unwrap());
    let (addr_rx, server) = common::start_server(rt.clone(), Some(KEY));
    let age = home.age_checkpoint(0);
    let checks = tokio::task::spawn_blocking(move || {
        let c = Client::new(format!("http://{}", addr_rx.recv().unwrap()));
        assert_eq!(c.post("/admin/reload", None, b"").0, 401);
        // Another process writes a newer checkpoint (a copy under a later step).
        let first = thau::model::checkpoint::latest(&age).unwrap().unwrap();
        let newer = age.join("step_00009999");
        std::fs::create_dir_all(&newer).unwrap();
        for f in std::fs::read_dir(&first).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), newer.join(f.file_name())).unwrap();
        }
        std::fs::write(age.join("latest"), "step_00009999").unwrap();
        let (s, v) = c.post_json("/admin/reload", json!({}));
        assert_eq!(s, 200, "{v}");
        assert!(
            v["model"]["checkpoint"]
                .as_str()
                .unwrap()
                .ends_with("step_00009999"),
            "{v}"
        );
        // A broken one: refused with its reason; the newer model is still served.
        let broken = age.join("step_10000000");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join("model.safetensors"), b"not tensors").unwrap();
        std::fs::write(age.join("latest"), "step_10000000").unwrap();
        let (s, v) = c.post_json("/admin/reload", json!({}));
        assert!(s >= 500 && is_error(&v, "actor_failed"), "{s} {v}");
        let (s, v) = c.post_json(
            "/chat/message",
            json!({"message": "the fox", "max_tokens": 2}),
        );
        assert_eq!(s, 200, "{v}");
    })
    .await;
    server.stop().await;
    if let Err(e) = checks {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `thau bench serve`'s rounds against a live server: every session's chat is counted, the
/// decode thread reports the rows it batched, and the first round is the reference.
#[actix::test]
async fn the_serve_bench_measures_concurrent_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let rt = Arc::new(Runtime::start(home, ThauConfig::default()).unwrap());
    let (addr_rx, server) = common::start_server(rt.clone(), None);
    let rt2 = rt.clone();
    let rounds = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        let stats = || rt2.decode_stats();
        thau::server::bench::run_rounds(addr, &[1, 4], 16, "the red fox", &stats)
    })
    .await
    .unwrap();
    server.stop().await;
    let rounds = rounds.unwrap();
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0].ratio_to_first, 1.0);
    for (r, n) in rounds.iter().zip([1, 4]) {
        assert_eq!(r.sessions, n);
        assert!(r.tokens >= n && r.tokens <= 16 * n, "{r:?}");
        assert!(
            r.aggregate_tokens_per_s > 0.0 && r.mean_batch >= 1.0,
            "{r:?}"
        );
        assert!(
            r.ttft_p50_ms <= r.ttft_p99_ms && r.ttft_p99_ms <= r.seconds * 1e3,
            "{r:?}"
        );
    }
    let st = rt.decode_stats().unwrap();
    // The warm-up chat and the five measured ones were all prefilled by the decode thread.
    assert_eq!(st.prefills, 6, "{st:?}");
}

/// The memory inspector's routes: list, search, show and forget in every store, and the
/// runtime event stream as server-sent events.
#[actix::test]
async fn memory_items_can_be_listed_searched_shown_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let rt = Arc::new(Runtime::start(home, ThauConfig::default()).unwrap());
    let episode = thau::memory::Episode::new(
        "inspect-1",
        "test",
        thau::memory::EpisodeKind::ChatTurn,
        "We talked about Peru and its capital",
    );
    let remember = thau::actors::episodic_memory::Remember(vec![episode]);
    let episodic = rt.addrs.episodic_memory.clone().unwrap();
    episodic.send(remember).await.unwrap().unwrap();
    let (addr_rx, server) = common::start_server(rt.clone(), Some(KEY));
    let rt2 = rt.clone();
    let checks = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        let c = Client::new(format!("http://{addr}"));
        let fact = br#"{"text": "The capital of Peru is Lima.", "source": "test"}"#;
        let (s, v) = c.post("/memory/store", Some(KEY), fact);
        assert_eq!(s, 201, "{v}");
        let (s, v) = c.post(
            "/chat/message",
            Some(KEY),
            br#"{"session": "inspect-1", "message": "Tell me about Peru"}"#,
        );
        assert_eq!(s, 200, "{v}");

        // Memory contents are private: the key is needed to read them.
        assert_eq!(c.get_json("/memory/long/items").0, 401);
        assert_eq!(c.get_json("/events").0, 401);

        // Long-term: listed, found by meaning, shown without its vector, forgotten.
        let (s, v) = c.get_json(&format!("/memory/long/items?api_key={KEY}"));
        assert_eq!(s, 200, "{v}");
        let items = v["items"].as_array().unwrap();
        let id = items
            .iter()
            .find(|p| p["text"] == "The capital of Peru is Lima.")
            .unwrap_or_else(|| panic!("{v}"))["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (s, v) = c.get_json(&format!(
            "/memory/long/items?q=capital%20of%20Peru&limit=3&api_key={KEY}"
        ));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["hits"][0]["point"]["id"], id.as_str(), "{v}");
        let (s, v) = c.get_json(&format!("/memory/long/items/{id}?api_key={KEY}"));
        assert_eq!(
            (s, v["text"].as_str()),
            (200, Some("The capital of Peru is Lima."))
        );
        assert!(v.get("vector").is_none(), "{v}");
        let (s, _) = c.delete(&format!("/memory/long/items/{id}"), None);
        assert_eq!(s, 401, "forgetting needs the API key");
        let (s, v) = c.delete(&format!("/memory/long/items/{id}"), Some(KEY));
        assert_eq!(
            (s, v["forgotten"].as_str()),
            (200, Some(id.as_str())),
            "{v}"
        );
        let (s, v) = c.get_json(&format!("/memory/long/items/{id}?api_key={KEY}"));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{v}"
        );

        // Short-term: the chat's window, its turns, then gone.
        let (s, v) = c.get_json(&format!("/memory/short/items?api_key={KEY}"));
        assert_eq!(s, 200, "{v}");
        assert!(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["conversation"] == "inspect-1"),
            "{v}"
        );
        let (s, v) = c.get_json(&format!("/memory/short/items/inspect-1?api_key={KEY}"));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["turns"][0]["content"], "Tell me about Peru", "{v}");
        let (s, v) = c.get_json(&format!("/memory/short/items?q=Peru&api_key={KEY}"));
        assert_eq!(s, 200, "{v}");
        assert!(!v["hits"].as_array().unwrap().is_empty(), "{v}");
        assert_eq!(c.delete("/memory/short/items/inspect-1", Some(KEY)).0, 200);
        assert_eq!(
            c.get_json(&format!("/memory/short/items/inspect-1?api_key={KEY}"))
                .0,
            404
        );

        // Episodic: an episode can be found, shown and forgotten.
        let (s, v) = c.get_json(&format!("/memory/episodic/items?q=Peru&api_key={KEY}"));
        assert_eq!(s, 200, "{v}");
        let ep = v["hits"][0]["episode"]["id"].as_str().unwrap().to_string();
        let (s, v) = c.get_json(&format!("/memory/episodic/items?limit=5&api_key={KEY}"));
        assert!(
            s == 200 && !v["items"].as_array().unwrap().is_empty(),
            "{v}"
        );
        assert_eq!(
            c.get_json(&format!("/memory/episodic/items/{ep}?api_key={KEY}"))
                .0,
            200
        );
        assert_eq!(
            c.delete(&format!("/memory/episodic/items/{ep}"), Some(KEY))
                .0,
            200
        );
        assert_eq!(
            c.get_json(&format!("/memory/episodic/items/{ep}?api_key={KEY}"))
                .0,
            404
        );

        // Bad input: an unknown store, a malformed id, an unknown query field.
        let (s, v) = c.get_json(&format!("/memory/nowhere/items?api_key={KEY}"));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{v}"
        );
        assert_eq!(
            c.get_json(&format!("/memory/long/items/not-a-uuid?api_key={KEY}"))
                .0,
            400
        );
        assert_eq!(
            c.get_json(&format!("/memory/long/items?bogus=1&api_key={KEY}"))
                .0,
            400
        );

        // The event stream: a restart shows up as a server-sent event.
        use std::io::{BufRead, BufReader, Write};
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        write!(
            sock,
            "GET /events?api_key={KEY} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut lines = BufReader::new(sock).lines();
        let status = lines.next().unwrap().unwrap();
        assert!(status.contains("200"), "{status}");
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(rt2.inject_fault("tuner"));
        });
        let seen = lines
            .map_while(Result::ok)
            .find(|l| l.starts_with("event:") && l.contains("actor_restarted"));
        assert!(seen.is_some(), "no actor_restarted event");
    });
    let r = checks.await;
    server.stop().await;
    r.unwrap();
}

/// `thau bench load` against a live server admitting six sessions: eight clients chat
/// for a moment; six are held with turns answered, the two refused are counted as errors.
#[actix::test]
async fn the_load_bench_counts_held_sessions_errors_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let mut config = ThauConfig::default();
    config.server.max_sessions = 6;
    let rt = Arc::new(Runtime::start(home, config).unwrap());
    let (addr_rx, server) = common::start_server(rt.clone(), None);
    let r = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        thau::server::bench::run_load(addr, 8, std::time::Duration::from_millis(1500), 4)
    })
    .await
    .unwrap()
    .unwrap();
    server.stop().await;
    assert_eq!((r.sessions, r.held, r.errors), (8, 6, 2), "{r:?}");
    assert!(
        r.error_samples.iter().all(|e| e.contains("503")),
        "{:?}",
        r.error_samples
    );
    assert!(r.turns >= 6, "{r:?}");
    assert!(
        0.0 < r.latency_p50_ms
            && r.latency_p50_ms <= r.latency_p99_ms
            && r.latency_p99_ms <= r.latency_max_ms,
        "{r:?}"
    );
}

/// `response.cancel` stops a long answer mid-way (an untrained age-0 model with a long
/// context decodes for seconds otherwise), and the connection takes the next message.
#[actix::test]
async fn response_cancel_stops_a_long_answer() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus/en");
    thau::server::bench::fresh_model(&home, &corpus, 0, 1024, 2048, 5).unwrap();
    let rt = Arc::new(Runtime::start(home, ThauConfig::default()).unwrap());
    let (addr_rx, server) = common::start_server(rt.clone(), None);
    let checks = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws/chat")).unwrap();
        assert_eq!(read(&mut ws)["type"], "session.created");
        let long = 1500;
        send(&mut ws, json!({"type": "message.create", "message": "tell me everything", "max_tokens": long, "temperature": 0.0}));
        // The first piece, then stop.
        loop {
            let v = read(&mut ws);
            assert_ne!(v["type"], "response.done", "finished before it could be cancelled: {v}");
            if v["type"] == "response.delta" {
                break;
            }
        }
        send(&mut ws, json!({"type": "response.cancel"}));
        let done = loop {
            let v = read(&mut ws);
            if v["type"] == "response.done" {
                break v;
            }
        };
        assert_eq!(done["cancelled"], true, "{done}");
        assert!(done["tokens"].as_u64().unwrap() < long / 2, "{done}");
        // The connection carries on.
        send(&mut ws, json!({"type": "message.create", "message": "again", "max_tokens": 3}));
        let next = loop {
            let v = read(&mut ws);
            if v["type"] == "response.done" {
                break v;
            }
        };
        assert_eq!(next["cancelled"], false, "{next}");
        assert!(next["tokens"].as_u64().unwrap() <= 3);
    })
    .await;
    server.stop().await;
    if let Err(e) = checks {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The web page and its assets are served from the binary, with a strict content policy;
/// `/train/stats` gives the dashboard the model's age and size.
#[actix::test]
async fn the_web_page_is_served_with_its_assets() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let rt = Arc::new(Runtime::start(home, ThauConfig::default()).unwrap());
    let (addr_rx, server) = common::start_server(rt.clone(), Some(KEY));
    let checks = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        let c = Client::new(format!("http://{addr}"));
        let (s, ct, body) = c.get("/");
        assert_eq!((s, ct.as_str()), (200, "text/html; charset=utf-8"));
        let html = String::from_utf8(body).unwrap();
        for needle in [
            "/static/app.js",
            "/static/app.css",
            r#"<label for="chat-input">"#,
            r#"id="memory-store""#,
            r#"id="loss-chart""#,
        ] {
            assert!(html.contains(needle), "the page lacks {needle}");
        }
        // Nothing is loaded from elsewhere.
        assert!(!html.contains("http://") && !html.contains("https://"));
        let (s, ct, js) = c.get("/static/app.js");
        assert_eq!((s, ct.as_str()), (200, "text/javascript; charset=utf-8"));
        assert!(String::from_utf8(js).unwrap().contains("/ws/chat"));
        assert_eq!(c.get("/static/app.css").0, 200);
        assert_eq!(c.get("/static/../Cargo.toml").0, 404);
        assert_eq!(c.get("/static/nope.js").0, 404);
        // A POST-only route still says so to a GET.
        assert_eq!(c.get("/chat/message").0, 405);
        let (s, v) = c.get_json("/train/stats");
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["model"]["age"], 0, "{v}");
        assert!(v["model"]["params"].as_u64().unwrap() > 0, "{v}");
    });
    let r = checks.await;
    server.stop().await;
    r.unwrap();
}
