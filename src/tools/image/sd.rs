//! [`StableDiffusionBackend`]: Stable Diffusion in candle from a local weights directory in
//! the diffusers layout — v1.5, v2.1 and SD-Turbo alike, since every shape is read from the
//! directory's own `config.json` files rather than assumed:
//!
//! ```text
//! DIR/text_encoder/config.json, model.safetensors         CLIP text encoder
//! DIR/tokenizer/tokenizer.json                            its tokenizer (`tokenizers`)
//! DIR/unet/config.json, diffusion_pytorch_model.safetensors
//! DIR/vae/config.json, diffusion_pytorch_model.safetensors
//! DIR/scheduler/scheduler_config.json                     DDIM settings
//! ```
//!
//! The UNet, the VAE and the DDIM scheduler are candle-transformers'; the CLIP text encoder
//! is [`ClipTextModel`] here (the Hugging Face `CLIPTextModel` tensor names), because
//! candle's CLIP configuration cannot be built from a file. Pipeline: prompt and negative
//! prompt → CLIP → classifier-free guidance over the UNet's noise predictions for
//! `num_inference_steps` DDIM steps from seeded Gaussian latents → VAE decode → RGB.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::stable_diffusion::{
    ddim::DDIMSchedulerConfig,
    schedulers::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing},
    unet_2d::{BlockConfig, UNet2DConditionModel, UNet2DConditionModelConfig},
    vae::{AutoEncoderKL, AutoEncoderKLConfig},
};
use rand::SeedableRng;
use rand_distr::Distribution;
use serde::Deserialize;

use super::{ImageBackend, ImageError, ImageParams, Picture};

/// File names of the layout.
pub const TEXT_ENCODER: &str = "text_encoder/model.safetensors";
pub const UNET: &str = "unet/diffusion_pytorch_model.safetensors";
pub const VAE: &str = "vae/diffusion_pytorch_model.safetensors";
pub const TOKENIZER: &str = "tokenizer/tokenizer.json";

fn err(e: impl std::fmt::Display) -> ImageError {
    ImageError::Backend(e.to_string())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| err(format!("{}: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------
// Configuration files (the diffusers / transformers field names)

/// `text_encoder/config.json`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD 1.x) or `gelu` (SD 2.x).
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "ln_eps")]
    pub layer_norm_eps: f64,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn ln_eps() -> f64 {
    1e-5
}

/// One value for all blocks, or one per block.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.get(i).or(v.last()).copied().unwrap_or(8),
        }
    }
}

/// `unet/config.json`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct UNetFile {
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub attention_head_dim: PerBlock,
    pub cross_attention_dim: usize,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "ln_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
}

/// `vae/config.json`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct VaeFile {
    pub block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "sd_scaling")]
    pub scaling_factor: f64,
}

/// `scheduler/scheduler_config.json`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct SchedulerFile {
    #[serde(default = "beta_start")]
    pub beta_start: f64,
    #[serde(default = "beta_end")]
    pub beta_end: f64,
    #[serde(default = "scaled_linear")]
    pub beta_schedule: String,
    #[serde(default = "thousand")]
    pub num_train_timesteps: usize,
    #[serde(default = "epsilon")]
    pub prediction_type: String,
    #[serde(default = "one")]
    pub steps_offset: usize,
    #[serde(default = "leading")]
    pub timestep_spacing: String,
}

fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn two() -> usize {
    2
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn thousand() -> usize {
    1000
}
fn yes() -> bool {
    true
}
fn sd_scaling() -> f64 {
    0.18215
}
fn beta_start() -> f64 {
    0.00085
}
fn beta_end() -> f64 {
    0.012
}
fn scaled_linear() -> String {
    "scaled_linear".into()
}
fn epsilon() -> String {
    "epsilon".into()
}
fn leading() -> String {
    "leading".into()
}

impl UNetFile {
    /// candle's UNet configuration.
    pub fn to_candle(&self) -> Result<UNet2DConditionModelConfig, ImageError> {
        if self.block_out_channels.len() != self.down_block_types.len() {
            return Err(err(
                "unet/config.json: block_out_channels and down_block_types differ in length",
            ));
        }
        let blocks = self
            .block_out_channels
            .iter()
            .zip(&self.down_block_types)
            .enumerate()
            .map(|(i, (&out_channels, kind))| BlockConfig {
                out_channels,
                use_cross_attn: kind.contains("CrossAttn").then_some(1),
                attention_head_dim: self.attention_head_dim.get(i),
            })
            .collect();
        Ok(UNet2DConditionModelConfig {
            center_input_sample: self.center_input_sample,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            blocks,
            layers_per_block: self.layers_per_block,
            downsample_padding: self.downsample_padding,
            mid_block_scale_factor: self.mid_block_scale_factor,
            norm_num_groups: self.norm_num_groups,
            norm_eps: self.norm_eps,
            cross_attention_dim: self.cross_attention_dim,
            sliced_attention_size: None,
            use_linear_projection: self.use_linear_projection,
        })
    }
}

impl VaeFile {
    pub fn to_candle(&self) -> AutoEncoderKLConfig {
        AutoEncoderKLConfig {
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            latent_channels: self.latent_channels,
            norm_num_groups: self.norm_num_groups,
            use_quant_conv: true,
            use_post_quant_conv: true,
        }
    }

    /// Pixels per latent cell: the VAE halves the size between blocks.
    pub fn factor(&self) -> u32 {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}

impl SchedulerFile {
    pub fn to_candle(&self) -> Result<DDIMSchedulerConfig, ImageError> {
        let beta_schedule = match self.beta_schedule.as_str() {
            "linear" => BetaSchedule::Linear,
            "scaled_linear" => BetaSchedule::ScaledLinear,
            "squaredcos_cap_v2" => BetaSchedule::SquaredcosCapV2,
            other => return Err(err(format!("unsupported beta_schedule `{other}`"))),
        };
        let prediction_type = match self.prediction_type.as_str() {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            other => return Err(err(format!("unsupported prediction_type `{other}`"))),
        };
        let timestep_spacing = match self.timestep_spacing.as_str() {
            "leading" => TimestepSpacing::Leading,
            "linspace" => TimestepSpacing::Linspace,
            "trailing" => TimestepSpacing::Trailing,
            other => return Err(err(format!("unsupported timestep_spacing `{other}`"))),
        };
        Ok(DDIMSchedulerConfig {
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule,
            eta: 0.0,
            steps_offset: self.steps_offset,
            prediction_type,
            train_timesteps: self.num_train_timesteps,
            timestep_spacing,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The CLIP text encoder (Hugging Face `CLIPTextModel` names, under `text_model.`)

struct ClipAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl ClipAttention {
    fn load(vb: VarBuilder, c: &ClipTextConfig) -> candle_core::Result<Self> {
        let d = c.hidden_size;
        Ok(ClipAttention {
            q: linear(d, d, vb.pp("q_proj"))?,
            k: linear(d, d, vb.pp("k_proj"))?,
            v: linear(d, d, vb.pp("v_proj"))?,
            out: linear(d, d, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.heads;
        // [B, T, D] → [B, H, T, hd]
        let split = |y: Tensor| {
            y.reshape((b, t, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q.forward(x)? * (hd as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let w = q.matmul(&k.t()?)?.broadcast_add(mask)?; // [B, H, T, T]
        let w = candle_nn::ops::softmax_last_dim(&w)?;
        let y = w.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?; // [B, T, D]
        self.out.forward(&y)
    }
}

struct ClipLayer {
    ln1: LayerNorm,
    attn: ClipAttention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    quick: bool,
}

impl ClipLayer {
    fn load(vb: VarBuilder, c: &ClipTextConfig) -> candle_core::Result<Self> {
        Ok(ClipLayer {
            ln1: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            attn: ClipAttention::load(vb.pp("self_attn"), c)?,
            ln2: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: linear(c.hidden_size, c.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: linear(c.intermediate_size, c.hidden_size, vb.pp("mlp.fc2"))?,
            quick: c.hidden_act == "quick_gelu",
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x)?, mask)?)?;
        let h = self.fc1.forward(&self.ln2.forward(&x)?)?;
        let h = if self.quick {
            (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?
        } else {
            h.gelu_erf()?
        };
        x + self.fc2.forward(&h)?
    }
}

/// The CLIP text encoder of a Stable Diffusion checkpoint.
pub struct ClipTextModel {
    token: Embedding,
    position: Embedding,
    layers: Vec<ClipLayer>,
    final_ln: LayerNorm,
}

impl ClipTextModel {
    /// `vb` at the checkpoint's root (names start with `text_model.`).
    pub fn load(vb: VarBuilder, c: &ClipTextConfig) -> candle_core::Result<Self> {
        let vb = vb.pp("text_model");
        let layers = (0..c.num_hidden_layers)
            .map(|i| ClipLayer::load(vb.pp(format!("encoder.layers.{i}")), c))
            .collect::<candle_core::Result<_>>()?;
        Ok(ClipTextModel {
            token: embedding(
                c.vocab_size,
                c.hidden_size,
                vb.pp("embeddings.token_embedding"),
            )?,
            position: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                vb.pp("embeddings.position_embedding"),
            )?,
            layers,
            final_ln: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("final_layer_norm"))?,
        })
    }

    /// Hidden states of token ids `[B, T]`: `[B, T, D]`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let dev = ids.device();
        let pos = Tensor::arange(0u32, t as u32, dev)?.unsqueeze(0)?; // [1, T]
        let mut x = self
            .token
            .forward(ids)?
            .broadcast_add(&self.position.forward(&pos)?)?;
        // Causal mask: position i sees 0..=i.
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), dev)?;
        for l in &self.layers {
            x = l.forward(&x, &mask)?;
        }
        self.final_ln.forward(&x)
    }
}

// ---------------------------------------------------------------------------------------
// The pipeline

/// Stable Diffusion loaded from a directory.
pub struct StableDiffusionBackend {
    dir: PathBuf,
    device: Device,
    tokenizer: tokenizers::Tokenizer,
    clip: ClipTextModel,
    max_len: usize,
    pad_id: u32,
    unet: UNet2DConditionModel,
    unet_in: usize,
    vae: AutoEncoderKL,
    vae_file: VaeFile,
    scheduler: DDIMSchedulerConfig,
}

impl StableDiffusionBackend {
    /// Loads every part of `dir` on `device`; a missing or malformed file is named.
    pub fn load(dir: &Path, device: Device) -> Result<Self, ImageError> {
        let clip_cfg: ClipTextConfig = read_json(&dir.join("text_encoder/config.json"))?;
        let unet_file: UNetFile = read_json(&dir.join("unet/config.json"))?;
        let vae_file: VaeFile = read_json(&dir.join("vae/config.json"))?;
        let sched: SchedulerFile = read_json(&dir.join("scheduler/scheduler_config.json"))?;
        let tok_path = dir.join(TOKENIZER);
        let tokenizer = crate::model::tokenizer::load_tokenizer_file(&tok_path)
            .map_err(|e| err(e.to_string()))?;
        let weights = |rel: &str| -> Result<VarBuilder<'static>, ImageError> {
            let p = dir.join(rel);
            if !p.is_file() {
                return Err(err(format!("{} is missing", p.display())));
            }
            // Safety: the file is mapped read-only and is not modified while mapped.
            unsafe {
                VarBuilder::from_mmaped_safetensors(std::slice::from_ref(&p), DType::F32, &device)
            }
            .map_err(|e| err(format!("{}: {e}", p.display())))
        };
        let named =
            |rel: &str, e: candle_core::Error| err(format!("{}: {e}", dir.join(rel).display()));
        let clip = ClipTextModel::load(weights(TEXT_ENCODER)?, &clip_cfg)
            .map_err(|e| named(TEXT_ENCODER, e))?;
        let unet = UNet2DConditionModel::new(
            weights(UNET)?,
            unet_file.in_channels,
            unet_file.out_channels,
            false,
            unet_file.to_candle()?,
        )
        .map_err(|e| named(UNET, e))?;
        let vae = AutoEncoderKL::new(weights(VAE)?, 3, 3, vae_file.to_candle())
            .map_err(|e| named(VAE, e))?;
        // CLIP pads with its end-of-text token; tokenizers without one pad with id 0.
        let pad_id = tokenizer.token_to_id("<|endoftext|>").unwrap_or(0);
        Ok(StableDiffusionBackend {
            dir: dir.to_path_buf(),
            device,
            tokenizer,
            clip,
            max_len: clip_cfg.max_position_embeddings,
            pad_id,
            unet,
            unet_in: unet_file.in_channels,
            vae,
            vae_file,
            scheduler: sched.to_candle()?,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// CLIP hidden states of `text`, padded or cut to the encoder's length: `[1, T, D]`.
    fn embed(&self, text: &str) -> Result<Tensor, ImageError> {
        let mut ids = self
            .tokenizer
            .encode(text, true)
            .map_err(err)?
            .get_ids()
            .to_vec();
        ids.truncate(self.max_len);
        ids.resize(self.max_len, self.pad_id);
        let ids = Tensor::new(ids.as_slice(), &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(err)?;
        self.clip.forward(&ids).map_err(err)
    }

    fn run(&self, p: &ImageParams) -> candle_core::Result<Vec<u8>> {
        let guided = p.guidance_scale > 1.0;
        let cond = self.embed(&p.prompt).map_err(candle_core::Error::msg)?;
        let context = if guided {
            let uncond = self
                .embed(&p.negative_prompt)
                .map_err(candle_core::Error::msg)?;
            Tensor::cat(&[uncond, cond], 0)? // [2, T, D]
        } else {
            cond
        };
        let mut sched = self.scheduler.build(p.num_inference_steps as usize)?;
        let f = self.vae_file.factor();
        let (lh, lw) = ((p.height / f) as usize, (p.width / f) as usize);
        // Seeded Gaussian latents, the same on every device.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed);
        let normal = rand_distr::StandardNormal;
        let n = self.unet_in * lh * lw;
        let noise: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
        let mut latents = (Tensor::from_vec(noise, (1, self.unet_in, lh, lw), &self.device)?
            * sched.init_noise_sigma())?; // [1, C, h/f, w/f]
        let timesteps = sched.timesteps().to_vec();
        for t in timesteps {
            let input = if guided {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let input = sched.scale_model_input(input, t)?;
            let noise = self.unet.forward(&input, t as f64, &context)?;
            let noise = if guided {
                let parts = noise.chunk(2, 0)?;
                let (u, c) = (&parts[0], &parts[1]);
                (u + ((c - u)? * p.guidance_scale)?)?
            } else {
                noise
            };
            latents = sched.step(&noise, t, &latents)?;
        }
        let img = self
            .vae
            .decode(&(latents / self.vae_file.scaling_factor)?)?; // [1, 3, H, W]
        let img = ((img / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
        let img = (img * 255.0)?.round()?.to_dtype(DType::U8)?;
        let img = img.squeeze(0)?.permute((1, 2, 0))?.contiguous()?; // [H, W, 3]
        img.flatten_all()?.to_vec1::<u8>()
    }
}

impl ImageBackend for StableDiffusionBackend {
    fn name(&self) -> &'static str {
        "stable_diffusion"
    }
    fn device(&self) -> String {
        match &self.device {
            Device::Cpu => "cpu".into(),
            d => format!("{d:?}").to_lowercase(),
        }
    }

    fn generate(&mut self, p: &ImageParams) -> Result<Picture, ImageError> {
        let f = self.vae_file.factor();
        if !p.width.is_multiple_of(f) || !p.height.is_multiple_of(f) {
            return Err(ImageError::BadRequest(format!(
                "width and height must be multiples of {f} for this model"
            )));
        }
        let rgb = self.run(p).map_err(err)?;
        Picture::from_rgb(p.width, p.height, &rgb)
    }
}
