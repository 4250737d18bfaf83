//! [`Remote`]: replaying against a running `thau serve` — chat turns and feedback over its
//! WebSocket (`/ws/chat`), memory steps over its REST routes on the same host.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::run::Said;
use crate::chat::ChatRequest;
use crate::error::{Result, ThauError};
use crate::learn::tuning::Rating;

/// How long a turn may take before the server is reported unresponsive.
const TURN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a REST call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to a running server.
pub struct Remote {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    http: String,
    api_key: Option<String>,
    agent: ureq::Agent,
    session: Option<String>,
    /// This run's suffix for conversation names: the server gives a name to whoever opens
    /// it first, so a scenario replayed again against the same server opens new ones.
    run: String,
    /// Resume tokens of the conversations this run opened, by server name.
    tokens: std::collections::HashMap<String, String>,
}

fn net(what: &str, e: impl std::fmt::Display) -> ThauError {
    ThauError::Runtime(format!("{what}: {e}"))
}

impl Remote {
    /// Connects to `url` (`ws://host:port/ws/chat`; a bare `ws://host:port` gets the path).
    pub fn connect(url: &str, api_key: Option<&str>) -> Result<Remote> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| *s == "ws" || *s == "wss")
            .ok_or_else(|| ThauError::Invalid(format!("--url {url}: expected ws://HOST:PORT")))?;
        let host = rest.split('/').next().unwrap_or(rest);
        let ws_url = if rest.contains('/') {
            url.to_string()
        } else {
            format!("{url}/ws/chat")
        };
        let http = format!(
            "{}://{host}",
            if scheme == "wss" { "https" } else { "http" }
        );
        let mut req = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| net(&ws_url, e))?;
        if let Some(k) = api_key {
            let v = format!("Bearer {k}")
                .parse()
                .map_err(|e| net("the API key", e))?;
            req.headers_mut().insert("authorization", v);
        }
        let (mut socket, _) = tungstenite::connect(req).map_err(|e| net(&ws_url, e))?;
        if let MaybeTlsStream::Plain(s) = socket.get_mut() {
            let _ = s.set_read_timeout(Some(TURN_TIMEOUT));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let mut remote = Remote {
            socket,
            http,
            api_key: api_key.map(str::to_string),
            agent,
            session: None,
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            tokens: Default::default(),
        };
        remote.expect_event("session.created")?;
        Ok(remote)
    }

    fn send(&mut self, v: Value) -> Result<()> {
        self.socket
            .send(Message::text(v.to_string()))
            .map_err(|e| net("websocket", e))
    }

    fn next_event(&mut self) -> Result<Value> {
        loop {
            match self.socket.read().map_err(|e| net("websocket", e))? {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).map_err(|e| net("a server event", e))
                }
                Message::Close(_) => {
                    return Err(ThauError::Runtime("the server closed the websocket".into()))
                }
                _ => continue,
            }
        }
    }

    fn expect_event(&mut self, kind: &str) -> Result<Value> {
        let v = self.next_event()?;
        match v["type"].as_str() {
            Some(t) if t == kind => Ok(v),
            Some("error") => Err(ThauError::Runtime(format!(
                "server: {}",
                v["message"].as_str().unwrap_or("error")
            ))),
            _ => Err(ThauError::Runtime(format!("expected `{kind}`, got {v}"))),
        }
    }

    /// One turn: `Ok(Err(message))` when the server refused it (an `error` event).
    pub fn say(
        &mut self,
        req: &ChatRequest,
        detect_tools: bool,
    ) -> Result<std::result::Result<Said, String>> {
        if let Some(s) = &req.session {
            if self.session.as_ref() != Some(s) {
                let name = format!("{s}-{}", self.run);
                let token = self.tokens.get(&name).cloned();
                self.send(json!({ "type": "session.update", "session": name, "token": token }))?;
                let v = self.expect_event("session.created")?;
                if let Some(t) = v["token"].as_str() {
                    self.tokens.insert(name, t.to_string());
                }
                self.session = Some(s.clone());
            }
        }
        self.send(json!({
            "type": "message.create", "message": req.message, "max_tokens": req.max_tokens,
            "temperature": req.temperature, "seed": req.seed, "detect_tools": detect_tools,
        }))?;
        let mut said = Said::default();
        loop {
            let v = self.next_event()?;
            match v["type"].as_str() {
                Some("response.delta") => {}
                Some("tool.call") => said.tool_calls.push(crate::tools::ToolCall {
                    name: v["name"].as_str().unwrap_or_default().to_string(),
                    arguments: v["arguments"].clone(),
                }),
                Some("tool.result") => {
                    let ok = v["ok"].as_bool().unwrap_or(false);
                    let err = (!ok).then(|| error_text(&v["content"]["error"]));
                    said.tool_results.push((
                        v["name"].as_str().unwrap_or_default().to_string(),
                        ok,
                        err,
                    ));
                }
                Some("response.done") => {
                    said.reply = v["text"].as_str().unwrap_or_default().to_string();
                    said.tokens = v["tokens"].as_u64().unwrap_or(0) as usize;
                    return Ok(Ok(said));
                }
                Some("error") => {
                    return Ok(Err(v["message"].as_str().unwrap_or("error").to_string()))
                }
                _ => return Err(ThauError::Runtime(format!("unexpected event {v}"))),
            }
        }
    }

    /// Rates `turn`; answers the ratings recorded so far.
    pub fn feedback(&mut self, turn: &str, rating: Rating, note: Option<&str>) -> Result<u64> {
        self.send(json!({ "type": "feedback", "turn": turn, "rating": rating, "note": note }))?;
        let v = self.expect_event("feedback.recorded")?;
        Ok(v["ratings"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum()))
    }

    fn post(&self, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}{path}", self.http);
        let mut req = self.agent.post(&url);
        if let Some(k) = &self.api_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut r = req.send_json(body).map_err(|e| net(&url, e))?;
        let status = r.status().as_u16();
        let v: Value = r.body_mut().read_json().map_err(|e| net(&url, e))?;
        if status >= 400 {
            return Err(ThauError::Runtime(format!(
                "{url}: {status} {}",
                error_text(&v["error"]["message"])
            )));
        }
        Ok(v)
    }

    /// `POST /memory/store`: how many memories were stored.
    pub fn remember(&self, text: &str) -> Result<usize> {
        let v = self.post(
            "/memory/store",
            json!({ "text": text, "source": "scenario" }),
        )?;
        Ok(v["ids"].as_array().map_or(0, Vec::len))
    }

    /// `POST /memory/recall`: the hits' texts.
    pub fn recall(&self, query: &str, limit: usize) -> Result<Vec<String>> {
        let v = self.post("/memory/recall", json!({ "query": query, "limit": limit }))?;
        Ok(v["hits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h["text"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `GET /memory/stats`: episodes by kind.
    pub fn episode_counts(&self) -> Result<BTreeMap<String, u64>> {
        let url = format!("{}/memory/stats", self.http);
        let mut r = self.agent.get(&url).call().map_err(|e| net(&url, e))?;
        let v: Value = r.body_mut().read_json().map_err(|e| net(&url, e))?;
        Ok(v["episodic"]["by_kind"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// A JSON error value as text (a string as itself).
pub fn error_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}
