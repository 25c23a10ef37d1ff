//! The Spider comparison's results: Markdown, JSON and a PNG chart (switchyard's QPS relative
//! to Spider's, one bar per workload; refused workloads marked as such).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::Workload;

/// Debian's `fonts-dejavu-core`, as for the sysbench chart.
const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FAMILY: &str = "sans-serif";

#[derive(Debug, Clone)]
pub enum Status {
    Ok,
    /// The router answered 1235: not supported yet.
    Refused(String),
    Failed(String),
}

/// One workload against one target.
#[derive(Debug, Clone)]
pub struct Measured {
    pub status: Status,
    pub queries: u64,
    pub errors: u64,
    pub qps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Measured {
    pub fn status(status: Status) -> Measured {
        Measured {
            status,
            queries: 0,
            errors: 0,
            qps: f64::NAN,
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
        }
    }

    fn ok(&self) -> bool {
        matches!(self.status, Status::Ok)
    }

    fn cells(&self) -> [String; 2] {
        match &self.status {
            Status::Ok => [
                format!("{:.0}", self.qps),
                format!("{:.2} / {:.2}", self.p50_ms, self.p99_ms),
            ],
            Status::Refused(_) => ["refused".into(), "–".into()],
            Status::Failed(_) => ["failed".into(), "–".into()],
        }
    }

    fn json(&self) -> serde_json::Value {
        let (status, detail) = match &self.status {
            Status::Ok => ("ok", None),
            Status::Refused(m) => ("refused", Some(m)),
            Status::Failed(m) => ("failed", Some(m)),
        };
        let num = |v: f64| (self.ok() && v.is_finite()).then_some(v);
        serde_json::json!({
            "status": status,
            "detail": detail,
            "queries": self.queries,
            "errors": self.errors,
            "qps": num(self.qps),
            "p50_ms": num(self.p50_ms),
            "p99_ms": num(self.p99_ms),
        })
    }
}

pub struct Row {
    pub workload: Workload,
    pub spider: Measured,
    pub switchyard: Measured,
}

impl Row {
    /// switchyard's QPS over Spider's, when both ran.
    pub fn ratio(&self) -> Option<f64> {
        (self.spider.ok() && self.switchyard.ok() && self.spider.qps > 0.0)
            .then(|| self.switchyard.qps / self.spider.qps)
    }
}

pub struct Report {
    pub started_at: String,
    pub duration_s: f64,
    pub git_commit: Option<String>,
    pub nproc: usize,
    pub mariadbd: String,
    pub quick: bool,
    pub seconds: u64,
    pub threads: usize,
    pub rows_per_shard: u64,
    pub shards: u64,
    pub rows: Vec<Row>,
}

impl Report {
    fn setup_line(&self) -> String {
        format!(
            "{} shards (range: numeric vindex / PARTITION BY RANGE) on 2 MariaDB {} servers, \
             {} rows per shard; {} client threads (mysql_async, text protocol), {} s per row; \
             {} CPUs shared by everything",
            self.shards, self.mariadbd, self.rows_per_shard, self.threads, self.seconds, self.nproc
        )
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        md.push_str("# switchyard vs MariaDB Spider\n\n");
        md.push_str(&format!(
            "{}, commit {}, {:.0} s{}.\n\n{}.\n\n",
            self.started_at,
            self.git_commit.as_deref().unwrap_or("unknown"),
            self.duration_s,
            if self.quick { ", quick run" } else { "" },
            self.setup_line()
        ));
        md.push_str(
            "Both read and write the same backend tables: switchyard through its shard map, \
             Spider (a third MariaDB server, `ha_spider` with its default settings) through \
             one `CREATE SERVER` per shard. Latencies are per statement, as seen by the \
             client. A ratio above 1 means switchyard served more statements per second.\n\n",
        );
        md.push_str(
            "| workload | Spider QPS | Spider p50 / p99 ms | switchyard QPS | \
             switchyard p50 / p99 ms | switchyard / Spider |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            let [sq, sl] = r.spider.cells();
            let [yq, yl] = r.switchyard.cells();
            let ratio = r
                .ratio()
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "–".into());
            md.push_str(&format!(
                "| {} | {sq} | {sl} | {yq} | {yl} | {ratio} |\n",
                r.workload.name()
            ));
        }
        md.push_str("\nStatements:\n\n");
        for r in &self.rows {
            md.push_str(&format!(
                "- {}: `{}`\n",
                r.workload.name(),
                r.workload.shape()
            ));
        }
        let notes: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| [("Spider", &r.spider), ("switchyard", &r.switchyard)].map(|x| (r, x)))
            .filter_map(|(r, (who, m))| match &m.status {
                Status::Ok if m.errors > 0 => Some(format!(
                    "- {} / {who}: {} errors",
                    r.workload.name(),
                    m.errors
                )),
                Status::Ok => None,
                Status::Refused(why) | Status::Failed(why) => {
                    Some(format!("- {} / {who}: {why}", r.workload.name()))
                }
            })
            .collect();
        if !notes.is_empty() {
            md.push_str("\nNot measured, or with errors:\n\n");
            md.push_str(&notes.join("\n"));
            md.push('\n');
        }
        md
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "meta": {
                "started_at": self.started_at,
                "duration_s": self.duration_s,
                "git_commit": self.git_commit,
                "nproc": self.nproc,
                "mariadbd_version": self.mariadbd,
                "quick": self.quick,
                "seconds": self.seconds,
                "threads": self.threads,
                "rows_per_shard": self.rows_per_shard,
                "shards": self.shards,
            },
            "rows": self.rows.iter().map(|r| serde_json::json!({
                "workload": r.workload.name(),
                "statement": r.workload.shape(),
                "spider": r.spider.json(),
                "switchyard": r.switchyard.json(),
                "ratio": r.ratio(),
            })).collect::<Vec<_>>(),
        })
    }

    /// switchyard's QPS relative to Spider's (1.0), one bar per workload.
    pub fn chart(&self, path: &Path) -> anyhow::Result<()> {
        const WIDTH: i32 = 1000;
        const LEFT: i32 = 250;
        const RIGHT: i32 = 150;
        const TOP: i32 = 80;
        const BOTTOM: i32 = 40;
        const ROW: i32 = 40;
        const BAR: i32 = 20;
        let bar_color = RGBColor(31, 119, 180);
        let grey = RGBColor(225, 225, 225);
        let red = RGBColor(200, 30, 30);

        let bytes = std::fs::read(FONT_PATH).map_err(|e| {
            anyhow!("can't read {FONT_PATH} ({e}); apt-get install -y fonts-dejavu-core")
        })?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
            .map_err(|_| anyhow!("{FONT_PATH} is not a font plotters can read"))?;

        let max = self
            .rows
            .iter()
            .filter_map(Row::ratio)
            .fold(1.0_f64, f64::max);
        let step = if max <= 2.0 {
            0.25
        } else if max <= 5.0 {
            0.5
        } else {
            1.0
        };
        let x_max = ((max * 1.1 / step).ceil() * step).max(1.25);
        let height = TOP + BOTTOM + ROW * self.rows.len() as i32;
        let x_of = |r: f64| LEFT + ((WIDTH - LEFT - RIGHT) as f64 * r / x_max).round() as i32;
        let root = BitMapBackend::new(path, (WIDTH as u32, height as u32)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the chart: {e:?}");
        root.fill(&WHITE).map_err(e)?;
        let font = |size: f64| TextStyle::from((FAMILY, size).into_font());
        root.draw(&Text::new(
            "switchyard QPS relative to MariaDB Spider (1.0), same shards".to_string(),
            (16, 14),
            font(20.0),
        ))
        .map_err(e)?;
        root.draw(&Text::new(
            format!(
                "{}, {} threads, {} s per row, {} rows per shard, {} CPUs",
                self.started_at, self.threads, self.seconds, self.rows_per_shard, self.nproc
            ),
            (16, 44),
            font(13.0).color(&BLACK.mix(0.7)),
        ))
        .map_err(e)?;
        // Grid every `step`, the Spider line at 1.0.
        let mut tick = 0.0;
        while tick <= x_max + 1e-9 {
            let x = x_of(tick);
            let color = if (tick - 1.0).abs() < 1e-9 {
                BLACK.to_rgba()
            } else {
                grey.to_rgba()
            };
            root.draw(&PathElement::new(
                vec![(x, TOP - 6), (x, height - BOTTOM)],
                color,
            ))
            .map_err(e)?;
            root.draw(&Text::new(
                format!("{tick:.2}"),
                (x, height - BOTTOM + 6),
                font(12.0).pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(e)?;
            tick += step;
        }
        for (i, r) in self.rows.iter().enumerate() {
            let y = TOP + ROW * i as i32 + ROW / 2;
            root.draw(&Text::new(
                r.workload.name().to_string(),
                (LEFT - 10, y),
                font(14.0).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(e)?;
            let (label, color) = match (r.ratio(), &r.switchyard.status, &r.spider.status) {
                (Some(ratio), _, _) => {
                    root.draw(&Rectangle::new(
                        [(LEFT, y - BAR / 2), (x_of(ratio), y + BAR / 2)],
                        bar_color.filled(),
                    ))
                    .map_err(e)?;
                    (
                        format!(
                            "{ratio:.2}  ({:.0} vs {:.0} qps)",
                            r.switchyard.qps, r.spider.qps
                        ),
                        BLACK,
                    )
                }
                (None, Status::Refused(_), _) => ("refused by the router (1235)".into(), red),
                (None, Status::Failed(_), _) => ("switchyard failed".into(), red),
                (None, _, _) => ("Spider failed".into(), red),
            };
            let x = r.ratio().map_or(LEFT, x_of) + 8;
            root.draw(&Text::new(
                label,
                (x, y),
                font(13.0)
                    .color(&color)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(e)?;
        }
        root.present().map_err(e)?;
        Ok(())
    }
}
