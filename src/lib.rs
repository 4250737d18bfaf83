//! THAU: an actor runtime in which a language model that the project trains itself, from
//! scratch, keeps learning on its own.
//!
//! - [`runtime`]: the actix actor system ([`runtime::Runtime`]), agent settings, events.
//! - [`actors`]: one module per actor.
//! - [`config`], [`home`]: layered configuration and the data directory.
//! - [`model`]: the THAU model, its tokenizer, training and growth.
//! - [`memory`], [`learn`]: the memory stores and the self-learning loop's parts.
//! - [`tools`]: tool calls (`<TOOL:name>{json}</TOOL>`), their manifests and the image
//!   backends.
//! - [`chat`]: one chat turn through the actors; [`replay`]: scenario files, replayed.
//! - [`server`]: the HTTP API (`thau serve`), with warp.
//! - [`status`]: what `thau status` reports.

pub mod actors;
pub mod alloc;
pub mod bench;
pub mod chat;
pub mod commands;
pub mod config;
pub mod error;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod fuzzing;
pub mod hf;
pub mod home;
pub mod learn;
pub mod memory;
pub mod model;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod status;
#[doc(hidden)]
pub mod testing;
pub mod text;
pub mod tools;

pub use error::{Result, ThauError};
