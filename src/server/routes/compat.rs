//! The routes of the APIs THAU speaks ([`crate::server::compat`]): Ollama's under `/api`
//! and OpenAI's under `/v1`, each group answering every error — unknown route and wrong
//! method included — in its API's shape.

use warp::{Filter, Rejection};

use super::{authorized, json_body};
use crate::server::compat::{ollama, openai};
use crate::server::error::{recover_ollama, recover_openai};
use crate::server::AppState;

/// Ollama's and OpenAI's routes. GET routes are open (they list models); POST routes take
/// the API key when one is set, as THAU's own do.
pub fn routes(
    st: AppState,
    key: Option<std::sync::Arc<str>>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let state = warp::any().map(move || st.clone());
    let post = move || warp::post().and(authorized(key.clone()));

    let version = warp::path!("version")
        .and(warp::get())
        .and_then(ollama::version);
    let tags = warp::path!("tags")
        .and(warp::get())
        .and(state.clone())
        .and_then(ollama::tags);
    let ps = warp::path!("ps")
        .and(warp::get())
        .and(state.clone())
        .and_then(ollama::ps);
    let show = warp::path!("show")
        .and(post())
        .and(state.clone())
        .and(json_body())
        .and_then(ollama::show);
    let generate = warp::path!("generate")
        .and(post())
        .and(state.clone())
        .and(json_body())
        .and_then(ollama::generate);
    let chat = warp::path!("chat")
        .and(post())
        .and(state.clone())
        .and(json_body())
        .and_then(ollama::chat);
    let embed = warp::path!("embed")
        .and(post())
        .and(state.clone())
        .and(json_body())
        .and_then(|st, b| ollama::embed(st, b, false));
    let embeddings = warp::path!("embeddings")
        .and(post())
        .and(state.clone())
        .and(json_body())
        .and_then(|st, b| ollama::embed(st, b, true));
    // The prefix is matched outside `recover`: another prefix must stay a rejection that
    // the next group (or THAU's own 404) takes.
    let api = warp::path("api")
        .and(
            version
                .or(tags)
                .unify()
                .or(ps)
                .unify()
                .or(show)
                .unify()
                .or(generate)
                .unify()
                .or(chat)
                .unify()
                .or(embed)
                .unify()
                .or(embeddings)
                .unify()
                .recover(recover_ollama)
                .unify(),
        )
        .boxed();

    let models = warp::path!("models")
        .and(warp::get())
        .and(state.clone())
        .and_then(openai::models);
    let model = warp::path!("models" / String)
        .and(warp::get())
        .and(state.clone())
        .and_then(openai::model);
    let completions = warp::path!("chat" / "completions")
        .and(post())
        .and(state.clone())
        .and(json_body())
        .and_then(openai::chat);
    let embeddings = warp::path!("embeddings")
        .and(post())
        .and(state)
        .and(json_body())
        .and_then(openai::embeddings);
    let v1 = warp::path("v1")
        .and(
            models
                .or(model)
                .unify()
                .or(completions)
                .unify()
                .or(embeddings)
                .unify()
                .recover(recover_openai)
                .unify(),
        )
        .boxed();
    api.or(v1).unify()
}
