//! The WebSocket chat seen from a client: events read and sent as JSON.

use serde_json::{json, Value};

use crate::KEY;

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

pub fn send(ws: &mut Ws, v: Value) {
    ws.send(tungstenite::Message::text(v.to_string())).unwrap()
}

/// The next text event.
pub fn read(ws: &mut Ws) -> Value {
    loop {
        if let tungstenite::Message::Text(t) = ws.read().unwrap() {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The WebSocket chat: session events, streamed deltas, errors that keep the connection,
/// feedback, and the API key.
pub fn ws_chat(addr: &std::net::SocketAddr) {
    use tungstenite::client::IntoClientRequest;
    let url = format!("ws://{addr}/ws/chat");
    match tungstenite::connect(url.as_str()) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("no key must be refused: {:?}", other.map(|_| ())),
    }
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    let first = read(&mut ws);
    assert_eq!(
        (first["type"].as_str(), first["resumed"].as_bool()),
        (Some("session.created"), Some(false))
    );
    assert!(
        first["token"].as_str().is_some_and(|t| t.len() == 64),
        "{first}"
    );
    // A free name is opened anew, with its own token; the token resumes it.
    send(&mut ws, json!({"type": "session.update", "session": "ws1"}));
    let v = read(&mut ws);
    assert_eq!(
        (v["session"].as_str(), v["resumed"].as_bool()),
        (Some("ws1"), Some(false))
    );
    let token = v["token"].as_str().unwrap().to_string();
    send(
        &mut ws,
        json!({"type": "session.update", "session": "ws1", "token": token}),
    );
    let v = read(&mut ws);
    assert_eq!(
        (v["session"].as_str(), v["resumed"].as_bool()),
        (Some("ws1"), Some(true))
    );
    send(
        &mut ws,
        json!({"type": "message.create", "message": "the red fox", "max_tokens": 8, "seed": 1}),
    );
    let mut deltas: Vec<String> = Vec::new();
    let done = loop {
        let v = read(&mut ws);
        match v["type"].as_str() {
            Some("response.delta") => deltas.push(v["delta"].as_str().unwrap().to_string()),
            Some("response.done") => break v,
            Some("tool.call") | Some("tool.result") => {}
            other => panic!("unexpected {other:?}: {v}"),
        }
    };
    // Streamed: several non-empty pieces before `response.done`, not one whole answer.
    let pieces = deltas.iter().filter(|d| !d.is_empty()).count();
    assert!(pieces >= 2, "the answer is streamed in pieces: {deltas:?}");
    assert_eq!(done["session"], "ws1");
    // The memory stored before (foxes and their dens) was recalled into the prompt.
    assert!(
        done["memories"].to_string().contains("dens under the snow"),
        "{done}"
    );
    assert!(
        done["tokens"].as_u64().unwrap() >= 1 && done["cancelled"] == false,
        "{done}"
    );
    // A bad event is an error; the connection stays usable.
    send(&mut ws, json!({"type": "launch"}));
    let v = read(&mut ws);
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    send(
        &mut ws,
        json!({"type": "feedback", "turn": "w1", "rating": "up"}),
    );
    let v = read(&mut ws);
    assert_eq!(v["type"], "feedback.recorded", "{v}");
    ws.close(None).unwrap();
}
