//! ImageTool: runs `generate_image` — makes a picture with its backend (an
//! AUTOMATIC1111-compatible HTTP server, or the offline fallback) and keeps it under
//! `<home>/images/` with a JSON sidecar.
//!
//! Receives [`GenerateImage`] (from the ToolRouter, the API, `thau tool run`),
//! [`ImageStatsRequest`] and the common messages. Runs on a sync arbiter: image generation
//! is CPU-heavy and must never block the async arbiters.

use std::path::{Path, PathBuf};

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::actors::{guarded, ActorBase, ActorError, ThauActor};
use crate::runtime::agents::AgentSpec;
use crate::tools::image::fallback::FallbackBackend;
use crate::tools::image::http::A1111Backend;
use crate::tools::image::{
    generate_and_save, stats, GeneratedImage, ImageBackend, ImageDefaults, ImageError,
    ImageRequest, ImageStats,
};

/// Pictures listed in [`ImageStats::recent`].
const RECENT_IMAGES: usize = 10;

/// Make a picture.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<GeneratedImage, ActorError>")]
pub struct GenerateImage(pub ImageRequest);

/// Count, recent pictures, backend and device.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<ImageStats, ActorError>")]
pub struct ImageStatsRequest;

/// Which backend makes the pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// `http` when `http_url` is set, else `fallback`.
    Auto,
    Http,
    Fallback,
}

/// `[params]` of `agents/image_tool.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageToolParams {
    pub backend: BackendKind,
    /// Base URL of an AUTOMATIC1111-compatible server (`http` backend).
    pub http_url: String,
    /// Defaults for what a request leaves out.
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    pub width: u32,
    pub height: u32,
}

impl Default for ImageToolParams {
    fn default() -> Self {
        let d = ImageDefaults::default();
        ImageToolParams {
            backend: BackendKind::Auto,
            http_url: String::new(),
            num_inference_steps: d.num_inference_steps,
            guidance_scale: d.guidance_scale,
            width: d.width,
            height: d.height,
        }
    }
}

impl ImageToolParams {
    pub fn defaults(&self) -> ImageDefaults {
        ImageDefaults {
            num_inference_steps: self.num_inference_steps,
            guidance_scale: self.guidance_scale,
            width: self.width,
            height: self.height,
        }
    }

    /// Reads and checks `[params]`.
    pub fn from_spec(params: &toml::Table) -> Result<ImageToolParams, String> {
        let p: ImageToolParams = params.clone().try_into().map_err(|e| e.to_string())?;
        if p.backend == BackendKind::Http && p.http_url.trim().is_empty() {
            return Err("backend = \"http\" needs http_url".into());
        }
        // The defaults must themselves be a valid request.
        ImageRequest {
            prompt: "check".into(),
            negative_prompt: String::new(),
            num_inference_steps: None,
            guidance_scale: None,
            width: None,
            height: None,
            seed: Some(0),
        }
        .resolve(&p.defaults())
        .map_err(|e| e.to_string())?;
        Ok(p)
    }

    /// The backend these settings choose.
    pub fn backend(&self) -> Box<dyn ImageBackend> {
        match (self.backend, self.http_url.trim()) {
            (BackendKind::Fallback, _) | (BackendKind::Auto, "") => Box::new(FallbackBackend),
            (_, url) => Box::new(A1111Backend::new(url)),
        }
    }
}

/// The ImageTool actor's state.
pub struct ImageTool {
    base: ActorBase,
    params: ImageToolParams,
    backend: Box<dyn ImageBackend>,
    dir: PathBuf,
    made: u64,
}

impl ImageTool {
    pub fn new(base: ActorBase, spec: &AgentSpec, images: &Path) -> Self {
        // Validated by `Runtime::start`, so the fallback only guards direct construction.
        let params = ImageToolParams::from_spec(&spec.params).unwrap_or_default();
        ImageTool {
            base,
            backend: params.backend(),
            params,
            dir: images.to_path_buf(),
            made: 0,
        }
    }
}

impl ThauActor for ImageTool {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        format!(
            "backend {} on {}, {} pictures made",
            self.backend.name(),
            self.backend.device(),
            self.made
        )
    }
}

crate::sync_actor!(ImageTool);

/// An image error as an actor error: the caller's fault or the backend's.
pub fn image_error(e: ImageError) -> ActorError {
    match e {
        ImageError::BadRequest(m) => ActorError::BadRequest(m),
        other => ActorError::Failed(other.to_string()),
    }
}

impl Handler<GenerateImage> for ImageTool {
    type Result = Result<GeneratedImage, ActorError>;
    fn handle(&mut self, m: GenerateImage, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "GenerateImage", |me| {
            let params = m.0.resolve(&me.params.defaults()).map_err(image_error)?;
            let g =
                generate_and_save(me.backend.as_mut(), &params, &me.dir).map_err(image_error)?;
            me.made += 1;
            Ok(g)
        })
    }
}

impl Handler<ImageStatsRequest> for ImageTool {
    type Result = Result<ImageStats, ActorError>;
    fn handle(&mut self, _: ImageStatsRequest, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "ImageStatsRequest", |me| {
            Ok(stats(&me.dir, RECENT_IMAGES, me.backend.as_ref()))
        })
    }
}
