//! `thau stats --plot FILE.png`: draws every learning session's curves with plotters — the
//! Learner's training loss per round and the probe loss before and after each session (top),
//! gaps open and gaps closed so far (bottom), all against the training step, so sessions
//! that resumed one another read as one run. Text is drawn with the DejaVu Sans font that
//! the `dejavu` crate embeds (no system font needed); the PNG is written atomically.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::commands::learn::LearnReport;
use crate::error::{Result, ThauError};

/// The image size in pixels.
pub const PLOT_SIZE: (u32, u32) = (1100, 760);
/// The font family name the plot registers and uses.
const FONT: &str = "sans-serif";

/// What a plot drew.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlotSummary {
    pub path: std::path::PathBuf,
    pub sessions: usize,
    pub points: usize,
    pub width: u32,
    pub height: u32,
}

fn plot_err(e: impl std::fmt::Display) -> ThauError {
    ThauError::Runtime(format!("drawing the plot: {e}"))
}

/// Draws `sessions` into a PNG at `path`.
pub fn plot_sessions(sessions: &[LearnReport], path: &Path) -> Result<PlotSummary> {
    let points: usize = sessions.iter().map(|s| s.curve.len()).sum();
    if points == 0 {
        return Err(ThauError::Invalid(
            "nothing to plot: no learning session has finished a training round yet (run `thau learn`)"
                .into(),
        ));
    }
    // Registering twice is harmless; a failure means the embedded font is unreadable.
    plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| plot_err("the embedded DejaVu Sans font could not be read"))?;
    let (w, h) = PLOT_SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    draw(sessions, &mut rgb)?;
    crate::fsutil::atomic_write_with(path, |out| {
        let mut enc = png::Encoder::new(out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    })?;
    Ok(PlotSummary {
        path: path.to_path_buf(),
        sessions: sessions.len(),
        points,
        width: w,
        height: h,
    })
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn font(size: u32) -> FontDesc<'static> {
    (FONT, size).into_font()
}

/// One panel: caption, axes against the training step, `y_decimals` on the y labels.
fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    y_desc: &str,
    y_decimals: usize,
) -> Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x, y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("training step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .y_label_formatter(&|y| format!("{y:.y_decimals$}"))
        .label_style(font(13))
        .draw()
        .map_err(plot_err)?;
    Ok(chart)
}

/// The series' legend box.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<()> {
    chart
        .configure_series_labels()
        .label_font(font(13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

/// Renders the two panels into an RGB buffer of [`PLOT_SIZE`].
fn draw(sessions: &[LearnReport], rgb: &mut [u8]) -> Result<()> {
    // Curves in global steps; gaps closed carried over from earlier sessions.
    let mut loss = Vec::new();
    let mut open = Vec::new();
    let mut closed = Vec::new();
    let mut probes = Vec::new();
    let mut closed_before = 0u64;
    for s in sessions {
        probes.push((s.step_before as f64, s.probe_loss_before));
        probes.push((s.step_after as f64, s.probe_loss_after));
        for p in &s.curve {
            loss.push((p.step as f64, p.loss));
            open.push((p.step as f64, p.gaps_open as f64));
            closed.push((p.step as f64, (closed_before + p.gaps_closed) as f64));
        }
        closed_before += s.gaps.closed;
    }
    let finite = |v: &f64| v.is_finite();
    let x_max = loss.iter().chain(&probes).map(|p| p.0).fold(1.0, f64::max);
    let x_min = loss
        .iter()
        .chain(&probes)
        .map(|p| p.0)
        .fold(x_max, f64::min);
    let y_loss = loss
        .iter()
        .chain(&probes)
        .map(|p| p.1)
        .filter(finite)
        .fold(0.0, f64::max)
        * 1.05;
    let y_gaps = open.iter().chain(&closed).map(|p| p.1).fold(1.0, f64::max) * 1.1;

    let root = BitMapBackend::with_buffer(rgb, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, bottom) = root.split_vertically(PLOT_SIZE.1 / 2);
    let x = x_min..x_max.max(x_min + 1.0);

    let mut chart = panel(
        &top,
        "THAU learning: loss",
        x.clone(),
        0.0..y_loss.max(1e-3),
        "nats / token",
        1,
    )?;
    chart
        .draw_series(LineSeries::new(loss.iter().copied(), &BLUE))
        .map_err(plot_err)?
        .label("training loss per round")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
    chart
        .draw_series(
            probes
                .iter()
                .filter(|p| p.1.is_finite())
                .map(|&p| Circle::new(p, 5, RED.filled())),
        )
        .map_err(plot_err)?
        .label("probe loss (held-out paraphrases), session start and end")
        .legend(|(x, y)| Circle::new((x + 9, y), 5, RED.filled()));
    legend(&mut chart)?;

    let mut chart = panel(&bottom, "gaps", x, 0.0..y_gaps, "gaps", 0)?;
    for (points, colour, label) in [
        (&open, MAGENTA, "open"),
        (&closed, GREEN, "closed (all sessions)"),
    ] {
        chart
            .draw_series(LineSeries::new(points.iter().copied(), &colour))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
    }
    legend(&mut chart)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
