//! Conversations belong to whoever opened them: without its resume token no one resumes
//! a conversation (REST or WebSocket), reads its window, searches its turns or forgets it.
//! The server here has no API key, so the token is the only way in.

use serde_json::{json, Value};

use crate::client::Client;
use crate::ws::{read, send};

fn chat(c: &Client, body: Value) -> (u16, Value) {
    c.post("/chat/message", None, body.to_string().as_bytes())
}

/// A GET with the token in the `X-Conversation-Token` header.
fn get_with_token(c: &Client, path: &str, token: &str) -> (u16, Value) {
    c.get_with(path, "x-conversation-token", token)
}

fn random_token(i: usize) -> String {
    // 64 hex digits, like a real token, different every time.
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    let t = format!("{a}{b}");
    assert_eq!(t.len(), 64, "{i}");
    t
}

pub fn conversations_belong_to_their_openers(addr: &std::net::SocketAddr) {
    let c = Client::new(format!("http://{addr}"));

    // Alice opens a conversation under a name of her choosing and gets its token.
    let (s, v) = chat(
        &c,
        json!({"session": "alice", "message": "my locker code is 4812", "max_tokens": 2}),
    );
    assert_eq!(s, 200, "{v}");
    let token = v["token"]
        .as_str()
        .expect("a new conversation has a token")
        .to_string();
    // A conversation opened without a name gets one, and a token too.
    let (s, v) = chat(&c, json!({"message": "hello", "max_tokens": 2}));
    assert!(
        s == 200 && v["token"].is_string() && v["session"].is_string(),
        "{v}"
    );

    // Resuming needs the token: none or a wrong one is refused, and nothing is added.
    for t in [None, Some(random_token(0))] {
        let (s, v) = chat(
            &c,
            json!({"session": "alice", "token": t, "message": "what is my code?"}),
        );
        assert!(s == 403 && v["error"]["code"] == "forbidden", "{s} {v}");
    }
    let (s, v) = chat(
        &c,
        json!({"session": "alice", "token": token, "message": "thanks", "max_tokens": 2}),
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        v.get("token").is_none(),
        "a resumed turn gives no new token: {v}"
    );

    // Her window: not found without the token (as if it did not exist), shown with it.
    let (s, v) = c.get_json("/memory/short/items/alice");
    assert_eq!(s, 404, "{v}");
    let (s, v) = get_with_token(&c, "/memory/short/items/alice", &token);
    assert_eq!(s, 200, "{v}");
    assert!(v["turns"].to_string().contains("4812"), "{v}");
    let (s, v) = c.get_json(&format!("/memory/short/items/alice?token={token}"));
    assert_eq!(s, 200, "{v}");
    // A thousand random tokens open nothing.
    for i in 0..1000 {
        let guess = random_token(i);
        let (s, _) = c.get_json(&format!("/memory/short/items/alice?token={guess}"));
        assert_eq!(s, 404, "guess {i} opened the window");
    }

    // Listings and searches show others nothing of hers.
    let (s, v) = c.get_json("/memory/short/items");
    assert_eq!(s, 200, "{v}");
    assert!(!v.to_string().contains("alice"), "{v}");
    let (s, v) = c.get_json("/memory/short/items?q=locker");
    assert!(s == 200 && !v.to_string().contains("4812"), "{v}");
    let (s, v) = c.post("/memory/recall", None, br#"{"query": "locker code"}"#);
    assert!(s == 200 && !v.to_string().contains("4812"), "{v}");
    // Her own token shows her her own.
    let (s, v) = get_with_token(&c, "/memory/short/items?q=locker", &token);
    assert!(s == 200 && v.to_string().contains("4812"), "{v}");
    // Her turns filed as episodes are hers too; a learning session's are everyone's.
    for path in [
        "/memory/episodic/items",
        "/memory/episodic/items?q=bike+lock",
    ] {
        let (s, v) = c.get_json(path);
        let text = v.to_string();
        assert!(
            s == 200 && !text.contains("9071") && text.contains("what is a bike lock"),
            "{v}"
        );
        let (s, v) = get_with_token(&c, path, &token);
        assert!(s == 200 && v.to_string().contains("9071"), "{v}");
    }
    let (s, v) = c.post(
        "/memory/recall",
        None,
        br#"{"query": "bike lock combination"}"#,
    );
    assert!(s == 200 && !v.to_string().contains("9071"), "{v}");
    let (_, v) = get_with_token(&c, "/memory/episodic/items", &token);
    let id = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["content"].as_str().is_some_and(|c| c.contains("9071")))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(c.get_json(&format!("/memory/episodic/items/{id}")).0, 404);
    assert_eq!(
        c.delete(&format!("/memory/episodic/items/{id}"), None).0,
        404
    );
    assert_eq!(
        get_with_token(&c, &format!("/memory/episodic/items/{id}"), &token).0,
        200
    );

    // The WebSocket: resuming without the token or with a wrong one is refused.
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws/chat")).unwrap();
    let first = read(&mut ws);
    assert!(first["token"].is_string(), "{first}");
    for t in [None, Some(random_token(1))] {
        send(
            &mut ws,
            json!({"type": "session.update", "session": "alice", "token": t}),
        );
        let v = read(&mut ws);
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{v}"
        );
    }
    send(
        &mut ws,
        json!({"type": "session.update", "session": "alice", "token": token}),
    );
    let v = read(&mut ws);
    assert_eq!(
        (v["session"].as_str(), v["resumed"].as_bool()),
        (Some("alice"), Some(true)),
        "{v}"
    );
    ws.close(None).unwrap();

    // Forgetting needs the token too; then the name is free for anyone, with a new token.
    assert_eq!(c.delete("/memory/short/items/alice", None).0, 404);
    assert_eq!(
        c.delete_with("/memory/short/items/alice", "x-conversation-token", &token),
        200
    );
    let (s, v) = chat(
        &c,
        json!({"session": "alice", "message": "hi", "max_tokens": 2}),
    );
    assert!(
        s == 200 && v["token"].is_string() && v["token"] != token.as_str(),
        "{v}"
    );
}
