//! The SVG plots of a run (`utilization.svg`, `jct_cdf.svg`) and of `compare --plot`: line
//! charts drawn by `plotters`, with axes, ticks, a light grid and a legend when there are
//! several series. The SVG backend writes text as `<text>` elements, so no font library is
//! needed; the output depends only on the data, so a run's files stay byte-identical.

use plotters::prelude::*;

use crate::record::Recorder;

const SIZE: (u32, u32) = (720, 400);
const COLOURS: [RGBColor; 6] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

#[derive(Debug, thiserror::Error)]
#[error("drawing the plot `{title}`: {reason}")]
pub struct PlotError {
    title: String,
    reason: String,
}

/// One line of a chart.
pub struct Series<'a> {
    pub label: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// A line chart from (0, 0) to (`x_max`, `y_max`).
pub fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    (x_max, y_max): (f64, f64),
    series: &[Series<'_>],
) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw(&mut svg, title, x_desc, y_desc, (x_max, y_max), series).map_err(|e| PlotError {
        title: title.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(svg)
}

fn draw(
    svg: &mut String,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    (x_max, y_max): (f64, f64),
    series: &[Series<'_>],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max.max(1e-3), 0.0..y_max.max(1e-3))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let line = chart.draw_series(LineSeries::new(
            s.points.iter().copied(),
            colour.stroke_width(2),
        ))?;
        if !s.label.is_empty() {
            line.label(s.label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        }
    }
    if series.iter().filter(|s| !s.label.is_empty()).count() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The JCTs of a run's completed jobs, in seconds, sorted.
pub fn completed_jcts_s(rec: &Recorder) -> Vec<f64> {
    let mut jcts: Vec<f64> = rec
        .jobs
        .values()
        .filter(|j| j.phase == splai_scheduler::api::JobPhase::Completed)
        .filter_map(|j| j.finished_ms.map(|f| (f - j.submitted_ms) as f64 / 1000.0))
        .collect();
    jcts.sort_by(f64::total_cmp);
    jcts
}

/// The JCT CDF of one or more sets of JCTs (seconds, sorted), each a labelled line.
pub fn jct_cdf_svg(sets: &[(&str, Vec<f64>)]) -> Result<String, PlotError> {
    let x_max = sets
        .iter()
        .filter_map(|(_, j)| j.last().copied())
        .reduce(f64::max)
        .unwrap_or(1.0);
    let series: Vec<Series<'_>> = sets
        .iter()
        .map(|(label, jcts)| {
            let n = jcts.len().max(1) as f64;
            Series {
                label,
                points: jcts
                    .iter()
                    .enumerate()
                    .map(|(k, &x)| (x, (k + 1) as f64 / n))
                    .collect(),
            }
        })
        .collect();
    line_chart(
        "Job completion time CDF",
        "job completion time (s)",
        "fraction of completed jobs",
        (x_max, 1.0),
        &series,
    )
}

/// Busy cpu over the fleet's cpu, over time.
pub fn utilization_svg(rec: &Recorder, fleet_cpu: u64) -> Result<String, PlotError> {
    let points: Vec<(f64, f64)> = rec
        .timeline
        .iter()
        .map(|r| {
            let busy = if fleet_cpu > 0 {
                r.busy_cpu_millis as f64 / fleet_cpu as f64
            } else {
                0.0
            };
            (r.t_ms as f64 / 1000.0, busy)
        })
        .collect();
    let x_max = points.last().map_or(1.0, |p| p.0.max(1.0));
    line_chart(
        "CPU utilization over time",
        "time (s)",
        "busy cpu / fleet cpu",
        (x_max, 1.0),
        &[Series { label: "", points }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdf_plot_has_tick_labels_both_legends_and_is_the_same_every_time() {
        let sets = [("splai", vec![1.0, 2.0, 4.0]), ("random", vec![2.0, 8.0])];
        let a = jct_cdf_svg(&sets).unwrap();
        assert_eq!(a, jct_cdf_svg(&sets).unwrap());
        assert!(a.starts_with("<svg"), "{a}");
        for text in [
            "splai",
            "random",
            "job completion time (s)",
            ">\n0.5\n<",
            ">\n8.0\n<",
        ] {
            assert!(a.contains(text), "{text} missing");
        }
    }
}
