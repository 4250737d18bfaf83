//! [`A1111Backend`]: pictures from an AUTOMATIC1111-compatible server
//! (`POST {url}/sdapi/v1/txt2img`, answering `{"images": ["<base64 PNG>", ...]}`), for a
//! machine whose image model runs elsewhere.

use std::time::Duration;

use base64::Engine;

use super::{ImageBackend, ImageError, ImageParams, Picture};

/// How long one picture may take on the server.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest reply accepted (base64 PNGs of the largest size fit with room to spare).
const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

/// The HTTP backend.
pub struct A1111Backend {
    url: String,
    agent: ureq::Agent,
}

impl A1111Backend {
    /// `url` is the server's base, e.g. `http://127.0.0.1:7860`.
    pub fn new(url: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        A1111Backend {
            url: url.trim_end_matches('/').to_string(),
            agent,
        }
    }
}

impl ImageBackend for A1111Backend {
    fn name(&self) -> &'static str {
        "http"
    }
    fn device(&self) -> String {
        self.url.clone()
    }

    fn generate(&mut self, p: &ImageParams) -> Result<Picture, ImageError> {
        let url = format!("{}/sdapi/v1/txt2img", self.url);
        let body = serde_json::json!({
            "prompt": p.prompt,
            "negative_prompt": p.negative_prompt,
            "steps": p.num_inference_steps,
            "cfg_scale": p.guidance_scale,
            "width": p.width,
            "height": p.height,
            "seed": p.seed,
            "batch_size": 1,
            "n_iter": 1,
        });
        let fail = |m: String| ImageError::Backend(format!("{url}: {m}"));
        let mut resp = self
            .agent
            .post(&url)
            .send_json(&body)
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let text = resp
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            return Err(fail(format!("HTTP {status}: {}", text.trim())));
        }
        let reply: serde_json::Value = resp
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_json()
            .map_err(|e| fail(format!("not JSON: {e}")))?;
        let b64 = reply["images"][0]
            .as_str()
            .ok_or_else(|| fail("no `images[0]` in the reply".into()))?;
        // Some servers prefix a data URL.
        let b64 = b64.rsplit_once(',').map_or(b64, |(_, d)| d);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| fail(format!("images[0] is not base64: {e}")))?;
        let pic = Picture::from_png(png).map_err(|e| fail(e.to_string()))?;
        if (pic.width, pic.height) != (p.width, p.height) {
            return Err(fail(format!(
                "asked for {}×{}, got {}×{}",
                p.width, p.height, pic.width, pic.height
            )));
        }
        Ok(pic)
    }
}
