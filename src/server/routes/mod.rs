//! The REST routes: one documented handler per route, each given the [`AppState`]. This
//! file builds them all ([`all`]) and holds the chat, training, event and picture
//! handlers; the memory routes live in [`memory`], teaching documents in [`teach`];
//! `/openapi.json` describes every route
//! ([`openapi()`]).

mod compat;
mod memory;
mod openapi;
mod teach;

pub use openapi::openapi;

use memory::{
    memory_forget, memory_item, memory_items, memory_recall, memory_stats, memory_store, ItemsQuery,
};

use serde::Deserialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use std::net::SocketAddr;

use super::chat::{chat_turn, open_conversation, ChatRequest};
use super::error::ApiError;
use super::{AppState, MAX_BODY_BYTES};
use crate::actors::image_tool::{GenerateImage, ImageStatsRequest};
use crate::actors::reply;
use crate::actors::tuner::{Feedback, TuningStatus};
use crate::learn::tuning::Rating;
use crate::tools::image::ImageRequest;

pub(super) type Resp = Result<warp::reply::Response, Rejection>;

/// Largest number of recalled memories per request.
pub(super) const MAX_RECALL: usize = 50;

pub(super) fn json(v: &impl serde::Serialize) -> warp::reply::Response {
    warp::reply::json(v).into_response()
}

/// Every route, unrecovered (see [`super::routes`]).
pub fn all(
    st: AppState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let state = {
        let st = st.clone();
        warp::any().map(move || st.clone())
    };
    let key = st.api_key.clone();
    let ws = warp::path!("ws" / "chat")
        .and(authorized_query(key.clone()))
        .and(warp::ws())
        .and(state.clone())
        .and_then(|ws: warp::ws::Ws, st: AppState| async move {
            let permit = st.limits.open_session().map_err(Rejection::from)?;
            Ok::<_, Rejection>(
                ws.max_message_size(super::ws::MAX_WS_MESSAGE)
                    .on_upgrade(move |socket| super::ws::session(socket, st, permit))
                    .into_response(),
            )
        });
    // Mutating and training routes: the API key when one is set, and a JSON body.
    let post = move |p: &'static str| {
        let key = key.clone();
        // Path first: a GET to an unknown path is a 404, not a 405 from this route.
        warp::path(p).and(warp::post()).and(authorized(key))
    };

    let health = warp::path!("health")
        .and(warp::get())
        .and(state.clone())
        .and_then(health);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(state.clone())
        .and_then(metrics);
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .map(|| json(&openapi()));
    let chat = post("chat")
        .and(warp::path!("message"))
        .and(state.clone())
        .and(warp::addr::remote())
        .and(json_body())
        .and_then(chat_message);
    let interaction = post("train")
        .and(warp::path!("interaction"))
        .and(state.clone())
        .and(json_body())
        .and_then(train_interaction);
    let train_stats = warp::path!("train" / "stats")
        .and(warp::get())
        .and(state.clone())
        .and_then(train_stats);
    let store = post("memory")
        .and(warp::path!("store"))
        .and(state.clone())
        .and(json_body())
        .and_then(memory_store);
    let recall = post("memory")
        .and(warp::path!("recall"))
        .and(conversation_token())
        .and(state.clone())
        .and(json_body())
        .and_then(memory_recall);
    let documents = post("learn")
        .and(warp::path!("documents"))
        .and(warp::query::<teach::DocumentQuery>())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::content_length_limit(
            crate::memory::passages::MAX_DOCUMENT_BYTES,
        ))
        .and(warp::body::bytes())
        .and(state.clone())
        .and_then(teach::learn_documents);
    let reload = post("admin")
        .and(warp::path!("reload"))
        .and(state.clone())
        .and_then(admin_reload);
    let memory_stats = warp::path!("memory" / "stats")
        .and(warp::get())
        .and(state.clone())
        .and_then(memory_stats);
    let generate = post("vision")
        .and(warp::path!("generate"))
        .and(state.clone())
        .and(json_body())
        .and_then(vision_generate);
    let vision_chat = post("vision")
        .and(warp::path!("chat"))
        .and(state.clone())
        .and(warp::addr::remote())
        .and(json_body())
        .and_then(vision_chat);
    let image = warp::path!("vision" / "image" / String)
        .and(warp::get())
        .and(state.clone())
        .and_then(vision_image);
    // Memory contents and the event stream are private too: the key, in a header or (for
    // a browser's EventSource) in the query.
    // A conversation's window is its owner's: the routes also take its resume token.
    let items = warp::path!("memory" / String / "items")
        .and(warp::get())
        .and(authorized_query(st.api_key.clone()))
        .and(warp::query::<ItemsQuery>())
        .and(conversation_token())
        .and(state.clone())
        .and_then(memory_items);
    let item = warp::path!("memory" / String / "items" / String)
        .and(warp::get())
        .and(authorized_query(st.api_key.clone()))
        .and(conversation_token())
        .and(state.clone())
        .and_then(memory_item);
    let forget = warp::path!("memory" / String / "items" / String)
        .and(warp::delete())
        .and(authorized(st.api_key.clone()))
        .and(conversation_token())
        .and(state.clone())
        .and_then(memory_forget);
    let events = warp::path!("events")
        .and(warp::get())
        .and(authorized_query(st.api_key.clone()))
        .and(warp::query::<EventsQuery>())
        .and(state.clone())
        .map(events);
    let vision_stats = warp::path!("vision" / "stats")
        .and(warp::get())
        .and(state)
        .and_then(vision_stats);
    // Boxed in groups: one long chain of `or`s overflows the compiler's type recursion.
    let core = health
        .or(ws)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .boxed();
    let learn_memory = chat
        .or(interaction)
        .unify()
        .or(train_stats)
        .unify()
        .or(store)
        .unify()
        .or(recall)
        .unify()
        .or(memory_stats)
        .unify()
        .or(documents)
        .unify()
        .or(reload)
        .unify()
        .boxed();
    let inspect = items
        .or(item)
        .unify()
        .or(forget)
        .unify()
        .or(events)
        .unify()
        .boxed();
    let vision = generate
        .or(vision_chat)
        .unify()
        .or(image)
        .unify()
        .or(vision_stats)
        .unify()
        .boxed();
    let compat = compat::routes(st.clone(), st.api_key.clone()).boxed();
    core.or(learn_memory)
        .unify()
        .or(inspect)
        .unify()
        .or(super::web::routes())
        .unify()
        .or(vision)
        .unify()
        .or(compat)
        .unify()
}

/// A JSON body of at most [`MAX_BODY_BYTES`], whatever its content type says (clients of
/// the Ollama API often send none, or a form type, as `curl -d` does).
fn json_body<T: serde::de::DeserializeOwned + Send>(
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(MAX_BODY_BYTES)
        .and(warp::body::bytes())
        .and_then(|b: bytes::Bytes| async move {
            serde_json::from_slice::<T>(&b).map_err(|e| {
                Rejection::from(ApiError::bad_request(format!("malformed JSON body: {e}")))
            })
        })
}

/// Passes when no API key is set, or the request carries it (`Authorization: Bearer KEY`
/// or `X-API-Key: KEY`).
fn authorized(
    key: Option<std::sync::Arc<str>>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("x-api-key"))
        .and_then(move |auth: Option<String>, x: Option<String>| {
            let key = key.clone();
            async move {
                let Some(key) = key else { return Ok(()) };
                let bearer = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
                if bearer == Some(&*key) || x.as_deref() == Some(&*key) {
                    Ok(())
                } else {
                    Err(Rejection::from(ApiError::unauthorized()))
                }
            }
        })
        .untuple_one()
}

/// [`authorized`] for routes that browsers open without setting headers (the WebSocket,
/// an EventSource, links): the key may also come as `?api_key=KEY`.
fn authorized_query(
    key: Option<std::sync::Arc<str>>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let query = warp::query::<std::collections::HashMap<String, String>>()
        .or(warp::any().map(std::collections::HashMap::new))
        .unify();
    warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("x-api-key"))
        .and(query)
        .and_then(
            move |auth: Option<String>,
                  x: Option<String>,
                  q: std::collections::HashMap<String, String>| {
                let key = key.clone();
                async move {
                    let Some(key) = key else { return Ok(()) };
                    let bearer = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
                    let given = [bearer, x.as_deref(), q.get("api_key").map(String::as_str)];
                    if given.contains(&Some(&*key)) {
                        Ok(())
                    } else {
                        Err(Rejection::from(ApiError::unauthorized()))
                    }
                }
            },
        )
        .untuple_one()
}

/// A conversation's resume token, when the request carries one (`X-Conversation-Token`,
/// or `?token=` on the GET routes browsers open).
fn conversation_token() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    let query = warp::query::<std::collections::HashMap<String, String>>()
        .or(warp::any().map(std::collections::HashMap::new))
        .unify();
    warp::header::optional::<String>("x-conversation-token")
        .and(query)
        .map(
            |h: Option<String>, mut q: std::collections::HashMap<String, String>| {
                h.or_else(|| q.remove("token"))
            },
        )
}

/// `GET /health`: whether every actor runs, with restarts and notes.
async fn health(st: AppState) -> Resp {
    let actors = st.rt.status().await;
    if let (Some(l), Some(i)) = (&st.learning, &st.rt.addrs.inference) {
        if !l.snapshot().model_ready
            && matches!(i.send(crate::actors::inference::Served).await, Ok(Ok(_)))
        {
            l.model_served();
        }
    }
    let ok = actors.iter().all(|a| !a.enabled || a.running);
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "actors": actors,
        // `thau serve --learn`: the background learning, and whether chat can answer yet.
        "learning": st.learning.as_ref().map(|l| l.snapshot()),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(warp::reply::with_status(json(&body), code).into_response())
}

/// `GET /metrics`: Prometheus text — requests per route and status, and per-actor
/// messages handled and restarts.
async fn metrics(st: AppState) -> Resp {
    let mut text = st.metrics.render();
    text.push_str("# HELP thau_actor_messages_total Messages an actor handled.\n# TYPE thau_actor_messages_total counter\n");
    let actors = st.rt.status().await;
    for a in &actors {
        text.push_str(&format!(
            "thau_actor_messages_total{{actor=\"{}\"}} {}\n",
            a.name, a.handled
        ));
    }
    text.push_str("# HELP thau_actor_restarts_total Restarts after a panic.\n# TYPE thau_actor_restarts_total counter\n");
    for a in &actors {
        text.push_str(&format!(
            "thau_actor_restarts_total{{actor=\"{}\"}} {}\n",
            a.name, a.restarts
        ));
    }
    Ok(warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response())
}

/// Whose allowance a REST chat turn takes: its session's, else its client address's.
fn rate_key(req: &ChatRequest, client: Option<SocketAddr>) -> String {
    match (&req.session, client) {
        (Some(s), _) => format!("session:{s}"),
        (None, Some(a)) => format!("client:{}", a.ip()),
        (None, None) => "client:unknown".into(),
    }
}

/// `POST /chat/message`: one chat turn (tool calls the model writes are run).
async fn chat_message(st: AppState, client: Option<SocketAddr>, req: ChatRequest) -> Resp {
    Ok(json(&owned_turn(&st, client, req, false).await?))
}

/// `POST /vision/chat`: a chat turn with automatic tool detection: an image request in
/// the user's words runs `generate_image` even when the model does not call it.
async fn vision_chat(st: AppState, client: Option<SocketAddr>, req: ChatRequest) -> Resp {
    Ok(json(&owned_turn(&st, client, req, true).await?))
}

/// A REST chat turn in the conversation the request may open ([`open_conversation`]);
/// the reply carries the token of a conversation it created. A named conversation is
/// checked before its allowance is taken, so no one spends another's turns; a new one is
/// opened after the client's allowance is taken, so a flood opens nothing.
async fn owned_turn(
    st: &AppState,
    client: Option<SocketAddr>,
    mut req: ChatRequest,
    detect_tools: bool,
) -> Result<super::chat::ChatReply, ApiError> {
    let allowance = rate_key(&req, client);
    let opened = if req.session.is_some() {
        let o = open_conversation(st, req.session.as_deref(), req.token.as_deref())?;
        st.limits.take_turn(&allowance)?;
        o
    } else {
        st.limits.take_turn(&allowance)?;
        open_conversation(st, None, None)?
    };
    req.session = Some(opened.session);
    let mut answer = chat_turn(st, req, detect_tools, None)
        .await
        .map_err(|e| st.explain(e))?;
    answer.token = opened.token;
    Ok(answer)
}

/// `POST /admin/reload` (API key): serve the newest checkpoint in the data directory now,
/// such as one `thau train` or `thau grow` wrote while the server ran (SIGHUP does the
/// same). Answers the model now served; a checkpoint that does not load leaves the served
/// model as it was (an error with the reason).
async fn admin_reload(st: AppState) -> Resp {
    let info = reply(
        "inference",
        st.inference()?.send(crate::actors::inference::Reload).await,
    )?;
    Ok(json(
        &serde_json::json!({ "reloaded": true, "model": info }),
    ))
}

/// Body of `POST /train/interaction`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Interaction {
    session: Option<String>,
    /// The rated turn.
    turn: String,
    /// `up` or `down`.
    rating: Rating,
    note: Option<String>,
}

/// `POST /train/interaction`: feedback on a chat turn, for auto-tuning.
async fn train_interaction(st: AppState, i: Interaction) -> Resp {
    let tuner = st
        .rt
        .addrs
        .tuner
        .clone()
        .ok_or_else(|| ApiError::unavailable("the Tuner is not running"))?;
    if i.turn.trim().is_empty() {
        return Err(ApiError::bad_request("`turn` is empty").into());
    }
    let out = reply(
        "tuner",
        tuner
            .send(Feedback {
                session: i.session.unwrap_or_else(|| "api".into()),
                turn: i.turn,
                rating: i.rating,
                note: i.note,
            })
            .await,
    )?;
    Ok(json(&out))
}

/// `GET /train/stats`: the learning sessions (with their loss curves), the newest model's
/// age and size, and the tuning state.
async fn train_stats(st: AppState) -> Resp {
    let sessions = crate::commands::learn::sessions(&st.rt.home)
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let tuning = match &st.rt.addrs.tuner {
        Some(t) => {
            serde_json::to_value(reply("tuner", t.send(TuningStatus).await)?).unwrap_or_default()
        }
        None => serde_json::Value::Null,
    };
    let summary: Vec<_> = sessions
        .iter()
        .map(|s| {
            serde_json::json!({
                "session": s.session, "seconds": s.seconds, "age": s.age,
                "questions": s.questions_asked, "gaps_opened": s.gaps.opened,
                "gaps_closed": s.gaps.closed, "rounds": s.rounds,
                "probe_loss_before": s.probe_loss_before, "probe_loss_after": s.probe_loss_after,
                "accuracy_before": s.accuracy_before, "accuracy_after": s.accuracy_after,
                "curve": s.curve,
            })
        })
        .collect();
    // The model as the newest checkpoint describes it (what Inference serves once loaded).
    let model = crate::model::checkpoint::newest(&st.rt.home.checkpoints())
        .ok()
        .flatten()
        .and_then(|dir| std::fs::read(dir.join(crate::model::checkpoint::CONFIG)).ok())
        .and_then(|b| serde_json::from_slice::<crate::model::ModelConfig>(&b).ok())
        .map(|c| serde_json::json!({ "age": c.age, "params": c.param_count(), "d_model": c.d_model, "layers": c.n_layers }));
    Ok(json(
        &serde_json::json!({ "sessions": summary, "tuning": tuning, "model": model }),
    ))
}

/// The query of `GET /events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Also the `message` events (one per message an actor handles: many).
    all: Option<bool>,
    /// Read by the key check.
    #[allow(dead_code)]
    api_key: Option<String>,
}

/// `GET /events[?all=true]`: the runtime's event stream as server-sent events, one JSON
/// [`crate::runtime::events::RuntimeEvent`] each (event name: its `kind`) — learning steps,
/// restarts, reports — from the moment of the request. The web page's learning dashboard
/// listens to it. A client too slow to keep up loses the oldest events, not the stream.
fn events(q: EventsQuery, st: AppState) -> warp::reply::Response {
    use crate::runtime::events::EventKind;
    use futures_util::StreamExt;
    let all = q.all.unwrap_or(false);
    let rx = st.rt.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((ev, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |ev| {
        let keep = all || !matches!(ev.kind, EventKind::Message { .. });
        async move { keep }
    })
    .map(|ev| {
        let name = serde_json::to_value(&ev)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string))
            .unwrap_or_else(|| "event".into());
        warp::sse::Event::default()
            .event(name)
            .json_data(&ev)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response()
}

/// `POST /vision/generate`: a picture from the `generate_image` arguments.
async fn vision_generate(st: AppState, req: ImageRequest) -> Resp {
    let image = st
        .rt
        .addrs
        .image_tool
        .clone()
        .ok_or_else(|| ApiError::unavailable("the ImageTool is not running"))?;
    let g = reply("image_tool", image.send(GenerateImage(req)).await)?;
    let mut v = serde_json::to_value(&g).unwrap_or_default();
    v["url"] = format!("/vision/image/{}", g.file).into();
    Ok(warp::reply::with_status(json(&v), StatusCode::CREATED).into_response())
}

/// `GET /vision/image/{filename}`: a picture the ImageTool made — nothing else under any
/// name (no paths, `..`, encoded separators, hidden files or links).
async fn vision_image(name: String, st: AppState) -> Resp {
    let Some(path) = crate::tools::image::served_file(&st.rt.home.images(), &name) else {
        return Err(ApiError::not_found(format!("no picture named `{name}`")).into());
    };
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::not_found(format!("{name}: {e}")))?;
    Ok(warp::reply::with_header(bytes, "content-type", "image/png").into_response())
}

/// `GET /vision/stats`: pictures made, the newest ones, backend and device.
async fn vision_stats(st: AppState) -> Resp {
    let image = st
        .rt
        .addrs
        .image_tool
        .clone()
        .ok_or_else(|| ApiError::unavailable("the ImageTool is not running"))?;
    Ok(json(&reply(
        "image_tool",
        image.send(ImageStatsRequest).await,
    )?))
}
