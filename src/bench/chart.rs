//! chart.png: QPS relative to direct, three horizontal bars (switchyard over TCP and over its
//! Unix-domain socket, HAProxy) per workload/protocol/threads group, with the direct line at 1.0. chart-sharded.png:
//! switchyard's QPS relative to Spider's, one bar per sharded workload and thread count.
//! chart-failover.png: how long writes waited per event (kill: to the first write; switchover:
//! the longest pause), p50 bar and min–max whisker.
//! Drawn with plotters' bitmap backend in pixel coordinates (group labels are long, which
//! axis labels handle badly); text is rendered by ab_glyph from Debian's DejaVu Sans, read at
//! run time.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::matrix::Target;
use super::report::{BenchReport, RowResult};

/// Debian's `fonts-dejavu-core`.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FAMILY: &str = "sans-serif";

const WIDTH: i32 = 1000;
const LEFT: i32 = 230;
const RIGHT: i32 = 60;
const TOP: i32 = 86;
const BOTTOM: i32 = 46;
const GROUP_HEIGHT: i32 = 64;
const BAR_HEIGHT: i32 = 16;

const SWITCHYARD: RGBColor = RGBColor(31, 119, 180);
const SOCKET: RGBColor = RGBColor(44, 160, 44);
const HAPROXY: RGBColor = RGBColor(255, 127, 14);
const GRID: RGBColor = RGBColor(225, 225, 225);
const FAILED: RGBColor = RGBColor(200, 30, 30);

/// One group's bars: the ratio, `Some(None)` when the row ran but has no ratio (it failed,
/// or its direct row did), `None` when it was not run.
struct Group {
    label: String,
    bars: [(Target, Option<Option<f64>>); 3],
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
    let text = |s: &str, at: (i32, i32), style: TextStyle| write(&root, s, at, style);
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
    for (i, (name, color)) in [
        ("switchyard", SWITCHYARD),
        ("socket", SOCKET),
        ("haproxy", HAPROXY),
    ]
    .into_iter()
    .enumerate()
    {
        let x = WIDTH - RIGHT - 330 + 110 * i as i32;
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
                    let color = match target {
                        Target::Switchyard => SWITCHYARD,
                        Target::SwitchyardSocket => SOCKET,
                        _ => HAPROXY,
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

/// The groups in run order, with their switchyard (TCP, socket) and haproxy ratios.
fn groups(report: &BenchReport) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for row in report.rows.iter().filter(|r| !r.is_sharded()) {
        let label = row.group();
        let pos = match out.iter().position(|g| g.label == label) {
            Some(p) => p,
            None => {
                out.push(Group {
                    label,
                    bars: [
                        (Target::Switchyard, None),
                        (Target::SwitchyardSocket, None),
                        (Target::Haproxy, None),
                    ],
                });
                out.len() - 1
            }
        };
        if let Some(bar) = out[pos].bars.iter_mut().find(|(t, _)| *t == row.target) {
            bar.1 = Some(row.ratio);
        }
    }
    out
}

/// One bar of a single-series chart.
struct Bar {
    label: String,
    /// The bar's length; `None` draws `text` in red instead of a bar.
    value: Option<f64>,
    /// A whisker from min to max.
    range: Option<(f64, f64)>,
    text: String,
}

/// chart-sharded.png: switchyard's QPS over Spider's (1.0) per workload and thread count.
pub fn draw_sharded(report: &BenchReport, path: &Path) -> anyhow::Result<()> {
    let rows: Vec<&RowResult> = report.rows.iter().filter(|r| r.is_sharded()).collect();
    let bars: Vec<Bar> = rows
        .iter()
        .filter(|r| r.target == Target::Switchyard)
        .map(|r| {
            let spider = rows
                .iter()
                .find(|s| s.target == Target::Spider && s.group() == r.group());
            let (value, text) = match (r.ratio, &r.refused, spider) {
                (Some(x), _, Some(s)) => (
                    Some(x),
                    format!("{x:.2}  ({:.0} vs {:.0} qps)", r.stats.qps, s.stats.qps),
                ),
                (Some(x), _, None) => (Some(x), format!("{x:.2}")),
                (None, Some(_), _) => (None, "refused by switchyard (1235)".into()),
                (None, None, _) if r.failure.is_some() => (None, "switchyard failed".into()),
                (None, None, _) => (None, "Spider failed or refused".into()),
            };
            Bar {
                label: format!(
                    "{} t={}",
                    r.workload.trim_start_matches("sharded_"),
                    r.threads
                ),
                value,
                range: None,
                text,
            }
        })
        .collect();
    let m = &report.meta;
    bar_chart(
        path,
        "switchyard QPS relative to MariaDB Spider (1.0), same shards",
        &format!(
            "{}, {} s per row, {} rows per shard, {} CPUs, MariaDB {}",
            m.started_at, m.settings.seconds, m.settings.table_size, m.nproc, m.mariadbd_version
        ),
        &bars,
        Some((1.0, "Spider")),
    )
}

/// chart-failover.png: how long writes waited (ms) per event, p50 bar and min–max whisker.
pub fn draw_failover(report: &BenchReport, path: &Path) -> anyhow::Result<()> {
    let bars: Vec<Bar> = report
        .failover
        .iter()
        .map(|f| match &f.time_ms {
            Some(t) => Bar {
                label: f.event.to_string(),
                value: Some(t.median),
                range: Some((t.min, t.max)),
                text: format!(
                    "p50 {:.0} ms, max {:.0} ms; trials: {}, client errors: {}",
                    t.median,
                    t.max,
                    t.runs.len(),
                    f.client_errors_total()
                ),
            },
            None => Bar {
                label: f.event.to_string(),
                value: None,
                range: None,
                text: "every trial failed".into(),
            },
        })
        .collect();
    let m = &report.meta;
    bar_chart(
        path,
        "Writes waiting (ms): kill -9 to the first write; switchover's longest pause",
        &format!(
            "{}, {} writers through switchyard, {} CPUs, MariaDB {}",
            m.started_at,
            super::failover::WRITERS,
            m.nproc,
            m.mariadbd_version
        ),
        &bars,
        None,
    )
}

/// A 1, 2 or 5 times a power of ten, so that about six ticks cover `max`.
fn tick_step(max: f64) -> f64 {
    let rough = (max / 6.0).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power)
}

/// Horizontal bars from 0, a grid, and a reference line (`(value, label)`) if given.
fn bar_chart(
    path: &Path,
    title: &str,
    subtitle: &str,
    bars: &[Bar],
    reference: Option<(f64, &str)>,
) -> anyhow::Result<()> {
    const RIGHT_TEXT: i32 = 330;
    register_font()?;
    let max = bars
        .iter()
        .flat_map(|b| [b.value, b.range.map(|r| r.1)])
        .flatten()
        .chain(reference.map(|r| r.0))
        .fold(0.0_f64, f64::max);
    let step = tick_step(if max > 0.0 { max * 1.08 } else { 1.0 });
    let x_max = ((max * 1.08 / step).ceil() * step).max(step);
    let height = TOP + BOTTOM + GROUP_HEIGHT * bars.len().max(1) as i32;
    let x_of = |v: f64| {
        LEFT + ((WIDTH - LEFT - RIGHT - RIGHT_TEXT) as f64 * v / x_max)
            .round()
            .clamp(0.0, f64::from(WIDTH)) as i32
    };
    let root = BitMapBackend::new(path, (WIDTH as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let text = |s: &str, at: (i32, i32), style: TextStyle| write(&root, s, at, style);
    text(title, (16, 14), font(20.0))?;
    text(subtitle, (16, 42), font(13.0).color(&BLACK.mix(0.7)))?;
    let (plot_top, plot_bottom) = (TOP - 8, height - BOTTOM);
    let ticks = (x_max / step).round() as i32;
    for t in 0..=ticks {
        let v = f64::from(t) * step;
        let x = x_of(v);
        root.draw(&PathElement::new(
            vec![(x, plot_top), (x, plot_bottom)],
            GRID.stroke_width(1),
        ))
        .map_err(plot_error)?;
        let label = if step < 1.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.0}")
        };
        let centred = font(12.0).pos(Pos::new(HPos::Center, VPos::Top));
        text(&label, (x, plot_bottom + 6), centred)?;
    }
    if let Some((v, label)) = reference {
        let x = x_of(v);
        root.draw(&PathElement::new(
            vec![(x, plot_top), (x, plot_bottom)],
            BLACK.stroke_width(2),
        ))
        .map_err(plot_error)?;
        let above = font(12.0).pos(Pos::new(HPos::Center, VPos::Bottom));
        text(label, (x, plot_top - 2), above)?;
    }
    for (i, b) in bars.iter().enumerate() {
        let mid = TOP + GROUP_HEIGHT * i as i32 + GROUP_HEIGHT / 2 - 4;
        let label_style = font(14.0).pos(Pos::new(HPos::Right, VPos::Center));
        text(&b.label, (LEFT - 10, mid), label_style)?;
        let value_style = font(12.0).pos(Pos::new(HPos::Left, VPos::Center));
        let Some(v) = b.value else {
            text(&b.text, (LEFT + 4, mid), value_style.color(&FAILED))?;
            continue;
        };
        let end = x_of(v).max(LEFT + 1);
        root.draw(&Rectangle::new(
            [(LEFT, mid - BAR_HEIGHT / 2), (end, mid + BAR_HEIGHT / 2)],
            SWITCHYARD.filled(),
        ))
        .map_err(plot_error)?;
        let mut text_x = end;
        if let Some((lo, hi)) = b.range {
            let (a, z) = (x_of(lo), x_of(hi));
            for points in [
                vec![(a, mid), (z, mid)],
                vec![(a, mid - 5), (a, mid + 5)],
                vec![(z, mid - 5), (z, mid + 5)],
            ] {
                root.draw(&PathElement::new(points, BLACK.stroke_width(1)))
                    .map_err(plot_error)?;
            }
            text_x = text_x.max(z);
        }
        text(&b.text, (text_x + 6, mid), value_style)?;
    }
    if bars.is_empty() {
        text("no rows", (LEFT + 10, TOP + 10), font(14.0))?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// DejaVu Sans at `size` pixels.
fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font())
}

/// Draws `s` at `at` on a chart.
fn write(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    s: &str,
    at: (i32, i32),
    style: TextStyle,
) -> anyhow::Result<()> {
    root.draw(&Text::new(s.to_string(), at, style))
        .map_err(plot_error)
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
    use crate::bench::matrix::Protocol;
    use crate::bench::report::set_ratios;

    use crate::bench::tests::row;

    fn report() -> BenchReport {
        let mut rows = Vec::new();
        for (workload, qps) in [
            ("oltp_point_select", [9000.0, 5000.0, 6000.0, 8000.0]),
            ("oltp_read_write", [900.0, 700.0, 750.0, 850.0]),
        ] {
            for (target, qps) in Target::SYSBENCH.into_iter().zip(qps) {
                rows.push(row(workload, Protocol::Ps, target, qps));
            }
        }
        rows[7].failure = Some("boom".into());
        for (target, qps) in [(Target::Spider, 400.0), (Target::Switchyard, 1300.0)] {
            rows.push(row("sharded_point_select", Protocol::Text, target, qps));
        }
        set_ratios(&mut rows);
        BenchReport {
            meta: crate::bench::tests::meta(),
            rows,
            failover: vec![crate::bench::failover::tests::result()],
            etcd: None,
            moves: None,
            out_dir: "x".into(),
        }
    }

    #[test]
    fn each_group_gets_a_switchyard_a_socket_and_a_haproxy_bar() {
        let g = groups(&report());
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].label, "oltp_point_select ps t=8");
        assert_eq!(g[0].bars[0].1, Some(Some(5000.0 / 9000.0)));
        assert_eq!(
            g[0].bars[1],
            (Target::SwitchyardSocket, Some(Some(6000.0 / 9000.0)))
        );
        assert_eq!(g[1].bars[2], (Target::Haproxy, Some(None)));
    }

    #[test]
    fn the_charts_are_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let report = report();
        type Draw = fn(&BenchReport, &Path) -> anyhow::Result<()>;
        let draws: [(&str, Draw); 3] = [
            ("chart.png", draw),
            ("chart-sharded.png", draw_sharded),
            ("chart-failover.png", draw_failover),
        ];
        for (name, draw) in draws {
            let path = dir.path().join(name);
            draw(&report, &path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}");
        }
    }

    #[test]
    fn ticks_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(tick_step(3.2), 1.0);
        assert_eq!(tick_step(1.3), 0.5);
        assert_eq!(tick_step(180.0), 50.0);
        assert_eq!(tick_step(2100.0), 500.0);
    }
}
