//! [`ApiError`]: the one error type of the HTTP API, and [`recover`], the one place where
//! every rejection — ours or warp's (unknown route, wrong method, oversize or malformed
//! body) — becomes a JSON response with its status: `{"error": {"code", "message"}}` on
//! THAU's routes, and on the routes of the APIs THAU speaks ([`Shape`]) the body their
//! clients parse: Ollama's `{"error": "message"}` under `/api`, OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` under `/v1`.

use std::convert::Infallible;

use serde::Serialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::{Rejection, Reply};

use crate::actors::{ActorError, AskError};

/// An API failure: its HTTP status, a stable code and a message for people.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs the API key (Authorization: Bearer KEY, or X-API-Key)",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }

    /// An actor's answer, or its mailbox failing.
    pub fn from_actor(actor: &str, e: ActorError) -> Self {
        match e {
            ActorError::BadRequest(m) => Self::bad_request(m),
            ActorError::NotFound(m) => Self::not_found(m),
            ActorError::Unavailable(m) => Self::unavailable(format!("{actor}: {m}")),
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "actor_failed",
                format!("{actor}: {other}"),
            ),
        }
    }

    pub fn mailbox(actor: &str, e: actix::MailboxError) -> Self {
        Self::unavailable(format!("{actor} is not answering: {e}"))
    }

    pub fn reply(&self) -> warp::reply::Response {
        self.reply_as(Shape::Thau)
    }

    /// This error in the body `shape`'s clients parse.
    pub fn reply_as(&self, shape: Shape) -> warp::reply::Response {
        let body = match shape {
            Shape::Thau => json!({ "error": self }),
            Shape::Ollama => json!({ "error": self.message }),
            Shape::OpenAi => json!({ "error": {
                "message": self.message,
                "type": openai_type(self.status),
                "param": null,
                "code": self.code,
            }}),
        };
        warp::reply::with_status(warp::reply::json(&body), self.status).into_response()
    }
}

/// Whose error body a route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// THAU's own routes.
    Thau,
    /// Ollama's routes (`/api/...`).
    Ollama,
    /// OpenAI's routes (`/v1/...`).
    OpenAi,
}

/// OpenAI's error `type` for a status (what its clients show and some branch on).
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// An actor's reply that gave no value: `reply("inference", addr.send(m).await)?` in a route.
impl From<AskError> for ApiError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Actor { actor, error } => Self::from_actor(&actor, error),
            AskError::Mailbox { actor, error } => Self::mailbox(&actor, error),
            timeout @ AskError::Timeout { .. } => Self::unavailable(timeout.to_string()),
        }
    }
}

/// A conversation that cannot be opened: a bad name (400), someone else's (403).
impl From<super::owners::OwnerError> for ApiError {
    fn from(e: super::owners::OwnerError) -> Self {
        use super::owners::OwnerError;
        match e {
            OwnerError::BadName => Self::bad_request(e.to_string()),
            OwnerError::NotYours(_) => Self::forbidden(e.to_string()),
        }
    }
}

/// Lets a route write `reply(...)?` directly: the rejection carries the [`ApiError`].
impl From<AskError> for warp::Rejection {
    fn from(e: AskError) -> Self {
        warp::reject::custom(ApiError::from(e))
    }
}

/// Turns any rejection into a JSON error response of THAU's routes.
pub async fn recover(r: Rejection) -> Result<warp::reply::Response, Infallible> {
    Ok(api_error(&r).reply())
}

/// [`recover`] for the Ollama routes: Ollama's error body.
pub async fn recover_ollama(r: Rejection) -> Result<warp::reply::Response, Infallible> {
    Ok(api_error(&r).reply_as(Shape::Ollama))
}

/// [`recover`] for the OpenAI routes: OpenAI's error body.
pub async fn recover_openai(r: Rejection) -> Result<warp::reply::Response, Infallible> {
    Ok(api_error(&r).reply_as(Shape::OpenAi))
}

/// What a rejection means, as an [`ApiError`].
fn api_error(r: &Rejection) -> ApiError {
    if let Some(e) = r.find::<ApiError>() {
        e.clone()
    } else if r.is_not_found() {
        ApiError::not_found("no such route (see /openapi.json)")
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds {} bytes", super::MAX_BODY_BYTES),
        )
    } else if let Some(e) = r.find::<warp::filters::body::BodyDeserializeError>() {
        ApiError::bad_request(format!("malformed JSON body: {e}"))
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        )
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request(e.to_string())
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send a Content-Length header",
        )
    } else {
        tracing::warn!(rejection = ?r, "unhandled rejection");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be handled",
        )
    }
}
