//! A small HTTP client over ureq for the server tests: status codes are answers, not
//! errors, and the API key goes in the `Authorization` header.

use serde_json::Value;

use crate::KEY;

pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Client { base, agent }
    }
    pub fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = r.body_mut().read_to_vec().unwrap();
        (r.status().as_u16(), ct, bytes)
    }
    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let (s, _, b) = self.get(path);
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
    pub fn post(&self, path: &str, key: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut r = req.send(body).unwrap();
        let v = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
        (r.status().as_u16(), v)
    }
    pub fn delete(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.agent.delete(format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut r = req.call().unwrap();
        let v = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
        (r.status().as_u16(), v)
    }
    /// A POST answered with a stream: status, content type, the whole text.
    pub fn post_text(&self, path: &str, body: Value) -> (u16, String, String) {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {KEY}"))
            .send(body.to_string().as_bytes())
            .unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (
            r.status().as_u16(),
            ct,
            r.body_mut().read_to_string().unwrap(),
        )
    }
    /// A GET with one extra header (no API key).
    pub fn get_with(&self, path: &str, header: &str, value: &str) -> (u16, Value) {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header(header, value)
            .call()
            .unwrap();
        let v = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
        (r.status().as_u16(), v)
    }
    /// A DELETE with one extra header (no API key).
    pub fn delete_with(&self, path: &str, header: &str, value: &str) -> u16 {
        let r = self
            .agent
            .delete(format!("{}{path}", self.base))
            .header(header, value)
            .call()
            .unwrap();
        r.status().as_u16()
    }
    /// A POST of raw bytes with their content type (no API key).
    pub fn post_typed(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .send(body)
            .unwrap();
        let v = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
        (r.status().as_u16(), v)
    }
    pub fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        self.post(path, Some(KEY), body.to_string().as_bytes())
    }
}

/// Announces a `len`-byte body, sends only its start, and reads the answer.
pub fn oversize(addr: &std::net::SocketAddr, len: usize) -> (u16, Value) {
    announced(
        addr,
        "/chat/message",
        &format!("Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"),
        len as u64,
        "{\"message\": \"",
    )
}

/// A POST to `path` with `headers` (each ending in CRLF) that announces a `len`-byte body
/// and sends only `start` of it: the answer comes from the announced length alone.
pub fn announced(
    addr: &std::net::SocketAddr,
    path: &str,
    headers: &str,
    len: u64,
    start: &str,
) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {len}\r\nConnection: close\r\n\r\n{start}"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
    )
}
