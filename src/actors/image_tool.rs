//! ImageTool: runs `generate_image` — makes a picture with its backend (Stable Diffusion
//! in candle from local weights, an AUTOMATIC1111-compatible HTTP server, or the offline
//! fallback) and keeps it under
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
use crate::tools::image::sd::StableDiffusionBackend;
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
    /// `stable_diffusion` when `sd_weights` is set, else `http` when `http_url` is set,
    /// else `fallback`.
    Auto,
    StableDiffusion,
    Http,
    Fallback,
}

/// `[params]` of `agents/image_tool.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageToolParams {
    pub backend: BackendKind,
    /// A Stable Diffusion weights directory in the diffusers layout (`stable_diffusion`).
    pub sd_weights: String,
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
            sd_weights: String::new(),
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
        if p.backend == BackendKind::StableDiffusion && p.sd_weights.trim().is_empty() {
            return Err("backend = \"stable_diffusion\" needs sd_weights".into());
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

    /// The backend these settings choose. Stable Diffusion weights that fail to load are
    /// an error when asked for by name; under `auto` the next backend is used and the
    /// reason logged.
    pub fn backend(&self) -> Result<Box<dyn ImageBackend>, String> {
        let sd = || {
            StableDiffusionBackend::load(Path::new(self.sd_weights.trim()), sd_device())
                .map(|b| Box::new(b) as Box<dyn ImageBackend>)
                .map_err(|e| e.to_string())
        };
        let url = self.http_url.trim();
        let http = || Box::new(A1111Backend::new(url)) as Box<dyn ImageBackend>;
        Ok(match self.backend {
            BackendKind::StableDiffusion => sd()?,
            BackendKind::Http => http(),
            BackendKind::Fallback => Box::new(FallbackBackend),
            BackendKind::Auto => {
                let loaded = if self.sd_weights.trim().is_empty() {
                    None
                } else {
                    sd().inspect_err(
                        |e| tracing::warn!(error = %e, "Stable Diffusion weights not usable"),
                    )
                    .ok()
                };
                match loaded {
                    Some(b) => b,
                    None if !url.is_empty() => http(),
                    None => Box::new(FallbackBackend),
                }
            }
        })
    }
}

/// CUDA when built with it and a GPU is there, else the CPU.
fn sd_device() -> candle_core::Device {
    candle_core::Device::cuda_if_available(0).unwrap_or(candle_core::Device::Cpu)
}

/// The ImageTool actor's state.
pub struct ImageTool {
    base: ActorBase,
    params: ImageToolParams,
    backend: Result<Box<dyn ImageBackend>, String>,
    dir: PathBuf,
    made: u64,
}

impl ImageTool {
    pub fn new(base: ActorBase, spec: &AgentSpec, images: &Path) -> Self {
        // Validated by `Runtime::start`, so the fallback only guards direct construction.
        let params = ImageToolParams::from_spec(&spec.params).unwrap_or_default();
        let backend = params.backend();
        if let Err(e) = &backend {
            tracing::error!(error = %e, "image backend unavailable");
        }
        ImageTool {
            base,
            backend,
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
        match &self.backend {
            Ok(b) => format!(
                "backend {} on {}, {} pictures made",
                b.name(),
                b.device(),
                self.made
            ),
            Err(e) => format!("no image backend: {e}"),
        }
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
            let backend = me
                .backend
                .as_mut()
                .map_err(|e| ActorError::Unavailable(format!("no image backend: {e}")))?;
            let g = generate_and_save(backend.as_mut(), &params, &me.dir).map_err(image_error)?;
            me.made += 1;
            Ok(g)
        })
    }
}

impl Handler<ImageStatsRequest> for ImageTool {
    type Result = Result<ImageStats, ActorError>;
    fn handle(&mut self, _: ImageStatsRequest, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "ImageStatsRequest", |me| match &me.backend {
            Ok(b) => Ok(stats(&me.dir, RECENT_IMAGES, b.as_ref())),
            Err(e) => Err(ActorError::Unavailable(format!("no image backend: {e}"))),
        })
    }
}
