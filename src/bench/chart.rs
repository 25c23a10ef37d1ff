//! chart.png: QPS relative to direct, one pair of horizontal bars (switchyard, HAProxy) per
//! workload/protocol/threads group, with the direct line at 1.0. Drawn with plotters' bitmap
//! backend in pixel coordinates (group labels are long, which axis labels handle badly);
//! text is rendered by ab_glyph from Debian's DejaVu Sans, read at run time.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::matrix::Target;
use super::report::BenchReport;

/// Debian's `fonts-dejavu-core`.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FAMILY: &str = "sans-serif";

const WIDTH: i32 = 1000;
const LEFT: i32 = 230;
const RIGHT: i32 = 60;
const TOP: i32 = 86;
const BOTTOM: i32 = 46;
const GROUP_HEIGHT: i32 = 46;
const BAR_HEIGHT: i32 = 16;

const SWITCHYARD: RGBColor = RGBColor(31, 119, 180);
const HAPROXY: RGBColor = RGBColor(255, 127, 14);
const GRID: RGBColor = RGBColor(225, 225, 225);
const FAILED: RGBColor = RGBColor(200, 30, 30);

/// One group's bars: the ratio, `Some(None)` when the row ran but has no ratio (it failed,
/// or its direct row did), `None` when it was not run.
struct Group {
    label: String,
    bars: [(Target, Option<Option<f64>>); 2],
}

/// Draws the chart of `report` into `path`.
pub fn draw(report: &BenchReport, path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let groups = groups(report);
    let max_ratio = groups
        .iter()
        .flat_map(|g| g.bars.iter().filter_map(|(_, r)| r.flatten()))
        .fold(1.0_f64, f64::max);
    // The axis ends at a multiple of 0.2 past both 1.0 and the largest bar.
    let x_max = ((max_ratio * 1.08 / 0.2).ceil() * 0.2).max(1.2);
    let height = TOP + BOTTOM + GROUP_HEIGHT * groups.len().max(1) as i32;
    let x_of = |ratio: f64| LEFT + ((WIDTH - LEFT - RIGHT) as f64 * ratio / x_max).round() as i32;

    let root = BitMapBackend::new(path, (WIDTH as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let font = |size: f64| TextStyle::from((FAMILY, size).into_font());
    let text = |s: &str, at: (i32, i32), style: TextStyle| {
        root.draw(&Text::new(s.to_string(), at, style))
            .map_err(plot_error)
    };
    let m = &report.meta;
    text(
        &format!(
            "QPS relative to direct (1.0) — switchyard {}",
            m.switchyard_version
        ),
        (16, 14),
        font(20.0),
    )?;
    text(
        &format!(
            "{}, {} s per row, {} CPUs, MariaDB {}, HAProxy {}",
            m.started_at, m.settings.seconds, m.nproc, m.mariadbd_version, m.haproxy_version
        ),
        (16, 42),
        font(13.0).color(&BLACK.mix(0.7)),
    )?;
    for (i, (name, color)) in [("switchyard", SWITCHYARD), ("haproxy", HAPROXY)]
        .into_iter()
        .enumerate()
    {
        let x = WIDTH - RIGHT - 220 + 120 * i as i32;
        root.draw(&Rectangle::new([(x, 16), (x + 14, 30)], color.filled()))
            .map_err(plot_error)?;
        text(name, (x + 20, 15), font(14.0))?;
    }

    // Grid and ticks every 0.2.
    let (plot_top, plot_bottom) = (TOP - 8, height - BOTTOM);
    let ticks = (x_max / 0.2).round() as i32;
    for t in 0..=ticks {
        let ratio = f64::from(t) * 0.2;
        let x = x_of(ratio);
        let style = if t == 5 {
            BLACK.stroke_width(2)
        } else {
            GRID.stroke_width(1)
        };
        root.draw(&PathElement::new(
            vec![(x, plot_top), (x, plot_bottom)],
            style,
        ))
        .map_err(plot_error)?;
        let centred = font(12.0).pos(Pos::new(HPos::Center, VPos::Top));
        text(&format!("{ratio:.1}"), (x, plot_bottom + 6), centred)?;
    }
    text(
        "direct",
        (x_of(1.0), plot_top - 2),
        font(12.0).pos(Pos::new(HPos::Center, VPos::Bottom)),
    )?;

    for (i, g) in groups.iter().enumerate() {
        let y0 = TOP + GROUP_HEIGHT * i as i32;
        let label_style = font(14.0).pos(Pos::new(HPos::Right, VPos::Center));
        text(
            &g.label,
            (LEFT - 10, y0 + GROUP_HEIGHT / 2 - 4),
            label_style,
        )?;
        for (j, (target, ratio)) in g.bars.iter().enumerate() {
            let top = y0 + 2 + (BAR_HEIGHT + 3) * j as i32;
            let mid = top + BAR_HEIGHT / 2;
            let value_style = font(12.0).pos(Pos::new(HPos::Left, VPos::Center));
            match ratio {
                None => {}
                Some(None) => text("failed", (LEFT + 4, mid), value_style.color(&FAILED))?,
                Some(Some(r)) => {
                    let color = if *target == Target::Switchyard {
                        SWITCHYARD
                    } else {
                        HAPROXY
                    };
                    let end = x_of(*r).max(LEFT + 1);
                    root.draw(&Rectangle::new(
                        [(LEFT, top), (end, top + BAR_HEIGHT)],
                        color.filled(),
                    ))
                    .map_err(plot_error)?;
                    text(&format!("{r:.2}"), (end + 4, mid), value_style)?;
                }
            }
        }
    }
    if groups.is_empty() {
        text("no rows", (LEFT + 10, TOP + 10), font(14.0))?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// The groups in run order, with their switchyard and haproxy ratios.
fn groups(report: &BenchReport) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for row in &report.rows {
        let label = row.group();
        let pos = match out.iter().position(|g| g.label == label) {
            Some(p) => p,
            None => {
                out.push(Group {
                    label,
                    bars: [(Target::Switchyard, None), (Target::Haproxy, None)],
                });
                out.len() - 1
            }
        };
        if let Some(bar) = out[pos].bars.iter_mut().find(|(t, _)| *t == row.target) {
            bar.1 = Some(row.ratio_to_direct);
        }
    }
    out
}

/// Registers DejaVu Sans with plotters once per process: plotters' font table is global and
/// wants `'static` bytes, so the file is read once and kept.
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT_PATH).map_err(|e| {
                format!(
                    "can't read the chart's font {FONT_PATH} ({e}); install it: \
                     apt-get install -y fonts-dejavu-core"
                )
            })?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT_PATH} is not a font plotters can read"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::matrix::{Protocol, RowSpec};
    use crate::bench::report::{set_ratios, RowResult};
    use crate::bench::sysbench::Stats;

    fn report() -> BenchReport {
        let mut rows = Vec::new();
        for (workload, qps) in [
            ("oltp_point_select", [9000.0, 5000.0, 8000.0]),
            ("oltp_read_write", [900.0, 700.0, 850.0]),
        ] {
            for (target, qps) in Target::ALL.into_iter().zip(qps) {
                let spec = RowSpec {
                    workload,
                    protocol: Protocol::Ps,
                    threads: 8,
                    target,
                };
                rows.push(RowResult::new(
                    &spec,
                    Stats {
                        qps,
                        ..Stats::default()
                    },
                ));
            }
        }
        rows[5].failure = Some("boom".into());
        set_ratios(&mut rows);
        BenchReport {
            meta: crate::bench::tests::meta(),
            rows,
            out_dir: "x".into(),
        }
    }

    #[test]
    fn each_group_gets_a_switchyard_and_a_haproxy_bar() {
        let g = groups(&report());
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].label, "oltp_point_select ps t=8");
        assert_eq!(g[0].bars[0].1, Some(Some(5000.0 / 9000.0)));
        assert_eq!(g[1].bars[1], (Target::Haproxy, Some(None)));
    }

    #[test]
    fn the_chart_is_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        draw(&report(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    }
}
