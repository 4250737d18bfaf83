//! Teaching over HTTP: a document handed to `POST /learn/documents` and a fact told in a
//! chat turn are in long-term memory at once; bad documents are clear 4xx errors that
//! store nothing.

use serde_json::json;

use crate::client::{announced, Client};

fn recall(c: &Client, query: &str) -> String {
    let body = json!({ "query": query }).to_string();
    let (s, v) = c.post("/memory/recall", None, body.as_bytes());
    assert_eq!(s, 200, "{v}");
    v.to_string()
}

pub fn teaching_over_http(addr: &std::net::SocketAddr) {
    let c = Client::new(format!("http://{addr}"));
    let doc = "# Otters of Varno\n\nPim the otter lives in lake Varno and eats trout every morning before dawn.";
    let (s, v) = c.post_typed(
        "/learn/documents?name=otters.md",
        "text/markdown",
        doc.as_bytes(),
    );
    assert!(
        s == 201 && v["new"].as_u64() >= Some(1) && v["known"] == 0,
        "{s} {v}"
    );
    assert_eq!(v["source"], "taught:otters.md");
    assert!(recall(&c, "what does Pim the otter eat?").contains("eats trout"));
    // Handed again: nothing new.
    let (s, v) = c.post_typed(
        "/learn/documents?name=otters.md",
        "text/markdown",
        doc.as_bytes(),
    );
    assert!(
        s == 201 && v["new"] == 0 && v["known"] == v["passages"],
        "{s} {v}"
    );
    // As JSON.
    let body = json!({"text": "The Quendralian lighthouse was built in 1871 by Ada Ferrow.", "name": "lighthouse"});
    let (s, v) = c.post_typed(
        "/learn/documents",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert!(s == 201 && v["new"] == 1, "{s} {v}");

    // Bad documents: a clear 400 each, nothing stored.
    for (bytes, why) in [
        (&b"\x89PNG\r\n\x1a\n\0\0 zebra"[..], "binary"),
        (&b"Caf\xe9 zebra con leche"[..], "UTF-8"),
        (&b"   \n "[..], "empty"),
    ] {
        let (s, v) = c.post_typed("/learn/documents?name=bad", "text/plain", bytes);
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(s == 400 && message.contains(why), "{why}: {s} {v}");
    }
    assert!(!recall(&c, "zebra leche").contains("zebra"));
    let (s, v) = c.post_typed("/learn/documents", "application/json", br#"{"text": ""}"#);
    assert_eq!(s, 400, "{v}");
    // 50 MB is refused from its length, before it is read.
    let (s, v) = announced(
        addr,
        "/learn/documents",
        "Content-Type: text/plain\r\n",
        50 << 20,
        "",
    );
    assert_eq!(s, 413, "{v}");

    // Told in a chat turn, known in the next conversation.
    let (s, v) = c.post(
        "/chat/message",
        None,
        json!({"message": "Remember that the Varno ferry leaves at 6:40", "max_tokens": 2})
            .to_string()
            .as_bytes(),
    );
    assert!(
        s == 200 && v["taught"].as_array().is_some_and(|t| t.len() == 1),
        "{v}"
    );
    assert_eq!(
        v["reply"],
        "I will remember that: The Varno ferry leaves at 6:40."
    );
    let found = recall(&c, "when does the Varno ferry leave?");
    assert!(
        found.contains("leaves at 6:40") && found.contains("taught:"),
        "{found}"
    );
}
