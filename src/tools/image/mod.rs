//! Image generation for the `generate_image` tool: the request and its bounds
//! ([`ImageRequest`] → [`ImageParams`]), the [`ImageBackend`] trait and its backends —
//! [`http::A1111Backend`] (an AUTOMATIC1111-compatible `/sdapi/v1/txt2img` server) and
//! [`fallback::FallbackBackend`] (no weights: a deterministic picture drawn from the prompt,
//! which says it is the fallback) — and how pictures are kept: PNG files under
//! `<home>/images/` with a JSON metadata sidecar each ([`save`], [`stats`]).

pub mod fallback;
pub mod http;
pub mod sd;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Smallest and largest side in pixels (Stable Diffusion works in multiples of 8).
pub const MIN_SIDE: u32 = 64;
pub const MAX_SIDE: u32 = 1024;
/// Most denoising steps.
pub const MAX_STEPS: u32 = 150;
/// Largest classifier-free guidance scale.
pub const MAX_GUIDANCE: f64 = 30.0;
/// Longest prompt, in characters.
pub const MAX_PROMPT: usize = 1000;

/// Why a picture could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum ImageError {
    #[error("invalid image request: {0}")]
    BadRequest(String),
    #[error("image backend failed: {0}")]
    Backend(String),
    #[error("{0}")]
    Io(String),
}

/// The `generate_image` arguments, as the manifest (`tools/generate_image.json`) has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    pub num_inference_steps: Option<u32>,
    pub guidance_scale: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub seed: Option<u64>,
}

/// Defaults for what a request leaves out (`[params]` of `agents/image_tool.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageDefaults {
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    pub width: u32,
    pub height: u32,
}

impl Default for ImageDefaults {
    fn default() -> Self {
        ImageDefaults {
            num_inference_steps: 20,
            guidance_scale: 7.5,
            width: 512,
            height: 512,
        }
    }
}

/// A request with every parameter decided and checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
}

impl ImageRequest {
    /// Reads tool-call arguments.
    pub fn from_arguments(args: &serde_json::Value) -> Result<ImageRequest, ImageError> {
        serde_json::from_value(args.clone()).map_err(|e| ImageError::BadRequest(e.to_string()))
    }

    /// Fills in the defaults and checks every bound; a missing seed is drawn at random.
    pub fn resolve(&self, d: &ImageDefaults) -> Result<ImageParams, ImageError> {
        let bad = |m: String| Err(ImageError::BadRequest(m));
        let prompt = self.prompt.trim();
        if prompt.is_empty() {
            return bad("the prompt is empty".into());
        }
        if prompt.chars().count() > MAX_PROMPT || self.negative_prompt.chars().count() > MAX_PROMPT
        {
            return bad(format!("prompts are limited to {MAX_PROMPT} characters"));
        }
        let p = ImageParams {
            prompt: prompt.to_string(),
            negative_prompt: self.negative_prompt.trim().to_string(),
            num_inference_steps: self.num_inference_steps.unwrap_or(d.num_inference_steps),
            guidance_scale: self.guidance_scale.unwrap_or(d.guidance_scale),
            width: self.width.unwrap_or(d.width),
            height: self.height.unwrap_or(d.height),
            seed: self.seed.unwrap_or_else(rand::random),
        };
        for (what, side) in [("width", p.width), ("height", p.height)] {
            if !(MIN_SIDE..=MAX_SIDE).contains(&side) || side % 8 != 0 {
                return bad(format!(
                    "{what} {side} must be a multiple of 8 within {MIN_SIDE}..={MAX_SIDE}"
                ));
            }
        }
        if !(1..=MAX_STEPS).contains(&p.num_inference_steps) {
            return bad(format!(
                "num_inference_steps {} is outside 1..={MAX_STEPS}",
                p.num_inference_steps
            ));
        }
        if !(0.0..=MAX_GUIDANCE).contains(&p.guidance_scale) {
            return bad(format!(
                "guidance_scale {} is outside 0..={MAX_GUIDANCE}",
                p.guidance_scale
            ));
        }
        Ok(p)
    }
}

/// A picture as PNG bytes.
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub png: Vec<u8>,
}

impl Picture {
    /// Encodes packed RGB pixels.
    pub fn from_rgb(width: u32, height: u32, rgb: &[u8]) -> Result<Picture, ImageError> {
        if rgb.len() != (width * height * 3) as usize {
            return Err(ImageError::Backend(format!(
                "{} bytes for a {width}×{height} RGB picture",
                rgb.len()
            )));
        }
        let mut png = Vec::new();
        let mut enc = png::Encoder::new(&mut png, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| ImageError::Backend(e.to_string()))?;
        w.write_image_data(rgb)
            .map_err(|e| ImageError::Backend(e.to_string()))?;
        w.finish().map_err(|e| ImageError::Backend(e.to_string()))?;
        Ok(Picture { width, height, png })
    }

    /// Checks PNG bytes from elsewhere (an HTTP backend) and reads their size.
    pub fn from_png(png: Vec<u8>) -> Result<Picture, ImageError> {
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let reader = decoder
            .read_info()
            .map_err(|e| ImageError::Backend(format!("not a PNG image: {e}")))?;
        let (width, height) = (reader.info().width, reader.info().height);
        drop(reader);
        Ok(Picture { width, height, png })
    }
}

/// Something that turns a prompt into a picture.
pub trait ImageBackend: Send {
    /// `stable_diffusion`, `http` or `fallback`.
    fn name(&self) -> &'static str;
    /// Where it runs (`cpu`, `cuda:0`, or the server's URL).
    fn device(&self) -> String;
    /// Whether this is the offline fallback (no real image model).
    fn is_fallback(&self) -> bool {
        false
    }
    fn generate(&mut self, params: &ImageParams) -> Result<Picture, ImageError>;
}

/// A generated picture and where it is kept (the sidecar holds this, as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedImage {
    /// File name under the images directory (what `/vision/image/{filename}` serves).
    pub file: String,
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub backend: String,
    pub device: String,
    /// True when the offline fallback drew it: no image model was used.
    pub fallback: bool,
    pub seconds: f64,
    pub params: ImageParams,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Generates with `backend` and keeps the picture under `dir`.
pub fn generate_and_save(
    backend: &mut dyn ImageBackend,
    params: &ImageParams,
    dir: &Path,
) -> Result<GeneratedImage, ImageError> {
    let start = std::time::Instant::now();
    let pic = backend.generate(params)?;
    let now = chrono::Utc::now();
    let file = format!(
        "img-{}-{}.png",
        now.format("%Y%m%d-%H%M%S"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let path = dir.join(&file);
    let meta = GeneratedImage {
        file: file.clone(),
        path: path.clone(),
        width: pic.width,
        height: pic.height,
        backend: backend.name().to_string(),
        device: backend.device(),
        fallback: backend.is_fallback(),
        seconds: start.elapsed().as_secs_f64(),
        params: params.clone(),
        created_at: now,
    };
    let io = |e: crate::error::ThauError| ImageError::Io(e.to_string());
    crate::fsutil::atomic_write(&path, &pic.png).map_err(io)?;
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| ImageError::Io(e.to_string()))?;
    crate::fsutil::atomic_write(&path.with_extension("json"), &json).map_err(io)?;
    Ok(meta)
}

/// What the images directory holds.
#[derive(Debug, Clone, Serialize)]
pub struct ImageStats {
    pub count: usize,
    pub bytes: u64,
    /// The newest pictures, newest first.
    pub recent: Vec<GeneratedImage>,
    pub backend: String,
    pub device: String,
}

/// Counts the pictures under `dir` (those with a sidecar) and lists the newest `recent`.
pub fn stats(dir: &Path, recent: usize, backend: &dyn ImageBackend) -> ImageStats {
    let mut all: Vec<GeneratedImage> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let g: GeneratedImage = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            // A sidecar describes the picture beside it, and only that one.
            let own = p.with_extension("png");
            (own.file_name()? == g.file.as_str() && own.is_file()).then_some(g)
        })
        .collect();
    all.sort_by_key(|g| std::cmp::Reverse(g.created_at));
    let bytes = all
        .iter()
        .filter_map(|g| std::fs::metadata(dir.join(&g.file)).ok())
        .map(|m| m.len())
        .sum();
    ImageStats {
        count: all.len(),
        bytes,
        recent: all.into_iter().take(recent).collect(),
        backend: backend.name().to_string(),
        device: backend.device(),
    }
}

/// Whether `name` is a picture this tool made under `dir` — a plain file name (no path,
/// no `..`, no hidden file), a `.png` with its sidecar, and a regular file, not a link.
/// What a server may serve from the images directory.
pub fn served_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let ok_name = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.ends_with(".png")
        && !name.contains("..");
    if !ok_name {
        return None;
    }
    let path = dir.join(name);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    (meta.file_type().is_file() && path.with_extension("json").is_file()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_get_defaults_and_bounds() {
        let d = ImageDefaults::default();
        let r =
            ImageRequest::from_arguments(&serde_json::json!({"prompt": " un gato ", "seed": 3}))
                .unwrap();
        let p = r.resolve(&d).unwrap();
        assert_eq!(
            (p.prompt.as_str(), p.width, p.height, p.seed),
            ("un gato", 512, 512, 3)
        );
        for bad in [
            serde_json::json!({"prompt": ""}),
            serde_json::json!({"prompt": "x", "width": 100}),
            serde_json::json!({"prompt": "x", "height": 4096}),
            serde_json::json!({"prompt": "x", "num_inference_steps": 0}),
            serde_json::json!({"prompt": "x", "guidance_scale": 99.0}),
        ] {
            let r = ImageRequest::from_arguments(&bad).unwrap();
            assert!(r.resolve(&d).is_err(), "{bad}");
        }
        assert!(
            ImageRequest::from_arguments(&serde_json::json!({"prompt": "x", "colour": 1})).is_err()
        );
    }

    #[test]
    fn only_produced_pictures_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let mut fb = fallback::FallbackBackend;
        let params = ImageRequest::from_arguments(
            &serde_json::json!({"prompt": "a red sun", "width": 64, "height": 64, "seed": 1}),
        )
        .unwrap()
        .resolve(&ImageDefaults::default())
        .unwrap();
        let g = generate_and_save(&mut fb, &params, dir.path()).unwrap();
        assert!(served_file(dir.path(), &g.file).is_some());
        std::fs::write(dir.path().join("other.png"), b"x").unwrap();
        for name in [
            "other.png",
            "../etc/passwd",
            "..%2fetc%2fpasswd",
            "/etc/passwd",
            &format!("sub/{}", g.file),
            ".hidden.png",
            &g.file.replace(".png", ".json"),
        ] {
            assert!(served_file(dir.path(), name).is_none(), "{name}");
        }
        #[cfg(unix)]
        {
            let link = g.file.replace("img-", "lnk-");
            std::os::unix::fs::symlink(dir.path().join(&g.file), dir.path().join(&link)).unwrap();
            std::fs::copy(
                dir.path().join(g.file.replace(".png", ".json")),
                dir.path().join(link.replace(".png", ".json")),
            )
            .unwrap();
            assert!(served_file(dir.path(), &link).is_none(), "symlink");
        }
        let s = stats(dir.path(), 5, &fb);
        assert_eq!(s.count, 1);
        assert_eq!(s.recent[0].file, g.file);
    }
}
