//! `/openapi.json`: the OpenAPI 3 description of the REST routes.

use super::memory::MAX_ITEMS;
use super::MAX_RECALL;

/// The OpenAPI 3 description of the REST routes.
pub fn openapi() -> serde_json::Value {
    let op = |summary: &str, body: Option<&str>| {
        let mut o = serde_json::json!({ "summary": summary, "responses": {
            "200": {"description": "OK (JSON)"},
            "4XX": {"description": "{\"error\": {\"code\", \"message\"}}"} } });
        if let Some(b) = body {
            o["requestBody"] = serde_json::json!({ "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}});
        }
        o
    };
    serde_json::json!({
        "openapi": "3.0.3",
        "info": { "title": "THAU", "version": env!("CARGO_PKG_VERSION") },
        "paths": {
            "/": { "get": { "summary": "The web page (text/html; its assets under /static/)",
                "responses": {"200": {"description": "HTML"}}}},
            "/health": { "get": op("Actors' health", None) },
            "/metrics": { "get": op("Prometheus metrics (text)", None) },
            "/chat/message": { "post": op("One chat turn", Some("ChatRequest")) },
            "/vision/chat": { "post": op("A chat turn with automatic tool detection", Some("ChatRequest")) },
            "/vision/generate": { "post": op("Generate a picture", Some("ImageRequest")) },
            "/vision/image/{filename}": { "get": {
                "summary": "A picture the ImageTool made (image/png)",
                "parameters": [{"name": "filename", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "PNG"}, "404": {"description": "no such picture"}}}},
            "/vision/stats": { "get": op("Pictures made, backend, device", None) },
            "/train/interaction": { "post": op("Feedback on a chat turn (auto-tuning)", Some("Interaction")) },
            "/train/stats": { "get": op("Learning sessions with loss curves, the model's age and size, tuning", None) },
            "/memory/store": { "post": op("Remember a text (long-term)", Some("StoreBody")) },
            "/memory/recall": { "post": op("Recall from every store", Some("RecallBody")) },
            "/memory/stats": { "get": op("Memory stores' figures", None) },
            "/memory/{store}/items": { "get": {
                "summary": "List a store (short, episodic, long), or search it with q",
                "parameters": [
                    {"name": "store", "in": "path", "required": true, "schema": {"type": "string", "enum": ["short", "episodic", "long"]}},
                    {"name": "q", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ITEMS}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "after", "in": "query", "schema": {"type": "string", "format": "uuid"}}],
                "responses": {"200": {"description": "OK (JSON)"}, "404": {"description": "no such store"}}}},
            "/memory/{store}/items/{id}": {
                "get": { "summary": "One item: an episode or memory by id, a conversation window by name",
                    "parameters": [
                        {"name": "store", "in": "path", "required": true, "schema": {"type": "string"}},
                        {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK (JSON)"}, "404": {"description": "no such item"}}},
                "delete": { "summary": "Forget one item (API key)",
                    "parameters": [
                        {"name": "store", "in": "path", "required": true, "schema": {"type": "string"}},
                        {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK (JSON)"}, "404": {"description": "no such item"}}}},
            "/events": { "get": {
                "summary": "The runtime event stream (server-sent events; message events only with all=true)",
                "parameters": [{"name": "all", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": {"description": "text/event-stream"}}}},
            "/api/version": { "get": op("Ollama: the API version THAU implements", None) },
            "/api/tags": { "get": op("Ollama: the models (thau:latest and thau:ageN)", None) },
            "/api/show": { "post": op("Ollama: a model's details, template, parameters and model_info", None) },
            "/api/ps": { "get": op("Ollama: the loaded model", None) },
            "/api/generate": { "post": op("Ollama: complete a prompt (NDJSON stream unless stream is false)", None) },
            "/api/chat": { "post": op("Ollama: the next chat message (NDJSON stream unless stream is false)", None) },
            "/api/embed": { "post": op("Ollama: embeddings of `input` (a text or a list)", None) },
            "/api/embeddings": { "post": op("Ollama (older route): the embedding of `prompt`", None) },
            "/v1/models": { "get": op("OpenAI: the models", None) },
            "/v1/models/{id}": { "get": op("OpenAI: one model (404 in OpenAI's shape when unknown)", None) },
            "/v1/chat/completions": { "post": op("OpenAI: chat completion (SSE when stream is true; tools, tool_choice, response_format)", None) },
            "/v1/embeddings": { "post": op("OpenAI: embeddings (float or base64)", None) },
            "/admin/reload": { "post": op("Serve the newest checkpoint of the data directory now (SIGHUP does the same)", None) },
            "/learn/documents": { "post": op("A document to know (the body as a file, or {text, name} as JSON; ?name=NAME): its passages go into long-term memory at once, from taught:NAME", None) },
            "/ws/chat": { "get": {
                "summary": "WebSocket chat: JSON events with a `type` (session.update, message.create, response.cancel, feedback → session.created, response.delta, tool.call, tool.result, response.done, feedback.recorded, error)",
                "responses": {"101": {"description": "switching protocols"}}}},
        },
        "components": { "schemas": {
            "ChatRequest": {"type": "object", "required": ["message"], "properties": {
                "session": {"type": "string"}, "message": {"type": "string"},
                "token": {"type": "string", "description": "the resume token of the conversation `session` names (given in the reply of the turn that opened it)"},
                "max_tokens": {"type": "integer"}, "temperature": {"type": "number"}, "seed": {"type": "integer"},
                "memory": {"type": "boolean", "description": "recall memories into the prompt (default: the [memory] recall setting); the reply's `memories` lists those used"}}},
            "ImageRequest": serde_json::from_str::<serde_json::Value>(crate::tools::BUILTIN_TOOLS[0].1)
                .map(|m| m["parameters"].clone()).unwrap_or_default(),
            "Interaction": {"type": "object", "required": ["turn", "rating"], "properties": {
                "session": {"type": "string"}, "turn": {"type": "string"},
                "rating": {"type": "string", "enum": ["up", "down"]}, "note": {"type": "string"}}},
            "StoreBody": {"type": "object", "required": ["text"], "properties": {
                "text": {"type": "string"}, "source": {"type": "string"},
                "importance": {"type": "number", "minimum": 0, "maximum": 1}}},
            "RecallBody": {"type": "object", "required": ["query"], "properties": {
                "query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RECALL}}},
        }}
    })
}
