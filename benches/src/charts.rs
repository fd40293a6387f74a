//! SVG charts for `ballast-bench report`, drawn with plotters' SVG backend:
//! text is written as SVG `<text>` and laid out by the viewer, so drawing
//! needs no font files or font libraries.
//!
//! - throughput against clients, one line per target, per workload;
//! - the latency CDF of each target at one client count, per workload.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::results::CdfPoint;

/// Size of every chart, pixels.
const SIZE: (u32, u32) = (800, 480);
/// Line colours by target: ballast, etcd, then any other.
const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// One line of a chart: a target's points.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Target name (the legend).
    pub target: String,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
}

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn draw_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// Draws the series' legend box at `position`.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)
}

/// x range of a log axis holding `xs`, padded so lone points are not on the edge.
fn log_range(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = xs
        .filter(|x| *x > 0.0 && x.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if lo > hi {
        return (0.1, 10.0);
    }
    (lo / 1.5, hi * 1.5)
}

/// Labelled latencies of a log axis from `lo` to `hi`: 1, 2 and 5 times the
/// powers of ten.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powi(lo.log10().floor() as i32);
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo && t <= hi {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// Throughput (ops/s) against the number of clients, both axes as measured,
/// clients on a log scale labelled at the measured counts.
pub fn throughput_svg(workload: &str, lines: &[Line]) -> Result<String> {
    let (x_lo, x_hi) = log_range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)));
    let mut counts: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    counts.sort_by(f64::total_cmp);
    counts.dedup();
    let y_hi = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{workload}: throughput against clients"),
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d((x_lo..x_hi).log_scale().with_key_points(counts), 0.0..y_hi)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .x_desc("concurrent clients")
            .y_desc("completed requests per second")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(draw_error)?;
        for (i, line) in lines.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(
                    line.points.iter().copied(),
                    c.stroke_width(2),
                ))
                .map_err(draw_error)?
                .label(line.target.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
            chart
                .draw_series(line.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(draw_error)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Latency CDFs: share of requests (y) completed within a latency (x, log
/// scale, milliseconds).
pub fn cdf_svg(
    workload: &str,
    clients: usize,
    lines: &[(String, Vec<CdfPoint>)],
) -> Result<String> {
    let (x_lo, x_hi) = log_range(lines.iter().flat_map(|(_, l)| l.iter().map(|p| p.0)));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{workload} at {clients} clients: latency CDF"),
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (x_lo..x_hi)
                    .log_scale()
                    .with_key_points(log_ticks(x_lo, x_hi)),
                0.0..1.0,
            )
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .x_desc("latency (ms)")
            .y_desc("share of requests at or below")
            .x_label_formatter(&|x| {
                if *x >= 1.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.2}")
                }
            })
            .y_label_formatter(&|y| format!("{y:.1}"))
            .draw()
            .map_err(draw_error)?;
        for (i, (target, points)) in lines.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
                .map_err(draw_error)?
                .label(target.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_throughput_lines_with_a_legend() {
        let lines = vec![
            Line {
                target: "ballast".into(),
                points: vec![(1.0, 1300.0), (16.0, 6000.0), (256.0, 10000.0)],
            },
            Line {
                target: "etcd".into(),
                points: vec![(1.0, 760.0), (16.0, 3200.0), (256.0, 9600.0)],
            },
        ];
        let svg = throughput_svg("put", &lines).expect("drawn");
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("put: throughput against clients"));
        // plotters writes each text on a line of its own.
        assert!(svg.contains("\nballast\n") && svg.contains("\netcd\n"));
        assert!(svg.contains("polyline"));
    }

    #[test]
    fn ticks_at_one_two_five() {
        assert_eq!(log_ticks(0.15, 30.0), [0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]);
        assert_eq!(log_ticks(1.0, 1.0), [1.0]);
    }

    #[test]
    fn draws_a_cdf_even_for_a_single_point() {
        let lines = vec![
            (
                "ballast".to_owned(),
                vec![(0.5, 0.5), (1.0, 0.99), (4.0, 1.0)],
            ),
            ("etcd".to_owned(), vec![(2.0, 1.0)]),
        ];
        let svg = cdf_svg("get-linearizable", 256, &lines).expect("drawn");
        assert!(svg.contains("get-linearizable at 256 clients: latency CDF"));
        let empty = cdf_svg("put", 1, &[]).expect("drawn without data");
        assert!(empty.contains("<svg"));
    }
}
