//! ToolRouter: finds `<TOOL:name>{json}</TOOL>` calls in *model output*, checks them
//! against the tools' manifests (`tools/*.json`, JSON Schema), runs each with the tool's
//! actor and hands the results back as tool messages, so the model can continue. A
//! malformed or invalid call becomes an error message for the model and the user, never a
//! crash. Text a user typed is never parsed for calls: for users it only offers the keyword
//! intent fallback ([`DetectIntent`], switchable in `agents/tool_router.toml`).
//!
//! Receives [`HandleOutput`], [`ScanOutput`], [`RunTool`], [`DetectIntent`], [`ListTools`]
//! and the common messages. Sends [`GenerateImage`] to the ImageTool and [`Remember`]
//! (tool calls) to EpisodicMemory. Runs on its own async arbiter under a `Supervisor`.

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::actors::episodic_memory::Remember;
use crate::actors::image_tool::GenerateImage;
use crate::actors::{guarded, ActorBase, ActorError, ThauActor};
use crate::memory::{Episode, EpisodeKind};
use crate::model::tokenizer::{Message as ChatMessage, Role};
use crate::runtime::agents::AgentSpec;
use crate::tools::image::ImageRequest;
use crate::tools::{
    ToolCall, ToolCallError, ToolCallParser, ToolEvent, ToolManifest, ToolRegistry,
};

/// Parse and check model output without running anything.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<ToolEvent>, ActorError>")]
pub struct ScanOutput(pub String);

/// Run one checked call.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<ToolResult, ActorError>")]
pub struct RunTool {
    pub session: String,
    pub call: ToolCall,
}

/// Parse model output, run every valid call, and answer the visible text and one tool
/// message per call (its result or its error).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RoutedOutput, ActorError>")]
pub struct HandleOutput {
    pub session: String,
    pub output: String,
}

/// The intent fallback on a user's message: the call it asks for, if any (`None` also when
/// the fallback is switched off).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Option<ToolCall>, ActorError>")]
pub struct DetectIntent(pub String);

/// The tools' manifests.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Vec<ToolManifest>, ActorError>")]
pub struct ListTools;

/// What running a call gave.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolResult {
    pub name: String,
    pub ok: bool,
    /// The tool's result, or `{"error": ...}`.
    pub content: serde_json::Value,
}

impl ToolResult {
    /// The result as a tool turn of the conversation.
    pub fn message(&self) -> ChatMessage {
        ChatMessage::new(
            Role::Tool,
            serde_json::json!({ "tool": self.name, "ok": self.ok, "content": self.content })
                .to_string(),
        )
    }

    fn error(name: &str, e: impl std::fmt::Display) -> ToolResult {
        ToolResult {
            name: name.to_string(),
            ok: false,
            content: serde_json::json!({ "error": e.to_string() }),
        }
    }
}

/// What [`HandleOutput`] made of a response.
#[derive(Debug, Clone, Serialize)]
pub struct RoutedOutput {
    /// The response without its calls: what the user reads.
    pub text: String,
    pub calls: Vec<ToolCall>,
    /// One per call and per invalid call, in order.
    pub results: Vec<ToolResult>,
    pub errors: Vec<ToolCallError>,
}

impl RoutedOutput {
    /// The tool turns to append to the conversation.
    pub fn messages(&self) -> Vec<ChatMessage> {
        self.results.iter().map(ToolResult::message).collect()
    }
}

/// `[params]` of `agents/tool_router.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolRouterParams {
    /// Detect image requests in users' words (for a model too young to call tools).
    pub intent_fallback: bool,
    /// Largest JSON payload of a call, in bytes.
    pub max_payload: usize,
}

impl Default for ToolRouterParams {
    fn default() -> Self {
        ToolRouterParams {
            intent_fallback: true,
            max_payload: crate::tools::parser::MAX_PAYLOAD,
        }
    }
}

/// The ToolRouter actor's state.
pub struct ToolRouter {
    base: ActorBase,
    params: ToolRouterParams,
    registry: Result<std::sync::Arc<ToolRegistry>, String>,
    image: Option<Recipient<GenerateImage>>,
    episodic: Option<Recipient<Remember>>,
    routed: u64,
}

impl ToolRouter {
    pub fn new(
        base: ActorBase,
        spec: &AgentSpec,
        image: Option<Recipient<GenerateImage>>,
        episodic: Option<Recipient<Remember>>,
    ) -> Self {
        // Validated by `Runtime::start`, so the fallback only guards direct construction.
        let params = spec
            .params
            .clone()
            .try_into::<ToolRouterParams>()
            .unwrap_or_default();
        ToolRouter {
            base,
            params,
            registry: ToolRegistry::builtin().map(std::sync::Arc::new),
            image,
            episodic,
            routed: 0,
        }
    }

    fn registry(&self) -> Result<std::sync::Arc<ToolRegistry>, ActorError> {
        self.registry
            .clone()
            .map_err(|e| ActorError::Unavailable(format!("tool manifests: {e}")))
    }

    fn scan(&self, output: &str) -> Result<Vec<ToolEvent>, ActorError> {
        let reg = self.registry()?;
        let mut p = ToolCallParser::new(self.params.max_payload);
        let mut events = p.push(output);
        events.extend(p.finish());
        Ok(reg.resolve(events))
    }

    /// A future that runs `call` with its actor and records it.
    fn run(
        &self,
        session: String,
        call: ToolCall,
    ) -> impl std::future::Future<Output = ToolResult> + 'static {
        let image = self.image.clone();
        let episodic = self.episodic.clone();
        let actor = self.base.name;
        async move {
            let name = call.name.clone();
            let result = match name.as_str() {
                "generate_image" => match (image, ImageRequest::from_arguments(&call.arguments)) {
                    (None, _) => ToolResult::error(&name, "the ImageTool is not running"),
                    (_, Err(e)) => ToolResult::error(&name, e),
                    (Some(image), Ok(req)) => match image.send(GenerateImage(req)).await {
                        Ok(Ok(g)) => ToolResult {
                            name: name.clone(),
                            ok: true,
                            content: serde_json::to_value(&g).unwrap_or_default(),
                        },
                        Ok(Err(e)) => ToolResult::error(&name, e),
                        Err(e) => ToolResult::error(&name, format!("ImageTool: {e}")),
                    },
                },
                other => ToolResult::error(other, "no actor runs this tool"),
            };
            if let Some(ep) = episodic {
                ep.do_send(Remember(vec![Episode::new(
                    &session,
                    actor,
                    EpisodeKind::ToolCall,
                    format!(
                        "{} {} → {}",
                        call.name,
                        call.arguments,
                        if result.ok { "ok" } else { "error" }
                    ),
                )
                .with_metadata(serde_json::json!({ "call": call, "result": result }))]));
            }
            result
        }
    }
}

impl ThauActor for ToolRouter {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        match &self.registry {
            Ok(r) => format!(
                "{} tools, {} responses routed, intent fallback {}",
                r.manifests().count(),
                self.routed,
                if self.params.intent_fallback {
                    "on"
                } else {
                    "off"
                }
            ),
            Err(e) => format!("no tools: {e}"),
        }
    }
}

crate::supervised_actor!(ToolRouter);

impl Handler<ScanOutput> for ToolRouter {
    type Result = Result<Vec<ToolEvent>, ActorError>;
    fn handle(&mut self, m: ScanOutput, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "ScanOutput", |me| me.scan(&m.0))
    }
}

impl Handler<ListTools> for ToolRouter {
    type Result = Result<Vec<ToolManifest>, ActorError>;
    fn handle(&mut self, _: ListTools, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "ListTools", |me| {
            Ok(me.registry()?.manifests().cloned().collect())
        })
    }
}

impl Handler<DetectIntent> for ToolRouter {
    type Result = Result<Option<ToolCall>, ActorError>;
    fn handle(&mut self, m: DetectIntent, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "DetectIntent", |me| {
            if !me.params.intent_fallback {
                return Ok(None);
            }
            // Keyword detection only: a user's `<TOOL:...>` text is never parsed as a call.
            let Some(call) = crate::tools::intent::image_call(&m.0) else {
                return Ok(None);
            };
            // The detected prompt is user text: it must fit the schema like any call.
            Ok(me
                .registry()?
                .check(crate::tools::RawCall {
                    name: call.name,
                    arguments: call.arguments,
                })
                .ok())
        })
    }
}

impl Handler<RunTool> for ToolRouter {
    type Result = ResponseFuture<Result<ToolResult, ActorError>>;
    fn handle(&mut self, m: RunTool, ctx: &mut Context<Self>) -> Self::Result {
        let checked = guarded(self, ctx, "RunTool", |me| {
            me.registry()?
                .check(crate::tools::RawCall {
                    name: m.call.name.clone(),
                    arguments: m.call.arguments.clone(),
                })
                .map_err(|e| ActorError::BadRequest(e.to_string()))
        });
        match checked {
            Ok(call) => {
                let fut = self.run(m.session, call);
                Box::pin(async move { Ok(fut.await) })
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

impl Handler<HandleOutput> for ToolRouter {
    type Result = ResponseFuture<Result<RoutedOutput, ActorError>>;
    fn handle(&mut self, m: HandleOutput, ctx: &mut Context<Self>) -> Self::Result {
        let events = match guarded(self, ctx, "HandleOutput", |me| me.scan(&m.output)) {
            Ok(e) => e,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.routed += 1;
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut errors = Vec::new();
        // Results in order: a call's future, or an invalid call's error.
        let mut pending: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ToolResult>>>> =
            Vec::new();
        for e in events {
            match e {
                ToolEvent::Text { text: t } => text.push_str(&t),
                ToolEvent::Call { call } => {
                    calls.push(call.clone());
                    pending.push(Box::pin(self.run(m.session.clone(), call)));
                }
                ToolEvent::Invalid { error } => {
                    let name = match &error {
                        ToolCallError::BadName { name }
                        | ToolCallError::BadJson { name, .. }
                        | ToolCallError::Oversize { name, .. }
                        | ToolCallError::MissingClose { name }
                        | ToolCallError::Unterminated { name }
                        | ToolCallError::UnknownTool { name, .. }
                        | ToolCallError::Schema { name, .. } => name.clone(),
                    };
                    let r = ToolResult::error(&name, &error);
                    errors.push(error);
                    pending.push(Box::pin(async move { r }));
                }
            }
        }
        Box::pin(async move {
            let mut results = Vec::with_capacity(pending.len());
            // One after another: tools are CPU-heavy, and their order is the model's.
            for f in pending {
                results.push(f.await);
            }
            Ok(RoutedOutput {
                text: text.trim().to_string(),
                calls,
                results,
                errors,
            })
        })
    }
}
