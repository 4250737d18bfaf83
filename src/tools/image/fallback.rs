//! [`FallbackBackend`]: pictures without an image model. The same prompt, seed and size
//! always give the same picture: a sky-to-ground gradient in the colours the prompt names
//! (Spanish or English colour words; otherwise colours drawn from the prompt's hash), a
//! sun or moon, and a few hills — enough to show that the tool ran, and honest about what
//! it is: every result from it is marked `fallback`.

use rand::{Rng, SeedableRng};

use super::{ImageBackend, ImageError, ImageParams, Picture};

/// Colour words and their RGB.
const COLOURS: &[(&str, [u8; 3])] = &[
    ("red", [200, 40, 40]),
    ("rojo", [200, 40, 40]),
    ("roja", [200, 40, 40]),
    ("blue", [40, 80, 200]),
    ("azul", [40, 80, 200]),
    ("green", [40, 160, 60]),
    ("verde", [40, 160, 60]),
    ("yellow", [230, 200, 40]),
    ("amarillo", [230, 200, 40]),
    ("amarilla", [230, 200, 40]),
    ("orange", [240, 140, 30]),
    ("naranja", [240, 140, 30]),
    ("purple", [130, 50, 170]),
    ("morado", [130, 50, 170]),
    ("pink", [240, 130, 180]),
    ("rosa", [240, 130, 180]),
    ("black", [20, 20, 25]),
    ("negro", [20, 20, 25]),
    ("white", [240, 240, 240]),
    ("blanco", [240, 240, 240]),
    ("grey", [128, 128, 128]),
    ("gray", [128, 128, 128]),
    ("gris", [128, 128, 128]),
    ("brown", [120, 80, 40]),
    ("marron", [120, 80, 40]),
    ("marrón", [120, 80, 40]),
];

/// Words that turn the sky dark (the disc becomes a moon).
const NIGHT: &[&str] = &[
    "night",
    "noche",
    "moon",
    "luna",
    "dark",
    "oscuro",
    "stars",
    "estrellas",
];

/// The offline fallback.
#[derive(Debug, Clone, Copy, Default)]
pub struct FallbackBackend;

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn mix(a: [u8; 3], b: [u8; 3], t: f32) -> [u8; 3] {
    let m = |x: u8, y: u8| (x as f32 + (y as f32 - x as f32) * t).round() as u8;
    [m(a[0], b[0]), m(a[1], b[1]), m(a[2], b[2])]
}

impl ImageBackend for FallbackBackend {
    fn name(&self) -> &'static str {
        "fallback"
    }
    fn device(&self) -> String {
        "cpu".into()
    }
    fn is_fallback(&self) -> bool {
        true
    }

    fn generate(&mut self, p: &ImageParams) -> Result<Picture, ImageError> {
        let (w, h) = (p.width, p.height);
        let lower = p.prompt.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(fnv(&lower) ^ p.seed);
        let named: Vec<[u8; 3]> = words
            .iter()
            .filter_map(|w| COLOURS.iter().find(|(n, _)| n == w).map(|c| c.1))
            .collect();
        let mut random = || [rng.random(), rng.random(), rng.random()];
        let night = words.iter().any(|w| NIGHT.contains(w));
        let sky_top = if night { [10, 15, 40] } else { [110, 170, 235] };
        let accent = named.first().copied().unwrap_or_else(&mut random);
        let ground = named.get(1).copied().unwrap_or_else(&mut random);
        let sky_bottom = mix(sky_top, accent, 0.45);
        let (sun_x, sun_y) = (
            rng.random_range(0.15..0.85) * w as f32,
            rng.random_range(0.12..0.35) * h as f32,
        );
        let sun_r = 0.08 * w.min(h) as f32;
        let disc = if night {
            [235, 235, 210]
        } else {
            [255, 220, 90]
        };
        // Hills: sums of two sines with phases from the seed.
        let hills: Vec<(f32, f32, f32)> = (0..3)
            .map(|_| {
                (
                    rng.random_range(0.55..0.8),
                    rng.random_range(1.0..4.0),
                    rng.random_range(0.0..std::f32::consts::TAU),
                )
            })
            .collect();
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            let fy = y as f32 / h as f32;
            for x in 0..w {
                let fx = x as f32 / w as f32;
                let mut c = mix(sky_top, sky_bottom, fy);
                let (dx, dy) = (x as f32 - sun_x, y as f32 - sun_y);
                if dx * dx + dy * dy <= sun_r * sun_r {
                    c = disc;
                }
                for (i, (base, freq, phase)) in hills.iter().enumerate() {
                    let top = base
                        + 0.06 * (fx * freq * std::f32::consts::TAU + phase).sin()
                        + 0.05 * i as f32;
                    if fy >= top {
                        let shade = 0.15 * (2 - i.min(2)) as f32;
                        c = mix(ground, [0, 0, 0], shade);
                    }
                }
                rgb.extend_from_slice(&c);
            }
        }
        Picture::from_rgb(w, h, &rgb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(prompt: &str, seed: u64) -> ImageParams {
        ImageParams {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            num_inference_steps: 1,
            guidance_scale: 0.0,
            width: 96,
            height: 64,
            seed,
        }
    }

    #[test]
    fn the_same_request_gives_the_same_picture_and_others_differ() {
        let mut fb = FallbackBackend;
        let a = fb.generate(&params("un desierto rojo", 1)).unwrap();
        let b = fb.generate(&params("un desierto rojo", 1)).unwrap();
        let c = fb.generate(&params("un desierto rojo", 2)).unwrap();
        let d = fb.generate(&params("a blue lake at night", 1)).unwrap();
        assert_eq!(a.png, b.png);
        assert_ne!(a.png, c.png);
        assert_ne!(a.png, d.png);
        let p = Picture::from_png(a.png).unwrap();
        assert_eq!((p.width, p.height), (96, 64));
    }
}
